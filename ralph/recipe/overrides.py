"""`--profile NAME` and `--set key=value`: how a recipe is adjusted before it is checked."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from ralph.errors import UsageError

_TOP_LEVEL = ("vars", "agents", "limits", "tasks", "name", "description")


def apply_profile(data: dict[str, Any], profile: str) -> dict[str, Any]:
    """A copy of `data` with the named profile deep-merged over it."""
    profiles = data.get("profiles")
    if not isinstance(profiles, dict) or profile not in profiles:
        names = ", ".join(profiles) if isinstance(profiles, dict) and profiles else "none"
        raise UsageError(f"no profile '{profile}' in this recipe (profiles: {names})")
    merged = copy.deepcopy(data)
    patch = profiles[profile] if isinstance(profiles[profile], dict) else {}
    for section, body in patch.items():
        if section == "tasks" and isinstance(body, dict):
            _merge_tasks(merged, body)
        elif isinstance(merged.get(section), dict) and isinstance(body, dict):
            merged[section] = deep_merge(merged[section], body)
        else:
            merged[section] = copy.deepcopy(body)
    return merged


def _merge_tasks(data: dict[str, Any], by_name: dict[str, Any]) -> None:
    tasks = data.get("tasks")
    for index, task in enumerate(tasks if isinstance(tasks, list) else []):
        patch = by_name.get(str(task.get("name"))) if isinstance(task, dict) else None
        if isinstance(patch, dict):
            tasks[index] = deep_merge(task, patch)  # type: ignore[index]


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else in `patch` replaces what `base` had."""
    out = dict(base)
    for key, value in patch.items():
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_sets(data: dict[str, Any], assignments: Sequence[str]) -> dict[str, Any]:
    """A copy of `data` with each `key=value` applied; a bare key means `vars.key`."""
    out = copy.deepcopy(data)
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value, got '{assignment}'")
        parts = key.strip().split(".")
        if parts[0] not in _TOP_LEVEL:
            parts = ["vars", *parts]
        _assign(out, parts, _parse_value(raw), assignment)
    return out


def _assign(data: dict[str, Any], parts: list[str], value: Any, assignment: str) -> None:
    node: Any = data
    for part in parts[:-1]:
        if isinstance(node, list):
            node = _task_by_name(node, part, assignment)
            continue
        if not isinstance(node, dict):
            raise UsageError(f"--set {assignment}: '{part}' is not a mapping in this recipe")
        node = node.setdefault(part, {})
    if isinstance(node, list):
        raise UsageError(
            f"--set {assignment}: name a key inside the task, e.g. tasks.NAME.cache=false"
        )
    if not isinstance(node, dict):
        raise UsageError(f"--set {assignment}: the parent of '{parts[-1]}' is not a mapping")
    node[parts[-1]] = value


def _task_by_name(tasks: list[Any], name: str, assignment: str) -> Any:
    for task in tasks:
        if isinstance(task, dict) and task.get("name") == name:
            return task
    raise UsageError(f"--set {assignment}: no task named '{name}'")


def _parse_value(raw: str) -> Any:
    """`1` → 1, `true` → True, `[a, b]` → a list: values read as YAML, as in the recipe."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        value = YAML(typ="safe", pure=True).load(raw)
    except YAMLError:
        return raw
    return raw if value is None and raw.strip() not in ("null", "~") else value
