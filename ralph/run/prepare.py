"""From a task and one item to what will be sent: templates compiled once, rendered per item.

A loop task renders again for every iteration, with `iteration`, `previous` and `history` in
the context; its prompt file is read again each time, so a person (or the agent) may edit it
while the loop runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ralph.filters import INPUT_FILTERS, Refused, apply_filters
from ralph.items import item_key
from ralph.providers.base import Request
from ralph.recipe.build import thaw
from ralph.recipe.model import Agent, Recipe, Task
from ralph.run.outputs import safe_output_path
from ralph.templates import base_context, compile_template, names_used, render

if TYPE_CHECKING:
    from jinja2 import Template


class ItemRejected(Exception):
    """This item cannot be sent (a template failed, a filter refused it, a limit on its size);
    `security` names the security event when the refusal is one."""

    def __init__(self, message: str, security: str | None = None) -> None:
        super().__init__(message)
        self.security = security


@dataclass(slots=True)  # built per item: see providers.base.Request
class Prepared:
    index: int
    key: str
    item: Any
    prompt: str
    system: str | None
    output: str | None
    iteration: int | None = None
    output_path: Path | None = None  # `output` resolved under the output folder, checked

    def request(self, agent: Agent) -> Request:
        return Request(
            prompt=self.prompt, system=self.system, model=agent.model, params=agent.params
        )


@dataclass(frozen=True)
class LoopContext:
    """What a loop iteration adds to the template context."""

    iteration: int
    previous: str = ""
    history: tuple[str, ...] = ()

    def variables(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "previous": self.previous, "history": [*self.history]}


FIRST_ITERATION = LoopContext(1)


class Preparer:
    """Renders a task's templates for each item; compiled once per task, not once per item."""

    def __init__(
        self, recipe: Recipe, task: Task, outputs: Mapping[str, Any], out_dir: Path = Path("out")
    ) -> None:
        self.task = task
        self.out_dir = out_dir
        self.max_prompt_chars = recipe.limits.max_prompt_chars
        self._base = base_context(vars=thaw(recipe.vars), task=task.name, outputs=outputs)
        self._prompt_source = task.prompt if task.prompt is not None else _read(task)
        self._prompt = compile_template(self._prompt_source)
        self._system = compile_template(task.system) if task.system is not None else None
        self._output = compile_template(task.output) if task.output is not None else None

    def prepare(self, index: int, item: Any, loop: LoopContext | None = None) -> Prepared:
        """The item rendered; a loop task without `loop` renders as its first iteration."""
        context = {**self._base, "item": item}
        if self.task.loop is not None:
            loop = loop or FIRST_ITERATION
            context.update(loop.variables())
        template = self._prompt_template() if loop is not None else self._prompt
        prompt = self._render(template, context, "prompt")
        system = self._render(self._system, context, "system") if self._system else None
        output = self._render(self._output, context, "output") if self._output else None
        try:
            prompt = apply_filters(prompt, self.task.input_filters, INPUT_FILTERS)
        except Refused as exc:
            raise ItemRejected(str(exc), exc.security) from None
        for field, text in (("prompt", prompt), ("system", system), ("output", output)):
            self._check_unicode(field, text)
        if self.max_prompt_chars is not None and len(prompt) > self.max_prompt_chars:
            raise ItemRejected(
                f"prompt has {len(prompt)} characters, more than limits.max_prompt_chars "
                f"{self.max_prompt_chars}"
            )
        iteration = loop.iteration if loop is not None else None
        # checked before anything is sent: OutputPathError when it would leave the folder
        path = safe_output_path(self.out_dir, output) if output is not None else None
        key = item_key(item, index)
        return Prepared(index, key, item, prompt, system, output, iteration, path)

    def instructions(self, item: Any, iteration: int) -> str:
        """System and prompt of `iteration` rendered without the earlier answers (empty when
        they cannot be): the text a marker must not merely repeat. An answer that says what
        the previous one said is no echo of the prompt."""
        context = {**self._base, "item": item, **LoopContext(iteration).variables()}
        try:
            prompt = self._render(self._prompt, context, "prompt")
            system = self._render(self._system, context, "system") if self._system else None
        except ItemRejected:
            return ""
        return f"{system}\n{prompt}" if system else prompt

    def _prompt_template(self) -> Template:
        """The prompt file as it is now, compiled again only when its text changed."""
        from jinja2 import TemplateError

        if self.task.prompt_file is None:
            return self._prompt
        try:
            source = _read(self.task)
        except OSError as exc:
            raise ItemRejected(
                f"task '{self.task.name}' prompt_file {self.task.prompt_file}: "
                f"{exc.strerror or exc}"
            ) from None
        if source != self._prompt_source:
            try:
                self._prompt = compile_template(source)
            except TemplateError as exc:
                raise ItemRejected(self._render_error("prompt", exc, str(exc))) from None
            self._prompt_source = source
        return self._prompt

    def _check_unicode(self, field: str, text: str | None) -> None:
        """A lone surrogate (JSON items may escape one: "\\ud800") is not text any API, file
        name or UTF-8 file can take: the item is refused here, before anything is sent."""
        if text is None or text.isascii():
            return
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            code = f"U+{ord(text[exc.start]):04X}"
            raise ItemRejected(
                f"task '{self.task.name}' {field}: character {exc.start} is a lone surrogate "
                f"({code}), which is not valid Unicode text"
            ) from None

    def _render(self, template: Template, context: dict[str, Any], field: str) -> str:
        try:
            return render(template, context)
        except Exception as exc:
            from jinja2 import TemplateError  # here: an import costs even when loaded

            if isinstance(exc, TemplateError):
                message = str(exc)
            elif isinstance(exc, TypeError | ValueError | ArithmeticError | LookupError):
                message = f"{exc.__class__.__name__}: {exc}"
            else:
                raise
            raise ItemRejected(self._render_error(field, exc, message)) from None

    def _render_error(self, field: str, exc: Exception, message: str) -> str:
        """`file:line:col: task 't' prompt line 2: ...`, pointing into the recipe (or the
        prompt file) where the failing template line is written, when that is known."""
        line = _template_line(exc)
        if self.task.prompt_file is not None and field == "prompt":
            site = f"{self.task.prompt_file}:{line}: " if line else ""
            field = "prompt_file"
        else:
            found = self.task.template_site(field, line or 1) if self.task.template_site else None
            site = f"{found}: " if found else ""
        where = f" line {line}" if line else ""
        return f"{site}task '{self.task.name}' {field}{where}: {message}"


def reads_outputs(task: Task) -> bool:
    """Whether the task's templates read `outputs` (earlier tasks' answers); true when that
    cannot be ruled out (a prompt file that cannot be read or parsed)."""
    sources = [task.prompt, task.system, task.output]
    if task.prompt_file is not None:
        try:
            sources.append(_read(task))
        except (OSError, UnicodeError):
            return True
    for source in sources:
        if source is not None and "outputs" in source:
            names = names_used(source)
            if names is None or "outputs" in names:
                return True
    return False


def _template_line(exc: Exception) -> int | None:
    """The template line an error was raised at: Jinja gives syntax errors a `lineno`, and
    rewrites the traceback of any other error so that a frame stands for the template line."""
    line: int | None = getattr(exc, "lineno", None)
    traceback = exc.__traceback__
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == "<template>":
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


def _read(task: Task) -> str:
    assert task.prompt_file is not None
    return task.prompt_file.read_text("utf-8")
