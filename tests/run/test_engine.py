"""`ralph apply` end to end against the shipped fake server: real HTTP, real files, real cache."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web

from ralph.testing import FakeLLMServer, Fault
from tests.conftest import TEST_KEY, Result, apply_args, start_apply, write_recipe
from tests.run.apply_helpers import CHAT, MESSAGES, apply, lines, recipe_text, sent_to, serving


def test_openai_items_answered_in_item_order(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    recipe = write_recipe(tmp_path, recipe_text(server.base_url))
    result = apply(ralph, recipe, tmp_path)
    assert result.code == 0, result.err
    records = lines(tmp_path / "out" / "answer.jsonl")
    assert [r["index"] for r in records] == [0, 1, 2, 3, 4]
    assert [r["answer"] for r in records] == [f"echo: Say item {n}" for n in range(5)]
    assert records[0]["item"] == {"id": "i0", "text": "item 0"}
    assert server.counts[CHAT] == 5
    sent = sent_to(server, CHAT)[0]
    assert sent.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert sent.body["model"] == "test-model" and sent.body["max_tokens"] == 50


def test_anthropic_headers_and_system(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    text = recipe_text(
        server.base_url, items=1, provider="anthropic", task_extra="system: Be brief."
    )
    result = apply(ralph, write_recipe(tmp_path, text), tmp_path)
    assert result.code == 0, result.err
    sent = sent_to(server, MESSAGES)[0]
    assert sent.headers["x-api-key"] == TEST_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body["system"] == "Be brief."
    assert lines(tmp_path / "out" / "answer.jsonl")[0]["answer"] == "echo: Say item 0"


def test_rerun_is_served_from_cache(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    recipe = write_recipe(tmp_path, recipe_text(server.base_url))
    assert apply(ralph, recipe, tmp_path).code == 0
    first = (tmp_path / "out" / "answer.jsonl").read_text()
    server.reset()
    again = apply(ralph, recipe, tmp_path)
    assert again.code == 0
    assert server.counts.get(CHAT, 0) == 0
    assert "5 cache hits" in again.out
    assert [r["answer"] for r in lines(tmp_path / "out" / "answer.jsonl")] == [
        r["answer"] for r in map(json.loads, first.splitlines())
    ]


def test_no_cache_sends_again(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    recipe = write_recipe(tmp_path, recipe_text(server.base_url, items=2))
    assert apply(ralph, recipe, tmp_path).code == 0
    assert apply(ralph, recipe, tmp_path, "--no-cache").code == 0
    assert server.counts[CHAT] == 4


def test_fallback_takes_item_after_retries(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    server.inject(Fault("status", status=503, times=3, path=CHAT))
    text = recipe_text(server.base_url, items=1, agent_extra="fallback: backup").replace(
        "        limits:",
        f"""          backup:
            provider: anthropic
            base_url: {server.base_url}
            model: claude-test
            api_key_env: ANTHROPIC_API_KEY
        limits:""",
    )
    result = apply(ralph, write_recipe(tmp_path, text), tmp_path)
    assert result.code == 0, result.out
    assert server.counts[CHAT] == 3 and server.counts[MESSAGES] == 1
    assert lines(tmp_path / "out" / "answer.jsonl")[0]["agent"] == "backup"


def test_cost_limit_stops_before_spending(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    # each request reserves its worst case, 60 tokens at $0.001 (10 prompt bytes + max_tokens
    # 50: $0.06), and really costs 7 tokens ($0.007): the fourth would have to reserve past
    # $0.08 ($0.021 spent + $0.06), so it is never sent
    text = recipe_text(
        server.base_url, items=10, agent_extra="concurrency: 1", limits="max_cost_usd: 0.08"
    )
    result = apply(
        ralph, write_recipe(tmp_path, text), tmp_path, "--summary-file", str(tmp_path / "run.json")
    )
    assert result.code == 4
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["stopped_by"] == "max_cost_usd"
    assert summary["totals"]["cost_usd"] <= 0.08
    assert server.counts[CHAT] == 3
    assert len(lines(tmp_path / "out" / "answer.jsonl")) == server.counts[CHAT]


def test_request_limit(ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path) -> None:
    text = recipe_text(
        server.base_url, items=10, agent_extra="concurrency: 2", limits="max_requests: 4"
    )
    result = apply(ralph, write_recipe(tmp_path, text), tmp_path)
    assert result.code == 4
    assert "stopped by limit max_requests" in result.out
    assert server.counts[CHAT] == 4


def test_missing_key_fails_before_any_request(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path, monkeypatch: object
) -> None:
    text = recipe_text(server.base_url).replace("OPENAI_API_KEY", "RALPH_TEST_UNSET_KEY")
    result = apply(ralph, write_recipe(tmp_path, text), tmp_path)
    assert result.code == 1
    assert "RALPH_TEST_UNSET_KEY is not set" in result.err
    assert server.counts == {}


def test_output_paths_are_atomic_files_and_escapes_refused(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    text = recipe_text(server.base_url, items=2, task_extra="output: 'answers/{{ item.id }}.md'")
    assert apply(ralph, write_recipe(tmp_path, text), tmp_path).code == 0
    assert (tmp_path / "out" / "answers" / "i0.md").read_text() == "echo: Say item 0"
    assert not [p for p in (tmp_path / "out").rglob("*.tmp")]
    escape = recipe_text(server.base_url, items=1, task_extra="output: '{{ item.id }}.md'")
    escape = escape.replace("id: i0", "id: ../../x")
    result = apply(ralph, write_recipe(tmp_path, escape), tmp_path)
    assert result.code == 3
    assert "leaves the output directory" in result.out
    assert not (tmp_path / "x.md").exists()
    assert server.counts[CHAT] == 2  # refused before it was sent


def test_key_never_written_anywhere(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    server.inject(Fault("status", status=401, message=f"bad key {TEST_KEY}"))
    recipe = write_recipe(tmp_path, recipe_text(server.base_url, items=3))
    result = apply(ralph, recipe, tmp_path, "--summary-file", str(tmp_path / "run.json"))
    printed = result.out + result.err
    for command in (
        ["plan", str(recipe), "-o", str(tmp_path / "plan.json"), "-f", "json"],
        ["health", str(recipe), "--format", "json"],
        ["apply", str(recipe), "--dry-run", "--show", "all"],
    ):
        shown = ralph(*command)
        printed += shown.out + shown.err
    assert "bad key [REDACTED:openai]" in printed  # the API echoed it; ralph did not
    assert TEST_KEY not in printed
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TEST_KEY.encode() not in path.read_bytes(), path


def test_a_key_of_no_known_shape_echoed_by_the_api_is_masked(
    ralph: Callable[..., Result], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    shapeless = "tok_9f8e7d6c5b4a-selfhosted"
    monkeypatch.setenv("OPENAI_API_KEY", shapeless)
    with FakeLLMServer(api_key=shapeless).in_thread() as server:
        server.inject(Fault("status", status=401, message=f"bad key {shapeless}", times=10))
        recipe = write_recipe(tmp_path, recipe_text(server.base_url, items=2))
        health = ralph("health", str(recipe))
        summary = str(tmp_path / "run.json")
        result = apply(ralph, recipe, tmp_path, "--skip-health", "--summary-file", summary)
    assert health.code == 1 and result.code == 3
    printed = health.out + health.err + result.out + result.err
    assert "bad key [REDACTED:key]" in printed
    assert shapeless not in printed
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert shapeless.encode() not in path.read_bytes(), path


def test_a_command_agents_budget_reserves_its_max_output(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    # 40,000 characters an answer count as 10,000 tokens; params.max_tokens does not bound a
    # command, max_output (100 KB: 25,000 tokens) does, so that is what each request reserves
    agent = tmp_path / "agent.py"
    agent.write_text("import sys; sys.stdin.read(); print('x' * 40_000)")
    text = f"""
        version: 1
        name: command-budget
        agents:
          local:
            provider: command
            command: [{sys.executable}, {agent}]
            max_output: 100KB
            concurrency: 1
            params: {{max_tokens: 10}}
        limits: {{max_tokens: 40000}}
        tasks:
          - name: t
            agent: local
            for_each: [a, b, c]
            prompt: "{{{{ item }}}}"
    """
    summary = tmp_path / "run.json"
    result = ralph(
        *apply_args(write_recipe(tmp_path, text), tmp_path / "out", "--summary-file", str(summary))
    )
    assert result.code == 4, result.out + result.err
    totals = json.loads(summary.read_text())["totals"]
    assert totals["requests"] == 2  # a third could have reached 45,000 tokens: not sent
    assert totals["input_tokens"] + totals["output_tokens"] <= 40_000


def test_a_huge_concurrency_does_not_start_a_worker_for_each_slot(tmp_path: Path) -> None:
    text = """
        version: 1
        name: many-slots
        agents:
          local: {provider: echo, concurrency: 100000000}
        tasks:
          - name: t
            agent: local
            for_each: [a, b]
            prompt: "{{ item }}"
    """
    process = start_apply(write_recipe(tmp_path, text), tmp_path / "out")
    try:
        process.wait(timeout=30)  # a hundred million workers would take an hour and all memory
    finally:
        process.kill()
    assert process.returncode == 0
    assert len(lines(tmp_path / "out" / "t.jsonl")) == 2


def test_nested_params_are_sent_and_keyed(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    text = recipe_text(server.base_url, items=1).replace(
        "params: {max_tokens: 50}", "params: {max_tokens: 50, response_format: {type: json_object}}"
    )
    recipe = write_recipe(tmp_path, text)
    assert apply(ralph, recipe, tmp_path).code == 0
    assert sent_to(server, CHAT)[0].body["response_format"] == {"type": "json_object"}
    recipe.write_text(text.replace("json_object", "text"))
    assert apply(ralph, recipe, tmp_path).code == 0
    assert server.counts[CHAT] == 2, "a different nested param must not hit the same cache entry"


def test_concurrency_flag_caps_requests_in_flight(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    server.latency_s = 0.1
    text = recipe_text(server.base_url, items=8, agent_extra="concurrency: 8")
    started = time.perf_counter()
    result = apply(ralph, write_recipe(tmp_path, text), tmp_path, "--concurrency", "2")
    assert result.code == 0, result.out
    assert time.perf_counter() - started >= 0.4, "8 answers of 0.1 s, 2 at a time"


def test_requests_per_minute_paces_the_agent(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    text = recipe_text(
        server.base_url, items=5, agent_extra="rate_limit: {requests_per_minute: 600}"
    )
    started = time.perf_counter()
    assert apply(ralph, write_recipe(tmp_path, text), tmp_path).code == 0
    assert time.perf_counter() - started >= 0.4, "5 requests at 10 a second, evenly spaced"


def test_tokens_per_minute_counts_the_system_prompt(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    # each request is ~100 tokens of system prompt, 3 of prompt and 50 of answer: at 12,000
    # a minute they are ~0.75 s apart (without the system prompt, ~0.27 s)
    system = "system: '" + "x" * 400 + "'"
    text = recipe_text(
        server.base_url,
        items=3,
        agent_extra="rate_limit: {tokens_per_minute: 12000}",
        task_extra=system,
    )
    started = time.perf_counter()
    assert apply(ralph, write_recipe(tmp_path, text), tmp_path).code == 0
    assert time.perf_counter() - started >= 1.4


def test_an_item_with_a_lone_surrogate_is_refused_and_the_rest_run(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    items = '{"id": "bad", "text": "x \\ud800 y"}\n{"id": "\\udfff", "text": "ok"}\n'
    recipe = write_recipe(
        tmp_path,
        recipe_text(server.base_url, for_each="{file: items.jsonl}"),
        **{"items.jsonl": items},
    )
    result = apply(ralph, recipe, tmp_path, "--shard", "1/1")
    assert result.code == 3, result.err
    bad, good = lines(tmp_path / "out" / "answer.shard-1-of-1.jsonl")
    assert bad["status"] == "failed" and bad["item"] == {"id": "bad", "text": "x \ud800 y"}
    assert bad["error"] == (
        "task 'answer' prompt: character 6 is a lone surrogate (U+D800), which is not valid "
        "Unicode text"
    )
    assert good["status"] == "done" and good["item"] == {"id": "\udfff", "text": "ok"}
    assert len(sent_to(server, CHAT)) == 1
    events = lines(tmp_path / "log.jsonl")
    assert {e["item"] for e in events if e["event"] == "attempt"} == {"\\udfff"}  # escaped


def test_a_task_a_stop_kept_from_starting_is_in_the_summary(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    items = ", ".join(f"{{id: n{n}}}" for n in range(10))
    recipe = write_recipe(
        tmp_path,
        f"""
        version: 1
        name: two-tasks
        agents: {{local: {{provider: echo}}}}
        limits: {{max_requests: 3}}
        tasks:
          - {{name: first, agent: local, for_each: [{items}], prompt: "a {{{{ item.id }}}}"}}
          - {{name: second, agent: local, for_each: [{items}], prompt: "b {{{{ item.id }}}}"}}
        """,
    )
    summary = tmp_path / "run.json"
    result = apply(ralph, recipe, tmp_path, "--no-cache", "--summary-file", str(summary))
    assert result.code == 4, result.out
    tasks = json.loads(summary.read_text())["tasks"]
    assert (tasks["first"]["done"], tasks["first"]["not_started"]) == (3, 7)
    assert (tasks["second"]["items"], tasks["second"]["not_started"]) == (10, 10)


def test_outputs_of_items_with_ids_are_keyed_by_their_text_wherever_they_stand(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = write_recipe(
        tmp_path,
        """
        version: 1
        name: keys
        agents: {local: {provider: echo}}
        tasks:
          - {name: s, agent: local, for_each: [{id: "0"}, {id: b}, {id: 2}, plain], prompt: "x"}
          - name: t
            agent: local
            prompt: "{{ outputs.s['0'] }} {{ outputs.s['2'] }} {{ outputs.s[3] }}"
        """,
    )
    result = apply(ralph, recipe, tmp_path, "--no-cache")
    assert result.code == 0, result.out  # an answer missing under its key fails the item


def test_the_answer_of_a_failed_task_of_one_item_is_not_sent_as_none(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = write_recipe(
        tmp_path,
        """
        version: 1
        name: upstream
        agents:
          local: {provider: echo}
          broken: {provider: command, command: [sh, -c, "exit 1"], retries: {attempts: 1}}
        tasks:
          - {name: collect, agent: broken, prompt: "Gather"}
          - {name: use, agent: local, prompt: "Use [{{ outputs.collect }}]"}
          - {name: guarded, agent: local, prompt: "Use [{{ outputs.collect | default('none') }}]"}
        """,
    )
    summary = tmp_path / "run.json"
    result = apply(ralph, recipe, tmp_path, "--summary-file", str(summary))
    assert result.code == 3, result.out
    tasks = json.loads(summary.read_text())["tasks"]
    (reason,) = tasks["use"]["failures"]
    assert "task 'collect' has no answer to read: it failed, or it ran in another shard" in reason
    assert tasks["guarded"]["done"] == 1


def test_the_heap_frozen_for_the_run_is_given_back_to_the_collector(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    """The run keeps what existed before it out of the collector's passes; after it, whether
    it ended well or not, nothing stays frozen, or the cycles of a program that runs ralph
    in-process would never be collected."""
    text = """
        version: 1
        name: frozen
        agents:
          local: {provider: echo}
        tasks:
          - name: t
            agent: local
            for_each: [{x: 1}, {y: 2}]
            prompt: "{{ item.x }}"
    """
    recipe = write_recipe(tmp_path, text)
    assert gc.get_freeze_count() == 0
    result = ralph(*apply_args(recipe, tmp_path / "out"))
    assert result.code == 3, result.out + result.err
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("concurrency", [1, 8])
def test_the_same_prompt_twice_in_a_task_is_paid_for_once(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path, concurrency: int
) -> None:
    """Together in flight (8), or one after another before the batch reaches the cache (1):
    either way the later items are hits on the first one's answer."""
    server.latency_s = 0.05 if concurrency > 1 else 0.0
    texts = ["same", "other", "same", "same", "other", "same"]
    items = ", ".join(f"{{id: i{n}, text: {text}}}" for n, text in enumerate(texts))
    text = recipe_text(
        server.base_url, for_each=f"[{items}]", agent_extra=f"concurrency: {concurrency}"
    )
    summary = tmp_path / "run.json"
    result = apply(ralph, write_recipe(tmp_path, text), tmp_path, "--summary-file", str(summary))
    assert result.code == 0, result.out + result.err
    assert sorted(r.body["messages"][-1]["content"] for r in sent_to(server, CHAT)) == [
        "Say other",
        "Say same",
    ]
    records = lines(tmp_path / "out" / "answer.jsonl")
    answers = {r["item"]["text"]: set() for r in records}  # type: ignore[index]
    for record in records:
        answers[record["item"]["text"]].add(record["answer"])  # type: ignore[index]
    assert all(len(found) == 1 for found in answers.values())
    assert sorted(r["status"] for r in records) == ["cached"] * 4 + ["done"] * 2
    assert json.loads(summary.read_text())["totals"]["cache_hits"] == 4


