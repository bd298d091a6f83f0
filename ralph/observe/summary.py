"""Figures of a run, gathered as it goes and summarised at the end (also as run.json)."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_LIMIT, EXIT_INTERRUPTED = 0, 3, 4, 130


@dataclass
class AgentStats:
    provider: str
    model: str | None
    requests: int = 0
    cache_hits: int = 0
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
            "status": self.status,
            "exit_code": self.exit_code,
            "stopped_by": self.stopped_by,
            "wall_s": round(self.wall_s, 3),
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
