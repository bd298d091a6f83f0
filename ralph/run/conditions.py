"""When a Ralph loop is done (`loop.until`), and when it has stalled.

The marker rule. The prompt tells the agent which marker to print, so the marker is in the
prompt, and an agent that repeats or quotes its prompt would "say" it without meaning it. So:

1. The marker must occur as a whole word: no letter, digit or `_` right before or after it
   (`LOOP_COMPLETE` does not match `LOOP_COMPLETED` or `NOT_LOOP_COMPLETE`). Case counts.
2. An occurrence is ignored when it is an echo of the prompt: when some stretch of the answer
   around it, holding at least two words besides the marker, also occurs in the prompt or the
   system prompt as rendered without `previous` and `history` (an answer that repeats an
   earlier answer is no echo). The stretches tried are the marker with the three words before
   it, the marker with the three words after it (both within its line), its whole line, and
   its line together with the non-blank line before or after it. Both texts are compared
   normalized: case folded, whitespace collapsed, quote and emphasis characters and leading
   `>`, `#`, `-`, `*`, `1.` decorations dropped, so a quoted (`> ...`) or re-wrapped copy of
   the prompt is still recognised as one.
3. The loop is done when at least one occurrence is not an echo.

So `LOOP_COMPLETE` on a line of its own counts, unless the answer copies the prompt's lines
around it too; `Status: LOOP_COMPLETE` and `All done, LOOP_COMPLETE.` count; a copied
instruction ("I will print LOOP_COMPLETE on its own line when done", when the prompt says
"print LOOP_COMPLETE on its own line") does not. An instruction reworded (its words around the
marker in another order) is not recognised: it counts. The safe habit is to ask the
agent for the marker on a line of its own. `{regex: ...}` is searched as written
(multiline), with no echo rule: the user owns the pattern.

The other conditions look at the agent's workdir: `{file: PATH}` (checked boxes, a string)
and `{command: [...]}` (exit 0, run without a shell, its process group killed on timeout).
`{all: [...]}` stops at the first condition not met and `{any: [...]}` at the first met, in
the order written, so "the agent says done AND the tests pass" runs no tests before the agent
says done.
"""

from __future__ import annotations

import asyncio
import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ralph.providers.command import kill_group, running
from ralph.recipe.model import (
    AllOf,
    AnyOf,
    CommandCondition,
    Condition,
    FileCondition,
    Marker,
    RegexCondition,
)

ECHO_MIN_WORDS = 2
PHRASE_WORDS = 3
_TAIL_CHARS = 400
_LEAD = re.compile(r"^\s*(?:(?:[>#*+-]+|\d+[.)])\s*)*")
_DECORATION = str.maketrans("", "", "`*\"'“”‘’")  # noqa: RUF001 - curly quotes on purpose
_WORD = re.compile(r"\w+")
_BOX = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+\[([ xX])\]", re.MULTILINE)


@dataclass(frozen=True)
class Verdict:
    met: bool
    why: str


# -- markers --------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """One line as compared for echoes: no decoration, no quotes, case folded, single spaces."""
    return " ".join(_LEAD.sub("", text).translate(_DECORATION).casefold().split())


def normalize_prompt(prompt: str) -> str:
    return " ".join(n for n in map(normalize, prompt.splitlines()) if n)


def marker_found(answer: str, marker: str, prompt: str) -> bool:
    """Whether `answer` says `marker` itself, not in a copy of `prompt` (see the module doc)."""
    pattern = re.compile(rf"(?<!\w){re.escape(marker)}(?!\w)")
    reference = normalize_prompt(prompt)
    lines = answer.splitlines()
    for number, line in enumerate(lines):
        for match in pattern.finditer(line):
            windows = _windows(lines, number, match.start(), match.end())
            if not any(_is_echo(window, pattern, reference) for window in windows):
                return True
    return False


def _windows(lines: list[str], number: int, start: int, end: int) -> list[list[str]]:
    """Stretches of the answer around one occurrence, as lists of lines (or parts of one)."""
    line = lines[number]
    windows = [[line]]
    before = [w.start() for w in _WORD.finditer(line, 0, start)]
    after = [w.end() for w in _WORD.finditer(line, end)]
    if len(before) >= PHRASE_WORDS:
        windows.append([line[before[-PHRASE_WORDS] : end]])
    if len(after) >= PHRASE_WORDS:
        windows.append([line[start : after[PHRASE_WORDS - 1]]])
    previous = next((lines[i] for i in range(number - 1, -1, -1) if lines[i].strip()), None)
    following = next((lines[i] for i in range(number + 1, len(lines)) if lines[i].strip()), None)
    if previous is not None:
        windows.append([previous, line])
    if following is not None:
        windows.append([line, following])
    return windows


