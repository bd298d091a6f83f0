"""Health checks: can this recipe run here, now? Run by `ralph health` and before `ralph apply`.

Every agent the tasks use is checked (openai: GET /models with the key; anthropic: an
authenticated GET /models; command: the program is found and its probe exits 0; echo: always),
then the recipe's own `health_checks:`, then the folders a run writes to.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ralph.errors import ConfigError, RalphError
from ralph.keys import KeyRing
from ralph.providers import HTTP_PROVIDERS, PROVIDERS
from ralph.recipe.model import AgentCheck, CommandCheck, HttpCheck, Recipe
from ralph.secrets import redact

if TYPE_CHECKING:
    import aiohttp


class HealthError(RalphError):
    """A health check failed before anything was sent."""

    exit_code = 5


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    latency_ms: float
    detail: str


Probe = Callable[[], Awaitable[str | None]]


async def run_checks(
    recipe: Recipe, out_dir: Path, cache_dir: Path | None, *, keys: KeyRing | None = None
) -> list[CheckResult]:
    """Every check, concurrently; each result says what was checked and what went wrong."""
    async with _session(recipe) as session:
        ring = keys or KeyRing(recipe.agents)
        probes = [_agent_probe(recipe, name, session, ring) for name in recipe.agents_used()]
        probes += _recipe_probes(recipe, session, ring)
        probes += [(f"writable: {out_dir}", _writable(out_dir))]
        if cache_dir is not None:
            probes.append((f"writable: {cache_dir}", _writable(cache_dir)))
        return list(await asyncio.gather(*(_timed(name, probe) for name, probe in probes)))


@contextlib.asynccontextmanager
async def _session(recipe: Recipe) -> AsyncIterator[aiohttp.ClientSession | None]:
    """A session when some check talks HTTP; none otherwise, so a recipe of echo and command
    agents does not import aiohttp (~65 ms, a third of a quick run's start)."""
    agents = set(recipe.agents_used())
    agents |= {c.agent for c in recipe.health_checks if isinstance(c, AgentCheck)}
    http = any(isinstance(c, HttpCheck) for c in recipe.health_checks) or any(
        recipe.agents[name].provider in HTTP_PROVIDERS for name in agents
    )
    if not http:
        yield None
        return
    import aiohttp

    async with aiohttp.ClientSession(trust_env=False) as session:
        yield session


async def _timed(name: str, probe: Probe) -> CheckResult:
    started = time.perf_counter()
    try:
        problem = await probe()
    except RalphError as exc:
        problem = str(exc)
    except (OSError, TimeoutError) as exc:
        problem = f"{exc.__class__.__name__}: {exc}"
    latency_ms = (time.perf_counter() - started) * 1000
    return CheckResult(name, problem is None, latency_ms, redact(problem) if problem else "ok")


def _agent_probe(
    recipe: Recipe, name: str, session: aiohttp.ClientSession | None, ring: KeyRing
) -> tuple[str, Probe]:
    agent = recipe.agents[name]

    async def probe() -> str | None:
        try:
            keys = ring.read(name)
        except ConfigError as exc:
            return str(exc)
        return await PROVIDERS[agent.provider](agent, keys, session).health()

    return f"agent: {name} ({agent.provider})", probe


def _recipe_probes(
    recipe: Recipe, session: aiohttp.ClientSession | None, ring: KeyRing
) -> list[tuple[str, Probe]]:
    probes: list[tuple[str, Probe]] = []
    for check in recipe.health_checks:
        if isinstance(check, HttpCheck):
            assert session is not None  # _session opens one for every HttpCheck
            probes.append((f"http: {check.url}", _http(check, session)))
        elif isinstance(check, CommandCheck):
            probes.append((f"command: {' '.join(check.argv)}", _command(check)))
        elif check.agent not in recipe.agents_used():
            probes.append(_agent_probe(recipe, check.agent, session, ring))
    return probes


def _http(check: HttpCheck, session: aiohttp.ClientSession) -> Probe:
    import aiohttp

    async def probe() -> str | None:
        timeout = aiohttp.ClientTimeout(total=check.timeout_s)
        try:
            async with session.get(check.url, timeout=timeout) as response:
                status = response.status
        except aiohttp.ClientError as exc:
            from ralph.providers.http import why_not

            return why_not(exc)
        except TimeoutError:
            return f"no answer within {check.timeout_s:g}s"
        if status != check.expect_status:
            return f"HTTP {status}, expected {check.expect_status}"
        return None

    return probe


def _command(check: CommandCheck) -> Probe:
    async def probe() -> str | None:
        try:
            process = await asyncio.create_subprocess_exec(
                *check.argv,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            return f"cannot run '{check.argv[0]}': {exc.strerror or exc}"
        try:
            code = await asyncio.wait_for(process.wait(), check.timeout_s)
        except TimeoutError:
            from ralph.providers.command import kill_group

            await kill_group(process)  # the whole group: what it started must not outlive it
            return f"no exit within {check.timeout_s:g}s"
        return None if code == check.expect_exit else f"exit {code}, expected {check.expect_exit}"

    return probe


def _writable(folder: Path) -> Probe:
    async def probe() -> str | None:
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            return f"{existing} is not a directory"
        if not os.access(existing, os.W_OK | os.X_OK):
            return f"{existing} is not writable"
        return None

    return probe


def require_healthy(
    recipe: Recipe, out_dir: Path, cache_dir: Path | None, *, keys: KeyRing | None = None
) -> None:
    """HealthError naming every failing check, or nothing."""
    checks = run_checks(recipe, out_dir, cache_dir, keys=keys)
    failed = [r for r in asyncio.run(checks) if not r.ok]
    if failed:
        reasons = "; ".join(f"{r.name}: {r.detail}" for r in failed)
        raise HealthError(f"health check failed, nothing was sent ({reasons})")
