"""The output folder's lock: one run at a time writes to a folder, as one terraform apply at a
time writes a state.

Two runs writing one folder would write the same `<task>.jsonl.part` and the same loop states,
and each would publish a file mixed from both. A run locks the folder itself, exclusively; a
shard locks it shared, and its own `.ralph-shard-K-of-N.lock` file exclusively, so the shards
of a split may run side by side (each writes its own JSONL), but neither twice nor beside a run
of all items. These are flock(2) locks: the system lets go of them when the process ends, even
by kill -9, so a crash never leaves a folder locked. A shard's lock file stays: removing it
while another run opens it would let two runs each hold a lock of their own file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ralph.errors import ConfigError
from ralph.shard import Shard


@contextlib.contextmanager
def locked_out_dir(out_dir: Path, shard: Shard | None) -> Iterator[None]:
    """Hold `out_dir` for this run; ConfigError when another run holds it."""
    folder = os.O_RDONLY | os.O_DIRECTORY
    with contextlib.ExitStack() as stack:
        if shard is None:
            stack.enter_context(_flock(out_dir, folder, fcntl.LOCK_EX, "another run"))
            yield
            return
        stack.enter_context(_flock(out_dir, folder, fcntl.LOCK_SH, "a run of all items"))
        own = out_dir / f".ralph-shard-{shard.index}-of-{shard.count}.lock"
        holder = f"another run of shard {shard.label}"
        stack.enter_context(_flock(own, os.O_RDWR | os.O_CREAT, fcntl.LOCK_EX, holder))
        yield


@contextlib.contextmanager
def _flock(path: Path, flags: int, mode: int, holder: str) -> Iterator[None]:
    try:
        descriptor = os.open(path, flags | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot lock the output folder: {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(descriptor, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"{holder} is writing to {_folder(path)} now; wait for it to end, or give this "
                "run another --out"
            ) from None
        except OSError as exc:  # a file system without locks
            raise ConfigError(f"cannot lock the output folder: {path}: {exc.strerror}") from None
        yield
    finally:
        os.close(descriptor)  # which lets go of the lock


def _folder(path: Path) -> Path:
    return path if path.is_dir() else path.parent
