"""Plans: `ralph apply --dry-run` and `ralph plan` send nothing and write nothing; a saved plan
runs exactly, or not at all when the recipe changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from syrupy.assertion import SnapshotAssertion

from ralph.testing import FakeLLMServer
from tests.conftest import Result, apply_args, write_recipe

CHAT = "/v1/chat/completions"
ITEMS = (
    "\n".join(json.dumps({"id": f"t{n}", "body": f"Ticket number {n}"}) for n in range(4)) + "\n"
)


def plan_recipe(tmp_path: Path, base_url: str, limits: str = "max_cost_usd: 1") -> Path:
    return write_recipe(
        tmp_path,
        f"""
        version: 1
        name: plan-test
        vars: {{tone: terse}}
        agents:
          writer:
            provider: openai
            base_url: {base_url}
            model: gpt-test
            api_key_env: OPENAI_API_KEY
            params: {{max_tokens: 100}}
            pricing: {{input_per_mtok: 1.0, output_per_mtok: 4.0}}
        limits: {{{limits}}}
        tasks:
          - name: summarize
            agent: writer
            for_each: {{file: items.jsonl}}
            system: Be {{{{ vars.tone }}}}.
            prompt: |
              Summarize {{{{ item.id }}}}:
              {{{{ item.body }}}}
            output: "summaries/{{{{ item.id }}}}.md"
        """,
        **{"items.jsonl": ITEMS},
    )


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_dry_run_text_plan(
    ralph: Callable[..., Result],
    tmp_path: Path,
    snapshot: SnapshotAssertion,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = plan_recipe(tmp_path, "http://127.0.0.1:9/v1")
    result = ralph("apply", "recipe.yaml", "--dry-run", "--show", "2")
    assert result.code == 0, result.err
    assert result.out.replace(str(recipe), "recipe.yaml") == snapshot


def test_dry_run_sends_nothing_and_writes_nothing(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    recipe = plan_recipe(tmp_path, server.base_url)
    out = tmp_path / "out"
    assert ralph(*apply_args(recipe, out)).code == 0
    (tmp_path / "items.jsonl").write_text(ITEMS.replace("number 3", "number three"))
    server.reset()
    before = tree(tmp_path)
    result = ralph("apply", str(recipe), "--out", str(out), "--dry-run", "--format", "json")
    assert result.code == 0, result.err
    assert server.counts == {}, "a dry run opened a connection"
    assert tree(tmp_path) == before, "a dry run wrote a file"
    task = json.loads(result.out)["tasks"][0]
    assert (task["items"], task["cached"], task["requests"]) == (4, 3, 1)


def test_rendering_errors_are_reported_before_anything_is_sent(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = plan_recipe(tmp_path, "http://127.0.0.1:9/v1")
    (tmp_path / "items.jsonl").write_text(ITEMS + json.dumps({"id": "t9"}) + "\n")
    result = ralph("apply", str(recipe), "--dry-run")
    assert result.code == 1
    assert "items of summarize that cannot be sent:" in result.out
    # where the failing template line is written in the recipe, then which line of the template
    failing = next(
        n for n, line in enumerate(recipe.read_text().splitlines(), 1) if ".body" in line
    )
    where = f"{recipe}:{failing}:7: task 'summarize' prompt line 2"
    assert f"[4] item t9: {where}: no key 'body' (the keys are: id)" in result.out


def test_limit_that_would_stop_the_run_exits_4(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    # 4 requests, each up to 100 output tokens at $4/Mtok: more than $0.001 in the worst case
    recipe = plan_recipe(tmp_path, "http://127.0.0.1:9/v1", limits="max_cost_usd: 0.001")
    result = ralph("apply", str(recipe), "--dry-run")
    assert result.code == 4
    assert "max_cost_usd 0.001: needs up to 0.0017" in result.out
    assert "would stop the run" in result.out


def test_a_command_agents_worst_case_is_its_max_output(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    # as the run's budget reserves it: 100 KB of output counts as up to 25,000 tokens a request
    recipe = write_recipe(
        tmp_path,
        """
        version: 1
        name: command-plan
        agents:
          local: {provider: command, command: [cat], max_output: 100KB, params: {max_tokens: 5}}
        limits: {max_tokens: 60000}
        tasks:
          - name: t
            agent: local
            for_each: [a, b, c]
            prompt: "{{ item }}"
        """,
    )
    result = ralph("apply", str(recipe), "--dry-run", "--format", "json")
    assert result.code == 4, result.out
    task = json.loads(result.out)["tasks"][0]
    assert task["max_output_tokens"] == 3 * 25_000


def test_show_all_and_bad_show(ralph: Callable[..., Result], tmp_path: Path) -> None:
    recipe = plan_recipe(tmp_path, "http://127.0.0.1:9/v1")
    result = ralph("plan", str(recipe), "--show", "all")
    assert result.code == 0
    assert all(f"item t{n} -> summaries/t{n}.md" in result.out for n in range(4))
    assert ralph("plan", str(recipe), "--show", "lots").code == 2
    assert ralph("plan", str(recipe), "--show", "²").code == 2  # a digit to str.isdigit only
    assert ralph("plan", str(recipe), "--show", "9" * 5000).code == 0  # more than all: all


def test_saved_plan_runs_exactly(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    recipe = plan_recipe(tmp_path, server.base_url)
    saved = tmp_path / "plan.json"
    result = ralph("plan", str(recipe), "-o", str(saved), "--detailed-exitcode")
    assert result.code == 2, result.err
    assert server.counts == {}
    applied = ralph(*apply_args(saved, tmp_path / "out", "--skip-health"))
    assert applied.code == 0, applied.out + applied.err
    assert server.counts[CHAT] == 4
    assert ralph("plan", str(recipe), "--detailed-exitcode").code == 0  # all cached now


def test_stale_plan_is_refused(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    recipe = plan_recipe(tmp_path, server.base_url)
    saved = tmp_path / "plan.json"
    assert ralph("plan", str(recipe), "-o", str(saved)).code == 0
    (tmp_path / "items.jsonl").write_text(ITEMS + json.dumps({"id": "t4", "body": "new"}) + "\n")
    result = ralph(*apply_args(saved, tmp_path / "out"))
    assert result.code == 1
    assert "the plan is stale" in result.err and "items.jsonl changed" in result.err
    assert server.counts == {}
    assert ralph("apply", str(saved), "--profile", "x").code == 2


def test_a_file_that_is_not_a_plan(ralph: Callable[..., Result], tmp_path: Path) -> None:
    bogus = tmp_path / "run.json"
    bogus.write_text('{"status": "done"}')
    result = ralph("apply", str(bogus))
    assert result.code == 1
    assert "not a plan saved by `ralph plan -o`" in result.err


def test_plan_against_the_last_run(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path, snapshot: SnapshotAssertion
) -> None:
    recipe = plan_recipe(tmp_path, server.base_url)
    run_json = tmp_path / "run.json"
    result = ralph(
        *apply_args(recipe, tmp_path / "out", "--skip-health", "--summary-file", str(run_json))
    )
    assert result.code == 0, result.out
    assert set(json.loads(run_json.read_text())["tasks"]["summarize"]["prompts"]) == {
        "t0",
        "t1",
        "t2",
        "t3",
    }
    unchanged = ralph("plan", str(recipe), "--against", str(run_json))
    assert "= task summarize: no prompt changed" in unchanged.out
    # a pull request edits one ticket, adds one, and adds a task
    items = ITEMS.replace("number 1", "number one") + json.dumps({"id": "t4", "body": "new"}) + "\n"
    (tmp_path / "items.jsonl").write_text(items)
    text = (
        recipe.read_text()
        + """
  - name: translate
    agent: writer
    prompt: Translate the summaries.
