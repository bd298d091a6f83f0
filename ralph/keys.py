"""API keys, read once per run from where the recipe says, and never shown anywhere."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ralph.errors import ConfigError
from ralph.processes import Groups, signal_group
from ralph.recipe.model import Agent
from ralph.secrets import remember_secret


class InsecureKeyFile(ConfigError):
    """An api_key_file that others than its owner can read."""


@dataclass(frozen=True)
class Secret:
    """A key whose repr and str never reveal it, so it cannot leak through a log or a traceback."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return "[secret]"


class KeySource:
    """An agent's key for one run: read once, and read again at most once (after a 401), so a
    key rotated during a long run is picked up without hammering the secret store."""

    def __init__(
        self, agent: Agent, *, allow_insecure_file: bool = False, initial: Secret | None = None
    ) -> None:
        self.agent = agent
        self.allow_insecure_file = allow_insecure_file
        self._key = initial
        self._read = initial is not None
        self._reread = False

    def get(self) -> Secret | None:
        if not self._read:
            self._key = resolve_key(self.agent, allow_insecure_file=self.allow_insecure_file)
            self._read = True
        return self._key

    def reread(self) -> Secret | None:
        """A key different from the one in use, or None (already re-read, unchanged, gone)."""
        if self._reread:
            return None
        self._reread = True
        try:
            fresh = resolve_key(self.agent, allow_insecure_file=self.allow_insecure_file)
        except ConfigError:
            return None
        if fresh is None or fresh == self._key:
            return None
        self._key = fresh
        return fresh


class KeyRing:
    """The key sources of one run's agents, shared by the health checks and the run itself,
    so a key (an api_key_command, say) is read once per run, not once per use."""

    def __init__(self, agents: Mapping[str, Agent], *, allow_insecure_file: bool = False) -> None:
        self._agents = agents
        self._allow = allow_insecure_file
        self._sources: dict[str, KeySource] = {}

    def source(self, name: str) -> KeySource:
        if name not in self._sources:
            self._sources[name] = KeySource(self._agents[name], allow_insecure_file=self._allow)
        return self._sources[name]

    def read(self, name: str) -> KeySource:
        """The agent's key source with its key read now; a key that cannot be read is a
        security event (for monitoring) as well as the ConfigError raised."""
        keys = self.source(name)
        try:
            keys.get()
        except ConfigError as error:
            from ralph.observe.logs import LOGGER, event

            kind = "key_file_insecure" if isinstance(error, InsecureKeyFile) else "key_missing"
            logger = logging.getLogger(LOGGER)
            event(logger, logging.ERROR, f"security.{kind}", agent=name, error=str(error))
            raise
        return keys


def resolve_key(agent: Agent, *, allow_insecure_file: bool = False) -> Secret | None:
    """The agent's key, or None when it needs none; ConfigError names the source, never the key."""
    if agent.api_key_env is not None:
        value = os.environ.get(agent.api_key_env, "")
        if not value.strip():
            raise ConfigError(
                f"agent '{agent.name}': environment variable {agent.api_key_env} is not set "
                "(it should hold the API key)"
            )
        return _checked(agent, value.strip(), f"environment variable {agent.api_key_env}")
    if agent.api_key_file is not None:
        if not allow_insecure_file:
            _refuse_open_permissions(agent)
        return _checked(agent, _read_key_file(agent), f"api_key_file {agent.api_key_file}")
    if agent.api_key_command is not None:
        program = agent.api_key_command[0]
        return _checked(agent, _run_key_command(agent), f"api_key_command '{program}'")
    return None


def _checked(agent: Agent, value: str, source: str) -> Secret:
    """The key, remembered so that messages mask it. A control character (a pasted newline)
    or a letter outside ASCII cannot go into an HTTP header as it is: a configuration error
    here, not a failed request (or a crash) later."""
    remember_secret(value)
    bad = next((c for c in value if not " " <= c <= "~"), None)
    if bad is not None:
        raise ConfigError(
            f"agent '{agent.name}': the key from {source} contains the character "
            f"U+{ord(bad):04X}; a key is one line of printable ASCII"
        )
    return Secret(value)


