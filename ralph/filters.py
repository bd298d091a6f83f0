"""Input filters (before a request) and output filters (before an answer is kept): one registry
of small named functions, each taking the text and the options the recipe gave.

`option_problems` finds what the recipe schema cannot see in a filter's options (a JSON Schema
that is not one, a replacement naming a group its pattern lacks): `ralph validate` reports them,
so that a run does not meet them item after item.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ralph.answer_json import OptionPath, check_answer, parse_answer, schema_problems
from ralph.providers.base import AttemptError
from ralph.recipe.build import thaw
from ralph.recipe.model import Filter
from ralph.secrets import redact
from ralph.text import writable


class Refused(Exception):
    """An input filter refused the item; the message is the reason logged for it, and
    `security` names the security event when the refusal is one (a `deny` pattern)."""

    def __init__(self, message: str, security: str | None = None) -> None:
        super().__init__(message)
        self.security = security


Apply = Callable[[str, Any], str]


def _strip_control_chars(text: str, _: Any) -> str:
    return "".join(c for c in text if c in "\n\t\r" or unicodedata.category(c) != "Cc")


# spaces of any kind but tabs, which align code and separate columns
_SPACES = re.compile(r"[^\S\t]+")


def _normalize_whitespace(text: str, _: Any) -> str:
    lines = "\n".join(_normalize_line(line) for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", lines.strip("\n"))


def _normalize_line(line: str) -> str:
    # the indentation is kept as it is: prompts hold code, where it carries meaning
    body = line.strip()
    indent = line[: len(line) - len(line.lstrip())]
    return indent + _SPACES.sub(" ", body) if body else ""


def _limit(options: Any) -> tuple[int, bool]:
    if isinstance(options, int):
        return options, False
    return int(options["limit"]), bool(options.get("truncate", False))


def _max_chars_input(text: str, options: Any) -> str:
    limit, truncate = _limit(options)
    if len(text) <= limit:
        return text
    if truncate:
        return text[:limit]
    raise Refused(f"prompt has {len(text)} characters, more than max_chars {limit}")


def _deny(text: str, patterns: Any) -> str:
    for pattern in patterns:
        if re.search(pattern, text):
            raise Refused(f"prompt matches deny pattern {pattern!r}", "security.input_denied")
    return text


def _max_chars_output(text: str, options: Any) -> str:
    limit, truncate = _limit(options)
    if len(text) <= limit or truncate:
        return text[:limit]
    raise AttemptError("invalid_response", f"answer has {len(text)} characters, more than {limit}")


def _redact(text: str, _: Any) -> str:
    return redact(text)


def _regex_replace(text: str, options: Any) -> str:
    try:
        return re.sub(options["pattern"], options.get("with", ""), text)
    except (re.error, IndexError) as exc:  # IndexError: an unknown group name in `with`
        # `ralph validate` refuses these; a recipe that was not validated fails its items, and
        # as fatal, since asking the model again cannot help
        raise AttemptError("fatal", f"regex_replace cannot apply its replacement: {exc}") from None


def _replacement_problem(pattern: str, replacement: str) -> str | None:
    """Why `replacement` cannot be used with `pattern` (a group it lacks, a bad escape)."""
    try:
        compiled = re.compile(pattern)
    except re.error:
        return None  # reported as an invalid regular expression
    try:
        # re reads the whole template before it looks for a match, so an empty text checks it
        compiled.sub(replacement, "")
    except (re.error, IndexError) as exc:
        return f"invalid replacement: {exc}"
    return None


# an answer that is one fenced code block: an opening fence (three backticks or more, and a
# language), the body, and a closing fence at least as long
_FENCED = re.compile(
    r"\s*(?P<fence>`{3,})[\w+-]*[ \t]*\r?\n(?P<body>.*?)\r?\n[ \t]*(?P=fence)`*\s*", re.S
)


def _unfence(text: str) -> str:
    match = _FENCED.fullmatch(text)
    if match is None:
        return text
    # a closing fence inside the body ends a block there: the answer holds more than one block
    closing = re.compile(rf"^[ \t]*{match['fence']}`*[ \t]*\r?$", re.M)
    return text if closing.search(match["body"]) else match["body"]


def _strip(text: str, mode: Any) -> str:
    mode = mode if isinstance(mode, str) else "all"
    if mode in ("code_fences", "all"):
        text = _unfence(text)
    return text.strip() if mode in ("whitespace", "all") else text


def _json(text: str, options: Any) -> str:
    value = parse_answer(_strip(text, "all"))
    # options from a recipe are frozen (read-only Mappings and tuples), not dicts: the schema
    # goes to jsonschema as the plain JSON it was written as
    schema = thaw(options.get("schema")) if isinstance(options, Mapping) else None
    if schema is not None:
        check_answer(value, schema)
    pretty = json.dumps(value, ensure_ascii=False, indent=2)
    # a lone surrogate (JSON's "\ud800") cannot be written as UTF-8; its backslash escape is
    # its JSON escape again
    return writable(pretty)


def option_problems(name: str, options: Any) -> Iterator[tuple[OptionPath, str]]:
    """What is wrong in an output filter's options that the recipe schema cannot see, as the
    path of each problem under the options and its message."""
    if not isinstance(options, Mapping):
        return
    if name == "json" and "schema" in options:
        for path, message in schema_problems(options["schema"]):
            yield ("schema", *path), message
    elif name == "regex_replace":
        pattern, replacement = options.get("pattern"), options.get("with", "")
        if not isinstance(pattern, str) or not isinstance(replacement, str):
            return  # the recipe schema reports it
        if problem := _replacement_problem(pattern, replacement):
            yield ("with",), problem


INPUT_FILTERS: dict[str, Apply] = {
    "strip_control_chars": _strip_control_chars,
    "normalize_whitespace": _normalize_whitespace,
    "max_chars": _max_chars_input,
    "deny": _deny,
}
OUTPUT_FILTERS: dict[str, Apply] = {
    "redact_secrets": _redact,
    "regex_replace": _regex_replace,
    "max_chars": _max_chars_output,
    "json": _json,
    "strip": _strip,
}


def apply_filters(text: str, filters: Sequence[Filter], registry: dict[str, Apply]) -> str:
    for spec in filters:
        text = registry[spec.name](text, spec.options)
    return text
