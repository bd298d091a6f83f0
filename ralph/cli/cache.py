"""`ralph cache stats|clear|explain`: the response cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ralph.cli.app import CacheDirOption, ProfileOption, SetOption, app
from ralph.errors import ConfigError, Problem, RecipeError, UsageError

cache_app = typer.Typer(help="The response cache: stats, clear, explain.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


def _cache_dir(recipe: Path | None, cache_dir: Path | None) -> Path:
    """The cache folder of the command line; it may not exist yet, but it is no file."""
    from ralph.cache import default_cache_dir

    if cache_dir is None:
        if recipe is None:
            raise UsageError(
                "name a recipe (its cache is .ralph/cache beside it) or pass --cache-dir"
            )
        _readable(recipe)
        cache_dir = default_cache_dir(recipe)
    if cache_dir.exists() and not cache_dir.is_dir():
        raise ConfigError(f"the cache folder {cache_dir} is a file, not a folder")
    return cache_dir


def _readable(recipe: Path) -> None:
    """A recipe that cannot be read is reported as every command reports it, rather than
    taken to have an empty cache."""
    try:
        recipe.open("rb").close()
    except OSError as exc:
        reason = f"cannot read recipe: {exc.strerror or exc}"
        raise RecipeError([Problem(str(recipe), 1, 1, "", reason)]) from None


def _absent(directory: Path) -> str | None:
    """Why `directory` holds no cache to look at, or None: looking must not make one (a
    mistyped --cache-dir, say)."""
    from ralph.cache import holds_cache

    if not directory.exists():
        return "does not exist"
    return None if holds_cache(directory) else "holds no cache"


@cache_app.command("stats")
def cache_stats(
    recipe: Annotated[Path | None, typer.Argument()] = None, cache_dir: CacheDirOption = None
) -> int:
    """How many answers the cache holds and how much disk they use."""
    from ralph.cache import ResponseCache

    directory = _cache_dir(recipe, cache_dir)
    if absent := _absent(directory):
        typer.echo(f"{directory}: no cache (the folder {absent})")
        return 0
    cache = ResponseCache(directory)
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

    directory = _cache_dir(recipe, cache_dir)
    if absent := _absent(directory):
        typer.echo(f"nothing removed: {directory} {absent}")
        return 0
    cache = ResponseCache(directory)
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
        held = {True: "cached", False: "not cached", None: "the task does not use the cache"}[
            entry.present
        ]
        typer.echo(f"agent {entry.agent}: key {short_key(entry.key)} ({held})")
        typer.echo(json.dumps(entry.parts, indent=2, ensure_ascii=False, default=list))
    return 0
