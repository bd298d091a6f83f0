"""A local command-line agent: the prompt on stdin, the answer on stdout.

The child runs in its own process group, so a timeout or Ctrl-C kills it and everything it
started; no shell is involved unless the recipe asks for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal

from ralph.providers.base import AttemptError, Request, Response, estimate_tokens
from ralph.recipe.model import Agent

_GRACE_S = 2.0
_RUNNING: set[int] = set()  # process groups of agents still running, for kill_all()


def kill_all() -> None:
    """SIGKILL every agent still running: the last act of a second Ctrl-C."""
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
        _RUNNING.add(process.pid)
        try:
            out, err = await asyncio.wait_for(process.communicate(stdin), self.agent.timeout_s)
        except TimeoutError:
            await kill_group(process)
            raise AttemptError(
                "timeout", f"command did not finish within {self.agent.timeout_s:g}s"
            ) from None
        except BaseException:
            await kill_group(process)
            raise
        finally:
            _RUNNING.discard(process.pid)
        if process.returncode != 0:
            tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise AttemptError("5xx", f"command exited with {process.returncode}: {tail[0][:200]}")
        if len(out) > self.agent.max_output_bytes:
            raise AttemptError(
                "invalid_response", f"command printed more than {self.agent.max_output_bytes} bytes"
            )
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
        program = command.split()[0] if isinstance(command, str) else (command or ("",))[0]
        if not self.agent.shell and shutil.which(program, path=os.environ.get("PATH")) is None:
            return f"command '{program}' not found on PATH"
        probe = self.agent.probe or ((program, "--version") if not self.agent.shell else None)
        if probe is None:
            return None
        try:
            process = await asyncio.create_subprocess_exec(
                *probe,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                cwd=self.agent.workdir,
                start_new_session=True,
            )
            code = await asyncio.wait_for(process.wait(), 30)
        except (OSError, TimeoutError) as exc:
            return f"probe '{' '.join(probe)}' failed: {exc.__class__.__name__}"
        return None if code == 0 else f"probe '{' '.join(probe)}' exited with {code}"


async def kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the child's whole group, then SIGKILL whatever is still there after a grace."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), _GRACE_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
