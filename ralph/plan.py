"""The plan: pure data built from a recipe, without a request sent or a byte written.

`ralph apply --dry-run` prints it, `ralph plan -o plan.json` saves it, and `ralph apply
plan.json` runs exactly that plan — the same profile, overrides and shard — refusing if the
recipe or its files changed since (their content hashes are part of the plan), the way
`terraform plan -out` / `apply` work.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ralph.cache import CachePeek, KeyMaker, short_key
from ralph.errors import RalphError
from ralph.filters import OUTPUT_FILTERS, apply_filters
from ralph.items import has_id, item_key, numbered_items
from ralph.observe.summary import SHARD_LABEL, shape_problem
from ralph.providers.base import AttemptError, estimate_tokens
from ralph.recipe.model import Agent, Recipe, Task
from ralph.run.agents import reserved_output_tokens
from ralph.run.attempts import worst_input_tokens
from ralph.run.checkpoint import LoopState, fingerprint, fingerprint_context, loop_folder
from ralph.run.outputs import OutputPathError
from ralph.run.prepare import ItemRejected, LoopContext, Preparer, reads_outputs
from ralph.templates import task_output

if TYPE_CHECKING:
    from ralph.shard import Shard

PLAN_KIND = "ralph-plan"
PLAN_VERSION = 2  # 2: the shard is recorded (a version 1 plan made with --shard ran every item)

_SAVED_PLAN_SCHEMA = {
    "type": "object",
    "required": ["plan_version", "recipe", "profile", "overrides", "shard", "fingerprints"],
    "properties": {
        "plan_version": {"const": PLAN_VERSION},
        "recipe": {
            "type": "string",
            "minLength": 1,
            "pattern": "^[^\\x00]*$",
            "x-error": "the path of a recipe file",
        },
        "profile": {"type": ["string", "null"]},
        "overrides": {"type": "array", "items": {"type": "string"}},
        "shard": SHARD_LABEL,
        "fingerprints": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
"""The fields `ralph apply plan.json` reads to run the plan again."""


class PlanError(RalphError):
    """A saved plan cannot be run: unreadable, or the recipe changed since it was made."""


@dataclass(frozen=True)
class RenderedPrompt:
    index: int
    item: str
    system: str | None
    prompt: str
    output: str | None


@dataclass(frozen=True)
class ItemError:
    index: int
    item: str
    message: str


@dataclass(frozen=True)
class TaskPlan:
    name: str
    agent: str
    provider: str
    model: str | None
    items: int
    cached: int
    requests: int
    max_requests: int
    input_tokens: int  # estimated (the agent's tokenizer setting)
    max_input_tokens: int  # the most they can be: a token a UTF-8 byte, as budgets reserve
    max_output_tokens: int
    cost_min_usd: float
    cost_max_usd: float
    prompts: tuple[RenderedPrompt, ...]
    errors: tuple[ItemError, ...]
    # item → short hash of its request (the cache key), to compare with a run's summary
    prompt_keys: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class LimitCheck:
    limit: str
    allowed: float
    needed: float

    @property
    def exceeded(self) -> bool:
        return self.needed > self.allowed


@dataclass(frozen=True)
class Plan:
    recipe: str
    name: str
    profile: str | None
    overrides: tuple[str, ...]
    shard: str | None  # "K/N" when the plan takes one shard of the items
    fingerprints: Mapping[str, str]
    tasks: tuple[TaskPlan, ...]
    limits: tuple[LimitCheck, ...]

    @property
    def requests(self) -> int:
        return sum(t.requests for t in self.tasks)

    @property
    def errors(self) -> int:
        return sum(len(t.errors) for t in self.tasks)

    @property
    def stopped_by(self) -> list[str]:
        return [c.limit for c in self.limits if c.exceeded]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fingerprints"] = dict(self.fingerprints)
        for task in data["tasks"]:
            del task["prompt_keys"]
        for check, out in zip(self.limits, data["limits"], strict=True):
            out["exceeded"] = check.exceeded
        return {"kind": PLAN_KIND, "plan_version": PLAN_VERSION, **data}


def build_plan(
    recipe: Recipe,
    cache_dir: Path | None,
    show: int | None = 3,
    shard: Shard | None = None,
    out_dir: Path = Path("out"),
) -> Plan:
    """The plan for `recipe`, with `show` prompts per task (None: all), cache hits and the
    loops saved under `out_dir`."""
    cache = CachePeek(cache_dir)
    try:
        sources = _Sources(cache, out_dir, {}, set() if cache_dir is not None else None)
        tasks = tuple(_task_plan(recipe, task, sources, show, shard) for task in recipe.tasks)
    finally:
        cache.close()
    return Plan(
        recipe=str(recipe.path),
        name=recipe.name,
        profile=recipe.profile,
        overrides=recipe.overrides,
        shard=shard.label if shard is not None else None,
        fingerprints=fingerprints(recipe),
        tasks=tasks,
        limits=_limit_checks(recipe, tasks),
    )


def fingerprints(recipe: Recipe) -> dict[str, str]:
    """Content hashes of every file the run reads: the recipe, prompt files, item files."""
    files = [recipe.path]
    for task in recipe.tasks:
        files += [p for p in (task.prompt_file, task.items.file if task.items else None) if p]
    return {str(path): _sha256(path) for path in dict.fromkeys(files)}


def check_fingerprints(saved: Mapping[str, str], recipe: Recipe) -> None:
    current = fingerprints(recipe)
    changed = sorted(p for p in saved.keys() | current.keys() if saved.get(p) != current.get(p))
    if changed:
        raise PlanError(
            f"the plan is stale: {', '.join(changed)} changed since it was made "
            "(run `ralph plan` again)"
        )


def load_saved_plan(path: Path) -> dict[str, Any]:
    """A plan saved by `ralph plan -o`, its fields checked before anything runs them."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PlanError(f"{path}: cannot read the plan: {exc}") from None
    if not isinstance(data, dict) or data.get("kind") != PLAN_KIND:
        raise PlanError(
            f"{path}: not a plan saved by `ralph plan -o` "
            "(a .json path is read as a saved plan; a recipe is a .yaml or .yml file)"
        )
    version = data.get("plan_version")
    if isinstance(version, int) and not isinstance(version, bool) and version != PLAN_VERSION:
        raise PlanError(
            f"{path}: plan version {version} is not supported (this ralph writes version "
            f"{PLAN_VERSION}): make the plan again with `ralph plan -o`"
        )
    problem = shape_problem(data, _SAVED_PLAN_SCHEMA)
    if problem is not None:
        raise PlanError(f"{path}: invalid plan: {problem}")
    return data


