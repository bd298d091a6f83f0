"""Command agents as real subprocesses: stdin in, stdout out, process groups killed on timeout."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Result, apply_args, gone, write_recipe

AGENT = """
import sys
prompt = sys.stdin.read()
print("answer to " + prompt.strip().splitlines()[-1])
"""

FLAKY = """
import pathlib, sys
sys.stdin.read()
marker = pathlib.Path("attempted")
if not marker.exists():
    marker.write_text("1")
    sys.exit("first attempt fails")
print("second attempt works")
"""

HANGS = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open("child.pid", "w").write(str(child.pid))
time.sleep(60)
"""


def command_recipe(tmp_path: Path, script: str, *, extra: str = "", task_extra: str = "") -> Path:
    (tmp_path / "agent.py").write_text(script)
    return write_recipe(
        tmp_path,
        f"""
        version: 1
        name: command-test
        agents:
          local:
            provider: command
            command: [{sys.executable}, agent.py]
            retries: {{attempts: 2, backoff: 1ms}}
            {extra}
        tasks:
          - name: run
            agent: local
            for_each: [{{id: a}}, {{id: b}}]
            prompt: "Do {{{{ item.id }}}}"
            {task_extra}
    """,
    )


def records(tmp_path: Path) -> list[dict[str, object]]:
    text = (tmp_path / "out" / "run.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def apply(ralph: Callable[..., Result], recipe: Path, tmp_path: Path) -> Result:
    return ralph(*apply_args(recipe, tmp_path / "out"))


def test_prompt_on_stdin_answer_on_stdout(ralph: Callable[..., Result], tmp_path: Path) -> None:
    result = apply(ralph, command_recipe(tmp_path, AGENT), tmp_path)
    assert result.code == 0, result.out
    assert [r["answer"] for r in records(tmp_path)] == ["answer to Do a\n", "answer to Do b\n"]


def test_nonzero_exit_is_a_failed_attempt_that_is_retried(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = command_recipe(tmp_path, FLAKY).read_text().replace("[{id: a}, {id: b}]", "[{id: a}]")
    (tmp_path / "recipe.yaml").write_text(recipe)
    result = apply(ralph, tmp_path / "recipe.yaml", tmp_path)
    assert result.code == 0, result.out
    assert records(tmp_path)[0]["answer"] == "second attempt works\n"
    assert "local 5xx: 1" in result.out


def test_timeout_kills_the_whole_process_group(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = command_recipe(tmp_path, HANGS, extra="timeout: 500ms").read_text()
    (tmp_path / "recipe.yaml").write_text(
        recipe.replace("[{id: a}, {id: b}]", "[{id: a}]").replace("attempts: 2", "attempts: 1")
    )
    started = time.monotonic()
    result = apply(ralph, tmp_path / "recipe.yaml", tmp_path)
    assert result.code == 3
    assert time.monotonic() - started < 10
    assert "did not finish within 0.5s" in result.out
    child = int((tmp_path / "child.pid").read_text())
    assert gone(child), "the agent's child process outlived the timeout"


def test_no_shell_unless_asked(ralph: Callable[..., Result], tmp_path: Path) -> None:
    echo_args = """
import sys
sys.stdin.read()
print(sys.argv[1])
"""
    recipe = command_recipe(tmp_path, echo_args).read_text()
    recipe = recipe.replace("agent.py]", "agent.py, '$HOME']")
    (tmp_path / "recipe.yaml").write_text(recipe)
    assert apply(ralph, tmp_path / "recipe.yaml", tmp_path).code == 0
    assert records(tmp_path)[0]["answer"] == "$HOME\n"


def test_shell_command_when_the_recipe_asks(ralph: Callable[..., Result], tmp_path: Path) -> None:
    recipe = command_recipe(tmp_path, AGENT).read_text()
    recipe = recipe.replace(
        f"command: [{sys.executable}, agent.py]",
        "command: 'cat > /dev/null; echo from-$((40 + 2))'\n    shell: true",
    )
    (tmp_path / "recipe.yaml").write_text(recipe)
    result = apply(ralph, tmp_path / "recipe.yaml", tmp_path)
    assert result.code == 0, result.out + result.err
    assert records(tmp_path)[0]["answer"] == "from-42\n"


def test_command_answers_are_not_cached_unless_the_task_says(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    counter = """
import pathlib, sys
sys.stdin.read()
log = pathlib.Path("calls")
log.write_text(log.read_text() + "x" if log.exists() else "x")
print("ok")
"""
    recipe = command_recipe(tmp_path, counter)
    assert apply(ralph, recipe, tmp_path).code == 0
    assert apply(ralph, recipe, tmp_path).code == 0
    assert (tmp_path / "calls").read_text() == "xxxx"
    cached = command_recipe(tmp_path, counter, task_extra="cache: true")
    assert apply(ralph, cached, tmp_path).code == 0
    assert apply(ralph, cached, tmp_path).code == 0
    assert (tmp_path / "calls").read_text() == "xxxxxx"


def single_attempt(recipe: Path) -> Path:
    """The recipe with one item and one attempt, for tests that watch a single run."""
    text = recipe.read_text().replace("[{id: a}, {id: b}]", "[{id: a}]")
    recipe.write_text(text.replace("attempts: 2", "attempts: 1"))
    return recipe


LEAVES_A_CHILD = """
import subprocess, sys
sys.stdin.read()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
open("child.pid", "w").write(str(child.pid))
print("done, but my child still holds stdout")
"""


def test_timeout_kills_the_group_after_the_agent_itself_exited(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = single_attempt(command_recipe(tmp_path, LEAVES_A_CHILD, extra="timeout: 500ms"))
    result = apply(ralph, recipe, tmp_path)
    assert result.code == 3
    assert "did not finish within 0.5s" in result.out
    child = int((tmp_path / "child.pid").read_text())
    assert gone(child), "the agent's child process outlived the timeout"


def test_an_agent_that_exits_leaving_a_child_on_its_output_has_answered(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    """Its answer is taken a moment after it exits, and the child (in its group) is killed;
    before, the attempt waited for the child, and failed as a timeout."""
    recipe = single_attempt(command_recipe(tmp_path, LEAVES_A_CHILD, extra="timeout: 20s"))
    started = time.monotonic()
    assert apply(ralph, recipe, tmp_path).code == 0
    assert time.monotonic() - started < 10
    assert [r["answer"] for r in records(tmp_path)] == ["done, but my child still holds stdout\n"]
    assert gone(int((tmp_path / "child.pid").read_text()))


ESCAPES = """
import os, subprocess, sys, time
sys.stdin.read()
daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                          start_new_session=True)
open("daemon.pid", "w").write(str(daemon.pid))
print("answered")
sys.stdout.flush()
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


def test_a_daemon_beyond_the_group_holding_the_output_delays_nothing(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    """A process in a session of its own cannot be killed with the group: its hold on the
    pipes is let go of, whether the agent exited (answered) or timed out (failed)."""
    for lingers, timeout, code, outcome in [("0", "5s", 0, "answered\n"), ("30", "1s", 3, None)]:
        recipe = single_attempt(command_recipe(tmp_path, ESCAPES, extra=f"timeout: {timeout}"))
        recipe.write_text(recipe.read_text().replace("agent.py]", f"agent.py, '{lingers}']"))
        started = time.monotonic()
        try:
            result = apply(ralph, recipe, tmp_path)
        finally:
            os.kill(int((tmp_path / "daemon.pid").read_text()), signal.SIGKILL)
        assert result.code == code, result.out
        assert time.monotonic() - started < 10, "the run waited for the daemon"
        if outcome is None:
            assert "did not finish within 1s" in result.out
        else:
            assert [r["answer"] for r in records(tmp_path)] == [outcome]


PRINTS_FOREVER = """
import sys
sys.stdin.read()
while True:
    sys.stdout.write("x" * 65536)
"""


def test_endless_output_fails_as_too_much_output_not_as_a_timeout(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    extra = "timeout: 5s\n            max_output: 1MB"
    recipe = single_attempt(command_recipe(tmp_path, PRINTS_FOREVER, extra=extra))
    result = apply(ralph, recipe, tmp_path)
    assert result.code == 3
    assert "printed more than 1000000 bytes" in result.out


WRITES_BEFORE_READING = """
import sys
sys.stdout.write("y" * 1_000_000)
sys.stdout.flush()
print(len(sys.stdin.read()))
"""


def test_a_big_prompt_and_a_big_answer_do_not_block_each_other(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = single_attempt(command_recipe(tmp_path, WRITES_BEFORE_READING, extra="timeout: 20s"))
    big = "z" * 500_000
    recipe.write_text(recipe.read_text().replace("[{id: a}]", f"[{{id: {big}}}]"))
    result = apply(ralph, recipe, tmp_path)
    assert result.code == 0, result.out
    assert records(tmp_path)[0]["answer"] == "y" * 1_000_000 + f"{len('Do ' + big)}\n"


LEAKS_A_KEY = """
import sys
sys.stdin.read()
sys.exit("Error: authentication failed for key sk-test-SECRETVALUE123")
"""


def test_stderr_quoted_in_a_failure_is_redacted(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    result = apply(ralph, single_attempt(command_recipe(tmp_path, LEAKS_A_KEY)), tmp_path)
    assert result.code == 3
    assert "authentication failed for key [REDACTED:openai]" in result.out
    written = "".join(p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert "SECRETVALUE123" not in result.out + result.err + written
