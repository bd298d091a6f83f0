"""Running a recipe: keys checked first, one HTTP session, tasks in order, a clean stop.

Ctrl-C once stops starting work, cancels what is in flight and flushes what is done;
twice exits at once (every file is written atomically, so nothing is half-written).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import os
import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ralph.cache import ResponseCache
from ralph.errors import ConfigError
from ralph.items import numbered_items
from ralph.keys import KeyRing, KeySource
from ralph.observe.logs import event, flush_logs
from ralph.observe.summary import EXIT_INTERRUPTED, AgentStats, RunStats, TaskStats
from ralph.providers import HTTP_PROVIDERS, PROVIDERS
from ralph.recipe.model import Recipe
from ralph.run.agents import AgentRuntime
from ralph.run.limits import Budget
from ralph.run.lock import locked_out_dir
from ralph.run.prepare import reads_outputs

if TYPE_CHECKING:
    import aiohttp

    from ralph.shard import Shard


class Progress(Protocol):
    def advance(self, task: str, outcome: str, tokens: int, cost: float) -> None: ...

    def failed_after_all(self, task: str, was: str) -> None: ...


@dataclass(frozen=True)
class RunOptions:
    out_dir: Path
    cache_dir: Path | None = None
    concurrency: int | None = None
    seed: int | None = None
    shard: Shard | None = None
    serve: tuple[str, int] | None = None
    record_prompts: bool = False  # each item's prompt key in the summary, for plan --against
    log_file: Path | None = None  # ralph's own, like out_dir and cache_dir: loops never commit it


class Engine:
    def __init__(
        self,
        recipe: Recipe,
        options: RunOptions,
        logger: logging.Logger,
        progress: Progress | None = None,
        keys: KeyRing | None = None,
    ) -> None:
        self.recipe = recipe
        self.options = options
        self.logger = logger
        self.progress = progress
        self.keys = keys or KeyRing(recipe.agents)
        self.stats = RunStats(
            recipe=str(recipe.path),
            name=recipe.name,
            profile=recipe.profile,
            overrides=recipe.overrides,
            shard=options.shard.label if options.shard is not None else None,
        )
        self.budget = Budget(recipe.limits)
        self.rng = random.Random(options.seed)
        self.outputs: dict[str, Any] = {}
        self.keeps_answers = _any_template_uses_outputs(recipe)
        self.cache: ResponseCache | None = None
        self.runtimes: dict[str, AgentRuntime] = {}
        self.workers: set[asyncio.Task[None]] = set()
        self.stopping = False
        self._interrupts = 0

    def chain(self, name: str) -> list[AgentRuntime]:
        """The agent and its fallbacks, in order."""
        return [self.runtimes[agent] for agent in self.recipe.fallback_chain(name)]

    def agent_stats(self, runtime: AgentRuntime) -> AgentStats:
        agent = runtime.agent
        found = self.stats.agents.get(agent.name)  # called per attempt: build one only once
        if found is None:
            found = self.stats.agents[agent.name] = AgentStats(agent.provider, agent.model)
        return found

    def new_task_stats(self) -> TaskStats:
        return TaskStats()

    def stop_by(self, limit: str) -> None:
        if not self.stopping:
            self.stats.stopped_by = limit
            event(self.logger, logging.WARNING, "run_stopped", status=limit)
            self.budget.stop(limit)
        self.halt()

    def halt(self) -> None:
        """Start nothing more, and end the waits of requests not yet sent (for room in the
        budget, for a pace slot)."""
        self.stopping = True
        self.budget.stop("stopped")
        for runtime in self.runtimes.values():
            runtime.halted.set()

    def progress_advance(self, task: str, outcome: str) -> None:
        if self.progress is not None:
            agents = self.stats.agents.values()
            tokens = sum(a.input_tokens + a.output_tokens for a in agents)
            self.progress.advance(task, outcome, tokens, sum(a.cost_usd for a in agents))

    def prompt_hash(self, prompt: str) -> str:
        return hashlib.sha256(prompt.encode()).hexdigest()[:12]

    def interrupt(self) -> None:
        self._interrupts += 1
        if self._interrupts > 1:
            from ralph.providers.command import kill_all

            kill_all()
            os._exit(EXIT_INTERRUPTED)
        self.stats.interrupted = True
        self.stopping = True
        for worker in self.workers:
            worker.cancel()

    async def run(self) -> RunStats:
        """Run every task in order; the stats say how it ended (and so the exit code)."""
        from ralph.run.task import TaskRun, count_not_started

        used = set(self.recipe.agents_used())
        keys = {name: self._keys(name) for name in used}
        self.options.out_dir.mkdir(parents=True, exist_ok=True)
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(locked_out_dir(self.options.out_dir, self.options.shard))
            stack.enter_context(_frozen_heap())
            stack.enter_context(_on_sigint(asyncio.get_running_loop(), self.interrupt))
            if self.options.cache_dir is not None:
                self.cache = ResponseCache(self.options.cache_dir, preload=True)
                stack.callback(self.cache.close)
            session = None
            if used & _http(self.recipe):
                session = _session(self.recipe, used, self.options)
                stack.push_async_callback(session.close)
            if self.options.serve is not None:
                await self._serve(stack, *self.options.serve)
            self.runtimes = {name: self._runtime(name, keys[name], session) for name in used}
            stack.callback(asyncio.create_task(self._watch_runtime()).cancel)
            for task in self.recipe.tasks:
                if self.stopping:  # the summary still lists it, every item not started
                    stats = self.stats.tasks.setdefault(task.name, self.new_task_stats())
                    count_not_started(stats, numbered_items(task.items, self.options.shard))
                    continue
                await TaskRun(self, task).run()
            self.stats.finished = True
        self.stats.wall_s = self.stats.elapsed_s()
        return self.stats

    async def _serve(self, stack: contextlib.AsyncExitStack, host: str, port: int) -> None:
        from ralph.observe.metrics import StatusServer

        server = StatusServer(host, port, lambda: self.stats)
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(f"--serve {host}:{port}: {exc.strerror or exc}") from None
        stack.push_async_callback(server.stop)
        url = f"http://{host}:{server.port}"
        event(self.logger, logging.WARNING, "serving", url=url, paths="/healthz /metrics /status")
        flush_logs()  # the URL is needed now (port 0), not when the first batch is written

    def _keys(self, name: str) -> KeySource:
        """The agent's key source, read now: a missing key fails the run before any request."""
        return self.keys.read(name)

    def _runtime(
        self, name: str, keys: KeySource, session: aiohttp.ClientSession | None
    ) -> AgentRuntime:
        agent = self.recipe.agents[name]
        provider = PROVIDERS[agent.provider](agent, keys, session)
        return AgentRuntime(agent, provider, self.options.concurrency)

    async def _watch_runtime(self) -> None:
        remaining = self.budget.remaining_s()
        if remaining is None:
            return
        await asyncio.sleep(max(0.0, remaining))
        self.stop_by("max_runtime")


