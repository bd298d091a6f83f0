"""`--serve` and `.prom` summaries: Prometheus text, /healthz, /status, from real runs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from ralph.observe.metrics import StatusServer, prometheus
from ralph.observe.summary import AgentStats, RunStats, TaskStats
from ralph.testing import FakeLLMServer
from tests.conftest import RALPH, Result, apply_args, write_recipe

SAMPLE = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)+\})? -?[0-9.e+]+$')


def stats_of_a_run() -> RunStats:
    stats = RunStats(recipe="r.yaml")
    agent = stats.agents.setdefault("writer", AgentStats("openai", "m"))
    agent.requests, agent.input_tokens, agent.output_tokens, agent.cost_usd = 3, 30, 12, 0.25
    agent.statuses.update({"ok": 2, "5xx": 1})
    agent.retries["5xx"] = 1
    agent.latencies_ms += [40.0, 120.0, 700.0]
    stats.tasks["t"] = TaskStats(items=4, done=2, cached=1, failed=1)
    return stats


def test_prometheus_text_format() -> None:
    text = prometheus(stats_of_a_run())
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert all(SAMPLE.match(line) for line in samples), samples
    assert 'ralph_requests_total{agent="writer",status="5xx"} 1' in samples
    assert 'ralph_retries_total{agent="writer",cause="5xx"} 1' in samples
    assert 'ralph_tokens_total{agent="writer",direction="out"} 12' in samples
    assert 'ralph_request_latency_ms_bucket{agent="writer",le="100"} 1' in samples
    assert 'ralph_request_latency_ms_bucket{agent="writer",le="+Inf"} 3' in samples
    assert 'ralph_items{task="t",state="failed"} 1' in samples
    assert "ralph_up 1" in samples
    assert "# TYPE ralph_request_latency_ms histogram" in text


def test_healthz_turns_503_when_the_run_stops() -> None:
    stats = stats_of_a_run()

    async def scenario() -> list[tuple[int, str]]:
        server = StatusServer("127.0.0.1", 0, lambda: stats)
        await server.start()
        seen = []
        try:
            async with aiohttp.ClientSession() as session:
                base = f"http://127.0.0.1:{server.port}"
                for change in (None, "max_cost_usd"):
                    stats.stopped_by = change
                    async with session.get(f"{base}/healthz") as r:
                        seen.append((r.status, await r.text()))
                async with session.get(f"{base}/metrics") as r:
                    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                    assert "ralph_up 0" in await r.text()
                async with session.get(f"{base}/status") as r:
                    assert (await r.json())["stopped_by"] == "max_cost_usd"
        finally:
            await server.stop()
        return seen

    assert asyncio.run(scenario()) == [(200, "ok\n"), (503, "stopped\n")]


def test_serve_during_a_real_run(server: FakeLLMServer, tmp_path: Path) -> None:
    server.latency_s = 0.05
    inline = ", ".join(f"{{id: n{n}}}" for n in range(30))
    recipe = write_recipe(
        tmp_path,
        f"""
        version: 1
        name: serve-test
        agents:
          writer: {{provider: openai, base_url: "{server.base_url}", model: m,
                    api_key_env: OPENAI_API_KEY, concurrency: 2}}
        tasks:
          - {{name: t, agent: writer, for_each: [{inline}], prompt: "hi {{{{ item.id }}}}"}}
    """,
    )
    log = tmp_path / "log.jsonl"  # a log file is buffered: the URL must be there at once
    serve = ("--serve", "127.0.0.1:0", "--log-format", "json", "--log-file", str(log))
    command = [*RALPH, *apply_args(recipe, tmp_path / "out", *serve)]
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    url = ""
    deadline = time.monotonic() + 20
    while not url and time.monotonic() < deadline and process.poll() is None:
        lines = log.read_text().splitlines() if log.exists() else []
        url = next((json.loads(x)["url"] for x in lines if '"serving"' in x), "")
        time.sleep(0.01)
    assert url.startswith("http://127.0.0.1:")

    async def scrape() -> tuple[int, str, dict[str, object]]:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/healthz") as health:
                status = health.status
            async with session.get(f"{url}/metrics") as metrics:
                text = await metrics.text()
            async with session.get(f"{url}/status") as current:
                return status, text, await current.json()

    status, text, current = asyncio.run(scrape())
    assert status == 200
    assert "ralph_requests_total" in text
    assert current["tasks"]["t"]["items"] >= 1  # type: ignore[index]
    assert (current["status"], current["exit_code"]) == ("running", None)
    assert isinstance(current["wall_s"], float) and current["wall_s"] > 0
    process.communicate(timeout=30)
    assert process.returncode == 0


def test_summary_file_in_prometheus_format(ralph: Callable[..., Result], tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path,
        """
        version: 1
        name: prom
        agents: {local: {provider: echo}}
        tasks: [{name: t, agent: local, prompt: hi}]
    """,
    )
    prom = tmp_path / "run.prom"
    started = time.time()
    result = ralph(*apply_args(recipe, tmp_path / "out", "--summary-file", str(prom)))
    assert result.code == 0
    assert prom.stat().st_mtime >= started - 1
    text = prom.read_text()
    assert 'ralph_requests_total{agent="local",status="ok"} 1' in text
    assert 'ralph_items{task="t",state="done"} 1' in text
    assert 'ralph_cache_misses_total{agent="local"} 1' in text
    again = ralph(*apply_args(recipe, tmp_path / "out", "--summary-file", str(prom), "--no-cache"))
    assert again.code == 0
    text = prom.read_text()
    assert 'ralph_requests_total{agent="local",status="ok"} 1' in text
    assert 'ralph_cache_misses_total{agent="local"} 0' in text  # the cache was off: no miss


def test_serve_on_a_port_in_use_is_a_clear_error(
    ralph: Callable[..., Result], server: FakeLLMServer, tmp_path: Path
) -> None:
    recipe = write_recipe(
        tmp_path,
        """
        version: 1
        name: busy
        agents: {local: {provider: echo}}
        tasks: [{name: t, agent: local, prompt: hi}]
    """,
    )
    busy = f"127.0.0.1:{server.port}"  # the fake server holds it
    result = ralph("apply", str(recipe), "--out", str(tmp_path / "out"), "--serve", busy)
    assert result.code == 1
    assert result.err.startswith(f"error: --serve {busy}: ") and "in use" in result.err
