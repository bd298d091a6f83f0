"""Summaries read back: `ralph summary merge` joins the shards of one split, each once, and it
and `ralph plan --against` refuse a file that is not a run summary, saying which field is wrong."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Result, apply_args, write_recipe

ITEMS = "".join(json.dumps({"id": f"i{n}"}) + "\n" for n in range(12))


def echo_recipe(tmp_path: Path) -> Path:
    return write_recipe(
        tmp_path,
        """
        version: 1
        name: merge-test
        agents:
          local: {provider: echo}
        tasks:
          - name: greet
            agent: local
            for_each: {file: items.jsonl}
            prompt: "Hello {{ item.id }}"
        """,
        **{"items.jsonl": ITEMS},
    )


def run_summary(ralph: Callable[..., Result], recipe: Path, name: str, *extra: str) -> Path:
    """The --summary-file of one run of `recipe` (with `extra` options), as `name`.json."""
    summary = recipe.parent / f"{name}.json"
    result = ralph(
        *apply_args(recipe, recipe.parent / "out", "--summary-file", str(summary), *extra)
    )
    assert result.code == 0, result.out + result.err
    return summary


def shards(ralph: Callable[..., Result], recipe: Path, count: int) -> list[Path]:
    return [
        run_summary(ralph, recipe, f"run-{k}", "--shard", f"{k}/{count}")
        for k in range(1, count + 1)
    ]


DELETE = object()


def edited(path: Path, keys: tuple[str, ...], value: Any) -> Path:
    """The summary at `path` with the value at `keys` set to `value` (or deleted; no keys: the
    whole document replaced)."""
    data = json.loads(path.read_text())
    if not keys:
        data = value
    else:
        parent = data
        for key in keys[:-1]:
            parent = parent[key]
        if value is DELETE:
            del parent[keys[-1]]
        else:
            parent[keys[-1]] = value
    path.write_text(json.dumps(data))
    return path


MALFORMED = [
    ((), {"tasks": {}, "agents": {}}, "missing required key 'recipe'"),
    ((), [1, 2], "expected a mapping, got a list"),
    (
        ("tasks", "greet", "failed"),
        "1",
        'tasks.greet.failed: expected a whole number, got the string "1"',
    ),
    (("tasks", "greet", "done"), -1, "tasks.greet.done: expected at least 0, got the number -1"),
    (("agents", "local", "latency_ms"), DELETE, "agents.local: missing required key 'latency_ms'"),
    (("tasks", "greet", "failures"), DELETE, "tasks.greet: missing required key 'failures'"),
    (("agents", "local", "retries"), [], "agents.local.retries: expected a mapping, got a list"),
    (("totals", "cost_usd"), "x", 'totals.cost_usd: expected a number or null, got the string "x"'),
    (("tasks", "greet"), None, "tasks.greet: expected a mapping, got null"),
    (("tasks", "greet", "prompts"), 5, "tasks.greet.prompts: expected a mapping, got the number 5"),
    (("shard",), "3/2", 'shard: expected a shard K/N with K from 1 to N, got the string "3/2"'),
    (
        ("shard",),
        "1/" + "9" * 5000,
        f'shard: expected a shard K/N with K from 1 to N, got the string "1/{"9" * 55}..."',
    ),
]


@pytest.mark.parametrize(("keys", "value", "problem"), MALFORMED)
@pytest.mark.parametrize("command", ["merge", "against"])
def test_a_malformed_summary_is_named_with_the_field(
    ralph: Callable[..., Result],
    tmp_path: Path,
    command: str,
    keys: tuple[str, ...],
    value: Any,
    problem: str,
) -> None:
    recipe = echo_recipe(tmp_path)
    summary = edited(run_summary(ralph, recipe, "run"), keys, value)
    if command == "merge":
        result = ralph("summary", "merge", str(summary))
    else:
        result = ralph(
            "plan", str(recipe), "--against", str(summary), "-o", str(tmp_path / "p.json")
        )
    assert (result.code, result.err) == (
        2,
        f"error: {summary}: not a ralph run summary: {problem}\n",
    )
    assert not (tmp_path / "p.json").exists()  # refused before any work


def test_unknown_costs_stay_unknown(ralph: Callable[..., Result], tmp_path: Path) -> None:
    # a run whose pricing gave no number wrote its costs as null
    recipe = echo_recipe(tmp_path)
    one, two = shards(ralph, recipe, 2)
    for path in (one, two):
        edited(path, ("agents", "local", "cost_usd"), None)
        edited(path, ("totals", "cost_usd"), None)
    merged_file = tmp_path / "merged.json"
    result = ralph("summary", "merge", str(one), str(two), "-o", str(merged_file))
    assert result.code == 0, result.err
    merged = json.loads(merged_file.read_text())
    assert merged["agents"]["local"]["cost_usd"] is None
    assert merged["totals"]["cost_usd"] is None
    against = ralph("plan", str(recipe), "--against", str(one))
    assert against.code == 0, against.err
    assert "cost: last run unknown (its pricing gave no number); this plan $0.0000" in against.out
    data = json.loads(ralph("plan", str(recipe), "--against", str(one), "-f", "json").out)
    assert data["changes"]["last_cost_usd"] is None
    assert data["changes"]["cost_delta_usd"] is None


def test_the_same_shard_twice_is_refused(ralph: Callable[..., Result], tmp_path: Path) -> None:
    recipe = echo_recipe(tmp_path)
    one, two = shards(ralph, recipe, 2)
    result = ralph("summary", "merge", str(one), str(two), str(one))
    assert result.code == 1
    assert result.err == (
        f"error: shard 1/2 is given more than once ({one}, {one}): "
        "its counts would be added twice\n"
    )
    whole = run_summary(ralph, recipe, "whole")
    result = ralph("summary", "merge", str(whole), str(whole))
    assert result.code == 1
    assert "a whole (unsharded) run is given more than once" in result.err
    result = ralph("summary", "merge", str(whole), str(one), str(two))
    assert result.code == 1
    assert f"{whole} is a whole run, not a shard" in result.err


def test_shards_of_different_splits_are_refused(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = echo_recipe(tmp_path)
    half = run_summary(ralph, recipe, "half", "--shard", "1/2")
    third = run_summary(ralph, recipe, "third", "--shard", "1/3")
    result = ralph("summary", "merge", str(half), str(third))
    assert result.code == 1
    assert result.err == (
        "error: these summaries are shards of different splits: "
        f"{half} is shard 1/2, {third} is shard 1/3\n"
    )


def test_summaries_of_different_recipes_are_refused(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = echo_recipe(tmp_path)
    one, two = shards(ralph, recipe, 2)
    edited(two, ("name",), "other")
    result = ralph("summary", "merge", str(one), str(two))
    assert result.code == 1
    assert "different recipes: merge-test (recipe.yaml), other (recipe.yaml)" in result.err
    edited(two, ("name",), "merge-test")
    edited(two, ("recipe",), "/elsewhere/other.yaml")  # of the same name, in another file
    result = ralph("summary", "merge", str(one), str(two))
    assert "different recipes: merge-test (other.yaml), merge-test (recipe.yaml)" in result.err
    edited(two, ("recipe",), "/another/machine/recipe.yaml")  # the same file, elsewhere
    assert ralph("summary", "merge", str(one), str(two)).code == 0


@pytest.mark.parametrize(("field", "value"), [("profile", "prod"), ("overrides", ["tone=x"])])
def test_shards_run_with_other_settings_are_refused(
    ralph: Callable[..., Result], tmp_path: Path, field: str, value: object
) -> None:
    one, two = shards(ralph, echo_recipe(tmp_path), 2)
    edited(two, (field,), value)
    result = ralph("summary", "merge", str(one), str(two))
    assert result.code == 1
    shown = repr(value)  # and which summary has which
    assert "these summaries are of runs with different" in result.err
    assert f"{shown} in {two}" in result.err and f"None in {one}" in result.err


def test_missing_shards_need_partial_and_are_named(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = echo_recipe(tmp_path)
    one, _, three = shards(ralph, recipe, 3)
    result = ralph("summary", "merge", str(one), str(three))
    assert result.code == 1
    assert result.err == (
        "error: shard 2/3 is missing: give its summary too, or pass --partial to merge without it\n"
    )
    merged_file = tmp_path / "merged.json"
    result = ralph("summary", "merge", str(one), str(three), "--partial", "-o", str(merged_file))
    assert result.code == 0, result.err
    assert result.err == "warning: shards missing: 2/3; their items are not counted\n"
    merged = json.loads(merged_file.read_text())
    assert merged["shards"] == ["1/3", "3/3"]
    assert merged["missing_shards"] == ["2/3"]
    whole = json.loads(run_summary(ralph, recipe, "whole").read_text())
    assert merged["tasks"]["greet"]["items"] < whole["tasks"]["greet"]["items"]


def test_a_complete_merge_lists_no_missing_shard(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = echo_recipe(tmp_path)
    merged_file = tmp_path / "merged.json"
    result = ralph("summary", "merge", *map(str, shards(ralph, recipe, 3)), "-o", str(merged_file))
    assert (result.code, result.err) == (0, "")
    merged = json.loads(merged_file.read_text())
    assert merged["missing_shards"] == []
    assert merged["tasks"]["greet"]["items"] == 12
    assert merged["agents"]["local"]["latency_ms"]["max"] is not None  # 0.0 is a latency too
