"""Items for `for_each`, streamed one at a time so a million-line file never sits in memory.

JSONL and CSV are read line by line. JSON and YAML documents cannot be parsed partially, so
they are read whole: keep very large item sets in JSONL or CSV.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import date
from itertools import chain, islice
from operator import methodcaller
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ralph.errors import ItemsError
from ralph.fastjson import JSONDecodeError, loads
from ralph.recipe.model import ItemSource
from ralph.text import writable
from ralph.units import MAX_INT_DIGITS, too_many_digits

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


def has_id(item: Any) -> bool:
    """Whether `item` is named by its `id`: a mapping whose `id` is text or an integer."""
    # inline items arrive frozen (a read-only Mapping), file items as plain dicts
    if type(item) is not dict and not isinstance(item, Mapping):  # (a file's items: dicts)
        return False
    value = item.get("id")
    # a bool is an int to isinstance, but `id: true` would give every such item the key "True"
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def item_key(item: Any, index: int) -> str:
    """How an item is named in logs and outputs: its `id` when it has one, else its index."""
    if not has_id(item):
        return str(index)
    key = str(item["id"])
    # a lone surrogate (JSON can escape one: "\ud800") cannot be printed or written as
    # UTF-8, and a key is printed in plans and logs: it is shown as that same escape
    return writable(key)


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
            # only a line with that many brackets can hold an item nested that deep (json
            # reads no integer past the digit limit, so depth is all that can be wrong)
            if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
                flaw = _flaw(item)
                if flaw is not None:
                    raise ItemsError(str(path), number, f"an item {flaw}")
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
    # without its line break, or an item cut off at the end of its line is blamed on the next
    return _json_value(line.rstrip("\r\n"), path, number) if line.strip() else _BLANK


def _json_value(text: str, path: Path, number: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ItemsError(str(path), exc.lineno + number - 1, f"not valid JSON: {exc.msg}") from None
    except RecursionError:
        raise ItemsError(str(path), number, _TOO_DEEP) from None
    except ValueError:  # an integer past Python's digit limit, which int() refuses to read
        raise _long_integer(path, text, number) from None


# csv refuses a field past 131072 characters, where a JSONL line may be any length. The limit
# is the process's, not a reader's, so it is set once, here; it stays bounded so that a quote
# opened by mistake cannot draw a whole large file into memory as one field.
CSV_FIELD_LIMIT = 100_000_000
csv.field_size_limit(CSV_FIELD_LIMIT)


def _csv(path: Path) -> Iterator[dict[str, str]]:
    """Rows as dicts by the header row; blank lines are skipped, and a row with more or fewer
    fields than the header is an error (csv.DictReader would make a `None` key or value)."""
    with _open(path, binary=True) as handle:
        # strict: a quote never closed is an error, not a field that takes the rest of the file
        reader = csv.reader(_utf8_lines(handle), strict=True)
        header: list[str] | None = None
        start = 1  # the line the row being read starts on (a quoted field may span lines)
        try:
            for row in reader:
                if header is None:
                    header = row or None
                    _check_header(row, path, start)
                elif row and len(row) != len(header):
                    raise ItemsError(str(path), start, _wrong_width(len(row), len(header)))
                elif row:
                    yield dict(zip(header, row, strict=True))
                start = reader.line_num + 1
        except csv.Error as exc:
            # the csv module tells this case by its message only; it is the one at the end
            if str(exc) == "unexpected end of data":
                message = "the row that starts here has a quote that is never closed"
                raise ItemsError(str(path), start, f"not valid CSV: {message}") from None
            raise ItemsError(str(path), reader.line_num, f"not valid CSV: {exc}") from None
        except UnicodeDecodeError:
            # the line that failed never reached csv, which counts the lines it was given
            raise ItemsError(str(path), reader.line_num + 1, "not valid UTF-8") from None


def _utf8_lines(handle: BinaryIO) -> Iterator[str]:
    """The file's lines, each decoded on its own so that a bad byte fails on its own line (a
    text file's decoder reads ahead), split where text mode with newline="" splits them (at
    \\n, \\r\\n and a lone \\r, as old Excel for Mac ends lines)."""
    # latin-1 maps each byte to one character and cannot fail: the split is text mode's own
    raw = map(methodcaller("encode", "latin-1"), io.TextIOWrapper(handle, "latin-1", newline=""))
    # only the first line can start with a byte order mark (Excel writes one)
    first = map(methodcaller("decode", "utf-8-sig"), islice(raw, 1))
    return chain(first, map(methodcaller("decode", "utf-8"), raw))


def _check_header(header: list[str], path: Path, line: int) -> None:
    # a dict by the header would keep only the last of two same-named columns
    seen: set[str] = set()
    for name in header:
        if name in seen:
            message = f"not valid CSV: the header names the column '{name}' more than once"
            raise ItemsError(str(path), line, message)
        seen.add(name)


def _wrong_width(fields: int, expected: int) -> str:
    plural = "field" if fields == 1 else "fields"
    return f"not valid CSV: row has {fields} {plural}, the header has {expected}"


def _json(path: Path) -> Iterator[Any]:
    with _open(path) as handle:
        try:
            text = handle.read()
        except UnicodeDecodeError:
            raise ItemsError(str(path), 0, "not valid UTF-8") from None
    # no line per item: json keeps no positions, and an item it reads can only be too deep
    yield from _as_list(_json_value(text, path, 1), path)


def _yaml(path: Path) -> Iterator[Any]:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    with _open(path) as handle:
        try:
            text = handle.read()
        except UnicodeDecodeError:
            raise ItemsError(str(path), 0, "not valid UTF-8") from None
        try:
            data = YAML(typ="safe", pure=True).load(text)
        except MarkedYAMLError as exc:
            line = exc.problem_mark.line + 1 if exc.problem_mark else 0
            raise ItemsError(str(path), line, f"not valid YAML: {exc.problem}") from None
        except YAMLError as exc:  # e.g. a control character, which has no mark
            raise ItemsError(str(path), 0, f"not valid YAML: {exc}") from None
        except RecursionError:
            raise ItemsError(str(path), 0, _TOO_DEEP) from None
        # a value the constructors refuse: a 13th month, or an integer past the digit limit
        except ValueError as exc:
            if _LONG_NUMBER.search(text) is None:
                raise ItemsError(str(path), 0, f"not valid YAML: {exc}") from None
            raise _long_integer(path, text, 1) from None
    yield from _as_list(data, path, lambda index: _yaml_item_line(text, index))


def _as_list(data: Any, path: Path, line_of: Callable[[int], int] | None = None) -> list[Any]:
    if not isinstance(data, list):
        raise ItemsError(str(path), 1, "expected a list of items at the top of the file")
    for index, item in enumerate(data):
        flaw = _flaw(item)
        if flaw is not None:  # the item is named too: its line is where it starts, if known
            raise ItemsError(str(path), line_of(index) if line_of else 0, f"item {index} {flaw}")
    return data


def _yaml_item_line(text: str, index: int) -> int:
    """The line item `index` of a YAML list starts on (for an alias, its anchor's line)."""
    from ruamel.yaml import YAML

    # the loaded data keeps no positions; the document is composed again into nodes, which
    # do, only when an item is refused, so that a good file is read once
    root = YAML(typ="safe", pure=True).compose(text)
    return int(root.value[index].start_mark.line) + 1


MAX_DEPTH = 100
_TOO_DEEP = f"an item is nested more than {MAX_DEPTH} levels deep"
_AS_STRING = "(write such a number as a string)"
_LONG_NUMBER = re.compile(f"[0-9]{{{MAX_INT_DIGITS + 1}}}")


def _long_integer(path: Path, text: str, first_line: int) -> ItemsError:
    """The error for an integer json or YAML could not read, on the line where it is."""
    found = _LONG_NUMBER.search(text)
    line = first_line + text.count("\n", 0, found.start()) if found else 0
    return ItemsError(
        str(path), line, f"an integer has more than {MAX_INT_DIGITS} digits {_AS_STRING}"
    )


def _flaw(item: Any) -> str | None:
    """Why rendering or writing `item` would fail, or None: nested deeper than MAX_DEPTH, it
    would run out of Python's recursion (so it is walked without recursing); an integer past
    the digit limit (YAML reads one in hex without it) cannot be written in decimal; a mapping
    key JSON has no form for (YAML takes a list, a date, binary data as a key) cannot be
    written at all."""
    pending = [(item, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                return f"is nested more than {MAX_DEPTH} levels deep"
            if isinstance(value, dict) and (bad_key := _bad_key(value)) is not None:
                return bad_key
            children = [*value, *value.values()] if isinstance(value, dict) else value
            pending.extend((child, depth + 1) for child in children)
        elif isinstance(value, int) and too_many_digits(value):
            return f"has an integer of more than {MAX_INT_DIGITS} digits {_AS_STRING}"
    return None


# what JSON takes as a key (json writes null, numbers and booleans as text); bool is an int
_KEY_TYPES = str | int | float | None
_KEY_KINDS: tuple[tuple[type, str], ...] = (
    (tuple, "a list"),
    (date, "a date"),
    (bytes, "binary data"),
)


def _bad_key(mapping: dict[Any, Any]) -> str | None:
    for key in mapping:
        if not isinstance(key, _KEY_TYPES):
            kind = next((name for cls, name in _KEY_KINDS if isinstance(key, cls)), None)
            return (
                f"has a mapping key that is {kind or 'a ' + type(key).__name__}: keys in items"
                " must be text, numbers, booleans or null (quote such a key to make it text)"
            )
    return None
