"""One log event per attempt, as JSON (python-json-logger) or as text for people.

Prompts are never logged, only their length and hash; headers and keys never reach a record.
Events are dicts that our handler serialises straight through python-json-logger, without a
LogRecord per line: a log line costs ~6 µs on the hot path instead of ~10.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pythonjsonlogger.core import LogData
from pythonjsonlogger.orjson import OrjsonFormatter

from ralph.errors import OutputError
from ralph.fastjson import dumps
from ralph.text import printable

LOGGER = "ralph.run"


class EventFormatter(OrjsonFormatter):
    """JSON lines of `{timestamp, level, event, ...fields}`, through orjson (a line costs a
    third of what the json module takes); the values orjson refuses (a lone surrogate in an
    item's id, an integer past 64 bits) go through `fastjson`'s json fallback."""

    def jsonify_log_record(self, log_data: LogData) -> str:
        try:
            return super().jsonify_log_record(log_data)
        except TypeError:
            return dumps(log_data, default=str)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["timestamp"] = datetime.fromtimestamp(record.created, tz=UTC).isoformat()
        log_data["level"] = record.levelname.lower()
        log_data.update(message_dict or {"event": record.getMessage()})

    def event_line(self, data: dict[str, Any]) -> str:
        return self.serialize_log_record(data)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = (
            dict(record.msg) if isinstance(record.msg, dict) else {"event": record.getMessage()}
        )
        return self.event_line({"level": _LEVELS[record.levelno], **fields})

    def event_line(self, data: dict[str, Any]) -> str:
        fields = {k: v for k, v in data.items() if k not in ("timestamp", "level", "event")}
        parts = " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
        return f"{data.get('level', '')} {data.get('event', '')} {parts}".rstrip()


# what makes a value quoted: a space or `=` (`item=a status=ok` would pass for two fields), a
# quote, a control character or a line separator (a line that passes for another event)
_QUOTED = re.compile('[\\s="\x00-\x1f\x7f-\x9f]')


def _text_value(value: Any) -> str:
    """The value as people read it, logfmt style: quoted and escaped when it holds a space,
    `=`, a quote or a control character."""
    text = str(value)
    return printable(json.dumps(text, ensure_ascii=False)) if _QUOTED.search(text) else text


_LEVELS = {level: logging.getLevelName(level).lower() for level in range(0, 60, 10)}


class EventHandler(logging.StreamHandler[IO[str]]):
    """Writes events through its formatter without building a LogRecord for each (they are
    per attempt, on the hot path); a file is left to its buffer and `flush_logs`, a terminal
    gets every line at once."""

    def __init__(self, stream: IO[str], formatter: EventFormatter | TextFormatter) -> None:
        super().__init__(stream)
        self.setFormatter(formatter)
        self.event_line = formatter.event_line
        self.buffered = stream not in (sys.stderr, sys.stdout)

    def write_event(self, data: dict[str, Any]) -> None:
        try:
            self.stream.write(self.event_line(data) + self.terminator)
            if not self.buffered:
                self.stream.flush()
        except OSError as exc:  # a full buffer is written out here, mid-run
            raise _unwritable(self, exc) from None


def setup_logging(fmt: str, file: Path | None, *, quiet: bool = False) -> logging.Logger:
    """The run's logger: to `file` when given (buffered), else to stderr."""
    logger = logging.getLogger(LOGGER)
    close_logging()
    logger.propagate = False
    logger.setLevel(logging.WARNING if quiet and file is None else logging.INFO)
    # backslashreplace, as stderr has: a lone surrogate from an item must not stop the run
    stream = (
        file.open("a", encoding="utf-8", errors="backslashreplace", buffering=1 << 16)
        if file
        else sys.stderr
    )
    logger.addHandler(EventHandler(stream, EventFormatter() if fmt == "json" else TextFormatter()))
    return logger


def close_logging() -> None:
    logger = logging.getLogger(LOGGER)
    handlers, logger.handlers = logger.handlers, []
    for handler in handlers:
        try:
            handler.flush()
            if isinstance(handler, logging.StreamHandler) and handler.stream not in (
                sys.stderr,
                sys.stdout,
            ):
                handler.close()
        except OSError as exc:
            raise _unwritable(handler, exc) from None


CONTRACT_FIELDS = frozenset(
    {
        "task",
        "item",
        "agent",
        "provider",
        "model",
        "attempt",
        "status",
        "latency_ms",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "cache",
    }
)  # always present in an attempt event, as null when unknown


def event(logger: logging.Logger, level: int, name: str, **fields: Any) -> None:
    """Log one event; optional fields that are None are left out."""
    if logger.isEnabledFor(level):
        kept = {k: v for k, v in fields.items() if v is not None or k in CONTRACT_FIELDS}
        emit(logger, level, name, kept)


def emit(logger: logging.Logger, level: int, name: str, fields: dict[str, Any]) -> None:
    """Log one event of exactly these fields (callers on the hot path build them so)."""
    data = {"timestamp": _timestamp(), "level": _LEVELS[level], "event": name, **fields}
    for handler in logger.handlers:
        if level < handler.level:
            continue
        if isinstance(handler, EventHandler):
            handler.write_event(data)
        else:  # a handler someone else added gets an ordinary record
            handler.handle(logger.makeRecord(logger.name, level, "ralph", 0, data, (), None))


class _Second:
    """The ISO 8601 text of the current second, made again only when the second changes."""

    start = -1
    text = ""


def _timestamp() -> str:
    """`datetime.now(UTC).isoformat()` (always with microseconds) at a quarter of its cost: it is
    on every log line."""
    second, micro = divmod(time.time_ns() // 1000, 1_000_000)
    if second != _Second.start:
        _Second.start = second
        _Second.text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return "%s.%06d+00:00" % (_Second.text, micro)  # noqa: UP031 (%-formatting is faster here)


def flush_logs() -> None:
    for handler in logging.getLogger(LOGGER).handlers:
        try:
            handler.flush()
        except OSError as exc:
            raise _unwritable(handler, exc) from None


def _unwritable(handler: logging.Handler, exc: OSError) -> OutputError:
    """A log file that cannot be written (a full disk) is an error that names it."""
    name = getattr(getattr(handler, "stream", None), "name", "")
    return OutputError(f"cannot write the log file {name}: {exc.strerror or exc}")
