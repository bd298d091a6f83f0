"""`ralph cache explain`: what makes an item's cache key, agent by agent, and whether it is held."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ralph.cache import ResponseCache, cache_key, key_parts
from ralph.errors import UsageError
from ralph.items import iter_items
from ralph.recipe.model import Recipe
from ralph.run.prepare import ItemRejected, Preparer


@dataclass(frozen=True)
class KeyExplanation:
    agent: str
    key: str
    parts: dict[str, Any]
    present: bool


def explain_item(
    recipe: Recipe, task_name: str, index: int, cache_dir: Path
) -> Iterator[KeyExplanation]:
    task = next((t for t in recipe.tasks if t.name == task_name), None)
    if task is None:
        raise UsageError(
            f"no task '{task_name}' (tasks: {', '.join(t.name for t in recipe.tasks)})"
        )
    items = iter_items(task.items) if task.items is not None else iter([None])
    item = next(itertools.islice(items, index, None), _MISSING)
    if item is _MISSING:
        raise UsageError(f"task '{task_name}' has no item {index}")
    try:
        prepared = Preparer(recipe, task, {}).prepare(index, item)
    except ItemRejected as exc:
        raise UsageError(f"item {index} cannot be rendered: {exc}") from None
    cache = ResponseCache(cache_dir)
    try:
        agent_name: str | None = task.agent
        seen: set[str] = set()
        while agent_name is not None and agent_name not in seen:
            seen.add(agent_name)
            agent = recipe.agents[agent_name]
            request = prepared.request(agent)
            key = cache_key(agent, request)
            yield KeyExplanation(agent.name, key, key_parts(agent, request), key in cache)
            agent_name = agent.fallback
    finally:
        cache.close()


_MISSING = object()
