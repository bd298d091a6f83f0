"""Fault specs for the fake LLM server, the schedule that picks them, and how each one answers.

Faults are deterministic: a fault affects the next `times` requests that match its `path`
(or, with `every=N`, every Nth matching request), so a test can assert exact counts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import itertools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, TypeAlias, get_args

from aiohttp import web

from ralph.testing.wire import Provider, error_response

FaultKind: TypeAlias = Literal[
    "status", "rate_limit", "drop", "invalid_json", "wrong_shape", "slow_body", "latency"
]
FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))


@dataclass(frozen=True)
class Fault:
    """One injected failure; the field comments say which kinds read which fields.

    Examples: `Fault("status", status=503, times=2, path="/v1/chat/completions")`,
    `Fault("rate_limit", retry_after=2, retry_after_http_date=True)`,
    `Fault.from_dict({"kind": "drop", "every": 3, "times": None})`.
    """

    kind: FaultKind
    # How many requests it affects; None keeps it active for good.
    times: int | None = 1
    # Only requests to this path ("/v1/messages"; "messages" is shorthand); None matches all.
    path: str | None = None
    # Affect only every Nth matching request (the Nth, 2Nth, ...) instead of the next ones.
    every: int | None = None
    # kind="status": the HTTP status to answer with.
    status: int = 500
    # kind="status" / "rate_limit": the message in the provider-shaped error body.
    message: str | None = None
    # kind="rate_limit": Retry-After in seconds, or a string sent verbatim; None omits it.
    retry_after: float | str | None = 1
    # kind="rate_limit": send now + retry_after seconds as an HTTP date instead of seconds.
    retry_after_http_date: bool = False
    # kind="rate_limit": OpenAI paths answer with the `insufficient_quota` error code.
    insufficient_quota: bool = False
    # kind="slow_body": time to trickle the body over; kind="latency": delay before answering.
    duration_s: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {sorted(FAULT_KINDS)}")
        if self.times is not None and self.times < 1:
            raise ValueError(f"times must be at least 1 or None, got {self.times}")
        if self.every is not None and self.every < 1:
            raise ValueError(f"every must be at least 1, got {self.every}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status, got {self.status}")
        if self.duration_s < 0:
            raise ValueError(f"duration_s must not be negative, got {self.duration_s}")
        if self.path is not None and not self.path.startswith("/"):
            object.__setattr__(self, "path", "/v1/" + self.path)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Fault:
        """Build a fault from JSON-shaped data, rejecting unknown keys with a ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        if "kind" not in spec:
            raise ValueError("a fault needs a 'kind'")
        return cls(**spec)

    @classmethod
    def coerce(cls, spec: Fault | Mapping[str, Any]) -> Fault:
        return spec if isinstance(spec, Fault) else cls.from_dict(spec)


@dataclass
class _Armed:
    fault: Fault
    remaining: int | None
    seen: int = 0


class FaultSchedule:
    """Pending faults in the order they were added; not thread-safe (the server holds a lock)."""

    def __init__(self) -> None:
        self._armed: list[_Armed] = []

    def add(self, faults: Iterable[Fault]) -> None:
        self._armed.extend(_Armed(f, f.times) for f in faults)

    def clear(self) -> None:
        self._armed.clear()

    def __len__(self) -> int:
        return len(self._armed)

    def take(self, path: str) -> Fault | None:
        """The fault for this request, if any: the first armed fault that matches and fires.

        A fault skipped by `every` still counts the request; faults after the one that fires
        do not see it, so at most one fault applies per request.
        """
        if not self._armed:  # the common case on the benchmark path
            return None
        for armed in self._armed:
            fault = armed.fault
            if fault.path is not None and fault.path != path:
                continue
            armed.seen += 1
            if fault.every is not None and armed.seen % fault.every:
                continue
            if armed.remaining is not None:
                armed.remaining -= 1
                if armed.remaining == 0:
                    self._armed.remove(armed)
            return fault
        return None


# A body cut off mid-object, as a proxy that drops an upstream connection would send it.
TRUNCATED_JSON = b'{"id": "fake-truncated", "choices": [{"index": 0, "message": {"role": "assi'


def fault_response(
    request: web.Request, fault: Fault, provider: Provider, wrong_shape: Mapping[str, Any]
) -> web.StreamResponse:
    """The answer to a request hit by a fault whose kind replaces the normal answer."""
    if fault.kind == "status":
        message = fault.message or f"injected fault: HTTP {fault.status}"
        return error_response(provider, fault.status, message)
    if fault.kind == "rate_limit":
        return _rate_limited(provider, fault)
    if fault.kind == "drop":
        _drop(request)
    if fault.kind == "invalid_json":
        return web.Response(body=TRUNCATED_JSON, content_type="application/json")
    if fault.kind == "wrong_shape":
        return web.json_response(dict(wrong_shape))
    raise ValueError(f"fault kind {fault.kind!r} does not replace the answer")


def _rate_limited(provider: Provider, fault: Fault) -> web.Response:
    headers = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = _retry_after_header(fault.retry_after, fault.retry_after_http_date)
    if provider == "openai" and fault.insufficient_quota:
        message = fault.message or "You exceeded your current quota (injected fault)."
        return error_response(
            provider,
            429,
            message,
            code="insufficient_quota",
            error_type="insufficient_quota",
            headers=headers,
        )
    message = fault.message or "Rate limit reached (injected fault)."
    if provider == "openai":
        return error_response(
            provider,
            429,
            message,
            code="rate_limit_exceeded",
            error_type="requests",
            headers=headers,
        )
    return error_response(provider, 429, message, headers=headers)


def _retry_after_header(value: float | str, as_http_date: bool) -> str:
    if isinstance(value, str):
        return value
    if as_http_date:
        return email.utils.formatdate(time.time() + value, usegmt=True)
    return str(int(value)) if float(value).is_integer() else str(value)


def _drop(request: web.Request) -> NoReturn:
    # Closing the transport before anything is written is what the client sees as a server
    # disconnect; the exception only ends the handler, its response can no longer be sent.
    if request.transport is not None:
        request.transport.close()
    raise web.HTTPServiceUnavailable()


async def trickle(request: web.Request, body: bytes, duration_s: float) -> web.StreamResponse:
    """Send the headers now, then the body in pieces spread over `duration_s` seconds."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    await response.prepare(request)
    pieces = max(1, min(len(body), 10))
    bounds = [len(body) * i // pieces for i in range(pieces + 1)]
    for start, end in itertools.pairwise(bounds):
        await asyncio.sleep(duration_s / pieces)
        await response.write(body[start:end])
    await response.write_eof()
    return response
