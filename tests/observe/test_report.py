"""The end-of-run summary people read, snapshotted from the run.json of real small runs."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion

from ralph.observe.report import render_summary
from ralph.testing import FakeLLMServer, Fault
from tests.conftest import Result, apply_args, write_recipe

CHAT = "/v1/chat/completions"


def run(ralph: Callable[..., Result], recipe: Path, tmp_path: Path, *extra: str) -> dict[str, Any]:
    """`ralph apply` with --summary-file; the summary it wrote, checked against what it printed."""
    summary_file = tmp_path / "run.json"
    result = ralph(
        *apply_args(
            recipe,
            tmp_path / "out",
            "--concurrency",
            "1",
            "--log-file",
            str(tmp_path / "log.jsonl"),
            "--summary-file",
            str(summary_file),
            *extra,
        )
    )
    summary: dict[str, Any] = json.loads(summary_file.read_text())
    assert result.code == summary["exit_code"]
    assert result.out.rstrip("\n") == render_summary(summary)
    return summary


def fake_recipe(folder: Path, base_url: str, limits: str = "{}") -> Path:
    return write_recipe(
        folder,
        f"""
        version: 1
        name: report-test
        vars: {{tone: terse}}
        agents:
          writer:
            provider: openai
            base_url: {base_url}
            model: test-model
            api_key_env: OPENAI_API_KEY
            params: {{max_tokens: 20}}
            retries: {{attempts: 3, backoff: 1ms, max_backoff: 2ms}}
            pricing: {{input_per_mtok: 150, output_per_mtok: 600}}
        limits: {limits}
        tasks:
          - name: answer
            agent: writer
            for_each: [{{id: a}}, {{id: b}}, {{id: c}}, {{id: d}}]
            prompt: "Be {{{{ vars.tone }}}} about {{{{ item.id }}}}"
        """,
    )


def test_a_run_with_retries_and_failures(
    ralph: Callable[..., Result],
    server: FakeLLMServer,
    tmp_path: Path,
    snapshot: SnapshotAssertion,
) -> None:
    # one item at a time, so faults meet requests in order: a gets a 500 and then a 400 (fatal);
    # b a 429 and two 503s (out of attempts); c a 503 and then its answer; d its answer at once
    server.inject(
        Fault("status", status=500, path=CHAT),
        Fault("status", status=400, message="prompt is too spicy", path=CHAT),
        Fault("rate_limit", retry_after=0, path=CHAT),
        Fault("status", status=503, times=3, path=CHAT),
    )
    summary = run(ralph, fake_recipe(tmp_path, server.base_url), tmp_path, "--set", "tone=curt")
    assert summary["exit_code"] == 3
    assert summary["totals"]["retries"] == 4
    assert server.counts[CHAT] == summary["totals"]["requests"] == 8
    assert render_summary(summary, timings=False) == snapshot


def test_a_run_stopped_by_a_limit(
    ralph: Callable[..., Result],
    server: FakeLLMServer,
    tmp_path: Path,
    snapshot: SnapshotAssertion,
) -> None:
    recipe = fake_recipe(tmp_path, server.base_url, limits="{max_requests: 2}")
    summary = run(ralph, recipe, tmp_path)
    assert summary["stopped_by"] == "max_requests"
    assert render_summary(summary, timings=False) == snapshot


ECHO_RECIPE = """
    version: 1
    name: report-echo
    agents:
      local: {provider: echo}
    tasks:
      - name: greet
        agent: local
        for_each: [{id: ada}, {id: bob}, {id: cy}]
        prompt: "Hello {{ item.id }}"
      - name: digest
        agent: local
        prompt: "Digest of {{ outputs.greet | length }} greetings"
"""


def test_an_offline_run_and_its_rerun_from_cache(
    ralph: Callable[..., Result],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    snapshot: SnapshotAssertion,
) -> None:
    monkeypatch.delenv("RALPH_CACHE_DIR", raising=False)
    recipe = write_recipe(tmp_path, ECHO_RECIPE)
    first = run(ralph, recipe, tmp_path)
    again = run(ralph, recipe, tmp_path)
    assert again["totals"]["cache_hits"] == 4 and again["totals"]["requests"] == 0
    assert render_summary(first, timings=False) == snapshot(name="first")
    assert render_summary(again, timings=False) == snapshot(name="rerun")


def test_timings_are_shown_by_default_and_only_then(
    ralph: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RALPH_CACHE_DIR", raising=False)
    summary = run(ralph, write_recipe(tmp_path, ECHO_RECIPE), tmp_path)
    with_timings = render_summary(summary)
    without = render_summary(summary, timings=False)
    assert "p50 ms" in with_timings and "wall time: " in with_timings
    assert "p50 ms" not in without and "wall time" not in without


def test_loop_tasks_say_how_their_loops_ended(
    ralph: Callable[..., Result], tmp_path: Path, snapshot: SnapshotAssertion
) -> None:
    (tmp_path / "agent.py").write_text(
        "import sys\nsys.stdin.read()\nprint('all good LOOP_DONE')\n"
    )
    recipe = write_recipe(
        tmp_path,
        f"""
        version: 1
        name: loop-report
        agents:
          coder: {{provider: command, command: [{sys.executable}, agent.py]}}
        tasks:
          - name: build
            agent: coder
            prompt: Work until the job is finished.
            loop: {{until: LOOP_DONE, max_iterations: 3}}
        """,
    )
    summary = run(ralph, recipe, tmp_path, "--skip-health")
    assert summary["tasks"]["build"]["loop"] == {"iterations": 1, "stops": {"done": 1}}
    assert render_summary(summary, timings=False) == snapshot


def test_a_summary_file_that_cannot_be_written_does_not_hide_how_the_run_ended(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    recipe = write_recipe(
        tmp_path,
        """
        version: 1
        name: unwritable-summary
        agents: {local: {provider: echo}}
        tasks: [{name: t, agent: local, prompt: hi}]
        """,
    )
    (tmp_path / "run.json").mkdir()
    result = ralph(
        *apply_args(recipe, tmp_path / "out", "--summary-file", str(tmp_path / "run.json"))
    )
    assert result.code == 1
    assert "unwritable-summary: done (exit 0)" in result.out  # the run's own outcome, shown
    assert "is a folder, not a file" in result.err


def test_an_items_text_in_a_failure_cannot_drive_the_terminal(
    ralph: Callable[..., Result], tmp_path: Path
) -> None:
    """The reason quotes the output path an item rendered: its escape sequences (clear the
    screen, retitle the window) and line breaks are shown as escapes."""
    items = json.dumps([{"id": "../x\x1b[2J\x1b]0;PWNED\x07\nforged: 1 x ok"}])
    recipe = write_recipe(
        tmp_path,
        f"""
        version: 1
        name: escapes
        agents:
          local: {{provider: echo}}
        tasks:
          - {{name: t, agent: local, for_each: {items}, prompt: hi, output: "{{{{ item.id }}}}"}}
        """,
    )
    result = ralph(*apply_args(recipe, tmp_path / "out"))
    assert result.code == 3
    assert "\x1b" not in result.out and "\x07" not in result.out
    (failure,) = [line for line in result.out.splitlines() if line.startswith("  t: 1 x ")]
    assert "../x\\x1b[2J\\x1b]0;PWNED\\x07\\x0aforged: 1 x ok" in failure
