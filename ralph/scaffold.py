"""`ralph init`: a small recipe that validates and runs at once on the offline echo agent."""

from __future__ import annotations

from pathlib import Path

from ralph.errors import UsageError
from ralph.recipe.schema import schema_text
from ralph.run.outputs import write_atomic

RECIPE = """\
# yaml-language-server: $schema=recipe.schema.json
version: 1
name: "{name}"
description: A first recipe. Run it with `ralph apply recipe.yaml`, then swap the agent.

vars:
  style: one short sentence

agents:
  writer:
    provider: echo            # offline; for OpenAI use:
    # provider: openai
    # model: gpt-4o-mini
    # api_key_env: OPENAI_API_KEY
    # pricing: {{input_per_mtok: 0.15, output_per_mtok: 0.60}}

limits:
  max_requests: 100
  max_cost_usd: 1.00

tasks:
  - name: describe
    agent: writer
    for_each: {{file: items.jsonl}}
    prompt: |
      Describe {{{{ item.name }}}} in {{{{ vars.style }}}}.
    output: descriptions/{{{{ item.id }}}}.md
"""

ITEMS = """\
{"id": "tea", "name": "a cup of tea"}
{"id": "bike", "name": "a bicycle"}
"""

GITIGNORE = """\
# ralph's response cache and outputs
.ralph/
out/
"""


def scaffold(folder: Path, *, force: bool = False) -> list[Path]:
    """Write the starter files into `folder`; refuse to overwrite unless `force`."""
    # quoted in RECIPE: YAML reads a folder called 2024, true or 0x10 as a number or boolean
    name = _slug(folder.resolve().name)
    files = {
        folder / "recipe.yaml": RECIPE.format(name=name),
        folder / "items.jsonl": ITEMS,
        folder / ".gitignore": GITIGNORE,
        folder / "recipe.schema.json": schema_text(),
    }
    existing = [str(path) for path in files if path.exists()]
    if existing and not force:
        raise UsageError(f"not overwriting {', '.join(existing)} (use --force)")
    for path, text in files.items():
        write_atomic(path, text)
    return list(files)


def _slug(text: str) -> str:
    """A recipe name from a folder name: lowercase letters, digits and dashes."""
    cleaned = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
    while "--" in cleaned:
        cleaned = cleaned.replace("--", "-")
    return cleaned if cleaned and cleaned[0].isalnum() and cleaned.isascii() else "my-recipe"
