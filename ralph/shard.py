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
        canonical = json.dumps(thaw(item), sort_keys=True, ensure_ascii=False, default=str)
        # surrogatepass: an item holding a lone surrogate still has an owner
        digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index - 1

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise UsageError(f"--shard expects K/N (e.g. 2/5), got '{text}'")
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= index <= count:
        raise UsageError(f"--shard {text}: K must be between 1 and N")
    return Shard(index, count)
