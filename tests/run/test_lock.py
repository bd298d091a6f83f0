"""One run at a time writes to an output folder; the shards of a split may share one."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Result, apply_args, start_apply, write_recipe

SLOW = """
    version: 1
    name: slow
    agents:
      slow: {provider: command, command: [sh, -c, "echo $$ >> agents; exec sleep 60"], timeout: 2m}
    tasks:
      - {name: t, agent: slow, for_each: [a, b, c, d, e, f, g, h], prompt: "{{ item }}"}
"""

FAST = """
    version: 1
    name: fast
    agents:
      local: {provider: echo}
    tasks:
      - {name: t, agent: local, for_each: [a, b, c, d, e, f, g, h], prompt: "{{ item }}"}
"""


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Starts the slow recipe's run on `tmp_path/out` and returns once an agent has started
    (so the run holds the folder); kills the run and its agents at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*extra: str) -> subprocess.Popen[bytes]:
        slow = tmp_path / "slow"
        slow.mkdir()
        process = start_apply(write_recipe(slow, SLOW), tmp_path / "out", "--skip-health", *extra)
        started.append(process)
        deadline = time.monotonic() + 30
        while not (slow / "agents").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait(timeout=30)
    # a kill -9 of a run leaves its agents behind, in process groups of their own
    agents = tmp_path / "slow" / "agents"
    for pid in agents.read_text().split() if agents.exists() else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def fast(ralph: Callable[..., Result], tmp_path: Path, *extra: str) -> Result:
    folder = tmp_path / "fast"
    folder.mkdir(exist_ok=True)
    return ralph(*apply_args(write_recipe(folder, FAST), tmp_path / "out", *extra))


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_runs(
    ralph: Callable[..., Result],
    tmp_path: Path,
    running: Callable[..., subprocess.Popen[bytes]],
) -> None:
    first = running()
    out = tmp_path / "out"
    for extra in [(), ("--shard", "1/2")]:
        result = fast(ralph, tmp_path, *extra)
        holder = "another run" if not extra else "a run of all items"
        assert (result.code, result.err) == (
            1,
            f"error: {holder} is writing to {out} now; wait for it to end, or give this run "
            "another --out\n",
        )
    assert not (out / "t.jsonl").exists() and not (out / "t.shard-1-of-2.jsonl").exists()
    assert first.poll() is None
    first.send_signal(signal.SIGKILL)  # a run killed outright leaves the folder free
    first.wait(timeout=30)
    assert fast(ralph, tmp_path).code == 0
    assert (out / "t.jsonl").exists()
    assert [p.name for p in out.iterdir()] == ["t.jsonl"]  # the lock leaves no file behind


def test_shards_of_a_split_share_a_folder_but_a_shard_runs_once(
    ralph: Callable[..., Result],
    tmp_path: Path,
    running: Callable[..., subprocess.Popen[bytes]],
) -> None:
    running("--shard", "1/2")
    out = tmp_path / "out"
    assert fast(ralph, tmp_path, "--shard", "2/2").code == 0
    assert (out / "t.shard-2-of-2.jsonl").exists()
    again = fast(ralph, tmp_path, "--shard", "1/2")
    assert (again.code, again.err) == (
        1,
        f"error: another run of shard 1/2 is writing to {out} now; wait for it to end, or "
        "give this run another --out\n",
    )
    whole = fast(ralph, tmp_path)
    assert whole.code == 1 and "error: another run is writing to" in whole.err