def _http(recipe: Recipe) -> set[str]:
    return {name for name, agent in recipe.agents.items() if agent.provider in HTTP_PROVIDERS}


def _session(recipe: Recipe, used: set[str], options: RunOptions) -> aiohttp.ClientSession:
    """One pooled session for the run, its connection pool sized to the agents' concurrency."""
    import aiohttp

    total = sum(recipe.agents[name].concurrency for name in used & _http(recipe))
    limit = min(total, options.concurrency) if options.concurrency else total
    connector = aiohttp.TCPConnector(
        limit=max(1, limit), limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30
    )
    return aiohttp.ClientSession(connector=connector, raise_for_status=False, trust_env=False)


def _any_template_uses_outputs(recipe: Recipe) -> bool:
    # answers are kept in memory only when a later task can read them
    return any(reads_outputs(task) for task in recipe.tasks[1:])


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """What exists when the run starts (modules, the recipe, templates: most of the heap)
    is left out of the garbage collector's passes until the run ends. Each full pass looked
    at all of it again, and the passes that the cache's preload and the items set off took
    longer than the preload itself. Garbage the run makes is collected as before."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# SIGTERM as Ctrl-C: what `docker stop`, Kubernetes and CI cancels send, and agents in
# their own process groups would not get it otherwise
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _on_sigint(loop: asyncio.AbstractEventLoop, handler: Any) -> Iterator[None]:
    try:
        for stop in _STOP_SIGNALS:
            loop.add_signal_handler(stop, handler)
    except (NotImplementedError, RuntimeError):  # not the main thread: leave Ctrl-C alone
        yield
        return
    try:
        yield
    finally:
        for stop in _STOP_SIGNALS:
            loop.remove_signal_handler(stop)


def run_recipe(
    recipe: Recipe,
    options: RunOptions,
    logger: logging.Logger,
    progress: Progress | None = None,
    keys: KeyRing | None = None,
) -> RunStats:
    """Run a recipe to the end (or to a stop) and return how it went."""
    return asyncio.run(Engine(recipe, options, logger, progress, keys).run())
