"""The OpenAI and Anthropic providers over real HTTP: every outcome mapped to its retry class.

Each test starts the shipped fake server on the test's own event loop, injects a fault, and
calls the provider through a real aiohttp session, as a run does.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from ralph.keys import KeySource, Secret
from ralph.providers import http
from ralph.providers.anthropic import AnthropicProvider
from ralph.providers.base import AttemptError, Provider, Request, Response
from ralph.providers.http import endpoint, send
from ralph.providers.openai import OpenAIProvider
from ralph.recipe.build import freeze
from ralph.recipe.model import Agent
from ralph.testing import FakeLLMServer, Fault

KEY = "sk-test-http-0123456789abcdefSECRET"
PROVIDERS = ["openai", "anthropic"]
REQUEST = Request(prompt="Say hi\nplease", system="Be brief.", model="m", params=freeze({}))


def make(
    kind: str, base_url: str, session: aiohttp.ClientSession, *, key: str = KEY, timeout: float = 5
) -> Provider:
    agent = Agent(
        name="writer",
        provider=kind,
        base_url=base_url,
        model="m",
        timeout_s=timeout,
        params=freeze({"max_tokens": 20}),
    )
    cls = OpenAIProvider if kind == "openai" else AnthropicProvider
    return cls(agent, KeySource(agent, initial=Secret(key)), session)


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


Scenario = Callable[[FakeLLMServer, aiohttp.ClientSession], Awaitable[Any]]


def against_fake(scenario: Scenario) -> Any:
    async def main() -> Any:
        async with FakeLLMServer(api_key=KEY) as server, aiohttp.ClientSession() as session:
            return await scenario(server, session)

    return asyncio.run(main())


def failure(kind: str, *faults: Fault, timeout: float = 5, key: str = KEY) -> AttemptError:
    """The AttemptError one completion raises when `faults` are injected."""

    async def scenario(server: FakeLLMServer, session: aiohttp.ClientSession) -> AttemptError:
        server.inject(*faults)
        provider = make(kind, server.base_url, session, key=key, timeout=timeout)
        with pytest.raises(AttemptError) as caught:
            await provider.complete(REQUEST)
        return caught.value

    error: AttemptError = against_fake(scenario)
    return error


# -- success -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PROVIDERS)
def test_an_answer_with_its_token_usage(kind: str) -> None:
    async def scenario(server: FakeLLMServer, session: aiohttp.ClientSession) -> Response:
        return await make(kind, server.base_url, session).complete(REQUEST)

    response = against_fake(scenario)
    assert response.text == "echo: Say hi"
    assert response.input_tokens > 0 and response.output_tokens == 3


# -- failures, by retry class ------------------------------------------------------------------


@pytest.mark.parametrize("kind", PROVIDERS)
@pytest.mark.parametrize("status", [500, 502, 503, 529])
def test_server_errors_are_5xx(kind: str, status: int) -> None:
    error = failure(kind, Fault("status", status=status, message="upstream is sad"))
    assert error.kind == "5xx"
    assert str(error) == f"HTTP {status}: upstream is sad"


@pytest.mark.parametrize("kind", PROVIDERS)
def test_rate_limit_is_429_with_retry_after_seconds(kind: str) -> None:
    error = failure(kind, Fault("rate_limit", retry_after=7))
    assert error.kind == "429"
    assert error.retry_after_s == 7.0
    assert not error.quota_exhausted
    assert "Rate limit reached" in str(error)


@pytest.mark.parametrize("kind", PROVIDERS)
def test_rate_limit_with_fractional_retry_after(kind: str) -> None:
    assert failure(kind, Fault("rate_limit", retry_after=0.5)).retry_after_s == 0.5


@pytest.mark.parametrize("kind", PROVIDERS)
def test_rate_limit_with_retry_after_as_an_http_date(kind: str) -> None:
    error = failure(kind, Fault("rate_limit", retry_after=30, retry_after_http_date=True))
    assert error.kind == "429"
    assert error.retry_after_s is not None and 28 <= error.retry_after_s <= 30


@pytest.mark.parametrize("kind", PROVIDERS)
def test_rate_limit_without_retry_after(kind: str) -> None:
    error = failure(kind, Fault("rate_limit", retry_after=None))
    assert error.kind == "429" and error.retry_after_s is None


def test_insufficient_quota_is_marked_exhausted() -> None:
    error = failure("openai", Fault("rate_limit", insufficient_quota=True, retry_after=None))
    assert error.kind == "429"
    assert error.quota_exhausted
    assert "exceeded your current quota" in str(error)


@pytest.mark.parametrize("kind", PROVIDERS)
@pytest.mark.parametrize(
    ("status", "message"),
    [(400, "max_tokens: must be positive"), (401, "bad credentials"), (404, "no such model")],
)
def test_client_errors_are_fatal_with_the_apis_own_message(
    kind: str, status: int, message: str
) -> None:
    error = failure(kind, Fault("status", status=status, message=message))
    assert error.kind == "fatal"
    assert str(error) == f"HTTP {status}: {message}"


@pytest.mark.parametrize("kind", PROVIDERS)
def test_a_wrong_key_is_fatal_and_never_echoed(kind: str) -> None:
    wrong = "sk-wrong-key-0123456789abcdef"
    error = failure(kind, key=wrong)
    assert error.kind == "fatal"
    assert str(error).startswith("HTTP 401: ")
    assert wrong not in str(error)


@pytest.mark.parametrize("kind", PROVIDERS)
def test_a_key_echoed_by_the_api_is_redacted(kind: str) -> None:
    error = failure(kind, Fault("status", status=400, message=f"invalid token {KEY} in body"))
    assert error.kind == "fatal"
    assert KEY not in str(error)
    assert str(error) == "HTTP 400: invalid token [REDACTED:openai] in body"


@pytest.mark.parametrize("kind", PROVIDERS)
def test_a_long_message_is_cut_after_the_key_in_it_is_masked(kind: str) -> None:
    # cut first, a key straddling the cut would show its first characters unmasked
    message = "x" * 485 + f" {KEY}"
    error = failure(kind, Fault("status", status=400, message=message))
    assert KEY[:12] not in str(error)
    assert str(error).startswith("HTTP 400: xxx") and len(str(error)) <= len("HTTP 400: ") + 500


@pytest.mark.parametrize("kind", PROVIDERS)
def test_a_dropped_connection_is_connection(kind: str) -> None:
    error = failure(kind, Fault("drop"))
    assert error.kind == "connection"
    assert str(error) == "connection failed: the server closed the connection before it answered"


@pytest.mark.parametrize("kind", PROVIDERS)
def test_a_host_name_the_resolver_cannot_encode_is_connection_not_a_crash(kind: str) -> None:
    async def scenario(server: FakeLLMServer, session: aiohttp.ClientSession) -> AttemptError:
        provider = make(kind, f"http://{'a' * 64}.invalid/v1", session)
        with pytest.raises(AttemptError) as caught:
            await provider.complete(REQUEST)
        return caught.value

    error: AttemptError = against_fake(scenario)
    assert (error.kind, str(error)) == (
        "connection",
        "connection failed: the host name is not valid",
    )


@pytest.mark.parametrize("kind", PROVIDERS)
def test_a_truncated_body_is_an_invalid_response(kind: str) -> None:
    error = failure(kind, Fault("invalid_json"))
    assert error.kind == "invalid_response"
    assert str(error).startswith("the answer is not valid JSON (unexpected end of data")


@pytest.mark.parametrize("kind", PROVIDERS)
def test_json_of_the_wrong_shape_is_an_invalid_response(kind: str) -> None:
    error = failure(kind, Fault("wrong_shape"))
    assert error.kind == "invalid_response"
    assert str(error).startswith("the answer has no ")


@pytest.mark.parametrize("kind", PROVIDERS)
def test_a_slow_answer_past_the_timeout_is_timeout(kind: str) -> None:
    error = failure(kind, Fault("latency", duration_s=0.15), timeout=0.05)
    assert error.kind == "timeout"
    assert str(error) == "no answer within 0.05s"


@pytest.mark.parametrize("kind", PROVIDERS)
def test_a_body_that_trickles_in_past_the_timeout_is_timeout(kind: str) -> None:
    assert failure(kind, Fault("slow_body", duration_s=0.15), timeout=0.05).kind == "timeout"


@pytest.mark.parametrize("kind", PROVIDERS)
def test_nothing_listening_is_connection(kind: str, unused_port: int) -> None:
    async def scenario() -> AttemptError:
        async with aiohttp.ClientSession() as session:
            provider = make(kind, f"http://127.0.0.1:{unused_port}/v1", session)
            with pytest.raises(AttemptError) as caught:
                await provider.complete(REQUEST)
            return caught.value

    error = asyncio.run(scenario())
    assert error.kind == "connection"
    assert str(error).startswith(f"connection failed: cannot connect to 127.0.0.1:{unused_port}: ")


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ({"object": "error", "message": "The model `x` does not exist."}, "The model `x` does"),
        ({"error": "model 'x' not found"}, "model 'x' not found"),
        ({"detail": "Not Found"}, "Not Found"),
    ],
)
def test_error_bodies_of_other_openai_compatible_servers_are_shown(body: Any, shown: str) -> None:
    error = serve_bodies("openai", body, status=404)
    assert isinstance(error, AttemptError) and str(error).startswith(f"HTTP 404: {shown}")


def test_a_base_url_with_a_query_keeps_it_after_the_path() -> None:
    base = "https://example.test/openai/deployments/gpt4?api-version=2024-06-01"
    assert str(endpoint(base, "/chat/completions")) == (
        "https://example.test/openai/deployments/gpt4/chat/completions?api-version=2024-06-01"
    )
    assert str(endpoint("http://h:1/v1/", "/models")) == "http://h:1/v1/models"


# -- health ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PROVIDERS)
def test_health_passes_with_the_right_key(kind: str) -> None:
    async def scenario(server: FakeLLMServer, session: aiohttp.ClientSession) -> Any:
        return await make(kind, server.base_url, session).health()

    assert against_fake(scenario) is None


@pytest.mark.parametrize("kind", PROVIDERS)
def test_health_fails_with_a_bad_key_and_says_why(kind: str) -> None:
    async def scenario(server: FakeLLMServer, session: aiohttp.ClientSession) -> Any:
        return await make(kind, server.base_url, session, key="sk-bad-0123456789abcdefgh").health()

    reason = against_fake(scenario)
    assert reason is not None and reason.startswith("HTTP 401: ")
    assert "sk-bad" not in reason


def test_health_is_an_authenticated_free_get_of_models() -> None:
    async def scenario(server: FakeLLMServer, session: aiohttp.ClientSession) -> list[Any]:
        for kind in PROVIDERS:
            assert await make(kind, server.base_url, session).health() is None
        return [(r.method, r.path, r.headers) for r in server.requests]

    (openai, anthropic) = against_fake(scenario)
    assert openai[:2] == anthropic[:2] == ("GET", "/v1/models")
    assert openai[2]["authorization"].startswith("Bearer ")
    assert "x-api-key" in anthropic[2] and "anthropic-version" in anthropic[2]


@pytest.mark.parametrize("kind", PROVIDERS)
def test_health_passes_on_a_rate_limit_but_not_on_an_exhausted_quota(kind: str) -> None:
    async def scenario(server: FakeLLMServer, session: aiohttp.ClientSession) -> list[Any]:
        provider = make(kind, server.base_url, session)
        server.inject(Fault("rate_limit", retry_after=1))
        limited = await provider.health()
        server.inject(Fault("rate_limit", insufficient_quota=True))
        return [limited, await provider.health()]

    limited, exhausted = against_fake(scenario)
    assert limited is None
    if kind == "openai":  # only OpenAI says a quota is gone in a 429's body
        assert exhausted is not None and "429" in exhausted


@pytest.mark.parametrize("kind", PROVIDERS)
def test_health_when_nothing_listens(kind: str, unused_port: int) -> None:
    async def scenario() -> str | None:
        async with aiohttp.ClientSession() as session:
            return await make(kind, f"http://127.0.0.1:{unused_port}/v1", session).health()

    reason = asyncio.run(scenario())
    assert reason is not None and reason.startswith("connection failed")


@pytest.mark.parametrize("kind", PROVIDERS)
def test_a_redirect_is_not_followed_so_the_key_stays_home(kind: str) -> None:
    async def scenario(server: FakeLLMServer, session: aiohttp.ClientSession) -> Any:
        async def elsewhere(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(f"{server.root_url}{request.path}")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", elsewhere)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        try:
            provider = make(kind, f"http://127.0.0.1:{runner.addresses[0][1]}/v1", session)
            with pytest.raises(AttemptError) as caught:
                await provider.complete(REQUEST)
            return caught.value, await provider.health(), sum(server.counts.values())
        finally:
            await runner.cleanup()

    error, health, reached = against_fake(scenario)
    assert reached == 0  # the server redirected to never saw the key
    assert error.kind == "fatal"
    assert str(error).startswith("HTTP 307: the API redirects to http://127.0.0.1:")
    assert "does not follow redirects" in str(error) and health and "HTTP 307" in health


# -- odd but real-world answers, from a tiny server of our own ----------------------------------


def serve_bodies(
    kind: str, body: Any, status: int = 200, *, chunked: bool = False, gzipped: bool = False
) -> Response | AttemptError:
    """Complete one request against a server that answers `body` with `status`: JSON-encoded,
    or sent as it is when it is bytes; `chunked`, without a Content-Length; `gzipped`, with a
    Content-Length of the compressed body."""
    path = "/v1/chat/completions" if kind == "openai" else "/v1/messages"
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()

    async def handler(request: web.Request) -> web.StreamResponse:
        if gzipped:
            headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
            return web.Response(body=gzip.compress(raw), status=status, headers=headers)
        if not chunked:
            return web.Response(body=raw, status=status, content_type="application/json")
        response = web.StreamResponse(status=status)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(raw), 2**16):
            await response.write(raw[start : start + 2**16])
        await response.write_eof()
        return response

    async def main() -> Response | AttemptError:
        app = web.Application()
        app.router.add_post(path, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as session:
                provider = make(kind, f"http://127.0.0.1:{port}/v1", session)
                try:
                    return await provider.complete(REQUEST)
                except AttemptError as error:
                    return error
        finally:
            await runner.cleanup()

    return asyncio.run(main())


@pytest.mark.parametrize(
    "usage",
    [
        None,
        {},
        {"prompt_tokens": None, "completion_tokens": None},
        [],
        "n/a",
        {"prompt_tokens": "x"},
    ],
)
def test_openai_usage_missing_or_malformed_counts_zero(usage: Any) -> None:
    body = {"choices": [{"message": {"content": "hi"}}], "usage": usage}
    assert serve_bodies("openai", body) == Response("hi", 0, 0)


@pytest.mark.parametrize(
    "usage", [None, {}, {"input_tokens": None, "output_tokens": None}, [], {"input_tokens": -1}]
)
def test_anthropic_usage_missing_or_malformed_counts_zero(usage: Any) -> None:
    body = {"content": [{"type": "text", "text": "hi"}], "usage": usage}
    assert serve_bodies("anthropic", body) == Response("hi", 0, 0)


def test_anthropic_joins_text_blocks_and_skips_others() -> None:
    body = {
        "content": [
            {"type": "thinking", "thinking": "hmm"},
            {"type": "text", "text": "one "},
            {"type": "text", "text": "two"},
        ],
        "usage": {"input_tokens": 5, "output_tokens": 2},
    }
    assert serve_bodies("anthropic", body) == Response("one two", 5, 2)


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("openai", {"choices": []}),
        ("openai", {"choices": [{"message": {"content": None}}]}),
        ("openai", ["not", "an", "object"]),
        ("openai", "just a string"),
        ("anthropic", {"content": "not blocks"}),
        ("anthropic", {"content": [{"type": "text", "text": 3}]}),
        ("anthropic", [1, 2]),
    ],
)
def test_shapes_without_an_answer_are_invalid_responses(kind: str, body: Any) -> None:
    result = serve_bodies(kind, body)
    assert isinstance(result, AttemptError)
    assert result.kind == "invalid_response"


@pytest.mark.parametrize(("chunked", "gzipped"), [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("status", [200, 500])
def test_an_answer_past_the_size_limit_is_refused_not_read_whole(
    monkeypatch: pytest.MonkeyPatch, chunked: bool, gzipped: bool, status: int
) -> None:
    """Also when it comes compressed: its Content-Length is then not what it inflates to."""
    monkeypatch.setattr(http, "MAX_ANSWER_BYTES", 2**20)
    text = "x" * (2**20 + 1)
    body = {"choices": [{"message": {"content": text}}]}
    result = serve_bodies("openai", body, status, chunked=chunked, gzipped=gzipped)
    assert isinstance(result, AttemptError)
    assert (result.kind, str(result)) == ("invalid_response", "the answer is larger than 1 MB")
    fits = {"choices": [{"message": {"content": "x" * 2**19}}]}
    kept = serve_bodies("openai", fits, chunked=chunked, gzipped=gzipped)
    assert kept == Response("x" * 2**19, 0, 0)


@pytest.mark.parametrize("kind", PROVIDERS)
def test_an_error_inside_a_200_is_shown(kind: str) -> None:
    result = serve_bodies(kind, {"error": {"message": f"upstream overloaded, key {KEY}"}})
    assert isinstance(result, AttemptError) and result.kind == "invalid_response"
    assert str(result).endswith("(the API says: upstream overloaded, key [REDACTED:openai])")


def test_an_html_error_page_falls_back_to_the_status() -> None:
    result = serve_bodies("openai", b"<html>Bad Gateway</html>", status=502)
    assert isinstance(result, AttemptError)
    assert (result.kind, str(result)) == ("5xx", "HTTP 502")


@pytest.mark.parametrize(("status", "kind"), [(408, "timeout"), (409, "5xx"), (403, "fatal")])
def test_other_statuses(status: int, kind: str) -> None:
    result = serve_bodies("openai", {"error": {"message": "nope"}}, status=status)
    assert isinstance(result, AttemptError)
    assert (result.kind, str(result)) == (kind, f"HTTP {status}: nope")


def test_send_returns_the_json_of_a_2xx() -> None:
    async def scenario(server: FakeLLMServer, session: aiohttp.ClientSession) -> Any:
        return await send(
            session,
            "GET",
            f"{server.base_url}/models",
            {"Authorization": f"Bearer {KEY}"},
            None,
            aiohttp.ClientTimeout(total=5),
        )

    data = against_fake(scenario)
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == ["gpt-4o-mini", "claude-haiku-4-5"]


@pytest.mark.parametrize("kind", PROVIDERS)
def test_a_401_rereads_a_rotated_key_once(kind: str, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.touch(mode=0o600)
    cls = OpenAIProvider if kind == "openai" else AnthropicProvider
    stale = Secret("sk-stale-key-00000000000000")

    async def scenario(server: FakeLLMServer, session: aiohttp.ClientSession) -> list[Any]:
        agent = Agent(
            name="w",
            provider=kind,
            model="m",
            base_url=server.base_url,
            api_key_file=key_file,
            params=freeze({}),
        )
        key_file.write_text("sk-also-wrong-0000000000000")
        provider = cls(agent, KeySource(agent, initial=stale), session)
        refused = []
        for _ in range(2):  # the key read again is refused too: no third key is looked for
            with pytest.raises(AttemptError) as caught:
                await provider.complete(Request(prompt="hello", model="m"))
            refused.append(caught.value.key_refreshed)
        key_file.write_text(KEY)  # the secret was rotated after the run read it
        provider = cls(agent, KeySource(agent, initial=stale), session)
        with pytest.raises(AttemptError):
            await provider.complete(Request(prompt="hello", model="m"))
        answer = await provider.complete(Request(prompt="hello", model="m"))
        return [refused, answer.text, sum(server.counts.values())]

    refused, text, sent = against_fake(scenario)
    assert refused == [True, False], "the engine is told to send again once: the key changed"
    assert text == "echo: hello", "the request sent again goes with the new key"
    assert sent == 4, "the provider itself never sends twice"


def test_requests_in_flight_when_the_key_rotates_are_all_sent_again(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.touch(mode=0o600)
    key_file.write_text(KEY)

    async def scenario(server: FakeLLMServer, session: aiohttp.ClientSession) -> list[Any]:
        agent = Agent(
            name="w",
            provider="openai",
            model="m",
            base_url=server.base_url,
            api_key_file=key_file,
            params=freeze({}),
        )
        stale = Secret("sk-stale-key-00000000000000")
        provider = OpenAIProvider(agent, KeySource(agent, initial=stale), session)
        refused = await asyncio.gather(
            *(provider.complete(Request(prompt=f"p{n}", model="m")) for n in range(3)),
            return_exceptions=True,
        )
        return [getattr(error, "key_refreshed", None) for error in refused]

    # one of them read the key again; the others were sent with the old one all the same
    assert against_fake(scenario) == [True, True, True]


def test_a_refusal_says_what_the_model_said_and_is_not_retried() -> None:
    body = {
        "choices": [{"message": {"role": "assistant", "content": None, "refusal": "I can't help."}}]
    }
    error = serve_bodies("openai", body)
    assert isinstance(error, AttemptError)
    assert (error.kind, str(error)) == ("fatal", "the model refused: I can't help.")
