"""Anthropic messages: `x-api-key` and `anthropic-version` headers, `system` at the top level.

Health is Anthropic's `GET /models`, authenticated like `/messages` and free.
"""

from __future__ import annotations

from typing import Any

from ralph.keys import Secret
from ralph.providers.base import Request, Response
from ralph.providers.http import HttpProvider, invalid, token_count
from ralph.recipe.build import thaw

_DEFAULT_MAX_TOKENS = 1024  # the API requires max_tokens; recipes may leave it out


class AnthropicProvider(HttpProvider):
    path = "/messages"

    def auth_headers(self, key: Secret | None) -> dict[str, str]:
        headers = {"anthropic-version": self.agent.anthropic_version}
        if key is not None:
            headers["x-api-key"] = key.value
        return headers

    def body(self, request: Request) -> dict[str, Any]:
        params = self.params if request.params is self.agent.params else thaw(request.params)
        body: dict[str, Any] = {"max_tokens": _DEFAULT_MAX_TOKENS, **params}
        body["model"] = request.model
        body["messages"] = [{"role": "user", "content": request.prompt}]
        if request.system:
            body["system"] = request.system
        return body

    def parse(self, data: Any) -> Response:
        try:
            blocks = data["content"]
            text = "".join(b["text"] for b in blocks if b.get("type") == "text")
        except (KeyError, TypeError, AttributeError):
            raise invalid("content text blocks", data) from None
        usage = data.get("usage")
        return Response(
            text, token_count(usage, "input_tokens"), token_count(usage, "output_tokens")
        )
