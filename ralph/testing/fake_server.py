"""A fake OpenAI/Anthropic HTTP server on 127.0.0.1, with scripted answers and fault injection.

ralph's own tests and users' CI run `ralph apply` against it instead of mocking a client. It
serves `POST /v1/chat/completions` (OpenAI), `POST /v1/messages` (Anthropic), `GET /v1/models`
and `GET /healthz`, plus `/_fake/*` admin endpoints for control from another process. The
default answer is `"echo: " + the first non-empty line of the last user message`.

In a test, with the server on a background thread so a subprocess can reach it:

    from ralph.testing import Fault, FakeLLMServer

    with FakeLLMServer(api_key="sk-test").in_thread() as server:
        server.script(["draft", "done LOOP_COMPLETE"])
        server.inject(Fault("status", status=500), Fault("rate_limit", retry_after=1))
        recipe.write_text(RECIPE.replace("BASE_URL", server.base_url))
        subprocess.run(["ralph", "apply", str(recipe)], env={**os.environ, "OPENAI_API_KEY": ...})
        assert server.counts["/v1/chat/completions"] == 4
        assert server.requests[-1].body["model"] == "gpt-4o-mini"

Inside a running event loop, `async with FakeLLMServer() as server: ...` does the same. From a
shell: `python -m ralph.testing.fake_server --port 0 [--api-key K] [--latency 0.01]` prints the
base URL once listening and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import itertools
import json
import signal
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web

from ralph.testing import wire
from ralph.testing.faults import Fault, FaultSchedule, fault_response, trickle
from ralph.testing.wire import Provider, error_response

Responder = Callable[[dict[str, Any]], str]

DEFAULT_MODELS = ("gpt-4o-mini", "claude-haiku-4-5")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it; header names are lower-case."""

    method: str
    path: str
    body: Any  # the parsed JSON body, or None when it was empty or not JSON
    headers: dict[str, str]
    peer: str = ""  # the client's host:port: requests on one kept-alive connection share it


