"""Items for `for_each`, streamed one at a time so a million-line file never sits in memory.

JSONL and CSV are read line by line. JSON and YAML documents cannot be parsed partially, so
they are read whole: keep very large item sets in JSONL or CSV.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ralph.errors import ItemsError
from ralph.recipe.model import ItemSource


def iter_items(source: ItemSource) -> Iterator[Any]:
    if source.inline is not None:
        return iter(source.inline)
    assert source.file is not None and source.format is not None
    readers = {"jsonl": _jsonl, "csv": _csv, "json": _json, "yaml": _yaml}
    return readers[source.format](source.file)


def count_items(source: ItemSource) -> int:
    return sum(1 for _ in iter_items(source))


def item_key(item: Any, index: int) -> str:
    """How an item is named in logs and outputs: its `id` when it has one, else its index."""
    if isinstance(item, dict) and isinstance(item.get("id"), str | int):
        return str(item["id"])
    return str(index)


def _open(path: Path) -> Any:
    try:
        return path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise ItemsError(str(path), 0, f"cannot read items file: {exc.strerror or exc}") from None


def _jsonl(path: Path) -> Iterator[Any]:
    with _open(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ItemsError(str(path), number, f"not valid JSON: {exc.msg}") from None
            except UnicodeDecodeError:
                raise ItemsError(str(path), number, "not valid UTF-8") from None


def _csv(path: Path) -> Iterator[Any]:
    with _open(path) as handle:
        try:
            yield from csv.DictReader(handle)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ItemsError(str(path), 0, f"not valid CSV: {exc}") from None


def _json(path: Path) -> Iterator[Any]:
    with _open(path) as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as exc:
            raise ItemsError(str(path), exc.lineno, f"not valid JSON: {exc.msg}") from None
    yield from _as_list(data, path)


def _yaml(path: Path) -> Iterator[Any]:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError

    with _open(path) as handle:
        try:
            data = YAML(typ="safe", pure=True).load(handle)
        except MarkedYAMLError as exc:
            line = exc.problem_mark.line + 1 if exc.problem_mark else 0
            raise ItemsError(str(path), line, f"not valid YAML: {exc.problem}") from None
    yield from _as_list(data, path)


def _as_list(data: Any, path: Path) -> list[Any]:
    if not isinstance(data, list):
        raise ItemsError(str(path), 1, "expected a list of items at the top of the file")
    return data
