"""OpenAI-compatible chat completions: OpenAI, vLLM, Ollama, LiteLLM, Azure-style base URLs."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from ralph.keys import Secret
from ralph.providers.base import Request, Response
from ralph.providers.http import invalid, probe_models, send, token_count
from ralph.recipe.build import thaw
from ralph.recipe.model import Agent


class OpenAIProvider:
    def __init__(self, agent: Agent, key: Secret | None, session: aiohttp.ClientSession) -> None:
        self.agent = agent
        self.session = session
        self.url = f"{(agent.base_url or '').rstrip('/')}/chat/completions"
        self.headers = {"Content-Type": "application/json"}
        if key is not None:
            self.headers["Authorization"] = f"Bearer {key.value}"
        self.timeout = aiohttp.ClientTimeout(total=agent.timeout_s)

    def body(self, request: Request) -> dict[str, Any]:
        messages = [{"role": "user", "content": request.prompt}]
        if request.system:
            messages.insert(0, {"role": "system", "content": request.system})
        return {**thaw(request.params), "model": request.model, "messages": messages}

    async def complete(self, request: Request) -> Response:
        payload = json.dumps(self.body(request)).encode()
        data = await send(self.session, "POST", self.url, self.headers, payload, self.timeout)
        try:
            text = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise invalid("choices[0].message.content") from None
        if not isinstance(text, str):
            raise invalid("text content")
        usage = data.get("usage")
        return Response(
            text, token_count(usage, "prompt_tokens"), token_count(usage, "completion_tokens")
        )

    async def health(self) -> str | None:
        return await probe_models(self.session, self.agent.base_url, self.headers, self.timeout)
