"""The bounds of the template sandbox: what one template may build.

The sandbox keeps a template from Python's internals; these bounds keep a few bytes of template
(`{{ 9**9**9 }}`) from taking the machine's memory or time, in `ralph validate` too: Jinja
computes constant expressions while it compiles, unless the operator is intercepted.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
import signal
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import BuiltinMethodType, MappingProxyType
from typing import TYPE_CHECKING, Any

from ralph.units import MAX_INT_DIGITS  # Python's own limit for printing an int

if TYPE_CHECKING:
    from jinja2.runtime import Context
    from jinja2.sandbox import SandboxedEnvironment

MAX_OUTPUT_CHARS = 50_000_000  # a rendered template: hundreds of times any model's context
MAX_VALUE_LENGTH = 10_000_000  # characters or items one operation (`*`, `%`, a width) builds
MAX_RENDER_S = 10.0  # one render: what bounds a loop that builds nothing ({% for %} in a for)

# builtin str methods whose first argument is the width of what they return
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_PRINTF_FIELD = re.compile(r"%(?:%|(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?)")
_LOREM_WORD_CHARS = 15  # the longest lorem ipsum word, its space and punctuation


def bounded_sandbox() -> type[SandboxedEnvironment]:
    from jinja2 import nodes
    from jinja2.compiler import CodeGenerator, Frame
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2.utils import generate_lorem_ipsum

    class BoundedCodeGenerator(CodeGenerator):
        """`a ~ b` compiled to a join that checks its length first (Jinja's own cannot be
        intercepted as the other operators are)."""

        def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
            escape = (
                "context.eval_ctx.autoescape"
                if frame.eval_ctx.volatile
                else repr(bool(frame.eval_ctx.autoescape))
            )
            self.write("environment.bounded_join((")
            for part in node.nodes:
                self.visit(part, frame)
                self.write(", ")
            self.write(f"), {escape})")

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        """The immutable sandbox, refusing to build values past the MAX_* limits above."""

        code_generator_class = BoundedCodeGenerator
        # intercepted operators are also never computed while compiling
        intercepted_binops = frozenset({"*", "**", "%", "+"})

        @staticmethod
        def bounded_join(parts: Iterable[Any], escape: bool) -> str:
            """Jinja's `str_join`, or `markup_join` where it autoescapes (`{% autoescape %}`)."""
            from jinja2.runtime import markup_join

            parts = list(parts)
            texts = [str(part) for part in parts]
            _check_length(sum(map(len, texts)), "'~'")
            return str(markup_join(parts)) if escape else "".join(texts)

        def __init__(self, **options: Any) -> None:
            super().__init__(**options)
            for name, size in _SIZED_FILTERS.items():
                self.filters[name] = _bounded(self.filters[name], size, f"|{name}")
            self.filters["join"] = _counted_join(self.filters["join"])
            self.globals["lipsum"] = _bounded(generate_lorem_ipsum, _lipsum_size, "lipsum()")

        def getattr(self, obj: Any, attribute: str) -> Any:
            # `item.field` on a dict finds the key only after the attribute look-up raised
            # AttributeError: a third of a short render. When the mapping has the key and its
            # type no such attribute, the answer is known without it.
            names = _MAPPING_ATTRIBUTES.get(type(obj))
            if names is not None and attribute not in names and attribute in obj:
                return obj[attribute]
            return super().getattr(obj, attribute)

        def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
            _check_binop(operator, left, right)
            return super().call_binop(context, operator, left, right)

        def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
            if isinstance(obj, BuiltinMethodType) and isinstance(obj.__self__, str):
                _check_str_method(obj.__self__, obj.__name__, args, kwargs)
            return super().call(context, obj, *args, **kwargs)

        def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
            wrapped = super().wrap_str_format(value)
            if wrapped is None:
                return None
            format_string = value.__self__

            def checked(*args: Any, **kwargs: Any) -> str:
                size = _format_size(format_string, [*args, *kwargs.values()])
                _check_length(size, f"str.{value.__name__}")
                return wrapped(*args, **kwargs)

            return checked

    return BoundedSandbox


