"""The JSON Schema is data; its errors become one readable finding per root cause."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from ralph.recipe.schema import recipe_schema, schema_findings, schema_text


def recipe(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "version": 1,
        "name": "ok",
        "agents": {"writer": {"provider": "echo"}},
        "tasks": [{"name": "t", "agent": "writer", "prompt": "hi"}],
    }
    return {**base, **changes}


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(recipe_schema())
    assert json.loads(schema_text()) == recipe_schema()


def test_a_valid_recipe_has_no_findings() -> None:
    assert schema_findings(recipe()) == []


def test_a_whole_number_is_written_as_one() -> None:
    # JSON Schema's "integer" takes 2.0, which the run cannot count with
    agents = {"writer": {"provider": "echo", "concurrency": 2.0}}
    assert schema_findings(recipe(agents=agents)) == [
        (("agents", "writer", "concurrency"), False, "expected a whole number, got 2.0")
    ]
    assert schema_findings(recipe(agents={"writer": {"provider": "echo", "concurrency": 2}})) == []


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"name": "greet\n"}, ("name",)),
        (
            {"agents": {"writer": {"provider": "echo", "timeout": "5s\n"}}},
            ("agents", "writer", "timeout"),
        ),
    ],
)
def test_a_pattern_matches_the_whole_value_not_up_to_a_final_line_break(
    changes: dict[str, Any], where: tuple[str, ...]
) -> None:
    # JSON Schema's regexes are ECMA-262's, whose `$` is the end; Python's also matches before "\n"
    (finding,) = schema_findings(recipe(**changes))
    assert finding[0] == where


def test_a_bad_key_name_is_reported_at_the_key_itself() -> None:
    findings = schema_findings(recipe(agents={"9lives": {"provider": "echo"}}))
    assert findings == [
        (
            ("agents", "9lives"),
            True,
            "'9lives' is not a valid name (expected letters, digits, '_' and '-', "
            "starting with a letter)",
        )
    ]


@pytest.mark.parametrize(
    ("value", "shown"),
    [("8", "'8'"), (2.5, "2.5"), (True, "true"), (None, "null"), ([8], "a list")],
)
def test_a_wrong_type_shows_the_value_or_its_kind(value: Any, shown: str) -> None:
    findings = schema_findings(recipe(agents={"w": {"provider": "echo", "concurrency": value}}))
    assert findings == [
        (("agents", "w", "concurrency"), False, f"expected a whole number, got {shown}")
    ]


def test_an_unknown_key_suggests_the_closest_known_one() -> None:
    findings = schema_findings(recipe(agents={"w": {"provider": "echo", "concurency": 2}}))
    assert findings == [
        (
            ("agents", "w", "concurency"),
            True,
            "unknown key 'concurency' (did you mean 'concurrency'?)",
        )
    ]


@pytest.mark.parametrize("key", ["api_key", "API_KEY", "Authorization", "x-api-key"])
def test_a_secret_field_is_left_to_the_secret_scan(key: str) -> None:
    # reported once, by the semantic check, with advice on where the key should live
    assert schema_findings(recipe(agents={"w": {"provider": "echo", key: "x"}})) == []


def test_a_mapping_that_matches_no_form_names_the_keys_that_would() -> None:
    findings = schema_findings(recipe(health_checks=[{"ping": "example.com"}]))
    assert findings == [
        (("health_checks", 0), False, "expected one of the keys agent, http, command, got ping")
    ]


def test_a_mapping_that_picks_a_form_is_checked_against_that_form() -> None:
    findings = schema_findings(recipe(health_checks=[{"http": {"url": "ftp://x"}}]))
    assert findings == [
        (("health_checks", 0, "http", "url"), False, "'ftp://x' is not an http(s) URL")
    ]


def test_a_value_of_no_allowed_type_names_every_allowed_type() -> None:
    task = {"name": "t", "agent": "writer", "prompt": "hi", "cache": "sometimes"}
    assert schema_findings(recipe(tasks=[task])) == [
        (("tasks", 0, "cache"), False, "expected a boolean or a mapping, got 'sometimes'")
    ]


def test_a_filter_with_two_keys_says_to_split_it() -> None:
    task = {
        "name": "t",
        "agent": "writer",
        "prompt": "hi",
        "filters": {"input": [{"max_chars": 10, "deny": ["x"]}]},
    }
    assert schema_findings(recipe(tasks=[task])) == [
        (
            ("tasks", 0, "filters", "input", 0),
            False,
            "takes exactly one key, got max_chars, deny (give each as its own list item)",
        )
    ]


@pytest.mark.parametrize(
    ("agent", "missing"),
    [({"provider": "openai"}, "model"), ({"provider": "command"}, "command"), ({}, "provider")],
)
def test_required_keys_depend_on_the_provider(agent: dict[str, Any], missing: str) -> None:
    assert schema_findings(recipe(agents={"w": agent})) == [
        (("agents", "w"), True, f"missing required key '{missing}'")
    ]


def test_a_long_value_is_shortened_in_the_message() -> None:
    ((_, _, message),) = schema_findings(recipe(name="X" * 200))
    assert message.startswith("'" + "X" * 57 + "...'")


@pytest.mark.parametrize(
    ("name", "shown", "kind"), [(2024, "2024", "a number"), (True, "true", "a boolean")]
)
def test_a_name_yaml_reads_as_a_number_must_be_quoted(name: Any, shown: str, kind: str) -> None:
    assert schema_findings(recipe(name=name)) == [
        (("name",), False, f"{shown} is read as {kind}; put it in quotes to make it text")
    ]
