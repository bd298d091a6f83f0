"""Where a loop resumes from: its state file in the out dir, and git commits of its workdir.

The state file (`<loop dir>/state.json`) is rewritten atomically after every iteration, so a
`ralph apply` after Ctrl-C or kill -9 goes on at the next iteration with the same `previous`,
`history`, spending and last checkpoint; a loop that finished `done` is not run again.
The state holds a fingerprint of its item and the task's templates: a state whose fingerprint
differs (another item took that key's place, say by position) is not reused.

Git checkpoints are careful with a repository that is not ralph's:
- nothing happens unless the agent's workdir is inside a git work tree;
- only paths under the workdir are added and committed (`git add -A -- .`, `git commit -- .`),
  as author and committer `ralph <ralph@localhost>`, without hooks or signing, never pushed;
- ralph's own files are left out when they are under the workdir: the output folder (loop
  states, archived iterations), the response cache (a live SQLite database) and the log file;
- a rollback happens only while HEAD is still the commit ralph made last; it stashes what
  changed under the workdir since (`git stash push -u`, message `ralph: ... rollback`), so the
  failed work is put aside, not destroyed, and no commit is rewritten or reset.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ralph.providers.command import kill_group, running
from ralph.recipe.model import Task
from ralph.run.outputs import write_atomic
from ralph.run.prepare import LoopContext
from ralph.shard import canonical

STATE_VERSION = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_GIT_TIMEOUT_S = 120.0
_IDENTITY = (
    "-c",
    "user.name=ralph",
    "-c",
    "user.email=ralph@localhost",
    "-c",
    "commit.gpgsign=false",
)


@dataclass
class LoopState:
    """Everything a loop needs to go on where it stopped."""

    iteration: int = 0
    answers: list[str] = field(default_factory=list)  # the last few, whole
    consecutive_failures: int = 0
    checkpoint: str | None = None  # the last commit ralph made in the workdir's repository
    stop: str | None = None  # why it ended; None while it runs (or when it was cut off)
    reason: str | None = None
    tokens: int = 0
    cost_usd: float = 0.0
    elapsed_s: float = 0.0
    agent: str | None = None  # the agent of the final answer
    output: str | None = None  # the rendered output path of the final iteration
    answer: str | None = None  # the final answer, kept once the loop is done
    fingerprint: str | None = None  # of the item and templates this state belongs to
    judged: bool = True  # False between an answer (saved, paid for) and its `until` verdict

    @classmethod
    def load(cls, path: Path) -> LoopState:
        """The saved state, or a fresh one when there is none (or it is not ours)."""
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError, RecursionError):
            return cls()
        if not isinstance(data, dict) or data.pop("version", None) != STATE_VERSION:
            return cls()
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if not all(_STATE_TYPES[k](v) for k, v in known.items()):
            return cls()  # edited by hand into something no loop saves
        return cls(**known)

    def save(self, path: Path, out_dir: Path) -> None:
        data: dict[str, Any] = {"version": STATE_VERSION, **asdict(self)}
        write_atomic(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n", within=out_dir)

    def context(self, iteration: int, history: int, limit_bytes: int) -> LoopContext:
        """The template variables of `iteration`: `previous` and the last `history` answers,
        each cut to its last `limit_bytes`."""
        answers = [tail(answer, limit_bytes) for answer in self.answers]
        return LoopContext(
            iteration, answers[-1] if answers else "", tuple(answers[-history:] if history else ())
        )

    def remember(self, answer: str, keep: int) -> None:
        """Keep `answer` among the last `keep` answers: whole, as the stall rule compares them."""
        self.answers = [*self.answers, answer][-max(1, keep) :]


def tail(text: str, limit: int) -> str:
    """The end of `text`, at most `limit` bytes of UTF-8, never splitting a character."""
    if limit <= 0:
        return ""
    data = text.encode()
    return text if len(data) <= limit else data[-limit:].decode("utf-8", "ignore")


def _optional(kind: type) -> Any:
    return lambda value: value is None or (isinstance(value, kind) and not isinstance(value, bool))


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _amount(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


_STATE_TYPES: dict[str, Any] = {
    "iteration": _count,
    "answers": lambda value: isinstance(value, list) and all(isinstance(a, str) for a in value),
    "consecutive_failures": _count,
    "checkpoint": _optional(str),
    "stop": _optional(str),
    "reason": _optional(str),
    "tokens": _count,
    "cost_usd": _amount,
    "elapsed_s": _amount,
    "agent": _optional(str),
    "output": _optional(str),
    "answer": _optional(str),
    "fingerprint": _optional(str),
    "judged": lambda value: isinstance(value, bool),
}
"""What each saved field must be; a state that is anything else is not reused."""


def fingerprint(task: Task, item: Any, context: Any) -> str:
    """What a loop's state belongs to: its item, the task's prompt and system templates, and
    what else they are rendered with (`context`: the vars, which --set and profiles change,
    and earlier tasks' outputs). A prompt_file counts by neither path nor text: it is read
    again every iteration, and editing it while loops run is how they are steered."""
    digest = hashlib.sha256(canonical(item))
    templates = json.dumps([task.prompt, task.system], ensure_ascii=False)
    digest.update(templates.encode("utf-8", "surrogatepass"))
    digest.update(canonical(context))
    return digest.hexdigest()[:32]


def fingerprint_context(vars: Any, outputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """What else than its item a loop's templates are rendered with, as its state's
    fingerprint takes it: the vars, and the earlier tasks' outputs when they are read (a task
    of one item that gave no answer counts as None)."""
    from jinja2 import Undefined

    if outputs is not None:
        outputs = {k: None if isinstance(v, Undefined) else v for k, v in outputs.items()}
    return {"vars": vars, "outputs": outputs}


def loop_folder(out_dir: Path, task: str, key: str | None) -> Path:
    """`<out>/<task>`, or `<out>/<task>/<item key>` for a task with for_each; a key that is no
    safe folder name is made one, with a hash of the key so two keys never share a folder."""
    if key is None:
        return out_dir / task
    safe = _UNSAFE.sub("_", key).strip(".")[:80]
    if safe != key:
        # surrogatepass: a key holding a lone surrogate has a folder too (as with --shard)
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        safe = f"{safe}-{digest}".lstrip("-")
    return out_dir / task / safe


@dataclass(frozen=True)
class GitResult:
    code: int
    out: str


async def git(cwd: Path, *args: str) -> GitResult:
    """Run git without a shell and without prompts; a git that cannot start is exit 127."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        process = await asyncio.create_subprocess_exec(
            "git",
            *_IDENTITY,
            *args,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        return GitResult(127, str(exc))
    with running(process):  # a second Ctrl-C kills it with the agents, in its grace too
        try:
            out, _ = await asyncio.wait_for(process.communicate(), _GIT_TIMEOUT_S)
        except BaseException:
            await kill_group(process)
            raise
    return GitResult(process.returncode or 0, out.decode("utf-8", "replace").strip())


