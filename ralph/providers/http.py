"""What the HTTP providers share: one POST/GET, the mapping of failures to retry classes, and
HttpProvider, the base of the OpenAI and Anthropic providers."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
from yarl import URL

from ralph.fastjson import JSONDecodeError, dumpb, loads
from ralph.keys import KeySource, Secret, kill_key_commands
from ralph.providers.base import AttemptError, Request, Response
from ralph.recipe.build import thaw
from ralph.recipe.model import Agent
from ralph.run.retry import parse_retry_after
from ralph.secrets import redact

_QUOTA_CODES = ("insufficient_quota", "quota_exceeded", "billing_hard_limit_reached")


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: str | URL,
    headers: dict[str, str],
    body: bytes | None,
    timeout: aiohttp.ClientTimeout,
) -> Any:
    """The JSON of a 2xx answer; any other outcome raises AttemptError with its retry class."""
    try:
        # a redirect is not followed: aiohttp would carry custom headers (x-api-key) along,
        # to whatever host the redirect names
        async with session.request(
            method, url, data=body, headers=headers, timeout=timeout, allow_redirects=False
        ) as resp:
            raw = await _body(resp)
            if resp.status >= 300:
                raise _status_error(resp.status, resp.headers, raw)
    except TimeoutError:
        raise AttemptError("timeout", f"no answer within {timeout.total:g}s") from None
    except aiohttp.ClientError as exc:
        raise AttemptError("connection", f"connection failed: {why_not(exc)}") from None
    except UnicodeError:  # the resolver cannot encode the host name (validate catches most)
        raise AttemptError("connection", "connection failed: the host name is not valid") from None
    try:
        return loads(raw)
    except JSONDecodeError as exc:  # orjson's message says where, never what
        raise AttemptError("invalid_response", f"the answer is not valid JSON ({exc})") from None


MAX_ANSWER_BYTES = 32 * 2**20
"""The largest body read from an API: far more than any answer, so that a server gone wrong
(or a proxy serving a file) cannot fill memory."""


async def _body(resp: aiohttp.ClientResponse) -> bytes:
    length = resp.content_length
    # the common case: read in one go; but a compressed body's length is not what it inflates to
    if length is not None and "Content-Encoding" not in resp.headers:
        if length > MAX_ANSWER_BYTES:
            raise _too_large()
        return await resp.read()
    body = bytearray()
    async for chunk in resp.content.iter_chunked(2**16):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise _too_large()
    return bytes(body)


def _too_large() -> AttemptError:
    return AttemptError(
        "invalid_response", f"the answer is larger than {MAX_ANSWER_BYTES // 2**20} MB"
    )


def endpoint(base_url: str | None, path: str) -> URL:
    """`path` under `base_url`, with the base's query string kept after it: an Azure-style
    `.../deployments/gpt4?api-version=2024-06-01` gets `.../gpt4/chat/completions?api-...`."""
    base = URL(base_url or "")
    return base.with_path(base.path.rstrip("/") + path).with_query(base.query)


def why_not(error: aiohttp.ClientError) -> str:
    """What went wrong with a connection, in words: where to and why, when aiohttp knows."""
    if isinstance(error, aiohttp.ClientConnectorError):
        reason = error.os_error.strerror or str(error.os_error) or error.__class__.__name__
        return f"cannot connect to {error.host}:{error.port}: {reason}"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection before it answered"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "the answer was cut off"
    return error.__class__.__name__


def _status_error(status: int, headers: Mapping[str, str], raw: bytes) -> AttemptError:
    retry_after = headers.get("Retry-After")
    if 300 <= status < 400:
        location = headers.get("Location")
        target = f" to {redact(location)}" if location else ""
        return AttemptError(
            "fatal",
            f"HTTP {status}: the API redirects{target}, and ralph does not follow redirects "
            "(the key would go along); set base_url to the address it redirects to",
            status=status,
        )
    api_message = _api_message(raw)
    message = f"HTTP {status}: {api_message}" if api_message else f"HTTP {status}"
    if status == 429:
        quota = any(code in raw.decode("utf-8", "replace") for code in _QUOTA_CODES)
        return AttemptError(
            "429", message, retry_after_s=parse_retry_after(retry_after), quota_exhausted=quota
        )
    if status >= 500:
        return AttemptError("5xx", message, retry_after_s=parse_retry_after(retry_after))
    if status == 408:
        return AttemptError("timeout", message)
    if status == 409:
        # a conflict is transient on the providers that send it (a lock, a replica catching up)
        return AttemptError("5xx", message)
    return AttemptError("fatal", message, status=status)


def _api_message(raw: bytes) -> str | None:
    """The provider's own error text, in the shapes OpenAI-compatible servers use: OpenAI's
    and Anthropic's `error.message`, vLLM's top-level `message`, TGI's `error` string,
    FastAPI's `detail`."""
    try:
        data = loads(raw)
    except JSONDecodeError:
        return None
    return _message_in(data)


