"""The end-of-run summary as text for people (run.json carries the same figures)."""

from __future__ import annotations

from typing import Any

from ralph.render.tables import table
from ralph.text import printable


def render_summary(summary: dict[str, Any], *, timings: bool = True) -> str:
    """`timings=False` leaves out wall time and latencies, which differ from run to run."""
    name = printable(summary.get("name") or "run")
    lines = [f"{name}: {summary['status']} (exit {summary['exit_code']})"]
    if summary["profile"] or summary["overrides"]:
        overrides = printable(", ".join(summary["overrides"])) or "-"
        lines.append(f"profile: {printable(summary['profile'] or '-')}  overrides: {overrides}")
    task_rows = [
        [name, t["items"], t["done"], t["cached"], t["failed"], t["not_started"]]
        for name, t in summary["tasks"].items()
    ]
    head = ["task", "items", "done", "cached", "failed", "not started"]
    lines += ["", *table(head, task_rows)]
    agent_head = [
        "agent",
        "provider",
        "requests",
        "cache hits",
        "retries",
        "tokens in",
        "tokens out",
        "cost $",
    ]
    if timings:
        agent_head += ["p50 ms", "p95 ms", "max ms"]
    agent_rows = []
    for name, a in summary["agents"].items():
        retries = sum(a["retries"].values())
        row = [
            name,
            a["provider"],
            a["requests"],
            a["cache_hits"],
            retries,
            a["input_tokens"],
            a["output_tokens"],
            f"{a['cost_usd']:.4f}",
        ]
        if timings:
            row += [_ms(a["latency_ms"][k]) for k in ("p50", "p95", "max")]
        agent_rows.append(row)
    if agent_rows:
        lines += ["", *table(agent_head, agent_rows)]
    lines += _loops(summary) + _retries(summary) + _failures(summary)
    totals = summary["totals"]
    tokens = totals["input_tokens"] + totals["output_tokens"]
    tail = (
        f"totals: {totals['requests']} requests, {totals['cache_hits']} cache hits, "
        f"{totals['retries']} retries, {totals['failures']} failed items, {tokens} tokens, "
        f"${totals['cost_usd']:.4f}"
    )
    lines += ["", tail]
    if timings:
        lines.append(f"wall time: {summary['wall_s']:.2f}s")
    return "\n".join(lines)


def _loops(summary: dict[str, Any]) -> list[str]:
    lines = []
    for name, task in summary["tasks"].items():
        loop = task.get("loop")
        if loop is not None:
            stops = ", ".join(f"{stop} {n}" for stop, n in loop["stops"].items()) or "-"
            lines.append(f"  {name}: {loop['iterations']} iterations; loops ended by: {stops}")
    return ["", "loops:", *lines] if lines else []


def _retries(summary: dict[str, Any]) -> list[str]:
    causes = [
        f"{agent} {cause}: {n}"
        for agent, a in summary["agents"].items()
        for cause, n in a["retries"].items()
    ]
    return ["", "retries by cause: " + ", ".join(causes)] if causes else []


def _failures(summary: dict[str, Any]) -> list[str]:
    lines = [
        f"  {task}: {n} x {printable(reason)}"
        for task, t in summary["tasks"].items()
        for reason, n in t["failures"].items()
    ]
    return ["", "failures:", *lines] if lines else []


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
