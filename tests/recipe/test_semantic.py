"""Checks beyond the schema: references, files, templates, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from ralph.recipe.validate import check_file
from ralph.secrets import is_secret_field, looks_like_secret, redact

HEAD = """\
version: 1
name: t
vars: {tone: terse}
agents:
  writer: {provider: echo}
  coder: {provider: command, command: [claude, -p]}
tasks:
"""


def problems(
    tmp_path: Path, tasks: str, files: dict[str, str | bytes] | None = None
) -> list[tuple[str, int, str]]:
    for name, content in (files or {}).items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(HEAD + tasks, "utf-8")
    report = check_file(recipe)
    return [(p.file, p.line, p.message) for p in report.problems]


def messages(tmp_path: Path, tasks: str, files: dict[str, str | bytes] | None = None) -> list[str]:
    return [message for _, _, message in problems(tmp_path, tasks, files)]


def test_a_task_sees_outputs_of_earlier_tasks_items_and_loop_values(tmp_path: Path) -> None:
    tasks = """\
  - name: first
    agent: writer
    for_each: [{id: 1}]
    prompt: "{{ item.id }} {{ vars.tone }} {{ task }}"
    output: "out/{{ item.id }}.md"
  - name: second
    agent: coder
    loop: {until: DONE}
    prompt: "{{ outputs.first }} {{ iteration }} {{ previous }}"
