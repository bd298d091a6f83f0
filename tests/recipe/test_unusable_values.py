"""Values YAML can write but no run can use (a NUL in a path, NaN, a 5000-digit number, keys
that collide once read, an output that names no file) are problems at validate time, located,
and never an internal error later."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ralph.errors import UsageError
from ralph.recipe.overrides import parse_set
from ralph.recipe.validate import check_file
from tests.conftest import Result

Ralph = Callable[..., Result]

RECIPE = """\
version: 1
name: t
agents:
  a: {provider: echo}
  c: {provider: command, command: [run]}
tasks:
  - {name: t, agent: a, prompt: hi}
"""

HUGE = "9" * 5000


def found(tmp_path: Path, text: str, sets: tuple[str, ...] = ()) -> list[tuple[int, int, str]]:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text, "utf-8")
    return [(p.line, p.column, p.message) for p in check_file(recipe, None, sets).problems]


@pytest.mark.parametrize(
    ("old", "new", "position"),
    [
        ("{provider: echo}", '{provider: command, command: [x], workdir: "a\\0b"}', (4, 49)),
        ("{provider: echo}", '{provider: openai, model: m, api_key_file: "k\\0y"}', (4, 49)),
        ("{provider: echo}", '{provider: openai, model: m, api_key_command: [k, "\\0"]}', (4, 56)),
        ("command: [run]", 'command: ["r\\0n"]', (5, 36)),
        ("command: [run]", 'command: "r\\0n", shell: true', (5, 35)),
        ("command: [run]", 'command: [run], probe: ["\\0"]', (5, 50)),
        ("prompt: hi}", 'prompt_file: "a\\0b"}', (7, 38)),
        ("prompt: hi}", 'prompt: hi, output: "a\\0b"}', (7, 45)),
        ("prompt: hi}", 'prompt: hi, for_each: {file: "a\\0b"}}', (7, 54)),
        ("prompt: hi}", 'prompt: hi, loop: {until: {command: ["t\\0"]}}}', (7, 62)),
        ("prompt: hi}", 'prompt: hi, loop: {until: {file: "a\\0b"}}}', (7, 58)),
    ],
)
def test_a_nul_in_a_path_or_argument_is_a_located_problem(
    tmp_path: Path, old: str, new: str, position: tuple[int, int]
) -> None:
    problems = found(tmp_path, RECIPE.replace(old, new))
    assert [(line, col) for line, col, _ in problems] == [position]
    assert problems[0][2].endswith("contains a NUL character")


def test_a_nul_in_a_health_check_command_is_a_located_problem(tmp_path: Path) -> None:
    text = RECIPE + 'health_checks:\n  - command: [sh, "\\0"]\n'
    assert found(tmp_path, text) == [(9, 19, "'\\x00' contains a NUL character")]


def test_a_nul_in_a_path_fails_validate_not_the_cli(ralph: Ralph, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.replace("prompt: hi}", 'prompt_file: "a\\0b"}'), "utf-8")
    result = ralph("validate", str(recipe))
    assert result.code == 1, result.err
    assert "contains a NUL character" in result.out


@pytest.mark.parametrize("spelling", [".nan", ".NaN", ".inf", "-.inf", "1e400"])
@pytest.mark.parametrize(
    ("old", "new", "position"),
    [
        (
            "{provider: echo}",
            "{provider: echo, pricing: {input_per_mtok: X, output_per_mtok: 1}}",
            (4, 49),
        ),
        ("tasks:", "limits: {max_cost_usd: X}\ntasks:", (6, 24)),
        ("tasks:", "vars: {n: [X]}\ntasks:", (6, 12)),
        ("prompt: hi}", "prompt: hi, loop: {until: D, stall: {similarity: X}}}", (7, 74)),
    ],
)
def test_a_number_that_is_not_finite_is_refused(
    tmp_path: Path, spelling: str, old: str, new: str, position: tuple[int, int]
) -> None:
    problems = found(tmp_path, RECIPE.replace(old, new.replace("X", spelling)))
    assert (*position, "is not a finite number (NaN and infinity are not allowed)") in [
        (line, col, message.split(" ", 1)[1]) for line, col, message in problems
    ]


@pytest.mark.parametrize(
    ("value", "position"),
    [(HUGE, (6, 11)), ("-" + HUGE, (6, 11)), ("0x" + "f" * 5000, (6, 11))],
)
def test_a_number_too_long_to_print_is_refused_where_it_is(
    tmp_path: Path, value: str, position: tuple[int, int]
) -> None:
    problems = found(tmp_path, RECIPE.replace("tasks:", f"vars: {{n: {value}}}\ntasks:"))
    assert len(problems) == 1
    line, col, message = problems[0]
    assert (line, col) == position
    assert "more than 4300 digits" in message
    assert "mapping keys" not in message


@pytest.mark.parametrize(
    "assignment",
    [f"n={HUGE}", f"limits.max_requests={HUGE}", f"n=[1, {HUGE}]", "n=0x" + "f" * 5000],
)
def test_a_set_number_too_long_to_print_is_a_usage_error(assignment: str) -> None:
    with pytest.raises(UsageError, match="more than 4300 digits") as caught:
        parse_set(assignment)
    assert HUGE not in str(caught.value)


@pytest.mark.parametrize("assignment", ["limits.max_cost_usd=.nan", "n=.inf", "n=[-.inf]"])
def test_a_set_number_that_is_not_finite_is_a_usage_error(assignment: str) -> None:
    with pytest.raises(UsageError, match="not a finite number"):
        parse_set(assignment)


def test_a_huge_set_is_a_usage_error_not_a_crash(ralph: Ralph, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE, "utf-8")
    result = ralph("validate", str(recipe), "--set", f"limits.max_requests={HUGE}")
    assert result.code == 2, result.out + result.err
    assert "more than 4300 digits" in result.err


@pytest.mark.parametrize(
    ("vars_", "position", "message"),
    [
        ("{'1': 2, 1: 3}", (6, 16), "a var name must be text; quote 1"),
        ("{ok: 1, null: 2}", (6, 15), "a var name must be text; quote null"),
        ("{x: {1: a}, 2: b}", (6, 19), "a var name must be text; quote 2"),
    ],
)
def test_a_var_name_must_be_text(
    tmp_path: Path, vars_: str, position: tuple[int, int], message: str
) -> None:
    problems = found(tmp_path, RECIPE.replace("tasks:", f"vars: {vars_}\ntasks:"))
    assert [(line, col) for line, col, _ in problems] == [position]
    assert problems[0][2].startswith(message)


def test_a_profile_var_name_must_be_text_too(tmp_path: Path) -> None:
    text = RECIPE.replace("tasks:", "vars: {x: 1}\ntasks:") + "profiles: {p: {vars: {7: a}}}\n"
    problems = found(tmp_path, text)
    assert [(line, col) for line, col, _ in problems] == [(9, 23)]
    assert problems[0][2].startswith("a var name must be text; quote 7")


@pytest.mark.parametrize(
    ("params", "position", "key"),
    [("{'1': 2, 1: 3}", (4, 52), "1"), ("{true: 1, 'true': 2}", (4, 53), "true")],
)
def test_keys_that_read_the_same_are_duplicates(
    tmp_path: Path, params: str, position: tuple[int, int], key: str
) -> None:
    agent = f"{{provider: openai, model: m, params: {params}}}"
    problems = found(tmp_path, RECIPE.replace("{provider: echo}", agent))
    assert problems == [
        (*position, f"duplicate key '{key}' (a key may appear only once in a mapping)")
    ]


@pytest.mark.parametrize(
    ("mapping", "position", "message"),
    [
        ("vars: {1: one, true: yes}", (6, 16), "key true clashes with key 1 (line 6, column 8)"),
        ("vars: {0: a, x: b, false: c}", (6, 20), "key false clashes with key 0"),
        ("vars: {2: a, 2.0: c}", (6, 14), "key 2.0 clashes with key 2"),
    ],
)
def test_keys_that_differ_in_yaml_but_not_in_python_are_explained(
    tmp_path: Path, mapping: str, position: tuple[int, int], message: str
) -> None:
    problems = found(tmp_path, RECIPE.replace("tasks:", f"{mapping}\ntasks:"))
    assert [(line, col) for line, col, _ in problems] == [position]
    assert problems[0][2].startswith(message)
    assert "quote" in problems[0][2]
    assert "True" not in problems[0][2]


@pytest.mark.parametrize("output", [".", "./", "././", " ", "./."])
def test_a_constant_output_that_names_no_file_is_refused(tmp_path: Path, output: str) -> None:
    problems = found(tmp_path, RECIPE.replace("prompt: hi}", f'prompt: hi, output: "{output}"}}'))
    assert [(line, col) for line, col, _ in problems] == [(7, 45)]
    assert "names the output directory itself, not a file" in problems[0][2]


@pytest.mark.parametrize("output", ["out.md", "{{ task }}/.", "./a.md", "{{ '.' }}"])
def test_an_output_that_may_name_a_file_is_accepted(tmp_path: Path, output: str) -> None:
    assert found(tmp_path, RECIPE.replace("prompt: hi}", f'prompt: hi, output: "{output}"}}')) == []
