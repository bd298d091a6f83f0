"""An agent during a run: its provider, its in-flight cap, its pacing and whether it is spent."""

from __future__ import annotations

import asyncio
import math

from ralph.providers.base import Provider
from ralph.recipe.model import Agent
from ralph.run.limits import AdaptiveLimit, Pacer

DEFAULT_WORST_OUTPUT_TOKENS = 4096
"""Worst-case answer length assumed for budgets when an agent sets no params.max_tokens."""


class AgentRuntime:
    def __init__(self, agent: Agent, provider: Provider, cap: int | None) -> None:
        self.agent = agent
        self.provider = provider
        self.limit = AdaptiveLimit(min(agent.concurrency, cap) if cap else agent.concurrency)
        rate = agent.rate_limit
        self._requests = Pacer(rate.requests_per_minute) if rate.requests_per_minute else None
        self._tokens = Pacer(rate.tokens_per_minute) if rate.tokens_per_minute else None
        self.paced = self._requests is not None or self._tokens is not None
        self.exhausted: str | None = None
        # set once this agent may send nothing more (it is exhausted, the run stopped): ends
        # the waits for a pace slot, which may be a minute long
        self.halted = asyncio.Event()
        self.worst_output = worst_output_tokens(agent)
        self.reserved_output = reserved_output_tokens(agent)

    def exhaust(self, reason: str) -> None:
        self.exhausted = reason
        self.halted.set()

    async def pace(self, tokens: int) -> None:
        """Wait for this request's slot, or until the agent is halted (then, having taken no
        slot, it must not send)."""
        pacing = asyncio.ensure_future(self._pace(tokens))
        halted = asyncio.ensure_future(self.halted.wait())
        try:
            await asyncio.wait((pacing, halted), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in (pacing, halted):
                waiting.cancel()
            await asyncio.gather(pacing, halted, return_exceptions=True)

    async def _pace(self, tokens: int) -> None:
        if self._requests is not None:
            await self._requests.acquire()
        if self._tokens is not None:
            await self._tokens.acquire(tokens)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        pricing = self.agent.pricing
        return (
            input_tokens * pricing.input_per_mtok + output_tokens * pricing.output_per_mtok
        ) / 1e6


OUTPUT_CAPS = ("max_tokens", "max_completion_tokens")
"""The params that cap an answer: OpenAI's newer name is required by its reasoning models."""


def worst_output_tokens(agent: Agent) -> int:
    """The longest answer the params allow (or a default): what pacing and budgets assume. With
    both caps given, the larger: budgets must hold whichever the API applies."""
    caps = [agent.params.get(name) for name in OUTPUT_CAPS]
    given = [cap for cap in caps if isinstance(cap, int) and not isinstance(cap, bool)]
    return max(given) if given else DEFAULT_WORST_OUTPUT_TOKENS


def reserved_output_tokens(agent: Agent) -> int:
    """What budgets reserve for an answer: a command's is bounded by max_output, not by
    max_tokens (its tokens are counted as characters / 4, and it has no more characters than
    bytes)."""
    if agent.provider == "command":
        return math.ceil(agent.max_output_bytes / 4)
    return worst_output_tokens(agent)
