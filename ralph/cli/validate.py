"""`ralph validate` and `ralph schema`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ralph.cli.app import Format, ProfileOption, SetOption, app, color


@app.command()
def validate(
    paths: Annotated[
        list[Path], typer.Argument(help="Recipe files, or folders to search for recipes.")
    ],
    fmt: Annotated[
        Format, typer.Option("--format", "-f", help="text, json, github annotations or sarif.")
    ] = Format.text,
    profile: ProfileOption = None,
    sets: SetOption = None,
    only_recipes: Annotated[
        bool,
        typer.Option(
            "--only-recipes",
            help="Skip named files without top-level version: and tasks: (for pre-commit).",
        ),
    ] = False,
) -> int:
    """Check recipes against the schema and for semantic mistakes; report every problem."""
    from ralph.recipe.validate import validate_paths
    from ralph.render.problems import render_report

    report = validate_paths(paths, profile, sets or (), only_recipes=only_recipes)
    typer.echo(render_report(report, fmt.value, color=color()))
    return 1 if report.invalid else 0


@app.command()
def schema() -> int:
    """Print the recipe JSON Schema (for editors and other tools)."""
    from ralph.recipe.schema import schema_text

    typer.echo(schema_text(), nl=False)
    return 0
