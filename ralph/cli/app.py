"""The `ralph` app, its shared options, and the one place errors become exit codes.

Every error a user can cause is a RalphError raised by the core and rendered here, once; a
bug is one line pointing at a log file with the traceback, and exit 70.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import traceback
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ralph import __version__
from ralph.errors import RalphError, RecipeError

EXIT_INTERRUPTED = 130
EXIT_BUG = 70

app = typer.Typer(
    name="ralph",
    help="Run LLM agents from declarative YAML recipes, inside hard limits.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


class Format(StrEnum):
    text = "text"
    json = "json"
    github = "github"
    sarif = "sarif"


class PlanFormat(StrEnum):
    text = "text"
    json = "json"


ProfileOption = Annotated[
    str | None,
    typer.Option(
        "--profile", "-p", envvar="RALPH_PROFILE", help="Deep-merge this profile of the recipe."
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override a value: key=value (vars.key), or agents.NAME.FIELD=value."
    ),
]
CacheDirOption = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        envvar="RALPH_CACHE_DIR",
        help="Response cache folder (default: .ralph/cache next to the recipe).",
    ),
]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Where outputs go.")]
ShardOption = Annotated[
    str | None,
    typer.Option("--shard", help="Only the items of shard K of N (e.g. 2/5), by a stable hash."),
]
InsecureKeyFileOption = Annotated[
    bool,
    typer.Option(
        "--allow-insecure-key-file",
        help="Accept an api_key_file that group or others can read.",
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ralph {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Run LLM agents from declarative YAML recipes, inside hard limits."""


def color() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _render_error(error: RalphError) -> None:
    if isinstance(error, RecipeError):
        from ralph.render.problems import problem_lines

        for line in problem_lines(error.problems, color=color()):
            typer.echo(line, err=True)
        return
    typer.echo(f"error: {error}", err=True)


def _show_usage_error(error: typer.TyperException) -> None:
    show = getattr(error, "show", None)
    if callable(show):
        show()
    else:
        typer.echo(f"Error: {error.format_message()}", err=True)


def _os_error(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason


def _report_bug() -> int:
    with tempfile.NamedTemporaryFile(
        "w", prefix="ralph-crash-", suffix=".log", delete=False
    ) as log:
        traceback.print_exc(file=log)
    typer.echo(
        f"error: ralph hit an internal error (a bug); the traceback is in {log.name}", err=True
    )
    return EXIT_BUG


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; the one place errors become exit codes."""
    try:
        result = app(args=argv, prog_name="ralph", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:  # typer's completion options exit by themselves
        return exc.code if isinstance(exc.code, int) else 0
    except typer.Abort:
        typer.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except typer.TyperException as exc:
        _show_usage_error(exc)
        return exc.exit_code
    except RalphError as exc:
        _render_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except OSError as exc:
        # the machine said no (a folder that is a file, a full disk, no permission): the
        # user can act on that, so it is an error with the path, not a bug report
        typer.echo(f"error: {_os_error(exc)}", err=True)
        return 1
    except Exception:
        return _report_bug()
    return result if isinstance(result, int) else 0


def main() -> None:
    code = run()
    # Everything ralph writes is closed by now. The interpreter's teardown would free every
    # object one by one (~35 ms after a run with a large cache key set); the OS frees them at
    # once. So flush what the standard streams hold and leave.
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # a reader that went away (`ralph ... | head`)
            stream.flush()
    os._exit(code)