class RenderClock:
    """The time limit of a render on the main thread (where runs, plans and dry runs render).

    A template runs as Python code that nothing can stop from outside but a signal: a watchdog
    thread looks every half second at the render in progress and, past MAX_RENDER_S, sends the
    main thread SIGALRM, whose handler raises a template error there. Armed with the template
    environment, and only where SIGALRM is unused; a render costs a clock read more.
    """

    rendering: tuple[float, int] | None = None  # when the render in progress started, where

    @classmethod
    def arm(cls) -> None:
        main = threading.main_thread().ident
        if threading.get_ident() != main or signal.getsignal(signal.SIGALRM) != signal.SIG_DFL:
            return  # signals reach the main thread only; someone else's alarm is theirs
        signal.signal(signal.SIGALRM, cls._on_alarm)
        threading.Thread(
            target=cls._watch, args=(main,), name="ralph-render-clock", daemon=True
        ).start()

    @classmethod
    def _overdue(cls) -> bool:
        rendering = cls.rendering
        return (
            rendering is not None
            and rendering[1] == threading.main_thread().ident
            and time.monotonic() - rendering[0] > MAX_RENDER_S
        )

    @classmethod
    def _watch(cls, main: int) -> None:
        while True:
            time.sleep(min(0.5, MAX_RENDER_S / 4))
            if cls._overdue():
                signal.pthread_kill(main, signal.SIGALRM)

    @classmethod
    def _on_alarm(cls, signum: int, frame: object) -> None:
        # looked at again here: the render the watchdog saw may have ended since
        if cls._overdue():
            from jinja2.exceptions import TemplateRuntimeError

            raise TemplateRuntimeError(
                f"the template took more than {MAX_RENDER_S:g}s to render (a loop inside a loop?)"
            )


# what getattr finds on these mappings (their type's attributes: the instances have no others)
_MAPPING_ATTRIBUTES = {kind: frozenset(dir(kind)) for kind in (dict, MappingProxyType)}


_SIZED = (str, list, tuple)


def _check_binop(operator: str, left: object, right: object) -> None:
    if operator == "**" and isinstance(left, int) and isinstance(right, int):
        if right > 0 and abs(left) > 1:
            _check_digits(right * math.log10(abs(left)), "'**'")
    elif operator == "*" and isinstance(left, int) and isinstance(right, int):
        _check_digits(_digits(left) + _digits(right), "'*'")
    elif operator == "*":
        for sequence, times in ((left, right), (right, left)):
            if isinstance(sequence, str | list | tuple) and isinstance(times, int):
                _check_length(len(sequence) * times, "'*'")
    elif operator == "%" and isinstance(left, str):
        _check_length(_printf_size(left, right), "'%'")
    elif operator == "+" and isinstance(left, _SIZED) and isinstance(right, _SIZED):
        _check_length(len(left) + len(right), "'+'")


def _digits(number: int) -> float:
    return abs(number).bit_length() * math.log10(2)


def _check_digits(digits: float, what: str) -> None:
    if digits > MAX_INT_DIGITS:
        from jinja2.exceptions import SecurityError

        raise SecurityError(
            f"{what} would make a number of about {digits:.0f} digits; "
            f"a template may make {MAX_INT_DIGITS} at most"
        )


def _check_length(length: int, what: str) -> None:
    if length > MAX_VALUE_LENGTH:
        from jinja2.exceptions import SecurityError

        raise SecurityError(
            f"{what} would build {length} characters or items; "
            f"a template may build {MAX_VALUE_LENGTH} at most"
        )


