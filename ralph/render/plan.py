"""A plan as text for a person reviewing it, or as JSON for a machine."""

from __future__ import annotations

from ralph.fastjson import dumps_pretty
from ralph.plan import Plan, TaskPlan
from ralph.render.tables import table


def render_plan(plan: Plan, fmt: str = "text", limit: int | None = None) -> str:
    """The plan for a terminal (`limit` prompts per task, None for all) or as JSON."""
    if fmt == "json":
        return dumps_pretty(plan.as_dict())
    lines = [f"Plan for {plan.name} ({plan.recipe})"]
    if plan.profile or plan.overrides:
        overrides = ", ".join(plan.overrides) or "-"
        lines.append(f"profile: {plan.profile or '-'}  overrides: {overrides}")
    if plan.shard:
        lines.append(f"shard: {plan.shard} (only the items of this shard)")
    head = ["task", "agent", "model", "items", "cached", "to send", "input tokens", "cost $"]
    rows = [
        [
            t.name,
            f"{t.agent} ({t.provider})",
            t.model or "-",
            t.items,
            t.cached,
            _requests(t),
            t.input_tokens,
            f"{t.cost_min_usd:.4f}-{t.cost_max_usd:.4f}",
        ]
        for t in plan.tasks
    ]
    lines += ["", *table(head, rows)]
    lines += _limits(plan)
    for task in plan.tasks:
        lines += _prompts(task, limit) + _errors(task)
    total_min = sum(t.cost_min_usd for t in plan.tasks)
    total_max = sum(t.cost_max_usd for t in plan.tasks)
    cached = sum(t.cached for t in plan.tasks)
    lines += [
        "",
        f"{plan.requests} request{'' if plan.requests == 1 else 's'} to send, "
        f"{cached} answer{'' if cached == 1 else 's'} cached; "
        f"cost ${total_min:.4f} to ${total_max:.4f} (worst case: every answer at max_tokens)",
    ]
    return "\n".join(lines)


def _requests(task: TaskPlan) -> str:
    if task.max_requests != task.requests:
        return f"{task.requests}-{task.max_requests}"
    return str(task.requests)


def _limits(plan: Plan) -> list[str]:
    if not plan.limits:
        return []
    lines = ["", "limits:"]
    for check in plan.limits:
        verdict = "would stop the run" if check.exceeded else "ok"
        lines.append(f"  {check.limit} {check.allowed:g}: needs up to {check.needed:g}, {verdict}")
    return lines


def _prompts(task: TaskPlan, limit: int | None) -> list[str]:
    if not task.prompts or limit == 0:
        return []
    lines = ["", f"first prompts of {task.name}:"]
    for prompt in task.prompts[:limit]:
        target = f" -> {prompt.output}" if prompt.output else ""
        lines.append(f"  [{prompt.index}] item {prompt.item}{target}")
        if prompt.system:
            lines += _quoted(f"system: {prompt.system.rstrip()}")
        lines += _quoted(prompt.prompt.rstrip() or "(empty)")
    return lines


def _quoted(text: str) -> list[str]:
    return [f"    | {line}".rstrip() for line in text.splitlines()]


def _errors(task: TaskPlan) -> list[str]:
    if not task.errors:
        return []
    lines = ["", f"items of {task.name} that cannot be sent:"]
    lines += [f"  [{e.index}] item {e.item}: {e.message}" for e in task.errors]
    return lines


def render_prompts(plan: Plan) -> str:
    """Every rendered prompt of the plan as Markdown, for `--prompts-file`."""
    lines = [f"# Prompts of {plan.name}"]
    for task in plan.tasks:
        for prompt in task.prompts:
            target = f" → {prompt.output}" if prompt.output else ""
            lines += ["", f"## {task.name} [{prompt.index}] item {prompt.item}{target}", ""]
            if prompt.system:
                lines += ["System:", "", "```text", prompt.system.rstrip(), "```", ""]
            lines += ["```text", prompt.prompt.rstrip(), "```"]
    return "\n".join(lines) + "\n"
