"""`ralph cache explain`: what makes an item's cache key, agent by agent, and whether it is held."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ralph.cache import CachePeek, cache_key, key_parts
from ralph.errors import UsageError
from ralph.items import numbered_items
from ralph.recipe.model import ItemSource, Recipe
from ralph.run.outputs import OutputPathError
from ralph.run.prepare import ItemRejected, Preparer, reads_outputs


@dataclass(frozen=True)
class KeyExplanation:
    agent: str
    key: str
    parts: dict[str, Any]
    present: bool | None  # None: the task does not use the cache, whatever it holds


def explain_item(
    recipe: Recipe, task_name: str, index: int, cache_dir: Path
) -> Iterator[KeyExplanation]:
    task = next((t for t in recipe.tasks if t.name == task_name), None)
    if task is None:
        raise UsageError(
            f"no task '{task_name}' (tasks: {', '.join(t.name for t in recipe.tasks)})"
        )
    found = _nth_item(task.items, index)
    if found is None:
        raise UsageError(f"task '{task_name}' has no item {index}")
    item = found[1]
    if reads_outputs(task):
        raise UsageError(
            f"task '{task_name}' reads outputs of earlier tasks, which explain does not have: "
            "it cannot render the item as a run does (the cache_key of its attempt log lines "
            "identifies it)"
        )
    try:
        prepared = Preparer(recipe, task, {}).prepare(index, item)
    except (ItemRejected, OutputPathError) as exc:
        raise UsageError(f"item {index} cannot be rendered: {exc}") from None
    # read-only, as a plan reads it: explaining makes no cache folder and writes to none
    cache = CachePeek(cache_dir)
    uses_cache = task.cache.enabled and task.loop is None  # as a run decides it
    try:
        for name in recipe.fallback_chain(task.agent):
            agent = recipe.agents[name]
            request = prepared.request(agent)
            key = cache_key(agent, request)
            held = cache.answer(key) is not None if uses_cache else None
            yield KeyExplanation(agent.name, key, key_parts(agent, request), held)
    finally:
        cache.close()


def _nth_item(source: ItemSource | None, index: int) -> tuple[int, Any] | None:
    """(index, item), or None when there is no such item; an index islice cannot take (below
    0, past sys.maxsize) names none either."""
    if not 0 <= index <= sys.maxsize:
        return None
    return next(itertools.islice(numbered_items(source), index, None), None)
