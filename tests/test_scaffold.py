"""`ralph init` scaffolds a recipe that validates and runs at once on the echo agent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Result, apply_args


def test_scaffold_validates_and_runs(ralph: Callable[..., Result], tmp_path: Path) -> None:
    folder = tmp_path / "My Project"
    made = ralph("init", str(folder))
    assert made.code == 0
    shown = f"'{folder / 'recipe.yaml'}'"  # quoted: the hint is pasted into a shell
    assert f"next: ralph validate {shown} && ralph apply {shown}" in made.out
    assert sorted(p.name for p in folder.iterdir()) == [
        ".gitignore",
        "items.jsonl",
        "recipe.schema.json",
        "recipe.yaml",
    ]
    recipe = folder / "recipe.yaml"
    assert recipe.read_text().startswith("# yaml-language-server: $schema=recipe.schema.json\n")
    assert 'name: "my-project"\n' in recipe.read_text()
    assert ".ralph/" in (folder / ".gitignore").read_text()
    assert ralph("validate", str(recipe)).code == 0
    out = folder / "out"
    result = ralph(*apply_args(recipe, out))
    assert result.code == 0, result.out + result.err
    assert (out / "descriptions" / "tea.md").read_text().startswith("Describe a cup of tea")


def test_scaffold_does_not_overwrite(ralph: Callable[..., Result], tmp_path: Path) -> None:
    (tmp_path / "recipe.yaml").write_text("mine")
    result = ralph("init", str(tmp_path))
    assert result.code == 2
    assert "not overwriting" in result.err and "recipe.yaml" in result.err
    assert (tmp_path / "recipe.yaml").read_text() == "mine"
    assert ralph("init", str(tmp_path), "--force").code == 0
    assert (tmp_path / "recipe.yaml").read_text() != "mine"


@pytest.mark.parametrize("folder", ["2024", "0", "true", "null", "0x10", "1e5", "1_000"])
def test_a_folder_name_yaml_reads_as_a_number_or_keyword_still_validates(
    ralph: Callable[..., Result], tmp_path: Path, folder: str
) -> None:
    assert ralph("init", str(tmp_path / folder)).code == 0
    recipe = tmp_path / folder / "recipe.yaml"
    assert f'name: "{folder.replace("_", "-")}"\n' in recipe.read_text()
    result = ralph("validate", str(recipe))
    assert result.code == 0, result.out
