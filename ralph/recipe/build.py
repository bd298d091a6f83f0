"""Plain, already validated recipe data → the frozen model, with every default applied."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ralph.recipe import model as m
from ralph.units import parse_duration, parse_size

_COMMAND_TIMEOUT_S = 600.0


def build_recipe(
    data: dict[str, Any], path: Path, profile: str | None = None, overrides: Sequence[str] = ()
) -> m.Recipe:
    base_dir = path.parent.resolve()
    agents = {name: _agent(name, spec, base_dir) for name, spec in data["agents"].items()}
    return m.Recipe(
        path=path.resolve(),
        name=data["name"],
        description=data.get("description", ""),
        vars=freeze(data.get("vars", {})),
        agents=MappingProxyType(agents),
        limits=_limits(data.get("limits", {})),
        tasks=tuple(_task(spec, agents, base_dir) for spec in data["tasks"]),
        health_checks=tuple(_health(spec) for spec in data.get("health_checks", [])),
        profile=profile,
        overrides=tuple(overrides),
    )


def freeze(value: Any) -> Any:
    """Nested mappings become read-only views and lists tuples, so the model stays frozen."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def _seconds(value: str | None, default: float | None) -> float | None:
    return parse_duration(value) if value is not None else default


def _argv(value: Any) -> tuple[str, ...] | None:
    return tuple(value) if isinstance(value, list) else None


def _agent(name: str, spec: dict[str, Any], base_dir: Path) -> m.Agent:
    provider = spec["provider"]
    is_command = provider == "command"
    retries = spec.get("retries", {})
    rate = spec.get("rate_limit", {})
    pricing = spec.get("pricing", {})
    key_file = spec.get("api_key_file")
    workdir = spec.get("workdir")
    command = spec.get("command")
    return m.Agent(
        name=name,
        provider=provider,
        model=spec.get("model"),
        base_url=spec.get("base_url", m.DEFAULT_BASE_URLS.get(provider)),
        api_key_env=spec.get("api_key_env"),
        api_key_file=(base_dir / key_file) if key_file else None,
        api_key_command=_argv(spec.get("api_key_command")),
        anthropic_version=spec.get("anthropic_version", "2023-06-01"),
        params=freeze(spec.get("params", {})),
        concurrency=spec.get("concurrency", 1 if is_command else 8),
        rate_limit=m.RateLimit(rate.get("requests_per_minute"), rate.get("tokens_per_minute")),
        timeout_s=parse_duration(spec["timeout"])
        if "timeout" in spec
        else (_COMMAND_TIMEOUT_S if is_command else 60.0),
        retries=m.Retries(
            attempts=retries.get("attempts", m.Retries.attempts),
            backoff_s=parse_duration(retries.get("backoff", "0.5s")),
            max_backoff_s=parse_duration(retries.get("max_backoff", "30s")),
            on=frozenset(str(c) for c in retries.get("on", m.RETRY_CLASSES)),
        ),
        fallback=spec.get("fallback"),
        pricing=m.Pricing(pricing.get("input_per_mtok", 0.0), pricing.get("output_per_mtok", 0.0)),
        command=command if isinstance(command, str) else _argv(command),
        shell=spec.get("shell", False),
        workdir=(base_dir / workdir).resolve() if workdir else (base_dir if is_command else None),
        probe=_argv(spec.get("probe")),
        max_output_bytes=parse_size(spec["max_output"])
        if "max_output" in spec
        else m.Agent.max_output_bytes,
    )


def _limits(spec: dict[str, Any]) -> m.Limits:
    return m.Limits(
        max_requests=spec.get("max_requests"),
        max_tokens=spec.get("max_tokens"),
        max_cost_usd=spec.get("max_cost_usd"),
        max_runtime_s=_seconds(spec.get("max_runtime"), None),
        max_prompt_chars=spec.get("max_prompt_chars"),
        max_retry_wait_s=parse_duration(spec.get("max_retry_wait", "5m")),
    )