"""
    assert messages(tmp_path, tasks) == []


@pytest.mark.parametrize(
    "output", ["out/{{ item.id }}.md", "reports/{{ item.id }}..md", "..hidden/{{ item.id }}.md"]
)
def test_an_output_inside_the_output_dir_is_fine(tmp_path: Path, output: str) -> None:
    tasks = (
        f"  - {{name: a, agent: writer, for_each: [{{id: 1}}], prompt: hi, output: '{output}'}}\n"
    )
    assert messages(tmp_path, tasks) == []


def test_an_output_the_same_for_every_item_is_refused(tmp_path: Path) -> None:
    each = "  - {name: a, agent: writer, for_each: [{id: 1}, {id: 2}], prompt: hi, output: %s}\n"
    assert messages(tmp_path, each % "'same-{{ task }}.md'") == [
        "output path 'same-{{ task }}.md' is the same for every item (it reads no `item`): "
        "each would replace the last one's file; e.g. 'answers/{{ item.id }}.md'"
    ]
    one = "  - {name: a, agent: writer, prompt: hi, output: 'report.md'}\n"
    assert messages(tmp_path, one) == []  # one item: one file


@pytest.mark.parametrize(
    "output", ["../x.md", "a/../../x.md", "/etc/x", "~/x.md", "C:/x.md", "\\\\server\\x", "x/.."]
)
def test_an_output_that_could_escape_is_refused(tmp_path: Path, output: str) -> None:
    tasks = f"  - {{name: a, agent: writer, prompt: hi, output: '{output}'}}\n"
    assert messages(tmp_path, tasks) == [
        f"output path '{output}' could leave the output directory (no '..' or absolute paths)"
    ]


def test_a_fallback_cycle_is_reported_once(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "version: 1\nname: t\nagents:\n"
        "  c: {provider: echo, fallback: a}\n"
        "  a: {provider: echo, fallback: b}\n"
        "  b: {provider: echo, fallback: c}\n"
        "  d: {provider: echo, fallback: d}\n"
        "tasks: [{name: t, agent: a, prompt: hi}]\n",
        "utf-8",
    )
    found = [(p.line, p.message) for p in check_file(recipe).problems]
    assert found == [
        (5, "fallback cycle: a → b → c → a"),
        (7, "an agent cannot fall back to itself"),
    ]


def test_problems_in_a_prompt_file_are_reported_in_that_file(tmp_path: Path) -> None:
    tasks = "  - {name: a, agent: writer, prompt_file: prompts/p.j2}\n"
    found = problems(tmp_path, tasks, {"prompts/p.j2": "ok\n\n{{ vars.tnoe }}\n"})
    assert found == [
        (
            str(tmp_path / "prompts" / "p.j2"),
            3,
            "undefined template variable 'vars.tnoe' (available here: tone; did you mean 'tone'?)",
        )
    ]


def test_a_prompt_file_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    tasks = "  - {name: a, agent: writer, prompt_file: p.j2}\n"
    found = problems(tmp_path, tasks, {"p.j2": b"line one\ncaf\xe9\n"})
    assert found == [(str(tmp_path / "p.j2"), 2, "prompt file is not valid UTF-8")]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("{file: items.csv}", []),
        ("{file: items.TXT, format: jsonl}", []),
        (
            "{file: items.TXT}",
            [
                "cannot tell the format of 'items.TXT' from its extension; "
                "add format: jsonl, csv, yaml or json"
            ],
        ),
        ("{file: nope.jsonl}", ["items file 'nope.jsonl' not found (relative to the recipe)"]),
        ("{file: sub.jsonl}", ["items file 'sub.jsonl' is a folder, not a file"]),
        ("{file: /dev/null, format: jsonl}", ["items file '/dev/null' is not a regular file"]),
    ],
)
def test_an_items_file_must_exist_and_have_a_known_format(
    tmp_path: Path, spec: str, expected: list[str]
) -> None:
    tasks = f"  - {{name: a, agent: writer, for_each: {spec}, prompt: '{{{{ item }}}}'}}\n"
    (tmp_path / "sub.jsonl").mkdir()
    assert messages(tmp_path, tasks, {"items.csv": "id\n1\n", "items.TXT": "{}\n"}) == expected


def test_a_secret_anywhere_is_found_even_deep_in_a_list(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    secret = "sk-ant-api03-DeepInsideAList0123"
    recipe.write_text(
        "version: 1\nname: t\nvars:\n  nested: [[{x: ok}, {y: " + secret + "}]]\n"
        "agents: {w: {provider: echo}}\ntasks: [{name: t, agent: w, prompt: hi}]\n",
        "utf-8",
    )
    (found,) = check_file(recipe).problems
    assert (found.line, found.path) == (4, "vars.nested[0][1].y")
    assert secret not in found.message


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("api_key", True),
        ("API_KEY", True),
        ("api-key", True),
        ("apiKey", True),
        ("Authorization", True),
        ("X-Api-Key", True),
        ("openai_api_key", True),
        ("openaiApiKey", True),
        ("x-goog-api-key", True),
        ("Proxy-Authorization", True),
        ("access_token", True),
        ("refresh_token", True),
        ("auth_token", True),
        ("X-Auth-Token", True),
        ("github_token", True),
        ("token", True),
        ("password", True),
        ("db_password", True),
        ("passwd", True),
        ("secret", True),
        ("client_secret", True),
        ("aws_secret_access_key", True),
        ("private_key", True),
        ("api_key_env", False),
        ("api_key_file", False),
        ("api_key_command", False),
        ("max_tokens", False),
        ("max_completion_tokens", False),
        ("tokens_per_minute", False),
        ("chars_per_token", False),
        ("eos_token", False),
        ("tokenizer", False),
        ("secretName", False),
        ("password_hint", False),
        ("key", False),
    ],
)
def test_secret_field_names_are_matched_regardless_of_case(name: str, secret: bool) -> None:
    assert is_secret_field(name) is secret


@pytest.mark.parametrize(
    "text",
    [
        "sk-proj-AbCdEfGhIjKlMnOpQrSt",
        "sk-ant-api03-abcdefgh",
        "key=sk-abcdefghijklmnop1234 here",
        "AKIAABCDEFGHIJKLMNOP",
        "ghp_abcdefghijklmnopqrstuvwxyz",
        "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9P",
    ],
)
def test_key_shaped_values_are_recognised_and_redacted(text: str) -> None:
    assert looks_like_secret(text)
    assert "[REDACTED:" in redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "risk-assessment-for-the-whole-team",
        "sk-short",
        "ask-me-anything",
        "OPENAI_API_KEY",
        "eyJ is how base64 JSON starts",
    ],
)
def test_ordinary_text_is_not_mistaken_for_a_key(text: str) -> None:
    assert not looks_like_secret(text)
    assert redact(text) == text


def test_a_credential_named_field_is_refused_whatever_its_value(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "version: 1\nname: t\nagents:\n  w:\n    provider: openai\n    model: m\n"
        "    api_key_env: OPENAI_API_KEY\n    params:\n"
        "      max_tokens: 400\n"
        "      openai_api_key: hunter2hunter2\n"
        "      password: hunter2\n"
        "      headers: {Proxy-Authorization: Basic dXNlcjpwYXNz, x-goog-api-key: abc}\n"
        "tasks: [{name: t, agent: w, prompt: hi}]\n",
        "utf-8",
    )
    found = [(p.line, p.path) for p in check_file(recipe).problems]
    assert found == [
        (10, "agents.w.params.openai_api_key"),
        (11, "agents.w.params.password"),
        (12, "agents.w.params.headers.Proxy-Authorization"),
        (12, "agents.w.params.headers.x-goog-api-key"),
    ]


@pytest.mark.parametrize(
    ("section", "line"),
    [
        ("agents:\n  sk-test-SECRETVALUE123: {provider: echo}\n  w: {provider: echo}\n", 4),
        (
            "vars: {sk-proj-REALLOOKINGKEY1234567890abcdef: 1, AKIAIOSFODNN7EXAMPLE: 2}\n"
            "agents: {w: {provider: echo}}\n",
            3,
        ),
    ],
    ids=["agent-name", "var-names"],
)
def test_a_secret_shaped_mapping_key_is_refused_and_not_echoed(
    tmp_path: Path, section: str, line: int
) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"version: 1\nname: t\n{section}tasks: [{{name: t, agent: w, prompt: hi}}]\n", "utf-8"
    )
    found = check_file(recipe).problems
    assert found
    assert {p.line for p in found} == {line}
    assert all("looks like a literal API key" in p.message for p in found)
    shown = " ".join(f"{p.file} {p.path} {p.message}" for p in found)
    assert not looks_like_secret(shown)


def test_a_semantic_problem_under_a_secret_shaped_key_has_a_redacted_path(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "version: 1\nname: t\n"
        "agents: {sk-test-SECRETVALUE123: {provider: echo, fallback: nobody},"
        " w: {provider: echo}}\n"
        "tasks: [{name: t, agent: w, prompt: hi}]\n",
        "utf-8",
    )
    paths = [p.path for p in check_file(recipe).problems]
    assert paths == ["agents.[REDACTED:openai]", "agents.[REDACTED:openai].fallback"]


def test_a_schema_problem_under_a_secret_shaped_key_has_a_redacted_path(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "version: 1\nname: t\n"
        "agents: {sk-test-SECRETVALUE123: {provider: echo, timeout: bogus}, w: {provider: echo}}\n"
        "tasks: [{name: t, agent: w, prompt: hi}]\n",
        "utf-8",
    )
    paths = [p.path for p in check_file(recipe).problems]
    assert paths == ["agents.[REDACTED:openai]", "agents.[REDACTED:openai].timeout"]


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-REALLOOKINGKEY1234567890abcdef",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
    ],
    ids=["one-line", "pem"],
)
def test_a_secret_in_a_prompt_file_is_reported_at_the_recipe_line(
    tmp_path: Path, secret: str
) -> None:
    tasks = "  - name: a\n    agent: writer\n    prompt_file: prompts/p.j2\n"
    found = problems(tmp_path, tasks, {"prompts/p.j2": f"hello\nuse {secret} please\n"})
    assert found == [
        (
            str(tmp_path / "recipe.yaml"),
            10,
            "prompt file 'prompts/p.j2' line 2: looks like a literal API key; recipes must not "
            "hold secrets: put the key in an environment variable and name it in api_key_env "
            "(or use api_key_file / api_key_command)",
        )
    ]


def test_a_blank_shell_command_is_refused(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    blank = HEAD.replace("command: [claude, -p]", "shell: true, command: '   '")
    recipe.write_text(blank + "  - {name: a, agent: coder, prompt: hi}\n", "utf-8")
    messages = [p.message for p in check_file(recipe).problems]
    assert messages == ["must not be blank: it would run nothing"]
