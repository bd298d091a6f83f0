"""The user documentation in docs/ stays true to the code: every key of the recipe schema is in
the reference, every relative link resolves, and every example recipe validates."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from ralph.filters import INPUT_FILTERS, OUTPUT_FILTERS
from ralph.providers import PROVIDERS
from tests.conftest import ROOT, Result

DOCS = ROOT / "docs"
REFERENCE = DOCS / "recipe-reference.md"
SCHEMA = ROOT / "ralph" / "schemas" / "recipe.schema.json"
PAGES = sorted(DOCS.glob("*.md"))

_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
_LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(?P<text>.+?)\s*#*\s*$")
_INLINE_CODE = re.compile(r"`[^`]*`")


# -- reading the docs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence
    lang: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.page.name}:{self.line}"


def code_blocks(page: Path) -> Iterator[Block]:
    """Fenced code blocks, with the fence's indentation removed from their lines."""
    lines = page.read_text("utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent = len(opening["indent"])
        body: list[str] = []
        index += 1
        while index < len(lines) and not re.match(r"^\s*```\s*$", lines[index]):
            body.append(lines[index][indent:] if lines[index][:indent].isspace() else lines[index])
            index += 1
        yield Block(page, index - len(body), opening["lang"], "\n".join(body) + "\n")
        index += 1


def prose(page: Path) -> str:
    """The page without its fenced code blocks (links in code are not links)."""
    kept: list[str] = []
    in_code = False
    for line in page.read_text("utf-8").splitlines():
        if re.match(r"^\s*```", line):
            in_code = not in_code
            continue
        if not in_code:
            kept.append(line)
    return "\n".join(kept)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    found: set[str] = set()
    for line in prose(page).splitlines():
        heading = _HEADING.match(line)
        if heading is None:
            continue
        text = heading["text"].replace("`", "").lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def yaml_blocks(prefix: str) -> list[Block]:
    return [
        block
        for page in PAGES
        for block in code_blocks(page)
        if block.lang == "yaml" and block.text.startswith(prefix)
    ]


VALID = yaml_blocks("version: 1")
INVALID = yaml_blocks("# invalid")


# -- the schema ---------------------------------------------------------------------------------


def schema_names() -> tuple[set[str], set[str]]:
    """Every property name and every enum value in the schema, following $ref into $defs."""
    schema = json.loads(SCHEMA.read_text("utf-8"))
    definitions = schema["$defs"]
    names: set[str] = set()
    values: set[str] = set()
    visited: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for sub in node:
                walk(sub)
            return
        if not isinstance(node, dict):
            return
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name not in visited:
                visited.add(name)
                walk(definitions[name])
        for key, sub in node.get("properties", {}).items():
            names.add(key)
            walk(sub)
        for key in ("additionalProperties", "items", "propertyNames", "if", "then", "else"):
            walk(node.get(key))
        for key in ("anyOf", "allOf", "oneOf"):
            walk(node.get(key, []))
        values.update(str(value) for value in node.get("enum", []))

    walk(schema)
    return names, values


def mentioned(name: str, text: str) -> bool:
    return f"`{name}`" in text


# -- tests --------------------------------------------------------------------------------------


def test_every_schema_key_is_in_the_reference() -> None:
    names, _ = schema_names()
    assert {"version", "max_backoff", "regex_replace", "on_failure", "expect_exit"} <= names
    text = REFERENCE.read_text("utf-8")
    missing = sorted(name for name in names if not mentioned(name, text))
    assert not missing, f"docs/recipe-reference.md does not mention {missing}"


def test_every_enum_value_is_in_the_reference() -> None:
    _, values = schema_names()
    text = REFERENCE.read_text("utf-8")
    missing = sorted(value for value in values if not mentioned(value, text))
    assert not missing, f"docs/recipe-reference.md does not mention {missing}"


def test_every_filter_and_provider_is_in_the_reference() -> None:
    _, values = schema_names()
    names = {*INPUT_FILTERS, *OUTPUT_FILTERS, *PROVIDERS}
    assert {"openai", "anthropic", "command", "echo", "redact_secrets"} <= values
    text = REFERENCE.read_text("utf-8")
    missing = sorted(name for name in names if not mentioned(name, text))
    assert not missing, f"docs/recipe-reference.md does not mention {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_point_at_existing_files(page: Path) -> None:
    broken: list[str] = []
    for match in _LINK.finditer(prose(page)):
        target = match["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.name}: broken links {broken}"


def test_the_docs_have_an_index_of_every_page() -> None:
    index = (DOCS / "README.md").read_text("utf-8")
    unlisted = [p.name for p in PAGES if p.name != "README.md" and f"({p.name})" not in index]
    assert not unlisted, f"docs/README.md does not link {unlisted}"


def test_examples_are_found() -> None:
    assert len(VALID) >= 8
    assert INVALID


def write_example(block: Block, folder: Path) -> Path:
    """The recipe of `block` in `folder`, with empty prompt and items files where it names any."""
    recipe = folder / "recipe.yaml"
    recipe.write_text(block.text, "utf-8")
    data = YAML(typ="safe", pure=True).load(block.text)
    for task in data.get("tasks") or []:
        for_each = task.get("for_each")
        files = [
            task.get("prompt_file"),
            for_each.get("file") if isinstance(for_each, dict) else None,
        ]
        for name in filter(None, files):
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    return recipe


@pytest.mark.parametrize("block", VALID, ids=lambda b: b.id)
def test_example_recipes_validate(
    block: Block, ralph: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RALPH_PROFILE", raising=False)  # check each example as a reader would
    result = ralph("validate", str(write_example(block, tmp_path)))
    assert result.code == 0, f"{block.id}:\n{result.out}{result.err}"


@pytest.mark.parametrize("block", INVALID, ids=lambda b: b.id)
def test_examples_of_mistakes_fail_validation(
    block: Block, ralph: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RALPH_PROFILE", raising=False)
    result = ralph("validate", str(write_example(block, tmp_path)))
    assert result.code == 1, f"{block.id} validated, but is shown as a mistake"
