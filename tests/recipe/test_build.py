"""After validation a recipe is typed, frozen data: seconds, bytes, absolute paths, defaults."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pytest

from ralph.errors import RecipeError
from ralph.recipe import model as m
from ralph.recipe.build import thaw
from ralph.recipe.validate import load_recipe


def write(folder: Path, files: dict[str, str]) -> Path:
    """Write `files` (name → text) under `folder`; return the path of the first, the recipe."""
    for name, text in files.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text).lstrip())
    return folder / next(iter(files))


MINIMAL = """
    version: 1
    name: demo
    agents:
      writer: {provider: openai, model: gpt-4o-mini, api_key_env: OPENAI_API_KEY}
      backup: {provider: anthropic, model: claude-haiku-4-5, api_key_env: ANTHROPIC_API_KEY}
      offline: {provider: echo}
      coder: {provider: command, command: [claude, -p]}
    tasks:
      - {name: summarize, agent: writer, prompt: hi}
      - {name: translate, agent: backup, prompt: hi}
      - {name: echo, agent: offline, prompt: hi}
      - name: build
        agent: coder
        prompt: go
        loop: {until: LOOP_COMPLETE}
    health_checks:
      - agent: writer
      - http: {url: "http://127.0.0.1:8080/healthz"}
      - command: [git, --version]
