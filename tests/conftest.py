"""Shared fixtures: real files in tmp dirs, the real CLI entry point."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ralph.cli import run

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def ralph(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run the `ralph` CLI in-process through the same `run()` the console script calls."""

    def invoke(*args: str) -> Result:
        capsys.readouterr()
        code = run(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke
