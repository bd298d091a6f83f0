"""The JSON Schema as data, and its errors turned into located, readable problems."""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from ralph.secrets import is_secret_field

if TYPE_CHECKING:
    from jsonschema import ValidationError
    from jsonschema.protocols import Validator

Finding = tuple[tuple[str | int, ...], bool, str]
"""(data path, locate at the key rather than the value, message)"""


def schema_text() -> str:
    return resources.files("ralph").joinpath("schemas/recipe.schema.json").read_text("utf-8")


@functools.cache
def recipe_schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(schema_text())
    return loaded


@functools.cache
def _validator() -> Validator:
    from jsonschema import Draft202012Validator, validators

    # JSON Schema's "integer" takes 2.0; the run would then count with a float (range(2.0)
    # fails), so an integer here is written as one
    checker = Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_int)
    # (jsonschema's extend() carries no annotations)
    strict = validators.extend(  # type: ignore[no-untyped-call]
        Draft202012Validator, type_checker=checker, validators={"pattern": _pattern}
    )
    validator: Validator = strict(recipe_schema())
    return validator


def _is_int(checker: object, value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _pattern(
    validator: Validator, pattern: str, instance: object, schema: object
) -> Iterator[ValidationError]:
    """`pattern` as JSON Schema means it (ECMA-262): Python's `$` also matches before a final
    line break, which let `name: "greet\n"` and `timeout: "5s\n"` through."""
    from jsonschema import ValidationError

    if not isinstance(instance, str):
        return
    if re.search(pattern, instance) is None or (pattern.endswith("$") and instance.endswith("\n")):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def schema_findings(data: Any) -> list[Finding]:
    """Every schema violation in `data`, one finding per root cause."""
    return [f for error in _validator().iter_errors(data) for f in _explain(error)]


def _explain(error: ValidationError) -> Iterator[Finding]:
    path = tuple(error.absolute_path)
    kind = error.validator
    if "propertyNames" in error.absolute_schema_path and isinstance(error.instance, str):
        # the error is about a key, but jsonschema reports it at the mapping holding it
        path = (*path, error.instance)
        yield path, True, f"{_show(error.instance)} {_schema_error(error)}"
    elif kind in ("anyOf", "oneOf") and error.context:
        yield from _explain_choice(error)
    elif kind == "additionalProperties":
        yield from _unknown_keys(error, path)
    elif kind == "required":
        yield path, True, f"missing required key '{_missing(error)}'"
    elif isinstance(error.schema, dict) and "x-error" in error.schema:
        yield path, False, f"{_show(error.instance)} {error.schema['x-error']}"
    elif kind == "enum":
        allowed: Any = error.validator_value
        yield path, False, _enum_message(error.instance, allowed)
    elif kind == "type" and error.validator_value == "string" and _is_number(error.instance):
        # `name: 2024`: the user wrote text, YAML read a number (or `true` a boolean)
        message = f"{_show(error.instance)} is read as {_kind(error.instance)}; put it in quotes"
        yield path, False, f"{message} to make it text"
    elif kind == "type":
        wanted = type_name(error.validator_value)
        yield path, False, f"expected {wanted}, got {_got(error.instance)}"
    else:
        yield path, False, _generic(error)


def _explain_choice(error: ValidationError) -> Iterator[Finding]:
    """Explain the one branch of an anyOf that the value was evidently meant to match."""
    branches: dict[int, list[ValidationError]] = {}
    for sub in error.context or ():
        branches.setdefault(int(sub.schema_path[0]), []).append(sub)
    options: Any = error.validator_value
    path, instance = tuple(error.absolute_path), error.instance
    keyed = _keyed_branches(instance, options)
    if keyed:
        # a mapping that shares no key with any form: name the keys that pick a form
        got = _keys(instance) or "no keys"
        yield path, False, f"expected one of the keys {', '.join(keyed)}, got {got}"
        return
    best = _closest_branch(error.instance, options, branches)
    if best is None:
        wanted = " or ".join(dict.fromkeys(_branch_name(o) for o in options))
        yield path, False, f"expected {wanted}, got {_got(error.instance)}"
        return
    for sub in branches.get(best, []):
        yield from _explain(sub)


def _closest_branch(
    instance: Any, options: Sequence[dict[str, Any]], branches: dict[int, list[ValidationError]]
) -> int | None:
    scored: list[tuple[int, int]] = []
    for index, option in enumerate(_resolved(o) for o in options):
        if not _type_fits(instance, option):
            continue
        keys = set(instance) if isinstance(instance, dict) else set()
        overlap = len(keys & set(option.get("properties", {})))
        scored.append((overlap, -index))
    if not scored:
        return None
    index = -max(scored)[1]
    return index if index in branches else None


def _keyed_branches(instance: Any, options: Sequence[dict[str, Any]]) -> list[str]:
    """The required key of each mapping form, when there are several and none is present."""
    if not isinstance(instance, dict):
        return []
    forms = [o for o in (_resolved(o) for o in options) if o.get("type") == "object"]
    keys = [k for o in forms for k in o.get("required", [])]
    if len(forms) < 2 or len(keys) != len(forms) or set(keys) & set(instance):
        return []
    return keys


def _resolved(option: dict[str, Any]) -> dict[str, Any]:
    ref = option.get("$ref", "")
    if ref.startswith("#/$defs/"):
        return _resolved(recipe_schema()["$defs"][ref.removeprefix("#/$defs/")])
    return option


def _type_fits(instance: Any, option: dict[str, Any]) -> bool:
    if "enum" in option:
        return isinstance(instance, str)
    wanted = option.get("type")
    return wanted is None or _kind(instance) == _kind_of_type(wanted)


def _branch_name(option: dict[str, Any]) -> str:
    resolved = _resolved(option)
    if "enum" in resolved:
        return "one of " + ", ".join(str(v) for v in resolved["enum"])
    return type_name(resolved.get("type", "value"))


def _unknown_keys(error: ValidationError, path: tuple[str | int, ...]) -> Iterator[Finding]:
    known = list(error.schema.get("properties", {})) if isinstance(error.schema, dict) else []
    instance: Any = error.instance
    for key in instance:
        if key in known:
            continue
        if isinstance(key, str) and is_secret_field(key):
            continue  # reported by the secret scan, which sees free-form mappings too
        yield (*path, key), True, f"unknown key '{key}'{_did_you_mean(key, known)}"


def _did_you_mean(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _enum_message(instance: Any, allowed: Sequence[Any]) -> str:
    names = [str(a) for a in dict.fromkeys(str(a) for a in allowed)]
    hint = _did_you_mean(instance, names) if isinstance(instance, str) else ""
    return f"{_show(instance)} is not one of {', '.join(names)}{hint}"


def _missing(error: ValidationError) -> str:
    # jsonschema says "'model' is a required property"; the name is the quoted part
    message = str(error.message)
    return message.split("'")[1] if "'" in message else message


def _generic(error: ValidationError) -> str:
    kind, limit, value = error.validator, error.validator_value, error.instance
    messages = {
        "minimum": f"must be at least {limit}, got {_show(value)}",
        "exclusiveMinimum": f"must be greater than {limit}, got {_show(value)}",
        "maximum": f"must be at most {limit}, got {_show(value)}",
        "minItems": f"needs at least {limit} item{'s' if limit != 1 else ''}",
        "minProperties": f"needs at least {limit} entr{'ies' if limit != 1 else 'y'}",
        "maxProperties": f"takes exactly one key, got {_keys(value)} "
        "(give each as its own list item)",
        "minLength": "must not be empty",
        "const": f"must be {_show(limit)}, got {_show(value)}",
    }
    return messages.get(str(kind), str(error.message))


def _schema_error(error: ValidationError) -> str:
    if isinstance(error.schema, dict) and "x-error" in error.schema:
        return str(error.schema["x-error"])
    return f"is not a valid name ({error.message})"


def _keys(value: Any) -> str:
    return ", ".join(str(k) for k in value) if isinstance(value, dict) else _show(value)


def _got(value: Any) -> str:
    """A wrong value as a user would name it: scalars shown, containers by their kind."""
    if isinstance(value, dict | list) or value is None:
        return _kind(value)
    return _show(value)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict | list):
        return _kind(value)
    return json.dumps(value)


def _is_number(value: Any) -> bool:
    """A number or boolean scalar (bool is an int)."""
    return isinstance(value, int | float)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
}


def type_name(wanted: Any) -> str:
    """A JSON Schema `type` (or list of them) as a message names it: 'a whole number'."""
    if isinstance(wanted, list):
        return " or ".join(_TYPE_NAMES.get(str(w), str(w)) for w in wanted)
    return _TYPE_NAMES.get(str(wanted), str(wanted))


def _kind_of_type(wanted: Any) -> str:
    return {"integer": "a number"}.get(str(wanted), type_name(wanted))