def test_an_item_waiting_on_the_same_prompt_asks_itself_when_that_one_fails(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    server.latency_s = 0.05
    server.inject(Fault("status", status=400, message="bad request", times=1, path=CHAT))
    text = recipe_text(
        server.base_url,
        for_each="[{id: a, text: same}, {id: b, text: same}]",
        agent_extra="concurrency: 2",
    )
    result = apply(ralph, write_recipe(tmp_path, text), tmp_path)
    assert result.code == 3, result.out + result.err
    assert len(sent_to(server, CHAT)) == 2
    records = lines(tmp_path / "out" / "answer.jsonl")
    assert sorted(str(r["status"]) for r in records) == ["done", "failed"]


def test_no_cache_asks_for_every_item_even_the_same_prompt(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    text = recipe_text(server.base_url, for_each="[{id: a, text: same}, {id: b, text: same}]")
    assert apply(ralph, write_recipe(tmp_path, text), tmp_path, "--no-cache").code == 0
    assert len(sent_to(server, CHAT)) == 2


def test_items_of_a_prompt_that_failed_ask_side_by_side_not_one_after_another(
    ralph: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    in_flight, most = 0, 0

    async def overloaded(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.2)
        in_flight -= 1
        return web.json_response({"error": {"message": "overloaded"}}, status=503)

    with serving(overloaded) as base_url:
        items = ", ".join(f"{{id: i{n}, text: same}}" for n in range(4))
        text = recipe_text(base_url, for_each=f"[{items}]", agent_extra="concurrency: 4")
        text = text.replace("attempts: 3", "attempts: 1")
        result = apply(ralph, write_recipe(tmp_path, text), tmp_path)
    assert result.code == 3, result.out
    assert "4 x HTTP 503: overloaded" in result.out
    assert most == 3  # the first alone, then the three that had waited on it, together


def test_a_budget_is_not_given_up_for_the_worst_cases_of_requests_in_flight(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    """Four requests in flight reserve more than the budget at their worst, and spend a tenth
    of it: the others wait for them to settle, and the run does all its items."""
    server.latency_s = 0.05
    text = recipe_text(
        server.base_url,
        items=20,
        agent_extra="concurrency: 4",
        limits="max_cost_usd: 0.25",
    )
    summary = tmp_path / "run.json"
    result = apply(ralph, write_recipe(tmp_path, text), tmp_path, "--summary-file", str(summary))
    assert result.code == 0, result.out
    totals = json.loads(summary.read_text())["totals"]
    assert totals["requests"] == 20 and totals["cost_usd"] <= 0.25
