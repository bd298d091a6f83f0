"""Items for `for_each`: streamed JSONL and CSV, whole JSON and YAML lists, located errors."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from ralph.errors import ItemsError
from ralph.items import count_items, item_key, iter_items
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


def test_csv_that_is_not_utf8_is_an_items_error(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", b"id,name\n1,Jos\xe9\n")
    with pytest.raises(ItemsError, match="not valid UTF-8"):
        list(iter_items(source(path)))


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
        ("a string", 8, "8"),
        (None, 0, "0"),
    ],
)
def test_item_key_is_the_id_or_the_index(item: object, index: int, key: str) -> None:
    assert item_key(item, index) == key


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
    with pytest.raises(ItemsError, match=r"a.yaml: item 1 has an integer of more than 4300 dig"):
        list(iter_items(source(path)))
    fine = write(tmp_path / "b.yaml", "- n: 0x%s\n" % ("f" * 3500))  # 4215 decimal digits
    assert len(str(next(iter_items(source(fine)))["n"])) == 4215


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
