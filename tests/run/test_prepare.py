"""Rendering a task for an item: an error points to where the failing template line is written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ralph import sandbox
from ralph.recipe.validate import load_recipe
from ralph.run.prepare import ItemRejected, LoopContext, Preparer
from tests.conftest import Result, apply_args, write_recipe

RECIPE = """
    version: 1
    name: prepare-test
    agents: {local: {provider: echo}}
    tasks:
      - name: ratio
        agent: local
        for_each: [{n: 1}]
        system: "Share of {{ item.total.parts }}"
        prompt: |
          Item {{ item.n }}
          Ratio: {{ 10 // item.n }}
        output: "out/{{ item.name.first }}.md"
      - name: from-file
        agent: local
        for_each: [{n: 1}]
        prompt_file: prompts/ratio.md
"""


def rejection(recipe: Path, task: int, item: object, *sets: str) -> str:
    model = load_recipe(recipe, None, sets)
    with pytest.raises(ItemRejected) as caught:
        Preparer(model, model.tasks[task], {}).prepare(0, item)
    return str(caught.value)


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    return write_recipe(tmp_path, RECIPE, **{"prompts__ratio.md": "Item\n{{ 1 // item.n }}\n"})


def site(recipe: Path, text: str) -> str:
    """`file:line:col` of the first place `text` is written in the recipe."""
    lines = recipe.read_text().splitlines()
    number = next(n for n, line in enumerate(lines, 1) if text in line)
    return f"{recipe}:{number}:{lines[number - 1].index(text) + 1}"


def test_an_error_in_a_block_names_the_recipe_line_of_the_template_line(recipe: Path) -> None:
    message = rejection(recipe, 0, {"n": 0, "total": {"parts": 3}, "name": {"first": "a"}})
    assert message == (
        f"{site(recipe, 'Ratio:')}: task 'ratio' prompt line 2: "
        "ZeroDivisionError: integer division or modulo by zero"
    )


def test_an_undefined_value_in_a_one_line_template_names_where_the_value_starts(
    recipe: Path,
) -> None:
    message = rejection(recipe, 0, {"n": 1, "total": 3})
    where = site(recipe, '"Share of')
    assert message.startswith(f"{where}: task 'ratio' system line 1: ")
    assert "has no attribute 'parts'" in message


def test_an_error_in_a_prompt_file_names_the_file_and_its_line(recipe: Path) -> None:
    message = rejection(recipe, 1, {"n": 0})
    prompt_file = recipe.parent.resolve() / "prompts" / "ratio.md"
    assert message.startswith(f"{prompt_file}:2: task 'from-file' prompt_file line 2: ")


def test_a_template_set_on_the_command_line_is_not_located_in_the_file(recipe: Path) -> None:
    message = rejection(recipe, 0, {"n": 0}, "tasks.ratio.prompt={{ 1 // item.n }}")
    assert message.startswith("task 'ratio' prompt line 1: ZeroDivisionError")


def test_an_error_in_a_folded_block_points_into_the_block(tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path,
        """
        version: 1
        name: folded
        agents: {local: {provider: echo}}
        tasks:
          - name: t
            agent: local
            for_each: [{n: 0}]
            prompt: >
              First paragraph,
              folded into one line.

              Ratio {{ 1 // item.n }}
    """,
    )
    message = rejection(recipe, 0, {"n": 0})
    assert message.startswith(f"{site(recipe, 'Ratio')}: task 't' prompt line 2: ")


def test_a_prompt_file_broken_while_a_loop_runs_names_the_file_and_line(tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path,
        """
        version: 1
        name: looping
        agents: {local: {provider: echo}}
        tasks:
          - name: t
            agent: local
            prompt_file: PROMPT.md
            loop: {until: DONE, max_iterations: 3}
    """,
        **{"PROMPT.md": "Work on it.\n"},
    )
    model = load_recipe(recipe)
    preparer = Preparer(model, model.tasks[0], {})
    assert preparer.prepare(0, None, LoopContext(1)).prompt.strip() == "Work on it."
    (tmp_path / "PROMPT.md").write_text("Work on it.\n{% if %}\n")
    with pytest.raises(ItemRejected) as caught:
        preparer.prepare(0, None, LoopContext(2))
    prompt_file = (tmp_path / "PROMPT.md").resolve()
    assert str(caught.value).startswith(f"{prompt_file}:2: task 't' prompt_file line 2: ")


def test_a_render_that_takes_too_long_fails_its_item_alone(
    ralph: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "MAX_RENDER_S", 0.3)
    recipe = write_recipe(
        tmp_path,
        """
        version: 1
        name: slow
        agents: {local: {provider: echo}}
        tasks:
          - name: t
            agent: local
            for_each: [{id: quick, n: 1}, {id: slow, n: 100000}]
            prompt: |
              {% for i in range(item.n) %}{% for j in range(item.n) %}{% endfor %}{% endfor %}done
        """,
    )
    result = ralph(*apply_args(recipe, tmp_path / "out", "--log-format", "json"))
    assert result.code == 3, result.out + result.err
    assert "1 failed item" in result.out
    assert "t' prompt line 1: the template took more than 0.3s to render" in result.out
