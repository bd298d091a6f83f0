"""Throughput of `ralph apply` against a bare aiohttp loop, on the shipped fake server.

Run by hand, not in CI:  .venv/bin/python bench/throughput.py [-n 5000] [-c 50]

Prints (a) the bare loop, (b) a cold `ralph apply` of the same N items (templating, cache
writes, JSONL output and JSON logs on), (c) the fully cached re-run, and their ratios; and
(d) the peak RSS of a 100k-item JSONL run on the echo agent.

Two yardsticks, each comparing like with like: the engine (ralph's own clock, first item to
last result) against the loop alone; and both as processes, timed from outside, so both pay
for starting Python and importing (the bare loop only aiohttp; ralph also validates the recipe
and runs its health checks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

KEY = "sk-bench-not-a-real-key-0000000000"


def start_server() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "ralph.testing.fake_server", "--port", "0", "--api-key", KEY],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    return server, server.stdout.readline().strip()


async def bare_loop(base_url: str, n: int, concurrency: int) -> float:
    """N chat completions through one pooled session, `concurrency` workers, JSON parsed."""
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    items = iter(range(n))

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in items:
            body = {"model": "m", "messages": [{"role": "user", "content": f"Item {i}"}]}
            async with session.post(
                f"{base_url}/chat/completions", json=body, headers=headers
            ) as r:
                data = await r.json()
                assert data["choices"][0]["message"]["content"]

    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - started


def bare_process(base_url: str, n: int, concurrency: int) -> float:
    """The bare loop as a program of its own: interpreter start and imports included."""
    command = [sys.executable, __file__, "--bare", base_url, "-n", str(n), "-c", str(concurrency)]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def write_recipe(folder: Path, base_url: str, n: int, concurrency: int, provider: str) -> Path:
    with (folder / "items.jsonl").open("w") as handle:
        for i in range(n):
            handle.write(json.dumps({"id": i, "text": f"Item {i}"}) + "\n")
    agent = (
        f"provider: openai\n    base_url: {base_url}\n    model: m\n    api_key_env: BENCH_KEY"
        if provider == "openai"
        else "provider: echo"
    )
    recipe = folder / "recipe.yaml"
    recipe.write_text(
        f"version: 1\nname: bench\nagents:\n  a:\n    {agent}\n    concurrency: {concurrency}\n"
        "tasks:\n  - name: t\n    agent: a\n    for_each: {file: items.jsonl}\n"
        '    prompt: "{{ item.text }}"\n'
    )
    return recipe


def apply(recipe: Path, folder: Path) -> tuple[float, float]:
    """(process wall seconds, engine seconds: the tasks' own clocks in the summary, from the
    first item to the last result, as the bare loop is timed)."""
    command = [
        sys.executable,
        "-m",
        "ralph",
        "apply",
        str(recipe),
        "--out",
        str(folder / "out"),
        "--quiet",
        "--log-format",
        "json",
        "--log-file",
        str(folder / "log.jsonl"),
        "--summary-file",
        str(folder / "run.json"),
    ]
    started = time.perf_counter()
    done = subprocess.run(
        command, env={**os.environ, "BENCH_KEY": KEY}, capture_output=True, check=False
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stdout.decode() + done.stderr.decode())
    tasks = json.loads((folder / "run.json").read_text())["tasks"]
    return wall, sum(task["wall_s"] for task in tasks.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("-c", type=int, default=50)
    parser.add_argument("--rss-items", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5, help="best of this many runs")
    parser.add_argument("--bare", metavar="URL", help=argparse.SUPPRESS)  # see bare_process
    args = parser.parse_args()
    if args.bare:
        asyncio.run(bare_loop(args.bare, args.n, args.c))
        return
    # bytecode, as a wheel install has it (pip compiles at install time; an editable install
    # under PYTHONDONTWRITEBYTECODE would otherwise compile ralph on every run)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(__file__).parents[1] / "ralph")],
        check=True,
    )
    server, base_url = start_server()
    try:
        asyncio.run(bare_loop(base_url, min(args.n, 1000), args.c))  # warm the server up
        bare, bare_wall = float("inf"), float("inf")
        cold_wall, cold_engine = float("inf"), float("inf")
        for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits both
            bare = min(bare, asyncio.run(bare_loop(base_url, args.n, args.c)))
            bare_wall = min(bare_wall, bare_process(base_url, args.n, args.c))
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                recipe = write_recipe(folder, base_url, args.n, args.c, "openai")
                wall, engine = apply(recipe, folder)
                cold_wall, cold_engine = min(cold_wall, wall), min(cold_engine, engine)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            recipe = write_recipe(folder, base_url, args.n, args.c, "openai")
            apply(recipe, folder)
            warm = [apply(recipe, folder) for _ in range(args.repeat)]
            warm_wall, warm_engine = min(w for w, _ in warm), min(e for _, e in warm)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            apply(write_recipe(folder, base_url, args.rss_items, args.c, "echo"), folder)
            peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    finally:
        server.terminate()
        server.wait()
    print(f"N={args.n} C={args.c}")
    print(_line("bare aiohttp loop", bare, args.n))
    print(_line("ralph apply (engine)", cold_engine, args.n, bare))
    print(_line("bare loop (process)", bare_wall, args.n))
    print(_line("ralph apply (process)", cold_wall, args.n, bare_wall))
    print(_share("cached re-run (engine)", warm_engine, cold_engine))
    print(_share("cached re-run (process)", warm_wall, cold_wall))
    print(f"{args.rss_items} JSONL items on echo: peak RSS {peak_mb:.0f} MB")


def _line(label: str, seconds: float, n: int, bare: float | None = None) -> str:
    ratio = f"  ratio {bare / seconds:.2f}x" if bare is not None else ""
    return f"{label:24}{seconds:6.2f}s  {n / seconds:8.0f} req/s{ratio}"


def _share(label: str, seconds: float, cold: float) -> str:
    return f"{label:24}{seconds:6.3f}s  {seconds / cold:.1%} of the cold run's time"


if __name__ == "__main__":
    main()