"""


@pytest.fixture
def minimal(tmp_path: Path) -> m.Recipe:
    return load_recipe(write(tmp_path, {"recipe.yaml": MINIMAL}))


# --- defaults -----------------------------------------------------------------------------------


def test_http_agents_get_their_providers_base_url_and_http_defaults(minimal: m.Recipe) -> None:
    writer, backup = minimal.agents["writer"], minimal.agents["backup"]
    assert writer.base_url == "https://api.openai.com/v1"
    assert backup.base_url == "https://api.anthropic.com/v1"
    for agent in (writer, backup):
        assert agent.concurrency == 8
        assert agent.timeout_s == 60.0
        assert agent.retries == m.Retries(
            attempts=4,
            backoff_s=0.5,
            max_backoff_s=30.0,
            on=frozenset({"429", "5xx", "timeout", "connection", "invalid_response"}),
        )
        assert agent.pricing == m.Pricing(input_per_mtok=0.0, output_per_mtok=0.0)
        assert agent.rate_limit == m.RateLimit(None, None)
        assert agent.params == {}
        assert agent.fallback is None
        assert agent.workdir is None
    assert backup.anthropic_version == "2023-06-01"


def test_echo_agents_have_no_base_url_and_http_defaults(minimal: m.Recipe) -> None:
    offline = minimal.agents["offline"]
    assert (offline.base_url, offline.model, offline.concurrency, offline.timeout_s) == (
        None,
        None,
        8,
        60.0,
    )


def test_command_agents_default_to_one_at_a_time_ten_minutes_in_the_recipe_folder(
    minimal: m.Recipe, tmp_path: Path
) -> None:
    coder = minimal.agents["coder"]
    assert coder.command == ("claude", "-p")
    assert coder.base_url is None
    assert coder.concurrency == 1
    assert coder.timeout_s == 600.0
    assert coder.workdir == tmp_path.resolve()
    assert coder.shell is False
    assert coder.max_output_bytes == 10_000_000


def test_the_cache_is_on_for_http_and_echo_agents_and_off_for_command_agents(
    minimal: m.Recipe,
) -> None:
    cache = {task.name: task.cache for task in minimal.tasks}
    assert cache == {
        "summarize": m.CachePolicy(enabled=True, ttl_s=None),
        "translate": m.CachePolicy(enabled=True, ttl_s=None),
        "echo": m.CachePolicy(enabled=True, ttl_s=None),
        "build": m.CachePolicy(enabled=False, ttl_s=None),
    }


@pytest.mark.parametrize(
    ("setting", "policy"),
    [
        ("true", m.CachePolicy(enabled=True)),
        ("false", m.CachePolicy(enabled=False)),
        ("{}", m.CachePolicy(enabled=True)),
        ("{ttl: 7d}", m.CachePolicy(enabled=True, ttl_s=604800.0)),
    ],
)
@pytest.mark.parametrize("provider", ["echo", "command"])
def test_a_task_that_sets_cache_gets_what_it_asked_for(
    tmp_path: Path, setting: str, policy: m.CachePolicy, provider: str
) -> None:
    agent = "{provider: echo}" if provider == "echo" else "{provider: command, command: [cat]}"
    path = write(
        tmp_path,
        {
            "recipe.yaml": f"""
            version: 1
            name: demo
            agents: {{a: {agent}}}
            tasks: [{{name: t, agent: a, prompt: hi, cache: {setting}}}]
            """
        },
    )
    assert load_recipe(path).tasks[0].cache == policy


def test_limits_loop_and_health_checks_get_their_defaults(minimal: m.Recipe) -> None:
    assert minimal.limits == m.Limits(
        max_requests=None,
        max_tokens=None,
        max_cost_usd=None,
        max_runtime_s=None,
        max_prompt_chars=None,
        max_retry_wait_s=300.0,
    )
    build = minimal.tasks[3]
    assert build.loop == m.Loop(
        until=m.Marker("LOOP_COMPLETE"),
        max_iterations=20,
        max_runtime_s=None,
        max_tokens=None,
        max_cost_usd=None,
        max_consecutive_failures=5,
        stall_window=3,
        stall_similarity=0.9,
        previous_bytes=16_000,
        history=3,
        checkpoint=None,
    )
    assert minimal.health_checks == (
        m.AgentCheck("writer"),
        m.HttpCheck("http://127.0.0.1:8080/healthz", expect_status=200, timeout_s=10.0),
        m.CommandCheck(("git", "--version"), expect_exit=0, timeout_s=30.0),
    )


def test_a_task_without_extras_has_empty_optional_parts(minimal: m.Recipe) -> None:
    summarize = minimal.tasks[0]
    assert (summarize.name, summarize.agent, summarize.prompt) == ("summarize", "writer", "hi")
    assert summarize.items is None
    assert summarize.loop is None
    assert (summarize.system, summarize.output, summarize.prompt_file) == (None, None, None)
    assert (summarize.input_filters, summarize.output_filters) == ((), ())
    assert (minimal.description, minimal.vars, minimal.profile, minimal.overrides) == (
        "",
        {},
        None,
        (),
    )


# --- units --------------------------------------------------------------------------------------


def test_every_duration_becomes_seconds_and_every_size_bytes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "recipe.yaml": """
            version: 1
            name: demo
            agents:
              writer:
                provider: openai
                model: m
                timeout: 500ms
                retries: {attempts: 6, backoff: 30s, max_backoff: 5m, on: [429, timeout]}
              coder:
                provider: command
                command: [claude, -p]
                timeout: 2h
                max_output: 4KB
            limits: {max_runtime: 2h, max_retry_wait: 1.5m}
            tasks:
              - {name: a, agent: writer, prompt: hi, cache: {ttl: 7d}}
              - name: b
                agent: coder
                prompt: go
                loop:
                  until: {any: [DONE, {command: [pytest, -q], timeout: 5m}]}
                  max_runtime: 7d
                  previous_size: 1MiB
            health_checks:
              - http: {url: "http://127.0.0.1:1/healthz", timeout: 500ms}
              - {command: [git, --version], timeout: 0s}
            """
        },
    )
    recipe = load_recipe(path)
    writer, coder = recipe.agents["writer"], recipe.agents["coder"]
    assert writer.timeout_s == 0.5
    assert writer.retries == m.Retries(6, 30.0, 300.0, frozenset({"429", "timeout"}))
    assert coder.timeout_s == 7200.0
    assert coder.max_output_bytes == 4000
    assert (recipe.limits.max_runtime_s, recipe.limits.max_retry_wait_s) == (7200.0, 90.0)
    a, b = recipe.tasks
    assert a.cache.ttl_s == 604800.0
    assert b.loop is not None
    assert b.loop.max_runtime_s == 604800.0
    assert b.loop.previous_bytes == 1_048_576
    assert b.loop.until == m.AnyOf(
        (m.Marker("DONE"), m.CommandCondition(("pytest", "-q"), timeout_s=300.0))
    )
    http, command = recipe.health_checks
    assert isinstance(http, m.HttpCheck)
    assert http.timeout_s == 0.5
    # a zero is what the recipe says, not "unset": it must not fall back to the 30s default
    assert isinstance(command, m.CommandCheck)
    assert command.timeout_s == 0.0


def test_loop_conditions_and_checkpoints_are_typed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "recipe.yaml": """
            version: 1
            name: demo
            agents: {coder: {provider: command, command: [claude, -p]}}
            tasks:
              - name: build
                agent: coder
                prompt: go
                loop:
                  until:
                    all:
                      - {regex: "^DONE$"}
                      - {file: TODO.md, all_checked: true}
                      - {command: [pytest, -q]}
                  checkpoint: {every: 5}
                  stall: {window: 4, similarity: 0.5}
            """
        },
    )
    loop = load_recipe(path).tasks[0].loop
    assert loop is not None
    assert loop.until == m.AllOf(
        (
            m.RegexCondition("^DONE$"),
            m.FileCondition("TODO.md", all_checked=True),
            m.CommandCondition(("pytest", "-q"), timeout_s=600.0),
        )
    )
    assert loop.checkpoint == m.Checkpoint(every=5, on_failure="keep")
    assert (loop.stall_window, loop.stall_similarity) == (4, 0.5)


def test_filters_and_explicit_agent_settings_are_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "recipe.yaml": r"""
            version: 1
            name: demo
            agents:
              writer:
                provider: openai
                model: gpt-4o-mini
                base_url: http://127.0.0.1:8080/v1
                concurrency: 16
                rate_limit: {requests_per_minute: 600, tokens_per_minute: 200000}
                pricing: {input_per_mtok: 0.15, output_per_mtok: 0.6}
                fallback: backup
              backup: {provider: echo}
              sh: {provider: command, command: "claude -p", shell: true}
            tasks:
              - name: t
                agent: writer
                prompt: hi
                filters:
                  input: [strip_control_chars, {max_chars: 20000}]
                  output: [redact_secrets, {regex_replace: {pattern: "\\s+$", with: ""}}]
            """
        },
    )
    recipe = load_recipe(path)
    writer = recipe.agents["writer"]
    assert writer.base_url == "http://127.0.0.1:8080/v1"
    assert writer.concurrency == 16
    assert writer.rate_limit == m.RateLimit(600, 200000)
    assert writer.pricing == m.Pricing(0.15, 0.6)
    assert writer.fallback == "backup"
    assert (recipe.agents["sh"].command, recipe.agents["sh"].shell) == ("claude -p", True)
    task = recipe.tasks[0]
    assert task.input_filters == (m.Filter("strip_control_chars"), m.Filter("max_chars", 20000))
    assert task.output_filters == (
        m.Filter("redact_secrets"),
        m.Filter("regex_replace", {"pattern": r"\s+$", "with": ""}),
    )


# --- paths --------------------------------------------------------------------------------------


def test_paths_resolve_against_the_recipes_folder_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "recipes"
    write(
        folder,
        {
            "recipe.yaml": """
            version: 1
            name: demo
            agents:
              writer: {provider: openai, model: m, api_key_file: secrets/key.txt}
              coder: {provider: command, command: [claude, -p], workdir: ../project}
            tasks:
              - name: summarize
                agent: writer
                for_each: {file: data/tickets.jsonl}
                prompt_file: prompts/summarize.j2
              - {name: build, agent: coder, prompt: go}
            """,
            "data/tickets.jsonl": '{"id": 1}\n',
            "prompts/summarize.j2": "Summarize {{ item.id }}\n",
        },
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recipe = load_recipe(Path("../recipes/recipe.yaml"))
    root = tmp_path.resolve()
    assert recipe.path == root / "recipes" / "recipe.yaml"
    assert recipe.base_dir == root / "recipes"
    assert recipe.agents["writer"].api_key_file == root / "recipes" / "secrets" / "key.txt"
    assert recipe.agents["coder"].workdir == root / "project"
    summarize = recipe.tasks[0]
    assert summarize.prompt_file == root / "recipes" / "prompts" / "summarize.j2"
    assert summarize.prompt is None
    assert summarize.items == m.ItemSource(
        file=root / "recipes" / "data" / "tickets.jsonl", format="jsonl"
    )


@pytest.mark.parametrize(
    ("name", "extra", "expected"),
    [
        ("items.jsonl", "", "jsonl"),
        ("items.csv", "", "csv"),
        ("items.yaml", "", "yaml"),
        ("items.yml", "", "yaml"),
        ("items.json", "", "json"),
        ("ITEMS.JSONL", "", "jsonl"),
        ("items.txt", ", format: jsonl", "jsonl"),
        ("items.json", ", format: yaml", "yaml"),
    ],
)
def test_the_item_format_follows_the_extension_unless_given(
    tmp_path: Path, name: str, extra: str, expected: str
) -> None:
    path = write(
        tmp_path,
        {
            "recipe.yaml": f"""
            version: 1
            name: demo
            agents: {{a: {{provider: echo}}}}
            tasks:
              - {{name: t, agent: a, prompt: hi, for_each: {{file: {name}{extra}}}}}
            """,
            name: "[]\n",
        },
    )
    items = load_recipe(path).tasks[0].items
    assert items is not None
    assert (items.file, items.format, items.inline) == (tmp_path.resolve() / name, expected, None)


def test_inline_items_are_kept_in_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "recipe.yaml": """
            version: 1
            name: demo
            agents: {a: {provider: echo}}
            tasks:
              - {name: t, agent: a, prompt: "{{ item.id }}", for_each: [{id: 2}, {id: 1}, {id: 3}]}
            """
        },
    )
    items = load_recipe(path).tasks[0].items
    assert items is not None
    assert items.inline == ({"id": 2}, {"id": 1}, {"id": 3})
    assert (items.file, items.format) == (None, None)


# --- frozen -------------------------------------------------------------------------------------


FROZEN = """
    version: 1
    name: demo
    vars: {tone: terse, audience: {team: support, langs: [en, de]}}
    agents:
      writer:
        provider: openai
        model: gpt-4o-mini
        params: {temperature: 0.2, response_format: {type: json_object}, stop: ["\\n\\n"]}
    tasks:
      - {name: t, agent: writer, prompt: "{{ item.id }}", for_each: [{id: 1, tags: [a]}]}