def _task(spec: dict[str, Any], agents: dict[str, m.Agent], base_dir: Path) -> m.Task:
    filters = spec.get("filters", {})
    prompt_file = spec.get("prompt_file")
    return m.Task(
        name=spec["name"],
        agent=spec["agent"],
        prompt=spec.get("prompt"),
        prompt_file=(base_dir / prompt_file) if prompt_file else None,
        system=spec.get("system"),
        items=_items(spec.get("for_each"), base_dir),
        output=spec.get("output"),
        input_filters=tuple(_filter(f) for f in filters.get("input", [])),
        output_filters=tuple(_filter(f) for f in filters.get("output", [])),
        cache=_cache(spec.get("cache"), agents[spec["agent"]].provider == "command"),
        loop=_loop(spec["loop"]) if "loop" in spec else None,
    )


def _items(spec: Any, base_dir: Path) -> m.ItemSource | None:
    if spec is None:
        return None
    if isinstance(spec, list):
        return m.ItemSource(inline=freeze(spec))
    from ralph.recipe.semantic import ITEM_FORMATS

    file = base_dir / spec["file"]
    return m.ItemSource(file=file, format=spec.get("format", ITEM_FORMATS.get(file.suffix.lower())))


def _filter(spec: Any) -> m.Filter:
    if isinstance(spec, str):
        return m.Filter(spec)
    ((name, options),) = spec.items()
    return m.Filter(name, freeze(options))


def _cache(spec: Any, side_effects: bool) -> m.CachePolicy:
    # command agents act on the world, so their answers are cached only when a task asks
    if spec is None:
        return m.CachePolicy(enabled=not side_effects)
    if isinstance(spec, bool):
        return m.CachePolicy(enabled=spec)
    return m.CachePolicy(enabled=True, ttl_s=_seconds(spec.get("ttl"), None))


def _loop(spec: dict[str, Any]) -> m.Loop:
    stall = spec.get("stall", {})
    checkpoint = spec.get("checkpoint")
    return m.Loop(
        until=_condition(spec["until"]),
        max_iterations=spec.get("max_iterations", m.Loop.max_iterations),
        max_runtime_s=_seconds(spec.get("max_runtime"), None),
        max_tokens=spec.get("max_tokens"),
        max_cost_usd=spec.get("max_cost_usd"),
        max_consecutive_failures=spec.get(
            "max_consecutive_failures", m.Loop.max_consecutive_failures
        ),
        stall_window=stall.get("window", m.Loop.stall_window),
        stall_similarity=stall.get("similarity", m.Loop.stall_similarity),
        previous_bytes=parse_size(spec["previous_size"])
        if "previous_size" in spec
        else m.Loop.previous_bytes,
        history=spec.get("history", m.Loop.history),
        checkpoint=m.Checkpoint(checkpoint.get("every", 1), checkpoint.get("on_failure", "keep"))
        if checkpoint is not None
        else None,
    )


def _condition(spec: Any) -> m.Condition:
    if isinstance(spec, str):
        return m.Marker(spec)
    if "regex" in spec:
        return m.RegexCondition(spec["regex"])
    if "file" in spec:
        return m.FileCondition(spec["file"], spec.get("all_checked", False), spec.get("contains"))
    if "command" in spec:
        return m.CommandCondition(
            tuple(spec["command"]), _seconds(spec.get("timeout"), 600.0) or 600.0
        )
    group = m.AllOf if "all" in spec else m.AnyOf
    return group(tuple(_condition(c) for c in spec["all" if "all" in spec else "any"]))


def _health(spec: dict[str, Any]) -> m.HealthCheck:
    if "agent" in spec:
        return m.AgentCheck(spec["agent"])
    if "http" in spec:
        http = spec["http"]
        return m.HttpCheck(
            http["url"], http.get("expect_status", 200), _seconds(http.get("timeout"), 10.0) or 10.0
        )
    return m.CommandCheck(
        tuple(spec["command"]),
        spec.get("expect_exit", 0),
        _seconds(spec.get("timeout"), 30.0) or 30.0,
    )
