"""`--profile NAME` deep-merges over the recipe and `--set key=value` adjusts it, before checks."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from ralph.errors import RalphError, RecipeError, UsageError
from ralph.recipe import model as m
from ralph.recipe.overrides import apply_profile, apply_sets, deep_merge, parse_set
from ralph.recipe.validate import load_recipe

RECIPE = """
version: 1
name: demo
vars: {tone: terse, audience: support, name: Alice}
agents:
  writer:
    provider: openai
    model: gpt-4o-mini
    params: {temperature: 0.2, max_tokens: 400}
    concurrency: 16
  coder: {provider: command, command: [claude, -p]}
limits: {max_requests: 100, max_cost_usd: 5.0}
tasks:
  - name: summarize
    agent: writer
    prompt: "{{ vars.tone }} {{ vars.audience }}"
    cache: {ttl: 1h}
  - {name: build, agent: coder, prompt: go}
profiles:
  prod:
    agents:
      writer: {base_url: "https://prod.example/v1", params: {temperature: 0}}
    vars: {tone: formal}
    limits: {max_requests: 10}
    tasks:
      summarize: {cache: false}
  dev:
    agents: {writer: {concurrency: 2}}
"""


@pytest.fixture
def recipe_path(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.lstrip())
    return path


def data() -> dict[str, Any]:
    """The recipe as plain data, as the loader hands it to the overrides."""
    return {
        "vars": {"tone": "terse", "nested": {"a": 1}, "langs": ["en"]},
        "agents": {"writer": {"provider": "echo"}},
        "tasks": [{"name": "summarize", "agent": "writer", "prompt": "hi"}],
    }


# --- profiles -----------------------------------------------------------------------------------


def test_without_a_profile_the_recipe_is_as_written(recipe_path: Path) -> None:
    recipe = load_recipe(recipe_path)
    writer = recipe.agents["writer"]
    assert (writer.base_url, dict(writer.params), writer.concurrency) == (
        "https://api.openai.com/v1",
        {"temperature": 0.2, "max_tokens": 400},
        16,
    )
    assert recipe.vars["tone"] == "terse"
    assert recipe.tasks[0].cache == m.CachePolicy(enabled=True, ttl_s=3600.0)
    assert recipe.profile is None


def test_a_profile_deep_merges_agents_vars_limits_and_tasks_by_name(recipe_path: Path) -> None:
    recipe = load_recipe(recipe_path, profile="prod")
    writer = recipe.agents["writer"]
    assert writer.base_url == "https://prod.example/v1"
    # merged key by key: what the profile does not mention stays as the recipe has it
    assert dict(writer.params) == {"temperature": 0, "max_tokens": 400}
    assert (writer.model, writer.concurrency) == ("gpt-4o-mini", 16)
    assert dict(recipe.vars) == {"tone": "formal", "audience": "support", "name": "Alice"}
    assert (recipe.limits.max_requests, recipe.limits.max_cost_usd) == (10, 5.0)
    summarize, build = recipe.tasks
    assert summarize.cache == m.CachePolicy(enabled=False)
    assert summarize.prompt == "{{ vars.tone }} {{ vars.audience }}"
    assert build.cache == m.CachePolicy(enabled=False)
    assert recipe.agents["coder"].command == ("claude", "-p")
    assert recipe.profile == "prod"


def test_another_profile_changes_only_what_it_names(recipe_path: Path) -> None:
    recipe = load_recipe(recipe_path, profile="dev")
    assert recipe.agents["writer"].concurrency == 2
    assert recipe.agents["writer"].base_url == "https://api.openai.com/v1"
    assert recipe.limits.max_requests == 100
    assert recipe.profile == "dev"


def test_an_unknown_profile_names_the_known_ones(recipe_path: Path) -> None:
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe_path, profile="staging")
    [problem] = caught.value.problems
    assert problem.message == "no profile 'staging' in this recipe (profiles: prod, dev)"
    assert problem.file == str(recipe_path)


def test_a_recipe_without_profiles_says_so() -> None:
    with pytest.raises(UsageError, match=r"^no profile 'prod' in this recipe \(profiles: none\)$"):
        apply_profile(data(), "prod")


def test_applying_a_profile_leaves_the_input_untouched() -> None:
    original = {**data(), "profiles": {"p": {"vars": {"nested": {"b": 2}}}}}
    before = copy.deepcopy(original)
    merged = apply_profile(original, "p")
    assert merged["vars"] == {"tone": "terse", "nested": {"a": 1, "b": 2}, "langs": ["en"]}
    assert original == before


def test_deep_merge_merges_mappings_and_replaces_everything_else() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    patch: dict[str, Any] = {"a": {"y": [3], "z": {"k": "v"}}, "b": {"now": "a mapping"}}
    merged = deep_merge(base, patch)
    assert merged == {"a": {"x": 1, "y": [3], "z": {"k": "v"}}, "b": {"now": "a mapping"}}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    merged["a"]["z"]["k"] = "changed"
    assert patch["a"]["z"] == {"k": "v"}


# --- --set --------------------------------------------------------------------------------------


def test_sets_reach_vars_agents_tasks_and_limits(recipe_path: Path) -> None:
    overrides = (
        "tone=chatty",
        "vars.audience=engineers",
        "agents.writer.model=gpt-4o",
        "agents.writer.params.temperature=1",
        "tasks.summarize.cache=false",
        "tasks.build.cache=true",
        "limits.max_requests=5",
    )
    recipe = load_recipe(recipe_path, sets=overrides)
    assert recipe.vars["tone"] == "chatty"
    assert recipe.vars["audience"] == "engineers"
    assert recipe.agents["writer"].model == "gpt-4o"
    assert dict(recipe.agents["writer"].params) == {"temperature": 1, "max_tokens": 400}
    assert [t.cache.enabled for t in recipe.tasks] == [False, True]
    assert recipe.limits.max_requests == 5
    assert recipe.overrides == overrides
    assert recipe.profile is None


def test_a_bare_key_is_always_a_var_even_when_it_names_a_recipe_field(recipe_path: Path) -> None:
    reads = "prompt: \"{{ vars.get('description') }} {{ vars['limits'] }}\""
    recipe_path.write_text(recipe_path.read_text().replace("prompt: go", reads))
    recipe = load_recipe(recipe_path, sets=["name=Bob", "description=x", "limits=none"])
    assert recipe.name == "demo"
    assert recipe.description == ""
    assert (recipe.vars["name"], recipe.vars["description"], recipe.vars["limits"]) == (
        "Bob",
        "x",
        "none",
    )
    assert recipe.limits.max_requests == 100


def test_sets_apply_after_the_profile_and_both_are_recorded(recipe_path: Path) -> None:
    recipe = load_recipe(recipe_path, profile="prod", sets=["tone=loud"])
    assert recipe.vars["tone"] == "loud"
    assert recipe.agents["writer"].base_url == "https://prod.example/v1"
    assert (recipe.profile, recipe.overrides) == ("prod", ("tone=loud",))


@pytest.mark.parametrize(
    ("assignment", "value"),
    [
        ("x=1", 1),
        ("x=-2", -2),
        ("x=0.5", 0.5),
        ("x=true", True),
        ("x=false", False),
        ("x=null", None),
        ("x=~", None),
        ("x=", ""),
        ("x=terse", "terse"),
        ("x='1'", "1"),
        ('x="true"', "true"),
        ("x=[a, 2]", ["a", 2]),
        ("x={k: v}", {"k": "v"}),
        ("x=a=b", "a=b"),
        ("x=yes", "yes"),  # YAML 1.2, as in the recipe: only true/false are booleans
        # what YAML would read as a block or a date stays the text that was typed
        ("x=Note: be brief", "Note: be brief"),
        ("x=- a", "- a"),
        ("x=2024-01-01", "2024-01-01"),
        ("x=[2024-01-01]", ["2024-01-01"]),
        ("x=[unclosed", "[unclosed"),
        (" x = 1", 1),
    ],
)
def test_values_are_read_as_yaml(assignment: str, value: Any) -> None:
    assert apply_sets(data(), [assignment])["vars"]["x"] == value


def test_typed_values_reach_the_model(recipe_path: Path) -> None:
    recipe = load_recipe(recipe_path, sets=["tone=1", "audience=true", "name=[en, de]"])
    assert recipe.vars["tone"] == 1
    assert recipe.vars["audience"] is True
    assert recipe.vars["name"] == ("en", "de")


def test_nested_vars_can_be_set_and_added() -> None:
    out = apply_sets(data(), ["nested.b=2", "vars.nested.a=3", "fresh.deep=x"])
    assert out["vars"] == {
        "tone": "terse",
        "nested": {"a": 3, "b": 2},
        "langs": ["en"],
        "fresh": {"deep": "x"},
    }


def test_setting_leaves_the_input_untouched() -> None:
    original = data()
    apply_sets(original, ["tone=x", "tasks.summarize.prompt=bye"])
    assert original == data()


EXPECTS = "--set expects key=value (e.g. tone=terse or agents.writer.model=gpt-4o), got "


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("tone", EXPECTS + "'tone'"),
        ("=x", EXPECTS + "'=x'"),
        (" =x", EXPECTS + "' =x'"),
        ("vars..x=1", EXPECTS + "'vars..x=1'"),
        ("tone.=1", EXPECTS + "'tone.=1'"),
        (
            "tasks.nope.cache=false",
            "--set tasks.nope.cache=false: no task named 'nope' (tasks: summarize)",
        ),
        (
            "agents.writr.model=x",
            "--set agents.writr.model=x: no agent named 'writr' (agents: writer)",
        ),
        (
            "tasks.summarize=x",
            "--set tasks.summarize=x: name a key inside the task, e.g. tasks.summarize.cache=false",
        ),
        (
            "agents.writer=x",
            "--set agents.writer=x: name a key inside the agent, "
            "e.g. agents.writer.model=gpt-4o-mini",
        ),
        ("tone.deep=1", "--set tone.deep=1: 'vars.tone' is not a mapping in this recipe"),
        ("langs.x=1", "--set langs.x=1: 'vars.langs' is not a mapping in this recipe"),
        (
            "vars.tone.deep.er=1",
            "--set vars.tone.deep.er=1: 'vars.tone' is not a mapping in this recipe",
        ),
        (
            "agents.writer.provider.x=1",
            "--set agents.writer.provider.x=1: 'agents.writer.provider' is not a mapping "
            "in this recipe",
        ),
    ],
)
def test_a_malformed_assignment_is_a_usage_error(assignment: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        apply_sets(data(), [assignment])
    assert str(caught.value) == message


def test_an_assignment_can_be_checked_without_a_recipe() -> None:
    assert parse_set("tone=1") == (["vars", "tone"], 1)
    assert parse_set("agents.writer.params.temperature=0.5") == (
        ["agents", "writer", "params", "temperature"],
        0.5,
    )
    with pytest.raises(UsageError, match=r"^--set expects key=value \(e\.g\. tone=terse"):
        parse_set("tone")


@pytest.mark.parametrize("depth", [65, 600])  # past a recipe's depth; past the parser's
def test_a_value_nested_too_deeply_is_a_usage_error(depth: int) -> None:
    with pytest.raises(UsageError, match=r"^--set value is nested more than 64 levels deep$"):
        parse_set("tone=" + "[" * depth + "]" * depth)
    assert parse_set("tone=" + "[" * 64 + "]" * 64)[0] == ["vars", "tone"]


def test_a_malformed_assignment_stops_load_recipe_with_its_message(recipe_path: Path) -> None:
    with pytest.raises(RalphError, match="no agent named 'writr' \\(agents: writer, coder\\)"):
        load_recipe(recipe_path, sets=["agents.writr.model=x"])


def test_a_set_that_breaks_the_recipe_is_reported_like_a_recipe_problem(
    recipe_path: Path,
) -> None:
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe_path, sets=["agents.writer.timeout=forever"])
    [problem] = caught.value.problems
    assert problem.path == "agents.writer.timeout"
    assert problem.message == "'forever' is not a duration (expected e.g. 30s, 5m)"


@pytest.mark.parametrize(
    "prompt",
    [
        "{{ vars.tone }}",
        "{{ vars['tone'] }} {{ vars.get('audience') }}",
    ],
)
def test_a_set_var_that_is_not_declared_nor_read_is_refused_as_a_likely_typo(
    tmp_path: Path, prompt: str
) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "version: 1\nname: typo\nvars: {tone: terse, audience: all}\n"
        "agents: {local: {provider: echo}}\n"
        f'tasks: [{{name: t, agent: local, prompt: "{prompt}"}}]\n'
    )
    with pytest.raises(RecipeError) as raised:
        load_recipe(path, sets=["tone=loud", "tnoe=secret-value"])
    assert str(raised.value) == (
        f"{path}:1:1: --set tnoe=...: the recipe has no var 'tnoe' and no template reads "
        "vars.tnoe, so it would change nothing (vars: tone, audience; did you mean 'tone'?)"
    )


@pytest.mark.parametrize(
    ("prompt", "prompt_file"),
    [
        ("{{ vars.extra }}", None),
        ("{{ vars.get('extra', 'none') }}", None),
        ("{{ vars | tojson }}", None),  # may read any var
        ("{% for k, v in vars.items() %}{{ v }}{% endfor %}", None),
        (None, "Use {{ vars.extra }}."),
    ],
)
def test_a_set_var_a_template_reads_needs_no_declaration(
    tmp_path: Path, prompt: str | None, prompt_file: str | None
) -> None:
    source = f'prompt: "{prompt}"' if prompt else "prompt_file: p.md"
    if prompt_file:
        (tmp_path / "p.md").write_text(prompt_file)
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "version: 1\nname: typo\nagents: {local: {provider: echo}}\n"
        f"tasks: [{{name: t, agent: local, {source}}}]\n"
    )
    assert load_recipe(path, sets=["extra=1"]).vars["extra"] == 1


def test_a_loop_prompt_file_may_come_to_read_a_set_var(tmp_path: Path) -> None:
    """The agent may rewrite its prompt file as the loop goes: what it reads is not known."""
    (tmp_path / "PROMPT.md").write_text("Work on the parser.")
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "version: 1\nname: loop\nagents: {local: {provider: echo}}\n"
        "tasks: [{name: t, agent: local, prompt_file: PROMPT.md, loop: {until: DONE}}]\n"
    )
    assert load_recipe(path, sets=["focus=lexer"]).vars["focus"] == "lexer"
