"""Checks the schema cannot express: cross-references, files, templates and secrets."""

from __future__ import annotations

import difflib
import os
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeGuard

from ralph.errors import Problem
from ralph.recipe.positions import Locator
from ralph.secrets import find_secret, is_secret_field, looks_like_secret, redact
from ralph.templates import Scope, check, names_used
from ralph.units import number_problem

ITEM_FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}
COMMAND_ONLY = ("command", "shell", "workdir", "probe", "max_output")
KEY_SOURCES = ("api_key_env", "api_key_file", "api_key_command")
SECRET_ADVICE = (
    "recipes must not hold secrets: put the key in an environment variable and name it in "
    "api_key_env (or use api_key_file / api_key_command)"
)

MAX_PROMPT_FILE_BYTES = 10_000_000  # past any model's context; a device never ends

Key = tuple[str | int, ...]


def semantic_problems(data: dict[str, Any], base_dir: Path, where: Locator) -> list[Problem]:
    """Every semantic problem in schema-shaped `data` (parts of the wrong type are skipped)."""
    agents = _mapping(data.get("agents"))
    problems = list(_secrets(data, (), where))
    problems += _numbers(data, (), where)
    problems += _agent_problems(agents, where)
    problems += _task_problems(data, agents, base_dir, where)
    problems += _health_problems(data, agents, where)
    problems += _profile_problems(data, where)
    return problems


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _unknown(kind: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}' (known: {', '.join(known) or 'none'}{hint})"


def _secrets(node: Any, path: Key, where: Locator) -> Iterator[Problem]:
    if isinstance(node, dict):
        for key, value in node.items():
            if is_secret_field(key):
                message = f"'{key}' is not allowed here; {SECRET_ADVICE}"
                yield where.problem((*path, key), message, at_key=True)
                continue
            if looks_like_secret(key):
                message = f"this key looks like a literal API key; {SECRET_ADVICE}"
                yield where.problem((*path, key), message, at_key=True)
            yield from _secrets(value, (*path, key), where)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _secrets(value, (*path, index), where)
    elif isinstance(node, str) and looks_like_secret(node):
        yield where.problem(path, f"looks like a literal API key; {SECRET_ADVICE}")


def _numbers(node: Any, path: Key, where: Locator) -> Iterator[Problem]:
    """NaN and infinity: YAML writes them (.nan, .inf, 1e400), no limit or price can be one."""
    if isinstance(node, dict | list):
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            yield from _numbers(value, (*path, key), where)
    elif (problem := number_problem(node)) is not None:
        yield where.problem(path, problem)


def _os_text(value: Any) -> TypeGuard[str]:
    """A string usable as a path; the schema reports one holding a NUL."""
    return isinstance(value, str) and "\0" not in value


def _agent_problems(agents: dict[str, Any], where: Locator) -> Iterator[Problem]:
    names = list(agents)
    for name, agent in agents.items():
        if not isinstance(agent, dict):
            continue
        path: Key = ("agents", name)
        provider = agent.get("provider")
        if provider in ("openai", "anthropic"):
            for key in COMMAND_ONLY:
                if key in agent:
                    yield where.problem(
                        (*path, key), f"'{key}' applies only to provider: command", at_key=True
                    )
        sources = [k for k in KEY_SOURCES if k in agent]
        if len(sources) > 1:
            yield where.problem(
                (*path, sources[1]),
                f"use one of {', '.join(KEY_SOURCES)}, not {' and '.join(sources)}",
                at_key=True,
            )
        if isinstance(agent.get("command"), str) and not agent.get("shell"):
            yield where.problem(
                (*path, "command"),
                "a command given as one string needs 'shell: true' (or give it as a list)",
            )
        elif isinstance(agent.get("command"), str) and not agent["command"].strip():
            yield where.problem((*path, "command"), "must not be blank: it would run nothing")
        if (problem := _url_problem(agent.get("base_url"))) is not None:
            yield where.problem((*path, "base_url"), problem)
        if _looks_like_a_key(agent.get("api_key_env")):
            yield where.problem(
                (*path, "api_key_env"),
                "looks like a key itself, not the name of a variable that holds one (not "
                "shown here): export the key, e.g. as OPENAI_API_KEY, and name that variable",
            )
        fallback = agent.get("fallback")
        if isinstance(fallback, str):
            if fallback not in agents:
                yield where.problem((*path, "fallback"), _unknown("agent", fallback, names))
            elif fallback == name:
                yield where.problem((*path, "fallback"), "an agent cannot fall back to itself")
    yield from _fallback_cycles(agents, where)


