"""`ralph health`: every agent and health check of a recipe, as a table or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ralph.cli.app import (
    CacheDirOption,
    InsecureKeyFileOption,
    OutOption,
    PlanFormat,
    ProfileOption,
    SetOption,
    app,
)


@app.command()
def health(
    recipe: Annotated[Path, typer.Argument(help="The recipe whose agents and checks to test.")],
    fmt: Annotated[PlanFormat, typer.Option("--format", "-f", help="text or json.")] = (
        PlanFormat.text
    ),
    profile: ProfileOption = None,
    sets: SetOption = None,
    out: OutOption = Path("out"),
    cache_dir: CacheDirOption = None,
    allow_insecure_key_file: InsecureKeyFileOption = False,
) -> int:
    """Check that every agent answers and every health check passes; a table with latencies."""
    import asyncio
    import json
    from dataclasses import asdict

    from ralph.cache import default_cache_dir
    from ralph.health import run_checks
    from ralph.keys import KeyRing
    from ralph.recipe.validate import load_recipe
    from ralph.render.tables import table

    model = load_recipe(recipe, profile, sets or ())
    checks = run_checks(
        model,
        out,
        cache_dir or default_cache_dir(model.path),
        keys=KeyRing(model.agents, allow_insecure_file=allow_insecure_key_file),
    )
    results = asyncio.run(checks)
    if fmt == PlanFormat.json:
        typer.echo(json.dumps([asdict(r) for r in results], indent=2))
    else:
        rows = [
            [r.name, "ok" if r.ok else "FAIL", f"{r.latency_ms:.0f} ms", r.detail] for r in results
        ]
        typer.echo("\n".join(table(["check", "status", "latency", "detail"], rows)))
    return 0 if all(r.ok for r in results) else 1
