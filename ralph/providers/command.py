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
from collections.abc import Iterator
from pathlib import Path

from ralph.providers.base import AttemptError, Request, Response, estimate_tokens
from ralph.recipe.model import Agent
from ralph.secrets import redact

_GRACE_S = 2.0
_PROBE_TIMEOUT_S = 30.0
_CHUNK = 65_536
_STDERR_KEPT = 65_536  # the message quotes one line of stderr; this is far more than a line
_RUNNING: set[int] = set()  # process groups still running, for kill_all()


@contextlib.contextmanager
def running(process: asyncio.subprocess.Process) -> Iterator[None]:
    """While the block runs, `process` (the leader of its own group) is one that kill_all()
    kills: an agent, an `until` command, a git checkpoint."""
    _RUNNING.add(process.pid)
    try:
        yield
    finally:
        _RUNNING.discard(process.pid)


def kill_all() -> None:
    """SIGKILL every process group still running: the last act of a second Ctrl-C."""
    for group in list(_RUNNING):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


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
    on a full stdout pipe, and neither stream may fill memory before its size is checked."""
    assert process.stdin and process.stdout and process.stderr
    feeding = asyncio.create_task(_feed(process.stdin, stdin))
    tail = asyncio.create_task(_tail(process.stderr, _STDERR_KEPT))
    try:
        out = await _read_at_most(process.stdout, max_output)
        await feeding
        err = await tail
        await process.wait()
    finally:
        feeding.cancel()
        tail.cancel()
        await asyncio.gather(feeding, tail, return_exceptions=True)
    return out, err


async def _feed(pipe: asyncio.StreamWriter, data: bytes) -> None:
    try:
        # an agent may exit, or close stdin, without reading all of its prompt
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            pipe.write(data)
            await pipe.drain()
    finally:
        pipe.close()


async def _read_at_most(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Everything up to end of file, or AttemptError as soon as more than `limit` bytes came."""
    out = bytearray()
    while chunk := await stream.read(_CHUNK):
        out += chunk
        if len(out) > limit:
            raise AttemptError("invalid_response", f"command printed more than {limit} bytes")
    return bytes(out)


async def _tail(stream: asyncio.StreamReader, keep: int) -> bytes:
    """The whole lines among the last `keep` bytes of `stream`, read to end of file."""
    tail = bytearray()
    dropped = False
    while chunk := await stream.read(_CHUNK):
        tail += chunk
        if len(tail) > keep:
            del tail[:-keep]
            dropped = True
    if not dropped:
        return bytes(tail)
    # a cut line may be a cut secret, which redact() would no longer recognise
    start = tail.find(b"\n")
    return bytes(tail[start + 1 :]) if start >= 0 else b""


async def kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the child's whole group, then SIGKILL whatever is left once the child is gone
    or the grace is over."""
    # process.wait() does not return while a pipe is open, and one nobody reads stays open
    draining = asyncio.create_task(_discard_pipes(process))
    try:
        # The group is signalled even when the child has exited: what it started can outlive
        # it, holding its pipes. Only the child can be waited for, the rest not being ours.
        _signal_group(process.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), _GRACE_S)
        _signal_group(process.pid, signal.SIGKILL)
        await process.wait()
        await draining
    finally:
        draining.cancel()


async def _discard_pipes(process: asyncio.subprocess.Process) -> None:
    for stream in (process.stdout, process.stderr):
        while stream is not None and await stream.read(_CHUNK):
            pass


def _signal_group(group: int, signum: signal.Signals) -> None:
    # an empty group is already what we want
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signum)
