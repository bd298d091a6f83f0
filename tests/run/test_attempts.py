"""One agent's attempts at an item, through `ralph apply` against the fake server: retries by
fault kind, Retry-After, exhausted agents, a key re-sent after a 401, and nothing sent once
the run or the agent is done."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ralph.testing import FakeLLMServer, Fault
from tests.conftest import TEST_KEY, Result, apply_args, start_apply, write_recipe
from tests.run.apply_helpers import CHAT, apply, lines, recipe_text, serving


def test_retries_each_fault_kind(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    server.inject(
        Fault("status", status=500),
        Fault("rate_limit", retry_after=0),
        Fault("drop"),
        Fault("invalid_json"),
        Fault("wrong_shape"),
    )
    text = recipe_text(server.base_url, items=1, agent_extra="", limits="").replace(
        "attempts: 3", "attempts: 6"
    )
    result = apply(ralph, write_recipe(tmp_path, text), tmp_path)
    assert result.code == 0, result.out
    assert server.counts[CHAT] == 6
    summary = result.out
    assert "5 retries" in summary
    for cause in ("5xx: 1", "429: 1", "connection: 1", "invalid_response: 2"):
        assert cause in summary


def test_client_error_is_not_retried_and_reports_api_message(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    server.inject(Fault("status", status=400, message="model does not exist"))
    result = apply(ralph, write_recipe(tmp_path, recipe_text(server.base_url, items=1)), tmp_path)
    assert result.code == 3
    assert server.counts[CHAT] == 1
    assert "model does not exist" in result.out
    record = lines(tmp_path / "out" / "answer.jsonl")[0]
    assert record["status"] == "failed" and "model does not exist" in str(record["error"])


def test_quota_exhausted_is_not_retried(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    server.inject(Fault("rate_limit", insufficient_quota=True, retry_after=None))
    text = recipe_text(server.base_url, items=3, agent_extra="concurrency: 1")
    result = apply(ralph, write_recipe(tmp_path, text), tmp_path)
    assert result.code == 3
    assert server.counts[CHAT] == 1
    assert "exhausted" in result.out


def test_retry_after_longer_than_max_wait_exhausts_agent(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    server.inject(Fault("rate_limit", retry_after=120))
    text = recipe_text(
        server.base_url, items=2, agent_extra="concurrency: 1", limits="max_retry_wait: 1m"
    )
    result = apply(ralph, write_recipe(tmp_path, text), tmp_path)
    assert result.code == 3
    assert server.counts[CHAT] == 1


@pytest.mark.parametrize(("limits", "code", "sent"), [("", 0, 4), ("max_requests: 3", 4, 3)])
def test_a_request_sent_again_with_a_rotated_key_is_counted_and_budgeted(
    ralph: Callable[..., Result],
    server: FakeLLMServer,
    tmp_path: Path,
    limits: str,
    code: int,
    sent: int,
) -> None:
    calls = tmp_path / "calls"
    script = tmp_path / "key.py"  # a secret store whose lease runs out after the first read
    script.write_text(
        f"import pathlib\ncalls = pathlib.Path({str(calls)!r})\n"
        "calls.write_text((calls.read_text() if calls.exists() else '') + 'x')\n"
        f"print('sk-stale-000000000000000000' if calls.read_text() == 'x' else {TEST_KEY!r})\n"
    )
    text = recipe_text(server.base_url, items=3, agent_extra="concurrency: 1", limits=limits)
    text = text.replace(
        "api_key_env: OPENAI_API_KEY", f"api_key_command: [{sys.executable}, {script}]"
    )
    summary = tmp_path / "run.json"
    result = apply(ralph, write_recipe(tmp_path, text), tmp_path, "--summary-file", str(summary))
    assert result.code == code, result.err
    assert server.counts[CHAT] == sent == json.loads(summary.read_text())["totals"]["requests"]
    assert calls.read_text() == "xx", "the key is read again once, not per request"
    answered = [r for r in lines(tmp_path / "out" / "answer.jsonl") if r["status"] == "done"]
    assert len(answered) == sent - 1
    attempts = [e for e in lines(tmp_path / "log.jsonl") if e["event"] == "attempt"]
    assert [(e["item"], e["attempt"], e["status"]) for e in attempts[:2]] == [
        ("i0", 1, "fatal"),
        ("i0", 2, "ok"),
    ]


def test_items_waiting_for_the_agent_are_not_sent_once_max_runtime_is_up(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    server.latency_s = 0.3
    # one slot on the writer, four more workers from the fallback's: they queue for the slot
    queued = "concurrency: 1\n            fallback: backup\n          backup: {provider: echo, concurrency: 4}"  # noqa: E501
    text = recipe_text(server.base_url, items=10, agent_extra=queued, limits="max_runtime: 500ms")
    result = apply(ralph, write_recipe(tmp_path, text), tmp_path)
    assert result.code == 4, result.out + result.err
    assert server.counts[CHAT] <= 2  # sent before the stop; none after it


def test_an_item_waiting_to_retry_does_not_ask_an_agent_exhausted_meanwhile(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    server.inject(
        Fault("rate_limit", retry_after=0.3),  # the first item waits 0.3 s to try again
        Fault("rate_limit", insufficient_quota=True),  # the second finds the quota gone
    )
    backup = "concurrency: 2\n            fallback: backup\n          backup: {provider: echo}"
    text = recipe_text(server.base_url, items=2, agent_extra=backup)
    result = apply(ralph, write_recipe(tmp_path, text), tmp_path)
    assert result.code == 0, result.out + result.err
    assert server.counts[CHAT] == 2  # the wait ended on the fallback, not on the writer


def test_a_5xx_retry_after_past_max_retry_wait_exhausts_the_agent(
    ralph: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    seen: list[str] = []

    async def busy(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(status=503, headers={"Retry-After": "400"}, text="busy")

    with serving(busy) as base_url:
        backup = "concurrency: 1\n            fallback: backup\n          backup: {provider: echo}"
        text = recipe_text(base_url, items=3, agent_extra=backup, limits="max_retry_wait: 5s")
        result = apply(ralph, write_recipe(tmp_path, text), tmp_path)
    assert result.code == 0, result.out + result.err
    assert len(seen) == 1  # then the agent is exhausted: the fallback answers every item
    answered_by = [line["agent"] for line in lines(tmp_path / "out" / "answer.jsonl")]
    assert answered_by == ["backup"] * 3


def test_retry_after_is_honoured(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    server.inject(Fault("rate_limit", retry_after=0.4, path=CHAT))
    recipe = write_recipe(tmp_path, recipe_text(server.base_url, items=1))
    started = time.perf_counter()
    result = apply(ralph, recipe, tmp_path)
    elapsed = time.perf_counter() - started
    assert result.code == 0, result.out
    assert server.counts[CHAT] == 2
    assert elapsed >= 0.4, "the retry came before the server's Retry-After"


def test_a_retry_is_counted_when_it_is_sent_not_when_it_is_decided(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    # three first attempts fail at once; max_requests leaves no room to retry any of them
    server.inject(Fault("status", status=503, times=3))
    text = recipe_text(
        server.base_url, items=3, agent_extra="concurrency: 3", limits="max_requests: 3"
    )
    summary = tmp_path / "run.json"
    result = apply(ralph, write_recipe(tmp_path, text), tmp_path, "--summary-file", str(summary))
    assert result.code == 4, result.out
    attempts = [e for e in lines(tmp_path / "log.jsonl") if e["event"] == "attempt"]
    retried = sum(1 for e in attempts if e["attempt"] > 1)
    assert server.counts[CHAT] == 3
    assert json.loads(summary.read_text())["totals"]["retries"] == retried == 0


def test_requests_in_flight_at_ctrl_c_are_counted_and_logged(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    server.inject(Fault("latency", duration_s=30, times=None))
    recipe = write_recipe(
        tmp_path, recipe_text(server.base_url, items=4, agent_extra="concurrency: 4")
    )
    log, summary = tmp_path / "log.jsonl", tmp_path / "run.json"
    extra = (
        "--skip-health",
        "--log-format",
        "json",
        "--log-file",
        str(log),
        "--summary-file",
        str(summary),
    )
    process = start_apply(recipe, tmp_path / "out", *extra)
    try:
        deadline = time.monotonic() + 20
        while server.counts.get(CHAT, 0) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 130, err.decode()
    totals = json.loads(summary.read_text())["totals"]
    assert totals["requests"] == server.counts[CHAT] == 4
    statuses = [e["status"] for e in lines(log) if e["event"] == "attempt"]
    assert statuses == ["interrupted"] * 4


@pytest.mark.parametrize(
    ("fault", "limits", "code"),
    [
        (None, "max_runtime: 2s", 4),  # the run stops while the others wait for their slots
        (Fault("rate_limit", insufficient_quota=True, retry_after=None), "", 0),  # exhausted
    ],
)
def test_items_waiting_for_a_pace_slot_stop_waiting_when_the_agent_can_send_no_more(
    ralph: Callable[..., Result],
    server: FakeLLMServer,
    tmp_path: Path,
    fault: Fault | None,
    limits: str,
    code: int,
) -> None:
    """At 2 requests a minute the second slot is 30 s away: neither a stop nor an exhausted
    agent (whose items go to the fallback) may wait for it."""
    if fault is not None:
        server.inject(fault)
    agent = (
        "concurrency: 3\n            rate_limit: {requests_per_minute: 2}\n"
        "            fallback: backup\n          backup: {provider: echo}"
    )
    text = recipe_text(server.base_url, items=3, agent_extra=agent, limits=limits)
    started = time.monotonic()
    result = apply(ralph, write_recipe(tmp_path, text), tmp_path)
    assert result.code == code, result.out + result.err
    assert time.monotonic() - started < 15
    assert server.counts[CHAT] == 1


def test_a_bug_in_a_request_ends_the_run_with_its_report_not_a_wait_for_ever(
    ralph: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests waiting for budget room wait for those in flight to settle: one that ends in
    an internal error must give its room back, or they would wait for ever."""
    from ralph.providers.echo import EchoProvider

    original = EchoProvider.complete

    async def broken(self: EchoProvider, request: Any) -> Any:
        if "item 0" in request.prompt:
            await asyncio.sleep(0.05)
            raise RuntimeError("a bug")
        return await original(self, request)

    monkeypatch.setattr(EchoProvider, "complete", broken)
    text = """
        version: 1
        name: bug
        agents:
          local:
            provider: echo
            concurrency: 2
            params: {max_tokens: 600}
            pricing: {input_per_mtok: 1000, output_per_mtok: 1000}
        limits: {max_cost_usd: 1.0}
        tasks:
          - {name: t, agent: local, for_each: [0, 1, 2], prompt: "item {{ item }}"}
    """
    started = time.monotonic()
    result = ralph(*apply_args(write_recipe(tmp_path, text), tmp_path / "out"))
    assert result.code == 70, result.out + result.err
    assert time.monotonic() - started < 10
