"""How fast `ralph validate` is, imports included, and how it bounds hostile input.

Run by hand, not in CI:  .venv/bin/python bench/validate.py
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(*args: str) -> tuple[float, float, str]:
    """(best wall seconds of 5 runs, peak RSS MB of the child, first output line)."""
    best, out = float("inf"), ""
    for _ in range(5):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "ralph", "validate", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        best = min(best, time.perf_counter() - started)
        out = (done.stdout.splitlines() or [""])[0]
    return best, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.yaml"
        big.write_text("version: 1\ntasks:\n" + "# padding\n" * 1_100_000)
        bomb = Path(tmp) / "bomb.yaml"
        levels = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
        levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
        bomb.write_text("\n".join(levels) + "\nversion: 1\ntasks: *a8\n")
        for label, path in [
            ("one recipe", ROOT / "recipes" / "ticket-summaries.yaml"),
            ("10 MB file", big),
            ("alias bomb", bomb),
        ]:
            wall, rss, first = timed(str(path))
            print(f"{label:12} {wall * 1000:7.0f} ms  peak RSS so far {rss:5.0f} MB  {first[:90]}")


if __name__ == "__main__":
    main()