def is_saved_plan(path: Path) -> bool:
    return path.suffix == ".json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return "missing"
    return digest.hexdigest()


@dataclass(frozen=True)
class _Sources:
    """What a plan knows of earlier work: the cache, saved loops, earlier tasks' answers."""

    cache: CachePeek
    out_dir: Path
    outputs: dict[str, Any]
    # the keys the run will ask for, which later items asking the same find answered (as the
    # run's cache serves them); None without a cache
    asked: set[int] | None


def _task_plan(
    recipe: Recipe, task: Task, sources: _Sources, show: int | None, shard: Shard | None
) -> TaskPlan:
    cache, outputs = sources.cache, sources.outputs
    loops = _Loops(recipe, task, sources) if task.loop is not None else None
    agent = recipe.agents[task.agent]
    # the run looks an item up under every agent of the chain, in order
    chain = [
        (KeyMaker(recipe.agents[n]), recipe.agents[n]) for n in recipe.fallback_chain(task.agent)
    ]
    preparer = Preparer(recipe, task, outputs)
    use_cache = task.cache.enabled and task.loop is None
    items = cached = sendable = times = first_input = input_tokens = worst_input = 0
    prompts: list[RenderedPrompt] = []
    errors: list[ItemError] = []
    # what later tasks will see as outputs.<task>: the cached answer, or a stand-in (an item
    # that cannot be rendered is never answered, so it is not there)
    answers: dict[int | str, str] = {}
    prompt_keys: dict[str, str] = {}
    for index, item in numbered_items(task.items, shard):
        items += 1
        key = item_key(item, index)
        try:
            prepared = preparer.prepare(index, item)
        except (ItemRejected, OutputPathError) as exc:
            errors.append(ItemError(index, key, str(exc)))
            continue
        if show is None or len(prompts) < show:
            prompts.append(
                RenderedPrompt(index, key, prepared.system, prepared.prompt, prepared.output)
            )
        requests = [(maker.key(prepared.request(chained)), chained) for maker, chained in chain]
        prompt_keys[key] = short_key(requests[0][0])
        answer = _cached_answer(cache, [k for k, _ in requests], task) if use_cache else None
        duplicate = False
        if use_cache and answer is None and sources.asked is not None:
            # as the run looks it up: under every agent of the chain (not the key itself in
            # the set: a million keys are 100 MB)
            duplicate = any(hash(key) in sources.asked for key, _ in requests)
            sources.asked.add(hash(requests[0][0]))
        left, worst = 1, worst_input_tokens(prepared.request(agent))
        if loops is not None:
            answer, left = loops.saved(index, item, key)
            worst = loops.longest_input(index, item, agent) or worst
        slot = key if has_id(item) else index  # as the run keys outputs.<task>
        answers[slot] = answer if answer is not None else f"<answer of {task.name} item {key}>"
        if answer is not None or duplicate:
            cached += 1
            continue
        if not left:  # a loop its limit already stopped: it stops again, asking nothing
            continue
        sendable += 1
        times += left
        ratio = agent.chars_per_token
        system = estimate_tokens(prepared.system, ratio) if prepared.system else 0
        first_input += estimate_tokens(prepared.prompt, ratio) + system
        input_tokens += (estimate_tokens(prepared.prompt, ratio) + system) * left
        worst_input += worst * left
    outputs[task.name] = task_output(task.name, answers, one_item=task.items is None)
    worst_output = reserved_output_tokens(agent)  # the worst case a run's budget holds back
    price_in, price_out = agent.pricing.input_per_mtok / 1e6, agent.pricing.output_per_mtok / 1e6
    return TaskPlan(
        name=task.name,
        agent=agent.name,
        provider=agent.provider,
        model=agent.model,
        items=items,
        cached=cached,
        requests=sendable,
        max_requests=times,
        input_tokens=input_tokens,
        max_input_tokens=worst_input,
        max_output_tokens=times * worst_output,
        cost_min_usd=first_input * price_in,
        cost_max_usd=worst_input * price_in + times * worst_output * price_out,
        prompts=tuple(prompts),
        errors=tuple(errors),
        prompt_keys=prompt_keys,
    )


