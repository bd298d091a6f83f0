"""OpenAI-compatible chat completions: OpenAI, vLLM, Ollama, LiteLLM, Azure-style base URLs."""

from __future__ import annotations

from typing import Any

from ralph.keys import Secret
from ralph.providers.base import AttemptError, Request, Response
from ralph.providers.http import HttpProvider, invalid, token_count
from ralph.recipe.build import thaw
from ralph.secrets import redact


class OpenAIProvider(HttpProvider):
    path = "/chat/completions"

    def auth_headers(self, key: Secret | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key.value}"} if key is not None else {}

    def body(self, request: Request) -> dict[str, Any]:
        messages = [{"role": "user", "content": request.prompt}]
        if request.system:
            messages.insert(0, {"role": "system", "content": request.system})
        params = self.params if request.params is self.agent.params else thaw(request.params)
        return {**params, "model": request.model, "messages": messages}

    def parse(self, data: Any) -> Response:
        try:
            message = data["choices"][0]["message"]
            text = message["content"]
        except (KeyError, IndexError, TypeError):
            raise invalid("choices[0].message.content", data) from None
        refusal = message.get("refusal") if isinstance(message, dict) else None
        if text is None and isinstance(refusal, str) and refusal:
            # the model declined: its words say why, and asking again rarely helps
            raise AttemptError("fatal", f"the model refused: {redact(refusal)[:500]}")
        if not isinstance(text, str):
            raise invalid("text content", data)
        usage = data.get("usage")
        return Response(
            text, token_count(usage, "prompt_tokens"), token_count(usage, "completion_tokens")
        )
