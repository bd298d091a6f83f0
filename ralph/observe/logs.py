"""One log event per attempt, as JSON (python-json-logger) or as text for people.

Prompts are never logged, only their length and hash; headers and keys never reach a record.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import IO, Any

LOGGER = "ralph.run"
FIELDS = (
    "event",
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
    "cache_key",
    "prompt_chars",
    "prompt_sha",
    "error",
)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"{name}={getattr(record, name)}"
            for name in FIELDS[1:]
            if getattr(record, name, None) is not None
        ]
        return f"{record.levelname.lower()} {record.getMessage()} " + " ".join(parts)


def setup_logging(fmt: str, file: Path | None, *, quiet: bool = False) -> logging.Logger:
    """The run's logger: to `file` when given (buffered), else to stderr."""
    logger = logging.getLogger(LOGGER)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO)
    stream: IO[str] = file.open("a", encoding="utf-8", buffering=1 << 16) if file else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_json_formatter() if fmt == "json" else TextFormatter())
    if file is None and quiet:
        handler.setLevel(logging.WARNING)
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


def _json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "%(message)s %(levelname)s",
        rename_fields={"message": "event", "levelname": "level"},
        timestamp=True,
    )


def event(logger: logging.Logger, level: int, name: str, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={k: v for k, v in fields.items() if v is not None})
