"""A local command-line agent: the prompt on stdin, the answer on stdout.

The child runs in its own process group, so a timeout, Ctrl-C or an answer longer than
`max_output` kills it and everything it started; no shell is involved unless the recipe asks
for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from ralph.processes import Groups, signal_group
from ralph.providers.base import AttemptError, Request, Response, estimate_tokens
from ralph.recipe.model import Agent
from ralph.secrets import redact

_GRACE_S = 2.0
_PIPES_GRACE_S = 1.0  # after the child exits, for the rest of its output
_EXIT_POLL_S = 0.01
_PROBE_TIMEOUT_S = 30.0
_CHUNK = 65_536
_STDERR_KEPT = 65_536  # the message quotes one line of stderr; this is far more than a line
_AGENTS = Groups()  # and `until` commands and git checkpoints: what a second Ctrl-C kills


def running(process: asyncio.subprocess.Process) -> contextlib.AbstractContextManager[None]:
    """While the block runs, `process` (the leader of its own group) is one that kill_all()
    kills: an agent, an `until` command, a git checkpoint."""
    return _AGENTS.running(process.pid)


def kill_all() -> None:
    """SIGKILL every process group still running: the last act of a second Ctrl-C."""
    _AGENTS.kill()


class CommandProvider:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def complete(self, request: Request) -> Response:
        stdin = (
            f"{request.system}\n\n{request.prompt}" if request.system else request.prompt
        ).encode()
        process = await self._spawn()
        with running(process):  # to its end: a second Ctrl-C during the grace kills it too
            try:
                out, err = await asyncio.wait_for(
                    _converse(process, stdin, self.agent.max_output_bytes), self.agent.timeout_s
                )
            except TimeoutError:
                await kill_group(process)
                raise AttemptError(
                    "timeout", f"command did not finish within {self.agent.timeout_s:g}s"
                ) from None
            except BaseException:
                await kill_group(process)
                raise
        if process.returncode != 0:
            # agents print failures with whatever credentials they were given
            tail = redact(err.decode("utf-8", "replace")).strip().splitlines()[-1:] or [""]
            raise AttemptError("5xx", f"command exited with {process.returncode}: {tail[0][:200]}")
        text = out.decode("utf-8", "replace")
        return Response(text, estimate_tokens(stdin.decode()), estimate_tokens(text))

    async def _spawn(self) -> asyncio.subprocess.Process:
        command = self.agent.command
        pipes = {
            "stdin": asyncio.subprocess.PIPE,
            "stdout": asyncio.subprocess.PIPE,
            "stderr": asyncio.subprocess.PIPE,
            "cwd": self.agent.workdir,
            "start_new_session": True,
        }
        try:
            if isinstance(command, str):
                return await asyncio.create_subprocess_shell(command, **pipes)  # type: ignore[arg-type]
            assert command is not None
            return await asyncio.create_subprocess_exec(*command, **pipes)  # type: ignore[arg-type]
        except OSError as exc:
            raise AttemptError("fatal", f"cannot start command: {exc.strerror or exc}") from None

    async def health(self) -> str | None:
        command = self.agent.command
        words = command.split() if isinstance(command, str) else list(command or ())
        program = words[0] if words else ""
        if not self.agent.shell and (problem := self._missing(program)) is not None:
            return problem
        probe = self.agent.probe or ((program, "--version") if not self.agent.shell else None)
        if probe is None:
            return None
        shown = " ".join(probe)
        try:
            process = await asyncio.create_subprocess_exec(
                *probe,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                cwd=self.agent.workdir,
                start_new_session=True,
            )
        except OSError as exc:
            return f"probe '{shown}' could not start: {exc.strerror or exc}"
        try:
            code = await asyncio.wait_for(process.wait(), _PROBE_TIMEOUT_S)
        except TimeoutError:
            await kill_group(process)  # and whatever it started
            return f"probe '{shown}' did not finish within {_PROBE_TIMEOUT_S:g}s"
        return None if code == 0 else f"probe '{shown}' exited with {code}"

    def _missing(self, program: str) -> str | None:
        """Why `program` cannot be run: a name is looked up on PATH, a path (`./agent.sh`)
        from the workdir, as the run starts it there."""
        if os.sep in program:
            found = Path(self.agent.workdir or ".", program)
            if found.is_file() and os.access(found, os.X_OK):
                return None
            return f"command '{program}' not found in {self.agent.workdir or Path.cwd()}"
        if shutil.which(program, path=os.environ.get("PATH")) is None:
            return f"command '{program}' not found on PATH"
        return None


async def _converse(
    process: asyncio.subprocess.Process, stdin: bytes, max_output: int
) -> tuple[bytes, bytes]:
    """Stdout and the tail of stderr, with stdin fed all the while: a big prompt must not wait
    on a full stdout pipe, and neither stream may fill memory before its size is checked.

    The answer is complete when the child exits and its pipes close. Something it left behind
    may hold them open (`cmd &`, or a daemon in a session of its own): after a grace, it is
    killed if it is in the child's group, and the answer is what the child printed."""
    assert process.stdin and process.stdout and process.stderr
    out, err = bytearray(), _Tail(_STDERR_KEPT)
    finished = asyncio.create_task(process.wait())  # asked while it runs: exit and pipes closed
    feeding = asyncio.create_task(_feed(process.stdin, stdin))
    reading = asyncio.create_task(_read_at_most(process.stdout, max_output, out))
    tailing = asyncio.create_task(err.read(process.stderr))
    tasks = (feeding, reading, tailing, finished)
    try:
        await _exit(process, reading)
        await asyncio.wait((reading, tailing), timeout=_PIPES_GRACE_S)
        if reading.done() and tailing.done():
            await asyncio.wait((finished,), timeout=_PIPES_GRACE_S)  # at once, as a rule
        else:
            signal_group(process.pid, signal.SIGKILL)
            await _abandon(process, finished)
        if reading.done():
            reading.result()  # an answer too long
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return bytes(out), err.lines()


