"""Finished items kept: an output that cannot be written fails its item alone; a cache or JSONL
that cannot be written stops the run with an error. Nothing is dropped without a word."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ralph.providers.base import Response
from ralph.run.prepare import Prepared
from ralph.run.writer import Done, TaskWriter
from tests.conftest import RALPH, Result, apply_args, write_recipe


def recipe(tmp_path: Path, items: str, output: str | None) -> Path:
    line = f'            output: "{output}"\n' if output else ""
    return write_recipe(
        tmp_path,
        f"""
        version: 1
        name: writer-test
        agents:
          a: {{provider: echo, concurrency: 4}}
        tasks:
          - name: t
            agent: a
            for_each: {items}
            prompt: "Say {{{{ item }}}}"
{line}""",
    )


def test_an_output_that_cannot_be_written_fails_its_item_and_no_other(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    # 'report' is a folder once 'report/summary.md' is written: that item alone cannot be
    names = ["report/summary.md", "report", "c.md", "d.md", "e.md"]
    path = recipe(tmp_path, json.dumps(names), "{{ item }}")
    result = ralph(*apply_args(path, tmp_path / "out"))
    assert result.code == 3, result.out + result.err
    assert "1 x cannot write report: is a folder, not a file" in result.out
    for name in ("report/summary.md", "c.md", "d.md", "e.md"):
        assert (tmp_path / "out" / name).read_text().startswith(f"Say {name}"), name
    summary = [line.split() for line in result.out.splitlines() if line.startswith("t ")]
    assert summary == [["t", "5", "4", "0", "1", "0"]]


def test_a_name_too_long_for_the_file_system_is_refused_before_it_is_asked(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    names = ["ok1", "L" * 255, "M" * 256, "ok2"]
    path = recipe(tmp_path, json.dumps(names), "{{ item }}")
    result = ralph(*apply_args(path, tmp_path / "out", "--log-format", "json"))
    assert result.code == 3, result.out + result.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["L" * 255, "ok1", "ok2"]
    assert "has a name of 256 bytes" in result.out


def run_with_file_limit(recipe: Path, out: Path, limit: int) -> subprocess.CompletedProcess[str]:
    """`ralph apply` as a process whose files cannot grow past `limit` bytes: its writes then
    fail (EFBIG) as they would on a full disk."""

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [*RALPH, *apply_args(recipe, out, "--no-cache")]
    return subprocess.run(command, capture_output=True, text=True, preexec_fn=limited, check=False)


def test_a_jsonl_that_cannot_be_written_stops_the_run_with_an_error(tmp_path: Path) -> None:
    path = recipe(tmp_path, json.dumps([f"item {n} " + "x" * 200 for n in range(3000)]), None)
    result = run_with_file_limit(path, tmp_path / "out", 100_000)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot write outputs under" in result.stderr and "File too large" in result.stderr


def test_a_jsonl_whose_last_lines_cannot_be_written_names_it(tmp_path: Path) -> None:
    # few lines: they sit in the file's buffer, and fail only when it is closed
    out = tmp_path / "out"
    result = run_with_file_limit(recipe(tmp_path, json.dumps(["a", "b"]), None), out, 10)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.endswith(f"error: cannot write {out / 't.jsonl'}: File too large\n")


def test_a_link_planted_where_the_jsonl_is_written_is_replaced_not_written_through(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    """A clone can carry an output folder with links in it: the run writes its own files."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "t.jsonl.part").symlink_to(victim)
    (out / "t.jsonl").symlink_to(victim)
    assert ralph(*apply_args(recipe(tmp_path, json.dumps(["a"]), None), out)).code == 0
    assert victim.read_text() == "precious"
    assert not (out / "t.jsonl").is_symlink() and len(lines_of(out / "t.jsonl")) == 1


