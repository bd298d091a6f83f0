"""`ralph apply`: run a recipe (or a saved plan), or with --dry-run print its plan."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ralph.cli.app import (
    CacheDirOption,
    InsecureKeyFileOption,
    OutOption,
    PlanFormat,
    ProfileOption,
    SetOption,
    ShardOption,
    app,
)

if TYPE_CHECKING:
    from ralph.keys import KeyRing
    from ralph.plan import Plan
    from ralph.recipe.model import Recipe
    from ralph.run.engine import RunOptions
    from ralph.shard import Shard


class LogFormat(StrEnum):
    json = "json"
    text = "text"


ShowOption = Annotated[
    str, typer.Option("--show", help="How many rendered prompts per task to show, or 'all'.")
]
PromptsFileOption = Annotated[
    Path | None,
    typer.Option(
        "--prompts-file", help="Also write every rendered prompt to this file (Markdown)."
    ),
]


@app.command()
def apply(
    recipe: Annotated[
        Path, typer.Argument(help="The recipe to run, or a plan saved by `plan -o`.")
    ],
    profile: ProfileOption = None,
    sets: SetOption = None,
    out: OutOption = Path("out"),
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Neither read nor write the response cache.")
    ] = False,
    cache_dir: CacheDirOption = None,
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
        Path | None,
        typer.Option(
            "--summary-file",
            help="Write the run summary here: JSON, or Prometheus text for a .prom file.",
        ),
    ] = None,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="No progress bar; only warnings and errors on stderr."),
    ] = False,
    allow_insecure_key_file: InsecureKeyFileOption = False,
    skip_health: Annotated[
        bool, typer.Option("--skip-health", help="Do not run the health checks first.")
    ] = False,
    shard: ShardOption = None,
    serve: Annotated[
        str | None,
        typer.Option(
            "--serve", help="Serve /healthz, /metrics and /status on HOST:PORT while running."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; send nothing, write nothing.")
    ] = False,
    fmt: Annotated[
        PlanFormat, typer.Option("--format", "-f", help="The plan as text or json (--dry-run).")
    ] = PlanFormat.text,
    show: ShowOption = "3",
    prompts_file: PromptsFileOption = None,
) -> int:
    """Run a recipe: every task in order, within its limits, cached and resumable."""
    from ralph.cache import default_cache_dir

    model, shard = load_target(recipe, profile, sets, shard)
    resolved_cache = None if no_cache else (cache_dir or default_cache_dir(model.path))
    if dry_run:  # with --no-cache the plan counts every item as a request, as the run would
        return print_plan(model, resolved_cache, out, fmt, show, shard, prompts_file)
    from ralph.keys import KeyRing
    from ralph.run.engine import RunOptions

    options = RunOptions(
        out_dir=out,
        cache_dir=resolved_cache,
        concurrency=concurrency,
        shard=shard_option(shard),
        serve=parse_address(serve) if serve else None,
        record_prompts=summary_file is not None and summary_file.suffix != ".prom",
        log_file=log_file,
    )
    # one key ring for the health checks and the run: each key is read once
    keys = KeyRing(model.agents, allow_insecure_file=allow_insecure_key_file)
    logs = _Logs(log_format, log_file, quiet)
    return _run(model, options, keys, logs, summary_file, check_health=not skip_health)


def load_target(
    path: Path, profile: str | None, sets: list[str] | None, shard: str | None
) -> tuple[Recipe, str | None]:
    """A recipe file and `shard`, or the recipe a saved plan was made from (checked to be
    unchanged) and the plan's shard."""
    from ralph.errors import UsageError
    from ralph.plan import check_fingerprints, is_saved_plan, load_saved_plan
    from ralph.recipe.validate import load_recipe

    if not is_saved_plan(path):
        return load_recipe(path, profile, sets or ()), shard
    if profile or sets:
        raise UsageError(f"{path}: a saved plan fixes its profile and --set values; give neither")
    if shard is not None:
        raise UsageError(
            f"{path}: a saved plan fixes its shard; give no --shard (plan with it instead)"
        )
    saved = load_saved_plan(path)
    model = load_recipe(Path(saved["recipe"]), saved["profile"], saved["overrides"])
    check_fingerprints(saved["fingerprints"], model)
    return model, saved["shard"]


