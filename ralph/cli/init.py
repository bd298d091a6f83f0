"""`ralph init`: scaffold a recipe that validates and runs at once."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from ralph.cli.app import app


@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="Where to put the recipe.")] = Path(),
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> int:
    """Scaffold recipe.yaml, an items file, its schema and a .gitignore."""
    from ralph.scaffold import scaffold

    for path in scaffold(folder, force=force):
        typer.echo(f"wrote {path}")
    recipe = folder / "recipe.yaml"
    shown = shlex.quote(str(recipe))  # a folder with a space in it, pasted as it is
    typer.echo(f"next: ralph validate {shown} && ralph apply {shown}")
    return 0
