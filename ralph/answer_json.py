"""The `json` output filter's JSON: an answer parsed as JSON proper (no NaN, no Infinity, no
integer Python cannot convert) and checked against a JSON Schema, which `ralph validate`
checks first. A `$ref` is looked up in the schema itself, never fetched; a mismatch says where
and what was expected, never the answer's text (it is logged and counted in summaries).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ralph.providers.base import AttemptError
from ralph.units import MAX_INT_DIGITS

if TYPE_CHECKING:
    from jsonschema import ValidationError
    from jsonschema.protocols import Validator
    from referencing import Registry

OptionPath = tuple[str | int, ...]


class _NotJSON(ValueError):
    """A value Python's json module reads but JSON has not (NaN, infinities)."""


def _no_constant(name: str) -> Any:
    raise _NotJSON(f"answer is not JSON: {name} is not a JSON value")


def _finite_float(digits: str) -> float:
    number = float(digits)
    if math.isinf(number):  # 1e999 is JSON, but would be written back as Infinity
        raise _NotJSON("answer JSON has a number too large to keep")
    return number


def parse_answer(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise AttemptError("invalid_response", f"answer is not JSON: {exc.msg}") from None
    except _NotJSON as exc:
        raise AttemptError("invalid_response", str(exc)) from None
    except ValueError:  # what remains: an integer longer than Python converts
        limit = MAX_INT_DIGITS
        message = f"answer JSON has an integer of more than {limit} digits"
        raise AttemptError("invalid_response", message) from None
    except RecursionError:
        raise AttemptError("invalid_response", "answer is JSON nested too deeply") from None


# -- JSON Schema -------------------------------------------------------------------------------


def _registry() -> Registry:
    from referencing import Registry

    # one that retrieves nothing: a $ref is looked up in the schema itself, never fetched
    return Registry()


@functools.lru_cache(maxsize=64)
def _validator(schema_json: str) -> Validator:
    """A task's schema is the same for every answer: its validator is built once."""
    from jsonschema import Draft202012Validator

    validator: Validator = Draft202012Validator(json.loads(schema_json), registry=_registry())
    return validator


def check_answer(value: Any, schema: Any) -> None:
    from jsonschema.exceptions import best_match
    from referencing.exceptions import Unresolvable

    validator = _validator(json.dumps(schema, sort_keys=True))
    try:
        error = best_match(validator.iter_errors(value))
    except Unresolvable as exc:
        # refused by `ralph validate`; a recipe that was not validated fails its items
        ref = getattr(exc, "ref", None) or str(exc)
        message = f"the json filter's schema cannot resolve $ref {ref!r}"
        raise AttemptError("fatal", message) from None
    except RecursionError:
        message = "answer JSON is nested too deeply for the schema (or the schema refers to itself)"
        raise AttemptError("invalid_response", message) from None
    if error is not None:
        where = _location(error.absolute_path, _words(schema))
        at = f"at {where}: " if where else ""
        message = f"answer JSON does not match the schema: {at}{_expected(error)}"
        raise AttemptError("invalid_response", message)


def _words(schema: Any) -> set[str]:
    """Every text in the schema: what the recipe wrote, so safe to show."""
    if isinstance(schema, dict):
        return {*schema, *(w for v in schema.values() for w in _words(v))}
    if isinstance(schema, list):
        return {w for v in schema for w in _words(v)}
    return {schema} if isinstance(schema, str) else set()


_NAME = re.compile(r"[A-Za-z_][\w-]*")


def _location(path: Iterable[str | int], known: set[str]) -> str:
    """Where in the answer, by the schema's property names. An index is `[]` and a key the
    schema does not name `*`, as those come from the answer: they could hold what must not be
    logged, and would make each item's failure reason different."""
    parts = []
    for step in path:
        if isinstance(step, int):
            parts.append("[]")
        elif step not in known:
            parts.append(".*")
        else:
            parts.append(f".{step}" if _NAME.fullmatch(step) else f"[{json.dumps(step)}]")
    return "".join(parts).removeprefix(".")


_JSON_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),  # before int: a bool is an int to isinstance
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
    (type(None), "null"),
)


