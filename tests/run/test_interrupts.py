"""Ctrl-C and kill -9 against a real `ralph apply` subprocess: nothing half-written, nothing lost,
nothing paid for twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ralph.testing import FakeLLMServer
from tests.conftest import TEST_KEY, Result, apply_args, gone, start_apply, write_recipe

CHAT = "/v1/chat/completions"
ITEMS = 40


def slow_recipe(tmp_path: Path, base_url: str) -> Path:
    inline = ", ".join(f"{{id: n{n:02d}}}" for n in range(ITEMS))
    return write_recipe(
        tmp_path,
        f"""
        version: 1
        name: interrupt-test
        agents:
          writer:
            provider: openai
            base_url: {base_url}
            model: test-model
            api_key_env: OPENAI_API_KEY
            concurrency: 2
        tasks:
          - name: answer
            agent: writer
            for_each: [{inline}]
            prompt: "Item {{{{ item.id }}}}"
            output: "answers/{{{{ item.id }}}}.md"
    """,
    )


def wait_for_outputs(out: Path, count: int, process: subprocess.Popen[bytes]) -> list[Path]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = sorted((out / "answers").glob("*.md")) if (out / "answers").is_dir() else []
        if len(found) >= count:
            return found
        assert process.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.01)
    raise AssertionError(f"fewer than {count} outputs after 20 s")


def assert_complete_files(out: Path) -> None:
    assert not list(out.rglob("*.tmp")), "a temp file was left behind"
    for path in (out / "answers").glob("*.md"):
        assert path.read_text() == f"echo: Item {path.stem}"


def test_ctrl_c_exits_130_with_finished_outputs_intact(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    server.latency_s = 0.05
    out = tmp_path / "out"
    process = start_apply(slow_recipe(tmp_path, server.base_url), out)
    wait_for_outputs(out, 4, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=20)
    assert process.returncode == 130, err.decode()
    assert b"Traceback" not in err
    assert_complete_files(out)
    assert len(list((out / "answers").glob("*.md"))) < ITEMS


def test_resume_after_kill_9_requests_only_unfinished_items(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    server.latency_s = 0.05
    out = tmp_path / "out"
    recipe = slow_recipe(tmp_path, server.base_url)
    process = start_apply(recipe, out)
    wait_for_outputs(out, 6, process)
    process.kill()
    process.wait(timeout=10)
    finished = {p.stem for p in (out / "answers").glob("*.md")}
    assert 6 <= len(finished) < ITEMS
    server.reset()
    server.latency_s = 0.0
    result = ralph(*apply_args(recipe, out))
    assert result.code == 0, result.out
    assert_complete_files(out)
    assert {p.stem for p in (out / "answers").glob("*.md")} == {f"n{n:02d}" for n in range(ITEMS)}
    asked_again = {
        r.body["messages"][-1]["content"].removeprefix("Item ")
        for r in server.requests
        if r.path == CHAT
    }
    assert not asked_again & finished, "a finished item was paid for twice"
    assert len(asked_again) == server.counts[CHAT] <= ITEMS - len(finished)


STUBBORN = """
import os, pathlib, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sys.stdin.read()
pathlib.Path("started").write_text(str(os.getpid()))
time.sleep(30)
"""


def test_second_ctrl_c_exits_at_once(tmp_path: Path) -> None:
    (tmp_path / "agent.py").write_text(STUBBORN)
    recipe = write_recipe(
        tmp_path,
        f"""
        version: 1
        name: stubborn
        agents:
          slow:
            provider: command
            command: [{sys.executable}, agent.py]
        tasks:
          - name: wait
            agent: slow
            prompt: go
    """,
    )
    process = start_apply(recipe, tmp_path / "out")
    deadline = time.monotonic() + 20
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)  # the agent ignores the SIGTERM that follows
    time.sleep(0.3)
    assert process.poll() is None, "the first Ctrl-C should wait for the agent's grace period"
    interrupted = time.monotonic()
    process.send_signal(signal.SIGINT)
    process.wait(timeout=10)
    assert process.returncode == 130
    assert time.monotonic() - interrupted < 1.5
    agent = int((tmp_path / "started").read_text())
    assert gone(agent), "the agent outlived ralph"


def test_ctrl_c_stops_a_run_whose_items_never_wait(tmp_path: Path) -> None:
    """Echo answers (like cache hits) never wait on the network: the workers must still let
    the event loop see Ctrl-C, not finish every item first."""
    items = 400_000
    (tmp_path / "items.jsonl").write_text("".join(f"{n}\n" for n in range(items)))
    recipe = write_recipe(
        tmp_path,
        """
        version: 1
        name: never-waits
        agents: {local: {provider: echo}}
        tasks: [{name: t, agent: local, for_each: {file: items.jsonl}, prompt: "{{ item }}"}]
    """,
    )
    out, log = tmp_path / "out", tmp_path / "log.jsonl"
    process = start_apply(recipe, out, "--log-file", str(log))
    deadline = time.monotonic() + 30
    while not (log.is_file() and log.stat().st_size > 100_000):  # well under way
        assert process.poll() is None and time.monotonic() < deadline, "never got going"
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err.decode()
    assert time.monotonic() - sent < 5, "Ctrl-C waited for the run to finish"
    assert len((out / "t.jsonl").read_text().splitlines()) < items


def test_sigterm_stops_a_run_as_ctrl_c_does_and_takes_the_agents_along(tmp_path: Path) -> None:
    # what `docker stop`, Kubernetes and a cancelled CI job send; agents have groups of their own
    (tmp_path / "agent.py").write_text(
        "import os, pathlib, time\n"
        "pathlib.Path('started').write_text(str(os.getpid()))\n"
        "time.sleep(60)\n"
    )
    recipe = write_recipe(
        tmp_path,
        f"""
        version: 1
        name: terminated
        agents:
          slow: {{provider: command, command: [{sys.executable}, agent.py]}}
        tasks:
          - {{name: wait, agent: slow, prompt: go}}
    """,
    )
    process = start_apply(recipe, tmp_path / "out")
    deadline = time.monotonic() + 20
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=20)
    assert process.returncode == 130, err.decode()
    assert gone(int((tmp_path / "started").read_text())), "the agent outlived ralph"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("health", [True, False])
def test_ctrl_c_while_a_key_command_runs_stops_it_and_exits_at_once(
    tmp_path: Path, health: bool, stop: signal.Signals
) -> None:
    """Keys are read inside the run's event loop, which used to take note of the Ctrl-C only
    when the key command had ended, up to 30 s later."""
    started = tmp_path / "key.pid"
    recipe = write_recipe(
        tmp_path,
        f"""
        version: 1
        name: slow-key
        agents:
          writer:
            provider: openai
            base_url: http://127.0.0.1:9/v1
            model: m
            api_key_command: [sh, -c, "echo $$ > {started}; exec sleep 60"]
        tasks:
          - {{name: t, agent: writer, prompt: hi}}
        """,
    )
    process = start_apply(recipe, tmp_path / "out", *([] if health else ["--skip-health"]))
    deadline = time.monotonic() + 20
    while not started.exists() or not started.read_text().strip():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.01)
    process.send_signal(stop)
    try:
        process.communicate(timeout=10)  # not the 30 s the key command may take
    finally:
        process.kill()
    assert process.returncode == 130
    assert gone(int(started.read_text())), "the key command outlived the run"


ROTATES_SLOWLY = """
import os, pathlib, sys, time
calls = pathlib.Path("{calls}")
if calls.exists():
    pathlib.Path("{calls}.pid").write_text(str(os.getpid()))