def _message_in(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    found = error.get("message") if isinstance(error, dict) else error
    for text in (found, data.get("message"), data.get("detail")):
        if isinstance(text, str) and text.strip():
            # APIs echo what they were sent, keys included ("invalid token sk-...")
            return redact(text)[:500]  # whole, or a cut key would show
    return None


def token_count(usage: Any, name: str) -> int:
    """A count from an answer's `usage`; servers that leave it out, null or garbled count 0."""
    value = usage.get(name) if isinstance(usage, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        return 0
    return int(value)


def invalid(what: str, data: Any) -> AttemptError:
    """The answer (`data`) lacks `what`; a server that put an error in a 200 says why."""
    said = _message_in(data)
    because = f" (the API says: {said})" if said else ""
    return AttemptError("invalid_response", f"the answer has no {what}{because}")


async def probe_models(
    session: aiohttp.ClientSession,
    base_url: str | None,
    headers: dict[str, str],
    timeout: aiohttp.ClientTimeout,
) -> str | None:
    """An authenticated GET {base_url}/models: it proves the endpoint and the key and costs
    nothing. A 429 proves them too, unless it says the quota is gone."""
    url = endpoint(base_url, "/models")
    try:
        await send(session, "GET", url, headers, None, timeout)
    except AttemptError as exc:
        if exc.kind == "429" and not exc.quota_exhausted:
            return None
        return str(exc)
    return None


class HttpProvider:
    """A JSON-over-HTTP provider on the run's one session.

    Subclasses say where to post (`path`), how to authenticate (`auth_headers`), what to send
    (`body`) and how to read the answer (`parse`). A 401 re-reads the key once, so a key
    rotated during a long run (a refreshed secret file, a new vault lease) is picked up; the
    engine sends the request again, as an attempt it counts and budgets like any other.
    """

    path = ""

    def __init__(self, agent: Agent, keys: KeySource, session: aiohttp.ClientSession) -> None:
        self.agent = agent
        self.session = session
        # parsed once (validate checked it parses), not by aiohttp on every request
        self.url = endpoint(agent.base_url, self.path)
        self.timeout = aiohttp.ClientTimeout(total=agent.timeout_s)
        self._keys = keys
        self._refreshing = asyncio.Lock()  # one re-read of the key at a time
        self.headers = self._headers(keys.get())
        self.params = thaw(agent.params)  # every request carries the agent's params: thaw once

    def auth_headers(self, key: Secret | None) -> dict[str, str]:
        raise NotImplementedError

    def body(self, request: Request) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, data: Any) -> Response:
        raise NotImplementedError

    async def complete(self, request: Request) -> Response:
        headers = self.headers
        try:
            data = await send(
                self.session, "POST", self.url, headers, dumpb(self.body(request)), self.timeout
            )
        except AttemptError as error:
            error.key_refreshed = error.status == 401 and await self._refresh_key(headers)
            raise
        return self.parse(data)

    async def _refresh_key(self, sent: dict[str, str]) -> bool:
        """After a 401 to a request `sent` with these headers: whether another key is in use
        now, read by a request that got its 401 first or read again here.

        Read off the event loop (an api_key_command may take seconds), so the run still hears
        Ctrl-C meanwhile; a Ctrl-C kills the command rather than wait for it."""
        async with self._refreshing:
            if self.headers is not sent:
                return True
            try:
                fresh = await asyncio.to_thread(self._keys.reread)
            except asyncio.CancelledError:
                kill_key_commands()
                raise
            if fresh is None:
                return False
            self.headers = self._headers(fresh)
            return True

    async def health(self) -> str | None:
        return await probe_models(self.session, self.agent.base_url, self.headers, self.timeout)

    def _headers(self, key: Secret | None) -> dict[str, str]:
        return {"Content-Type": "application/json", **self.auth_headers(key)}