"""


@pytest.fixture
def frozen(tmp_path: Path) -> m.Recipe:
    return load_recipe(write(tmp_path, {"recipe.yaml": FROZEN}))


def test_assigning_an_attribute_anywhere_in_the_model_raises(frozen: m.Recipe) -> None:
    writer = frozen.agents["writer"]
    task = frozen.tasks[0]
    assert task.items is not None
    targets: list[tuple[object, str, object]] = [
        (frozen, "name", "other"),
        (writer, "model", "gpt-4o"),
        (writer.retries, "attempts", 1),
        (writer.pricing, "input_per_mtok", 9.0),
        (frozen.limits, "max_requests", 1),
        (task, "prompt", "changed"),
        (task.cache, "enabled", False),
        (task.items, "inline", ()),
    ]
    for obj, attribute, value in targets:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, attribute, value)


def test_nested_mappings_are_read_only_and_lists_are_tuples(frozen: m.Recipe) -> None:
    writer = frozen.agents["writer"]
    task = frozen.tasks[0]
    assert task.items is not None and task.items.inline is not None
    read_only = [
        frozen.agents,
        frozen.vars,
        frozen.vars["audience"],
        writer.params,
        writer.params["response_format"],
        task.items.inline[0],
    ]
    for mapping in read_only:
        with pytest.raises(TypeError):
            mapping["new"] = 1
    assert frozen.vars["audience"]["langs"] == ("en", "de")
    assert writer.params["stop"] == ("\n\n",)
    assert task.items.inline[0]["tags"] == ("a",)
    assert isinstance(frozen.tasks, tuple)


def test_thaw_gives_back_plain_json_ready_data(frozen: m.Recipe) -> None:
    params = frozen.agents["writer"].params
    with pytest.raises(TypeError):
        json.dumps(params)  # a read-only view is not JSON; a request body needs thaw()
    assert json.loads(json.dumps(thaw(params))) == {
        "temperature": 0.2,
        "response_format": {"type": "json_object"},
        "stop": ["\n\n"],
    }
    assert thaw(frozen.vars) == {
        "tone": "terse",
        "audience": {"team": "support", "langs": ["en", "de"]},
    }


# --- invalid recipes ----------------------------------------------------------------------------


def test_an_invalid_recipe_raises_recipe_error_with_every_problem_located(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "recipe.yaml": """
            version: 1
            name: demo
            agents:
              writer:
                provider: openai
                model: gpt-4o-mini
                timeout: 60 seconds
            tasks:
              - name: summarize
                agent: writr
                prompt: hi
            """
        },
    )
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    problems = caught.value.problems
    assert [(p.file, p.line, p.column, p.path, p.message) for p in problems] == [
        (
            str(path),
            7,
            14,
            "agents.writer.timeout",
            "'60 seconds' is not a duration (expected e.g. 30s, 5m)",
        ),
        (
            str(path),
            10,
            12,
            "tasks[0].agent",
            "unknown agent 'writr' (known: writer; did you mean 'writer'?)",
        ),
    ]
    assert str(caught.value) == (
        f"{path}:7:14: '60 seconds' is not a duration (expected e.g. 30s, 5m) (and 1 more)"
    )


def test_a_missing_file_is_a_problem_not_a_model(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "recipe.yaml": """
            version: 1
            name: demo
            agents: {a: {provider: echo}}
            tasks: [{name: t, agent: a, prompt_file: prompts/missing.j2}]
            """
        },
    )
    with pytest.raises(RecipeError, match=r"prompt file 'prompts/missing\.j2' not found"):
        load_recipe(path)


def test_fallback_chains_and_the_agents_a_run_uses(tmp_path: Path) -> None:
    recipe = load_recipe(
        write(
            tmp_path,
            {
                "recipe.yaml": """\
version: 1
name: chains
agents:
  first: {provider: echo, fallback: second}
  second: {provider: echo, fallback: third}
  third: {provider: echo}
  spare: {provider: echo}
  solo: {provider: echo}
tasks:
  - {name: a, agent: solo, prompt: hi}
  - {name: b, agent: first, prompt: hi}
  - {name: c, agent: second, prompt: hi}
"""
            },
        )
    )
    assert recipe.fallback_chain("first") == ["first", "second", "third"]
    assert recipe.fallback_chain("third") == ["third"]
    assert recipe.agents_used() == ["solo", "first", "second", "third"]  # not `spare`
