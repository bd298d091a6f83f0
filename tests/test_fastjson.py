"""orjson where it can, the json module where orjson refuses, and the same text either way."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from ralph.fastjson import dumpb, dumps, dumps_pretty, loads

ORDINARY = [
    {"a": 1, "b": [1.5, None, True], "é": "naïve ✓", "nested": {"x": {}}},
    ["line\nbreak", 'quote"', "tab\t", 0, -3, 0.25],
    "plain",
]
REFUSED_BY_ORJSON = [
    {"big": 2**70},  # past 64 bits
    {1: "a key that is not a string"},
    {"lone": "\ud800 surrogate"},
]


@pytest.mark.parametrize("value", ORDINARY + REFUSED_BY_ORJSON)
def test_compact_text_is_what_json_writes(value: Any) -> None:
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert dumps(value) == expected.encode("utf-8", "backslashreplace").decode()
    assert dumpb(value) == dumps(value).encode()


@pytest.mark.parametrize("value", ORDINARY + REFUSED_BY_ORJSON)
def test_pretty_text_is_what_json_writes_with_two_space_indents(value: Any) -> None:
    expected = json.dumps(value, indent=2, ensure_ascii=False)
    text = dumps_pretty(value)
    assert text == expected.encode("utf-8", "backslashreplace").decode()
    text.encode("utf-8")  # a lone surrogate is written as its escape, so the file can be saved


@pytest.mark.parametrize("writer", [dumps, dumps_pretty])
def test_floats_read_back_as_they_were(writer: Any) -> None:
    # the two libraries spell some floats differently (1e-7, 1e-07): the value is the same
    for extra in ({}, {"big": 2**70}):
        value = {"f": [1e-7, 1 / 3, 1e300, -0.0], **extra}
        assert json.loads(writer(value)) == value


@pytest.mark.parametrize("writer", [dumps, dumps_pretty])
def test_nan_and_infinities_are_null_on_either_path(writer: Any) -> None:
    for extra in ({}, {"big": 2**70}):  # orjson, then the json module
        value = {"n": float("nan"), "i": [float("inf"), -float("inf")], **extra}
        assert loads(writer(value)) | {"big": None} == {"n": None, "i": [None, None], "big": None}


def test_dates_go_to_default() -> None:
    when = datetime.date(2026, 11, 25)
    assert dumps({"d": when}, default=str) == '{"d":"2026-11-25"}'
