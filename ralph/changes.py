"""`ralph plan --against run.json`: what a plan changes against the last applied run, for a
pull request's review — tasks added or removed, items whose rendered request changed (and so
will miss the cache), and the cost against what the run cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ralph.plan import Plan

EXAMPLES = 5


@dataclass(frozen=True)
class TaskChanges:
    name: str
    changed: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    known: bool  # False when the run's summary has no per-item prompts for this task


@dataclass(frozen=True)
class Changes:
    against: str
    tasks_added: tuple[str, ...]
    tasks_removed: tuple[str, ...]
    tasks: tuple[TaskChanges, ...]
    last_cost_usd: float | None  # None: the run could not price its requests
    cost_min_usd: float
    cost_max_usd: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "against": self.against,
            "tasks_added": list(self.tasks_added),
            "tasks_removed": list(self.tasks_removed),
            "tasks": {
                t.name: {
                    "changed": len(t.changed),
                    "added": len(t.added),
                    "removed": len(t.removed),
                    "known": t.known,
                    "examples": list((t.changed + t.added)[:EXAMPLES]),
                }
                for t in self.tasks
            },
            "last_cost_usd": self.last_cost_usd,
            "cost_delta_usd": None
            if self.last_cost_usd is None
            else [
                round(self.cost_min_usd - self.last_cost_usd, 6),
                round(self.cost_max_usd - self.last_cost_usd, 6),
            ],
        }


def compare(plan: Plan, summary: dict[str, Any], against: str) -> Changes:
    """`plan` against the run `summary` (as `read_summary` checked it) read from `against`."""
    ran: dict[str, Any] = summary["tasks"]
    planned = {t.name: t for t in plan.tasks}
    tasks = []
    for name, task in planned.items():
        if name not in ran:
            continue
        before: dict[str, str] = ran[name].get("prompts") or {}
        now = dict(task.prompt_keys)
        tasks.append(
            TaskChanges(
                name=name,
                changed=tuple(k for k in now if k in before and before[k] != now[k]),
                added=tuple(k for k in now if k not in before),
                removed=tuple(k for k in before if k not in now),
                known=bool(before),
            )
        )
    return Changes(
        against=against,
        tasks_added=tuple(n for n in planned if n not in ran),
        tasks_removed=tuple(n for n in ran if n not in planned),
        tasks=tuple(tasks),
        last_cost_usd=summary.get("totals", {}).get("cost_usd", 0.0),
        cost_min_usd=sum(t.cost_min_usd for t in plan.tasks),
        cost_max_usd=sum(t.cost_max_usd for t in plan.tasks),
    )


def render_changes(changes: Changes) -> str:
    lines = [f"changes against {changes.against}:"]
    lines += [f"  + task {name} (new)" for name in changes.tasks_added]
    lines += [f"  - task {name} (removed)" for name in changes.tasks_removed]
    for task in changes.tasks:
        if not task.known:
            lines.append(f"  ? task {task.name}: the run's summary has no per-item prompts")
            continue
        if not (task.changed or task.added or task.removed):
            lines.append(f"  = task {task.name}: no prompt changed")
            continue
        counts = f"{len(task.changed)} changed, {len(task.added)} new, {len(task.removed)} gone"
        examples = ", ".join((task.changed + task.added)[:EXAMPLES])
        lines.append(
            f"  ~ task {task.name}: {counts}" + (f" (e.g. {examples})" if examples else "")
        )
    planned = f"this plan ${changes.cost_min_usd:.4f} to ${changes.cost_max_usd:.4f}"
    last = changes.last_cost_usd
    if last is None:
        lines.append(f"  cost: last run unknown (its pricing gave no number); {planned}")
    else:
        delta = f"{changes.cost_min_usd - last:+.4f} to {changes.cost_max_usd - last:+.4f}"
        lines.append(f"  cost: last run ${last:.4f}; {planned} ({delta})")
    return "\n".join(lines)