def test_outputs_are_not_written_through_links_that_lead_out_of_the_folder(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.md").write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "fifo.md").unlink(missing_ok=True)
    os.mkfifo(out / "fifo.md")  # written to as it is, it would hold the run forever
    (out / "linked.md").symlink_to(outside / "victim.md")
    path = recipe(tmp_path, json.dumps(["fifo.md", "linked.md", "plain.md"]), "{{ item }}")
    result = ralph(*apply_args(path, out))
    assert (outside / "victim.md").read_text() == "precious"
    assert (out / "fifo.md").read_text().startswith("Say fifo.md")  # the FIFO replaced
    assert result.code == 3, result.out  # a link that leads out is refused at the start
    assert "linked.md' leaves the output directory" in result.out


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.mark.parametrize("items", [3, 3000])  # the log flushed at the end, and during the run
def test_a_log_file_that_cannot_be_written_is_an_error_that_names_it(
    ralph: Callable[..., Result], tmp_path: Path, items: int
) -> None:
    path = recipe(tmp_path, json.dumps([f"item {n}" for n in range(items)]), None)
    log = ("--log-format", "json", "--log-file", "/dev/full")
    result = ralph(*apply_args(path, tmp_path / "out", *log))
    assert result.code == 1, result.out + result.err
    assert result.err == "error: cannot write the log file /dev/full: No space left on device\n"


def test_two_items_bound_for_one_file_fail_the_second_not_replace_the_first(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    path = recipe(tmp_path, json.dumps(["a", "b", "c"]), "{{ item[:0] }}same.md")
    result = ralph(*apply_args(path, tmp_path / "out"))
    assert result.code == 3, result.out + result.err
    assert "same.md is another item's output too: give each its own path" in result.out
    summary = [line.split() for line in result.out.splitlines() if line.startswith("t ")]
    assert summary == [["t", "3", "1", "0", "2", "0"]]
    assert (tmp_path / "out" / "same.md").read_text().startswith("Say ")


def test_a_file_where_a_folder_is_needed_is_named(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("a file")
    path = recipe(tmp_path, json.dumps(["x/y.md"]), "{{ item }}")
    result = ralph(*apply_args(path, tmp_path / "out"))
    assert result.code == 3
    assert (
        f"cannot write x/y.md: a file is where a folder is needed: {tmp_path / 'out' / 'x'}"
        in result.out
    )


def test_an_answer_that_is_not_valid_unicode_fails_its_item(tmp_path: Path) -> None:
    reasons: list[str] = []
    writer = TaskWriter(tmp_path, None, None, None, False, lambda _, why: reasons.append(why))
    prepared = Prepared(0, "0", "a", "p", None, "a.md", None, tmp_path / "a.md")
    writer.add(Done(prepared, "agent", "\ud800", Response("\ud800", 1, 1), None, False))
    writer.close()
    assert reasons == ["cannot write a.md: not valid Unicode text"]
    assert not (tmp_path / "a.md").exists()


def test_temp_files_a_kill_left_are_swept_where_outputs_are_written(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    left, fresh = folder / ".ralph-0123456789ab.tmp", folder / ".ralph-ba9876543210.tmp"
    left.write_text("half an answer")
    os.utime(left, (time.time() - 3600, time.time() - 3600))  # from a run killed an hour ago
    fresh.write_text("another run's, being written")
    result = ralph(*apply_args(recipe(tmp_path, json.dumps(["a.md"]), "{{ item }}"), folder))
    assert result.code == 0, result.out + result.err
    assert not left.exists()
    assert fresh.exists()


def test_a_run_that_cannot_keep_its_answers_stops_without_waiting_out_its_pace(
    tmp_path: Path,
) -> None:
    """At 30 requests a minute the next slot is 2 s away: once the JSONL cannot be written,
    the items waiting for their slots are not sent, and do not wait for them either."""
    path = write_recipe(
        tmp_path,
        """
        version: 1
        name: paced
        agents:
          a: {provider: echo, concurrency: 4, rate_limit: {requests_per_minute: 30}}
        tasks:
          - {name: t, agent: a, for_each: [a, b, c, d], prompt: "{{ 'x' * 9000 }} {{ item }}"}
        """,
    )
    started = time.monotonic()
    # a line longer than the file's buffer is written (and refused) as soon as it is kept
    result = run_with_file_limit(path, tmp_path / "out", 10)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "File too large" in result.stderr
    assert time.monotonic() - started < 1.8
