"""One task of a run: a bounded pool of workers pulling items from a stream.

Workers never outnumber the agents' concurrency, so memory stays flat for a million items.
Finished items go to a TaskWriter (writer.py), which caches and writes them in batches.
A task with `loop:` hands each item to its loop (loop.py), which asks through the same
path (`ask`): the fallback chain, and each agent's attempts (attempts.py) with their retries
and the run's budget, without the response cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ralph.cache import KeyMaker, short_key
from ralph.errors import OutputError
from ralph.filters import OUTPUT_FILTERS, apply_filters
from ralph.items import item_key, numbered_items
from ralph.observe.logs import emit, event
from ralph.providers.base import AttemptError, Request, Response
from ralph.recipe.model import Task
from ralph.run.agents import AgentRuntime
from ralph.run.attempts import STOPPED, Attempts, Stopped
from ralph.run.loop import LoopTask
from ralph.run.outputs import OutputPathError, jsonl_path
from ralph.run.prepare import ItemRejected, Prepared, Preparer
from ralph.run.writer import Done, Failed, Outcome, Skipped, TaskWriter
from ralph.secrets import count_secrets
from ralph.templates import task_output

if TYPE_CHECKING:
    from ralph.observe.summary import TaskStats
    from ralph.run.engine import Engine

FLUSH_INTERVAL_S = 0.05
MAX_WORKERS = 4096
"""Workers a task starts at most, whatever the concurrency asked: each costs memory, and a
typo such as `concurrency: 1000000` took 24 s and 1.7 GB to start the workers for four items."""
YIELD_EVERY = 64
"""Items a worker handles before it lets the event loop run: cache hits and the echo agent
never wait, and without this a long run of them would hold off Ctrl-C, the periodic flush
and --serve until it ended."""


def count_not_started(stats: TaskStats, items: Iterator[Any]) -> None:
    """Count `items` as never started (a stop kept them from it), as far as they can be read."""
    from ralph.errors import ItemsError

    rest = 0
    with contextlib.suppress(ItemsError):
        for _ in items:
            rest += 1
    stats.items += rest
    stats.not_started += rest


class TaskRun:
    def __init__(self, engine: Engine, task: Task) -> None:
        self.engine = engine
        self.task = task
        self.stats = engine.stats.tasks.setdefault(task.name, engine.new_task_stats())
        self.preparer = Preparer(engine.recipe, task, engine.outputs, engine.options.out_dir)
        self.chain = engine.chain(task.agent)
        self.key_makers = [KeyMaker(rt.agent) for rt in self.chain]
        self.items = numbered_items(task.items, engine.options.shard)
        # a loop must really call its agent each iteration, so it never reads the cache
        self.use_cache = engine.cache is not None and task.cache.enabled and task.loop is None
        self.loops = LoopTask(self, task.loop) if task.loop is not None else None
        self._redacts = any(f.name == "redact_secrets" for f in task.output_filters)
        self.writer = TaskWriter(
            engine.options.out_dir,
            jsonl_path(engine.options.out_dir, task.name, engine.options.shard)
            if task.output is None and task.loop is None
            else None,
            engine.cache if self.use_cache else None,
            task.cache.ttl_s,
            engine.keeps_answers,
            self._unwritten,
            redact=self._redacts,
        )
        self.write_error: OutputError | None = None
        self._asking: dict[str, asyncio.Event] = {}  # by key: the requests on their way
        self._failed: set[str] = set()  # keys asked for in vain: the same items ask again
        self.log = engine.logger
        self.attempts = Attempts(engine, task.name, self.filter_answer)

    async def run(self) -> None:
        started = time.monotonic()
        count = min(
            sum(rt.limit.ceiling for rt in self.chain),
            self.engine.options.concurrency or MAX_WORKERS,
            MAX_WORKERS,
        )
        workers = [asyncio.create_task(self._worker()) for _ in range(max(1, count))]
        self.engine.workers.update(workers)
        flusher = asyncio.create_task(self._flush_periodically())
        try:
            results = await asyncio.gather(*workers, return_exceptions=True)
            if self.engine.stats.stopped_by is not None:
                self._count_the_rest()
        finally:
            self.engine.workers.difference_update(workers)
            flusher.cancel()
            self._flush(self.writer.close)
            if self.loops is not None:
                self._flush(self.loops.close)
            self._publish_answers()
            self.stats.wall_s += time.monotonic() - started
        if self.write_error is not None:
            raise self.write_error
        for result in results:
            if isinstance(result, Exception):
                raise result

    def _count_the_rest(self) -> None:
        """After a limit stop, how many items never started, so the summary says what is left."""
        count_not_started(self.stats, self.items)

    async def _worker(self) -> None:
        handled = 0
        while not self.engine.stopping:
            try:
                index, item = next(self.items)
            except StopIteration:
                return
            self.stats.items += 1
            self.writer.expect(index)
            if self.loops is not None:
                self.loops.expect(index)
            try:
                await self._process(index, item)
            except OutputError as exc:  # the log file, written as the item goes
                self._cannot_keep(exc)
                return
            handled += 1
            if handled % YIELD_EVERY == 0:
                await asyncio.sleep(0)

    async def _process(self, index: int, item: Any) -> None:
        if self.loops is not None:
            await self.loops.process(index, item)
            return
        try:
            prepared = self.preparer.prepare(index, item)
        except (ItemRejected, OutputPathError) as exc:
            self.refuse(index, item, exc)
            return
        requests = [(rt, prepared.request(rt.agent)) for rt in self.chain]
        keys = [
            maker.key(req) if self.use_cache else None
            for maker, (_, req) in zip(self.key_makers, requests, strict=True)
        ]
        if self.engine.options.record_prompts:
            primary = keys[0] or self.key_makers[0].key(requests[0][1])
            self.stats.prompts[prepared.key] = short_key(primary)
        if self._from_cache(prepared, requests, keys):
            return
        answered, leads = await self._join(prepared, requests, keys)
        if answered:
            return
        try:
            outcome = await self.ask(prepared, requests, keys)
            if isinstance(outcome, tuple):
                rt, text, response = outcome
                key = keys[self.chain.index(rt)]
                self.succeed(Done(prepared, rt.agent.name, text, response, key, False))
            elif isinstance(outcome, str):
                self.fail(index, item, outcome)
            else:
                self.not_started(index)
            if leads is not None and not isinstance(outcome, tuple):
                self._failed.add(leads)
        finally:
            if leads is not None:
                self._asking.pop(leads).set()

    async def _join(
        self,
        prepared: Prepared,
        requests: list[tuple[AgentRuntime, Request]],
        keys: list[str | None],
    ) -> tuple[bool, str | None]:
        """An item that asks what another is asking now waits for that answer, a hit once it
        comes: the same prompt twice in a task is paid for once. Whether it was answered so;
        else the key it asks for itself, with the others waiting on it (None: not waited on).
        Once a key's request failed, its items ask for themselves, side by side."""
        shared = keys[0]
        if shared is None or shared in self._failed:
            return False, None
        while (asking := self._asking.get(shared)) is not None:
            await asking.wait()
            if self._from_cache(prepared, requests, keys):
                return True, None
            if shared in self._failed:
                return False, None
        self._asking[shared] = asyncio.Event()
        return False, shared

    async def ask(
        self,
        prepared: Prepared,
        requests: list[tuple[AgentRuntime, Request]] | None = None,
        keys: list[str | None] | None = None,
    ) -> tuple[AgentRuntime, str, Response] | str | Stopped:
        """The agent's answer (falling back along the chain), why none came, or STOPPED."""
        requests = requests or [(rt, prepared.request(rt.agent)) for rt in self.chain]
        keys = keys or [None] * len(requests)
        reason = "no agent available"
        for (rt, request), key in zip(requests, keys, strict=True):
            if rt.exhausted is not None:
                reason = f"agent '{rt.agent.name}' is exhausted: {rt.exhausted}"
                continue
            outcome = await self.attempts.run(rt, request, prepared, key)
            if isinstance(outcome, tuple):
                return rt, *outcome
            if outcome is STOPPED:
                return STOPPED
            reason = str(outcome)
        return reason

    def _from_cache(
        self,
        prepared: Prepared,
        requests: list[tuple[AgentRuntime, Request]],
        keys: list[str | None],
    ) -> bool:
        cache = self.engine.cache
        for (rt, _), key in zip(requests, keys, strict=True):
            hit = cache.get(key) if key is not None and cache is not None else None
            if hit is None or key is None:  # (a hit has a key: said again for mypy)
                continue
            try:
                text = self.filter_answer(hit[0].text, prepared)
            except AttemptError:
                continue  # the filters changed since it was cached; ask again
            self.engine.agent_stats(rt).cache_hits += 1
            if self.log.isEnabledFor(logging.INFO):
                fields = {"task": self.task.name, "item": prepared.key, "agent": rt.agent.name}
                fields.update(cache="hit", cache_key=short_key(key))
                emit(self.log, logging.INFO, "cache_hit", fields)
            self.succeed(Done(prepared, rt.agent.name, text, hit[0], key, True))
            return True
        return False

    def succeed(self, done: Done) -> None:
        self.stats.done += 1
        if done.cached:
            self.stats.cached += 1
        self.engine.progress_advance(self.task.name, "cached" if done.cached else "done")
        self._keep(done)

    def filter_answer(self, text: str, prepared: Prepared) -> str:
        """The answer through the task's output filters; a redaction is a security event."""
        filtered = apply_filters(text, self.task.output_filters, OUTPUT_FILTERS)
        if self._redacts and filtered != text and (found := count_secrets(text)):
            event(
                self.log,
                logging.WARNING,
                "security.redacted",
                task=self.task.name,
                item=prepared.key,
                count=found,
            )
        return filtered

    def refuse(self, index: int, item: Any, error: ItemRejected | OutputPathError) -> None:
        """An item that cannot be sent; a refusal for safety is also a security event."""
        self.security_event(error, item_key(item, index))
        self.fail(index, item, str(error))

    def security_event(self, error: ItemRejected | OutputPathError, item: str) -> None:
        kind = "security.output_path_refused" if isinstance(error, OutputPathError) else None
        kind = kind or getattr(error, "security", None)
        if kind is not None:
            event(self.log, logging.WARNING, kind, task=self.task.name, item=item, error=str(error))

    def fail(self, index: int, item: Any, reason: str) -> None:
        self.engine.progress_advance(self.task.name, "failed")
        self._count_failure(item_key(item, index), reason)
        self._keep(Failed(index, item, reason))

    def _count_failure(self, key: str, reason: str) -> None:
        self.stats.failed += 1
        self.stats.failures[reason] += 1
        event(self.log, logging.ERROR, "item_failed", task=self.task.name, item=key, error=reason)

    def not_started(self, index: int) -> None:
        self.stats.not_started += 1
        self._keep(Skipped(index))

    def _keep(self, outcome: Outcome) -> None:
        if self.writer.add(outcome):
            self._flush(self.writer.submit)

    def _flush(self, write: Callable[[], None]) -> None:
        """`write` (submit or close); when the cache or the JSONL cannot be written, nothing
        more is asked (its answer could not be kept) and the error ends the task."""
        try:
            write()
        except OutputError as exc:
            self._cannot_keep(exc)

    def _cannot_keep(self, error: OutputError) -> None:
        self.write_error = self.write_error or error
        self.engine.halt()

    def _unwritten(self, done: Done, reason: str) -> None:
        """A finished item whose output file could not be written fails after all."""
        self.stats.done -= 1
        if done.cached:
            self.stats.cached -= 1
        if self.engine.progress is not None:
            self.engine.progress.failed_after_all(
                self.task.name, "cached" if done.cached else "done"
            )
        self._count_failure(done.prepared.key, reason)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            self._flush(self.writer.submit)

    def _publish_answers(self) -> None:
        answers = self.writer.answers
        if answers is None:
            return
        name = self.task.name
        self.engine.outputs[name] = task_output(name, answers, one_item=self.task.items is None)