calls.write_text(calls.read_text() + "x" if calls.exists() else "x")
if len(calls.read_text()) == 1:
    print("sk-revoked-0000000000000000")
else:
    time.sleep(30)
    print("{key}")
"""


def test_ctrl_c_while_a_key_is_read_again_after_a_401_still_ends_with_the_summary(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    """The key is read again off the event loop: a Ctrl-C meanwhile is the run's, which kills
    the key command and ends as any interrupted run does, its summary written."""
    calls = tmp_path / "calls"
    (tmp_path / "key.py").write_text(ROTATES_SLOWLY.format(key=TEST_KEY, calls=calls))
    recipe = write_recipe(
        tmp_path,
        f"""
        version: 1
        name: rotates
        agents:
          writer:
            provider: openai
            base_url: {server.base_url}
            model: m
            api_key_command: [{sys.executable}, {tmp_path / "key.py"}]
        tasks:
          - {{name: t, agent: writer, prompt: hi}}
        """,
    )
    summary = tmp_path / "run.json"
    process = start_apply(recipe, tmp_path / "out", "--skip-health", "--summary-file", str(summary))
    deadline = time.monotonic() + 20
    while not calls.exists() or len(calls.read_text()) < 2:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    try:
        process.communicate(timeout=10)  # not the 30 s the key command would take
    finally:
        process.kill()
    assert process.returncode == 130
    assert json.loads(summary.read_text())["status"] == "interrupted"
    assert gone(int((tmp_path / "calls.pid").read_text())), "the key command outlived the run"
