"""`ralph apply --serve HOST:PORT`: a long run seen from outside while it runs.

`/healthz` answers 200 while the run is healthy and 503 once it stopped on a limit or failed
items, so Kubernetes can probe it; `/metrics` is the Prometheus text exposition format;
`/status` is the JSON of the same figures. The text format is also what `--summary-file
run.prom` writes for node_exporter's textfile collector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

    from ralph.observe.summary import RunStats

LATENCY_BUCKETS_MS = (50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)


def prometheus(stats: RunStats) -> str:
    """The figures of a run (so far) in the Prometheus text exposition format."""
    return "".join(f"{line}\n" for line in _lines(stats))


def _lines(stats: RunStats) -> Iterator[str]:
    summary = stats.as_dict()
    yield from _family(
        "ralph_up",
        "gauge",
        "1 while the run is healthy, 0 once it stopped on a limit or failed items",
        [({}, 1 if stats.healthy else 0)],
    )
    yield from _family(
        "ralph_requests_total",
        "counter",
        "Requests sent, by agent and outcome",
        [
            ({"agent": a, "status": s}, n)
            for a, st in stats.agents.items()
            for s, n in sorted(st.statuses.items())
        ],
    )
    yield from _family(
        "ralph_retries_total",
        "counter",
        "Retries, by agent and cause",
        [
            ({"agent": a, "cause": c}, n)
            for a, st in stats.agents.items()
            for c, n in sorted(st.retries.items())
        ],
    )
    yield from _family(
        "ralph_cache_hits_total",
        "counter",
        "Answers served from the cache",
        [({"agent": a}, st.cache_hits) for a, st in stats.agents.items()],
    )
    yield from _family(
        "ralph_cache_misses_total",
        "counter",
        "Attempts sent because the cache had no answer (retries included)",
        [({"agent": a}, st.cache_misses) for a, st in stats.agents.items()],
    )
    yield from _family(
        "ralph_tokens_total",
        "counter",
        "Tokens used, by agent and direction",
        [
            ({"agent": a, "direction": d}, n)
            for a, st in stats.agents.items()
            for d, n in (("in", st.input_tokens), ("out", st.output_tokens))
        ],
    )
    yield from _family(
        "ralph_cost_usd_total",
        "counter",
        "Spend in USD, from agents' pricing",
        [({"agent": a}, round(st.cost_usd, 8)) for a, st in stats.agents.items()],
    )
    yield from _histogram(stats)
    yield from _family(
        "ralph_items",
        "gauge",
        "Items by task and state",
        [
            ({"task": t, "state": k}, v)
            for t, task in summary["tasks"].items()
            for k, v in task.items()
            if k in ("done", "cached", "failed", "pending")
        ],
    )
    yield from _family(
        "ralph_loop_iterations",
        "gauge",
        "Loop iterations run, by task",
        [
            ({"task": t}, task.get("loop", {}).get("iterations", 0))
            for t, task in summary["tasks"].items()
            if "loop" in task
        ],
    )


def _histogram(stats: RunStats) -> Iterator[str]:
    name = "ralph_request_latency_ms"
    yield f"# HELP {name} Request latency in milliseconds, by agent"
    yield f"# TYPE {name} histogram"
    for agent, st in stats.agents.items():
        latencies = st.latencies_ms
        for bound in LATENCY_BUCKETS_MS:
            count = sum(1 for value in latencies if value <= bound)
            yield _sample(f"{name}_bucket", {"agent": agent, "le": str(bound)}, count)
        yield _sample(f"{name}_bucket", {"agent": agent, "le": "+Inf"}, len(latencies))
        yield _sample(f"{name}_sum", {"agent": agent}, round(sum(latencies), 3))
        yield _sample(f"{name}_count", {"agent": agent}, len(latencies))


def _family(
    name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], Any]]
) -> Iterator[str]:
    yield f"# HELP {name} {help_text}"
    yield f"# TYPE {name} {kind}"
    for labels, value in samples:
        yield _sample(name, labels, value)


def _sample(name: str, labels: dict[str, str], value: Any) -> str:
    if not labels:
        return f"{name} {value}"
    inner = ",".join(f'{key}="{_escape(str(val))}"' for key, val in labels.items())
    return f"{name}{{{inner}}} {value}"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class StatusServer:
    """The three endpoints, served from the run's own event loop."""

    def __init__(self, host: str, port: int, stats: Callable[[], RunStats]) -> None:
        self.host, self.port = host, port
        self._stats = stats
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/status", self._status)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        from aiohttp import web

        healthy = self._stats().healthy
        return web.Response(status=200 if healthy else 503, text="ok\n" if healthy else "stopped\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.Response(
            body=prometheus(self._stats()).encode(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def _status(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.json_response(self._stats().as_dict())
