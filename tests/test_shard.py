"""Sharded runs: every item in exactly one shard, and merged shard summaries equal one run's."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ralph.errors import UsageError
from ralph.shard import Shard, parse_shard
from tests.conftest import Result, apply_args, write_recipe

ITEMS = [{"id": n, "text": f"item number {n}"} for n in range(10_000)]


@pytest.mark.parametrize("count", range(1, 8))
def test_shards_are_disjoint_complete_and_independent_of_order(count: int) -> None:
    shards = [Shard(k, count) for k in range(1, count + 1)]
    owners = [[s.index for s in shards if s.owns(item)] for item in ITEMS]
    assert all(len(o) == 1 for o in owners), "every item in exactly one shard"
    sizes = [sum(1 for o in owners if o == [k]) for k in range(1, count + 1)]
    assert min(sizes) > 0.8 * len(ITEMS) / count, f"unbalanced shards: {sizes}"
    shuffled = random.Random(count).sample(ITEMS, len(ITEMS))
    again = {item["id"]: next(s.index for s in shards if s.owns(item)) for item in shuffled}
    assert [again[item["id"]] for item in ITEMS] == [o[0] for o in owners]


def test_items_json_cannot_sort_still_have_an_owner() -> None:
    # YAML keys of several types cannot be sorted together; a lone surrogate is not UTF-8
    items = [{1: "a", "b": "c"}, {(1, 2): "tuple key"}, {"id": "\ud800"}]
    for item in items:
        assert sum(Shard(k, 3).owns(item) for k in (1, 2, 3)) == 1
    shards = [Shard(k, 5) for k in range(1, 6)]
    owner = [s.owns({1: "a", "b": "c"}) for s in shards]
    assert owner == [s.owns({"b": "c", 1: "a"}) for s in shards]  # whatever the key order


def test_a_yaml_set_in_an_item_has_the_same_owner_in_every_process() -> None:
    # a set is iterated in an order that depends on the process's hash seed
    code = (
        "from ralph.shard import canonical\n"
        "print(canonical({'tags': {'alpha', 'beta', 'gamma', 'delta', 'epsilon'}}).hex())"
    )
    seen = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in range(4)
    }
    assert len(seen) == 1


def test_a_csv_row_of_the_wrong_width_is_an_items_error_with_shard(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = write_recipe(
        tmp_path,
        """
        version: 1
        name: shard-csv
        agents:
          local: {provider: echo}
        tasks:
          - name: answer
            agent: local
            for_each: {file: items.csv}
            prompt: "Say {{ item.name }}"
        """,
        **{"items.csv": "id,name\n1,x,extra\n2,y\n"},
    )
    result = ralph(*apply_args(recipe, tmp_path / "out", "--shard", "1/2"))
    assert result.code == 1, result.err
    assert "items.csv:2: not valid CSV: row has 3 fields, the header has 2" in result.err


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0", "-1/2", "1/" + "9" * 5000])
def test_bad_shard_specs_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="--shard"):
        parse_shard(text)


def sharded_recipe(tmp_path: Path) -> Path:
    lines = "\n".join(json.dumps(item) for item in ITEMS[:40]) + "\n"
    return write_recipe(
        tmp_path,
        """
        version: 1
        name: shard-test
        agents:
          local: {provider: echo}
        tasks:
          - name: answer
            agent: local
            for_each: {file: items.jsonl}
            prompt: "Say {{ item.text }}"
          - name: fail-some
            agent: local
            for_each: {file: items.jsonl}
            prompt: "{{ item.text if item.id % 7 else item.missing }}"
        """,
        **{"items.jsonl": lines},
    )


def counts(summary: dict[str, Any]) -> dict[str, Any]:
    """What must match between runs: everything but timings."""
    agents = {
        name: {k: v for k, v in figures.items() if k != "latency_ms"}
        for name, figures in summary["agents"].items()
    }
    tasks = {
        name: {k: v for k, v in figures.items() if k != "wall_s"}
        for name, figures in summary["tasks"].items()
    }
    keep = ("status", "exit_code", "stopped_by", "totals")
    return {**{k: summary[k] for k in keep}, "tasks": tasks, "agents": agents}


def test_merged_shard_summaries_equal_a_single_run(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = sharded_recipe(tmp_path)

    def apply(name: str, *extra: str) -> dict[str, Any]:
        summary = tmp_path / f"{name}.json"
        result = ralph(
            *apply_args(
                recipe,
                tmp_path / "out",
                "--cache-dir",
                str(tmp_path / f"cache-{name}"),
                "--summary-file",
                str(summary),
                *extra,
            )
        )
        loaded: dict[str, Any] = json.loads(summary.read_text())
        assert result.code == loaded["exit_code"] in (0, 3), result.out
        return loaded

    single = apply("single")
    assert single["exit_code"] == 3  # the items with id % 7 == 0 fail to render
    shards = [apply(f"shard-{k}", "--shard", f"{k}/3") for k in (1, 2, 3)]
    assert [s["shard"] for s in shards] == ["1/3", "2/3", "3/3"]
    assert sum(s["tasks"]["answer"]["done"] for s in shards) == 40
    files = [str(tmp_path / f"shard-{k}.json") for k in (1, 2, 3)]
    merged_file = tmp_path / "merged.json"
    result = ralph("summary", "merge", *files, "-o", str(merged_file))
    assert result.code == 3
    merged = json.loads(merged_file.read_text())
    assert counts(merged) == counts(single)
    assert merged["shards"] == ["1/3", "2/3", "3/3"]
    for name, task in merged["tasks"].items():  # shards run side by side: the longest counts
        timings = [s["tasks"][name]["wall_s"] for s in shards]
        assert task["wall_s"] == max(timings) and all(
            0 <= t <= s["wall_s"] for t, s in zip(timings, shards, strict=True)
        )
    jsonl = sorted(p.name for p in (tmp_path / "out").glob("answer*.jsonl"))
    assert jsonl == ["answer.jsonl", *(f"answer.shard-{k}-of-3.jsonl" for k in (1, 2, 3))]
    lines = [
        json.loads(line)["index"]
        for k in (1, 2, 3)
        for line in (tmp_path / "out" / f"answer.shard-{k}-of-3.jsonl").read_text().splitlines()
    ]
    assert sorted(lines) == list(range(40))


def test_plan_of_a_shard(ralph: Callable[..., Result], tmp_path: Path) -> None:
    recipe = sharded_recipe(tmp_path)
    sizes = []
    for k in (1, 2):
        result = ralph("plan", str(recipe), "--shard", f"{k}/2", "--format", "json")
        sizes.append(json.loads(result.out)["tasks"][0]["items"])
    assert sum(sizes) == 40 and all(sizes)


def test_merging_summaries_of_different_recipes_is_refused(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    base = {"recipe": "/a/x.yaml", "name": "x", "tasks": {}, "agents": {}, "exit_code": 0}
    one.write_text(json.dumps(base))
    two.write_text(json.dumps({**base, "recipe": "/a/y.yaml", "name": "y"}))
    result = ralph("summary", "merge", str(one), str(two))
    assert result.code == 1
    assert "different recipes: x (x.yaml), y (y.yaml)" in result.err
    (tmp_path / "bad.json").write_text("{")
    assert ralph("summary", "merge", str(tmp_path / "bad.json")).code == 2
