"""Plain, already validated recipe data → the frozen model, with every default applied."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ralph.recipe import model as m
from ralph.units import parse_duration, parse_size

_HTTP_TIMEOUT_S = 60.0
_COMMAND_TIMEOUT_S = 600.0  # local agents edit files and run tests; a minute is rarely enough


Sites = Callable[[int, str], m.TemplateSite]
"""(task index, task name) → where that task's template lines are written."""


def build_recipe(
    data: dict[str, Any],
    path: Path,
    profile: str | None = None,
    overrides: Sequence[str] = (),
    sites: Sites | None = None,
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
        tasks=tuple(
            _task(spec, agents, base_dir, sites(index, spec["name"]) if sites else None)
            for index, spec in enumerate(data["tasks"])
        ),
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


def thaw(value: Any) -> Any:
    """The inverse of `freeze`: plain dicts and lists, e.g. for a JSON request body."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


def _duration(value: str | None, default: float) -> float:
    return default if value is None else parse_duration(value)


def _optional_duration(value: str | None) -> float | None:
    return None if value is None else parse_duration(value)


def _size(value: str | None, default: int) -> int:
    return default if value is None else parse_size(value)


def _path(base_dir: Path, value: str | None) -> Path | None:
    """A path from the recipe, relative to the recipe's folder."""
    return (base_dir / value).resolve() if value else None


def _argv(value: Any) -> tuple[str, ...] | None:
    return tuple(value) if isinstance(value, list) else None


def _agent(name: str, spec: dict[str, Any], base_dir: Path) -> m.Agent:
    provider = spec["provider"]
    is_command = provider == "command"
    retries = spec.get("retries", {})
    rate = spec.get("rate_limit", {})
    pricing = spec.get("pricing", {})
    command = spec.get("command")
    return m.Agent(
        name=name,
        provider=provider,
        model=spec.get("model"),
        base_url=spec.get("base_url", m.DEFAULT_BASE_URLS.get(provider)),
        api_key_env=spec.get("api_key_env"),
        api_key_file=_path(base_dir, spec.get("api_key_file")),
        api_key_command=_argv(spec.get("api_key_command")),
        anthropic_version=spec.get("anthropic_version", "2023-06-01"),
        params=freeze(spec.get("params", {})),
        concurrency=spec.get("concurrency", 1 if is_command else 8),
        rate_limit=m.RateLimit(rate.get("requests_per_minute"), rate.get("tokens_per_minute")),
        timeout_s=_duration(
            spec.get("timeout"), _COMMAND_TIMEOUT_S if is_command else _HTTP_TIMEOUT_S
        ),
        retries=m.Retries(
            attempts=retries.get("attempts", m.Retries.attempts),
            backoff_s=_duration(retries.get("backoff"), m.Retries.backoff_s),
            max_backoff_s=_duration(retries.get("max_backoff"), m.Retries.max_backoff_s),
            on=frozenset(str(c) for c in retries.get("on", m.RETRY_CLASSES)),
        ),
        fallback=spec.get("fallback"),
        pricing=m.Pricing(pricing.get("input_per_mtok", 0.0), pricing.get("output_per_mtok", 0.0)),
        command=command if isinstance(command, str) else _argv(command),
        shell=spec.get("shell", False),
        workdir=_path(base_dir, spec.get("workdir")) or (base_dir if is_command else None),
        probe=_argv(spec.get("probe")),
        max_output_bytes=_size(spec.get("max_output"), m.Agent.max_output_bytes),
        chars_per_token=_chars_per_token(spec.get("tokenizer", "chars")),
    )


def _chars_per_token(tokenizer: Any) -> float | None:
    if isinstance(tokenizer, dict):
        return float(tokenizer["chars_per_token"])
    return None if tokenizer == "bytes" else m.Agent.chars_per_token


def _limits(spec: dict[str, Any]) -> m.Limits:
    return m.Limits(
        max_requests=spec.get("max_requests"),
        max_tokens=spec.get("max_tokens"),
        max_cost_usd=spec.get("max_cost_usd"),
        max_runtime_s=_optional_duration(spec.get("max_runtime")),
        max_prompt_chars=spec.get("max_prompt_chars"),
        max_retry_wait_s=_duration(spec.get("max_retry_wait"), m.Limits.max_retry_wait_s),
    )


def _task(
    spec: dict[str, Any],
    agents: dict[str, m.Agent],
    base_dir: Path,
    site: m.TemplateSite | None,
) -> m.Task:
    filters = spec.get("filters", {})
    return m.Task(
        name=spec["name"],
        agent=spec["agent"],
        prompt=spec.get("prompt"),
        prompt_file=_path(base_dir, spec.get("prompt_file")),
        system=spec.get("system"),
        items=_items(spec.get("for_each"), base_dir),
        output=spec.get("output"),
        input_filters=tuple(_filter(f) for f in filters.get("input", [])),
        output_filters=tuple(_filter(f) for f in filters.get("output", [])),
        cache=_cache(spec.get("cache"), agents[spec["agent"]].provider == "command"),
        loop=_loop(spec["loop"]) if "loop" in spec else None,
        template_site=site,
    )


def _items(spec: Any, base_dir: Path) -> m.ItemSource | None:
    if spec is None:
        return None
    if isinstance(spec, list):
        return m.ItemSource(inline=freeze(spec))
    from ralph.recipe.semantic import ITEM_FORMATS

    name = spec["file"]
    # the format follows the name as written, not the target of a symlink
    inferred = ITEM_FORMATS.get(Path(name).suffix.lower())
    return m.ItemSource(file=_path(base_dir, name), format=spec.get("format", inferred))


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
    return m.CachePolicy(enabled=True, ttl_s=_optional_duration(spec.get("ttl")))


def _loop(spec: dict[str, Any]) -> m.Loop:
    stall = spec.get("stall", {})
    checkpoint = spec.get("checkpoint")
    return m.Loop(
        until=_condition(spec["until"]),
        max_iterations=spec.get("max_iterations", m.Loop.max_iterations),
        max_runtime_s=_optional_duration(spec.get("max_runtime")),
        max_tokens=spec.get("max_tokens"),
        max_cost_usd=spec.get("max_cost_usd"),
        max_consecutive_failures=spec.get(
            "max_consecutive_failures", m.Loop.max_consecutive_failures
        ),
        stall_window=stall.get("window", m.Loop.stall_window),
        stall_similarity=stall.get("similarity", m.Loop.stall_similarity),
        previous_bytes=_size(spec.get("previous_size"), m.Loop.previous_bytes),
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
            tuple(spec["command"]), _duration(spec.get("timeout"), m.CommandCondition.timeout_s)
        )
    group = m.AllOf if "all" in spec else m.AnyOf
    return group(tuple(_condition(c) for c in spec["all" if "all" in spec else "any"]))


def _health(spec: dict[str, Any]) -> m.HealthCheck:
    if "agent" in spec:
        return m.AgentCheck(spec["agent"])
    if "http" in spec:
        http = spec["http"]
        return m.HttpCheck(
            http["url"],
            http.get("expect_status", m.HttpCheck.expect_status),
            _duration(http.get("timeout"), m.HttpCheck.timeout_s),
        )
    return m.CommandCheck(
        tuple(spec["command"]),
        spec.get("expect_exit", m.CommandCheck.expect_exit),
        _duration(spec.get("timeout"), m.CommandCheck.timeout_s),
    )
