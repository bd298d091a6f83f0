"""Loading a recipe file: plain data for the checks, positions for the messages, hard bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from ralph.errors import Problem, RecipeError
from ralph.recipe.load import MAX_BYTES, MAX_DEPTH, MAX_NODES, load_source


def write(tmp_path: Path, content: str | bytes, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, "utf-8")
    else:
        path.write_bytes(content)
    return path


def problem(path: Path) -> Problem:
    with pytest.raises(RecipeError) as caught:
        load_source(path, "r.yaml")
    (only,) = caught.value.problems
    return only


def test_data_is_plain_python_with_exact_types(tmp_path: Path) -> None:
    source = load_source(
        write(
            tmp_path,
            "flag: true\nyes_is_text: yes\ncount: 3\nratio: 0.5\nday: 2024-05-01\n"
            "nothing:\n1: one\nlist: [a, {b: c}]\n",
        )
    )
    assert source.data == {
        "flag": True,
        "yes_is_text": "yes",  # YAML 1.2: only true/false are booleans
        "count": 3,
        "ratio": 0.5,
        "day": "2024-05-01",
        "nothing": None,
        "1": "one",
        "list": ["a", {"b": "c"}],
    }
    assert type(source.data["flag"]) is bool
    assert type(source.data["count"]) is int
    assert type(source.data["list"][1]) is dict
    assert source.display == str(tmp_path / "r.yaml")


def test_the_tree_keeps_positions_for_messages(tmp_path: Path) -> None:
    source = load_source(write(tmp_path, "a:\n  b: 1\n"), "shown.yaml")
    assert source.display == "shown.yaml"
    assert source.tree["a"].lc.key("b") == (1, 2)


def test_aliases_are_copied_not_shared(tmp_path: Path) -> None:
    data = load_source(write(tmp_path, "a: &x {k: [1, 2]}\nb: *x\n")).data
    assert data["a"] == data["b"]
    assert data["a"] is not data["b"]


def test_merge_keys_are_resolved(tmp_path: Path) -> None:
    data = load_source(write(tmp_path, "base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n")).data
    assert data["derived"] == {"x": 1, "y": 3}


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    assert load_source(write(tmp_path, b"\xef\xbb\xbfname: x\n")).data == {"name": "x"}


def test_a_reused_anchor_is_quietly_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = load_source(write(tmp_path, "a: &x 1\nb: &x 2\nc: *x\n")).data
    assert data == {"a": 1, "b": 2, "c": 2}
    assert capsys.readouterr().err == ""


def test_the_size_cap_applies_before_anything_is_read(tmp_path: Path) -> None:
    at_cap = write(tmp_path, b"a: 1\n" + b"#" * (MAX_BYTES - 6) + b"\n")
    assert load_source(at_cap).data == {"a": 1}
    over = write(tmp_path, b"a: 1\n" + b"#" * MAX_BYTES, "big.yaml")
    found = problem(over)
    assert (found.line, found.column) == (1, 1)
    assert "limited to 1 MB" in found.message


@pytest.mark.parametrize(
    ("content", "position", "message"),
    [
        (b"", (1, 1), "recipe is empty"),
        (b"a: 1\nb: \x00\n", (2, 4), "file is binary (NUL byte), not a YAML recipe"),
        (b"a: 1\nb: caf\xe9\n", (2, 7), "file is not valid UTF-8 (byte 0xe9); save it as UTF-8"),
        ("a: 1\n".encode("utf-16"), (1, 1), "file is UTF-16 encoded; save it as UTF-8"),
        (b"a: 1\nb: x\x1b\n", (2, 5), "character U+001B is not allowed in YAML"),
    ],
)
def test_unreadable_bytes_are_located(
    tmp_path: Path, content: bytes, position: tuple[int, int], message: str
) -> None:
    found = problem(write(tmp_path, content))
    assert (found.line, found.column) == position
    assert found.message.startswith(message)


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("a: 1\na: 2\n", (2, 1), "duplicate key 'a' (a key may appear only once in a mapping)"),
        (
            "a: [1, 2\nb: 3\n",
            (2, 2),
            "YAML syntax error: expected ',' or ']', but got ':' "
            "(in the flow sequence that starts at line 1, column 4)",
        ),
        (
            "a: 'x\n",
            (2, 1),
            "YAML syntax error: found unexpected end of stream "
            "(in the quoted scalar that starts at line 1, column 4)",
        ),
        (
            "a:\n\tb: 1\n",
            (2, 1),
            "YAML syntax error: found character '\\t' that cannot start any token; "
            "indent with spaces, not tabs",
        ),
        ("a: `x`\n", (1, 4), "YAML syntax error: found character '`' that cannot start any token"),
        ('a: "\\q"\n', (1, 6), "YAML syntax error: found unknown escape character 'q'"),
        ("a: *missing\n", (1, 4), "YAML syntax error: found undefined alias 'missing'"),
        ("a: 1\nb: !!set x\n", (2, 4), "YAML error: cannot read the value tagged '!!set'"),
        ("a: !!int abc\n", (1, 4), "YAML error: cannot read the value tagged '!!int'"),
        ("a: !!bool maybe\n", (1, 4), "YAML error: cannot read the value tagged '!!bool'"),
        ("? [a, {b: {c: d}}]\n: x\n", (1, 1), "YAML error: mapping keys must be plain text"),
        ("- 1\n- 2\n", (1, 1), "expected a mapping at the top of the recipe, got a list"),
        ("'text'\n", (1, 1), "expected a mapping at the top of the recipe, got a string"),
        ("42\n", (1, 1), "expected a mapping at the top of the recipe, got a number"),
    ],
)
def test_yaml_errors_keep_the_parser_position(
    tmp_path: Path, text: str, position: tuple[int, int], message: str
) -> None:
    found = problem(write(tmp_path, text))
    assert (found.line, found.column) == position
    assert found.message.startswith(message)


def test_a_duplicate_key_never_quotes_the_values(tmp_path: Path) -> None:
    found = problem(write(tmp_path, "key: first-value\nkey: second-value\n"))
    assert "value" not in found.message


def test_an_unquoted_template_is_explained(tmp_path: Path) -> None:
    found = problem(write(tmp_path, "tasks:\n  - prompt: {{ item.body }}\n"))
    assert (found.line, found.column, found.path) == (2, 5, "tasks[0].prompt")
    assert "put the template in quotes" in found.message


def test_nesting_deeper_than_the_limit_is_refused_where_it_happens(tmp_path: Path) -> None:
    ok = "a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n"
    assert load_source(write(tmp_path, ok)).data["a"] is not None
    deep = "a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n"
    found = problem(write(tmp_path, deep, "deep.yaml"))
    assert found.line == 1
    assert found.message == f"recipe is nested more than {MAX_DEPTH} levels deep"


def test_deep_nesting_through_aliases_is_refused_while_copying(tmp_path: Path) -> None:
    # each level is shallow where it is written; only the expansion is deep
    lines = ["l0: &l0 [x]"] + [f"l{i}: &l{i} [[[[*l{i - 1}]]]]" for i in range(1, 20)]
    found = problem(write(tmp_path, "\n".join(lines) + "\n"))
    assert found.message == f"recipe is nested more than {MAX_DEPTH} levels deep"
    assert found.path.startswith("l")
    assert found.path.count("[") <= 1  # the top-level entry, not 64 indexes


def test_an_alias_bomb_is_refused_at_the_entry_that_explodes(tmp_path: Path) -> None:
    lines = ["vars:", "  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    found = problem(write(tmp_path, "\n".join(lines) + "\n"))
    assert found.message == f"recipe expands to more than {MAX_NODES} values (a YAML alias bomb?)"
    # a4 holds 10**5 + ... values: the first entry over the budget
    assert (found.path, found.line, found.column) == ("vars.a4", 6, 3)


def test_the_size_cap_counts_bytes_read_not_the_size_a_device_reports() -> None:
    # /dev/zero reports size 0 and never ends: only a bounded read refuses it
    with pytest.raises(RecipeError) as caught:
        load_source(Path("/dev/zero"), "zero.yaml")
    (only,) = caught.value.problems
    assert only.message.startswith("recipe is over 1 MB; recipes are limited to 1 MB")
