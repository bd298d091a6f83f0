"""Test helpers that ralph ships for its own tests and for users' CI.

`FakeLLMServer` (in `ralph.testing.fake_server`) is a real HTTP server speaking the OpenAI and
Anthropic APIs, with scripted answers and deterministic fault injection (`Fault`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ralph.testing.faults import Fault

if TYPE_CHECKING:
    from ralph.testing.fake_server import FakeLLMServer, RecordedRequest

__all__ = ["FakeLLMServer", "Fault", "RecordedRequest"]


def __getattr__(name: str) -> Any:
    # Imported lazily so `python -m ralph.testing.fake_server` does not find the module already
    # imported by its package (runpy warns about that, on stderr).
    if name in {"FakeLLMServer", "RecordedRequest"}:
        return getattr(importlib.import_module("ralph.testing.fake_server"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