async def _exit(process: asyncio.subprocess.Process, reading: asyncio.Task[None]) -> None:
    """Until the child exits (its return code is known then, though process.wait() would not
    return while anything holds its pipes); an answer found too long ends it at once."""
    while process.returncode is None:
        if reading.done():
            reading.result()
            await asyncio.sleep(_EXIT_POLL_S)
        else:
            await asyncio.wait((reading,), timeout=_EXIT_POLL_S)


async def _feed(pipe: asyncio.StreamWriter, data: bytes) -> None:
    try:
        # an agent may exit, or close stdin, without reading all of its prompt
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            pipe.write(data)
            await pipe.drain()
    finally:
        pipe.close()


async def _read_at_most(stream: asyncio.StreamReader, limit: int, out: bytearray) -> None:
    """Everything up to end of file into `out`, or AttemptError as soon as more than `limit`
    bytes came."""
    while chunk := await stream.read(_CHUNK):
        out += chunk
        if len(out) > limit:
            raise AttemptError("invalid_response", f"command printed more than {limit} bytes")


class _Tail:
    """The last `keep` bytes of a stream, as whole lines."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.tail = bytearray()
        self.dropped = False

    async def read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_CHUNK):
            self.tail += chunk
            if len(self.tail) > self.keep:
                del self.tail[: -self.keep]
                self.dropped = True

    def lines(self) -> bytes:
        if not self.dropped:
            return bytes(self.tail)
        # a cut line may be a cut secret, which redact() would no longer recognise
        start = self.tail.find(b"\n")
        return bytes(self.tail[start + 1 :]) if start >= 0 else b""


async def kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the child's whole group, then SIGKILL whatever is left once the child is gone
    or the grace is over. The group is signalled even when the child has exited: what it
    started can outlive it. Only the child is waited for, and not for its pipes, which
    something outside the group may hold."""
    # read to their end: pipes nobody reads stay full, and their writers blocked
    draining = asyncio.create_task(_discard_pipes(process))
    try:
        signal_group(process.pid, signal.SIGTERM)
        await _exited_within(process, _GRACE_S)
        signal_group(process.pid, signal.SIGKILL)
        await _exited_within(process, _GRACE_S)  # killed: gone at once, unless stuck in the kernel
        await asyncio.wait((draining,), timeout=_PIPES_GRACE_S)
        if not draining.done():
            await _abandon(process, draining)
    finally:
        draining.cancel()
        await asyncio.gather(draining, return_exceptions=True)


async def _exited_within(process: asyncio.subprocess.Process, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while process.returncode is None and time.monotonic() < deadline:
        await asyncio.sleep(_EXIT_POLL_S)


async def _abandon(process: asyncio.subprocess.Process, closed: asyncio.Task[Any]) -> None:
    """Close our ends of the child's pipes, which something beyond the group's reach (a
    daemon in a session of its own) holds open: the transport, and whatever waits for it,
    would otherwise wait for that to end. asyncio has no public way to do it. `closed` ends
    once they are."""
    transport = getattr(process, "_transport", None)
    if transport is not None:
        transport.close()
    await asyncio.wait((closed,), timeout=_PIPES_GRACE_S)


async def _discard_pipes(process: asyncio.subprocess.Process) -> None:
    for stream in (process.stdout, process.stderr):
        while stream is not None and await stream.read(_CHUNK):
            pass
