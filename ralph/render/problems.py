"""Validation results as text for people, JSON for machines, GitHub annotations for CI, and
SARIF for code-scanning uploads."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from ralph.errors import Problem
from ralph.recipe.validate import ValidationReport
from ralph.text import writable

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
RULES = {"error": "ralph/invalid-recipe", "warning": "ralph/recipe-warning"}


def render_report(report: ValidationReport, fmt: str, *, color: bool = False) -> str:
    if fmt == "json":
        return json.dumps([_as_dict(p) for p in report.problems], indent=2)
    if fmt == "sarif":
        return json.dumps(sarif(report), indent=2)
    lines = [_github(p) if fmt == "github" else _text(p, color) for p in report.problems]
    text = "\n".join([*lines, summary(report)])
    # a key may hold a lone surrogate (YAML's "\ud800"), which no terminal takes: its escape
    return writable(text)


def summary(report: ValidationReport) -> str:
    checked, invalid, errors = len(report.files), report.invalid, len(report.problems)
    recipes = "recipe" if checked == 1 else "recipes"
    noun = "error" if errors == 1 else "errors"
    return f"{checked} {recipes} checked, {invalid} invalid, {errors} {noun}"


def problem_lines(problems: tuple[Problem, ...], *, color: bool = False) -> Iterator[str]:
    return (_text(p, color) for p in problems)


def _as_dict(problem: Problem) -> dict[str, object]:
    return {
        "file": problem.file,
        "line": problem.line,
        "column": problem.column,
        "path": problem.path,
        "message": problem.message,
        "severity": problem.severity,
    }


def _text(problem: Problem, color: bool) -> str:
    where = f"{problem.file}:{problem.line}:{problem.column}:"
    what = f"{problem.path}: {problem.message}" if problem.path else problem.message
    if color:
        return f"\x1b[1m{where}\x1b[0m \x1b[31m{problem.severity}\x1b[0m {what}"
    return f"{where} {what}"


def _github(problem: Problem) -> str:
    what = f"{problem.path}: {problem.message}" if problem.path else problem.message
    message = what.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    file = problem.file.replace("%", "%25").replace(",", "%2C").replace(":", "%3A")
    return f"::{problem.severity} file={file},line={problem.line},col={problem.column}::{message}"


def sarif(report: ValidationReport) -> dict[str, Any]:
    """SARIF 2.1.0, as `github/codeql-action/upload-sarif` and other scanners take it."""
    from ralph import __version__

    rules = [
        {"id": rule, "shortDescription": {"text": f"ralph validate: recipe {severity}"}}
        for severity, rule in RULES.items()
    ]
    results = [
        {
            "ruleId": RULES.get(p.severity, RULES["error"]),
            "level": p.severity if p.severity in RULES else "error",
            "message": {"text": f"{p.path}: {p.message}" if p.path else p.message},
            "locations": [
                {
                    "physicalLocation": {
                        # a URI reference: a space, '%' or '#' in a path is escaped
                        "artifactLocation": {"uri": quote(p.file)},
                        "region": {"startLine": p.line, "startColumn": p.column},
                    }
                }
            ],
        }
        for p in report.problems
    ]
    driver = {"name": "ralph", "version": __version__, "rules": rules}
    run = {"tool": {"driver": driver}, "results": results}
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}
