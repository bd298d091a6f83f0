"""`ralph plan`: the plan of a recipe, saved for `ralph apply plan.json` to run exactly."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ralph.cli.app import CacheDirOption, PlanFormat, ProfileOption, SetOption, ShardOption, app
from ralph.cli.apply import (
    PromptsFileOption,
    ShowOption,
    load_target,
    make_plan,
    parse_show,
)
from ralph.fastjson import dumps_pretty

if TYPE_CHECKING:
    from ralph.changes import Changes
    from ralph.plan import Plan


@app.command("plan")
def plan_command(
    recipe: Annotated[
        Path, typer.Argument(help="The recipe to plan (YAML), or a saved plan to plan again.")
    ],
    profile: ProfileOption = None,
    sets: SetOption = None,
    cache_dir: CacheDirOption = None,
    out: Annotated[
        Path, typer.Option("--out", help="Where the run writes outputs (its loops' states).")
    ] = Path("out"),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Save the plan here (JSON).")
    ] = None,
    fmt: Annotated[PlanFormat, typer.Option("--format", "-f", help="text or json.")] = (
        PlanFormat.text
    ),
    show: ShowOption = "3",
    prompts_file: PromptsFileOption = None,
    shard: ShardOption = None,
    against: Annotated[
        Path | None,
        typer.Option(
            "--against", help="A run's summary (--summary-file): show what this plan changes."
        ),
    ] = None,
    detailed_exitcode: Annotated[
        bool,
        typer.Option(
            "--detailed-exitcode", help="Exit 0 when nothing would be sent, 2 when requests would."
        ),
    ] = False,
) -> int:
    """Show what `apply` would do, and save it for `ralph apply plan.json`."""
    from ralph.cache import default_cache_dir
    from ralph.changes import compare
    from ralph.observe.summary import read_summary
    from ralph.render.plan import render_plan
    from ralph.run.outputs import write_atomic

    last_run = read_summary(against) if against is not None else None  # refused before any work
    model, shard = load_target(recipe, profile, sets, shard)
    cache = cache_dir or default_cache_dir(model.path)
    plan = make_plan(model, cache, out, show, shard, prompts_file)
    if output is not None:
        write_atomic(output, dumps_pretty(plan.as_dict()) + "\n")
    if last_run is None:
        typer.echo(render_plan(plan, fmt.value, parse_show(show)))
    else:
        _print_with_changes(plan, compare(plan, last_run, str(against)), fmt, parse_show(show))
    if plan.errors:
        return 1
    return 2 if detailed_exitcode and plan.requests else 0


def _print_with_changes(plan: Plan, changes: Changes, fmt: PlanFormat, limit: int | None) -> None:
    from ralph.changes import render_changes
    from ralph.render.plan import render_plan

    if fmt == PlanFormat.json:
        data = {**plan.as_dict(), "changes": changes.as_dict()}
        typer.echo(dumps_pretty(data))
    else:
        typer.echo(render_plan(plan, fmt.value, limit) + "\n\n" + render_changes(changes))
