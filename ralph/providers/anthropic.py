"""Anthropic messages: `x-api-key` and `anthropic-version` headers, `system` at the top level."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from ralph.keys import Secret
from ralph.providers.base import Request, Response
from ralph.providers.http import invalid, probe_models, send, token_count
from ralph.recipe.build import thaw
from ralph.recipe.model import Agent

_DEFAULT_MAX_TOKENS = 1024  # the API requires max_tokens; recipes may leave it out


class AnthropicProvider:
    def __init__(self, agent: Agent, key: Secret | None, session: aiohttp.ClientSession) -> None:
        self.agent = agent
        self.session = session
        self.url = f"{(agent.base_url or '').rstrip('/')}/messages"
        self.headers = {
            "Content-Type": "application/json",
            "anthropic-version": agent.anthropic_version,
        }
        if key is not None:
            self.headers["x-api-key"] = key.value
        self.timeout = aiohttp.ClientTimeout(total=agent.timeout_s)

    def body(self, request: Request) -> dict[str, Any]:
        body: dict[str, Any] = {"max_tokens": _DEFAULT_MAX_TOKENS, **thaw(request.params)}
        body["model"] = request.model
        body["messages"] = [{"role": "user", "content": request.prompt}]
        if request.system:
            body["system"] = request.system
        return body

    async def complete(self, request: Request) -> Response:
        payload = json.dumps(self.body(request)).encode()
        data = await send(self.session, "POST", self.url, self.headers, payload, self.timeout)
        try:
            blocks = data["content"]
            text = "".join(b["text"] for b in blocks if b.get("type") == "text")
        except (KeyError, TypeError, AttributeError):
            raise invalid("content text blocks") from None
        usage = data.get("usage")
        return Response(
            text, token_count(usage, "input_tokens"), token_count(usage, "output_tokens")
        )

    async def health(self) -> str | None:
        # Anthropic's GET /models is authenticated like /messages, and free
        return await probe_models(self.session, self.agent.base_url, self.headers, self.timeout)