def _fallback_cycles(agents: dict[str, Any], where: Locator) -> Iterator[Problem]:
    reported: set[str] = set()
    for start in agents:
        chain = [start]
        while True:
            nxt = _mapping(agents.get(chain[-1])).get("fallback")
            if not isinstance(nxt, str) or nxt not in agents or nxt == chain[-1]:
                break
            if nxt in chain:
                cycle = chain[chain.index(nxt) :]
                if not reported & set(cycle):
                    reported |= set(cycle)
                    first = min(cycle)
                    ring = cycle[cycle.index(first) :] + cycle[: cycle.index(first)] + [first]
                    yield where.problem(
                        ("agents", first, "fallback"), f"fallback cycle: {' → '.join(ring)}"
                    )
                break
            chain.append(nxt)


def _task_problems(
    data: dict[str, Any], agents: dict[str, Any], base_dir: Path, where: Locator
) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    variables = frozenset(_mapping(data.get("vars")))
    tasks = _list(data.get("tasks"))
    names = [t.get("name") for t in tasks if isinstance(t, dict)]
    for index, task in enumerate(tasks):
        if not isinstance(task, dict):
            continue
        path: Key = ("tasks", index)
        name = task.get("name")
        if isinstance(name, str):
            if name in seen:
                yield where.problem(
                    (*path, "name"), f"duplicate task name '{name}' (also tasks[{seen[name]}])"
                )
            seen.setdefault(name, index)
        agent = task.get("agent")
        if isinstance(agent, str) and agent not in agents:
            yield where.problem((*path, "agent"), _unknown("agent", agent, list(agents)))
        yield from _prompt_source(task, path, where)
        yield from _files(task, path, base_dir, where)
        yield from _regexes(task, path, where)
        yield from _filter_options(task, path, where)
        later = frozenset(str(n) for n in names[len(seen) :] if n != name)
        scope = _scope(task, variables, frozenset(seen) - {name}, later)
        yield from _templates(task, path, scope, base_dir, where)


def _prompt_source(task: dict[str, Any], path: Key, where: Locator) -> Iterator[Problem]:
    has_prompt, has_file = "prompt" in task, "prompt_file" in task
    if has_prompt and has_file:
        yield where.problem(
            (*path, "prompt_file"), "give either prompt or prompt_file, not both", at_key=True
        )
    elif not has_prompt and not has_file:
        yield where.problem(path, "missing 'prompt' or 'prompt_file'", at_key=True)


def _files(task: dict[str, Any], path: Key, base_dir: Path, where: Locator) -> Iterator[Problem]:
    prompt_file = task.get("prompt_file")
    if _os_text(prompt_file) and (missing := _not_a_file(base_dir / prompt_file)):
        yield where.problem(
            (*path, "prompt_file"),
            f"prompt file '{prompt_file}' {missing}",
        )
    for_each = task.get("for_each")
    if isinstance(for_each, dict) and _os_text(for_each.get("file")):
        file = for_each["file"]
        if missing := _not_a_file(base_dir / file):
            yield where.problem(
                (*path, "for_each", "file"),
                f"items file '{file}' {missing}",
            )
        elif "format" not in for_each and Path(file).suffix.lower() not in ITEM_FORMATS:
            yield where.problem(
                (*path, "for_each", "file"),
                f"cannot tell the format of '{file}' from its extension; "
                "add format: jsonl, csv, yaml or json",
            )
    output = task.get("output")
    if isinstance(output, str) and _escapes(output):
        yield where.problem(
            (*path, "output"),
            f"output path '{output}' could leave the output directory (no '..' or absolute paths)",
        )
    elif isinstance(output, str) and _names_no_file(output):
        yield where.problem(
            (*path, "output"),
            f"output path '{output}' names the output directory itself, not a file",
        )
    elif isinstance(output, str) and "for_each" in task and _same_for_every_item(output):
        yield where.problem(
            (*path, "output"),
            f"output path '{output}' is the same for every item (it reads no `item`): "
            "each would replace the last one's file; e.g. 'answers/{{ item.id }}.md'",
        )


