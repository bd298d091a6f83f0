"""`ralph validate` end to end: output formats, folders, exit codes, profiles and overrides."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT, Result

Ralph = Callable[..., Result]

VALID = """\
version: 1
name: greet
vars:
  tone: terse
agents:
  local: {provider: echo}
tasks:
  - name: greet
    agent: local
    prompt: "Be {{ vars.tone }}."
profiles:
  remote:
    agents:
      local: {provider: openai, model: gpt-4o-mini}
  calm:
    vars: {tone: calm}
"""

# two problems at known places: line 6 (timeout value) and line 9 (unknown agent)
INVALID = """\
version: 1
name: broken
agents:
  local:
    provider: echo
    timeout: 60 seconds
tasks:
  - name: greet
    agent: nobody
    prompt: hi
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return path


@pytest.fixture
def recipes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with one valid and one invalid recipe; paths print relative to it."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "valid.yaml", VALID)
    write(tmp_path / "invalid.yaml", INVALID)
    return tmp_path


@pytest.mark.usefixtures("recipes")
def test_a_valid_recipe_exits_0_with_a_summary(ralph: Ralph) -> None:
    result = ralph("validate", "valid.yaml")
    assert (result.code, result.out, result.err) == (
        0,
        "1 recipe checked, 0 invalid, 0 errors\n",
        "",
    )


@pytest.mark.usefixtures("recipes")
def test_an_invalid_recipe_exits_1_with_each_problem_located(ralph: Ralph) -> None:
    result = ralph("validate", "invalid.yaml")
    assert result.code == 1
    assert result.out.splitlines() == [
        "invalid.yaml:6:14: agents.local.timeout: '60 seconds' is not a duration "
        "(expected e.g. 30s, 5m)",
        "invalid.yaml:9:12: tasks[0].agent: unknown agent 'nobody' (known: local)",
        "1 recipe checked, 1 invalid, 2 errors",
    ]


@pytest.mark.usefixtures("recipes")
def test_format_json_is_a_list_of_located_problems(ralph: Ralph) -> None:
    result = ralph("validate", "--format", "json", "valid.yaml", "invalid.yaml")
    assert result.code == 1
    problems = json.loads(result.out)
    assert problems == [
        {
            "file": "invalid.yaml",
            "line": 6,
            "column": 14,
            "path": "agents.local.timeout",
            "message": "'60 seconds' is not a duration (expected e.g. 30s, 5m)",
            "severity": "error",
        },
        {
            "file": "invalid.yaml",
            "line": 9,
            "column": 12,
            "path": "tasks[0].agent",
            "message": "unknown agent 'nobody' (known: local)",
            "severity": "error",
        },
    ]


@pytest.mark.usefixtures("recipes")
def test_format_json_of_a_valid_recipe_is_an_empty_list(ralph: Ralph) -> None:
    result = ralph("validate", "-f", "json", "valid.yaml")
    assert result.code == 0
    assert json.loads(result.out) == []


@pytest.mark.usefixtures("recipes")
def test_format_github_prints_workflow_annotations(ralph: Ralph) -> None:
    result = ralph("validate", "--format", "github", "invalid.yaml")
    assert result.code == 1
    *annotations, summary = result.out.splitlines()
    assert annotations == [
        "::error file=invalid.yaml,line=6,col=14::agents.local.timeout: '60 seconds' is not a "
        "duration (expected e.g. 30s, 5m)",
        "::error file=invalid.yaml,line=9,col=12::tasks[0].agent: unknown agent 'nobody' "
        "(known: local)",
    ]
    assert summary == "1 recipe checked, 1 invalid, 2 errors"