def print_plan(
    model: Recipe,
    cache_dir: Path | None,
    out_dir: Path,
    fmt: PlanFormat,
    show: str,
    shard: str | None,
    prompts_file: Path | None,
) -> int:
    from ralph.render.plan import render_plan

    plan = make_plan(model, cache_dir, out_dir, show, shard, prompts_file)
    typer.echo(render_plan(plan, fmt.value, parse_show(show)))
    return plan_exit_code(plan)


def make_plan(
    model: Recipe,
    cache_dir: Path | None,
    out_dir: Path,
    show: str,
    shard: str | None,
    prompts_file: Path | None,
) -> Plan:
    """The plan, rendering every prompt when they all go to `prompts_file` (written here)."""
    from ralph.plan import build_plan

    limit = None if prompts_file is not None else parse_show(show)
    plan = build_plan(model, cache_dir, limit, shard_option(shard), out_dir)
    if prompts_file is not None:
        from ralph.render.plan import render_prompts
        from ralph.run.outputs import write_atomic

        write_atomic(prompts_file, render_prompts(plan))
    return plan


def plan_exit_code(plan: Plan) -> int:
    """1 when some item cannot be rendered, 4 when a limit would stop the run, else 0."""
    if plan.errors:
        return 1
    return 4 if plan.stopped_by else 0


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        raise typer.BadParameter(f"expected HOST:PORT, got '{text}'", param_hint="--serve")
    return host.strip("[]"), int(port)


def parse_show(show: str) -> int | None:
    if show == "all":
        return None
    if not re.fullmatch(r"[0-9]+", show):
        raise typer.BadParameter(f"expected a number or 'all', got '{show}'", param_hint="--show")
    return int(show) if len(show) < 19 else None  # more prompts than any items file holds: all


@dataclass(frozen=True)
class _Logs:
    format: LogFormat | None
    file: Path | None
    quiet: bool


def _run(
    model: Recipe,
    options: RunOptions,
    keys: KeyRing,
    logs: _Logs,
    summary_file: Path | None,
    *,
    check_health: bool,
) -> int:
    from contextlib import nullcontext, suppress

    from ralph.errors import OutputError
    from ralph.fastjson import dumps_pretty
    from ralph.observe.logs import close_logging, setup_logging
    from ralph.observe.report import render_summary
    from ralph.run.engine import run_recipe
    from ralph.run.outputs import write_atomic

    tty = sys.stderr.isatty()
    fmt = (logs.format or (LogFormat.text if tty else LogFormat.json)).value
    show_progress = tty and not logs.quiet
    # before the health checks: a key they cannot read is a security event in the log too
    logger = setup_logging(fmt, logs.file, quiet=logs.quiet or show_progress)
    progress = _progress() if show_progress else None
    try:
        if check_health:
            from ralph.health import require_healthy

            require_healthy(model, options.out_dir, options.cache_dir, keys=keys)
        with progress if progress is not None else nullcontext():
            stats = run_recipe(model, options, logger, progress, keys)
    except BaseException:
        with suppress(OutputError):  # the error on its way says more than the log file's
            close_logging()
        raise
    close_logging()
    summary = stats.as_dict()
    # shown first: a summary file that cannot be written must not hide how the run ended
    typer.echo(render_summary(summary))
    if summary_file is not None and summary_file.suffix == ".prom":
        from ralph.observe.metrics import prometheus

        write_atomic(summary_file, prometheus(stats))
    elif summary_file is not None:
        write_atomic(summary_file, dumps_pretty(summary) + "\n")
    return stats.exit_code


def _progress() -> Any:
    from ralph.observe.progress import RichProgress

    return RichProgress()


def shard_option(text: str | None) -> Shard | None:
    from ralph.shard import parse_shard

    return parse_shard(text) if text else None
