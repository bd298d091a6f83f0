"""Durations become seconds and sizes bytes, exactly; anything else is a readable ValueError."""

from __future__ import annotations

import pytest

from ralph.units import MAX_INT_DIGITS, parse_duration, parse_size, too_many_digits


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("1.5h", 5400.0),
        ("0.5s", 0.5),
        ("0s", 0.0),
        (" 30s ", 30.0),
    ],
)
def test_durations_are_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("ms", [7, 9, 13, 18, 26, 36, 700, 1100])
def test_milliseconds_are_exact(ms: int) -> None:
    # 700 * 0.001 is 0.7000000000000001 in floats; durations must not carry that noise
    assert parse_duration(f"{ms}ms") == ms / 1000


@pytest.mark.parametrize(
    "text", ["60 seconds", "30", "s", "-1s", "30S", "1e3s", "", "30 s", "5min", "1.s", "30s\n5m"]
)
def test_a_bad_duration_names_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert str(caught.value) == f"{text!r} is not a duration (expected e.g. 30s, 5m)"


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512B", 512),
        ("4KB", 4000),
        ("1MB", 1_000_000),
        ("1GB", 1_000_000_000),
        ("4KiB", 4096),
        ("1MiB", 1_048_576),
        ("2GiB", 2 * 1024**3),
        ("1.5KB", 1500),
        ("1.001KB", 1001),
        ("0.5KiB", 512),
        ("1.001MiB", 1_049_624),  # 1049624.576: a fraction of a byte is dropped
    ],
)
def test_sizes_are_bytes(text: str, size: int) -> None:
    assert parse_size(text) == size
    assert isinstance(parse_size(text), int)


@pytest.mark.parametrize("text", ["4kb", "4K", "4", "-1B", "1.5", "MiB", "4 KB", "4KB/s", ""])
def test_a_bad_size_names_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_size(text)
    assert str(caught.value) == f"{text!r} is not a size (expected e.g. 512B, 4KB, 1MiB)"


def test_too_many_digits_is_exactly_past_the_limit() -> None:
    largest = 10**MAX_INT_DIGITS - 1  # MAX_INT_DIGITS nines
    assert not too_many_digits(largest) and not too_many_digits(-largest)
    assert too_many_digits(largest + 1) and too_many_digits(-(largest + 1))
    assert not too_many_digits(2 ** (3 * MAX_INT_DIGITS))  # many bits, still few enough digits
