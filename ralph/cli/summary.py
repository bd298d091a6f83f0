"""`ralph summary merge`: join the summaries of a sharded run."""

from __future__ import annotations

import json
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
) -> int:
    """Join shard summaries into one, as if one machine had run every item."""
    from ralph.errors import UsageError
    from ralph.observe.merge import merge_summaries
    from ralph.observe.report import render_summary
    from ralph.run.outputs import write_atomic

    summaries = []
    for path in files:
        try:
            summaries.append(json.loads(path.read_text("utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise UsageError(f"{path}: cannot read a summary: {exc}") from None
    merged = merge_summaries(summaries)
    if output is not None:
        write_atomic(output, dumps_pretty(merged) + "\n")
    typer.echo(render_summary(merged))
    return int(merged["exit_code"])
