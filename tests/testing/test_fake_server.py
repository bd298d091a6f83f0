"""The fake OpenAI/Anthropic server, exercised over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import email.utils
import json
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from ralph.testing import FakeLLMServer, Fault

KEY = "sk-test-123"
ANTHROPIC = {"anthropic-version": "2023-06-01"}


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]  # lower-case names
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


async def fetch(
    method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None
) -> Reply:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, json=body, headers=headers) as response,
    ):
        text = await response.text()
        names = {k.lower(): v for k, v in response.headers.items()}
        return Reply(response.status, names, text)


def call(
    method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None
) -> Reply:
    return asyncio.run(fetch(method, url, body, headers))


def chat(server: FakeLLMServer, text: str = "hi", **headers: str) -> Reply:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    return call("POST", f"{server.base_url}/chat/completions", body, headers)


def messages(server: FakeLLMServer, text: str = "hi", **headers: str) -> Reply:
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": text}],
    }
    return call("POST", f"{server.base_url}/messages", body, {**ANTHROPIC, **headers})


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer().in_thread() as running:
        yield running


@pytest.fixture
def keyed() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(api_key=KEY).in_thread() as running:
        yield running


# -- endpoints -----------------------------------------------------------------------------------


def test_chat_completion_answers_in_openai_shape(server: FakeLLMServer) -> None:
    body = {
        "model": "gpt-4o-mini",
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "  \nhello there\nsecond line"},
        ],
    }
    reply = call("POST", f"{server.base_url}/chat/completions", body).json()
    assert reply["id"].startswith("chatcmpl-")
    assert {k: v for k, v in reply.items() if k not in {"id", "created"}} == {
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "echo: hello there"},
                "finish_reason": "stop",
            }
        ],
        # 9 + 25 prompt characters, 17 answer characters, four to a token, rounded up.
        "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
    }


def test_messages_answers_in_anthropic_shape_for_block_content(server: FakeLLMServer) -> None:
    blocks = [{"type": "text", "text": "\nfirst block"}, {"type": "text", "text": "second"}]
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "earlier question"},
            {"role": "assistant", "content": "earlier answer"},
            {"role": "user", "content": blocks},
        ],
    }
    reply = call("POST", f"{server.base_url}/messages", body, ANTHROPIC)
    assert reply.status == 200
    payload = reply.json()
    assert payload["id"].startswith("msg_")
    del payload["id"]
    # 9 + 16 + 14 + 19 (two blocks joined by a newline) prompt characters.
    assert payload == {
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": "echo: first block"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 15, "output_tokens": 5},
    }


def test_messages_require_the_anthropic_version_header(server: FakeLLMServer) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    reply = call("POST", f"{server.base_url}/messages", body)
    assert reply.status == 400
    assert reply.json()["type"] == "error"
    assert reply.json()["error"]["type"] == "invalid_request_error"


def test_malformed_bodies_get_a_provider_shaped_400(server: FakeLLMServer) -> None:
    no_messages = call("POST", f"{server.base_url}/chat/completions", {"model": "m"})
    assert no_messages.status == 400
    assert "messages" in no_messages.json()["error"]["message"]
    no_max_tokens = {"model": "m", "messages": []}
    reply = call("POST", f"{server.base_url}/messages", no_max_tokens, ANTHROPIC)
    assert reply.status == 400
    assert "max_tokens" in reply.json()["error"]["message"]


def test_models_and_healthz(server: FakeLLMServer) -> None:
    models = call("GET", f"{server.base_url}/models").json()
    assert models["object"] == "list"
    assert [(m["id"], m["object"]) for m in models["data"]] == [
        ("gpt-4o-mini", "model"),
        ("claude-haiku-4-5", "model"),
    ]
    health = call("GET", f"{server.root_url}/healthz")
    assert (health.status, health.text) == (200, "ok")


def test_each_request_records_its_connection_as_peer(server: FakeLLMServer) -> None:
    async def two_on_one_connection() -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                async with session.get(f"{server.base_url}/models") as response:
                    await response.read()

    asyncio.run(two_on_one_connection())
    call("GET", f"{server.base_url}/models")  # a session, so a connection, of its own
    first, second, third = (r.peer for r in server.requests)
    assert first == second != third
    assert first.startswith("127.0.0.1:") and third.startswith("127.0.0.1:")


# -- auth ----------------------------------------------------------------------------------------


def test_openai_paths_accept_the_bearer_key(keyed: FakeLLMServer) -> None:
    assert chat(keyed, Authorization=f"Bearer {KEY}").status == 200
    models = call("GET", f"{keyed.base_url}/models", headers={"Authorization": f"Bearer {KEY}"})
    assert models.status == 200


def test_openai_paths_refuse_a_wrong_or_missing_key(keyed: FakeLLMServer) -> None:
    for reply in (
        chat(keyed, Authorization="Bearer nope"),
        chat(keyed),
        call("GET", f"{keyed.base_url}/models"),
    ):
        assert reply.status == 401
        assert reply.json()["error"]["type"] == "invalid_request_error"
        assert reply.json()["error"]["code"] == "invalid_api_key"


def test_anthropic_path_accepts_x_api_key_and_refuses_others(keyed: FakeLLMServer) -> None:
    assert messages(keyed, **{"x-api-key": KEY}).status == 200
    for reply in (messages(keyed, **{"x-api-key": "nope"}), messages(keyed)):
        assert reply.status == 401
        assert reply.json() == {
            "type": "error",
            "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        }


def test_refused_requests_are_counted_but_do_not_consume_faults(keyed: FakeLLMServer) -> None:
    keyed.inject(Fault("status", status=500))
    assert chat(keyed).status == 401
    assert chat(keyed, Authorization=f"Bearer {KEY}").status == 500
    assert keyed.counts == {"/v1/chat/completions": 2}


# -- faults --------------------------------------------------------------------------------------


def test_status_fault_hits_the_next_request_only(server: FakeLLMServer) -> None:
    server.inject(Fault("status", status=500, message="boom"))
    failed = chat(server)
    assert failed.status == 500
    assert failed.json()["error"]["message"] == "boom"
    assert failed.json()["error"]["type"] == "server_error"
    assert chat(server).status == 200
    assert server.counts == {"/v1/chat/completions": 2}


def test_status_fault_with_times_and_path(server: FakeLLMServer) -> None:
    server.inject(Fault("status", status=503, times=2, path="/v1/messages"))
    assert chat(server).status == 200
    first, second, third = messages(server), messages(server), messages(server)
    assert [first.status, second.status, third.status] == [503, 503, 200]
    assert first.json()["type"] == "error"
    assert first.json()["error"]["type"] == "api_error"
    assert server.counts == {"/v1/chat/completions": 1, "/v1/messages": 3}


def test_rate_limit_with_retry_after_seconds(server: FakeLLMServer) -> None:
    server.inject(Fault("rate_limit", retry_after=2), Fault("rate_limit", retry_after=0.5))
    openai = chat(server)
    assert (openai.status, openai.headers["retry-after"]) == (429, "2")
    assert openai.json()["error"]["code"] == "rate_limit_exceeded"
    anthropic = messages(server)
    assert (anthropic.status, anthropic.headers["retry-after"]) == (429, "0.5")
    assert anthropic.json()["error"]["type"] == "rate_limit_error"
    assert chat(server).status == 200


def test_rate_limit_with_retry_after_http_date(server: FakeLLMServer) -> None:
    server.inject(Fault("rate_limit", retry_after=30, retry_after_http_date=True))
    before = time.time()
    reply = chat(server)
    assert reply.status == 429
    when = email.utils.parsedate_to_datetime(reply.headers["retry-after"]).timestamp()
    # HTTP dates have whole seconds, so allow one either side.
    assert before + 29 <= when <= time.time() + 31


def test_rate_limit_insufficient_quota(server: FakeLLMServer) -> None:
    server.inject(Fault("rate_limit", insufficient_quota=True, retry_after=None))
    reply = chat(server)
    assert reply.status == 429
    assert "retry-after" not in reply.headers
    assert reply.json()["error"]["code"] == "insufficient_quota"
    assert reply.json()["error"]["type"] == "insufficient_quota"


def test_drop_closes_the_connection_without_a_response(server: FakeLLMServer) -> None:
    server.inject(Fault("drop"))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        chat(server)
    assert chat(server).status == 200
    assert server.counts == {"/v1/chat/completions": 2}


def test_invalid_json_is_a_200_that_does_not_parse(server: FakeLLMServer) -> None:
    server.inject(Fault("invalid_json"))
    reply = chat(server)
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        reply.json()


def test_wrong_shape_lacks_the_answer(server: FakeLLMServer) -> None:
    server.inject(Fault("wrong_shape", times=2))
    openai, anthropic = chat(server).json(), messages(server).json()
    assert "choices" not in openai
    assert openai["object"] == "chat.completion"
    assert "content" not in anthropic
    assert anthropic["type"] == "message"


def test_slow_body_sends_headers_then_trickles_the_body(server: FakeLLMServer) -> None:
    server.inject(Fault("slow_body", duration_s=0.3))
    body = {"model": "m", "messages": [{"role": "user", "content": "slowly"}]}

    async def timed() -> tuple[float, float, Any]:
        start = time.monotonic()
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{server.base_url}/chat/completions", json=body) as response,
        ):
            headers_at = time.monotonic() - start
            payload = await response.json()
            return headers_at, time.monotonic() - start, payload

    headers_at, done_at, payload = asyncio.run(timed())
    assert done_at >= 0.3
    assert headers_at < done_at
    assert payload["choices"][0]["message"]["content"] == "echo: slowly"


def test_latency_fault_and_global_latency_delay_the_normal_answer(server: FakeLLMServer) -> None:
    server.inject(Fault("latency", duration_s=0.15))
    start = time.monotonic()
    assert chat(server, "late").json()["choices"][0]["message"]["content"] == "echo: late"
    assert time.monotonic() - start >= 0.15
    server.latency_s = 0.1
    start = time.monotonic()
    assert messages(server).status == 200
    assert time.monotonic() - start >= 0.1


def test_every_nth_request(server: FakeLLMServer) -> None:
    server.inject(Fault("status", status=502, every=3, times=None))
    assert [chat(server).status for _ in range(7)] == [200, 200, 502, 200, 200, 502, 200]


def test_faults_apply_in_order_one_per_request(server: FakeLLMServer) -> None:
    server.inject({"kind": "status", "status": 500}, Fault("status", status=503))
    assert [chat(server).status for _ in range(3)] == [500, 503, 200]


def test_fault_specs_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault.from_dict({"kind": "explode"})
    with pytest.raises(ValueError, match="unknown fault field"):
        Fault.from_dict({"kind": "status", "colour": "red"})
    with pytest.raises(ValueError, match="times"):
        Fault("drop", times=0)
    assert Fault("drop", path="messages").path == "/v1/messages"


# -- answers and observation ---------------------------------------------------------------------


def test_scripted_answers_in_order_then_the_default(server: FakeLLMServer) -> None:
    server.script(["answer 1", "answer 2 LOOP_COMPLETE"])
    assert chat(server).json()["choices"][0]["message"]["content"] == "answer 1"
    assert messages(server).json()["content"][0]["text"] == "answer 2 LOOP_COMPLETE"
    assert chat(server, "after").json()["choices"][0]["message"]["content"] == "echo: after"


def test_a_faulted_request_does_not_use_a_scripted_answer(server: FakeLLMServer) -> None:
    server.script(["kept"])
    server.inject(Fault("status"))
    assert chat(server).status == 500
    assert chat(server).json()["choices"][0]["message"]["content"] == "kept"


def test_responder_computes_the_answer() -> None:
    def shout(body: dict[str, Any]) -> str:
        return str(body["model"]).upper()

    with FakeLLMServer(responder=shout).in_thread() as server:
        assert chat(server).json()["choices"][0]["message"]["content"] == "GPT-4O-MINI"


def test_counts_and_recorded_requests(keyed: FakeLLMServer) -> None:
    chat(keyed, "one", Authorization=f"Bearer {KEY}")
    messages(keyed, "two", **{"x-api-key": KEY})
    call("GET", f"{keyed.root_url}/healthz")
    assert keyed.counts == {"/v1/chat/completions": 1, "/v1/messages": 1, "/healthz": 1}
    first, second, third = keyed.requests
    assert (first.method, first.path) == ("POST", "/v1/chat/completions")
    assert first.body["messages"] == [{"role": "user", "content": "one"}]
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert second.body["max_tokens"] == 50
    assert second.headers["anthropic-version"] == "2023-06-01"
    assert (third.path, third.body) == ("/healthz", None)


def test_reset_forgets_everything(server: FakeLLMServer) -> None:
    chat(server)
    server.inject(Fault("status"))
    server.script(["scripted"])
    server.reset()
    assert (server.counts, server.requests) == ({}, [])
    reply = chat(server, "fresh")
    assert reply.json()["choices"][0]["message"]["content"] == "echo: fresh"
    assert reply.json()["id"] == "chatcmpl-fake-1"


def test_concurrent_requests_are_all_answered_and_counted(server: FakeLLMServer) -> None:
    async def burst() -> list[int]:
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        async with aiohttp.ClientSession() as session:

            async def one() -> int:
                async with session.post(f"{server.base_url}/chat/completions", json=body) as r:
                    await r.read()
                    return r.status

            return await asyncio.gather(*(one() for _ in range(200)))

    server.inject(Fault("status", times=10))
    statuses = asyncio.run(burst())
    assert (statuses.count(200), statuses.count(500)) == (190, 10)
    assert server.counts == {"/v1/chat/completions": 200}


# -- admin endpoints -----------------------------------------------------------------------------


def test_admin_endpoints_control_the_server(server: FakeLLMServer) -> None:
    admin = f"{server.root_url}/_fake"
    faults = [{"kind": "status", "status": 503}, {"kind": "rate_limit", "path": "/v1/messages"}]
    assert call("POST", f"{admin}/faults", faults).json()["faults_pending"] == 2
    assert call("POST", f"{admin}/script", ["from the script"]).json()["script_pending"] == 1
    assert chat(server).status == 503
    assert messages(server).status == 429
    assert chat(server).json()["choices"][0]["message"]["content"] == "from the script"
    stats = call("GET", f"{admin}/stats").json()
    assert stats == {
        "counts": {"/v1/chat/completions": 2, "/v1/messages": 1},
        "total": 3,
        "faults_pending": 0,
        "script_pending": 0,
    }
    recorded = call("GET", f"{admin}/requests").json()
    chat_path, messages_path = "/v1/chat/completions", "/v1/messages"
    assert [r["path"] for r in recorded] == [chat_path, messages_path, chat_path]
    assert call("POST", f"{admin}/reset").json()["counts"] == {}
    assert server.counts == {}


def test_admin_rejects_bad_fault_specs(server: FakeLLMServer) -> None:
    reply = call("POST", f"{server.root_url}/_fake/faults", [{"kind": "explode"}])
    assert reply.status == 400
    assert "unknown fault kind" in reply.text
    assert call("POST", f"{server.root_url}/_fake/script", [1, 2]).status == 400


# -- ways to run it ------------------------------------------------------------------------------


def test_runs_inside_an_event_loop() -> None:
    async def scenario() -> tuple[Reply, Reply]:
        async with FakeLLMServer() as server:
            body = {"model": "m", "messages": [{"role": "user", "content": "in loop"}]}
            reply = await fetch("POST", f"{server.base_url}/chat/completions", body)
            return reply, await fetch("GET", f"{server.root_url}/healthz")

    reply, health = asyncio.run(scenario())
    assert reply.json()["choices"][0]["message"]["content"] == "echo: in loop"
    assert health.status == 200


def test_thread_mode_listens_on_return_and_releases_the_port_on_stop() -> None:
    server = FakeLLMServer()
    url = server.start_in_thread()
    assert url == server.base_url
    assert server.port != 0
    assert chat(server).status == 200
    server.stop_in_thread()
    with pytest.raises(aiohttp.ClientConnectionError):
        chat(server)


def test_command_prints_its_url_serves_and_exits_on_sigterm() -> None:
    command = [sys.executable, "-m", "ralph.testing.fake_server", "--port", "0", "--api-key", KEY]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        try:
            readable, _, _ = select.select([process.stdout], [], [], 20)
            assert readable, "the server printed no URL"
            base_url = process.stdout.readline().strip()
            assert base_url.startswith("http://127.0.0.1:")
            assert base_url.endswith("/v1")
            body = {"model": "m", "messages": [{"role": "user", "content": "cli"}]}
            auth = {"Authorization": f"Bearer {KEY}"}
            reply = call("POST", f"{base_url}/chat/completions", body, auth)
            assert reply.json()["choices"][0]["message"]["content"] == "echo: cli"
        finally:
            process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None
        assert process.stderr.read() == ""
