"""`--shard K/N`: which items one machine of N takes, by a stable hash of the item itself.

The hash depends on the item's content only, not on its position, so every item lands in
exactly one shard however the file is ordered, and re-running a shard takes the same items.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from ralph.errors import UsageError
from ralph.recipe.build import thaw


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based, as users count machines
    count: int

    def owns(self, item: Any) -> bool:
        digest = hashlib.sha256(canonical(item)).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index - 1

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    match = re.fullmatch(r"\s*([0-9]{1,9})\s*/\s*([0-9]{1,9})\s*", text)
    if match is None:
        raise UsageError(f"--shard expects K/N (e.g. 2/5), got '{text}'")
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= index <= count:
        raise UsageError(f"--shard {text}: K must be between 1 and N")
    return Shard(index, count)


def canonical(item: Any) -> bytes:
    """The item as JSON with sorted keys, as bytes: the same for equal items, whatever order
    their keys were read in."""
    plain = thaw(item)
    try:
        text = json.dumps(plain, sort_keys=True, ensure_ascii=False, default=_plain)
    except TypeError:  # keys that cannot be sorted together or written (YAML: {1: a, b: c})
        text = json.dumps(_text_keys(plain), sort_keys=True, ensure_ascii=False, default=_plain)
    # surrogatepass: an item holding a lone surrogate is hashed too
    return text.encode("utf-8", "surrogatepass")


def _plain(value: Any) -> Any:
    """What JSON has no form for, in a form that is the same in every process: a YAML set
    (`!!set`) is iterated in an order that changes with Python's hash seed, so it is sorted."""
    if isinstance(value, set | frozenset):
        return sorted(canonical(v).decode("utf-8", "surrogatepass") for v in value)
    return str(value)


def _text_keys(value: Any) -> Any:
    """`value` with every mapping key made text, so that they sort."""
    if isinstance(value, dict):
        return {str(k): _text_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text_keys(v) for v in value]
    return value
