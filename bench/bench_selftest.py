"""What `verify-ate selftest --demo` costs beside one one-shot demo check, as a user runs both.

    python bench/bench_selftest.py [--cache-dir DIR] [--repeats 2] [--cold]

Each command is the installed console script in its own process (import, load, run, report), timed on the
wall clock; the table gives the median of `--repeats` runs of each and the ratio selftest / one-shot, and the
selftest's own time in its compile case (torch.compile's first call; the rest of the cases share one loaded
model). `--cold` also runs the selftest once with an empty inductor cache (TORCHINDUCTOR_CACHE_DIR in a new
folder), what a first selftest on a machine costs. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = Path(sys.executable).parent / "verify-ate"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, help="demo cache (default: $VERIFY_ATE_CACHE or ~/.cache/verify-ate)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each command (default 2)")
    parser.add_argument("--cold", action="store_true", help="also one selftest with an empty inductor cache")
    return parser.parse_args()


def timed(argv: list[str], env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run([str(SCRIPT), *argv], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {result.returncode}:\n{result.stderr[-2000:]}")
    return seconds, result.stderr


def compile_seconds(stderr: str) -> float | None:
    """The elapsed time from the compile case's step to the next step, read off the progress lines."""
    times = [(line, float(match[1])) for line in stderr.splitlines() if (match := re.search(r" (\d+\.\d)s", line))]
    for index, (line, seconds) in enumerate(times):
        if "+compile" in line and "still running" not in line:
            following = next((t for later, t in times[index + 1 :] if "+compile" not in later), None)
            return None if following is None else following - seconds
    return None


def main() -> int:
    args = parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    cache = ["--cache-dir", str(args.cache_dir)] if args.cache_dir else []
    with tempfile.TemporaryDirectory() as scratch:
        one_shot = ["--demo", *cache, "--out", f"{scratch}/one"]
        selftest = ["selftest", "--demo", *cache, "--out", f"{scratch}/selftest"]
        timed(one_shot, env)  # warm the demo cache and the file system
        rows = {"one-shot --demo": [], "selftest --demo": []}
        compiles = []
        for _ in range(args.repeats):
            rows["one-shot --demo"].append(timed(one_shot, env)[0])
            seconds, stderr = timed(selftest, env)
            rows["selftest --demo"].append(seconds)
            compiles.append(compile_seconds(stderr))
        if args.cold:
            cold = Path(scratch) / "inductor"
            seconds, stderr = timed(selftest, {**env, "TORCHINDUCTOR_CACHE_DIR": str(cold)})
            rows["selftest --demo, cold compile"] = [seconds]
            compiles.append(compile_seconds(stderr))
            shutil.rmtree(cold, ignore_errors=True)
    base = statistics.median(rows["one-shot --demo"])
    print(f"{'command':32s} {'median s':>9s} {'x one-shot':>11s}")
    for name, values in rows.items():
        median = statistics.median(values)
        print(f"{name:32s} {median:9.1f} {median / base:11.1f}")
    known = [c for c in compiles if c is not None]
    print(f"compile case (seconds, in order): {', '.join(f'{c:.1f}' for c in known) or 'not found'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
