"""Rendering validation reports: text for people, JSON for machines, annotations for CI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from ralph.errors import Problem
from ralph.recipe.validate import FileReport, ValidationReport
from ralph.render.problems import problem_lines, render_report, summary
from tests.conftest import Result

TIMEOUT = Problem(
    "recipes/x.yaml", 14, 7, "agents.writer.timeout", "'60 seconds' is not a duration"
)
EMPTY = Problem("recipes/y.yaml", 1, 1, "", "recipe is empty")


def report(*files: tuple[str, tuple[Problem, ...]]) -> ValidationReport:
    return ValidationReport(tuple(FileReport(name, problems, None) for name, problems in files))


def test_text_puts_the_location_first_then_the_key_path() -> None:
    rendered = render_report(report(("recipes/x.yaml", (TIMEOUT,))), "text")
    assert rendered.splitlines() == [
        "recipes/x.yaml:14:7: agents.writer.timeout: '60 seconds' is not a duration",
        "1 recipe checked, 1 invalid, 1 error",
    ]


def test_a_problem_about_the_whole_file_has_no_key_path() -> None:
    assert list(problem_lines((EMPTY,))) == ["recipes/y.yaml:1:1: recipe is empty"]


def test_color_marks_the_location_and_severity_only_when_asked() -> None:
    (plain,) = problem_lines((TIMEOUT,))
    (colored,) = problem_lines((TIMEOUT,), color=True)
    assert "\x1b[" not in plain
    assert colored == (
        "\x1b[1mrecipes/x.yaml:14:7:\x1b[0m \x1b[31merror\x1b[0m "
        "agents.writer.timeout: '60 seconds' is not a duration"
    )


@pytest.mark.parametrize(
    ("files", "problems", "invalid", "expected"),
    [
        (1, 0, 0, "1 recipe checked, 0 invalid, 0 errors"),
        (1, 1, 1, "1 recipe checked, 1 invalid, 1 error"),
        (3, 4, 1, "3 recipes checked, 1 invalid, 4 errors"),
        (0, 0, 0, "0 recipes checked, 0 invalid, 0 errors"),
    ],
)
def test_the_summary_counts_recipes_invalid_recipes_and_errors(
    files: int, problems: int, invalid: int, expected: str
) -> None:
    entries = [(f"r{i}.yaml", (TIMEOUT,) * problems if i < invalid else ()) for i in range(files)]
    assert summary(report(*entries)) == expected


def test_json_is_the_list_of_problems_and_nothing_else() -> None:
    rendered = render_report(
        report(("recipes/x.yaml", (TIMEOUT,)), ("recipes/y.yaml", (EMPTY,))), "json"
    )
    assert json.loads(rendered) == [
        {
            "file": "recipes/x.yaml",
            "line": 14,
            "column": 7,
            "path": "agents.writer.timeout",
            "message": "'60 seconds' is not a duration",
            "severity": "error",
        },
        {
            "file": "recipes/y.yaml",
            "line": 1,
            "column": 1,
            "path": "",
            "message": "recipe is empty",
            "severity": "error",
        },
    ]
    assert json.loads(render_report(report(("ok.yaml", ())), "json")) == []


def test_github_annotations_escape_what_the_workflow_syntax_reserves() -> None:
    odd = Problem("a,b:c%.yaml", 3, 5, "vars.x", "100% wrong\r\nsecond line")
    rendered = render_report(report(("a,b:c%.yaml", (odd,))), "github")
    assert rendered.splitlines() == [
        "::error file=a%2Cb%3Ac%25.yaml,line=3,col=5::vars.x: 100%25 wrong%0D%0Asecond line",
        "1 recipe checked, 1 invalid, 1 error",
    ]


def test_github_annotations_carry_the_severity() -> None:
    warning = Problem("x.yaml", 2, 1, "", "deprecated", severity="warning")
    assert render_report(report(("x.yaml", (warning,))), "github").splitlines()[0] == (
        "::warning file=x.yaml,line=2,col=1::deprecated"
    )


def test_sarif_for_code_scanning(ralph: Callable[..., Result], tmp_path: Path) -> None:
    bad = tmp_path / "my bad#1 %.yaml"  # the URI escapes what a URI reference cannot hold
    recipe = "version: 1\nname: x\nagents: {a: {provider: echo}}\ntasks:\n"
    bad.write_text(recipe + "  - {name: t, agent: b, prompt: hi}\n")
    result = ralph("validate", str(bad), "--format", "sarif")
    assert result.code == 1
    log = json.loads(result.out)
    assert log["version"] == "2.1.0"
    run = log["runs"][0]
    assert run["tool"]["driver"]["name"] == "ralph"
    rule_ids = {rule["id"] for rule in run["tool"]["driver"]["rules"]}
    (finding,) = run["results"]
    assert finding["ruleId"] in rule_ids and finding["level"] == "error"
    assert "unknown agent 'b'" in finding["message"]["text"]
    location = finding["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == f"{tmp_path}/my%20bad%231%20%25.yaml"
    assert location["region"] == {"startLine": 5, "startColumn": 22}


def test_a_key_holding_a_lone_surrogate_is_shown_as_its_escape(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        'version: 1\nname: a\nagents:\n  local: {provider: echo, "\\ud800x": 1}\n'
        "tasks:\n  - {name: t, agent: local, prompt: hi}\n"
    )
    for fmt in ("text", "github"):
        result = ralph("validate", str(recipe), "--format", fmt)
        assert result.code == 1, result.err
        assert "agents.local.\\ud800x: unknown key '\\ud800x'" in result.out
