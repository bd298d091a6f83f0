"""The error family users see; the CLI renders each once and exits with its code.

RalphError                 exit 1 unless a subclass says otherwise
├── UsageError             exit 2: the command line itself is wrong
├── RecipeError            exit 1: a recipe did not validate; carries its problems
└── OutputError            exit 1: the cache, a JSONL or the log file could not be written
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One located finding in a recipe, the unit every output format renders."""

    file: str
    line: int
    column: int
    path: str
    message: str
    severity: str = "error"

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.file, self.line, self.column, self.message)


class RalphError(Exception):
    """Base of every error meant for a user; `str()` is the message to show."""

    exit_code = 1


class UsageError(RalphError):
    exit_code = 2


class RecipeError(RalphError):
    """A recipe is invalid; `problems` say where and why."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        first = self.problems[0] if self.problems else None
        where = f"{first.file}:{first.line}:{first.column}: " if first else ""
        what = first.message if first else "invalid recipe"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"{where}{what}{more}")


class ConfigError(RalphError):
    """The environment a run needs is missing: an API key, a writable directory, ..."""


class OutputError(RalphError):
    """What a run must keep could not be written (the cache, a JSONL file, the log file):
    a full disk, a permission, a device that refuses."""


class ItemsError(RalphError):
    """An items file cannot be read; the message names the file and, when known (not 0), the
    line."""

    def __init__(self, file: str, line: int, message: str) -> None:
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}")
        self.file, self.line = file, line
