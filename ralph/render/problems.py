"""Validation results as text for people, JSON for machines, and GitHub annotations for CI."""

from __future__ import annotations

import json
from collections.abc import Iterator

from ralph.errors import Problem
from ralph.recipe.validate import ValidationReport

FORMATS = ("text", "json", "github")


def render_report(report: ValidationReport, fmt: str, *, color: bool = False) -> str:
    if fmt == "json":
        return json.dumps([_as_dict(p) for p in report.problems], indent=2)
    lines = [_github(p) if fmt == "github" else _text(p, color) for p in report.problems]
    return "\n".join([*lines, summary(report)])


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
