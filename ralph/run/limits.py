"""Budgets enforced before the spend, pacing that never bursts, and adaptive concurrency."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from ralph.recipe.model import Limits


@dataclass
class Reservation:
    tokens: int
    cost_usd: float


class Budget:
    """Run-wide limits: a request first reserves its worst case and is refused if that could
    cross a limit, so `max_cost_usd: 5` is never exceeded, not merely noticed afterwards."""

    def __init__(self, limits: Limits, started: float | None = None) -> None:
        self.limits = limits
        self.started = time.monotonic() if started is None else started
        self.requests = 0
        self.tokens = 0
        self.cost_usd = 0.0
        self._reserved_tokens = 0
        self._reserved_cost = 0.0
        self.stopped: str | None = None
        self._settled: asyncio.Future[None] | None = None  # done at the next settle or stop

    def reserve(self, tokens: int, cost_usd: float) -> Reservation | None:
        """Claim room for one request, or None (and `stopped` says which limit) when out."""
        if self.stopped is None:
            self.stopped = self._exceeded(tokens, cost_usd)
        if self.stopped is not None:
            return None
        self.requests += 1
        self._reserved_tokens += tokens
        self._reserved_cost += cost_usd
        return Reservation(tokens, cost_usd)

    async def claim(self, tokens: int, cost_usd: float) -> Reservation | None:
        """`reserve`, waiting while nothing but the requests in flight stands in the way:
        their worst cases usually settle for far less. Refusing at once stopped a run with
        most of its budget unspent, the sooner the more requests were in flight."""
        while self.stopped is None and self._held_up(tokens, cost_usd):
            if self._settled is None or self._settled.done():
                self._settled = asyncio.get_running_loop().create_future()
            await asyncio.wait((self._settled,))  # not cancelled with a waiter that is
        return self.reserve(tokens, cost_usd)

    def _held_up(self, tokens: int, cost_usd: float) -> bool:
        """Whether only the worst cases of the requests in flight keep this one out."""
        in_flight = self._reserved_tokens > 0 or self._reserved_cost > 0
        return (
            in_flight
            and self._exceeded(tokens, cost_usd) is not None
            and self._exceeded(tokens, cost_usd, in_flight=False) is None
        )

    def settle(self, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        """Replace a reservation by what the request really used."""
        self._reserved_tokens -= reservation.tokens
        self._reserved_cost -= reservation.cost_usd
        self.tokens += tokens
        self.cost_usd += cost_usd
        self._wake()

    def release(self, reservation: Reservation) -> None:
        """Give back a reservation whose request was never sent."""
        self.requests -= 1
        self._reserved_tokens -= reservation.tokens
        self._reserved_cost -= reservation.cost_usd
        self._wake()

    def stop(self, reason: str) -> None:
        if self.stopped is None:
            self.stopped = reason
        self._wake()

    def _wake(self) -> None:
        if self._settled is not None and not self._settled.done():
            self._settled.set_result(None)

    def remaining_s(self) -> float | None:
        if self.limits.max_runtime_s is None:
            return None
        return self.limits.max_runtime_s - (time.monotonic() - self.started)

    def _exceeded(self, tokens: int, cost_usd: float, *, in_flight: bool = True) -> str | None:
        """The limit this request could cross, counting the requests in flight at their
        worst (or, `in_flight=False`, only what was spent)."""
        limits = self.limits
        if limits.max_requests is not None and self.requests + 1 > limits.max_requests:
            return "max_requests"
        committed_tokens = self.tokens + tokens + (self._reserved_tokens if in_flight else 0)
        if limits.max_tokens is not None and committed_tokens > limits.max_tokens:
            return "max_tokens"
        committed_cost = self.cost_usd + cost_usd + (self._reserved_cost if in_flight else 0.0)
        if limits.max_cost_usd is not None and committed_cost > limits.max_cost_usd + 1e-12:
            return "max_cost_usd"
        remaining = self.remaining_s()
        if remaining is not None and remaining <= 0:
            return "max_runtime"
        return None


class Pacer:
    """Lets `per_minute` units a minute through, by two rules: acquisitions are spaced evenly
    (`amount` slots after each), so there is never a burst; and the amounts of the last minute
    never add up past the limit, which spacing alone allowed by one acquisition (an amount
    larger than the limit goes alone, into an empty minute).

    The next slot is counted from when an acquisition really went, not from when it was due:
    slots handed out ahead of time would all fall due together after the event loop stalls
    (a long flush, a GC pause) and go out as one burst. Waiters queue on a FIFO lock, so
    only the one at the head sleeps.
    """

    def __init__(self, per_minute: float, window_s: float = 60.0) -> None:
        self.per_window = per_minute
        self.window_s = window_s
        self.interval = window_s / per_minute
        self._next = 0.0
        self._sent: deque[tuple[float, float]] = deque()  # (when, amount) of the last window
        self._lock = asyncio.Lock()

    async def acquire(self, amount: float = 1.0) -> None:
        async with self._lock:
            while (wait := self._wait(amount)) > 0:
                await asyncio.sleep(wait)
            now = time.monotonic()
            self._sent.append((now, amount))
            self._next = now + amount * self.interval

    def _wait(self, amount: float) -> float:
        now = time.monotonic()
        while self._sent and self._sent[0][0] <= now - self.window_s:
            self._sent.popleft()
        return max(self._next - now, self._room_in(amount, now))

    def _room_in(self, amount: float, now: float) -> float:
        """How long until `amount` more fits in the window: until enough of the oldest
        acquisitions have left it."""
        excess = sum(sent for _, sent in self._sent) + amount - self.per_window
        if excess <= 0 or not self._sent:
            return 0.0
        for went, sent in self._sent:
            excess -= sent
            if excess <= 0:
                return went + self.window_s - now
        return self._sent[-1][0] + self.window_s - now


class AdaptiveLimit:
    """In-flight cap for one agent that halves on a 429 and grows back by one per round of
    successes, so a run settles just under the provider's real limit.

    A hand-rolled gate rather than an asyncio.Condition: entering is a comparison and an
    increment when there is room, which is nearly always, and this sits on every request.
    """

    def __init__(self, ceiling: int, cooldown_s: float = 1.0) -> None:
        self.ceiling = ceiling
        self.limit = ceiling
        self.in_flight = 0
        self.cooldown_s = cooldown_s
        self._successes = 0
        self._cooldown_until = 0.0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __aenter__(self) -> AdaptiveLimit:
        while self.in_flight >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                self._wake()  # pass on a wake-up this waiter may have been given
                raise
        self.in_flight += 1
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        room = self.limit - self.in_flight
        while room > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                room -= 1

    def on_rate_limited(self) -> None:
        # the requests already in flight saw the same limit: shrink once per round, not per 429
        now = time.monotonic()
        self._successes = 0  # a 429 breaks a run of successes, in the cooldown too
        if now < self._cooldown_until:
            return
        self.limit = max(1, self.limit // 2)
        self._cooldown_until = now + self.cooldown_s

    def on_success(self) -> None:
        if self.limit >= self.ceiling:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self.limit += 1
            self._wake()