class Checkpoints:
    """Commits of one workdir; one lock per repository keeps concurrent loops out of each
    other's index."""

    def __init__(self, workdir: Path, lock: asyncio.Lock, own: Sequence[Path] = ()) -> None:
        """`own`: ralph's files and folders (outputs, cache, log), never committed or stashed."""
        self.workdir = workdir
        self.lock = lock
        top = workdir.resolve()
        # (not the workdir itself, as with --out .: excluding it would leave nothing to commit)
        inside = [
            p.resolve() for p in own if p.resolve().is_relative_to(top) and p.resolve() != top
        ]
        self.paths = [".", *(f":(exclude){p.relative_to(top).as_posix()}" for p in inside)]

    @staticmethod
    async def repository(workdir: Path) -> Path | None:
        """The top of the git work tree holding `workdir`, or None when there is none."""
        if not workdir.is_dir():
            return None
        found = await git(workdir, "rev-parse", "--is-inside-work-tree", "--show-toplevel")
        lines = found.out.splitlines()
        if found.code != 0 or len(lines) != 2 or lines[0] != "true":
            return None
        return Path(lines[1])

    async def commit(self, message: str) -> tuple[str | None, str]:
        """Commit every change under the workdir: the new commit, or None and why not."""
        async with self.lock:
            added = await git(self.workdir, "add", "-A", "--", *self.paths)
            if added.code != 0:
                return None, f"git add failed: {added.out}"
            staged = await git(self.workdir, "diff", "--cached", "--quiet", "--", *self.paths)
            if staged.code == 0:
                return None, "nothing changed"
            committed = await git(
                self.workdir, "commit", "--no-verify", "-q", "-m", message, "--", *self.paths
            )
            if committed.code != 0:
                return None, f"git commit failed: {committed.out}"
            return await self.head(), "committed"

    async def head(self) -> str | None:
        found = await git(self.workdir, "rev-parse", "--verify", "-q", "HEAD")
        return found.out if found.code == 0 and found.out else None

    async def rollback(self, checkpoint: str | None, message: str) -> str:
        """Put aside what changed since `checkpoint`, if HEAD is still there; says what it did."""
        if checkpoint is None:
            return "skipped: ralph has made no checkpoint to roll back to"
        async with self.lock:
            head = await self.head()
            if head != checkpoint:
                return f"skipped: HEAD is {(head or 'unborn')[:12]}, not ralph's {checkpoint[:12]}"
            stashed = await git(
                self.workdir,
                "stash",
                "push",
                "--include-untracked",
                "-m",
                message,
                "--",
                *self.paths,
            )
            if stashed.code != 0:
                return f"failed: git stash: {stashed.out}"
            return f"rolled back to {checkpoint[:12]} (changes kept in `git stash list`)"