_ANSWER_STAND_IN = "\x1dralph-answer\x1d"  # text no template makes by chance


class _Loops:
    """What a loop task's items have left to do, by their saved states, and their longest
    prompt: the last allowed iteration's, with `previous` and `history` at their full size."""

    def __init__(self, recipe: Recipe, task: Task, sources: _Sources) -> None:
        assert task.loop is not None
        self.task, self.loop, self.out_dir = task, task.loop, sources.out_dir
        self.preparer = Preparer(recipe, task, sources.outputs)
        reads = sources.outputs if reads_outputs(task) else None
        self.context = fingerprint_context(recipe.vars, reads)  # as the run fingerprints it

    def saved(self, index: int, item: Any, key: str) -> tuple[str | None, int]:
        """The answer of a loop that ended done (else None), and the iterations it has left."""
        folder = loop_folder(self.out_dir, self.task.name, key if self.task.items else None)
        state = LoopState.load(folder / "state.json")
        if state.fingerprint != fingerprint(self.task, item, self.context):
            return None, self.loop.max_iterations
        if state.stop == "done" and state.answer is not None:
            return state.answer, 0
        return None, max(0, self.loop.max_iterations - state.iteration)

    def longest_input(self, index: int, item: Any, agent: Agent) -> int | None:
        """The most input tokens an iteration can send: rendered with a stand-in for each
        answer `previous` and `history` hold, then each counted at its full previous_size
        (not built: a previous_size may be larger than memory)."""
        stand_in = _ANSWER_STAND_IN
        history = (stand_in,) * self.loop.history
        context = LoopContext(self.loop.max_iterations, stand_in, history)
        try:
            prepared = self.preparer.prepare(index, item, context)
        except (ItemRejected, OutputPathError):
            return None
        shown = prepared.prompt.count(stand_in) + (prepared.system or "").count(stand_in)
        rendered = worst_input_tokens(prepared.request(agent))
        return rendered + shown * (self.loop.previous_bytes - len(stand_in.encode()))


def _cached_answer(cache: CachePeek, keys: list[str], task: Task) -> str | None:
    """The first answer cached under the chain's keys that today's output filters accept."""
    for key in keys:
        answer = _filtered(cache.answer(key), task)
        if answer is not None:
            return answer
    return None


def _filtered(answer: str | None, task: Task) -> str | None:
    """The cached answer as apply would use it; None if today's output filters reject it."""
    if answer is None:
        return None
    try:
        return apply_filters(answer, task.output_filters, OUTPUT_FILTERS)
    except AttemptError:
        return None


def _limit_checks(recipe: Recipe, tasks: tuple[TaskPlan, ...]) -> tuple[LimitCheck, ...]:
    limits = recipe.limits
    needed = {
        "max_requests": sum(t.max_requests for t in tasks),
        "max_tokens": sum(t.max_input_tokens + t.max_output_tokens for t in tasks),
        "max_cost_usd": sum(t.cost_max_usd for t in tasks),
    }
    allowed = {
        "max_requests": limits.max_requests,
        "max_tokens": limits.max_tokens,
        "max_cost_usd": limits.max_cost_usd,
    }
    return tuple(
        LimitCheck(name, float(value), float(needed[name]))
        for name, value in allowed.items()
        if value is not None
    )
