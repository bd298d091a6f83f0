"""A live progress line per task on a terminal: items done, cached and failed, the rate, and
the tokens and money spent so far."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.progress import Task
    from rich.text import Text


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
            _rate_column(),
            TextColumn("{task.fields[tokens]} tokens · ${task.fields[cost]:.4f}"),
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

    def advance(self, task: str, outcome: str, tokens: int, cost: float) -> None:
        if task not in self._ids:
            self._counts[task] = {"done": 0, "cached": 0, "failed": 0}
            self._ids[task] = self._progress.add_task(
                task, total=None, done=0, cached=0, failed=0, tokens=0, cost=0.0
            )
        self._counts[task][outcome] += 1
        self._progress.update(self._ids[task], advance=1, tokens=tokens, cost=cost)
        self._show(task)

    def failed_after_all(self, task: str, was: str) -> None:
        """An item shown as `was` (done, cached) failed after all: its output was not written."""
        counts = self._counts[task]
        counts[was] -= 1
        counts["failed"] += 1
        self._show(task)

    def _show(self, task: str) -> None:
        counts = self._counts[task]
        self._progress.update(
            self._ids[task], done=counts["done"], cached=counts["cached"], failed=counts["failed"]
        )


def _rate_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Items a second, once rich has seen enough of them to say."""

        def render(self, task: Task) -> Text:
            speed = task.speed
            return Text(f"{speed:.0f} items/s" if speed else "- items/s")

    return RateColumn()