def _is_echo(window: list[str], marker: re.Pattern[str], reference: str) -> bool:
    words = sum(len(_WORD.findall(marker.sub(" ", part))) for part in window)
    if words < ECHO_MIN_WORDS:
        return False  # too little text to tell a copy from a coincidence
    text = " ".join(n for n in map(normalize, window) if n)
    # both start at a word, so "all tests pass" is not found inside "overall tests pass"
    return bool(text) and f" {text}" in f" {reference}"


# -- evaluating `until` -----------------------------------------------------------------------


async def evaluate(condition: Condition, answer: str, prompt: str, workdir: Path) -> Verdict:
    """Whether `condition` holds after an iteration that answered `answer` to `prompt`."""
    if isinstance(condition, Marker):
        found = marker_found(answer, condition.text, prompt)
        return Verdict(found, f"marker {condition.text!r} {'found' if found else 'not found'}")
    if isinstance(condition, RegexCondition):
        found = re.search(condition.pattern, answer, re.MULTILINE) is not None
        return Verdict(found, f"regex {condition.pattern!r} {'matched' if found else 'no match'}")
    if isinstance(condition, FileCondition):
        return check_file(condition, workdir)
    if isinstance(condition, CommandCondition):
        return await run_command(condition, workdir)
    return await _combine(condition, answer, prompt, workdir)


async def _combine(group: AllOf | AnyOf, answer: str, prompt: str, workdir: Path) -> Verdict:
    wanted = isinstance(group, AnyOf)  # any: stop at the first met; all: at the first not met
    verdicts: list[Verdict] = []
    for condition in group.conditions:
        verdicts.append(await evaluate(condition, answer, prompt, workdir))
        if verdicts[-1].met is wanted:
            break
    met = verdicts[-1].met if wanted else all(v.met for v in verdicts)
    return Verdict(met, "; ".join(v.why for v in verdicts))


def check_file(condition: FileCondition, workdir: Path) -> Verdict:
    path = workdir / condition.path
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError as exc:
        return Verdict(False, f"{condition.path}: {exc.strerror or exc}")
    reasons: list[str] = []
    met = True
    if condition.all_checked:
        boxes = [mark != " " for mark in _BOX.findall(text)]
        reasons.append(f"{condition.path}: {sum(boxes)} of {len(boxes)} boxes checked")
        # a file with no boxes at all is not a finished checklist (it may have been emptied)
        met = bool(boxes) and all(boxes)
    if condition.contains is not None:
        found = condition.contains in text
        reasons.append(
            f"{condition.path} {'contains' if found else 'lacks'} {condition.contains!r}"
        )
        met = met and found
    return Verdict(met, "; ".join(reasons) or f"{condition.path} exists")


async def run_command(condition: CommandCondition, workdir: Path) -> Verdict:
    """Run the check without a shell; exit 0 means done."""
    shown = " ".join(condition.argv)
    try:
        process = await asyncio.create_subprocess_exec(
            *condition.argv,
            cwd=workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own group, so a timeout kills what it started too
        )
    except OSError as exc:
        return Verdict(False, f"cannot start `{shown}`: {exc.strerror or exc}")
    with running(process):  # a second Ctrl-C kills it with the agents, in its grace too
        try:
            out, _ = await asyncio.wait_for(process.communicate(), condition.timeout_s)
        except TimeoutError:
            await kill_group(process)
            return Verdict(False, f"`{shown}` did not finish within {condition.timeout_s:g}s")
        except BaseException:
            await kill_group(process)
            raise
    tail = out.decode("utf-8", "replace").strip()[-_TAIL_CHARS:]
    why = f"`{shown}` exited with {process.returncode}"
    return Verdict(process.returncode == 0, f"{why}: {tail}" if tail else why)


# -- stalls -----------------------------------------------------------------------------------


def similarity(a: str, b: str, floor: float = 0.0) -> float:
    """difflib's ratio of the two texts with whitespace normalized; when a cheap upper bound
    is already below `floor`, that bound instead (the exact figure then does not matter)."""
    a, b = " ".join(a.split()), " ".join(b.split())
    if a == b:
        return 1.0
    matcher = difflib.SequenceMatcher(None, a, b)
    for bound in (matcher.real_quick_ratio, matcher.quick_ratio):
        estimate = bound()
        if estimate < floor:
            return estimate
    return matcher.ratio()


def stalled(answers: Sequence[str], window: int, threshold: float) -> float | None:
    """The lowest similarity of the last `window` answers to the newest when all reach
    `threshold`; None while the agent still changes its answer (or there are too few)."""
    if window < 2 or len(answers) < window:
        return None
    newest, *others = reversed(answers[-window:])
    lowest = min(similarity(newest, other, threshold) for other in others)
    return lowest if lowest >= threshold else None
