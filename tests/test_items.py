"""Items for `for_each`: streamed JSONL and CSV, whole JSON and YAML lists, located errors."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from ralph.errors import ItemsError
from ralph.items import CSV_FIELD_LIMIT, count_items, has_id, item_key, iter_items
from ralph.recipe.build import freeze
from ralph.recipe.model import ItemSource


def source(path: Path, fmt: str | None = None) -> ItemSource:
    return ItemSource(file=path, format=fmt or path.suffix.lstrip("."))


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, "utf-8")
    return path


# -- JSONL -------------------------------------------------------------------------------------


def test_jsonl_items_in_order(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", '{"id": 1, "body": "x"}\n["a list"]\n"a string"\n7\n')
    assert list(iter_items(source(path))) == [{"id": 1, "body": "x"}, ["a list"], "a string", 7]


def test_jsonl_numbers_are_exact_however_long(tmp_path: Path) -> None:
    lines = ['{"n": 123456789012345678901234567890}', '{"n": -9223372036854775809}']
    lines += ['{"n": 18446744073709551615, "f": 0.1, "e": 1e5}', '{"s": "1234567890123456789012"}']
    path = write(tmp_path / "a.jsonl", "\n".join(["{}", *lines]) + "\n")
    assert list(iter_items(source(path)))[1:] == [json.loads(line) for line in lines]
    assert list(iter_items(source(path)))[1]["n"] == 123456789012345678901234567890


def test_jsonl_takes_what_json_takes_beyond_strict_json(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", '{"id": 0}\n[NaN, Infinity]\n"\\ud800"\n')
    items = list(iter_items(source(path)))
    assert str(items[1]) == "[nan, inf]" and items[2] == "\ud800"


# ruamel's scanner is quadratic in flow nesting: 600 levels are past the recursion limit already
@pytest.mark.parametrize(
    ("name", "depth"), [("a.jsonl", 100_000), ("a.json", 100_000), ("a.yaml", 600)]
)
def test_items_nested_too_deeply_are_an_items_error_not_a_crash(
    tmp_path: Path, name: str, depth: int
) -> None:
    path = write(tmp_path / name, "[" * depth + "]" * depth + "\n")
    with pytest.raises(ItemsError, match="nested more than 100 levels"):
        list(iter_items(source(path)))


@pytest.mark.parametrize("depth", [101, 1010])
@pytest.mark.parametrize("line", [1, 2])
def test_jsonl_items_nested_past_the_limit_are_refused_on_their_line(
    tmp_path: Path, depth: int, line: int
) -> None:
    """Parsers take such items (orjson up to 1024 levels), but rendering and writing them
    would run out of recursion: they are refused where they are read."""
    lines = ['{"id": 0}'] * (line - 1) + ["[" * depth + "]" * depth, '{"id": 9}']
    path = write(tmp_path / "a.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(ItemsError, match="nested more than 100 levels") as caught:
        list(iter_items(source(path)))
    assert caught.value.line == line


def test_items_nested_up_to_the_limit_are_read(tmp_path: Path) -> None:
    deep = "[" * 100 + "]" * 100
    path = write(tmp_path / "a.jsonl", f'{{"id": 0}}\n{deep}\n')
    assert len(list(iter_items(source(path)))) == 2
    path = write(tmp_path / "a.json", f"[{deep}]")
    assert len(list(iter_items(source(path)))) == 1
    path = write(tmp_path / "b.json", f"[1, [{deep}]]")
    with pytest.raises(ItemsError) as caught:
        list(iter_items(source(path)))
    assert str(caught.value) == f"{path}: item 1 is nested more than 100 levels deep"


def test_jsonl_skips_blank_lines_and_takes_crlf(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", '\n{"id": 1}\r\n   \r\n\t\n{"id": 2}\n\n')
    assert list(iter_items(source(path))) == [{"id": 1}, {"id": 2}]


def test_jsonl_without_a_final_newline(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", '{"id": 1}\n{"id": 2}')
    assert count_items(source(path)) == 2


def test_bad_jsonl_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", '{"id": 1}\n\n{"id": 2,}\n{"id": 3}\n')
    items = iter_items(source(path))
    assert next(items) == {"id": 1}
    with pytest.raises(ItemsError) as caught:
        next(items)
    assert caught.value.line == 3  # blank lines count: it is the file's line 3
    assert str(caught.value).startswith(f"{path}:3: not valid JSON")


@pytest.mark.parametrize(
    "text",
    [
        '{"id": 1}\n{"id": 2}\n{"id": 3\n{"id": 4}\n',
        '{"id": 1}\r\n{"id": 2}\r\n{"id": 3\r\n{"id": 4}\r\n',
        '{"id": 1}\n{"id": 2}\n{"id": 3',
    ],
)
def test_an_item_cut_off_at_the_end_of_its_line_names_that_line(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "a.jsonl", text)
    with pytest.raises(ItemsError) as caught:
        list(iter_items(source(path)))
    assert caught.value.line == 3


def test_jsonl_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", b'{"id": 1}\n{"id": 2}\n{"id": "caf\xe9"}\n')
    items = iter_items(source(path))
    assert [next(items), next(items)] == [{"id": 1}, {"id": 2}]
    with pytest.raises(ItemsError, match=r":3: not valid UTF-8"):
        next(items)


def test_jsonl_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", '\ufeff{"id": 1}\n{"id": 2}\n'.encode())
    assert list(iter_items(source(path))) == [{"id": 1}, {"id": 2}]


def test_jsonl_is_streamed_not_read_whole(tmp_path: Path) -> None:
    # 40 000 good lines, then a broken one: the first item comes long before the end is read
    path = tmp_path / "big.jsonl"
    with path.open("w") as handle:
        for n in range(40_000):
            handle.write(json.dumps({"id": n, "body": "x" * 40}) + "\n")
        handle.write("{broken\n")
    items = iter_items(source(path))
    assert next(items) == {"id": 0, "body": "x" * 40}
    with pytest.raises(ItemsError, match=r":40001: not valid JSON"):
        for _ in items:
            pass


def test_jsonl_items_arrive_while_the_file_is_still_being_written(tmp_path: Path) -> None:
    # a named pipe has no end until its writer closes it: a reader that wanted the whole
    # file first would only see item 0 after the writer gave up waiting for it
    fifo = tmp_path / "items.jsonl"
    os.mkfifo(fifo)
    got_first = threading.Event()
    timed_out: list[bool] = []

    def writer() -> None:
        with fifo.open("w") as handle:
            handle.write('{"id": 0}\n')
            handle.flush()
            timed_out.append(not got_first.wait(5))
            handle.write('{"id": 1}\n')

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        items = iter_items(source(fifo))
        assert next(items) == {"id": 0}
        got_first.set()
        assert list(items) == [{"id": 1}]
    finally:
        got_first.set()
        thread.join()
    assert timed_out == [False]


# -- CSV ---------------------------------------------------------------------------------------


def test_csv_rows_are_dicts_by_header(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", 'id,body\n1,"hello, world"\n2,"two\nlines"\n')
    assert list(iter_items(source(path))) == [
        {"id": "1", "body": "hello, world"},
        {"id": "2", "body": "two\nlines"},
    ]


def test_csv_from_excel_with_a_byte_order_mark_and_crlf(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "\ufeffid,name\r\n7,Ada\r\n".encode())
    assert list(iter_items(source(path))) == [{"id": "7", "name": "Ada"}]


def test_csv_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", b"id,name\n1,Ada\n2,Jos\xe9\n3,Bo\n")
    items = iter_items(source(path))
    assert next(items) == {"id": "1", "name": "Ada"}
    with pytest.raises(ItemsError) as caught:
        next(items)
    assert str(caught.value) == f"{path}:3: not valid UTF-8"


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"\xffid,name\n1,x\n", 1),  # the header itself
        (b'id,name\n1,"two\nlin\xe9s"\n', 3),  # the line of the byte, not of its row
        (b"id,name\r\n1,x\r\n2,\xe9\r\n", 3),
        (b"id,name\r1,x\r2,\xe9\r", 3),  # lines ended by a lone carriage return
        # past the first 8 KiB, which a text file's decoder would read ahead in one go
        (b"id,name\n" + b"1,x\n" * 5000 + b"2,\xe9\n", 5002),
    ],
)
def test_csv_bad_utf8_is_reported_on_the_line_of_the_bad_byte(
    tmp_path: Path, data: bytes, line: int
) -> None:
    path = write(tmp_path / "a.csv", data)
    with pytest.raises(ItemsError) as caught:
        list(iter_items(source(path)))
    assert (caught.value.line, str(caught.value)) == (line, f"{path}:{line}: not valid UTF-8")


def test_csv_lines_end_as_text_mode_ends_them(tmp_path: Path) -> None:
    # old Excel for Mac ends lines with a lone \r; a quoted field keeps its own line ends
    path = write(tmp_path / "a.csv", b'id,body\r1,"a\rb"\r2,"c\r\nd"\r\n3,"e\nf"\n4,\xc3\xa9')
    assert list(iter_items(source(path))) == [
        {"id": "1", "body": "a\rb"},
        {"id": "2", "body": "c\r\nd"},
        {"id": "3", "body": "e\nf"},
        {"id": "4", "body": "\u00e9"},
    ]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("id,id\n1,a\n", "a.csv:1: not valid CSV: the header names the column 'id' more than once"),
        (
            "\nid,a,b,a,b\n1,2,3,4,5\n",
            "a.csv:2: not valid CSV: the header names the column 'a' more",
        ),
        ("x,,\n1,2,3\n", "a.csv:1: not valid CSV: the header names the column '' more than once"),
    ],
)
def test_csv_header_naming_a_column_twice_is_an_items_error(
    tmp_path: Path, text: str, where: str
) -> None:
    """A dict by the header would keep the last of the two columns only, silently."""
    path = write(tmp_path / "a.csv", text)
    with pytest.raises(ItemsError) as caught:
        list(iter_items(source(path)))
    assert str(caught.value).startswith(str(tmp_path / where))


def test_csv_fields_longer_than_the_csv_modules_default_limit_are_read(tmp_path: Path) -> None:
    long = "x" * 200_000  # the csv module's own limit is 131072 characters
    path = write(tmp_path / "a.csv", f'id,body\n1,{long}\n2,"{long}\n{long}"\n')
    assert list(iter_items(source(path))) == [
        {"id": "1", "body": long},
        {"id": "2", "body": f"{long}\n{long}"},
    ]
    assert CSV_FIELD_LIMIT == 100_000_000  # bounded, and the figure the docs give


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("id,name\n1,x\n2,y,extra\n", "a.csv:3: not valid CSV: row has 3 fields, the header has 2"),
        ("id,name\n1,x\n\n2\n", "a.csv:4: not valid CSV: row has 1 field, the header has 2"),
        # a quoted field spanning lines: the row is named by the line it starts on
        ('id,name\n1,"a\nb",c\n', "a.csv:2: not valid CSV: row has 3 fields, the header has 2"),
    ],
)
def test_csv_row_with_the_wrong_number_of_fields_is_an_items_error(
    tmp_path: Path, text: str, where: str
) -> None:
    path = write(tmp_path / "a.csv", text)
    with pytest.raises(ItemsError) as caught:
        list(iter_items(source(path)))
    assert str(caught.value) == f"{tmp_path / where}"


def test_csv_quote_never_closed_is_an_items_error_not_a_swallowed_file(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", 'id,name\n1,x\n2,"unterminated\n3,y\n4,z\n')
    with pytest.raises(ItemsError) as caught:
        list(iter_items(source(path)))
    assert str(caught.value) == (
        f"{path}:3: not valid CSV: the row that starts here has a quote that is never closed"
    )


def test_csv_blank_lines_are_skipped_and_every_value_is_a_string(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", 'id,n\n\n1,2\n\n"3",""\n')
    assert list(iter_items(source(path))) == [{"id": "1", "n": "2"}, {"id": "3", "n": ""}]


# -- JSON and YAML -----------------------------------------------------------------------------


def test_json_list(tmp_path: Path) -> None:
    path = write(tmp_path / "a.json", '[{"id": "a"}, {"id": "b"}, 3]')
    assert list(iter_items(source(path))) == [{"id": "a"}, {"id": "b"}, 3]


def test_yaml_list(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", "- id: a\n  tags: [x, y]\n- plain\n")
    assert list(iter_items(source(path))) == [{"id": "a", "tags": ["x", "y"]}, "plain"]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("dict.json", '{"items": [1, 2]}'),
        ("scalar.json", "42"),
        ("null.json", "null"),
        ("dict.yaml", "items: [1, 2]\n"),
        ("empty.yaml", ""),
        ("scalar.yaml", "just text\n"),
    ],
)
def test_a_top_level_that_is_not_a_list_is_an_error(tmp_path: Path, name: str, text: str) -> None:
    path = write(tmp_path / name, text)
    with pytest.raises(ItemsError, match="expected a list of items") as caught:
        list(iter_items(source(path)))
    assert str(path) in str(caught.value)


def test_bad_json_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.json", '[\n  {"id": 1},\n  {"id": 2\n]\n')
    with pytest.raises(ItemsError, match=r"a\.json:4: not valid JSON"):
        list(iter_items(source(path)))


def test_bad_yaml_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", "- id: 1\n- id: [2\n- id: 3\n")
    with pytest.raises(ItemsError, match=r"a\.yaml:\d+: not valid YAML") as caught:
        list(iter_items(source(path)))
    assert caught.value.line >= 2


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("a.yaml", b"- a\x07b\n"),  # a control character YAML does not allow
        ("b.yaml", b"- caf\xe9\n"),
        ("c.json", b'["caf\xe9"]'),
    ],
)
def test_unreadable_documents_are_items_errors_not_crashes(
    tmp_path: Path, name: str, data: bytes
) -> None:
    path = write(tmp_path / name, data)
    with pytest.raises(ItemsError, match=rf"{name}: not valid"):  # no line to name
        list(iter_items(source(path)))


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "json", "yaml"])
def test_a_missing_file_is_a_clear_error(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(ItemsError, match="cannot read items file"):
        list(iter_items(source(tmp_path / f"nope.{fmt}")))


# -- inline, keys, counts ---------------------------------------------------------------------


def test_inline_items_are_given_back_as_they_are() -> None:
    inline = freeze([{"id": "a"}, "b"])
    assert list(iter_items(ItemSource(inline=inline))) == [{"id": "a"}, "b"]


@pytest.mark.parametrize(
    ("item", "index", "key"),
    [
        ({"id": "t-1", "body": "x"}, 0, "t-1"),
        ({"id": 42}, 3, "42"),
        (freeze({"id": "frozen"}), 1, "frozen"),  # inline items come frozen from the recipe
        ({"name": "no id"}, 5, "5"),
        ({"id": None}, 6, "6"),
        ({"id": ["not", "a", "key"]}, 7, "7"),
        # a bool is an int to Python, but `id: true` names no item
        ({"id": True}, 9, "9"),
        ({"id": False}, 10, "10"),
        (freeze({"id": True}), 11, "11"),
        ({"id": 0}, 12, "0"),
        ("a string", 8, "8"),
        (None, 0, "0"),
    ],
)
def test_item_key_is_the_id_or_the_index(item: object, index: int, key: str) -> None:
    assert item_key(item, index) == key


@pytest.mark.parametrize(
    ("item", "named"),
    [
        ({"id": "t-1"}, True),
        ({"id": ""}, True),
        ({"id": 42}, True),
        ({"id": 0}, True),
        ({"id": -1}, True),
        (freeze({"id": "frozen"}), True),
        ({"id": True}, False),
        ({"id": False}, False),
        ({"id": None}, False),
        ({"id": 1.0}, False),
        ({"id": ["a"]}, False),
        ({"name": "no id"}, False),
        ("id", False),
        (["id"], False),
        (None, False),
    ],
)
def test_has_id_says_whether_an_item_is_named_by_its_id(item: object, named: bool) -> None:
    assert has_id(item) is named
    # item_key follows it: the id's text when named, else the index (here 99)
    assert (item_key(item, 99) != "99") is named


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("a.jsonl", '{"id": 1}\n{"n": %s}\n', 2),
        ("a.json", '[{"id": 1},\n {"n": %s}]\n', 2),
        ("a.yaml", "- id: 1\n- n: %s\n", 2),
    ],
)
def test_an_integer_past_pythons_digit_limit_is_an_items_error(
    tmp_path: Path, name: str, text: str, line: int
) -> None:
    path = write(tmp_path / name, text % ("9" * 4301))
    with pytest.raises(ItemsError) as caught:
        list(iter_items(source(path)))
    assert str(caught.value) == (
        f"{path}:{line}: an integer has more than 4300 digits (write such a number as a string)"
    )


def test_a_yaml_hex_integer_past_the_digit_limit_is_an_items_error(tmp_path: Path) -> None:
    # base 16 is read without a limit, but the number could not be written out in decimal
    path = write(tmp_path / "a.yaml", "- id: 1\n- n: 0x%s\n" % ("f" * 3600))
    with pytest.raises(ItemsError, match=r"a.yaml:2: item 1 has an integer of more than 4300 di"):
        list(iter_items(source(path)))
    fine = write(tmp_path / "b.yaml", "- n: 0x%s\n" % ("f" * 3500))  # 4215 decimal digits
    assert len(str(next(iter_items(source(fine)))["n"])) == 4215


_KEYS_MUST_BE = "keys in items must be text, numbers, booleans or null"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("- {? [1, 2] : x}\n", 1, "item 0 has a mapping key that is a list"),
        (
            "- id: 1\n- id: 2\n  when:\n    2024-01-02: x\n",
            2,
            "item 1 has a mapping key that is a date",
        ),
        ("- id: 1\n- {!!binary aGk=: x}\n", 2, "item 1 has a mapping key that is binary data"),
        (
            "- id: 0\n- - deep:\n      ? [a, b]\n      : x\n",  # nested: the item's line
            2,
            "item 1 has a mapping key that is a list",
        ),
        (
            "[{id: 0},\n  {? 2024-01-02 12:00:00 : x}]\n",
            2,
            "item 1 has a mapping key that is a date",
        ),
    ],
)
def test_a_yaml_mapping_key_json_cannot_write_is_an_items_error_on_its_items_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    """YAML takes a list, a date or binary data as a mapping key; JSON, which the item is
    written as, has no form for one: it is refused where it is read, not when it is written."""
    path = write(tmp_path / "a.yaml", text)
    with pytest.raises(ItemsError) as caught:
        list(iter_items(source(path)))
    assert caught.value.line == line
    assert str(caught.value).startswith(f"{path}:{line}: {message}")
    assert _KEYS_MUST_BE in str(caught.value)


def test_yaml_mapping_keys_json_can_write_are_read(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", "- {a: 1, 2: b, 1.5: c, true: d, ~: e, '2024-01-02': f}\n")
    assert list(iter_items(source(path))) == [
        {"a": 1, 2: "b", 1.5: "c", True: "d", None: "e", "2024-01-02": "f"}
    ]


def test_an_id_with_a_lone_surrogate_gets_a_printable_key() -> None:
    key = item_key({"id": "a\ud800b"}, 0)
    assert key == "a\\ud800b"
    assert key.encode() == b"a\\ud800b"


def test_count_items(tmp_path: Path) -> None:
    assert count_items(ItemSource(inline=(1, 2, 3))) == 3
    path = write(tmp_path / "a.jsonl", '{"id": 1}\n\n{"id": 2}\n')
    assert count_items(source(path)) == 2
    assert count_items(source(write(tmp_path / "e.csv", "id\n"))) == 0
    assert count_items(source(write(tmp_path / "y.yml", "[1, 2]"), "yaml")) == 2
