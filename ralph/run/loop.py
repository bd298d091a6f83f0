"""The Ralph loop: the same agent on the same (re-rendered) prompt until `until` holds.

Each iteration renders the prompt again (`iteration`, `previous`, `history`; a prompt file is
read again), asks the agent through the task's usual attempt path (retries, fallback, the
run's budget; never the response cache) and archives prompt and answer under
`<out>/<task>[/<item>]/iterations/`. After a successful iteration, `until` is checked first,
then the stall rule; between iterations the loop limits. So a loop whose last allowed
iteration says done ends `done`, not `max_iterations`.

Stops: done · max_iterations · max_runtime · max_tokens · max_cost_usd (loop limits, checked
between iterations, so one iteration may run over; spending and runtime add up across resumed
runs) · max_consecutive_failures (an iteration fails when the agent fails after its retries) ·
stalled (the last `stall.window` answers all at least `stall.similarity` alike) · error (a
template or output path failed). Anything but done is a failed item.

Resuming: a run limit, Ctrl-C or kill -9 leaves the loop where its state file says; the next
`ralph apply` goes on at the next iteration with everything counted so far. A loop that ended
`done` is not run again. One that ended otherwise goes on from its state too: at a limit it
stops again at once unless the recipe raised that limit; after max_consecutive_failures it
gets fresh chances. A state saved for another item (the key is the same, the item is not: an
item inserted before items without an `id`) or another prompt starts over, with a
`loop_restart` event, and the archived iterations of that other run are removed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ralph.errors import OutputError
from ralph.items import item_key
from ralph.observe.logs import event
from ralph.providers.base import Response
from ralph.recipe.build import thaw
from ralph.recipe.model import Loop
from ralph.run.checkpoint import (
    Checkpoints,
    LoopState,
    fingerprint,
    fingerprint_context,
    loop_folder,
)
from ralph.run.conditions import Verdict, evaluate, stalled
from ralph.run.outputs import (
    OrderedJsonl,
    OutputPathError,
    jsonl_path,
    safe_output_path,
    write_atomic,
)
from ralph.run.prepare import ItemRejected, Prepared, reads_outputs
from ralph.run.writer import Done

if TYPE_CHECKING:
    from ralph.run.agents import AgentRuntime
    from ralph.run.task import TaskRun

DONE = "done"


class LoopTask:
    """What the loops of one task share: its JSONL lines, its workdir and that workdir's git."""

    def __init__(self, run: TaskRun, loop: Loop) -> None:
        self.task_run = run
        self.loop = loop
        task, engine = run.task, run.engine
        self.out_dir = engine.options.out_dir
        # loop lines carry `iterations` and `stop`, so they are written here, not by TaskWriter
        self.lines = (
            OrderedJsonl(jsonl_path(self.out_dir, task.name, engine.options.shard))
            if task.output is None
            else None
        )
        self.workdir = engine.recipe.agents[task.agent].workdir or engine.recipe.base_dir
        # what the templates are rendered with besides the item, for the states' fingerprints
        reads = engine.outputs if reads_outputs(task) else None
        self.context = fingerprint_context(engine.recipe.vars, reads)
        self._keys: set[str] = set()  # of this run's items: each loop's folder is named by one
        self._git: Checkpoints | None = None
        self._looked_for_git = False
        self._git_lock = asyncio.Lock()

    async def checkpoints(self) -> Checkpoints | None:
        """Git checkpoints of the workdir, when the loop asks for them and it is a repository."""
        if self.loop.checkpoint is None:
            return None
        async with self._git_lock:
            if not self._looked_for_git:
                self._looked_for_git = True
                if await Checkpoints.repository(self.workdir) is not None:
                    options = self.task_run.engine.options
                    mine = (options.out_dir, options.cache_dir, options.log_file)
                    own = [path for path in mine if path is not None]
                    self._git = Checkpoints(self.workdir, asyncio.Lock(), own)
                else:
                    event(
                        self.task_run.log,
                        logging.WARNING,
                        "loop_checkpoint",
                        task=self.task_run.task.name,
                        status="not a git repository",
                    )
        return self._git

    def expect(self, index: int) -> None:
        if self.lines is not None:
            self.lines.expect(index)

    async def process(self, index: int, item: Any) -> None:
        key = item_key(item, index)
        if key in self._keys and self.task_run.task.items is not None:
            reason = (
                f"an earlier item has the key '{key}' too: each loop keeps its state in a "
                "folder named by its item's key, so loop items need ids of their own"
            )
            self.task_run.fail(index, item, reason)
            if self.lines is not None:
                record = {"index": index, "item": thaw(item), "status": "failed", "error": reason}
                self.lines.add(index, record)
            return
        self._keys.add(key)
        await ItemLoop(self, index, item).run()

    def close(self) -> None:
        if self.lines is not None:
            try:
                self.lines.close()
            except OSError as exc:
                raise OutputError(
                    f"cannot write {self.lines.path}: {exc.strerror or exc}"
                ) from None


