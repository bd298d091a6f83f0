"""API keys, read once per run from where the recipe says, and never shown anywhere."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field

from ralph.errors import ConfigError
from ralph.recipe.model import Agent


@dataclass(frozen=True)
class Secret:
    """A key whose repr and str never reveal it, so it cannot leak through a log or a traceback."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return "[secret]"


def resolve_key(agent: Agent) -> Secret | None:
    """The agent's key, or None when it needs none; ConfigError names the source, never the key."""
    if agent.api_key_env is not None:
        value = os.environ.get(agent.api_key_env, "")
        if not value.strip():
            raise ConfigError(
                f"agent '{agent.name}': environment variable {agent.api_key_env} is not set "
                "(it should hold the API key)"
            )
        return Secret(value.strip())
    if agent.api_key_file is not None:
        return Secret(_read_key_file(agent))
    if agent.api_key_command is not None:
        return Secret(_run_key_command(agent))
    return None


def _read_key_file(agent: Agent) -> str:
    assert agent.api_key_file is not None
    try:
        value = agent.api_key_file.read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(
            f"agent '{agent.name}': cannot read api_key_file {agent.api_key_file}: {reason}"
        ) from None
    if not value:
        raise ConfigError(f"agent '{agent.name}': api_key_file {agent.api_key_file} is empty")
    return value


def _run_key_command(agent: Agent) -> str:
    assert agent.api_key_command is not None
    program = agent.api_key_command[0]
    try:
        done = subprocess.run(
            list(agent.api_key_command), capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(
            f"agent '{agent.name}': api_key_command '{program}' could not run: "
            f"{exc.__class__.__name__}"
        ) from None
    if done.returncode != 0:
        # its output may hold the key or part of it: report only the exit status
        raise ConfigError(
            f"agent '{agent.name}': api_key_command '{program}' failed (exit {done.returncode})"
        )
    key = done.stdout.strip()
    if not key:
        raise ConfigError(f"agent '{agent.name}': api_key_command '{program}' printed no key")
    return key
