"""Agents' back ends behind one small Protocol (`base.Provider`) and a registry of factories."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ralph.keys import KeySource
from ralph.providers.base import Provider
from ralph.recipe.model import Agent

if TYPE_CHECKING:
    import aiohttp

Factory = Callable[[Agent, KeySource, "aiohttp.ClientSession | None"], Provider]


def _openai(agent: Agent, keys: KeySource, session: aiohttp.ClientSession | None) -> Provider:
    from ralph.providers.openai import OpenAIProvider

    assert session is not None
    return OpenAIProvider(agent, keys, session)


def _anthropic(agent: Agent, keys: KeySource, session: aiohttp.ClientSession | None) -> Provider:
    from ralph.providers.anthropic import AnthropicProvider

    assert session is not None
    return AnthropicProvider(agent, keys, session)


def _command(agent: Agent, keys: KeySource, session: aiohttp.ClientSession | None) -> Provider:
    from ralph.providers.command import CommandProvider

    return CommandProvider(agent)


def _echo(agent: Agent, keys: KeySource, session: aiohttp.ClientSession | None) -> Provider:
    from ralph.providers.echo import EchoProvider

    return EchoProvider()


PROVIDERS: dict[str, Factory] = {
    "openai": _openai,
    "anthropic": _anthropic,
    "command": _command,
    "echo": _echo,
}
HTTP_PROVIDERS = frozenset({"openai", "anthropic"})
