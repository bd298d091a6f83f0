"""The `ralph` command line: one module per command, each parsing, calling the core and
printing; `app` holds what they share."""

from ralph.cli import apply, cache, health, init, plan, summary, validate
from ralph.cli.app import app, main, run

__all__ = ["app", "apply", "cache", "health", "init", "main", "plan", "run", "summary", "validate"]
