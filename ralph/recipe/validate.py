"""The whole check of one recipe or many: load → overrides → schema → semantics → model."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ralph.errors import Problem, RecipeError, UsageError
from ralph.recipe.load import MAX_BYTES, Source, load_source, read_capped, top_level
from ralph.recipe.model import Recipe, TemplateSite
from ralph.recipe.positions import Locator

if TYPE_CHECKING:
    from ralph.recipe.build import Sites

_RECIPE_MARKERS = (
    re.compile(rb"^(?:\xef\xbb\xbf)?version\s*:", re.M),
    # a list of tasks, as a recipe has (a go-task Taskfile's is a mapping by name)
    re.compile(rb"^tasks\s*:\s*(?:#[^\n]*)?\n(?:\s*(?:#[^\n]*)?\n)*\s*- ", re.M),
)
# the same keys quoted or in a flow mapping, for a file too broken to read its keys from
_LOOSE_MARKERS = (
    re.compile(rb"^(?:\xef\xbb\xbf)?\{?\s*[\"']?version[\"']?\s*:", re.M),
    re.compile(rb"[{,\s][\"']?tasks[\"']?\s*:"),
)
_SKIPPED_DIRS = frozenset({".git", ".ralph", ".venv", "venv", "node_modules", "__pycache__"})


@dataclass(frozen=True)
class FileReport:
    display: str
    problems: tuple[Problem, ...]
    recipe: Recipe | None


@dataclass(frozen=True)
class ValidationReport:
    files: tuple[FileReport, ...]

    @property
    def invalid(self) -> int:
        return sum(1 for f in self.files if f.problems)

    @property
    def problems(self) -> tuple[Problem, ...]:
        return tuple(p for f in self.files for p in f.problems)


def validate_paths(
    paths: Sequence[Path],
    profile: str | None = None,
    sets: Sequence[str] = (),
    *,
    only_recipes: bool = False,
) -> ValidationReport:
    """Check every recipe under `paths`; `only_recipes` skips named files that are not recipes
    (what a pre-commit hook handed every changed YAML file wants)."""
    from ralph.recipe.overrides import parse_set

    for assignment in sets:
        parse_set(assignment)  # a malformed --set is a usage error, not a problem per file
    files = discover(paths)
    if only_recipes:
        files = [f for f in files if _looks_like_recipe(f)]
    return ValidationReport(tuple(check_file(p, profile, sets) for p in files))


def load_recipe(path: Path, profile: str | None = None, sets: Sequence[str] = ()) -> Recipe:
    """The model of one recipe, or RecipeError with every problem found."""
    if not path.exists():  # named on the command line: a usage error, as `validate` has it
        raise UsageError(f"{path}: no such file or directory")
    report = check_file(path, profile, sets)
    if report.recipe is None:
        raise RecipeError(report.problems)
    return report.recipe


def discover(paths: Sequence[Path]) -> list[Path]:
    """Named files as they are; folders searched for YAML files that look like recipes."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            recipes = [p for p in sorted(_yaml_files(path)) if _looks_like_recipe(p)]
            if not recipes:  # CI pointed at the wrong folder must not pass as "all valid"
                raise UsageError(
                    f"{path}: no recipes in this folder (a recipe is a YAML file with "
                    "top-level version and tasks)"
                )
            found.extend(recipes)
        elif path.exists():
            found.append(path)
        else:
            raise UsageError(f"{path}: no such file or directory")
    return list(dict.fromkeys(found))


def _yaml_files(folder: Path) -> list[Path]:
    return [
        p
        for p in folder.rglob("*")
        if p.suffix in (".yaml", ".yml")
        and p.is_file()
        and not _SKIPPED_DIRS.intersection(p.relative_to(folder).parts[:-1])
    ]


