"""The `ralph` command: parse arguments, call the core, print its result, return an exit code.

Every error a user can cause is a RalphError raised by the core and rendered here, once.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from ralph import __version__
from ralph.errors import RalphError, RecipeError, UsageError

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
    Path | None, typer.Option("--cache-dir", envvar="RALPH_CACHE_DIR", help="Cache folder.")
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


@app.command()
def validate(
    paths: Annotated[
        list[Path], typer.Argument(help="Recipe files, or folders to search for recipes.")
    ],
    fmt: Annotated[
        Format, typer.Option("--format", "-f", help="text, json or github annotations.")
    ] = Format.text,
    profile: ProfileOption = None,
    sets: SetOption = None,
) -> int:
    """Check recipes against the schema and for semantic mistakes; report every problem."""
    from ralph.recipe.validate import validate_paths
    from ralph.render import render_report

    report = validate_paths(paths, profile, sets or ())
    typer.echo(render_report(report, fmt.value, color=_color()))
    return 1 if report.invalid else 0


@app.command()
def schema() -> int:
    """Print the recipe JSON Schema (for editors and other tools)."""
    from ralph.recipe.schema import schema_text

    typer.echo(schema_text(), nl=False)
    return 0


class LogFormat(StrEnum):
    json = "json"
    text = "text"


@app.command()
def apply(
    recipe: Annotated[Path, typer.Argument(help="The recipe to run.")],
    profile: ProfileOption = None,
    sets: SetOption = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where outputs go.")] = Path("out"),
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Neither read nor write the response cache.")
    ] = False,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            envvar="RALPH_CACHE_DIR",
            help="Response cache folder (default: .ralph/cache next to the recipe).",
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency", "-c", min=1, help="Cap on requests in flight, over all agents."
        ),
    ] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option("--log-format", help="json or text (default: text on a terminal, else json)."),
    ] = None,
    log_file: Annotated[
        Path | None, typer.Option("--log-file", help="Write logs here instead of stderr.")
    ] = None,
    summary_file: Annotated[
        Path | None, typer.Option("--summary-file", help="Write the run summary as JSON here.")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar; only warnings on stderr.")
    ] = False,
    skip_health: Annotated[
        bool, typer.Option("--skip-health", help="Do not run the health checks first.")
    ] = False,
) -> int:
    """Run a recipe: every task in order, within its limits, cached and resumable."""
    import json
    from contextlib import nullcontext

    from ralph.cache import default_cache_dir
    from ralph.observe.logs import close_logging, setup_logging
    from ralph.observe.report import render_summary
    from ralph.recipe.validate import load_recipe
    from ralph.run.engine import RunOptions, run_recipe
    from ralph.run.outputs import write_atomic

    model = load_recipe(recipe, profile, sets or ())
    resolved_cache = None if no_cache else (cache_dir or default_cache_dir(model.path))
    if not skip_health:
        _require_health(model, out, resolved_cache)
    tty = sys.stderr.isatty()
    fmt = (log_format or (LogFormat.text if tty else LogFormat.json)).value
    show_progress = tty and not quiet
    logger = setup_logging(fmt, log_file, quiet=quiet or show_progress)
    options = RunOptions(out_dir=out, cache_dir=resolved_cache, concurrency=concurrency)
    progress = _progress() if show_progress else None
    try:
        with progress if progress is not None else nullcontext():
            stats = run_recipe(model, options, logger, progress)
    finally:
        close_logging()
    summary = stats.as_dict()
    if summary_file is not None:
        write_atomic(summary_file, json.dumps(summary, indent=2) + "\n")
    typer.echo(render_summary(summary))
    return stats.exit_code


def _require_health(model: Any, out: Path, cache_dir: Path | None) -> None:
    import asyncio

    from ralph.health import HealthError, run_checks

    failed = [r for r in asyncio.run(run_checks(model, out, cache_dir)) if not r.ok]
    if failed:
        reasons = "; ".join(f"{r.name}: {r.detail}" for r in failed)
        raise HealthError(f"health check failed, nothing was sent ({reasons})")


@app.command()
def health(
    recipe: Annotated[Path, typer.Argument(help="The recipe whose agents and checks to test.")],
    fmt: Annotated[Format, typer.Option("--format", "-f", help="text or json.")] = Format.text,
    profile: ProfileOption = None,
    sets: SetOption = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The output folder to check.")] = Path(
        "out"
    ),
    cache_dir: CacheDirOption = None,
) -> int:
    """Check that every agent answers and every health check passes; a table with latencies."""
    import asyncio
    import json

    from ralph.cache import default_cache_dir
    from ralph.health import run_checks
    from ralph.observe.tables import table
    from ralph.recipe.validate import load_recipe

    model = load_recipe(recipe, profile, sets or ())
    results = asyncio.run(run_checks(model, out, cache_dir or default_cache_dir(model.path)))
    if fmt == Format.json:
        typer.echo(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        rows = [
            [r.name, "ok" if r.ok else "FAIL", f"{r.latency_ms:.0f} ms", r.detail] for r in results
        ]
        typer.echo("\n".join(table(["check", "status", "latency", "detail"], rows)))
    return 0 if all(r.ok for r in results) else 1


def _progress() -> Any:
    from ralph.observe.progress import RichProgress

    return RichProgress()


cache_app = typer.Typer(help="The response cache: stats, clear, explain.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


def _cache_dir(recipe: Path | None, cache_dir: Path | None) -> Path:
    from ralph.cache import default_cache_dir

    if cache_dir is not None:
        return cache_dir
    if recipe is None:
        raise UsageError("name a recipe (its cache is .ralph/cache beside it) or pass --cache-dir")
    return default_cache_dir(recipe)


@cache_app.command("stats")
def cache_stats(
    recipe: Annotated[Path | None, typer.Argument()] = None, cache_dir: CacheDirOption = None
) -> int:
    """How many answers the cache holds and how much disk they use."""
    from ralph.cache import ResponseCache

    cache = ResponseCache(_cache_dir(recipe, cache_dir))
    try:
        stats = cache.stats()
    finally:
        cache.close()
    typer.echo(f"{stats['directory']}: {stats['entries']} entries, {stats['size_bytes']} bytes")
    return 0


@cache_app.command("clear")
def cache_clear(
    recipe: Annotated[Path | None, typer.Argument()] = None, cache_dir: CacheDirOption = None
) -> int:
    """Remove every cached answer."""
    from ralph.cache import ResponseCache

    cache = ResponseCache(_cache_dir(recipe, cache_dir))
    try:
        removed = cache.clear()
    finally:
        cache.close()
    typer.echo(f"removed {removed} entries")
    return 0


@cache_app.command("explain")
def cache_explain(
    recipe: Annotated[Path, typer.Argument()],
    task: Annotated[str, typer.Option("--task", "-t", help="Task name.")],
    item: Annotated[int, typer.Option("--item", "-i", help="Item index (0-based).")] = 0,
    profile: ProfileOption = None,
    sets: SetOption = None,
    cache_dir: CacheDirOption = None,
) -> int:
    """Show what goes into an item's cache key and whether the cache holds it."""
    import json

    from ralph.explain import explain_item
    from ralph.recipe.validate import load_recipe

    model = load_recipe(recipe, profile, sets or ())
    for entry in explain_item(model, task, item, _cache_dir(recipe, cache_dir)):
        held = "cached" if entry.present else "not cached"
        typer.echo(f"agent {entry.agent}: key {entry.key[:12]} ({held})")
        typer.echo(json.dumps(entry.parts, indent=2, ensure_ascii=False, default=list))
    return 0


def _color() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _render_error(error: RalphError) -> None:
    if isinstance(error, RecipeError):
        from ralph.render import problem_lines

        for line in problem_lines(error.problems, color=_color()):
            typer.echo(line, err=True)
        return
    typer.echo(f"error: {error}", err=True)


def _show_usage_error(error: typer.TyperException) -> None:
    show = getattr(error, "show", None)
    if callable(show):
        show()
    else:
        typer.echo(f"Error: {error.format_message()}", err=True)


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
    except Exception:
        return _report_bug()
    return result if isinstance(result, int) else 0


def main() -> None:
    sys.exit(run())
