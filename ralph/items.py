"""Items for `for_each`, streamed one at a time so a million-line file never sits in memory.

JSONL and CSV are read line by line. JSON and YAML documents cannot be parsed partially, so
they are read whole: keep very large item sets in JSONL or CSV.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ralph.errors import ItemsError
from ralph.fastjson import JSONDecodeError, loads
from ralph.recipe.model import ItemSource

if TYPE_CHECKING:
    from ralph.shard import Shard


def iter_items(source: ItemSource) -> Iterator[Any]:
    if source.inline is not None:
        return iter(source.inline)
    assert source.file is not None and source.format is not None
    readers = {"jsonl": _jsonl, "csv": _csv, "json": _json, "yaml": _yaml}
    return readers[source.format](source.file)


def numbered_items(
    source: ItemSource | None, shard: Shard | None = None
) -> Iterator[tuple[int, Any]]:
    """(index, item) pairs of a task: one `None` item without for_each, only the shard's items
    with `--shard`; indexes stay those of the whole stream."""
    numbered = enumerate(iter_items(source) if source is not None else iter([None]))
    if shard is None:
        return numbered
    return ((index, item) for index, item in numbered if shard.owns(item))


def count_items(source: ItemSource) -> int:
    return sum(1 for _ in iter_items(source))


def item_key(item: Any, index: int) -> str:
    """How an item is named in logs and outputs: its `id` when it has one, else its index."""
    # inline items arrive frozen (a read-only Mapping), file items as plain dicts
    if isinstance(item, Mapping) and isinstance(item.get("id"), str | int):
        return str(item["id"])
    return str(index)


def _open(path: Path, *, binary: bool = False) -> Any:
    # utf-8-sig: a byte order mark (as Excel writes) must not end up in the first field name
    try:
        return path.open("rb") if binary else path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ItemsError(str(path), 0, f"cannot read items file: {exc.strerror or exc}") from None


# orjson reads integers past 64 bits as floats, where json keeps them exact; they have 19
# digits or more, so a line without such a run of digits reads the same through either
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


_BLANK = object()


def _jsonl(path: Path) -> Iterator[Any]:
    with _open(path, binary=True) as handle:
        for number, raw in enumerate(handle, start=1):
            item = _jsonl_item(raw, path, number)
            if item is _BLANK:
                continue
            # only a line with that many brackets can hold an item nested that deep
            if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _too_deep(item):
                raise ItemsError(str(path), number, _TOO_DEEP)
            yield item


def _jsonl_item(raw: bytes, path: Path, number: int) -> Any:
    if number > 1 and not _LONG_DIGITS.search(raw):
        try:  # the fast path (a third of json's time); anything odd takes the other
            return loads(raw)
        except JSONDecodeError:
            pass
    # bytes, decoded line by line: a bad byte is then reported on its own line, not on
    # whichever line the text decoder's read-ahead happened to be at
    try:
        line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError:
        raise ItemsError(str(path), number, "not valid UTF-8") from None
    return _json_value(line, path, number) if line.strip() else _BLANK


def _json_value(text: str, path: Path, number: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ItemsError(str(path), exc.lineno + number - 1, f"not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise ItemsError(str(path), number, _TOO_DEEP) from None


def _csv(path: Path) -> Iterator[Any]:
    with _open(path) as handle:
        reader = csv.DictReader(handle)
        try:
            yield from reader
        except csv.Error as exc:
            raise ItemsError(str(path), reader.line_num, f"not valid CSV: {exc}") from None
        except UnicodeDecodeError:
            raise ItemsError(str(path), 0, "not valid UTF-8") from None


def _json(path: Path) -> Iterator[Any]:
    with _open(path) as handle:
        try:
            text = handle.read()
        except UnicodeDecodeError:
            raise ItemsError(str(path), 0, "not valid UTF-8") from None
    yield from _as_list(_json_value(text, path, 1), path)


def _yaml(path: Path) -> Iterator[Any]:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    with _open(path) as handle:
        try:
            data = YAML(typ="safe", pure=True).load(handle)
        except MarkedYAMLError as exc:
            line = exc.problem_mark.line + 1 if exc.problem_mark else 0
            raise ItemsError(str(path), line, f"not valid YAML: {exc.problem}") from None
        except YAMLError as exc:  # e.g. a control character, which has no mark
            raise ItemsError(str(path), 0, f"not valid YAML: {exc}") from None
        except RecursionError:
            raise ItemsError(str(path), 0, _TOO_DEEP) from None
        except UnicodeDecodeError:
            raise ItemsError(str(path), 0, "not valid UTF-8") from None
    yield from _as_list(data, path)


def _as_list(data: Any, path: Path) -> list[Any]:
    if not isinstance(data, list):
        raise ItemsError(str(path), 1, "expected a list of items at the top of the file")
    deep = next((index for index, item in enumerate(data) if _too_deep(item)), None)
    if deep is not None:  # a whole document has no line per item: say which item it is
        raise ItemsError(str(path), 0, f"item {deep} is nested more than {MAX_DEPTH} levels deep")
    return data


MAX_DEPTH = 100
_TOO_DEEP = f"an item is nested more than {MAX_DEPTH} levels deep"


def _too_deep(item: Any) -> bool:
    """Nested deeper than MAX_DEPTH: rendering and writing such an item would run out of
    Python's recursion (walked without recursing, for the same reason)."""
    pending = [(item, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                return True
            children = value.values() if isinstance(value, dict) else value
            pending.extend((child, depth + 1) for child in children)
    return False
