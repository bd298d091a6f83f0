"""`ralph cache stats|clear|explain`: the response cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ralph.cli.app import CacheDirOption, ProfileOption, SetOption, app
from ralph.errors import UsageError

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

    from ralph.cache import short_key
    from ralph.explain import explain_item
    from ralph.recipe.validate import load_recipe

    model = load_recipe(recipe, profile, sets or ())
    for entry in explain_item(model, task, item, _cache_dir(recipe, cache_dir)):
        held = "cached" if entry.present else "not cached"
        typer.echo(f"agent {entry.agent}: key {short_key(entry.key)} ({held})")
        typer.echo(json.dumps(entry.parts, indent=2, ensure_ascii=False, default=list))
    return 0
