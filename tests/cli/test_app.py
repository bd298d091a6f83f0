"""The `ralph` app itself: version, help, shell completion, and how errors become exit codes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ralph import __version__
from tests.conftest import Result, write_recipe


def test_version(ralph: Callable[..., Result]) -> None:
    result = ralph("--version")
    assert (result.code, result.out) == (0, f"ralph {__version__}\n")


def test_help_lists_every_command(ralph: Callable[..., Result]) -> None:
    result = ralph("--help")
    assert result.code == 0
    for command in ("validate", "apply", "plan", "health", "cache", "summary", "schema", "init"):
        assert command in result.out


def test_shell_completion_is_offered(ralph: Callable[..., Result]) -> None:
    # typer's own options; how they parse depends on the shell it detects, so only their
    # presence is asserted here
    result = ralph("--help")
    assert "--install-completion" in result.out and "--show-completion" in result.out


def test_no_arguments_shows_help_and_exits_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ralph"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "Usage" in done.stdout + done.stderr


def test_an_output_folder_that_is_a_file_is_an_error_not_a_crash(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = write_recipe(
        tmp_path,
        """
        version: 1
        name: blocked
        agents: {local: {provider: echo}}
        tasks: [{name: t, agent: local, prompt: hi}]
    """,
    )
    (tmp_path / "out").write_text("a file, not a folder")
    result = ralph("apply", str(recipe), "--out", str(tmp_path / "out"), "--skip-health")
    assert result.code == 1
    assert result.err.startswith(f"error: {tmp_path / 'out'}: ")
    assert "internal error" not in result.err