"""
    )
    recipe.write_text(text)
    result = ralph("plan", str(recipe), "--against", str(run_json))
    assert result.code == 0, result.err
    changes = result.out[result.out.index("changes against") :]
    assert changes.replace(str(run_json), "run.json") == snapshot
    data = json.loads(ralph("plan", str(recipe), "--against", str(run_json), "-f", "json").out)
    assert data["changes"]["tasks"]["summarize"] == {
        "changed": 1,
        "added": 1,
        "removed": 0,
        "known": True,
        "examples": ["t1", "t4"],
    }
    assert data["changes"]["tasks_added"] == ["translate"]


def test_dry_run_with_no_cache_counts_every_item(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    recipe = plan_recipe(tmp_path, server.base_url)
    assert ralph(*apply_args(recipe, tmp_path / "out")).code == 0
    cached = json.loads(ralph("apply", str(recipe), "--dry-run", "-f", "json").out)
    fresh = json.loads(ralph("apply", str(recipe), "--dry-run", "-f", "json", "--no-cache").out)
    assert (cached["tasks"][0]["requests"], fresh["tasks"][0]["requests"]) == (0, 4)


def test_every_prompt_to_a_file(ralph: Callable[..., Result], tmp_path: Path) -> None:
    recipe = plan_recipe(tmp_path, "http://127.0.0.1:9/v1")
    prompts = tmp_path / "prompts.md"
    result = ralph("plan", str(recipe), "--show", "1", "--prompts-file", str(prompts))
    assert result.code == 0, result.err
    assert "[0] item t0" in result.out and "[1] item t1" not in result.out
    text = prompts.read_text()
    assert text.startswith("# Prompts of plan-test\n")
    for n in range(4):
        assert f"## summarize [{n}] item t{n} → summaries/t{n}.md" in text
        assert f"Ticket number {n}" in text


@pytest.mark.parametrize(
    ("tokenizer", "expected"),
    [("chars", "ceil(n / 4)"), ("bytes", "n"), ("{chars_per_token: 2}", "ceil(n / 2)")],
)
def test_the_agents_tokenizer_sets_the_estimate(
    ralph: Callable[..., Result], tmp_path: Path, tokenizer: str, expected: str
) -> None:
    recipe = plan_recipe(tmp_path, "http://127.0.0.1:9/v1")
    recipe.write_text(
        recipe.read_text().replace(
            "api_key_env: OPENAI_API_KEY",
            f"api_key_env: OPENAI_API_KEY\n    tokenizer: {tokenizer}",
        )
    )
    plan = json.loads(ralph("plan", str(recipe), "-f", "json", "--show", "all").out)
    task = plan["tasks"][0]
    sizes = [len(p["prompt"]) + len(p["system"]) for p in task["prompts"]]
    per_text = {
        "ceil(n / 4)": lambda n: -(-n // 4),
        "n": lambda n: n,
        "ceil(n / 2)": lambda n: -(-n // 2),
    }[expected]
    parts = [(len(p["prompt"]), len(p["system"])) for p in task["prompts"]]
    assert task["input_tokens"] == sum(per_text(a) + per_text(b) for a, b in parts)
    assert len(sizes) == 4


def echo_recipe(tmp_path: Path) -> Path:
    lines = "".join(json.dumps({"id": f"i{n}"}) + "\n" for n in range(12))
    return write_recipe(
        tmp_path,
        """
        version: 1
        name: echo-plan
        agents:
          local: {provider: echo}
        tasks:
          - name: greet
            agent: local
            for_each: {file: items.jsonl}
            prompt: "Hello {{ item.id }}"
        """,
        **{"items.jsonl": lines},
    )


def test_a_saved_plan_of_a_shard_runs_that_shard_only(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = echo_recipe(tmp_path)
    saved = tmp_path / "shard.json"
    result = ralph("plan", str(recipe), "--shard", "1/2", "-o", str(saved))
    assert result.code == 0, result.err
    assert "shard: 1/2 (only the items of this shard)" in result.out
    plan = json.loads(saved.read_text())
    assert plan["shard"] == "1/2"
    planned = plan["tasks"][0]["items"]
    assert 0 < planned < 12
    dry = ralph("apply", str(saved), "--dry-run", "-f", "json")
    assert json.loads(dry.out)["tasks"][0]["items"] == planned
    run_json = tmp_path / "run.json"
    result = ralph(*apply_args(saved, tmp_path / "out", "--summary-file", str(run_json)))
    assert result.code == 0, result.out + result.err
    summary = json.loads(run_json.read_text())
    assert (summary["shard"], summary["tasks"]["greet"]["items"]) == ("1/2", planned)
    refused = ralph("apply", str(saved), "--shard", "2/2")
    assert refused.code == 2
    assert refused.err == (
        f"error: {saved}: a saved plan fixes its shard; give no --shard (plan with it instead)\n"
    )
    (tmp_path / "items.jsonl").write_text('{"id": "new"}\n')
    stale = ralph(*apply_args(saved, tmp_path / "out"))
    assert stale.code == 1 and "the plan is stale" in stale.err


DAMAGED = [
    ("fingerprints", None, "fingerprints: expected a mapping, got null"),
    ("fingerprints", [], "fingerprints: expected a mapping, got a list"),
    ("fingerprints", {"a": 5}, "fingerprints.a: expected a string, got the number 5"),
    ("recipe", None, "recipe: expected a string, got null"),
    ("recipe", 5, "recipe: expected a string, got the number 5"),
    ("recipe", "", 'recipe: expected the path of a recipe file, got the string ""'),
    (
        "recipe",
        "/tmp/a\u0000b",
        'recipe: expected the path of a recipe file, got the string "/tmp/a\\u0000b"',
    ),
    ("overrides", [5], "overrides[0]: expected a string, got the number 5"),
    ("profile", 5, "profile: expected a string or null, got the number 5"),
    ("shard", "3/2", 'shard: expected a shard K/N with K from 1 to N, got the string "3/2"'),
    (
        "shard",
        "1/1" + "0" * 12,
        'shard: expected a shard K/N with K from 1 to N, got the string "1/1000000000000"',
    ),
    ("shard", None, None),  # an unsharded plan: runs every item
    ("plan_version", "2", 'plan_version: expected the number 2, got the string "2"'),
    ("plan_version", True, "plan_version: expected the number 2, got true"),
]


@pytest.mark.parametrize(("field", "value", "problem"), DAMAGED)
def test_a_damaged_plan_names_the_field(
    ralph: Callable[..., Result], tmp_path: Path, field: str, value: object, problem: str | None
) -> None:
    saved = tmp_path / "plan.json"
    assert ralph("plan", str(echo_recipe(tmp_path)), "-o", str(saved)).code == 0
    saved.write_text(json.dumps({**json.loads(saved.read_text()), field: value}))
    result = ralph("apply", str(saved), "--dry-run")
    if problem is None:
        assert result.code == 0, result.err
    else:
        assert (result.code, result.err) == (1, f"error: {saved}: invalid plan: {problem}\n")


def test_a_plan_of_another_version_or_without_a_field(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    saved = tmp_path / "plan.json"
    assert ralph("plan", str(echo_recipe(tmp_path)), "-o", str(saved)).code == 0
    plan = json.loads(saved.read_text())
    saved.write_text(json.dumps({**plan, "plan_version": 1}))
    result = ralph("apply", str(saved))
    assert (result.code, result.err) == (
        1,
        f"error: {saved}: plan version 1 is not supported (this ralph writes version 2): "
        "make the plan again with `ralph plan -o`\n",
    )
    del plan["shard"]
    saved.write_text(json.dumps(plan))
    result = ralph("apply", str(saved))
    assert (result.code, result.err) == (
        1,
        f"error: {saved}: invalid plan: missing required key 'shard'\n",
    )


def test_a_recipe_in_a_json_file_is_told_to_be_yaml(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"version": 1, "name": "j", "agents": {}, "tasks": []}))
    for command in ("plan", "apply"):
        result = ralph(command, str(recipe))
        assert (result.code, result.err) == (
            1,
            f"error: {recipe}: not a plan saved by `ralph plan -o` (a .json path is read as a "
            "saved plan; a recipe is a .yaml or .yml file)\n",
        )


# -- the plan agrees with the run it describes ------------------------------------------------


def agree_recipe(tmp_path: Path, tasks: str, limits: str = "") -> Path:
    return write_recipe(
        tmp_path,
        f"""
        version: 1
        name: agree
        agents:
          local:
            provider: echo
            params: {{max_tokens: 10}}
            pricing: {{input_per_mtok: 1000, output_per_mtok: 1000}}
          failing: {{provider: command, command: [sh, -c, "exit 1"], retries: {{attempts: 1}},
                     fallback: local}}
        limits: {{{limits}}}
        tasks:
{tasks}
        """,
    )


def plan_then_run(ralph: Callable[..., Result], recipe: Path, *extra: str) -> tuple[int, int]:
    """The dry run's exit code, then the run's."""
    out = str(recipe.parent / "out")
    planned = ralph("apply", str(recipe), "--dry-run", "--out", out, *extra).code
    return planned, ralph(*apply_args(recipe, recipe.parent / "out", "--skip-health", *extra)).code


@pytest.mark.parametrize("limit", ["max_tokens: 600", "max_cost_usd: 0.5"])
def test_a_limit_the_run_would_reach_the_dry_run_reaches_too(
    ralph: Callable[..., Result], tmp_path: Path, limit: str
) -> None:
    # 1000 characters are 250 tokens by estimate, but the run holds back a token a byte
    tasks = "          - {name: t, agent: local, for_each: [{id: a}], prompt: \"{{ 'x' * 1000 }}\"}"
    assert plan_then_run(ralph, agree_recipe(tmp_path, tasks, limit)) == (4, 4)


def test_an_answer_a_fallback_gave_is_counted_as_cached(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    tasks = """          - name: t
            agent: failing
            cache: true
            for_each: [{id: a}, {id: b}]
            prompt: "Say {{ item.id }}\""""
    recipe = agree_recipe(tmp_path, tasks)
    assert ralph(*apply_args(recipe, tmp_path / "out", "--skip-health")).code == 0
    planned = ralph("plan", str(recipe), "--detailed-exitcode", "-f", "json")
    assert planned.code == 0, planned.out
    assert json.loads(planned.out)["tasks"][0]["cached"] == 2


