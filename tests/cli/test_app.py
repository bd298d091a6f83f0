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


def test_the_command_flushes_everything_before_it_leaves(tmp_path: Path) -> None:
    """main() skips the interpreter's teardown: what was printed and written must all be out,
    with the exit code, even when the reader stops early."""
    recipe = write_recipe(
        tmp_path,
        """
        version: 1
        name: many
        agents: {local: {provider: echo}}
        tasks: [{name: t, agent: local, for_each: {file: items.jsonl}, prompt: "{{ item }}"}]
    """,
        **{"items.jsonl": "".join(f"{n}\n" for n in range(3000))},
    )
    command = [sys.executable, "-m", "ralph", "apply", str(recipe), "--out", str(tmp_path / "o")]
    done = subprocess.run(
        [*command, "--log-format", "json"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert len(done.stderr.splitlines()) == 3000  # one attempt event per item, none lost
    assert "totals: 3000 requests" in done.stdout
    assert done.stdout.splitlines()[-1].startswith("wall time: ")  # the summary's last line
    assert len((tmp_path / "o" / "t.jsonl").read_text().splitlines()) == 3000
    piped = subprocess.run(
        f"{' '.join(command)} --dry-run --show all | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
    )
    assert len(piped.stdout) == 10 and piped.stderr == ""


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
