"""Figures of a run, gathered as it goes and summarised at the end (also as run.json)."""

from __future__ import annotations

import json
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ralph.errors import UsageError
from ralph.recipe.positions import dotted
from ralph.recipe.schema import type_name

EXIT_OK, EXIT_FAILED, EXIT_LIMIT, EXIT_INTERRUPTED = 0, 3, 4, 130


@dataclass
class AgentStats:
    provider: str
    model: str | None
    requests: int = 0
    cache_hits: int = 0
    cache_misses: int = 0  # attempts sent because the cache had no answer (not with it off)
    retries: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)  # attempts by outcome: ok, 5xx, ...
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "provider": self.provider,
            "model": self.model,
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "retries": dict(sorted(self.retries.items())),
            "statuses": dict(sorted(self.statuses.items())),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "latency_ms": {
                "p50": _percentile(lat, 50),
                "p95": _percentile(lat, 95),
                "max": round(lat[-1], 1) if lat else None,
            },
        }


@dataclass
class TaskStats:
    items: int = 0  # seen in the item stream, including those a stop kept from starting
    done: int = 0
    cached: int = 0
    failed: int = 0
    not_started: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    prompts: dict[str, str] = field(default_factory=dict)  # item → prompt key, for plan --against
    iterations: int = 0  # loop tasks: iterations run, and how each item's loop ended
    loop_stops: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0  # from its first item to its last result

    def as_dict(self) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "items": self.items,
            "done": self.done,
            "cached": self.cached,
            "failed": self.failed,
            "not_started": self.not_started,
            "pending": self.items - self.done - self.failed - self.not_started,
            "failures": dict(self.failures.most_common()),
            "wall_s": round(self.wall_s, 3),
        }
        if self.prompts:
            figures["prompts"] = dict(self.prompts)
        if self.iterations or self.loop_stops:
            figures["loop"] = {
                "iterations": self.iterations,
                "stops": dict(self.loop_stops.most_common()),
            }
        return figures


@dataclass
class RunStats:
    recipe: str
    name: str = ""  # the recipe's name:, as people call the run
    profile: str | None = None
    overrides: tuple[str, ...] = ()
    started: float = field(default_factory=time.monotonic)
    wall_s: float = 0.0
    stopped_by: str | None = None
    interrupted: bool = False
    finished: bool = False  # every task ran (or a stop ended the run) and outputs are flushed
    shard: str | None = None  # "K/N" when the run took one shard of the items
    tasks: dict[str, TaskStats] = field(default_factory=dict)
    agents: dict[str, AgentStats] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        """False once the run stopped on a limit or Ctrl-C, or finished with failed items."""
        if self.interrupted or self.stopped_by is not None:
            return False
        return not (self.finished and self.exit_code != EXIT_OK)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.stopped_by is not None:
            return EXIT_LIMIT
        if any(t.failed for t in self.tasks.values()):
            return EXIT_FAILED
        return EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        agents = self.agents.values()
        return {
            "recipe": self.recipe,
            "name": self.name,
            "profile": self.profile,
            "overrides": list(self.overrides),
            "shard": self.shard,
            # while the run goes on (--serve's /status): no verdict yet, and the time so far
            "status": self.status if self.finished else "running",
            "exit_code": self.exit_code if self.finished else None,
            "stopped_by": self.stopped_by,
            "wall_s": round(self.wall_s if self.finished else self.elapsed_s(), 3),
            "totals": {
                "requests": sum(a.requests for a in agents),
                "cache_hits": sum(a.cache_hits for a in agents),
                "retries": sum(sum(a.retries.values()) for a in agents),
                "failures": sum(t.failed for t in self.tasks.values()),
                "input_tokens": sum(a.input_tokens for a in agents),
                "output_tokens": sum(a.output_tokens for a in agents),
                "cost_usd": round(sum(a.cost_usd for a in agents), 6),
            },
            "tasks": {name: t.as_dict() for name, t in self.tasks.items()},
            "agents": {name: a.as_dict() for name, a in self.agents.items()},
        }

    @property
    def status(self) -> str:
        return status_text(self.exit_code, self.stopped_by)

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


def status_text(exit_code: int, stopped_by: str | None) -> str:
    return {
        EXIT_OK: "done",
        EXIT_FAILED: "some items failed",
        EXIT_LIMIT: f"stopped by limit {stopped_by}",
        EXIT_INTERRUPTED: "interrupted",
    }[exit_code]


def _percentile(ordered: list[float], pct: int) -> float | None:
    if not ordered:
        return None
    if len(ordered) == 1:
        return round(ordered[0], 1)
    return round(statistics.quantiles(ordered, n=100, method="inclusive")[pct - 1], 1)


