"""`ralph summary merge`: the summaries of shards of one run joined into the run's summary.

Counts add up exactly, so a merged summary equals a single machine's figures. Latency
percentiles cannot be merged from percentiles: the merge keeps the maximum and leaves p50/p95
empty rather than invent them. The shards must be those of one `--shard K/N` split, each once;
a missing shard is refused unless the merge is asked to be partial, and then named.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import PurePath
from typing import Any

from ralph.errors import RalphError
from ralph.observe.summary import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_LIMIT, EXIT_OK, status_text

_TASK_COUNTS = ("items", "done", "cached", "failed", "not_started", "pending")
_AGENT_COUNTS = ("requests", "cache_hits", "input_tokens", "output_tokens")

Named = tuple[str, dict[str, Any]]
"""A summary (checked by `read_summary`) and the file it came from, for messages."""


class MergeError(RalphError):
    """Summaries that cannot be joined: of different recipes or splits, repeated, incomplete."""


def merge_summaries(named: Sequence[Named], *, partial: bool = False) -> dict[str, Any]:
    """One summary of the shards in `named`; with `partial`, missing shards are only listed."""
    if not named:
        raise MergeError("nothing to merge: name the shard summaries (run.json files)")
    summaries = [summary for _, summary in named]
    _same_run(named)
    missing = _missing_shards(named)
    if missing and not partial:
        raise MergeError(
            f"{_shards_text(missing)} missing: give {'its' if len(missing) == 1 else 'their'} "
            "summary too, or pass --partial to merge without "
            f"{'it' if len(missing) == 1 else 'them'}"
        )
    tasks = _merge_named(s["tasks"] for s in summaries)
    agents = _merge_named((s["agents"] for s in summaries), agent=True)
    stopped_by = next((s["stopped_by"] for s in summaries if s.get("stopped_by")), None)
    exit_code = _exit_code(summaries, tasks, stopped_by)
    first = summaries[0]
    return {
        "recipe": first["recipe"],
        "name": first.get("name", ""),
        "profile": first.get("profile"),
        "overrides": first.get("overrides", []),
        "shard": None,
        "shards": [s.get("shard") for s in summaries],
        "missing_shards": missing,
        "status": status_text(exit_code, stopped_by),
        "exit_code": exit_code,
        "stopped_by": stopped_by,
        "wall_s": max(s.get("wall_s", 0.0) for s in summaries),
        "totals": _totals(tasks, agents),
        "tasks": tasks,
        "agents": agents,
    }


def _same_run(named: Sequence[Named]) -> None:
    """Shards of one run: the same recipe (its name and file name: machines may keep it in
    different folders), the same profile and the same --set values."""
    summaries = [summary for _, summary in named]
    recipes = {(str(s.get("name", "")), PurePath(s["recipe"]).name) for s in summaries}
    if len(recipes) > 1:
        names = sorted({f"{name} ({file})" if name else file for name, file in recipes})
        raise MergeError(f"these summaries are of different recipes: {', '.join(names)}")
    for field, what in (("profile", "profiles"), ("overrides", "--set values")):
        files: dict[str, list[str]] = {}
        for path, summary in named:
            files.setdefault(repr(summary.get(field) or None), []).append(path)
        if len(files) > 1:  # which summary has which, so the odd one can be found
            shown = "; ".join(f"{value} in {', '.join(paths)}" for value, paths in files.items())
            raise MergeError(f"these summaries are of runs with different {what}: {shown}")


def _missing_shards(named: Sequence[Named]) -> list[str]:
    """The shards of the split that `named` lacks; refuses repeats and mixed splits."""
    files: dict[str | None, list[str]] = {}
    for path, summary in named:
        files.setdefault(summary.get("shard"), []).append(path)
    for label, paths in files.items():
        if len(paths) > 1:
            what = f"shard {label} is" if label else "a whole (unsharded) run is"
            raise MergeError(
                f"{what} given more than once ({', '.join(paths)}): its counts would be added twice"
            )
    if None in files and len(files) > 1:
        raise MergeError(
            f"{files[None][0]} is a whole run, not a shard: merge the shards of one run only"
        )
    counts = {label.split("/")[1] for label in files if label is not None}
    if len(counts) > 1:
        given = ", ".join(f"{paths[0]} is shard {label}" for label, paths in files.items())
        raise MergeError(f"these summaries are shards of different splits: {given}")
    count = int(counts.pop()) if counts else 0
    return [f"{k}/{count}" for k in range(1, count + 1) if f"{k}/{count}" not in files]


def _shards_text(labels: Sequence[str]) -> str:
    return f"shard {labels[0]} is" if len(labels) == 1 else f"shards {', '.join(labels)} are"


def _exit_code(
    summaries: Sequence[dict[str, Any]], tasks: dict[str, Any], stopped_by: str | None
) -> int:
    if any(s.get("exit_code") == EXIT_INTERRUPTED for s in summaries):
        return EXIT_INTERRUPTED
    if stopped_by is not None:
        return EXIT_LIMIT
    return EXIT_FAILED if any(t["failed"] for t in tasks.values()) else EXIT_OK


def _merge_named(parts: Iterable[dict[str, Any]], *, agent: bool = False) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts:
        for name, figures in part.items():
            if name in merged:
                merged[name] = _add(merged[name], figures, agent)
            else:
                merged[name] = {**figures, "cost_usd": _cost(figures)} if agent else dict(figures)
    return merged


def _add(left: dict[str, Any], right: dict[str, Any], agent: bool) -> dict[str, Any]:
    out = dict(left)
    for key in _AGENT_COUNTS if agent else _TASK_COUNTS:
        out[key] = left.get(key, 0) + right.get(key, 0)
    if agent:
        out["cost_usd"] = round(_cost(left) + _cost(right), 6)
        for key in ("retries", "statuses"):
            out[key] = _counts(left.get(key), right.get(key))
        maxima = (left["latency_ms"]["max"], right["latency_ms"]["max"])
        highest = [v for v in maxima if v is not None]  # 0.0 is a latency (an echo agent's)
        out["latency_ms"] = {"p50": None, "p95": None, "max": max(highest, default=None)}
        return out
    out["failures"] = _counts(left.get("failures"), right.get("failures"))
    out["wall_s"] = max(
        left.get("wall_s", 0.0), right.get("wall_s", 0.0)
    )  # shards run side by side
    if "prompts" in left or "prompts" in right:
        out["prompts"] = {**left.get("prompts", {}), **right.get("prompts", {})}
    if "loop" in left or "loop" in right:
        loops = [part.get("loop", {}) for part in (left, right)]
        out["loop"] = {
            "iterations": sum(loop.get("iterations", 0) for loop in loops),
            "stops": _counts(*(loop.get("stops") for loop in loops)),
        }
    return out


def _counts(*parts: dict[str, int] | None) -> dict[str, int]:
    total: Counter[str] = Counter()
    for part in parts:
        total.update(part or {})
    return dict(total.most_common())


def _totals(tasks: dict[str, Any], agents: dict[str, Any]) -> dict[str, Any]:
    figures = agents.values()
    return {
        "requests": sum(a["requests"] for a in figures),
        "cache_hits": sum(a["cache_hits"] for a in figures),
        "retries": sum(sum(a["retries"].values()) for a in figures),
        "failures": sum(t["failed"] for t in tasks.values()),
        "input_tokens": sum(a["input_tokens"] for a in figures),
        "output_tokens": sum(a["output_tokens"] for a in figures),
        "cost_usd": round(sum(_cost(a) for a in figures), 6),
    }


def _cost(figures: dict[str, Any]) -> float:
    # a summary writes a cost it could not compute (NaN pricing) as null: as NaN it stays
    # unknown through the sums, and is written as null again
    cost = figures["cost_usd"]
    return math.nan if cost is None else float(cost)
