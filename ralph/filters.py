"""Input filters (before a request) and output filters (before an answer is kept): one registry
of small named functions, each taking the text and the options the recipe gave."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ralph.providers.base import AttemptError
from ralph.recipe.build import thaw
from ralph.recipe.model import Filter
from ralph.secrets import redact


class Refused(Exception):
    """An input filter refused the item; the message is the reason logged for it, and
    `security` names the security event when the refusal is one (a `deny` pattern)."""

    def __init__(self, message: str, security: str | None = None) -> None:
        super().__init__(message)
        self.security = security


Apply = Callable[[str, Any], str]


def _strip_control_chars(text: str, _: Any) -> str:
    return "".join(c for c in text if c in "\n\t\r" or unicodedata.category(c) != "Cc")


def _normalize_whitespace(text: str, _: Any) -> str:
    lines = (" ".join(line.split()) for line in text.strip().splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


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
    return re.sub(options["pattern"], options.get("with", ""), text)


_FENCE = re.compile(r"^\s*```[\w+-]*\s*\n(.*?)\n\s*```\s*$", re.S)


def _strip(text: str, mode: Any) -> str:
    mode = mode if isinstance(mode, str) else "all"
    if mode in ("code_fences", "all"):
        match = _FENCE.match(text)
        text = match.group(1) if match else text
    return text.strip() if mode in ("whitespace", "all") else text


def _json(text: str, options: Any) -> str:
    try:
        value = json.loads(_strip(text, "all"))
    except json.JSONDecodeError as exc:
        raise AttemptError("invalid_response", f"answer is not JSON: {exc.msg}") from None
    except RecursionError:
        raise AttemptError("invalid_response", "answer is JSON nested too deeply") from None
    # options from a recipe are frozen (read-only Mappings and tuples), not dicts: the schema
    # goes to jsonschema as the plain JSON it was written as
    schema = thaw(options.get("schema")) if isinstance(options, Mapping) else None
    if schema is not None:
        from jsonschema import Draft202012Validator

        error = next(iter(Draft202012Validator(schema).iter_errors(value)), None)
        if error is not None:
            raise AttemptError(
                "invalid_response", f"answer JSON does not match the schema: {error.message}"
            )
    return json.dumps(value, ensure_ascii=False, indent=2)


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