_COUNT = {"type": "integer", "minimum": 0}
_TALLY = {"type": "object", "additionalProperties": _COUNT}
_SECONDS = {"type": "number", "minimum": 0}
_COST = {"type": ["number", "null"]}  # null: a cost ralph could not compute (NaN pricing)
SHARD_LABEL = {
    "type": ["string", "null"],
    "format": "shard",
    "x-error": "a shard K/N with K from 1 to N",
}

_TASK = {
    "type": "object",
    "required": ["items", "done", "cached", "failed", "not_started", "failures"],
    "properties": {
        **{key: _COUNT for key in ("items", "done", "cached", "failed", "not_started")},
        "pending": {"type": "integer"},
        "failures": _TALLY,
        "wall_s": _SECONDS,
        "prompts": {"type": "object", "additionalProperties": {"type": "string"}},
        "loop": {
            "type": "object",
            "required": ["iterations", "stops"],
            "properties": {"iterations": _COUNT, "stops": _TALLY},
        },
    },
}
_LATENCY = {"type": ["number", "null"]}
_AGENT = {
    "type": "object",
    "required": [
        "provider",
        "requests",
        "cache_hits",
        "retries",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "latency_ms",
    ],
    "properties": {
        "provider": {"type": "string"},
        "model": {"type": ["string", "null"]},
        **{k: _COUNT for k in ("requests", "cache_hits", "input_tokens", "output_tokens")},
        "retries": _TALLY,
        "statuses": _TALLY,
        "cost_usd": _COST,
        "latency_ms": {
            "type": "object",
            "required": ["p50", "p95", "max"],
            "properties": {"p50": _LATENCY, "p95": _LATENCY, "max": _LATENCY},
        },
    },
}
SUMMARY_SCHEMA = {
    "type": "object",
    "required": ["recipe", "tasks", "agents"],
    "properties": {
        "recipe": {"type": "string"},
        "name": {"type": "string"},
        "profile": {"type": ["string", "null"]},
        "overrides": {"type": "array", "items": {"type": "string"}},
        "shard": SHARD_LABEL,
        "exit_code": {"type": "integer"},
        "stopped_by": {"type": ["string", "null"]},
        "wall_s": _SECONDS,
        "totals": {"type": "object", "properties": {"cost_usd": _COST}},
        "tasks": {"type": "object", "additionalProperties": _TASK},
        "agents": {"type": "object", "additionalProperties": _AGENT},
    },
}
"""The fields of run.json that `summary merge` and `plan --against` read."""


def read_summary(path: Path) -> dict[str, Any]:
    """A run summary written by `--summary-file`, its shape checked before anything reads it."""
    try:
        summary = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UsageError(f"{path}: cannot read the run summary: {exc}") from None
    problem = shape_problem(summary, SUMMARY_SCHEMA)
    if problem is not None:
        raise UsageError(f"{path}: not a ralph run summary: {problem}")
    checked: dict[str, Any] = summary
    return checked


def shape_problem(data: Any, schema: dict[str, Any]) -> str | None:
    """What is wrong with JSON `data` against `schema`, as `path: expected ..., got ...`; a
    schema's own `x-error` names what a value failing its pattern or format should be."""
    from jsonschema import Draft202012Validator, FormatChecker
    from jsonschema.exceptions import best_match

    formats = FormatChecker(formats=())
    formats.checks("shard")(_is_shard_label)
    error = best_match(Draft202012Validator(schema, format_checker=formats).iter_errors(data))
    if error is None:
        return None
    path = dotted(tuple(error.absolute_path))
    where = f"{path}: " if path else ""
    wanted, value = error.validator_value, error.instance
    if error.validator == "required":
        missing = next(key for key in wanted if key not in value)
        return f"{where}missing required key '{missing}'"
    if error.validator == "type":
        return f"{where}expected {type_name(wanted)}, got {_got(value)}"
    if error.validator == "const":
        return f"{where}expected {_got(wanted)}, got {_got(value)}"
    if error.validator == "minimum":
        return f"{where}expected at least {wanted}, got {_got(value)}"
    if isinstance(error.schema, dict) and "x-error" in error.schema:
        return f"{where}expected {error.schema['x-error']}, got {_got(value)}"
    return f"{where}{error.message}"


def _got(value: Any) -> str:
    """A JSON value as a message names it: "1" and 1 must not read alike."""
    if isinstance(value, str):
        return f"the string {json.dumps(value if len(value) <= 60 else value[:57] + '...')}"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return f"the number {json.dumps(value)}"
    return "a list" if isinstance(value, list) else "a mapping"


def _is_shard_label(label: object) -> bool:
    if not isinstance(label, str):
        return True  # a format applies to strings; "type" judges the rest
    match = re.fullmatch(r"([0-9]{1,9})/([0-9]{1,9})", label)
    return match is not None and 1 <= int(match[1]) <= int(match[2])
