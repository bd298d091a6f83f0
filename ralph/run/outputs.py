"""Writing answers so that a crash or Ctrl-C never leaves a half-written file behind."""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ralph.fastjson import dumps

if TYPE_CHECKING:
    from ralph.shard import Shard


class OutputPathError(ValueError):
    """A rendered output path would land outside the output directory."""


def _check_inside(path: Path, root: Path) -> None:
    """PermissionError unless `path`'s folder, links followed, lies within `root`."""
    if not path.parent.resolve().is_relative_to(root.resolve()):
        raise PermissionError(
            errno.EACCES, "a link on the way leads out of the output folder", str(path)
        )


def safe_output_path(out_dir: Path, rendered: str) -> Path:
    """`rendered` resolved under `out_dir`, or OutputPathError if it would leave it."""
    relative = Path(rendered.strip())
    if relative.is_absolute() or not rendered.strip():
        raise OutputPathError(f"output path '{rendered}' must be relative to the output directory")
    root = out_dir.resolve()
    try:
        target = (root / relative).resolve()
    except (ValueError, OSError, RuntimeError) as exc:  # a NUL byte, a symlink loop
        raise OutputPathError(f"output path {rendered!r} is not a usable path: {exc}") from None
    if not target.is_relative_to(root) or target == root:
        raise OutputPathError(f"output path '{rendered}' leaves the output directory")
    long = next((p for p in target.relative_to(root).parts if len(p.encode()) > NAME_MAX), None)
    if long is not None:
        raise OutputPathError(
            f"output path '{rendered}' has a name of {len(long.encode())} bytes; file systems "
            f"take at most {NAME_MAX}"
        )
    return target


NAME_MAX = 255  # bytes in one file name, on every common file system


def jsonl_path(out_dir: Path, task: str, shard: Shard | None) -> Path:
    """`<out>/<task>.jsonl`; shards sharing an output folder each write their own file."""
    suffix = f".shard-{shard.index}-of-{shard.count}" if shard is not None else ""
    return out_dir / f"{task}{suffix}.jsonl"


TEMP_GLOB = ".ralph-*.tmp"  # write_atomic's temp files


def write_atomic(path: Path, text: str, *, within: Path | None = None) -> None:
    """Write via a temp file in the same folder and rename over the target.

    A file the user named (`--summary-file`): a symlink is written through (the file it points
    to is replaced, the link stays); a FIFO or a device (`--summary-file /dev/stdout`) is
    written to as it is, since renaming over it would replace the device with a file.

    A file of ralph's own under the output folder `within` is never written through anything:
    a link, FIFO or device there is replaced, and a folder on the way that leads out of
    `within` is an error (a clone can plant links, another process swap a folder for one).
    A folder in the file's place is an error that names `path` either way.
    """
    if within is not None:
        _check_inside(path, within)
    try:
        mode = path.lstat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = stat.S_IFREG  # a new file: the common case, one system call
    if not stat.S_ISREG(mode):
        if within is None:
            path = path.resolve()
        if path.is_dir() and (within is None or not path.is_symlink()):
            raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
        if within is None and path.exists() and not path.is_file():
            with path.open("w", encoding="utf-8") as stream:
                stream.write(text)
            return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # os says "File exists" of the file in the way
        blocking = next(p for p in path.parents if p.exists() and not p.is_dir())
        raise NotADirectoryError(
            errno.ENOTDIR, "a file is where a folder is needed", str(blocking)
        ) from None
    # a short name of its own: `.{name}.tmp` would pass NAME_MAX when `name` nearly does
    temp = path.with_name(f".ralph-{os.urandom(6).hex()}.tmp")  # what TEMP_GLOB finds
    # not mkstemp: its 0o600 would make every output private; 0o666 less the umask is what
    # any other program writing the file would give it
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        temp.replace(path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


class OrderedJsonl:
    """`<out>/<task>.jsonl`, one line per item in item order, though items finish out of order.

    Lines go to a `.part` file that replaces the target only when the task is finished, so the
    target is always a complete file from some run. The items are announced (`expect`) in
    the order they are taken, which is item order: a line waits only for the items taken
    before it, not for indexes that never come (those of other shards).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._part = path.with_name(path.name + ".part")
        # a new file, whatever was there (a killed run's part, or a link planted to make
        # this run write elsewhere); the rename at the end replaces a link too, not its target
        self._part.unlink(missing_ok=True)
        fd = os.open(self._part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        self._handle: TextIO = os.fdopen(fd, "w", encoding="utf-8")
        self._pending: dict[int, dict[str, Any] | None] = {}
        self._expected: deque[int] = deque()

    def expect(self, index: int) -> None:
        """Item `index` was taken: its line comes after those of the items taken before."""
        self._expected.append(index)

    def add(self, index: int, record: dict[str, Any] | None) -> None:
        """Record item `index`; None marks an item that gets no line (never started)."""
        self._pending[index] = record
        expected = self._expected
        while expected and expected[0] in self._pending:
            self._write(self._pending.pop(expected.popleft()))

    def close(self) -> None:
        """Write what is still held back (after gaps from a stop) and publish the file."""
        if self._handle.closed:
            return
        for index in sorted(self._pending):
            self._write(self._pending[index])
        self._pending.clear()
        self._handle.close()
        self._part.replace(self.path)

    def _write(self, record: dict[str, Any] | None) -> None:
        if record is not None:
            self._handle.write(dumps(record, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    """What JSON cannot take by itself: read-only mappings (inline items) become dicts."""
    return dict(value) if isinstance(value, Mapping) else str(value)
