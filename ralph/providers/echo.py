"""The offline provider: a deterministic answer with token counts, for quickstarts and tests."""

from __future__ import annotations

import hashlib

from ralph.providers.base import Request, Response, estimate_tokens


class EchoProvider:
    """Answers with the prompt's first line and a short hash of the whole request."""

    async def complete(self, request: Request) -> Response:
        return answer(request)

    async def health(self) -> str | None:
        return None


def answer(request: Request) -> Response:
    digest = hashlib.sha256(f"{request.system or ''}\x00{request.prompt}".encode()).hexdigest()[:12]
    first = next((line.strip() for line in request.prompt.splitlines() if line.strip()), "")
    text = f"{first}\n[echo {digest}]\n"
    prompt_tokens = estimate_tokens(request.prompt) + (
        estimate_tokens(request.system) if request.system else 0
    )
    return Response(text=text, input_tokens=prompt_tokens, output_tokens=estimate_tokens(text))