class ItemLoop:
    """One item's loop, from its saved state to a stop."""

    def __init__(self, shared: LoopTask, index: int, item: Any) -> None:
        self.shared, self.loop, self.task_run = shared, shared.loop, shared.task_run
        self.index, self.item, self.key = index, item, item_key(item, index)
        has_items = self.task_run.task.items is not None
        self.dir = loop_folder(
            shared.out_dir, self.task_run.task.name, self.key if has_items else None
        )
        self.state_path = self.dir / "state.json"
        self.state = LoopState.load(self.state_path)
        mark = fingerprint(self.task_run.task, item, shared.context)
        # the iterations of a saved state that is not this item's (0: nothing worth a word)
        self.replaced = self.state.iteration if self.state.fingerprint != mark else 0
        if self.state.fingerprint != mark:
            self.state = LoopState(fingerprint=mark)
        self.started = time.monotonic()
        self.spent_before_s = self.state.elapsed_s
        self.final: Prepared | None = None
        self.answer: str | None = None
        self.git: Checkpoints | None = None

    async def run(self) -> None:
        if self.replaced:
            self._restart()
        if self.state.stop == DONE and self.state.answer is not None:
            self._finish_done(self.state.answer, cached=True)
            return
        if self.state.stop == "max_consecutive_failures":
            self.state.consecutive_failures = 0  # a new run gives a failing agent fresh chances
        self.state.stop = self.state.reason = None
        self._sweep()
        self.git = await self.shared.checkpoints()
        stop = await self._judge_saved() if not self.state.judged else None
        if stop is None:
            stop = await self._iterate()
        if stop is None:  # a run limit or Ctrl-C: the saved state is where the next run goes on
            self._save()
            self.task_run.not_started(self.index)
            self._line(None)
            return
        await self._end(stop)

    async def _iterate(self) -> str | None:
        while True:
            stop = self._limit_reached()
            if stop is not None or self.task_run.engine.stopping:
                return stop
            number = self.state.iteration + 1
            try:
                prepared = self._prepare(number)
            except (ItemRejected, OutputPathError) as exc:
                self.state.reason = str(exc)
                self.task_run.security_event(exc, self.key)
                return "error"
            write_atomic(
                self._archive(number, "prompt"), prepared.prompt, within=self.shared.out_dir
            )
            outcome = await self.task_run.ask(prepared)
            if not isinstance(outcome, tuple | str):
                return None
            self.state.iteration = number
            if isinstance(outcome, str):
                stop = await self._failed(number, outcome)
            else:
                stop = await self._answered(number, prepared, *outcome)
            self._save()
            if stop is not None:
                return stop

    def _limit_reached(self) -> str | None:
        loop, state = self.loop, self.state
        if state.iteration >= loop.max_iterations:
            return "max_iterations"
        if loop.max_runtime_s is not None and self._elapsed_s() >= loop.max_runtime_s:
            return "max_runtime"
        if loop.max_tokens is not None and state.tokens >= loop.max_tokens:
            return "max_tokens"
        if loop.max_cost_usd is not None and state.cost_usd >= loop.max_cost_usd:
            return "max_cost_usd"
        return None

    def _prepare(self, number: int) -> Prepared:
        context = self.state.context(number, self.loop.history, self.loop.previous_bytes)
        return self.task_run.preparer.prepare(self.index, self.item, context)

    async def _answered(
        self, number: int, prepared: Prepared, rt: AgentRuntime, text: str, response: Response
    ) -> str | None:
        state, loop = self.state, self.loop
        cost = rt.cost(response.input_tokens, response.output_tokens)
        state.tokens += response.input_tokens + response.output_tokens
        state.cost_usd += cost
        state.consecutive_failures = 0
        state.agent, state.output = rt.agent.name, prepared.output
        self.final, self.answer = prepared, text
        write_atomic(self._archive(number, "answer"), text, within=self.shared.out_dir)
        state.remember(text, max(loop.history, loop.stall_window))
        # saved before the verdict: a check that is cut off (Ctrl-C in a long test run) must
        # not lose an answer that was paid for; the next run judges it first
        state.judged = False
        self._save()
        verdict, likeness = await self._judge(prepared, text)
        state.judged = True
        self._log_iteration(
            number,
            "ok",
            agent=rt.agent.name,
            until="met" if verdict.met else "not met",
            detail=verdict.why,
            input_tokens=response.input_tokens,
            output_tokens=response.output_tokens,
            cost_usd=round(cost, 8),
            similarity=None if likeness is None else round(likeness, 3),
        )
        if verdict.met:  # before any limit: done on the last allowed iteration is done
            # saved with this iteration, so a kill before the end cannot lose the verdict
            state.stop, state.answer = DONE, text
            return DONE
        if likeness is not None:
            return "stalled"
        every = loop.checkpoint.every if loop.checkpoint else 0
        if every and number % every == 0:
            await self._checkpoint(number)
        return None

    async def _judge_saved(self) -> str | None:
        """The verdict on the last answer, which a stop cut off before it was judged: the
        loop's stop if it is one (None: go on iterating)."""
        number = self.state.iteration
        try:
            text = self._archive(number, "answer").read_text("utf-8")
        except (OSError, UnicodeError):
            self.state.judged = True  # nothing left to judge: the next iteration will tell
            return None
        verdict, likeness = await self._judge(None, text)
        self.state.judged = True
        self._log(
            logging.INFO,
            "loop_judged",
            iteration=number,
            until="met" if verdict.met else "not met",
            detail=verdict.why,
        )
        if verdict.met:
            self.answer = text
            return DONE
        return "stalled" if likeness is not None else None

    async def _judge(self, prepared: Prepared | None, text: str) -> tuple[Verdict, float | None]:
        """Whether `until` holds, and else how alike the last answers are if they stalled."""
        reference = self.task_run.preparer.instructions(self.item, self.state.iteration)
        if not reference and prepared is not None:
            reference = (
                f"{prepared.system}\n{prepared.prompt}" if prepared.system else prepared.prompt
            )
        verdict = await evaluate(self.loop.until, text, reference, self.shared.workdir)
        if verdict.met:
            return verdict, None
        return verdict, stalled(
            self.state.answers, self.loop.stall_window, self.loop.stall_similarity
        )

    async def _failed(self, number: int, reason: str) -> str | None:
        self.state.consecutive_failures += 1
        self._log_iteration(
            number, "failed", error=reason, consecutive_failures=self.state.consecutive_failures
        )
        if self.state.consecutive_failures < self.loop.max_consecutive_failures:
            return None
        self.state.reason = reason
        if self.git is not None and self._rolls_back():
            message = f"ralph: {self.task_run.task.name} rollback after iteration {number}"
            status = await self.git.rollback(self.state.checkpoint, message)
            self._log(logging.WARNING, "loop_rollback", iteration=number, status=status)
        return "max_consecutive_failures"

    def _rolls_back(self) -> bool:
        return self.loop.checkpoint is not None and self.loop.checkpoint.on_failure == "rollback"

    async def _checkpoint(self, number: int) -> None:
        if self.git is None:
            return
        message = f"ralph: {self.task_run.task.name} iteration {number}"
        commit, status = await self.git.commit(message)
        if commit is not None:
            self.state.checkpoint = commit
        short = commit[:12] if commit else None
        self._log(logging.INFO, "loop_checkpoint", iteration=number, status=status, commit=short)

    async def _end(self, stop: str) -> None:
        # after a rollback the failed work is put aside; committing it would undo that
        rolled_back = stop == "max_consecutive_failures" and self._rolls_back()
        if not rolled_back and self.state.iteration:
            await self._checkpoint(self.state.iteration)
        self.state.stop = stop
        self.state.answer = self.answer if stop == DONE else None
        self._save()
        self.task_run.stats.loop_stops[stop] += 1
        self._log(
            logging.INFO if stop == DONE else logging.WARNING,
            "loop_end",
            stop=stop,
            iterations=self.state.iteration,
            tokens=self.state.tokens,
            cost_usd=round(self.state.cost_usd, 8),
            error=self.state.reason,
        )
        if stop == DONE and self.answer is not None:
            self._finish_done(self.answer, cached=False)
            return
        reason = self.state.reason if stop == "error" else f"loop stopped by {stop}"
        self.task_run.fail(self.index, self.item, reason or stop)
        self._line({"status": "failed", "error": reason, "answer": self.answer})

    def _finish_done(self, text: str, *, cached: bool) -> None:
        """Hand the final answer on like any finished item: output file, outputs.<task>."""
        state = self.state
        path = safe_output_path(self.shared.out_dir, state.output) if state.output else None
        prepared = self.final or Prepared(
            self.index, self.key, self.item, "", None, state.output, state.iteration, path
        )
        agent = state.agent or self.task_run.task.agent
        response = Response(text, state.tokens, 0)
        self.task_run.succeed(Done(prepared, agent, text, response, None, cached))
        self._line({"status": "cached" if cached else "done", "answer": text})

    def _line(self, record: dict[str, Any] | None) -> None:
        lines, state = self.shared.lines, self.state
        if lines is None:
            return
        if record is None:  # not finished: no line, as for any item a stop kept from running
            lines.add(self.index, None)
            return
        usage = {"tokens": state.tokens, "cost_usd": round(state.cost_usd, 8)}
        lines.add(
            self.index,
            {
                "index": self.index,
                "item": thaw(self.item),
                **record,
                "agent": state.agent,
                "iterations": state.iteration,
                "stop": state.stop,
                "usage": usage,
            },
        )

    def _restart(self) -> None:
        """Start over from a state saved for another item or prompt, and remove that run's
        archived iterations, which would otherwise pass for this item's."""
        removed = 0
        for archived in (self.dir / "iterations").glob("[0-9]*.md"):
            archived.unlink(missing_ok=True)
            removed += 1
        self._log(
            logging.WARNING,
            "loop_restart",
            reason="the saved state is of another item or prompt",
            saved_iterations=self.replaced,
            removed_files=removed,
        )

    def _sweep(self) -> None:
        """Remove temp files a kill -9 left mid-write (their targets are intact)."""
        for folder in (self.dir, self.dir / "iterations"):
            for temp in folder.glob(".*.tmp"):
                temp.unlink(missing_ok=True)

    def _save(self) -> None:
        self.state.elapsed_s = self._elapsed_s()
        self.state.save(self.state_path, self.shared.out_dir)

    def _elapsed_s(self) -> float:
        return self.spent_before_s + time.monotonic() - self.started

    def _archive(self, number: int, kind: str) -> Path:
        return self.dir / "iterations" / f"{number:04d}.{kind}.md"

    def _log_iteration(self, number: int, status: str, **fields: Any) -> None:
        self.task_run.stats.iterations += 1
        level = logging.INFO if status == "ok" else logging.WARNING
        self._log(level, "loop_iteration", iteration=number, status=status, **fields)

    def _log(self, level: int, name: str, **fields: Any) -> None:
        event(self.task_run.log, level, name, task=self.task_run.task.name, item=self.key, **fields)
