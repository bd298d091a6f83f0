"""The one Jinja environment recipes render in, and what can be known about a template statically.

Sandboxed and strict: a template sees only the context ralph hands it (no environment, no
filesystem, no Python internals) and cannot change it (an `item.pop('id')` in the system prompt
would change what the prompt and the cache key see); an undefined name is an error, not ''.
Bounded (sandbox.py): no value or output past its limits, in a run or while `check()` compiles.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ralph.recipe.build import thaw
from ralph.sandbox import RenderClock, bounded_sandbox, joined

if TYPE_CHECKING:
    from jinja2 import Template, Undefined, nodes
    from jinja2.nodes import Node
    from jinja2.sandbox import SandboxedEnvironment

CONTEXT_NAMES = ("vars", "item", "task", "iteration", "previous", "history", "outputs")
_WHY_ABSENT = {
    "item": "this task has no for_each",
    "iteration": "this task has no loop",
    "previous": "this task has no loop",
    "history": "this task has no loop",
}
# `vars.get('x', 'default')` calls a method of the mapping; it does not name a var
_MAPPING_METHODS = frozenset({"get", "items", "keys", "values"})

_TOO_DEEP = "template nested too deeply"


@dataclass(frozen=True)
class Scope:
    """What a template may name: top-level names, and the keys known under `vars`/`outputs`."""

    names: frozenset[str]
    vars: frozenset[str]
    outputs: frozenset[str]
    later: frozenset[str] = frozenset()  # tasks after this one, for a clearer message


@dataclass(frozen=True)
class TemplateFinding:
    line: int
    message: str


@functools.cache
def environment() -> SandboxedEnvironment:
    RenderClock.arm()
    env = bounded_sandbox()(
        undefined=_strict_undefined(), autoescape=False, keep_trailing_newline=True
    )
    # inline items and vars reach templates frozen (read-only mappings, tuples), which
    # json.dumps refuses: `{{ item | tojson }}` writes them as the JSON they were written as
    env.policies["json.dumps_function"] = _dumps_thawed
    return env


def task_output(task: str, answers: Mapping[Any, str], *, one_item: bool) -> Any:
    """`outputs.<task>` as later templates read it: the answers by item key, or for a task of
    one item its answer. One that gave none (it failed, or a shard that does not own it
    skipped it) reads as undefined: rendering it fails the item with this reason, where `None`
    would have been sent as the text "None"; `| default(...)` still works."""
    if not one_item:
        return answers
    answer = next(iter(answers.values()), None)
    if answer is not None:
        return answer
    hint = f"task '{task}' has no answer to read: it failed, or it ran in another shard"
    return environment().undefined(hint=hint)


def _dumps_thawed(value: Any, **options: Any) -> str:
    return json.dumps(thaw(value), **options)


def _strict_undefined() -> type[Undefined]:
    from jinja2 import StrictUndefined

    class KeyedStrictUndefined(StrictUndefined):
        """StrictUndefined that answers `item.txt` with the keys the item does have, where
        Jinja would say "'mappingproxy object' has no attribute 'txt'" (items and vars are
        handed to templates as read-only mappings)."""

        @property
        def _undefined_message(self) -> str:
            mapping, name = self._undefined_obj, self._undefined_name
            if self._undefined_hint or not isinstance(mapping, Mapping):
                return str(super()._undefined_message)
            return _missing_key_message(name, [str(key) for key in mapping])

    return KeyedStrictUndefined


def _missing_key_message(name: object, keys: list[str], shown: int = 10) -> str:
    if not keys:
        return f"no key {name!r} (it is empty)"
    listed = ", ".join(keys[:shown]) + (f", ... ({len(keys)} in all)" if len(keys) > shown else "")
    close = difflib.get_close_matches(str(name), keys, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"no key {name!r} ({hint}the keys are: {listed})"


def compile_template(source: str) -> Template:
    from jinja2 import TemplateSyntaxError

    try:
        return environment().from_string(source)
    except RecursionError:
        raise TemplateSyntaxError(_TOO_DEEP, 1) from None


def base_context(**values: Any) -> dict[str, Any]:
    """The environment's globals (range, dict, ...) plus `values`: merged once per task, so
    each render need not rebuild it (Template.render does, and it is a fifth of a render)."""
    return {**environment().globals, **values}


def render(template: Template, context: dict[str, Any]) -> str:
    """`template` rendered with `context`, which must start from `base_context`.

    What Template.render does, less two copies per render: the globals merged into every
    context (ours is handed over as it is, as `new_context(shared=True)` would) and the set of
    global names Template.new_context builds, which only importing templates reads. Errors go
    through Jinja's own handler, so they read the same. (Exception classes are imported where
    they are raised: an import statement costs ~0.5 µs even when the module is loaded.)
    """
    env = environment()
    rendered = env.context_class(env, context, template.name, template.blocks)
    RenderClock.rendering = (time.monotonic(), threading.get_ident())
    try:
        return joined(template.root_render_func(rendered))
    except RecursionError:
        from jinja2 import TemplateRuntimeError

        raise TemplateRuntimeError(
            "templates nested too deeply (a macro calling itself?)"
        ) from None
    except Exception:
        return env.handle_exception()
    finally:
        RenderClock.rendering = None


def check(source: str, scope: Scope) -> list[TemplateFinding]:
    """Syntax errors, then names the template uses that its scope does not provide."""
    from jinja2 import TemplateSyntaxError

    try:
        ast = environment().parse(source)
    except TemplateSyntaxError as exc:
        return [TemplateFinding(exc.lineno, f"template syntax error: {exc.message}")]
    except RecursionError:
        return [TemplateFinding(1, f"template syntax error: {_TOO_DEEP}")]
    try:
        return _names(ast, scope)
    except TemplateSyntaxError as exc:
        # found only while analysing the parsed template: an unknown filter, a block defined twice
        return [TemplateFinding(exc.lineno, _analysis_error(exc.message or ""))]
    except RecursionError:
        return [TemplateFinding(1, f"template error: {_TOO_DEEP}")]


def names_used(source: str) -> frozenset[str] | None:
    """The context names a template reads (`outputs`, `item`, ...); None if it cannot be
    parsed, when nothing can be ruled out."""
    from jinja2 import TemplateSyntaxError, meta

    try:
        return frozenset(meta.find_undeclared_variables(environment().parse(source)))
    except (TemplateSyntaxError, RecursionError):
        return None


def vars_read(source: str) -> frozenset[str] | None:
    """The vars a template reads by name (`vars.x`, `vars['x']`, `vars.get('x', ...)`); None
    when it may read any (it hands `vars` on whole, or cannot be parsed)."""
    from jinja2 import TemplateSyntaxError, nodes

    try:
        ast = environment().parse(source)
    except (TemplateSyntaxError, RecursionError):
        return None
    named: set[str] = set()
    explained: set[int] = set()  # the `vars` names a key is read from
    for call in ast.find_all(nodes.Call):
        method = call.node
        key = _constant(call.args[0]) if call.args else None
        if not (isinstance(method, nodes.Getattr) and _is_vars(method.node)):
            continue
        if method.attr == "get" and key is not None:
            named.add(key)
            explained.add(id(method.node))
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, nodes.Getattr | nodes.Getitem)
        if not _is_vars(node.node) or id(node.node) in explained:
            continue
        key = node.attr if isinstance(node, nodes.Getattr) else _constant(node.arg)
        if key is None or key in _MAPPING_METHODS:
            return None
        named.add(key)
        explained.add(id(node.node))
    whole = [n for n in ast.find_all(nodes.Name) if _is_vars(n) and id(n) not in explained]
    return None if whole else frozenset(named)


def _is_vars(node: Node) -> bool:
    from jinja2 import nodes

    return isinstance(node, nodes.Name) and node.name == "vars" and node.ctx == "load"


def _constant(node: Node) -> str | None:
    from jinja2 import nodes

    return node.value if isinstance(node, nodes.Const) and isinstance(node.value, str) else None


def _analysis_error(message: str) -> str:
    unknown = re.fullmatch(r"No filter named '(.+)'\.?", message)
    if unknown is None:
        return f"template error: {message}"
    name = unknown.group(1)
    close = difflib.get_close_matches(name, list(environment().filters), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown template filter '{name}'{hint}"


def _names(ast: nodes.Template, scope: Scope) -> list[TemplateFinding]:
    from jinja2 import meta

    env = environment()
    findings = [
        TemplateFinding(line, f"{{% {tag} %}} is not available: templates cannot read files")
        for line, tag in _file_tags(ast)
    ]
    undeclared = meta.find_undeclared_variables(ast) - set(env.globals)
    for name in sorted(undeclared - scope.names):
        findings.append(
            TemplateFinding(_first_line(ast, name), _undefined(name, scope.names, CONTEXT_NAMES))
        )
    for namespace, known in (("vars", scope.vars), ("outputs", scope.outputs)):
        if namespace not in scope.names:
            continue
        for line, key in _attributes(ast, namespace):
            if key in known:
                continue
            message = _undefined(f"{namespace}.{key}", known, known)
            if namespace == "outputs" and key in scope.later:
                message = f"undefined template variable 'outputs.{key}': task '{key}' runs later"
            findings.append(TemplateFinding(line, message))
    return findings


def _undefined(name: str, available: Collection[str], candidates: Collection[str]) -> str:
    if name in _WHY_ABSENT:
        return f"undefined template variable '{name}': {_WHY_ABSENT[name]}"
    short = name.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(short, list(candidates), n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    where = ", ".join(sorted(available)) or "none"
    return f"undefined template variable '{name}' (available here: {where}{hint})"


def _first_line(ast: Node, name: str) -> int:
    from jinja2 import nodes

    lines = [n.lineno for n in ast.find_all(nodes.Name) if n.name == name]
    return min(lines, default=1)


def _file_tags(ast: Node) -> Iterator[tuple[int, str]]:
    """Tags that load another template, which would fail at render time: there is no loader."""
    from jinja2 import nodes

    tags = {nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "from"}
    for node in ast.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
        yield node.lineno, tags.get(type(node), "extends")


def _attributes(ast: Node, namespace: str) -> Iterator[tuple[int, str]]:
    """`vars.tone` and `vars['tone']` → (line, 'tone')."""
    from jinja2 import nodes

    called = {id(call.node) for call in ast.find_all(nodes.Call)}
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, nodes.Getattr | nodes.Getitem)
        target = node.node
        if not (isinstance(target, nodes.Name) and target.name == namespace):
            continue
        if isinstance(node, nodes.Getattr):
            if not (node.attr in _MAPPING_METHODS and id(node) in called):
                yield node.lineno, node.attr
        elif (key := _constant(node.arg)) is not None:
            yield node.lineno, key
