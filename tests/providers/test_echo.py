"""The offline provider: a deterministic answer (first line + hash) with plausible token counts."""

from __future__ import annotations

import asyncio
import re

from ralph.providers.base import Request, Response, estimate_tokens
from ralph.providers.echo import EchoProvider

PROMPT = "\n  Summarize ticket 7:  \nThe printer is on fire.\n"


def complete(request: Request) -> Response:
    return asyncio.run(EchoProvider().complete(request))


def digest(response: Response) -> str:
    match = re.search(r"\[echo ([0-9a-f]{12})\]", response.text)
    assert match is not None, response.text
    return match.group(1)


def test_the_answer_is_the_first_line_and_a_hash() -> None:
    response = complete(Request(prompt=PROMPT))
    assert re.fullmatch(r"Summarize ticket 7:\n\[echo [0-9a-f]{12}\]\n", response.text)


def test_the_same_request_gets_the_same_answer() -> None:
    request = Request(prompt=PROMPT, system="You are terse.", model="m")
    first = complete(request)
    assert complete(Request(prompt=PROMPT, system="You are terse.", model="m")) == first
    assert asyncio.run(EchoProvider().complete(request)) == first


def test_the_hash_covers_the_whole_prompt_and_the_system_prompt() -> None:
    base = complete(Request(prompt=PROMPT, system="You are terse."))
    other_body = complete(Request(prompt=PROMPT + "It is out now.", system="You are terse."))
    other_system = complete(Request(prompt=PROMPT, system="You are chatty."))
    no_system = complete(Request(prompt=PROMPT))
    assert other_body.text.splitlines()[0] == base.text.splitlines()[0]
    assert len({digest(base), digest(other_body), digest(other_system), digest(no_system)}) == 4


def test_token_counts_follow_the_estimate() -> None:
    response = complete(Request(prompt=PROMPT, system="You are terse."))
    assert response.input_tokens == estimate_tokens(PROMPT) + estimate_tokens("You are terse.")
    assert response.output_tokens == estimate_tokens(response.text)
    without_system = complete(Request(prompt=PROMPT))
    assert without_system.input_tokens == estimate_tokens(PROMPT)


def test_an_empty_prompt_still_gets_an_answer_and_counts() -> None:
    response = complete(Request(prompt=""))
    assert re.fullmatch(r"\n\[echo [0-9a-f]{12}\]\n", response.text)
    assert response.input_tokens >= 1
    assert response.output_tokens >= 1


def test_estimate_tokens_is_about_four_characters_a_token_and_never_zero() -> None:
    assert [estimate_tokens("x" * n) for n in (0, 1, 4, 5, 8, 400, 401)] == [
        1,
        1,
        1,
        2,
        2,
        100,
        101,
    ]


def test_the_echo_provider_is_always_healthy() -> None:
    assert asyncio.run(EchoProvider().health()) is None