def _not_a_file(path: Path) -> str | None:
    """Why `path` cannot be read as a file (None when it can): missing, or something else."""
    if path.is_file():
        return None
    if path.is_dir():
        return "is a folder, not a file"
    return "is not a regular file" if path.exists() else "not found (relative to the recipe)"


def _same_for_every_item(template: str) -> bool:
    names = names_used(template)
    return names is not None and "item" not in names


def _escapes(template: str) -> bool:
    literal = re.sub(r"\{\{.*?\}\}|\{%.*?%\}", "x", template)
    parts = re.split(r"[\\/]", literal)
    return (
        literal.startswith(("/", "\\", "~"))
        or bool(re.match(r"^[A-Za-z]:", literal))
        or ".." in parts
    )


def _names_no_file(template: str) -> bool:
    """A constant output that is empty or `.` once normalised: every item's write would fail."""
    if re.search(r"\{[{%#]", template):
        return False  # rendered per item: only the run knows the path
    return not template.strip() or os.path.normpath(template.strip()) == "."


def _regexes(task: dict[str, Any], path: Key, where: Locator) -> Iterator[Problem]:
    filters = _mapping(task.get("filters"))
    for stage in ("input", "output"):
        for index, spec in enumerate(_list(filters.get(stage))):
            spec = _mapping(spec)
            candidates: list[tuple[Key, Any]] = []
            for n, pattern in enumerate(_list(spec.get("deny"))):
                candidates.append((("filters", stage, index, "deny", n), pattern))
            replace = _mapping(spec.get("regex_replace"))
            candidates.append(
                (("filters", stage, index, "regex_replace", "pattern"), replace.get("pattern"))
            )
            for sub, pattern in candidates:
                yield from _regex((*path, *sub), pattern, where)
    yield from _condition_regexes(
        _mapping(task.get("loop")).get("until"), (*path, "loop", "until"), where
    )


def _filter_options(task: dict[str, Any], path: Key, where: Locator) -> Iterator[Problem]:
    from ralph.filters import option_problems

    for index, spec in enumerate(_list(_mapping(task.get("filters")).get("output"))):
        for name, options in _mapping(spec).items():
            for sub, message in option_problems(name, options):
                yield where.problem((*path, "filters", "output", index, name, *sub), message)


def _condition_regexes(condition: Any, path: Key, where: Locator) -> Iterator[Problem]:
    spec = _mapping(condition)
    yield from _regex((*path, "regex"), spec.get("regex"), where)
    for group in ("all", "any"):
        for index, sub in enumerate(_list(spec.get(group))):
            yield from _condition_regexes(sub, (*path, group, index), where)


def _regex(path: Key, pattern: Any, where: Locator) -> Iterator[Problem]:
    if not isinstance(pattern, str):
        return
    try:
        re.compile(pattern)
    except re.error as exc:
        yield where.problem(path, f"invalid regular expression: {exc}")


def _scope(
    task: dict[str, Any], variables: frozenset[str], earlier: frozenset[str], later: frozenset[str]
) -> Scope:
    names = {"vars", "task", "outputs"}
    if "for_each" in task:
        names.add("item")
    if "loop" in task:
        names |= {"iteration", "previous", "history"}
    return Scope(names=frozenset(names), vars=variables, outputs=earlier, later=later)


def _templates(
    task: dict[str, Any], path: Key, scope: Scope, base_dir: Path, where: Locator
) -> Iterator[Problem]:
    for key in ("system", "prompt", "output"):
        source = task.get(key)
        # a template holding a key is reported as one (elsewhere); its names would be pieces
        # of the key that redact() no longer recognises (`vars.sk-proj-...` splits at '-')
        if isinstance(source, str) and find_secret(source) is None:
            for finding in check(source, scope):
                yield where.template_problem((*path, key), finding.line, finding.message)
    prompt_file = task.get("prompt_file")
    if _os_text(prompt_file):
        yield from _template_file(prompt_file, (*path, "prompt_file"), scope, base_dir, where)


