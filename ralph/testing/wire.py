"""The OpenAI and Anthropic wire formats, as far as the fake server speaks them."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any, Literal, TypeAlias

from aiohttp import web

Provider: TypeAlias = Literal["openai", "anthropic"]

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error_response(
    provider: Provider,
    status: int,
    message: str,
    *,
    code: str | None = None,
    error_type: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An error in the body shape the provider's own API uses."""
    body: dict[str, Any]
    if provider == "anthropic":
        fallback = "api_error" if status >= 500 else "invalid_request_error"
        kind = error_type or _ANTHROPIC_ERROR_TYPES.get(status, fallback)
        body = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        kind = error_type or ("server_error" if status >= 500 else "invalid_request_error")
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def parse_json(raw: bytes) -> Any:
    """The decoded body, or None when it is empty or not JSON."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def check_body(body: Any, provider: Provider) -> web.Response | None:
    """A 400 for bodies the real API would reject before generating anything."""
    required: dict[str, type] = {"model": str, "messages": list}
    if provider == "anthropic":
        required["max_tokens"] = int
    if not isinstance(body, dict):
        return error_response(provider, 400, "the request body must be a JSON object")
    for key, kind in required.items():
        if not isinstance(body.get(key), kind):
            return error_response(provider, 400, f"{key}: field required ({kind.__name__})")
    return None


def text_of(content: Any) -> str:
    """Message content as text: a string, or a list of `{"type": "text", "text": ...}` blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (b.get("text") for b in content if isinstance(b, dict))
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def echo_answer(body: Mapping[str, Any]) -> str:
    """The default answer: "echo: " and the first non-empty line of the last user message."""
    users = [m for m in body["messages"] if isinstance(m, dict) and m.get("role") == "user"]
    text = text_of(users[-1].get("content")) if users else ""
    return "echo: " + next((line.strip() for line in text.splitlines() if line.strip()), "")


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """Tokens for every message's content and the Anthropic top-level system prompt."""
    contents = [m.get("content") for m in body["messages"] if isinstance(m, dict)]
    return tokens(sum(len(text_of(c)) for c in contents) + len(text_of(body.get("system"))))


def tokens(chars: int) -> int:
    # The same tokenizer-free estimate ralph uses: four characters a token, at least one.
    return max(1, -(-chars // 4))


def completion(provider: Provider, n: int, body: Mapping[str, Any], text: str) -> dict[str, Any]:
    """The success body for answer `text` to request `body`; `n` makes the id unique."""
    model, prompt, answer = body["model"], prompt_tokens(body), tokens(len(text))
    if provider == "anthropic":
        return {
            "id": f"msg_fake_{n}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": answer},
        }
    message = {"role": "assistant", "content": text}
    return {
        "id": f"chatcmpl-fake-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": answer,
            "total_tokens": prompt + answer,
        },
    }


def wrong_shape(provider: Provider, model: str) -> dict[str, Any]:
    """A 200 body that looks right at a glance but has no answer in it."""
    if provider == "anthropic":
        return {"id": "msg_fake_wrong", "type": "message", "role": "assistant", "model": model}
    return {"id": "chatcmpl-fake-wrong", "object": "chat.completion", "model": model}


def model_list(models: tuple[str, ...]) -> dict[str, Any]:
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in models]
    return {"object": "list", "data": data}