def _looks_like_recipe(path: Path) -> bool:
    """Top-level `version` and `tasks` keys: found by a pattern in block style, read from the
    YAML when quoted or in flow style (`{"version": 1, ...}`), so no recipe skips CI."""
    try:
        head = read_capped(path, MAX_BYTES)
    except OSError:
        return True  # let the check report why it cannot be read
    if all(marker.search(head) for marker in _RECIPE_MARKERS):
        return True  # a recipe as recipes are written: no parse needed
    if b"version" not in head or b"tasks" not in head:
        return False  # the common case of other YAML: no parse needed
    found = top_level(head) if len(head) <= MAX_BYTES else None
    if found is not None:
        # a go-task Taskfile has `version` and `tasks` too, its tasks a mapping by name
        return {"version", "tasks"} <= found.keys() and not isinstance(found["tasks"], dict)
    return all(marker.search(head) for marker in _LOOSE_MARKERS)


def check_file(path: Path, profile: str | None = None, sets: Sequence[str] = ()) -> FileReport:
    from ralph.recipe.build import build_recipe
    from ralph.recipe.overrides import apply_profile, apply_sets, unread_sets

    display = str(path)
    try:
        source = load_source(path, display)
    except RecipeError as exc:
        return FileReport(display, exc.problems, None)
    data = source.data
    try:
        data = apply_profile(data, profile) if profile else data
    except UsageError as exc:
        problem = Locator(display, source.tree, source.text).problem(
            ("profiles",), str(exc), at_key=True
        )
        return FileReport(display, (problem,), None)
    declared = data
    try:
        data = apply_sets(data, sets) if sets else data
    except UsageError as exc:
        return FileReport(display, (Problem(display, 1, 1, "", str(exc)),), None)
    problems = _problems(source, data, path, profile)
    if sets and not problems:
        unread = unread_sets(declared, data, sets, path.parent)
        problems = [Problem(display, 1, 1, "", message) for message in unread]
    if profile is None and not problems:
        problems = _profile_problems(source, data, path)
    unique = sorted(
        {(p.file, p.line, p.column, p.message): p for p in problems}.values(), key=Problem.sort_key
    )
    if unique:
        return FileReport(display, tuple(unique), None)
    where = Locator(display, source.tree, source.text, profile)
    return FileReport(display, (), build_recipe(data, path, profile, sets, _sites(where, sets)))


def _sites(where: Locator, sets: Sequence[str]) -> Sites:
    """Where template lines are written, looked up only when an error needs one (the Locator
    walks the YAML tree); nowhere for a template a --set replaced, whose text is not in the
    file."""
    from ralph.recipe.overrides import parse_set

    replaced = {tuple(parts[:3]) for parts, _ in map(parse_set, sets) if parts[0] == "tasks"}

    def sites(index: int, name: str) -> TemplateSite:
        def site(field: str, line: int) -> str | None:
            if ("tasks", name, field) in replaced:
                return None
            found = where.template_problem(("tasks", index, field), line, "")
            return f"{found.file}:{found.line}:{found.column}"

        return site

    return sites


def _problems(
    source: Source, data: dict[str, Any], path: Path, profile: str | None
) -> list[Problem]:
    from ralph.recipe.schema import schema_findings
    from ralph.recipe.semantic import semantic_problems

    where = Locator(source.display, source.tree, source.text, profile)
    problems = [
        where.problem(p, message, at_key=at_key) for p, at_key, message in schema_findings(data)
    ]
    return problems + semantic_problems(data, path.parent, where)


def _profile_problems(source: Source, data: dict[str, Any], path: Path) -> list[Problem]:
    """What goes wrong only once a profile is merged in, so that a broken profile fails
    `ralph validate` and not the production run that first selects it."""
    from dataclasses import replace

    from ralph.recipe.overrides import apply_profile

    found: list[Problem] = []
    profiles = data.get("profiles")
    for name in profiles if isinstance(profiles, dict) else ():
        for problem in _problems(source, apply_profile(data, name), path, name):
            found.append(replace(problem, message=f"with profile '{name}': {problem.message}"))
    return found
