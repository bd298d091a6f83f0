"""Recognising secrets so that none is accepted in a recipe or echoed in a message."""

from __future__ import annotations

import re

_SECRET = re.compile(
    r"\b(?:"
    r"sk-ant-[A-Za-z0-9_\-]{8,}"  # Anthropic
    r"|sk-(?:proj-|svcacct-)?[A-Za-z0-9_\-]{16,}"  # OpenAI and compatible servers
    r"|AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{20,}"  # GitHub tokens
    r"|xox[abprs]-[A-Za-z0-9\-]{10,}"  # Slack tokens
    r")"
)

SECRET_FIELD_NAMES = frozenset({"api_key", "apikey", "api-key", "x-api-key", "authorization"})


_FIELDS = frozenset(name.replace("_", "-") for name in SECRET_FIELD_NAMES)


def is_secret_field(name: str) -> bool:
    """A key that holds a credential whatever its value (`api_key`, `Authorization`, ...)."""
    return name.lower().replace("_", "-") in _FIELDS


def looks_like_secret(text: str) -> bool:
    return _SECRET.search(text) is not None


def redact(text: str) -> str:
    """Replace anything shaped like a key; used on every message shown to a user."""
    return _SECRET.sub("[REDACTED]", text)
