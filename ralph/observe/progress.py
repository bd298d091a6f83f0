"""A live progress line per task on a terminal (items done, cached, failed, rate)."""

from __future__ import annotations

from types import TracebackType
from typing import Any


class RichProgress:
    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            TextColumn(
                "{task.fields[done]} done · {task.fields[cached]} cached · "
                "{task.fields[failed]} failed"
            ),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._ids: dict[str, Any] = {}
        self._counts: dict[str, dict[str, int]] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def advance(self, task: str, outcome: str) -> None:
        if task not in self._ids:
            self._counts[task] = {"done": 0, "cached": 0, "failed": 0}
            self._ids[task] = self._progress.add_task(task, total=None, done=0, cached=0, failed=0)
        counts = self._counts[task]
        counts[outcome] += 1
        self._progress.update(
            self._ids[task],
            advance=1,
            done=counts["done"],
            cached=counts["cached"],
            failed=counts["failed"],
        )