def test_an_item_that_cannot_be_rendered_is_not_in_a_later_tasks_outputs(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    tasks = """          - {name: a, agent: local, for_each: [{id: x, t: 1}, {id: y}],
             prompt: "{{ item.t }}"}
          - {name: b, agent: local, prompt: "{{ outputs.a | length }} answers"}"""
    recipe = agree_recipe(tmp_path, tasks)
    assert ralph(*apply_args(recipe, tmp_path / "out", "--skip-health")).code == 3
    planned = json.loads(ralph("plan", str(recipe), "-f", "json").out)
    assert [(t["name"], t["cached"]) for t in planned["tasks"]] == [("a", 1), ("b", 1)]


def test_a_shard_without_a_task_of_one_item_plans_what_it_runs(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    items = ", ".join(f"{{id: i{n}}}" for n in range(6))
    tasks = f"""          - {{name: collect, agent: local, prompt: "Say something"}}
          - {{name: each, agent: local, for_each: [{items}],
             prompt: "{{{{ item.id }}}} [{{{{ outputs.collect }}}}]"}}"""
    recipe = agree_recipe(tmp_path, tasks)
    reason = "task 'collect' has no answer to read: it failed, or it ran in another shard"
    codes = []
    for shard in ("1/2", "2/2"):
        ran = ralph(*apply_args(recipe, tmp_path / "out", "--skip-health", "--shard", shard))
        planned = ralph("plan", str(recipe), "--shard", shard, "--detailed-exitcode")
        codes.append(ran.code)
        if ran.code == 0:  # the shard that owns `collect`: its answer is there, and cached
            assert planned.code == 0, planned.out
        else:  # the other sends no "None": its items fail, in the plan as in the run
            assert ran.code == 3 and reason in ran.out
            assert planned.code == 1 and reason in planned.out
    assert sorted(codes) == [0, 3]


def test_items_with_the_same_id_are_counted_each(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    items = '[{id: a, n: 1}, {id: a, n: 2}, {id: 1, n: 3}, {id: "1", n: 4}, {n: 5}]'
    tasks = f'          - {{name: t, agent: local, for_each: {items}, prompt: "{{{{ item.n }}}}"}}'
    planned = json.loads(ralph("plan", str(agree_recipe(tmp_path, tasks)), "-f", "json").out)
    assert (planned["tasks"][0]["items"], planned["tasks"][0]["requests"]) == (5, 5)


def test_max_completion_tokens_caps_the_answer_as_max_tokens_does(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = write_recipe(
        tmp_path,
        """
        version: 1
        name: reasoning
        agents: {local: {provider: echo, params: {max_completion_tokens: 100000}}}
        limits: {max_tokens: 50000}
        tasks: [{name: t, agent: local, prompt: hi}]
        """,
    )
    shown = ralph("apply", str(recipe), "--dry-run")
    assert shown.code == 4, shown.out  # the answer may take 100,000 tokens, not 4096
    assert "max_tokens 50000: needs up to 100002" in shown.out


def test_the_same_prompt_twice_is_planned_as_the_run_pays_for_it_once(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    tasks = """          - {name: a, agent: local, prompt: "Say {{ item.t }}",
             for_each: [{id: x, t: 1}, {id: y, t: 1}, {id: z, t: 2}]}
          - {name: b, agent: local, prompt: "Say 2"}
          - {name: c, agent: local, cache: false, for_each: [1, 1], prompt: "Say {{ item }}"}"""
    recipe = agree_recipe(tmp_path, tasks)
    planned = json.loads(ralph("plan", str(recipe), "-f", "json").out)
    counts = [(t["name"], t["requests"], t["cached"]) for t in planned["tasks"]]
    assert counts == [("a", 2, 1), ("b", 0, 1), ("c", 2, 0)]
    fresh = json.loads(ralph("apply", str(recipe), "--dry-run", "-f", "json", "--no-cache").out)
    assert [t["requests"] for t in fresh["tasks"]] == [3, 1, 2]
    summary = tmp_path / "run.json"
    args = apply_args(recipe, tmp_path / "out", "--skip-health", "--summary-file", str(summary))
    assert ralph(*args).code == 0
    assert json.loads(summary.read_text())["totals"]["requests"] == 4


def test_an_earlier_answer_under_a_fallbacks_key_is_planned_as_the_run_finds_it(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = write_recipe(
        tmp_path,
        """
        version: 1
        name: chain
        agents:
          cheap: {provider: echo, params: {max_tokens: 10}}
          smart: {provider: echo, params: {max_tokens: 20}, fallback: cheap}
        tasks:
          - {name: a, agent: cheap, for_each: [x, y], prompt: "Say {{ item }}"}
          - {name: b, agent: smart, for_each: [x, y], prompt: "Say {{ item }}"}
        """,
    )
    planned = json.loads(ralph("plan", str(recipe), "-f", "json").out)
    assert [(t["requests"], t["cached"]) for t in planned["tasks"]] == [(2, 0), (0, 2)]
    summary = tmp_path / "run.json"
    args = apply_args(recipe, tmp_path / "out", "--skip-health", "--summary-file", str(summary))
    assert ralph(*args).code == 0
    assert json.loads(summary.read_text())["totals"]["requests"] == 2
