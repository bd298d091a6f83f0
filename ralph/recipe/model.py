"""A validated recipe as typed, frozen objects: what every later command consumes.

Durations are seconds, sizes bytes, paths absolute, and every default is filled in here, once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
}
RETRY_CLASSES = frozenset({"429", "5xx", "timeout", "connection", "invalid_response"})


@dataclass(frozen=True)
class Retries:
    attempts: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    on: frozenset[str] = RETRY_CLASSES


@dataclass(frozen=True)
class RateLimit:
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None


@dataclass(frozen=True)
class Pricing:
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0


@dataclass(frozen=True)
class Agent:
    name: str
    provider: str
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    api_key_file: Path | None = None
    api_key_command: tuple[str, ...] | None = None
    anthropic_version: str = "2023-06-01"
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    concurrency: int = 8
    rate_limit: RateLimit = RateLimit()
    timeout_s: float = 60.0
    retries: Retries = Retries()
    fallback: str | None = None
    pricing: Pricing = Pricing()
    command: tuple[str, ...] | str | None = None
    shell: bool = False
    workdir: Path | None = None
    probe: tuple[str, ...] | None = None
    max_output_bytes: int = 10_000_000
    chars_per_token: float | None = 4.0  # the `tokenizer:` estimate; None counts UTF-8 bytes


@dataclass(frozen=True)
class Limits:
    max_requests: int | None = None
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_runtime_s: float | None = None
    max_prompt_chars: int | None = None
    max_retry_wait_s: float = 300.0


@dataclass(frozen=True)
class ItemSource:
    """Inline items, or a file read as a stream in `format`."""

    inline: tuple[Any, ...] | None = None
    file: Path | None = None
    format: str | None = None


@dataclass(frozen=True)
class Filter:
    name: str
    options: Any = None


@dataclass(frozen=True)
class CachePolicy:
    enabled: bool = True
    ttl_s: float | None = None


@dataclass(frozen=True)
class Marker:
    text: str


@dataclass(frozen=True)
class RegexCondition:
    pattern: str


@dataclass(frozen=True)
class FileCondition:
    path: str
    all_checked: bool = False
    contains: str | None = None


@dataclass(frozen=True)
class CommandCondition:
    argv: tuple[str, ...]
    timeout_s: float = 600.0


@dataclass(frozen=True)
class AllOf:
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    conditions: tuple[Condition, ...]


Condition = Marker | RegexCondition | FileCondition | CommandCondition | AllOf | AnyOf


@dataclass(frozen=True)
class Checkpoint:
    every: int = 1
    on_failure: str = "keep"


@dataclass(frozen=True)
class Loop:
    until: Condition
    max_iterations: int = 20
    max_runtime_s: float | None = None
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_consecutive_failures: int = 5
    stall_window: int = 3
    stall_similarity: float = 0.9
    previous_bytes: int = 16_000
    history: int = 3
    checkpoint: Checkpoint | None = None


@dataclass(frozen=True)
class Task:
    name: str
    agent: str
    prompt: str | None = None
    prompt_file: Path | None = None
    system: str | None = None
    items: ItemSource | None = None
    output: str | None = None
    input_filters: tuple[Filter, ...] = ()
    output_filters: tuple[Filter, ...] = ()
    cache: CachePolicy = CachePolicy()
    loop: Loop | None = None
    # where a line of the prompt, system or output template is written in the recipe, so an
    # error while rendering can point there: (field, template line) → "file:line:col" or None
    template_site: TemplateSite | None = field(default=None, compare=False)


TemplateSite = Callable[[str, int], str | None]


@dataclass(frozen=True)
class AgentCheck:
    agent: str


@dataclass(frozen=True)
class HttpCheck:
    url: str
    expect_status: int = 200
    timeout_s: float = 10.0


@dataclass(frozen=True)
class CommandCheck:
    argv: tuple[str, ...]
    expect_exit: int = 0
    timeout_s: float = 30.0


HealthCheck = AgentCheck | HttpCheck | CommandCheck


@dataclass(frozen=True)
class Recipe:
    path: Path
    name: str
    agents: Mapping[str, Agent]
    tasks: tuple[Task, ...]
    description: str = ""
    vars: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    limits: Limits = Limits()
    health_checks: tuple[HealthCheck, ...] = ()
    profile: str | None = None
    overrides: tuple[str, ...] = ()

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def fallback_chain(self, agent: str) -> list[str]:
        """`agent` and the agents its fallbacks lead to, in the order they take an item."""
        chain: list[str] = []
        current: str | None = agent
        while current is not None and current not in chain:
            chain.append(current)
            current = self.agents[current].fallback
        return chain

    def agents_used(self) -> list[str]:
        """Every agent some task may call, fallbacks included, in order of first use."""
        used = [name for task in self.tasks for name in self.fallback_chain(task.agent)]
        return list(dict.fromkeys(used))
