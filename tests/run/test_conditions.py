"""`loop.until` and the stall rule: the marker rule on answers that echo their prompt, checklist
files, check commands as real subprocesses, and all/any."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from ralph.recipe.model import (
    AllOf,
    AnyOf,
    CommandCondition,
    Condition,
    FileCondition,
    Marker,
    RegexCondition,
)
from ralph.run.conditions import Verdict, evaluate, marker_found, similarity, stalled

PROMPT = """Fix the failing tests in src/.
When everything is done, output LOOP_COMPLETE on its own line."""

DONE_ALONE = """Fix it.
When done, reply with exactly:
LOOP_COMPLETE"""


@pytest.mark.parametrize(
    ("answer", "found"),
    [
        ("LOOP_COMPLETE", True),
        ("All tests pass.\n\nLOOP_COMPLETE\n", True),
        ("Status: LOOP_COMPLETE", True),
        ("All done, LOOP_COMPLETE.", True),
        ("**LOOP_COMPLETE**", True),
        ("`LOOP_COMPLETE`", True),
        ("The build is green, so LOOP_COMPLETE and stop.", True),
        # not the whole word, or not the same case
        ("LOOP_COMPLETED", False),
        ("NOT_LOOP_COMPLETE", False),
        ("loop_complete", False),
        ("", False),
        # echoes of the prompt: whole, quoted, re-wrapped, paraphrased around the marker
        (PROMPT, False),
        ("> When everything is done, output LOOP_COMPLETE on its own line.\n3 tests fail.", False),
        ("When everything is done,\noutput LOOP_COMPLETE on its own line.", False),
        ("I will output LOOP_COMPLETE on its own line once done.", False),
        ("Note to self: when everything is done, output LOOP_COMPLETE", False),
        # an echo and a real one: the real one counts
        ("You said: output LOOP_COMPLETE on its own line.\nAll fixed.\nLOOP_COMPLETE", True),
    ],
)
def test_marker_rule(answer: str, found: bool) -> None:
    assert marker_found(answer, "LOOP_COMPLETE", PROMPT) is found


@pytest.mark.parametrize(
    ("answer", "found"),
    [
        (DONE_ALONE, False),
        ("When done, reply with exactly:\nLOOP_COMPLETE", False),
        ("> When done, reply with exactly:\n> LOOP_COMPLETE", False),
        ("Fixed it.\nLOOP_COMPLETE", True),
        ("LOOP_COMPLETE", True),
    ],
)
def test_marker_alone_in_the_prompt_counts_only_with_other_neighbours(
    answer: str, found: bool
) -> None:
    assert marker_found(answer, "LOOP_COMPLETE", DONE_ALONE) is found


def test_marker_with_punctuation_and_in_the_system_prompt() -> None:
    marker = "<promise>COMPLETE</promise>"
    system = "Reply <promise>COMPLETE</promise> when the whole plan is done.\n"
    assert marker_found(f"done\n{marker}", marker, system + "Do step 2")
    assert not marker_found(system, marker, system + "Do step 2")
    assert not marker_found("<promise>COMPLETE</promise>s", marker, "")


def check(condition: Condition, answer: str = "", workdir: Path = Path()) -> Verdict:
    return asyncio.run(evaluate(condition, answer, PROMPT, workdir))


def test_regex_is_searched_multiline() -> None:
    assert check(RegexCondition(r"^DONE$"), "work\nDONE\nbye").met
    assert not check(RegexCondition(r"^DONE$"), "not DONE yet").met


@pytest.mark.parametrize(
    ("text", "met", "why"),
    [
        (None, False, "TODO.md: No such file or directory"),
        ("just prose\n", False, "TODO.md: 0 of 0 boxes checked"),
        ("- [x] a\n- [ ] b\n", False, "TODO.md: 1 of 2 boxes checked"),
        (
            "# Plan\n- [x] a\n  * [X] nested\n1. [x] numbered\n",
            True,
            "TODO.md: 3 of 3 boxes checked",
        ),
        ("- [x] a\n```\n[ ] not a box\n```\n", True, "TODO.md: 1 of 1 boxes checked"),
    ],
)
def test_checklist_file(tmp_path: Path, text: str | None, met: bool, why: str) -> None:
    if text is not None:
        (tmp_path / "TODO.md").write_text(text)
    verdict = check(FileCondition("TODO.md", all_checked=True), workdir=tmp_path)
    assert verdict == Verdict(met, why)


def test_file_contains_and_checked_together(tmp_path: Path) -> None:
    both = FileCondition("notes.md", all_checked=True, contains="SHIPPED")
    (tmp_path / "notes.md").write_text("- [x] a\n")
    assert not check(both, workdir=tmp_path).met
    (tmp_path / "notes.md").write_text("- [x] a\nSHIPPED\n")
    assert check(both, workdir=tmp_path).met
    assert check(FileCondition("notes.md"), workdir=tmp_path).met  # exists is enough


def test_command_exit_code_in_the_workdir(tmp_path: Path) -> None:
    script = (
        "import pathlib, sys; print('checked'); sys.exit(0 if pathlib.Path('ok').exists() else 2)"
    )
    command = CommandCondition((sys.executable, "-c", script))
    assert check(command, workdir=tmp_path) == Verdict(
        False, f"`{sys.executable} -c {script}` exited with 2: checked"
    )
    (tmp_path / "ok").touch()
    assert check(command, workdir=tmp_path).met


def test_command_not_found_is_not_met(tmp_path: Path) -> None:
    verdict = check(CommandCondition(("no-such-program-ralph",)), workdir=tmp_path)
    assert not verdict.met and "cannot start" in verdict.why


def test_command_timeout_kills_its_process_group(tmp_path: Path) -> None:
    script = (
        "import subprocess, sys, time; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "open('child.pid', 'w').write(str(child.pid)); time.sleep(60)"
    )
    started = time.monotonic()
    verdict = check(
        CommandCondition((sys.executable, "-c", script), timeout_s=0.5), workdir=tmp_path
    )
    assert not verdict.met and "did not finish within 0.5s" in verdict.why
    assert time.monotonic() - started < 5
    pid = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(pid):
        assert time.monotonic() < deadline, "the check's child outlived the timeout"
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a killed child of a killed parent may linger as a zombie until init reaps it
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def test_all_stops_at_the_first_condition_not_met(tmp_path: Path) -> None:
    touch = CommandCondition((sys.executable, "-c", "open('ran', 'w')"))
    verdict = check(AllOf((Marker("LOOP_COMPLETE"), touch)), "still working", tmp_path)
    assert verdict == Verdict(False, "marker 'LOOP_COMPLETE' not found")
    assert not (tmp_path / "ran").exists(), "the check ran though the agent did not say done"
    assert check(AllOf((Marker("LOOP_COMPLETE"), touch)), "LOOP_COMPLETE", tmp_path).met
    assert (tmp_path / "ran").exists()


def test_any_stops_at_the_first_condition_met(tmp_path: Path) -> None:
    touch = CommandCondition((sys.executable, "-c", "open('ran', 'w')"))
    assert check(AnyOf((Marker("LOOP_COMPLETE"), touch)), "LOOP_COMPLETE", tmp_path).met
    assert not (tmp_path / "ran").exists()
    never = AnyOf((Marker("LOOP_COMPLETE"), RegexCondition("^ok$")))
    assert check(never, "nope", tmp_path) == Verdict(
        False, "marker 'LOOP_COMPLETE' not found; regex '^ok$' no match"
    )


def test_similarity_ignores_whitespace() -> None:
    assert similarity("a  b\n c", "a b c") == 1.0
    assert similarity("abc", "xyz") == 0.0


@pytest.mark.parametrize(
    ("answers", "stall"),
    [
        (["same", "same"], False),  # fewer than the window
        (["same", "same", "same"], True),
        (
            [
                "Still failing: test_a, try 1",
                "Still failing: test_a, try 2",
                "Still failing: test_a, try 3",
            ],
            True,
        ),
        (["same", "same", "something else entirely"], False),
        (["different start", "same same", "same same"], False),
        (["x" * 5000, "x" * 5000 + "y", "y" * 10], False),
    ],
)
def test_stalled(answers: list[str], stall: bool) -> None:
    assert (stalled(answers, 3, 0.9) is not None) is stall
