"""One agent's attempts at one item, the path every request of a run takes.

Each attempt reserves its worst case from the run's budget before it is sent and settles it
with the real usage after; a failure is retried after a backoff (or the API's Retry-After)
while the agent's retry policy allows; a 401 after which the provider holds a rotated key is
sent once more at once; and every attempt is counted and logged, its prompt as a length and
a hash, never the text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ralph.cache import short_key
from ralph.observe.logs import emit
from ralph.providers.base import AttemptError, Request, Response, estimate_tokens
from ralph.run.agents import AgentRuntime
from ralph.run.prepare import Prepared
from ralph.run.retry import backoff_s, is_retryable

if TYPE_CHECKING:
    from ralph.run.engine import Engine
    from ralph.run.limits import Reservation


class Stopped:
    """A run limit or Ctrl-C stopped the item before it was sent."""


STOPPED = Stopped()


def worst_input_tokens(request: Request) -> int:
    """An upper bound on the input tokens, for budgets that must never be exceeded: byte-level
    BPE tokenizers never make more tokens than the text has UTF-8 bytes."""
    return len(request.prompt.encode()) + len((request.system or "").encode())


class Attempts:
    """The attempts of one task's items, for its workers and its loops alike."""

    def __init__(
        self, engine: Engine, task: str, filter_answer: Callable[[str, Prepared], str]
    ) -> None:
        self.engine = engine
        self.task = task
        self.filter_answer = filter_answer
        self.log = engine.logger

    async def run(
        self, rt: AgentRuntime, request: Request, prepared: Prepared, key: str | None
    ) -> tuple[str, Response] | str | Stopped:
        engine, policy = self.engine, rt.agent.retries
        worst_input = worst_input_tokens(request)
        attempt, resent = 0, 0  # resent: once more with a new key, not one of the retries
        retrying: str | None = None  # the cause of the retry about to be sent, if it is one
        while attempt < policy.attempts + resent:
            attempt += 1
            if (held := self._held_back(rt)) is not None:
                return held
            reservation = await engine.budget.claim(
                worst_input + rt.reserved_output, rt.cost(worst_input, rt.reserved_output)
            )
            if reservation is None:
                engine.stop_by(engine.budget.stopped or "limit")
                return STOPPED
            started = time.perf_counter()
            response: Response | None = None
            sent = False
            try:
                async with rt.limit:
                    if rt.paced:
                        ratio = rt.agent.chars_per_token
                        tokens = estimate_tokens(request.prompt, ratio)
                        if request.system:  # sent with every request: its tokens count too
                            tokens += estimate_tokens(request.system, ratio)
                        await rt.pace(tokens + rt.worst_output)
                    if (held := self._held_back(rt)) is not None:
                        engine.budget.release(reservation)
                        return held
                    if retrying is not None:  # counted as it goes out, not when decided
                        engine.agent_stats(rt).retries[retrying] += 1
                    started, sent = time.perf_counter(), True
                    response = await rt.provider.complete(request)
                text = self.filter_answer(response.text, prepared)
            except asyncio.CancelledError:  # Ctrl-C: a request on its way was sent all the same
                if sent and response is None:
                    cut = AttemptError("interrupted", "interrupted before the answer came")
                    self._record(rt, prepared, key, attempt, started, None, cut)
                self._give_back(reservation, sent)
                raise
            except AttemptError as error:
                used = (response.input_tokens, response.output_tokens) if response else (0, 0)
                engine.budget.settle(reservation, sum(used), rt.cost(*used))
                self._record(rt, prepared, key, attempt, started, response, error)
                if error.key_refreshed and not resent:
                    resent, retrying = 1, None  # at once
                    continue
                decision = await self._after_failure(rt, error, attempt, resent)
                if decision is not None:
                    return decision
                retrying = error.kind
                continue
            except BaseException:  # a bug: requests waiting for room must not wait forever
                self._give_back(reservation, sent)
                raise
            cost = rt.cost(response.input_tokens, response.output_tokens)
            engine.budget.settle(reservation, response.input_tokens + response.output_tokens, cost)
            rt.limit.on_success()
            self._record(rt, prepared, key, attempt, started, response, None)
            return text, response
        return "retries exhausted"

    def _give_back(self, reservation: Reservation, sent: bool) -> None:
        """The reservation of an attempt that ended without an outcome to settle it by."""
        if sent:
            self.engine.budget.settle(reservation, 0, 0.0)
        else:
            self.engine.budget.release(reservation)

    def _held_back(self, rt: AgentRuntime) -> str | Stopped | None:
        """Why an attempt must not be sent now: the run stopped, or the agent was found
        exhausted while this item waited (for a retry, for a slot, for its pace)."""
        if self.engine.stopping:
            return STOPPED
        if rt.exhausted is not None:
            return f"agent '{rt.agent.name}' is exhausted: {rt.exhausted}"
        return None

    async def _after_failure(
        self, rt: AgentRuntime, error: AttemptError, attempt: int, resent: int
    ) -> str | Stopped | None:
        """None to try again (after waiting), else why this agent gives up on the item."""
        engine, policy = self.engine, rt.agent.retries
        if error.kind == "429":
            rt.limit.on_rate_limited()
        # a 503's Retry-After as much as a 429's: waiting longer than allowed will not help
        max_wait = engine.recipe.limits.max_retry_wait_s
        if error.quota_exhausted or (error.retry_after_s or 0) > max_wait:
            rt.exhaust(
                str(error)
                if error.quota_exhausted
                else f"Retry-After {error.retry_after_s:g}s exceeds max_retry_wait"
            )
            return f"agent '{rt.agent.name}' is exhausted: {rt.exhausted}"
        if not is_retryable(error.kind, policy) or attempt >= policy.attempts + resent:
            suffix = f" after {attempt} attempts" if attempt > 1 else ""
            return f"{error}{suffix}"
        wait = (
            error.retry_after_s
            if error.retry_after_s is not None
            else backoff_s(policy, attempt - resent, engine.rng)
        )
        remaining = engine.budget.remaining_s()
        if remaining is not None and wait >= remaining:
            engine.stop_by("max_runtime")
            return STOPPED
        await asyncio.sleep(wait)
        return None

    def _record(
        self,
        rt: AgentRuntime,
        prepared: Prepared,
        key: str | None,
        attempt: int,
        started: float,
        response: Response | None,
        error: AttemptError | None,
    ) -> None:
        latency_ms = (time.perf_counter() - started) * 1000
        stats = self.engine.agent_stats(rt)
        stats.requests += 1
        if key is not None:  # None: the cache is off for it (--no-cache, a loop, a command)
            stats.cache_misses += 1
        stats.statuses[error.kind if error else "ok"] += 1
        stats.latencies_ms.append(latency_ms)
        tokens_in = response.input_tokens if response else 0
        tokens_out = response.output_tokens if response else 0
        cost = rt.cost(tokens_in, tokens_out)
        stats.input_tokens += tokens_in
        stats.output_tokens += tokens_out
        stats.cost_usd += cost
        level = logging.WARNING if error else logging.INFO
        if not self.log.isEnabledFor(level):
            return  # skip the prompt hash and the fields too, not only the line
        agent = rt.agent
        fields = {
            "task": self.task,
            "item": prepared.key,
            "agent": agent.name,
            "provider": agent.provider,
            "model": agent.model,
            "attempt": attempt,
            "status": error.kind if error else "ok",
            "latency_ms": round(latency_ms, 1),
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "cost_usd": round(cost, 8),
            "cache": "miss" if key else "off",
        }  # the contract's fields, then the optional ones that are known
        if key:
            fields["cache_key"] = short_key(key)
        if prepared.iteration is not None:
            fields["iteration"] = prepared.iteration
        fields["prompt_chars"] = len(prepared.prompt)
        fields["prompt_sha"] = self.engine.prompt_hash(prepared.prompt)
        if error:
            fields["error"] = str(error)
        emit(self.log, level, "attempt", fields)
