"""`--profile NAME` and `--set key=value`: how a recipe is adjusted before it is checked."""

from __future__ import annotations

import copy
import datetime as dt
import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ralph.errors import UsageError
from ralph.recipe.load import MAX_DEPTH

_SECTIONS = ("vars", "agents", "limits", "tasks")
_NAMED = {"agents": "agent", "tasks": "task"}  # sections whose entries --set picks by name
_EXAMPLE_KEYS = {"agents": "model=gpt-4o-mini", "tasks": "cache=false"}


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
        parts, value = parse_set(assignment)
        _assign(out, parts, value, assignment)
    return out


def parse_set(assignment: str) -> tuple[list[str], Any]:
    """`key=value` → (where in the recipe, the value); UsageError when no recipe could take it."""
    key, sep, raw = assignment.partition("=")
    parts = [part.strip() for part in key.split(".")]
    if not sep or not all(parts):
        raise UsageError(
            f"--set expects key=value (e.g. tone=terse or agents.writer.model=gpt-4o), "
            f"got '{assignment}'"
        )
    if len(parts) == 1 or parts[0] not in _SECTIONS:
        parts = ["vars", *parts]  # so a var may be called `name` or `limits`
    if len(parts) == 2 and parts[0] in _NAMED:
        raise UsageError(
            f"--set {assignment}: name a key inside the {_NAMED[parts[0]]}, "
            f"e.g. {parts[0]}.{parts[1]}.{_EXAMPLE_KEYS[parts[0]]}"
        )
    from ralph.units import LONG_NUMBER

    # the value itself may be 5000 digits long: messages name only the key
    try:
        value = _parse_value(raw)
    except ValueError:  # raised by int() past Python's digit limit
        raise UsageError(f"--set {key.strip()}=...: {LONG_NUMBER}") from None
    if (problem := _number_problem(value)) is not None:
        raise UsageError(f"--set {key.strip()}=...: {problem}")
    return parts, value


def unread_sets(
    before: dict[str, Any], after: dict[str, Any], sets: Sequence[str], base_dir: Path
) -> list[str]:
    """Why each `--set` of a var the recipe does not declare (`before` is the recipe without
    the sets) and no template reads would change nothing: most likely a typo, which would
    otherwise leave the declared var at its default, unnoticed."""
    found = before.get("vars")
    declared: dict[str, Any] = found if isinstance(found, dict) else {}
    read = _vars_read(after, base_dir)
    messages = []
    for assignment in sets:
        parts, _ = parse_set(assignment)
        name = parts[1]
        if parts[0] != "vars" or name in declared or read is None or name in read:
            continue
        close = difflib.get_close_matches(name, [str(k) for k in declared], n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        listed = ", ".join(str(k) for k in declared) or "none"
        messages.append(
            f"--set {assignment.partition('=')[0].strip()}=...: the recipe has no var '{name}' "
            f"and no template reads vars.{name}, so it would change nothing (vars: {listed}"
            f"{hint})"
        )
    return messages


def _vars_read(data: dict[str, Any], base_dir: Path) -> set[str] | None:
    """The vars the recipe's templates read by name; None when one may read any."""
    from ralph.recipe.load import read_capped
    from ralph.recipe.semantic import MAX_PROMPT_FILE_BYTES
    from ralph.templates import vars_read

    read: set[str] = set()
    tasks = data.get("tasks")
    for task in tasks if isinstance(tasks, list) else []:
        sources = [task.get(key) for key in ("system", "prompt", "output")]
        if isinstance(task.get("prompt_file"), str) and task.get("loop") is not None:
            return None  # read again each iteration, as the agent may have rewritten it
        if isinstance(task.get("prompt_file"), str):
            try:
                sources.append(
                    read_capped(base_dir / task["prompt_file"], MAX_PROMPT_FILE_BYTES).decode()
                )
            except (OSError, UnicodeError):
                return None
        for source in sources:
            if isinstance(source, str):
                found = vars_read(source)
                if found is None:
                    return None
                read |= found
    return read


def _number_problem(value: Any) -> str | None:
    """Why a number in a --set value fits no recipe: a run can neither compute with nor print it."""
    from ralph.units import number_problem

    if isinstance(value, dict | list):
        items = value.values() if isinstance(value, dict) else value
        return next((p for v in items if (p := _number_problem(v)) is not None), None)
    return number_problem(value)


def _assign(data: dict[str, Any], parts: list[str], value: Any, assignment: str) -> None:
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        if depth == 1 and parts[0] in _NAMED:
            node = _named(node, parts[0], part, assignment)
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise UsageError(
                f"--set {assignment}: '{'.'.join(parts[:depth])}' is not a mapping in this recipe"
            )
    if not isinstance(node, dict):
        raise UsageError(
            f"--set {assignment}: '{'.'.join(parts[:-1])}' is not a mapping in this recipe"
        )
    node[parts[-1]] = value


def _named(collection: Any, section: str, name: str, assignment: str) -> Any:
    """The agent or task called `name`: --set adjusts what a recipe has, it adds no entries."""
    entries: dict[str, Any] = {}
    if isinstance(collection, list):
        entries = {str(e.get("name")): e for e in collection if isinstance(e, dict)}
    elif isinstance(collection, dict):
        entries = collection
    if name not in entries:
        known = ", ".join(entries) or "none"
        raise UsageError(
            f"--set {assignment}: no {_NAMED[section]} named '{name}' ({section}: {known})"
        )
    return entries[name]


def _parse_value(raw: str) -> Any:
    """`1` → 1, `true` → True, `[a, b]` → a list: values read as YAML, as in the recipe.

    Text YAML would read as a block (`Note: be brief`, `- a`) stays text; dates stay as written.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        value = YAML(typ="safe", pure=True).load(raw)
    except YAMLError:
        return raw
    except RecursionError:  # deeper than the parser goes
        raise _too_deep() from None
    if _depth(value) > MAX_DEPTH:  # as deep as a recipe may be, no deeper
        raise _too_deep()
    if value is None:
        return None if raw.strip() in ("null", "~") else raw
    if isinstance(value, dict | list) and not raw.lstrip().startswith(("{", "[")):
        return raw
    return _plain(value)


def _too_deep() -> UsageError:
    return UsageError(f"--set value is nested more than {MAX_DEPTH} levels deep")


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date):  # also a datetime; the recipe loader reads both as text
        return value.isoformat()
    return value