def _refuse_open_permissions(agent: Agent) -> None:
    assert agent.api_key_file is not None
    try:
        mode = agent.api_key_file.stat().st_mode
    except OSError:
        return  # _read_key_file says why it cannot be read
    if mode & 0o077:
        raise InsecureKeyFile(
            f"agent '{agent.name}': api_key_file {agent.api_key_file} can be read by group or "
            f"others (mode {mode & 0o777:o}); run `chmod 600` on it (for a Kubernetes secret, "
            "see examples/kubernetes), or pass --allow-insecure-key-file"
        )


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


_KEY_COMMAND_TIMEOUT_S = 30.0


def _run_bounded(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[bytes]:
    """`argv` run to its end, or its whole process group killed at `timeout_s` (subprocess.run
    kills the child only, and what it started lives on). Bytes, not text: output that is not
    UTF-8 is a configuration error, not a crash."""
    with (
        _interruptible(),
        subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        ) as process,
    ):
        try:
            with _KEY_COMMANDS.running(process.pid):
                out, err = process.communicate(timeout=timeout_s)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            signal_group(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


_KEY_COMMANDS = Groups()  # running now, on any thread


def kill_key_commands() -> None:
    """Kill every key command running now, with all it started: a run that is stopping does
    not wait for a key it will not use."""
    _KEY_COMMANDS.kill()


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C (and SIGTERM, which ralph takes as one) raise KeyboardInterrupt while a key
    command runs before the run has started: the event loop of the health checks would only
    take note of a Ctrl-C for when the loop runs again, after the command, up to 30 s later.
    Once the run has its own handler, a Ctrl-C stays the run's, which ends it the way it ends
    any run, summary and all. (Signals reach the main thread only; and a Ctrl-C the process
    was started to ignore stays ignored.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if not _pythons(signal.getsignal(signal.SIGINT)):
        yield
        return
    handlers: dict[signal.Signals, Any] = {signal.SIGINT: signal.default_int_handler}
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        handlers[signal.SIGTERM] = _interrupt
    previous = {signum: signal.getsignal(signum) for signum in handlers}
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _pythons(handler: object) -> bool:
    """Python's own Ctrl-C handler, or the one asyncio.run puts in its place."""
    if handler is signal.default_int_handler:
        return True
    owner = getattr(getattr(handler, "func", None), "__self__", None)
    return isinstance(handler, functools.partial) and isinstance(owner, asyncio.Runner)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run_key_command(agent: Agent) -> str:
    assert agent.api_key_command is not None
    program = agent.api_key_command[0]
    try:
        done = _run_bounded(list(agent.api_key_command), _KEY_COMMAND_TIMEOUT_S)
    except OSError as exc:
        raise ConfigError(
            f"agent '{agent.name}': api_key_command '{program}' could not run: "
            f"{exc.strerror or exc}"
        ) from None
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"agent '{agent.name}': api_key_command '{program}' did not finish within "
            f"{_KEY_COMMAND_TIMEOUT_S:g}s"
        ) from None
    if done.returncode != 0:
        # its output may hold the key or part of it: report only the exit status
        raise ConfigError(
            f"agent '{agent.name}': api_key_command '{program}' failed (exit {done.returncode})"
        )
    try:
        key = done.stdout.decode("utf-8").strip()
    except UnicodeDecodeError:
        # never quoted: those bytes may be the key
        raise ConfigError(
            f"agent '{agent.name}': api_key_command '{program}' printed something that is not "
            "UTF-8 text; a key is one line of printable ASCII"
        ) from None
    if not key:
        raise ConfigError(f"agent '{agent.name}': api_key_command '{program}' printed no key")
    return key