def _expected(error: ValidationError) -> str:
    """What the schema asked for where the answer failed it, never the value found there."""
    keyword, wanted, found = error.validator, error.validator_value, error.instance
    names = "a property name: " if "propertyNames" in error.relative_schema_path else ""
    if keyword == "type":
        types = " or ".join(wanted) if isinstance(wanted, list) else wanted
        return f"{names}expected {types}, got {_json_type(found)}"
    if keyword in ("required", "dependentRequired"):
        return f"missing required property {_missing(wanted, found)!r}"
    if keyword == "enum" and isinstance(wanted, list):
        return f"{names}expected one of {_shown(*wanted)}"
    if keyword is None:
        return "not allowed here (the schema there is false)"
    if isinstance(wanted, dict | list) and keyword != "const":
        return f"{names}does not satisfy {keyword}"  # anyOf, not, contains, ...
    return f"{names}expected {keyword} {_shown(wanted)}"  # minLength 3, pattern "^a", ...


def _json_type(value: Any) -> str:
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)), "value")


def _missing(wanted: Any, found: Any) -> str:
    if not isinstance(found, dict):
        return "?"
    # required: [names]; dependentRequired: {present name: [names it needs]}
    names = wanted if isinstance(wanted, list) else [n for k in found for n in wanted.get(k, [])]
    return next((n for n in names if n not in found), "?")


def _shown(*values: Any, limit: int = 80) -> str:
    text = ", ".join(json.dumps(v, ensure_ascii=False) for v in values)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def schema_problems(schema: Any) -> Iterator[tuple[OptionPath, str]]:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if not isinstance(schema, dict):
        return  # the recipe schema reports it
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        yield tuple(error.absolute_path), f"not a valid JSON Schema: {error.message}"
        return
    yield from _ref_problems(schema)


def _ref_problems(schema: dict[str, Any]) -> Iterator[tuple[OptionPath, str]]:
    """Each $ref (and $dynamicRef) that does not lead to a schema within `schema`."""
    from referencing.jsonschema import DRAFT202012

    root = DRAFT202012.create_resource(schema)
    paths = dict(_node_paths(schema, ()))
    pending = [(root, _registry().resolver_with_root(root))]
    while pending:
        resource, resolver = pending.pop()
        for keyword in ("$ref", "$dynamicRef"):
            ref = resource.contents.get(keyword)
            if isinstance(ref, str) and (problem := _ref_problem(ref, resolver.lookup)):
                yield (*paths[id(resource.contents)], keyword), problem
        # subresources are the subschemas (under properties, items, $defs, ...), not the values
        # of const or enum
        for sub in resource.subresources():
            if not isinstance(sub.contents, dict):
                continue
            try:
                pending.append((sub, resolver.in_subresource(sub)))
            except ValueError as exc:  # an $id that is no URL: urljoin cannot read it
                yield (*paths[id(sub.contents)], "$id"), f"not a usable $id: {exc}"


def _node_paths(node: Any, path: OptionPath) -> Iterator[tuple[int, OptionPath]]:
    if isinstance(node, dict):
        yield id(node), path
        for key, value in node.items():
            yield from _node_paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _node_paths(value, (*path, index))


def _ref_problem(ref: str, lookup: Callable[[str], Any]) -> str | None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError
    from referencing.exceptions import NoSuchAnchor, PointerToNowhere, Unresolvable

    try:
        target = lookup(ref).contents
    except (PointerToNowhere, NoSuchAnchor):
        return f"{ref!r} points to nothing in this schema"
    except Unresolvable:  # a document the schema does not hold
        return f"{ref!r} is outside this schema: a $ref is resolved within the schema, not fetched"
    except ValueError as exc:  # against an $id that is no URL
        return f"{ref!r} cannot be resolved: {exc}"
    try:
        Draft202012Validator.check_schema(target)
    except SchemaError:
        return f"{ref!r} points to something that is not a schema"
    return None
