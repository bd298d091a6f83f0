"""Backoff with full jitter, and the server's own Retry-After in both of its forms."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Iterator

import pytest

from ralph.recipe.model import Retries
from ralph.run.retry import backoff_s, is_retryable, parse_retry_after

POLICY = Retries(attempts=10, backoff_s=0.5, max_backoff_s=30.0)


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (6, 16.0), (7, 30.0), (10, 30.0)],
)
def test_full_jitter_spans_zero_to_the_capped_exponential(attempt: int, ceiling: float) -> None:
    rng = random.Random(1234)
    waits = [backoff_s(POLICY, attempt, rng) for _ in range(500)]
    assert all(0 <= w <= ceiling for w in waits)
    # full jitter: the whole range is used, not only its upper half
    assert min(waits) < 0.05 * ceiling
    assert max(waits) > 0.95 * ceiling


def test_the_same_seed_gives_the_same_waits() -> None:
    first = [backoff_s(POLICY, n, random.Random(7)) for n in range(1, 8)]
    again = [backoff_s(POLICY, n, random.Random(7)) for n in range(1, 8)]
    assert first == again


def test_max_backoff_caps_even_absurd_attempt_counts() -> None:
    rng = random.Random(0)
    policy = Retries(attempts=5000, backoff_s=1.0, max_backoff_s=2.0)
    waits = [backoff_s(policy, attempt, rng) for attempt in (64, 1100, 5000)]
    assert all(0 <= w <= 2.0 for w in waits)


def test_zero_backoff_never_waits() -> None:
    policy = Retries(backoff_s=0.0, max_backoff_s=30.0)
    assert backoff_s(policy, 5, random.Random(0)) == 0.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), ("0", 0.0), ("0.25", 0.25), (" 7 ", 7.0), ("1.5", 1.5), ("-4", 0.0)],
)
def test_retry_after_in_seconds(header: str, seconds: float) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_as_a_future_http_date_is_the_difference() -> None:
    now = time.time()
    header = email.utils.formatdate(now + 120, usegmt=True)  # whole seconds, as servers send
    wait = parse_retry_after(header, now=now)
    assert wait is not None and 119.0 <= wait <= 120.0
    # without `now`, the wall clock is used
    live = parse_retry_after(header)
    assert live is not None and 118.0 <= live <= 120.0


def test_retry_after_as_a_past_http_date_is_zero() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


@pytest.fixture
def tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time nine hours off UTC, to catch a date read as local time."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.usefixtures("tokyo")
def test_an_http_date_without_a_zone_is_gmt_not_local_time() -> None:
    moment = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    zoned = email.utils.formatdate(moment + 60, usegmt=True)
    assert parse_retry_after(zoned, now=moment) == 60.0
    assert parse_retry_after(zoned.replace(" GMT", " -0000"), now=moment) == 60.0
    assert parse_retry_after(zoned.replace(" GMT", ""), now=moment) == 60.0


@pytest.mark.parametrize("header", [None, "", "   ", "soon", "12 parsecs", "Wed, 99 Foo 2015"])
def test_garbage_retry_after_is_none(header: str | None) -> None:
    assert parse_retry_after(header) is None


def test_only_the_named_failure_classes_are_retried() -> None:
    policy = Retries(on=frozenset({"429", "timeout"}))
    assert is_retryable("429", policy)
    assert is_retryable("timeout", policy)
    assert not is_retryable("5xx", policy)
    assert not is_retryable("fatal", Retries())
