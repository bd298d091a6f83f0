"""Recipes for `ralph apply` against the shipped fake server, and reading what a run left."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from aiohttp import web

from ralph.testing import FakeLLMServer, RecordedRequest
from tests.conftest import Result, apply_args

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"


def recipe_text(
    base_url: str,
    *,
    items: int = 5,
    agent_extra: str = "",
    limits: str = "",
    task_extra: str = "",
    provider: str = "openai",
    for_each: str | None = None,
) -> str:
    env = "OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY"
    inline = ", ".join(f"{{id: i{n}, text: 'item {n}'}}" for n in range(items))
    for_each = for_each or f"[{inline}]"
    return f"""
        version: 1
        name: engine-test
        agents:
          writer:
            provider: {provider}
            base_url: {base_url}
            model: test-model
            api_key_env: {env}
            params: {{max_tokens: 50}}
            retries: {{attempts: 3, backoff: 1ms, max_backoff: 5ms}}
            pricing: {{input_per_mtok: 1000, output_per_mtok: 1000}}
            {agent_extra}
        limits: {{{limits}}}
        tasks:
          - name: answer
            agent: writer
            for_each: {for_each}
            prompt: "Say {{{{ item.text }}}}"
            {task_extra}
    """


def apply(ralph: Callable[..., Result], recipe: Path, tmp_path: Path, *extra: str) -> Result:
    """`ralph apply` without the health checks, so only the run's own requests reach the server
    (tests/test_health.py covers them)."""
    log = ("--log-file", str(tmp_path / "log.jsonl"), "--log-format", "json")
    return ralph(*apply_args(recipe, tmp_path / "out", "--skip-health", *log, *extra))


def sent_to(server: FakeLLMServer, path: str) -> list[RecordedRequest]:
    """Requests to one path (the health checks before a run also reach /v1/models)."""
    return [r for r in server.requests if r.path == path]


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def serving(handler: Callable[[web.Request], Awaitable[web.Response]]) -> Iterator[str]:
    """A one-handler HTTP server on 127.0.0.1, on a thread of its own: its base URL."""
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.run_until_complete(runner.cleanup())
        loop.close()