def _template_file(
    name: str, path: Key, scope: Scope, base_dir: Path, where: Locator
) -> Iterator[Problem]:
    from ralph.recipe.load import read_capped
    from ralph.recipe.positions import dotted

    # shown the way the recipe is shown, so that `file:line` opens in an editor
    shown = str(Path(where.display).parent / name)
    if not (base_dir / name).is_file():
        return  # reported by _files; a FIFO or device is not read
    try:
        raw = read_capped(base_dir / name, MAX_PROMPT_FILE_BYTES)
    except OSError:
        return  # gone since _files looked
    if len(raw) > MAX_PROMPT_FILE_BYTES:
        limit = MAX_PROMPT_FILE_BYTES // 1_000_000
        yield where.problem(path, f"prompt file '{name}' is over {limit} MB; prompts are limited")
        return
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = exc.object[: exc.start]
        line, col = before.count(b"\n") + 1, exc.start - before.rfind(b"\n")
        yield Problem(shown, line, col, dotted(path), "prompt file is not valid UTF-8")
        return
    if (start := find_secret(source)) is not None:
        # at the recipe's line: the recipe is what brings the file into a run
        line = source.count("\n", 0, start) + 1
        message = f"prompt file '{name}' line {line}: looks like a literal API key"
        yield where.problem(path, f"{message}; {SECRET_ADVICE}")
        return  # its findings would quote pieces of the key (see _templates)
    for finding in check(source, scope):
        yield Problem(shown, finding.line, 1, dotted(path), redact(finding.message))


def _health_problems(
    data: dict[str, Any], agents: dict[str, Any], where: Locator
) -> Iterator[Problem]:
    for index, check_spec in enumerate(_list(data.get("health_checks"))):
        url = _mapping(_mapping(check_spec).get("http")).get("url")
        if (problem := _url_problem(url)) is not None:
            yield where.problem(("health_checks", index, "http", "url"), problem)
        agent = _mapping(check_spec).get("agent")
        if isinstance(agent, str) and agent not in agents:
            yield where.problem(
                ("health_checks", index, "agent"), _unknown("agent", agent, list(agents))
            )


def _url_problem(url: Any) -> str | None:
    """Why an http(s) URL (the schema checked the scheme) cannot be used, if it cannot: parsed
    as aiohttp will parse it, so a URL that passes here cannot fail there."""
    from yarl import URL

    if not isinstance(url, str):
        return None
    try:
        host = URL(url).raw_host  # as DNS will see it: IDNA-encoded
    except ValueError as exc:
        return f"is not a usable URL: {redact(str(exc))}"
    if not host:
        return "is not a usable URL: it names no host"
    parsed = URL(url)
    if parsed.raw_user is not None or parsed.raw_password is not None:
        return (
            "carries credentials (user:password@); a key comes from api_key_env, "
            "api_key_file or api_key_command"
        )
    secret = next((name for name in parsed.query if _credential_param(name)), None)
    if secret is not None:
        return (
            f"carries a credential in its query ('{secret}=...'); a key comes from "
            "api_key_env, api_key_file or api_key_command"
        )
    if any(len(label) > 63 for label in host.split(".")) or len(host) > 253:
        return "is not a usable URL: a host name label is over 63 characters (or the name over 253)"
    return None


def _looks_like_a_key(name: Any) -> bool:
    """A variable name as a pasted key would be one: 20 or more hexadecimal digits, letters
    and numbers mixed (Azure's keys are 32). Names are words (OPENAI_API_KEY, AzureKey2024),
    which this leaves alone; a key of another alphabet cannot be told from a long name."""
    if not isinstance(name, str) or len(name) < 20:
        return False
    hexadecimal = all(c in string.hexdigits for c in name)
    return hexadecimal and any(c.isdigit() for c in name) and any(c.isalpha() for c in name)


def _credential_param(name: str) -> bool:
    """A query parameter that carries a credential: `api_key`, `token`, ..., and the bare `key`
    and `sig` of Google's and Azure's signed URLs."""
    return is_secret_field(name) or name.lower() in ("key", "sig", "signature")


def _profile_problems(data: dict[str, Any], where: Locator) -> Iterator[Problem]:
    known: dict[str, list[str]] = {
        "agents": list(_mapping(data.get("agents"))),
        "vars": list(_mapping(data.get("vars"))),
        "tasks": [str(t.get("name")) for t in _list(data.get("tasks")) if isinstance(t, dict)],
    }
    for profile, body in _mapping(data.get("profiles")).items():
        for section, names in known.items():
            for name in _mapping(_mapping(body).get(section)):
                if name not in names:
                    kind = section.rstrip("s") if section != "vars" else "var"
                    message = f"profile '{profile}' overrides {_unknown(kind, name, names)}"
                    yield where.problem(("profiles", profile, section, name), message, at_key=True)
