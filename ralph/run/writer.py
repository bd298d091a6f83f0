"""What happens to finished items: cached, written out and logged in batches.

A batch is cached first (one transaction) and written out after, so an item whose output
exists is always in the cache too, and a re-run after kill -9 does not pay for it. (A writer
thread was measured: GIL hand-offs cost more than the SQLite work it moved off the loop.)
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ralph.cache import Entry, ResponseCache, short_key
from ralph.errors import OutputError
from ralph.items import has_id
from ralph.observe.logs import flush_logs
from ralph.providers.base import Response
from ralph.run.outputs import TEMP_GLOB, OrderedJsonl, write_atomic
from ralph.run.prepare import Prepared
from ralph.secrets import redact

# or what FLUSH_INTERVAL_S gathered, if fewer: SQLite commits of random keys cost ~20 µs an
# item in batches of 64 and ~14 in batches of 512 (fewer index pages rewritten per item)
BATCH = 512
STALE_TEMP_S = 60.0  # a temp file older than this is no write in progress: a kill left it


@dataclass(slots=True)  # built per item: see providers.base.Request
class Done:
    prepared: Prepared
    agent: str
    text: str
    response: Response
    key: str | None
    cached: bool


@dataclass(frozen=True)
class Failed:
    index: int
    item: Any
    reason: str


@dataclass(frozen=True)
class Skipped:
    """An item a stop kept from being sent: it gets no line and no output."""

    index: int


Outcome = Done | Failed | Skipped


Unwritten = Callable[[Done, str], None]
"""Told of a finished item whose output file could not be written, and why."""


class TaskWriter:
    """Caches and writes finished items in batches.

    An output file that cannot be written (a name the file system refuses, a folder where the
    file should be) fails that item alone, through `unwritten`; its answer stays cached, so a
    re-run writes it without paying again. A cache or JSONL write that fails raises
    OutputError: the run cannot keep anything more.
    """

    def __init__(
        self,
        out_dir: Path,
        jsonl: Path | None,
        cache: ResponseCache | None,
        ttl_s: float | None,
        keep_answers: bool,
        unwritten: Unwritten,
        redact: bool = False,
    ) -> None:
        self._out_dir = out_dir
        self._redact = redact
        self._jsonl = OrderedJsonl(jsonl) if jsonl is not None else None
        self._cache = cache
        self._ttl_s = ttl_s
        self._unwritten = unwritten
        self.answers: dict[int | str, str] | None = {} if keep_answers else None
        self._batch: list[Outcome] = []
        self._entries: list[Entry] = []  # the batch's new answers, held by the cache till written
        self._outputs: set[int] = set()
        self._swept: set[Path] = set()

    def expect(self, index: int) -> None:
        """Item `index` was taken (see OrderedJsonl.expect)."""
        if self._jsonl is not None:
            self._jsonl.expect(index)

    def add(self, outcome: Outcome) -> bool:
        """Hold `outcome`; True when the batch is full and should be submitted. A new answer
        is a cache hit from now on, for items that ask the same before the batch is written."""
        self._batch.append(outcome)
        cache = self._cache
        if cache is not None and isinstance(outcome, Done) and outcome.key and not outcome.cached:
            entry = Entry(outcome.key, self._kept(outcome.response), outcome.agent, self._ttl_s)
            cache.hold(entry)
            self._entries.append(entry)
        return len(self._batch) >= BATCH

    def submit(self) -> None:
        """Cache and write the items held so far."""
        if self._batch:
            batch, self._batch = self._batch, []
            entries, self._entries = self._entries, []
            self._write(batch, entries)

    def close(self) -> None:
        """Write everything still held, publish the JSONL file."""
        self.submit()
        if self._jsonl is not None:
            try:
                self._jsonl.close()  # its buffer's last write can fail here (a full disk)
            except OSError as exc:
                raise OutputError(f"cannot write {self._jsonl.path}: {_os_reason(exc)}") from None

    def _write(self, batch: list[Outcome], entries: list[Entry]) -> None:
        try:
            if self._cache is not None and entries:
                self._cache.put_many(entries)
            for outcome in batch:
                self._record(outcome)
        except OSError as exc:
            raise OutputError(f"cannot write outputs under {self._out_dir}: {exc}") from None
        flush_logs()

    def _sweep(self, folder: Path) -> None:
        """Remove, once per folder and run, the temp files a kill -9 left mid-write (their
        targets are intact). Only old ones: a recent one may be another run's, being written."""
        if folder in self._swept:
            return
        self._swept.add(folder)
        stale = time.time() - STALE_TEMP_S
        with contextlib.suppress(OSError):
            for temp in folder.glob(TEMP_GLOB):
                with contextlib.suppress(OSError):
                    if temp.lstat().st_mtime < stale:
                        temp.unlink()

    def _kept(self, response: Response) -> Response:
        """What the cache keeps: with redact_secrets, not even the cache holds the secret."""
        if not self._redact:
            return response
        return replace(response, text=redact(response.text))

    def _record(self, outcome: Outcome) -> None:
        if isinstance(outcome, Skipped):
            if self._jsonl is not None:
                self._jsonl.add(outcome.index, None)
            return
        if isinstance(outcome, Failed):
            if self._jsonl is not None:
                record = {"index": outcome.index, "item": outcome.item, "status": "failed"}
                self._jsonl.add(outcome.index, {**record, "error": outcome.reason})
            return
        prepared = outcome.prepared
        if prepared.output_path is not None:
            # a second item of this run bound for the same file would silently replace the
            # first one's answer (hashes, not paths: a million outputs stay a few MB)
            mark = hash(prepared.output_path)
            if mark in self._outputs:
                reason = f"{prepared.output} is another item's output too: give each its own path"
                self._unwritten(outcome, reason)
                return
            self._outputs.add(mark)
            self._sweep(prepared.output_path.parent)
            try:
                write_atomic(prepared.output_path, outcome.text, within=self._out_dir)
            except OSError as exc:
                self._unwritten(outcome, f"cannot write {prepared.output}: {_os_reason(exc)}")
                return
            except UnicodeEncodeError:  # a lone surrogate, say from a JSON escape
                self._unwritten(outcome, f"cannot write {prepared.output}: not valid Unicode text")
                return
        if self.answers is not None:
            # by the id's text when the item has one (even "0" at index 0), else the index
            slot = prepared.key if has_id(prepared.item) else prepared.index
            self.answers[slot] = outcome.text
        if self._jsonl is not None:
            self._jsonl.add(prepared.index, _line(outcome))


def _os_reason(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"{reason}: {exc.filename}" if exc.errno == errno.ENOTDIR and exc.filename else reason


def _line(done: Done) -> dict[str, Any]:
    prepared = done.prepared
    return {
        "index": prepared.index,
        "item": prepared.item,
        "answer": done.text,
        "status": "cached" if done.cached else "done",
        "agent": done.agent,
        "usage": {
            "input_tokens": done.response.input_tokens,
            "output_tokens": done.response.output_tokens,
        },
        "cache_key": short_key(done.key) if done.key else None,
    }
