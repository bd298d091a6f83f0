"""`ralph summary merge`: join the summaries of a sharded run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ralph.cli.app import app
from ralph.fastjson import dumps_pretty

summary_app = typer.Typer(help="Run summaries: merge the shards of one run.", no_args_is_help=True)
app.add_typer(summary_app, name="summary")


@summary_app.command("merge")
def merge(
    files: Annotated[list[Path], typer.Argument(help="Shard summaries (from --summary-file).")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the merged summary here.")
    ] = None,
    partial: Annotated[
        bool,
        typer.Option(
            "--partial", help="Merge even when shards are missing (listed in missing_shards)."
        ),
    ] = False,
) -> int:
    """Join shard summaries into one, as if one machine had run every item."""
    from ralph.observe.merge import merge_summaries
    from ralph.observe.report import render_summary
    from ralph.observe.summary import read_summary
    from ralph.run.outputs import write_atomic

    merged = merge_summaries([(str(path), read_summary(path)) for path in files], partial=partial)
    if output is not None:
        write_atomic(output, dumps_pretty(merged) + "\n")
    typer.echo(render_summary(merged))
    if merged["missing_shards"]:
        missing = ", ".join(merged["missing_shards"])
        typer.echo(f"warning: shards missing: {missing}; their items are not counted", err=True)
    return int(merged["exit_code"])
