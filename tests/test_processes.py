"""Process groups signalled as one: what a program started goes with it."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from ralph.processes import Groups, signal_group
from tests.conftest import gone


def test_kill_ends_the_groups_running_with_all_they_started_and_only_those(
    tmp_path: Path,
) -> None:
    child = tmp_path / "child.pid"
    script = f"sleep 30 & echo $! > {child}; wait"
    groups = Groups()
    running = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    ended = subprocess.Popen(["sh", "-c", "sleep 30"], start_new_session=True)
    try:
        with groups.running(ended.pid):
            pass  # its block is over: no longer among those `kill` kills
        with groups.running(running.pid):
            while not child.exists() or not child.read_text().strip():
                assert running.poll() is None
                time.sleep(0.01)
            groups.kill()
            assert running.wait(timeout=10) == -signal.SIGKILL
            assert gone(int(child.read_text()))
        assert ended.poll() is None
    finally:
        ended.kill()
        running.kill()
        ended.wait()


def test_signalling_a_group_that_is_gone_is_no_error() -> None:
    process = subprocess.Popen(["true"], start_new_session=True)
    process.wait()
    signal_group(process.pid, signal.SIGKILL)
