"""From a data path back to the line and column a user should look at."""

from __future__ import annotations

from typing import Any

import pytest
from ruamel.yaml import YAML

from ralph.recipe.positions import Locator, dotted, locate


def tree(text: str) -> Any:
    return YAML(typ="rt").load(text)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ((), ""),
        (("name",), "name"),
        (("tasks", 0, "agent"), "tasks[0].agent"),
        (("tasks", 2, "filters", "input", 1, "max_chars"), "tasks[2].filters.input[1].max_chars"),
        (("agents", "writer", "timeout"), "agents.writer.timeout"),
    ],
)
def test_dotted_names_a_key_the_way_a_user_would(
    path: tuple[str | int, ...], expected: str
) -> None:
    assert dotted(path) == expected


RECIPE = """\
version: 1
agents:
  writer:
    timeout: 60 seconds
    params: {temperature: hot}
tasks:
  - name: one
    agent: writer
  -   name: two
base: &base {x: 1}
merged:
  <<: *base
  y: 2
"""


@pytest.mark.parametrize(
    ("path", "at_key", "expected"),
    [
        (("agents", "writer", "timeout"), False, (4, 14)),  # a scalar: at its value
        (("agents", "writer", "timeout"), True, (4, 5)),  # ... or its key, when asked
        (("agents", "writer"), False, (3, 3)),  # a container: at its key
        (("agents", "writer", "params", "temperature"), False, (5, 27)),  # inside a flow map
        (("tasks", 1), False, (9, 7)),  # a list item: where the item starts
        (("tasks", 1, "name"), False, (9, 13)),
        (("agents", "writer", "model"), False, (3, 3)),  # absent: the deepest present parent
        (("tasks", 7, "agent"), False, (6, 1)),
        (("merged", "x"), False, (10, 17)),  # from a merge: where the anchored map has it
        (("merged", "x"), True, (10, 14)),
        (("merged", "y"), False, (13, 6)),
        ((), False, (1, 1)),
    ],
)
def test_locate_finds_the_line_and_column(
    path: tuple[str | int, ...], at_key: bool, expected: tuple[int, int]
) -> None:
    assert locate(tree(RECIPE), path, at_key=at_key) == expected


def test_an_empty_value_is_located_at_its_key_not_at_the_next_token() -> None:
    text = "agents:\n  local:\n    model:\n\n    provider: echo\nprompt:\n"
    assert locate(tree(text), ("agents", "local", "model")) == (3, 5)
    assert locate(tree(text), ("prompt",)) == (6, 1)  # the last key: not past the file's end


def template_position(text: str, template_line: int) -> tuple[int, int]:
    where = Locator("r.yaml", tree(text), text)
    found = where.template_problem(("prompt",), template_line, "msg")
    return found.line, found.column


def test_a_literal_block_maps_template_lines_one_to_one() -> None:
    text = "x: 1\nprompt: |\n  first\n\n    indented\n  last\nnext: 2\n"
    assert [template_position(text, n) for n in (1, 2, 3, 4)] == [(3, 3), (4, 1), (5, 5), (6, 3)]


def test_a_template_merged_from_an_anchor_is_located_in_the_anchor() -> None:
    text = (
        "vars:\n"  # 1
        "  base: &base\n"  # 2
        "    agent: a\n"  # 3
        "    prompt: |\n"  # 4
        "      first\n"  # 5
        "      {{ oops }}\n"  # 6
        "  other: &other {agent: b}\n"  # 7
        "tasks:\n"  # 8
        "  - name: t\n"  # 9
        "    <<: [*other, *base]\n"  # 10
    )
    where = Locator("r.yaml", tree(text), text)
    found = where.template_problem(("tasks", 0, "prompt"), 2, "msg")
    assert (found.line, found.column) == (6, 7)
    assert locate(tree(text), ("tasks", 0, "agent")) == (7, 25)  # the first source wins


def test_a_literal_block_with_an_indentation_indicator() -> None:
    text = "prompt: |2\n    starts indented\n  then {{ x }\n"
    assert template_position(text, 2) == (3, 3)


def test_a_folded_block_maps_paragraphs_to_their_first_line() -> None:
    text = (
        "prompt: >\n"  # 1
        "  one long\n"  # 2   template line 1
        "  sentence\n"  # 3   (folded into line 1)
        "\n"  # 4
        "  second\n"  # 5   template line 2
        "  paragraph\n"  # 6
        "\n"  # 7
        "\n"  # 8
        "  third\n"  # 9   template line 4 (two empty lines: two newlines)
        "    more indented\n"  # 10  template line 5: breaks around it are kept
        "  after\n"  # 11  template line 6
    )
    positions = [template_position(text, n) for n in (1, 2, 4, 5, 6)]
    assert positions == [(2, 3), (5, 3), (9, 3), (10, 5), (11, 3)]


def test_a_folded_block_with_an_indentation_indicator_and_a_more_indented_first_line() -> None:
    text = (
        "prompt: >2\n"  # 1
        "    w0\n"  # 2   template line 1: more indented than the body's 2 spaces
        "  w1\n"  # 3   template line 2 (the break after a more-indented line is kept)
        "  w2\n"  # 4   folded into line 2
        "\n"  # 5
        "  w3\n"  # 6   template line 3
    )
    positions = [template_position(text, n) for n in (1, 2, 3)]
    assert positions == [(2, 5), (3, 3), (6, 3)]


def test_a_quoted_value_is_reported_where_it_starts() -> None:
    # its second template line comes from an escape, not from a second line of the file
    text = 'prompt: "one\\ntwo {{ x }"\nnext: 1\n'
    assert template_position(text, 2) == (1, 9)


def test_a_plain_value_on_several_lines_is_reported_where_it_starts() -> None:
    text = "prompt:\n  plain text\n  over lines\nnext: 1\n"
    assert template_position(text, 1) == (2, 3)


def test_a_value_set_by_the_profile_in_force_is_located_in_the_profile() -> None:
    text = """\
vars: {tone: terse, size: 3}
tasks:
  - name: greet
    prompt: hi
profiles:
  prod:
    vars: {tone: formal}
    tasks:
      greet:
        prompt: |
          line one
          {{ oops }
"""
    with_profile = Locator("r.yaml", tree(text), text, profile="prod")
    without = Locator("r.yaml", tree(text), text)
    assert with_profile.problem(("vars", "tone"), "m").line == 7
    assert without.problem(("vars", "tone"), "m").line == 1
    assert with_profile.problem(("vars", "size"), "m").line == 1  # not in the profile
    found = with_profile.template_problem(("tasks", 0, "prompt"), 2, "m")
    assert (found.line, found.column, found.path) == (12, 11, "tasks[0].prompt")


def test_messages_are_redacted() -> None:
    text = "key: x\n"
    found = Locator("r.yaml", tree(text), text).problem(
        ("key",), "'sk-ant-api03-abcdefghijklmnop' is wrong"
    )
    assert found.message == "'[REDACTED:anthropic]' is wrong"
