"""Building loop recipes around the scripted agent (agent.py) and reading what a loop left."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import Result, apply_args

FIXTURES = Path(__file__).resolve().parent
AGENT = FIXTURES / "agent.py"
EXISTS = FIXTURES / "exists.py"
PROMPT = (
    "This is iteration {{ iteration }}.\n"
    "When everything is done, print LOOP_COMPLETE on a line of its own.\n"
)


@dataclass(frozen=True)
class LoopCase:
    """A loop recipe in `root`: the agent works in `root/work`, writes go to `root/out`."""

    root: Path

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def out(self) -> Path:
        return self.root / "out"

    def apply(self, ralph: Callable[..., Result], *extra: str) -> Result:
        return ralph(
            *apply_args(
                self.recipe,
                self.out,
                "--log-format",
                "json",
                "--log-file",
                str(self.root / "log.jsonl"),
                "--summary-file",
                str(self.root / "run.json"),
                *extra,
            )
        )

    def calls(self) -> list[int]:
        """The iterations the agent was called for, in order, over every run."""
        log = self.root / "calls.log"
        return [int(n) for n in log.read_text().split()] if log.exists() else []

    def lines(self, task: str = "build") -> list[dict[str, Any]]:
        text = (self.out / f"{task}.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines()]

    def summary(self, task: str = "build") -> dict[str, Any]:
        tasks: dict[str, Any] = json.loads((self.root / "run.json").read_text())["tasks"]
        return tasks[task]  # type: ignore[no-any-return]

    def events(self, name: str) -> list[dict[str, Any]]:
        records = map(json.loads, (self.root / "log.jsonl").read_text().splitlines())
        return [r for r in records if r.get("event") == name]

    def iterations(self, item: str | None = None) -> Path:
        base = self.out / "build"
        return (base / item if item else base) / "iterations"


def loop_case(
    root: Path,
    plan: Mapping[str, Any],
    loop: str,
    *,
    prompt: str = PROMPT,
    task_extra: str = "",
    agent_extra: str = "",
    limits: str = "",
) -> LoopCase:
    """A recipe with task `build`: the scripted agent following `plan`, under `loop:` (YAML)."""
    case = LoopCase(root)
    case.work.mkdir(exist_ok=True)
    (root / "plan.json").write_text(json.dumps(plan))
    (root / "prompt.txt").write_text(prompt)
    loop_lines = textwrap.indent(textwrap.dedent(loop).strip(), " " * 6)
    recipe = f"""\
version: 1
name: loop-test
agents:
  coder:
    provider: command
    command: [{sys.executable}, {AGENT}, {root / "plan.json"}]
    workdir: work
    retries: {{attempts: 1}}
    {agent_extra}
limits: {{{limits}}}
tasks:
  - name: build
    agent: coder
    prompt_file: prompt.txt
    {task_extra}
    loop:
{loop_lines}
"""
    case.recipe.write_text(recipe)
    return case
