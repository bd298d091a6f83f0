"""Shared fixtures: real files in tmp dirs, the real CLI entry point."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ralph.cli import run
from ralph.testing import FakeLLMServer

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


TEST_KEY = "sk-test-0123456789abcdefSECRET"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLLMServer]:
    """The shipped fake OpenAI/Anthropic server on 127.0.0.1 (port 0), on a background thread."""
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", TEST_KEY)
    with FakeLLMServer(api_key=TEST_KEY).in_thread() as fake:
        yield fake


def write_recipe(folder: Path, text: str, **files: str) -> Path:
    """A recipe (and any files it names, by relative path) in `folder`."""
    for name, content in files.items():
        target = folder / name.replace("__", "/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    recipe = folder / "recipe.yaml"
    recipe.write_text(textwrap.dedent(text))
    return recipe


def apply_args(recipe: Path, out: Path, *extra: str) -> list[str]:
    """`apply RECIPE --out OUT --quiet EXTRA...`: the run most tests make."""
    return ["apply", str(recipe), "--out", str(out), "--quiet", *extra]


RALPH = [sys.executable, "-m", "ralph"]
"""The CLI as a process of its own, as the console script runs it."""


def start_apply(recipe: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`ralph apply` as a real process (for signals and kills), its output captured."""
    command = [*RALPH, *apply_args(recipe, out, *extra)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def gone(pid: int, within_s: float = 5.0) -> bool:
    """Whether process `pid` ends (or is a zombie awaiting its reaper) within `within_s`."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status")
        if not status.exists() or "zombie" in status.read_text():
            return True
        time.sleep(0.01)
    return False