def test_a_folder_is_searched_recursively_for_recipes_only(
    ralph: Ralph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "recipes" / "a.yaml", VALID)
    write(tmp_path / "recipes" / "team" / "b.yml", VALID.replace("greet", "hello"))
    bad = INVALID.replace("prompt: hi", "prompt: '{{ vars.nope }}'\n    output: ../x.md")
    write(tmp_path / "recipes" / "team" / "nested" / "c.yaml", bad)
    # YAML that is not a recipe, other files, and tool folders are skipped
    write(tmp_path / "recipes" / "docker-compose.yaml", "version: '3'\nservices: {}\n")
    # a go-task Taskfile has version and tasks too, its tasks a mapping
    write(tmp_path / "recipes" / "Taskfile.yml", "version: '3'\ntasks:\n  build: {cmds: [make]}\n")
    write(tmp_path / "recipes" / "items.yaml", "- {id: 1}\n")
    write(tmp_path / "recipes" / "notes.txt", INVALID)
    write(tmp_path / "recipes" / ".git" / "stale.yaml", INVALID)
    write(tmp_path / "recipes" / "node_modules" / "pkg" / "x.yaml", INVALID)

    result = ralph("validate", "recipes")

    assert result.code == 1
    *problems, summary = result.out.splitlines()
    assert summary == "3 recipes checked, 1 invalid, 4 errors"
    assert {line.split(":")[0] for line in problems} == {"recipes/team/nested/c.yaml"}


def test_a_folder_of_valid_recipes_exits_0(
    ralph: Ralph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "r" / "one.yaml", VALID)
    write(tmp_path / "r" / "two.yaml", VALID)
    result = ralph("validate", "r")
    assert (result.code, result.out) == (0, "2 recipes checked, 0 invalid, 0 errors\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "--bogus", "valid.yaml"],
        ["validate", "--format", "xml", "valid.yaml"],
        ["validate", "valid.yaml", "missing.yaml"],
        ["validate"],
        ["validate", "valid.yaml", "--set", "tone"],
        ["validate", "valid.yaml", "--profile"],
    ],
    ids=["unknown-option", "unknown-format", "no-such-path", "no-path", "bad-set", "no-profile"],
)
@pytest.mark.usefixtures("recipes")
def test_usage_errors_exit_2_without_checking_anything(ralph: Ralph, argv: list[str]) -> None:
    result = ralph(*argv)
    assert result.code == 2, result.out + result.err
    assert "recipe checked" not in result.out
    assert "recipes checked" not in result.out
    assert result.err.strip()
    assert "Traceback" not in result.out + result.err


@pytest.mark.usefixtures("recipes")
def test_a_missing_path_is_named(ralph: Ralph) -> None:
    result = ralph("validate", "valid.yaml", "missing.yaml")
    assert result.err == "error: missing.yaml: no such file or directory\n"


