"""What every provider takes and returns, and how a failed attempt is described.

A provider turns one rendered Request into one Response or raises AttemptError, whose `kind`
is one of the retry classes a recipe names (`429`, `5xx`, `timeout`, `connection`,
`invalid_response`) or `fatal` for failures no retry can fix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol


# Not frozen, but slotted: a frozen dataclass sets each field through object.__setattr__,
# five times slower to build, and these are built for every item (a cached item included).
@dataclass(slots=True)
class Request:
    prompt: str
    system: str | None = None
    model: str | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(slots=True)
class Response:
    text: str
    input_tokens: int
    output_tokens: int


class AttemptError(Exception):
    """One attempt failed; `kind` decides whether it is retried."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        retry_after_s: float | None = None,
        quota_exhausted: bool = False,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after_s = retry_after_s
        self.quota_exhausted = quota_exhausted
        self.status = status
        # a 401 after which the provider holds another key: worth sending once more, at once
        self.key_refreshed = False


class Provider(Protocol):
    async def complete(self, request: Request) -> Response: ...

    async def health(self) -> str | None:
        """None when the agent can be used, else the reason it cannot."""
        ...


def estimate_tokens(text: str, chars_per_token: float | None = 4.0) -> int:
    """A tokenizer-free estimate, never below one: `chars_per_token` characters a token, or
    with None the UTF-8 byte count (byte-level tokenizers never make more tokens than that)."""
    if chars_per_token is None:
        return max(1, len(text.encode()))
    return max(1, math.ceil(len(text) / chars_per_token))
