"""The progress line shows on a terminal, and only there."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from tests.conftest import write_recipe

RECIPE = """
    version: 1
    name: progress
    agents: {local: {provider: echo}}
    tasks:
      - name: greet
        agent: local
        for_each: [{id: a}, {id: b}, {id: c}]
        prompt: "hi {{ item.id }}"
"""


def run(tmp_path: Path, *, terminal: bool, recipe_text: str = RECIPE, code: int = 0) -> str:
    recipe = write_recipe(tmp_path, recipe_text)
    command = [sys.executable, "-m", "ralph", "apply", str(recipe), "--out", str(tmp_path / "out")]
    if not terminal:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        assert done.returncode == code, done.stderr
        return done.stderr
    main, side = pty.openpty()
    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=side, stderr=side) as process:
        os.close(side)
        chunks = []
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=30) == code
    os.close(main)
    return b"".join(chunks).decode("utf-8", "replace")


def test_progress_on_a_terminal(tmp_path: Path) -> None:
    screen = run(tmp_path, terminal=True)
    assert "greet" in screen and "3 done · 0 cached · 0 failed" in screen
    assert "items/s" in screen and "tokens · $0.0000" in screen


def test_no_progress_when_not_a_terminal(tmp_path: Path) -> None:
    assert "items/s" not in run(tmp_path, terminal=False)


def test_an_item_whose_output_cannot_be_written_shows_as_failed(tmp_path: Path) -> None:
    (tmp_path / "out" / "b.md").mkdir(parents=True)  # a folder where b's output should go
    text = RECIPE.replace(
        'prompt: "hi {{ item.id }}"',
        'prompt: "hi {{ item.id }}"\n        output: "{{ item.id }}.md"',
    )
    screen = run(tmp_path, terminal=True, recipe_text=text, code=3)
    assert "2 done · 0 cached · 1 failed" in screen
