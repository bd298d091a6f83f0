"""Process groups: each program ralph starts (an agent, a check, git, a key command) leads a
session of its own, so that it and everything it starts can be signalled at once."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator


def signal_group(group: int, signum: signal.Signals) -> None:
    # an empty group is already what we want; one that is no longer ours, nothing to do with
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


class Groups:
    """The process groups of one kind running now, to be killed at once when need be."""

    def __init__(self) -> None:
        self._running: set[int] = set()

    @contextlib.contextmanager
    def running(self, leader: int) -> Iterator[None]:
        """While the block runs, the group `leader` leads is one that `kill` kills."""
        self._running.add(leader)
        try:
            yield
        finally:
            self._running.discard(leader)

    def kill(self) -> None:
        for group in list(self._running):
            signal_group(group, signal.SIGKILL)
