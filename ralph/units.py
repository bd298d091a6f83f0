"""Durations (`500ms`, `30s`, `5m`, `2h`, `7d`) and sizes (`4KB`, `1MiB`) as numbers, and the
longest integer ralph takes from a user."""

from __future__ import annotations

import math
import re
import sys
from decimal import Decimal

# Python reads and writes integers in decimal up to this many digits (sys.int_info; 4300 unless
# changed). A longer one (YAML reads hex and octal past the limit) could not be written out
# again, so recipes and items are refused one.
MAX_INT_DIGITS = sys.get_int_max_str_digits() or 4300
LONG_NUMBER = f"number has more than {MAX_INT_DIGITS} digits; quote it if it is meant as text"

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(B|KB|MB|GB|KiB|MiB|GiB)")
# milliseconds, and Decimal arithmetic below, so that 700ms is 0.7 s and 1.001KB 1001 bytes
_MILLISECONDS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_BYTES = {
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
}


def parse_duration(text: str) -> float:
    """Seconds in a duration string; ValueError names the expected form."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration (expected e.g. 30s, 5m)")
    return float(Decimal(match.group(1)) * _MILLISECONDS[match.group(2)] / 1000)


def parse_size(text: str) -> int:
    """Bytes in a size string (a fraction of a byte is dropped); ValueError names the form."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size (expected e.g. 512B, 4KB, 1MiB)")
    return int(Decimal(match.group(1)) * _BYTES[match.group(2)])


def too_many_digits(number: int) -> bool:
    """More than MAX_INT_DIGITS decimal digits."""
    # 2**(3*d) < 10**d: at most 3*d bits is at most d digits, so only a larger number pays
    # for the comparison with 10**d
    return number.bit_length() > 3 * MAX_INT_DIGITS and abs(number) >= 10**MAX_INT_DIGITS


def number_problem(value: object) -> str | None:
    """Why a number a user wrote fits no recipe (a run can neither print nor compute with it),
    or None. NaN matters most: a NaN price would make every cost check pass."""
    if isinstance(value, int) and too_many_digits(value):
        return LONG_NUMBER
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number (NaN and infinity are not allowed)"
    return None
