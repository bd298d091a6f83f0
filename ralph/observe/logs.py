"""One log event per attempt, as JSON (python-json-logger) or as text for people.

Prompts are never logged, only their length and hash; headers and keys never reach a record.
Events are logged as dicts: the JSON formatter takes their fields as they are instead of
sifting every LogRecord attribute, which keeps a log line near 10 µs on the hot path.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pythonjsonlogger.json import JsonFormatter

LOGGER = "ralph.run"


class EventFormatter(JsonFormatter):
    """JSON lines of `{timestamp, level, event, ...fields}`."""

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["timestamp"] = datetime.fromtimestamp(record.created, tz=UTC).isoformat()
        log_data["level"] = record.levelname.lower()
        log_data.update(message_dict or {"event": record.getMessage()})


class BufferedFileHandler(logging.StreamHandler[IO[str]]):
    """A file handler that leaves flushing to its buffer (and to `flush_logs`), instead of a
    write system call per line."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = (
            dict(record.msg) if isinstance(record.msg, dict) else {"event": record.getMessage()}
        )
        name = fields.pop("event", "")
        parts = " ".join(f"{key}={value}" for key, value in fields.items())
        return f"{record.levelname.lower()} {name} {parts}".rstrip()


def setup_logging(fmt: str, file: Path | None, *, quiet: bool = False) -> logging.Logger:
    """The run's logger: to `file` when given (buffered), else to stderr."""
    logger = logging.getLogger(LOGGER)
    close_logging()
    # events carry their own fields; the thread and process names each LogRecord looks up
    # otherwise are never logged and cost a few microseconds on every attempt
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logger.propagate = False
    logger.setLevel(logging.WARNING if quiet and file is None else logging.INFO)
    handler: logging.StreamHandler[IO[str]] = (
        BufferedFileHandler(file.open("a", encoding="utf-8", buffering=1 << 16))
        if file
        else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(EventFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    return logger


def close_logging() -> None:
    logger = logging.getLogger(LOGGER)
    for handler in logger.handlers:
        handler.flush()
        if isinstance(handler, logging.StreamHandler) and handler.stream not in (
            sys.stderr,
            sys.stdout,
        ):
            handler.close()
    logger.handlers.clear()


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
        data = {"event": name}
        data.update((k, v) for k, v in fields.items() if v is not None or k in CONTRACT_FIELDS)
        # makeRecord + handle skips Logger.log's stack walk for the caller's file and line,
        # which events do not report
        logger.handle(logger.makeRecord(logger.name, level, "ralph", 0, data, (), None))


def flush_logs() -> None:
    for handler in logging.getLogger(LOGGER).handlers:
        handler.flush()