class FakeLLMServer:
    """The fake server; every public method is safe to call from any thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        latency_s: float = 0.0,
        responder: Responder | None = None,
        models: Sequence[str] = DEFAULT_MODELS,
        max_recorded: int = 10_000,
    ) -> None:
        self.host = host
        self.api_key = api_key
        self.latency_s = latency_s  # added before every /v1 answer
        self.responder = responder  # used when no scripted answer is left
        self.models = tuple(models)
        self._port = port
        # Handlers run on the server's loop, the public methods on the caller's thread.
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._requests: deque[RecordedRequest] = deque(maxlen=max_recorded)
        self._faults = FaultSchedule()
        self._script: deque[str] = deque()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._thread_stop: Callable[[], None] | None = None

    # -- control and observation ------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def root_url(self) -> str:
        """`http://HOST:PORT`, where `/healthz` and the `/_fake/*` admin endpoints live."""
        return f"http://{self.host}:{self._port}"

    @property
    def base_url(self) -> str:
        """What a client uses as its base URL: `http://HOST:PORT/v1`."""
        return f"{self.root_url}/v1"

    @property
    def counts(self) -> dict[str, int]:
        """Requests per path (faulted and refused ones included), admin endpoints excluded."""
        with self._lock:
            return dict(self._counts)

    @property
    def requests(self) -> list[RecordedRequest]:
        """The most recent requests (up to `max_recorded`), oldest first."""
        with self._lock:
            return list(self._requests)

    def script(self, answers: Iterable[str]) -> None:
        """Queue answer texts for the next completions on any path, before the default."""
        if isinstance(answers, str):
            raise TypeError("script() takes a list of answers, not one string")
        with self._lock:
            self._script.extend(answers)

    def inject(self, *faults: Fault | Mapping[str, Any]) -> None:
        """Queue faults for the /v1 paths; each applies to the next request(s) it matches."""
        parsed = [Fault.coerce(f) for f in faults]
        with self._lock:
            self._faults.add(parsed)

    def reset(self) -> None:
        """Forget counts, recorded requests, pending faults and scripted answers."""
        with self._lock:
            self._counts.clear()
            self._requests.clear()
            self._faults.clear()
            self._script.clear()
            self._ids = itertools.count(1)

    # -- running in the current event loop ----------------------------------------------------

    async def start(self) -> str:
        """Listen; returns the base URL once the socket accepts connections."""
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, backlog=1024)
        await site.start()
        self._runner = runner
        self._port = runner.addresses[0][1]
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeLLMServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- running on a background thread ---------------------------------------------------------

    def start_in_thread(self) -> str:
        """Serve from a daemon thread with its own loop; returns the base URL once listening."""
        if self._thread is not None:
            raise RuntimeError("the fake server is already running in a thread")
        ready: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve_in_thread(ready),), daemon=True
        )
        self._thread.start()
        try:
            return ready.result()
        except BaseException:
            self._thread.join()
            self._thread = None
            raise

    def stop_in_thread(self) -> None:
        if self._thread is None or self._thread_stop is None:
            return
        self._thread_stop()
        self._thread.join()
        self._thread = self._thread_stop = None

    @contextmanager
    def in_thread(self) -> Iterator[FakeLLMServer]:
        """`with FakeLLMServer().in_thread() as server:` serves for the block's duration."""
        self.start_in_thread()
        try:
            yield self
        finally:
            self.stop_in_thread()

    async def _serve_in_thread(self, ready: concurrent.futures.Future[str]) -> None:
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        try:
            url = await self.start()
        except Exception as exc:
            ready.set_exception(exc)
            return

        def request_stop() -> None:
            loop.call_soon_threadsafe(stopped.set)

        self._thread_stop = request_stop
        ready.set_result(url)
        try:
            await stopped.wait()
        finally:
            await self.stop()

    # -- HTTP ---------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/_fake/stats", self._admin_stats)
        app.router.add_get("/_fake/requests", self._admin_requests)
        app.router.add_post("/_fake/faults", self._admin_faults)
        app.router.add_post("/_fake/script", self._admin_script)
        app.router.add_post("/_fake/reset", self._admin_reset)
        return app

    def _admit(self, request: web.Request, body: Any, *, may_fault: bool) -> Fault | None:
        """Count and record the request, then pick its fault (refused requests get none)."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        peer = request.transport.get_extra_info("peername") if request.transport else None
        where = f"{peer[0]}:{peer[1]}" if peer else ""
        record = RecordedRequest(request.method, request.path, body, headers, where)
        with self._lock:
            self._counts[record.path] += 1
            self._requests.append(record)
            return self._faults.take(record.path) if may_fault else None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, "openai")

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, "anthropic")

    async def _complete(self, request: web.Request, provider: Provider) -> web.StreamResponse:
        body = wire.parse_json(await request.read())
        refusal = self._refuse(request, provider) or wire.check_body(body, provider)
        fault = self._admit(request, body, may_fault=refusal is None)
        if refusal is not None:
            await self._pause()
            return refusal

        def answer() -> dict[str, Any]:
            return wire.completion(provider, next(self._ids), body, self._answer(body))

        wrong = wire.wrong_shape(provider, body["model"])
        return await self._reply(request, answer, fault, provider, wrong)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        # Both providers list models here; the error shape follows the caller's headers.
        provider: Provider = "anthropic" if "anthropic-version" in request.headers else "openai"
        refusal = self._refuse(request, provider, any_key_header=True)
        fault = self._admit(request, None, may_fault=refusal is None)
        if refusal is not None:
            await self._pause()
            return refusal
        return await self._reply(
            request, lambda: wire.model_list(self.models), fault, provider, {"object": "list"}
        )

    async def _reply(
        self,
        request: web.Request,
        answer: Callable[[], dict[str, Any]],
        fault: Fault | None,
        provider: Provider,
        wrong_shape: Mapping[str, Any],
    ) -> web.StreamResponse:
        """Apply the global latency and the request's fault, then answer."""
        await self._pause()
        if fault is not None and fault.kind == "latency":
            await asyncio.sleep(fault.duration_s)
        elif fault is not None and fault.kind != "slow_body":
            return fault_response(request, fault, provider, wrong_shape)
        data = json.dumps(answer()).encode()
        if fault is not None and fault.kind == "slow_body":
            return await trickle(request, data, fault.duration_s)
        return web.Response(body=data, content_type="application/json")

    async def _pause(self) -> None:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        self._admit(request, None, may_fault=False)
        return web.Response(text="ok")

    def _refuse(
        self, request: web.Request, provider: Provider, *, any_key_header: bool = False
    ) -> web.Response | None:
        """The 401/400 a real provider sends for a missing key or version header, if due."""
        if self.api_key is not None:
            bearer = request.headers.get("Authorization") == f"Bearer {self.api_key}"
            x_api_key = request.headers.get("x-api-key") == self.api_key
            if provider == "openai" and not (bearer or (any_key_header and x_api_key)):
                message = "Incorrect API key provided (fake server)."
                return error_response(provider, 401, message, code="invalid_api_key")
            if provider == "anthropic" and not (x_api_key or (any_key_header and bearer)):
                return error_response(provider, 401, "invalid x-api-key")
        if provider == "anthropic" and "anthropic-version" not in request.headers:
            return error_response(provider, 400, "anthropic-version: header is required")
        return None

    def _answer(self, body: dict[str, Any]) -> str:
        with self._lock:
            if self._script:
                return self._script.popleft()
        if self.responder is not None:
            return self.responder(body)
        return wire.echo_answer(body)

    # -- admin --------------------------------------------------------------------------------

    async def _admin_stats(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            stats = {
                "counts": dict(self._counts),
                "total": sum(self._counts.values()),
                "faults_pending": len(self._faults),
                "script_pending": len(self._script),
            }
        return web.json_response(stats)

    async def _admin_requests(self, request: web.Request) -> web.StreamResponse:
        return web.json_response([dataclasses.asdict(r) for r in self.requests])

    async def _admin_faults(self, request: web.Request) -> web.StreamResponse:
        specs = wire.parse_json(await request.read())
        if isinstance(specs, dict):
            specs = [specs]
        if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
            raise web.HTTPBadRequest(text="expected a JSON list of fault objects")
        try:
            self.inject(*specs)
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return await self._admin_stats(request)

    async def _admin_script(self, request: web.Request) -> web.StreamResponse:
        answers = wire.parse_json(await request.read())
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise web.HTTPBadRequest(text="expected a JSON list of answer strings")
        self.script(answers)
        return await self._admin_stats(request)

    async def _admin_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return await self._admin_stats(request)


# -- command line -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m ralph.testing.fake_server`: print the base URL, serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m ralph.testing.fake_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", help="require this key (Bearer or x-api-key)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to answers")
    args = parser.parse_args(argv)
    server = FakeLLMServer(args.host, args.port, api_key=args.api_key, latency_s=args.latency)
    asyncio.run(_serve_until_signal(server))
    return 0


async def _serve_until_signal(server: FakeLLMServer) -> None:
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    async with server:
        print(server.base_url, flush=True)
        await stopped.wait()


if __name__ == "__main__":
    raise SystemExit(main())
