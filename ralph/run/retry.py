"""When to try again and how long to wait: exponential backoff with full jitter, or the
server's own Retry-After when it gives one."""

from __future__ import annotations

import random
import time
from datetime import UTC
from email.utils import parsedate_to_datetime

from ralph.recipe.model import Retries


def backoff_s(policy: Retries, attempt: int, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(max_backoff, backoff * 2^(attempt-1))]."""
    # the exponent is capped: 2.0**1100 overflows a float, and 2**60 outgrows any max_backoff
    ceiling = min(policy.max_backoff_s, policy.backoff_s * 2.0 ** min(max(0, attempt - 1), 60))
    return rng.uniform(0, ceiling)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone: HTTP dates are always GMT, never local time
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_retryable(kind: str, policy: Retries) -> bool:
    return kind in policy.on
