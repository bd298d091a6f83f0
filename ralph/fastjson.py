"""JSON on the hot path (request bodies, answers, cache values, JSONL lines, log lines, and the
summaries and plans that list every item): orjson, several times the json module's speed, which
the bench showed as ~8 µs an item.

orjson refuses some values the json module takes (integers past 64 bits, keys that are not
strings, lone surrogates); those few go through the json module, made to write what orjson
would: compact, UTF-8, NaN and infinities as null, dates through `default`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ralph.text import writable

JSONDecodeError = orjson.JSONDecodeError  # a subclass of json.JSONDecodeError and ValueError

Default = Callable[[Any], Any]


def dumps(value: Any, default: Default | None = None) -> str:
    """Compact JSON (`{"a":1}`); dates and times go to `default` like any other non-JSON type."""
    try:
        return orjson.dumps(value, default=default, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()
    except TypeError:
        return _json_dumps(value, default)


def dumpb(value: Any) -> bytes:
    """`dumps` as UTF-8 bytes, for a request body."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return _json_dumps(value, None).encode()


def dumps_pretty(value: Any) -> str:
    """A document people read too (summaries, plans): two-space indents, UTF-8 as it is."""
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()
    except TypeError:
        return writable(json.dumps(_finite(value), indent=2, ensure_ascii=False))


def loads(data: bytes | str) -> Any:
    """Strict RFC 8259 JSON: no NaN or Infinity, no lone surrogates, no invalid UTF-8 (and
    integers past 64 bits come back as floats, so user data goes through `json` instead)."""
    return orjson.loads(data)


def _json_dumps(value: Any, default: Default | None) -> str:
    text = json.dumps(_finite(value), default=default, separators=(",", ":"), ensure_ascii=False)
    # a lone surrogate is only ever inside a JSON string: its escape is its JSON escape
    return writable(text)


def _finite(value: Any) -> Any:
    """`value` with NaN and infinities as None, as orjson writes them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
