"""Run limits: budgets refused before the spend, pacing without bursts, adaptive concurrency.

Everything runs on a real event loop with real sleeps, kept short by high rates.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from ralph.recipe.model import Limits
from ralph.run.limits import AdaptiveLimit, Budget, Pacer, Reservation

# -- Budget ------------------------------------------------------------------------------------


def test_cost_reservation_that_could_cross_the_limit_is_refused() -> None:
    budget = Budget(Limits(max_cost_usd=1.0))
    assert budget.reserve(10, 0.4) is not None
    assert budget.reserve(10, 0.4) is not None
    # 0.8 is reserved: another worst case of 0.4 could reach 1.2, so it is never sent
    assert budget.reserve(10, 0.4) is None
    assert budget.stopped == "max_cost_usd"
    assert budget.requests == 2


def test_settling_replaces_the_worst_case_by_real_usage() -> None:
    budget = Budget(Limits(max_cost_usd=1.0, max_tokens=1000))
    first = budget.reserve(400, 0.4)
    second = budget.reserve(400, 0.4)
    assert first is not None and second is not None
    budget.settle(first, 100, 0.1)
    budget.settle(second, 100, 0.1)
    assert budget.tokens == 200
    assert budget.cost_usd == pytest.approx(0.2)
    # the room the worst cases held is free again: 0.2 spent + 0.4 + 0.4 lands exactly on 1.0
    assert budget.reserve(400, 0.4) is not None
    assert budget.reserve(400, 0.4) is not None
    assert budget.stopped is None
    assert budget.reserve(1, 0.001) is None
    assert budget.stopped == "max_tokens"


def test_a_cost_exactly_at_the_limit_is_allowed_despite_float_sums() -> None:
    budget = Budget(Limits(max_cost_usd=0.3))
    for _ in range(3):  # 0.1 + 0.1 + 0.1 is 0.30000000000000004 in floats
        assert budget.reserve(1, 0.1) is not None
    assert budget.reserve(1, 0.0001) is None


def test_token_limit_counts_reserved_and_spent_tokens() -> None:
    budget = Budget(Limits(max_tokens=100))
    reservation = budget.reserve(60, 0.0)
    assert reservation is not None
    assert budget.reserve(41, 0.0) is None
    assert budget.stopped == "max_tokens"


def test_request_limit_counts_every_reservation() -> None:
    budget = Budget(Limits(max_requests=3))
    reservations = [budget.reserve(1, 0.0) for _ in range(3)]
    assert all(r is not None for r in reservations)
    for reservation in reservations:
        assert reservation is not None
        budget.settle(reservation, 0, 0.0)  # a failed attempt is still a request
    assert budget.reserve(1, 0.0) is None
    assert budget.stopped == "max_requests"


def test_a_released_reservation_is_as_if_never_made() -> None:
    budget = Budget(Limits(max_requests=1, max_tokens=100))
    reservation = budget.reserve(100, 0.0)
    assert reservation is not None
    budget.release(reservation)  # its request was never sent
    assert budget.requests == 0
    assert budget.reserve(100, 0.0) is not None and budget.stopped is None


def test_once_stopped_even_a_tiny_request_is_refused_and_the_first_reason_stays() -> None:
    budget = Budget(Limits(max_cost_usd=1.0, max_requests=100))
    assert budget.reserve(1, 5.0) is None
    assert budget.reserve(1, 0.0) is None
    budget.stop("interrupted")
    assert budget.stopped == "max_cost_usd"


def test_max_runtime_refuses_once_the_time_is_up() -> None:
    budget = Budget(Limits(max_runtime_s=10.0), started=time.monotonic() - 11)
    remaining = budget.remaining_s()
    assert remaining is not None and remaining < 0
    assert budget.reserve(1, 0.0) is None
    assert budget.stopped == "max_runtime"

    fresh = Budget(Limits(max_runtime_s=10.0))
    remaining = fresh.remaining_s()
    assert remaining is not None and 9 < remaining <= 10
    assert fresh.reserve(1, 0.0) is not None


def test_no_limits_means_no_refusal() -> None:
    budget = Budget(Limits())
    assert budget.remaining_s() is None
    assert all(budget.reserve(10**6, 10.0) is not None for _ in range(100))
    assert budget.stopped is None


# -- Pacer -------------------------------------------------------------------------------------

RATE = 6000.0  # a minute's worth, so one slot every 10 ms
INTERVAL = 60.0 / RATE
SLACK = 0.001  # between the pacer's clock reading and the test's, within one loop step


async def _stamps(pacer: Pacer, n: int) -> tuple[float, list[float]]:
    stamps: list[float] = []

    async def one() -> None:
        await pacer.acquire()
        stamps.append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(n)))
    return started, sorted(stamps)


def test_pacer_never_lets_more_than_the_rate_through_in_any_window() -> None:
    started, stamps = asyncio.run(_stamps(Pacer(RATE), 40))
    assert len(stamps) == 40
    # a window of k slots never holds more than k acquisitions, wherever it starts
    for k in (1, 2, 5, 10):
        window = k * INTERVAL - SLACK
        for i, start in enumerate(stamps):
            inside = sum(1 for t in stamps[i:] if t < start + window)
            assert inside <= k, (k, i)
    # and it does not pace much slower than asked: 40 slots take about 39 intervals
    assert 39 * INTERVAL - SLACK <= stamps[-1] - started < 1.5 * 39 * INTERVAL


def test_pacer_does_not_burst_at_start() -> None:
    started, stamps = asyncio.run(_stamps(Pacer(RATE), 3))
    assert stamps[0] - started < INTERVAL  # the first goes at once
    assert stamps[1] - stamps[0] >= INTERVAL - SLACK  # the second already waits a slot
    assert stamps[2] - stamps[0] >= 2 * INTERVAL - SLACK


def test_pacer_saves_no_credit_while_idle() -> None:
    async def scenario() -> list[float]:
        pacer = Pacer(RATE)
        await pacer.acquire()
        await asyncio.sleep(5 * INTERVAL)  # idle: no burst allowance builds up
        _, stamps = await _stamps(pacer, 3)
        return stamps

    stamps = asyncio.run(scenario())
    assert stamps[1] - stamps[0] >= INTERVAL - SLACK
    assert stamps[2] - stamps[1] >= INTERVAL - SLACK


def test_pacer_does_not_burst_after_the_event_loop_stalls() -> None:
    async def scenario() -> list[float]:
        pacer = Pacer(RATE)
        stamps: list[float] = []

        async def one() -> None:
            await pacer.acquire()
            stamps.append(time.monotonic())

        tasks = [asyncio.create_task(one()) for _ in range(10)]
        await asyncio.sleep(1.5 * INTERVAL)
        time.sleep(6 * INTERVAL)  # the loop is blocked: a long flush, a GC pause
        await asyncio.gather(*tasks)
        return stamps

    stamps = asyncio.run(scenario())
    # the slots that fell due during the stall are not made up for all at once
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= INTERVAL - SLACK, [round(g * 1000, 1) for g in gaps]


def test_pacer_amount_spaces_the_next_acquisition_by_that_many_slots() -> None:
    async def scenario() -> tuple[float, float]:
        pacer = Pacer(RATE)
        await pacer.acquire(3)
        first = time.monotonic()
        await pacer.acquire(1)
        return first, time.monotonic()

    first, second = asyncio.run(scenario())
    assert second - first >= 3 * INTERVAL - SLACK


def test_a_windows_amounts_never_add_up_past_the_limit() -> None:
    # spacing alone let a window hold the limit and one more: 4 x 3 = 12 of 10 in 0.45 s
    async def scenario() -> list[float]:
        pacer = Pacer(10, window_s=0.5)
        stamps = []
        for _ in range(5):
            await pacer.acquire(3)
            stamps.append(time.monotonic())
        return stamps

    stamps = asyncio.run(scenario())
    for i, start in enumerate(stamps):
        inside = sum(1 for t in stamps[i:] if t < start + 0.5 - SLACK)
        assert 3 * inside <= 10, [round(t - stamps[0], 3) for t in stamps]


def test_an_amount_larger_than_the_limit_goes_alone() -> None:
    async def scenario() -> tuple[float, float]:
        pacer = Pacer(10, window_s=0.2)
        await pacer.acquire(25)
        first = time.monotonic()
        await pacer.acquire(1)
        return first, time.monotonic()

    first, second = asyncio.run(scenario())
    assert second - first >= 0.2 - SLACK


# -- AdaptiveLimit -------------------------------------------------------------------------


async def _peak(limit: AdaptiveLimit, n: int, hold_s: float = 0.002) -> int:
    """How many of `n` coroutines were ever inside `limit` at once."""
    inside = peak = 0

    async def one() -> None:
        nonlocal inside, peak
        async with limit:
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(hold_s)
            inside -= 1

    await asyncio.gather(*(one() for _ in range(n)))
    return peak


def test_in_flight_never_exceeds_the_limit_and_reaches_it() -> None:
    limit = AdaptiveLimit(4)
    assert asyncio.run(_peak(limit, 30)) == 4
    assert limit.in_flight == 0


def test_a_limit_of_one_serialises() -> None:
    assert asyncio.run(_peak(AdaptiveLimit(1), 10)) == 1


def test_a_429_halves_once_per_cooldown_and_never_below_one() -> None:
    limit = AdaptiveLimit(8, cooldown_s=0.05)
    limit.on_rate_limited()
    assert limit.limit == 4
    limit.on_rate_limited()  # the other requests in flight saw the same 429
    limit.on_rate_limited()
    assert limit.limit == 4
    for expected in (2, 1, 1):
        time.sleep(0.06)
        limit.on_rate_limited()
        assert limit.limit == expected


def test_successes_grow_the_limit_by_one_per_round_up_to_the_ceiling() -> None:
    limit = AdaptiveLimit(6, cooldown_s=0.0)
    limit.on_rate_limited()
    assert limit.limit == 3
    for _ in range(2):
        limit.on_success()
    assert limit.limit == 3  # a round at limit 3 is three successes
    limit.on_success()
    assert limit.limit == 4
    for _ in range(3):
        limit.on_success()
    assert limit.limit == 4
    limit.on_success()
    assert limit.limit == 5
    for _ in range(100):
        limit.on_success()
    assert limit.limit == 6  # the ceiling is the recipe's concurrency


def test_a_429_resets_the_round_of_successes() -> None:
    limit = AdaptiveLimit(8, cooldown_s=0.0)
    limit.on_rate_limited()  # 4
    for _ in range(3):
        limit.on_success()
    limit.on_rate_limited()  # 2, and the three successes no longer count
    limit.on_success()
    assert limit.limit == 2
    limit.on_success()
    assert limit.limit == 3


def test_after_halving_new_work_waits_until_in_flight_is_under_the_new_limit() -> None:
    async def scenario() -> int:
        limit = AdaptiveLimit(8, cooldown_s=10.0)
        release = asyncio.Event()

        async def hold() -> None:
            async with limit:
                await release.wait()

        holders = [asyncio.create_task(hold()) for _ in range(8)]
        await asyncio.sleep(0)
        assert limit.in_flight == 8
        limit.on_rate_limited()
        assert limit.limit == 4
        peak_task = asyncio.create_task(_peak(limit, 12))
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(*holders)
        return await peak_task

    assert asyncio.run(scenario()) == 4


def test_waiters_wake_when_the_limit_grows() -> None:
    async def scenario() -> None:
        limit = AdaptiveLimit(2, cooldown_s=10.0)
        limit.on_rate_limited()
        assert limit.limit == 1
        release = asyncio.Event()
        entered = asyncio.Event()

        async def holder() -> None:
            async with limit:
                await release.wait()

        async def waiter() -> None:
            async with limit:
                entered.set()

        held = asyncio.create_task(holder())
        await asyncio.sleep(0)
        waiting = asyncio.create_task(waiter())
        await asyncio.sleep(0.01)
        assert not entered.is_set()
        limit.on_success()  # a full round at limit 1: room for one more, right now
        assert limit.limit == 2
        await asyncio.wait_for(entered.wait(), 1.0)
        assert not release.is_set()  # it got in while the holder was still inside
        release.set()
        await asyncio.gather(held, waiting)

    asyncio.run(scenario())


def test_a_cancelled_waiter_passes_its_wake_up_on() -> None:
    async def scenario() -> None:
        limit = AdaptiveLimit(1)
        release = asyncio.Event()
        second_in = asyncio.Event()

        async def holder() -> None:
            async with limit:
                await release.wait()

        async def first_waiter() -> None:
            async with limit:
                pytest.fail("the cancelled waiter must not get in")

        async def second_waiter() -> None:
            async with limit:
                second_in.set()

        held = asyncio.create_task(holder())
        await asyncio.sleep(0)
        first = asyncio.create_task(first_waiter())
        await asyncio.sleep(0)
        second = asyncio.create_task(second_waiter())
        await asyncio.sleep(0)
        # The holder leaves and wakes the first waiter; before it runs, it is cancelled.
        # Without passing the wake-up on, the second would wait for good: nobody is inside.
        release.set()
        await asyncio.sleep(0)
        await held
        assert limit.in_flight == 0
        first.cancel()
        await asyncio.wait_for(second_in.wait(), 1.0)
        await second
        assert first.cancelled()
        assert limit.in_flight == 0

    asyncio.run(scenario())


def test_cancelled_waiters_do_not_leak_slots() -> None:
    async def scenario() -> int:
        limit = AdaptiveLimit(2)
        release = asyncio.Event()

        async def hold() -> None:
            async with limit:
                await release.wait()

        holders = [asyncio.create_task(hold()) for _ in range(2)]
        await asyncio.sleep(0)
        doomed = [asyncio.create_task(hold()) for _ in range(5)]
        await asyncio.sleep(0)
        for task in doomed:
            task.cancel()
        release.set()
        await asyncio.gather(*holders)
        await asyncio.gather(*doomed, return_exceptions=True)
        assert limit.in_flight == 0
        return await _peak(limit, 10)

    assert asyncio.run(scenario()) == 2


def test_a_429_in_the_cooldown_still_breaks_a_run_of_successes() -> None:
    limit = AdaptiveLimit(8)
    limit.on_rate_limited()  # 8 -> 4, and a cooldown starts
    for _ in range(4):
        limit.on_success()
        limit.on_rate_limited()  # within the cooldown: no halving, but no run either
    assert limit.limit == 4


def test_a_claim_waits_for_requests_in_flight_rather_than_stop_the_run() -> None:
    async def scenario() -> tuple[bool, str | None, bool, str | None]:
        budget = Budget(Limits(max_cost_usd=1.0))
        first = budget.reserve(10, 0.6)
        assert first is not None
        waiting = asyncio.create_task(budget.claim(10, 0.6))  # fits once `first` settles
        await asyncio.sleep(0.01)
        assert not waiting.done() and budget.stopped is None
        budget.settle(first, 2, 0.01)
        second = await waiting
        assert second is not None
        budget.settle(second, 2, 0.01)
        # with nothing in flight, what cannot fit stops the run at once
        refused = await asyncio.wait_for(budget.claim(10, 0.99), 1)
        return True, None, refused is None, budget.stopped

    got, _, refused, stopped = asyncio.run(scenario())
    assert got and refused and stopped == "max_cost_usd"


def test_a_claim_waiting_for_room_ends_when_the_run_stops() -> None:
    async def scenario() -> Reservation | None:
        budget = Budget(Limits(max_tokens=100))
        assert budget.reserve(60, 0) is not None
        waiting = asyncio.create_task(budget.claim(60, 0))
        await asyncio.sleep(0.01)
        budget.stop("max_runtime")
        return await asyncio.wait_for(waiting, 1)

    assert asyncio.run(scenario()) is None
