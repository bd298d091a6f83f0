"""The shipped recipes and examples are valid, and the quickstart runs end to end offline."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ROOT, Result


def test_shipped_recipes_and_examples_validate(ralph: Callable[..., Result]) -> None:
    result = ralph("validate", str(ROOT / "recipes"), str(ROOT / "examples"))
    assert result.code == 0, result.out
    checked = int(result.out.strip().splitlines()[-1].split()[0])
    assert checked >= 4 and result.out.strip().endswith("recipes checked, 0 invalid, 0 errors")


def test_quickstart_runs_offline(ralph: Callable[..., Result], tmp_path: Path) -> None:
    recipe = ROOT / "examples" / "quickstart" / "recipe.yaml"
    out = tmp_path / "out"
    summary = tmp_path / "run.json"
    args = ["apply", str(recipe), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    result = ralph(*args, "--quiet", "--summary-file", str(summary))
    assert result.code == 0, result.out
    assert sorted(p.name for p in (out / "greetings").iterdir()) == [
        "ada.md",
        "grace.md",
        "linus.md",
    ]
    assert (out / "greetings" / "ada.md").read_text().startswith("Hello, Ada!")
    digest = (out / "digest.md").read_text()
    assert digest.startswith("Collect the greetings into one digest:")
    totals = json.loads(summary.read_text())["totals"]
    assert totals["requests"] == 4 and totals["cache_hits"] == 0
    again = ralph(*args, "--quiet", "--summary-file", str(summary))
    assert again.code == 0
    assert json.loads(summary.read_text())["totals"]["cache_hits"] == 4