def _check_str_method(text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    if name not in _WIDTH_METHODS:
        return
    width = _count(args[0] if args else kwargs.get("tabsize"))
    _check_length(width * text.count("\t") if name == "expandtabs" else width, f"str.{name}")


def _printf_size(template: str, values: object) -> int:
    """At most how much longer than its own text `template % values` is: its widths and
    its text values."""
    widths = [n for field in _PRINTF_FIELD.finditer(template) for n in field.groups() if n]
    if isinstance(values, Mapping):
        values = tuple(values.values())
    given = values if isinstance(values, tuple) else (values,)
    return _widths(widths, given) + _text_length(given)


def _text_length(values: Iterable[object]) -> int:
    """The text among `values`: what a format or a join copies into its result (other values
    become short text, or are bounded where they were built)."""
    return sum(len(value) for value in values if isinstance(value, str))


def _format_size(template: str, values: list[Any]) -> int:
    """The same for `template.format(*values)`; format_map's one argument is a mapping."""
    parsed = string.Formatter().parse(template)
    specs = [spec for _, field, spec, _ in parsed if field is not None and spec]
    widths = [n for spec in specs for n in re.findall(r"\d+", spec)]
    if any("{" in spec for spec in specs):
        widths.append("*")
    mapped = [
        value for mapping in values if isinstance(mapping, Mapping) for value in mapping.values()
    ]
    return _widths(widths, [*values, *mapped]) + _text_length([*values, *mapped])


def _widths(widths: list[str], values: Iterable[object]) -> int:
    """The widths written in a format, and any int value when a width is taken from them."""
    # ten digits are past any limit: no need to convert a million of them
    total = sum(int(n.lstrip("0")[:10] or "0") for n in widths if n != "*")
    if "*" in widths:
        total += sum(_count(value) for value in values)
    return total


def _count(value: object) -> int:
    return abs(value) if isinstance(value, int) else 0


def _bounded(
    function: Callable[..., Any], size: Callable[[Mapping[str, Any]], int], what: str
) -> Callable[..., Any]:
    """`function`, refusing arguments for which `size` is past MAX_VALUE_LENGTH."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        try:
            arguments = signature.bind(*args, **kwargs)
        except TypeError:
            return function(*args, **kwargs)  # which says what is wrong with them
        arguments.apply_defaults()
        _check_length(size(arguments.arguments), what)
        return function(*args, **kwargs)

    return bounded


def _indent_size(arguments: Mapping[str, Any]) -> int:
    text, width = arguments["s"], arguments["width"]
    lines = text.count("\n") + 1 if isinstance(text, str) else 1
    return lines * (len(width) if isinstance(width, str) else _count(width))


def _format_filter_size(arguments: Mapping[str, Any]) -> int:
    value, args = arguments["value"], arguments["args"]
    return _printf_size(value, args) if isinstance(value, str) else 0


def _batch_size(arguments: Mapping[str, Any]) -> int:
    # a short last batch is filled up to `linecount` only when given something to fill it with
    return _count(arguments["linecount"]) if arguments["fill_with"] is not None else 0


def _lipsum_size(arguments: Mapping[str, Any]) -> int:
    words = max(_count(arguments["min"]), _count(arguments["max"]))
    return _count(arguments["n"]) * words * _LOREM_WORD_CHARS


def _counted_join(join: Callable[..., str]) -> Callable[..., str]:
    """`|join`, counting what it joins as it goes, whatever the items are (text, numbers,
    lists, what an attribute or a `|map` makes of them), refused once past the limit."""
    from jinja2.filters import make_attrgetter

    @functools.wraps(join)  # and so Jinja's pass_eval_context mark
    def joined(eval_ctx: Any, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
        if attribute is not None:
            value = map(make_attrgetter(eval_ctx.environment, attribute), value)
        items, total = [], 0
        for item in value:
            total += len(str(item)) + len(str(d))
            _check_length(total, "|join")
            items.append(item)
        return join(eval_ctx, items, d)

    return joined


def _replace_size(arguments: Mapping[str, Any]) -> int:
    text, old, new = arguments["s"], arguments["old"], arguments["new"]
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return 0
    grows = len(new) - len(old)
    times = (len(text) + 1 if not old else text.count(old)) if grows > 0 else 0
    return len(text) + times * grows


def _sum_size(arguments: Mapping[str, Any]) -> int:
    """`sum` adds numbers: a list or text to start from would make it join them, in one long
    call no render deadline can interrupt (`[[1]*10000]*1500 | sum(start=[])`)."""
    if isinstance(arguments["start"], int | float):
        return 0
    from jinja2.exceptions import SecurityError

    raise SecurityError("|sum adds numbers: its start must be a number (|join joins text)")


# filters whose result can be far larger than their arguments, and how large it would be
_SIZED_FILTERS: dict[str, Callable[[Mapping[str, Any]], int]] = {
    "replace": _replace_size,
    "sum": _sum_size,
    "center": lambda arguments: _count(arguments["width"]),
    "indent": _indent_size,
    "format": _format_filter_size,
    "batch": _batch_size,
}


def joined(chunks: Iterator[str]) -> str:
    """The chunks as one string, refused once past MAX_OUTPUT_CHARS rather than when memory
    runs out. What a macro or a {% set %} block returns is built whole before it arrives."""
    # joined a block at a time: a million one-letter chunks held at once are 8 MB of pointers
    blocks: list[str] = []
    pending: list[str] = []
    length = 0
    for chunk in chunks:
        length += len(chunk)
        if length > MAX_OUTPUT_CHARS:
            from jinja2.exceptions import SecurityError

            raise SecurityError(
                f"rendered template is longer than {MAX_OUTPUT_CHARS} characters, "
                "the most a template may produce"
            )
        pending.append(chunk)
        if len(pending) >= _JOIN_BLOCK:
            blocks.append("".join(pending))
            pending.clear()
    return "".join(blocks + pending) if blocks else "".join(pending)


_JOIN_BLOCK = 4096