@pytest.mark.parametrize(
    "command",
    [["apply"], ["apply", "--dry-run"], ["plan"], ["health"], ["cache", "explain", "--task", "t"]],
)
def test_a_missing_recipe_is_a_usage_error_for_every_command(
    ralph: Ralph, tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "missing.yaml"
    result = ralph(*command, str(missing))
    assert (result.code, result.err) == (2, f"error: {missing}: no such file or directory\n")


@pytest.mark.usefixtures("recipes")
def test_a_profile_is_applied_before_checking(ralph: Ralph, tmp_path: Path) -> None:
    assert ralph("validate", "valid.yaml").code == 0
    assert ralph("validate", "valid.yaml", "--profile", "calm").code == 0

    # the profile turns the echo agent into an openai one without a model
    Path("broken.yaml").write_text(VALID.replace(", model: gpt-4o-mini}", "}"))
    result = ralph("validate", "broken.yaml", "--profile", "remote")
    assert result.code == 1
    assert result.out.splitlines() == [
        "broken.yaml:14:7: agents.local: missing required key 'model'",
        "1 recipe checked, 1 invalid, 1 error",
    ]
    # and without --profile, every profile is checked too
    assert ralph("validate", "broken.yaml").out.splitlines()[0] == (
        "broken.yaml:14:7: agents.local: with profile 'remote': missing required key 'model'"
    )


@pytest.mark.usefixtures("recipes")
def test_an_unknown_profile_is_reported_at_the_profiles(ralph: Ralph) -> None:
    result = ralph("validate", "valid.yaml", "--profile", "prod")
    assert result.code == 1
    assert result.out.splitlines()[0] == (
        "valid.yaml:11:1: profiles: no profile 'prod' in this recipe (profiles: remote, calm)"
    )


@pytest.mark.usefixtures("recipes")
def test_a_profile_is_taken_from_the_environment(
    ralph: Ralph, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RALPH_PROFILE", "prod")
    assert "no profile 'prod'" in ralph("validate", "valid.yaml").out


def test_a_profile_template_error_is_located_in_the_profile(
    ralph: Ralph, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    recipe = "tests/recipe/corpus/invalid/profile_invalid_value.yaml"
    assert "vars.nope" not in ralph("validate", recipe).out  # the profile's prompt is not in force

    result = ralph("validate", recipe, "--profile", "prod")

    assert result.code == 1
    assert result.out.splitlines()[2] == (
        f"{recipe}:12:27: tasks[0].prompt: undefined template variable 'vars.nope' "
        "(available here: none)"
    )
    assert result.out.splitlines()[-1] == "1 recipe checked, 1 invalid, 3 errors"


@pytest.mark.usefixtures("recipes")
def test_set_overrides_are_checked_like_the_recipe(ralph: Ralph) -> None:
    assert ralph("validate", "valid.yaml", "--set", "tone=formal").code == 0

    result = ralph(
        "validate",
        "valid.yaml",
        "-s",
        "agents.local.concurrency=0",
        "--set",
        "limits.max_runtime=1 hour",
    )

    assert result.code == 1
    # a key the recipe does not have is reported at the top of the file
    assert result.out.splitlines() == [
        "valid.yaml:1:1: limits.max_runtime: '1 hour' is not a duration (expected e.g. 30s, 5m)",
        "valid.yaml:6:3: agents.local.concurrency: must be at least 1, got 0",
        "1 recipe checked, 1 invalid, 2 errors",
    ]


@pytest.mark.usefixtures("recipes")
def test_a_secret_passed_with_set_is_reported_but_not_echoed(ralph: Ralph) -> None:
    secret = "sk-proj-FromTheCommandLine0123456789"
    for fmt in ("text", "json", "github"):
        result = ralph("validate", "valid.yaml", "--set", f"tone={secret}", "--format", fmt)
        assert result.code == 1
        assert "literal API key" in result.out
        assert secret not in result.out + result.err


def test_every_problem_in_a_folder_names_its_own_file(
    ralph: Ralph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "x" / "one.yaml", INVALID)
    write(tmp_path / "x" / "two.yaml", INVALID.replace("nobody", "local"))
    result = ralph("validate", "--format", "json", "x")
    assert [(p["file"], p["line"]) for p in json.loads(result.out)] == [
        ("x/one.yaml", 6),
        ("x/one.yaml", 9),
        ("x/two.yaml", 6),
    ]


def test_the_shipped_examples_are_valid(ralph: Ralph, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    result = ralph("validate", "examples")
    assert result.code == 0, result.out
    checked = re.fullmatch(r"([0-9]+) recipes? checked, 0 invalid, 0 errors\n", result.out)
    assert checked and int(checked[1]) >= 1


def test_the_console_script_validates_in_a_real_process() -> None:
    recipe = "tests/recipe/corpus/invalid/schema_bad_duration.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "ralph", "validate", recipe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert (
        f"{recipe}:14:14: agents.writer.timeout: '60 seconds' is not a duration "
        "(expected e.g. 30s, 5m)"
    ) in done.stdout.splitlines()


def test_pre_commit_hook_entry_skips_yaml_that_is_not_a_recipe(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    from ruamel.yaml import YAML

    hooks = YAML(typ="safe").load((ROOT / ".pre-commit-hooks.yaml").read_text())
    entry = next(h for h in hooks if h["id"] == "ralph-validate")["entry"].split()
    assert entry[:2] == ["ralph", "validate"]
    (tmp_path / "ci.yaml").write_text("on: push\njobs: {}\n")
    changed = [str(tmp_path / "ci.yaml"), str(ROOT / "examples" / "quickstart" / "recipe.yaml")]
    result = ralph(*entry[1:], *changed)
    assert result.code == 0, result.out
    assert result.out.strip().endswith("1 recipe checked, 0 invalid, 0 errors")
    (tmp_path / "bad.yaml").write_text("version: 1\nname: x\nagents: {}\ntasks: []\n")
    assert ralph(*entry[1:], *changed, str(tmp_path / "bad.yaml")).code == 1


def _run(*args: str, stdin: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "ralph", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def test_a_recipe_piped_to_dev_stdin_is_checked(tmp_path: Path) -> None:
    done = _run("validate", "/dev/stdin", stdin=VALID.encode())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.decode().strip() == "1 recipe checked, 0 invalid, 0 errors"


def test_a_big_recipe_piped_to_dev_stdin_is_refused_at_the_cap() -> None:
    big = VALID.encode() + b"# " + b"x" * 4_000_000 + b"\n"
    done = _run("validate", "/dev/stdin", stdin=big, timeout=10)
    assert done.returncode == 1, done.stderr
    assert (
        "/dev/stdin:1:1: recipe is over 1 MB; recipes are limited to 1 MB" in done.stdout.decode()
    )


def test_a_fifo_nobody_writes_to_does_not_hang_validate(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "r.yaml"
    os.mkfifo(fifo)
    done = _run("validate", str(fifo), timeout=20)
    assert done.returncode == 1, done.stderr
    assert "recipe is empty" in done.stdout.decode()
    done = _run("validate", "--only-recipes", str(fifo), timeout=20)
    assert done.returncode == 0, done.stderr


def test_a_device_as_prompt_file_is_not_read(ralph: Ralph, tmp_path: Path) -> None:
    recipe = write(
        tmp_path / "r.yaml",
        VALID.replace('prompt: "Be {{ vars.tone }}."', "prompt_file: /dev/zero"),
    )
    result = ralph("validate", str(recipe))
    assert result.code == 1
    assert "prompt file '/dev/zero' is not a regular file" in result.out


def test_an_oversized_prompt_file_is_refused(ralph: Ralph, tmp_path: Path) -> None:
    from ralph.recipe.semantic import MAX_PROMPT_FILE_BYTES

    (tmp_path / "p.md").write_bytes(b"x" * (MAX_PROMPT_FILE_BYTES + 1))
    recipe = write(
        tmp_path / "r.yaml", VALID.replace('prompt: "Be {{ vars.tone }}."', "prompt_file: p.md")
    )
    result = ralph("validate", str(recipe))
    assert result.code == 1
    assert "prompt file 'p.md' is over 10 MB" in result.out


JSON_STYLE = (
    '{"version": 1, "name": "j", "agents": {"a": {"provider": "echo"}}, '
    '"tasks": [{"name": "t", "agent": "a", "prompt": "{{ vars.nope }}"}]}\n'
)


@pytest.mark.parametrize(
    "text",
    [
        JSON_STYLE,
        '{\n  "version": 1,\n  "name": "j",\n  "tasks": []\n}\n',
        "\"version\": 1\nname: q\n'tasks': []\n",
        "# comment\n{version: 1, name: f, tasks: [}\n",  # broken, but still a recipe
    ],
    ids=["flow", "json", "quoted", "broken-flow"],
)
def test_quoted_and_flow_style_recipes_are_found_in_folders(
    ralph: Ralph, tmp_path: Path, text: str
) -> None:
    write(tmp_path / "recipes" / "r.yaml", text)
    result = ralph("validate", str(tmp_path / "recipes"))
    assert result.code == 1, result.out
    assert "1 recipe checked, 1 invalid" in result.out.splitlines()[-1]
    assert ralph("validate", "--only-recipes", str(tmp_path / "recipes" / "r.yaml")).code == 1


@pytest.mark.parametrize(
    "text",
    [
        '{"services": {"version": 1, "tasks": []}}\n',
        "jobs:\n  version: 1\n  tasks: []\n",
        "- version: 1\n  tasks: []\n",
    ],
)
def test_nested_version_and_tasks_keys_are_not_a_recipe(
    ralph: Ralph, tmp_path: Path, text: str
) -> None:
    write(tmp_path / "recipes" / "other.yaml", text)
    write(tmp_path / "recipes" / "real.yaml", VALID)
    result = ralph("validate", str(tmp_path / "recipes"))
    assert result.out.strip() == "1 recipe checked, 0 invalid, 0 errors"


def test_a_folder_without_recipes_is_a_usage_error(ralph: Ralph, tmp_path: Path) -> None:
    # a CI job pointed at the wrong folder must not pass as "everything valid"
    write(tmp_path / "config" / "ci.yaml", "jobs: {}\n")
    result = ralph("validate", str(tmp_path / "config"))
    assert result.code == 2
    assert result.err == (
        f"error: {tmp_path / 'config'}: no recipes in this folder (a recipe is a YAML file "
        "with top-level version and tasks)\n"
    )
