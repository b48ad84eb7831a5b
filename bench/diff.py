"""Median wall time of `preflight diff` per stack: what every pull request waits for beside the gate.

    .venv/bin/python bench/diff.py [--runs 3] [--base HEAD] [--stacks dev staging prod]

Each run is the CLI as CI runs it (`python -m preflight diff --stack S --base REF`, a fresh interpreter
that runs the base revision's program and then the working tree's, each forked from a process that
preloaded the provider SDKs: preflight/program_imports.py). `--base HEAD` against an unchanged working
tree measures two full program runs and the comparison, with nothing to report. Beside it, `floor`:
the import floor of the stack's program (bench/floors.py), paid once per diff by the preload.
Prints figures only; nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.floors import env, import_floor, program_modules, provider_modules  # noqa: E402


def diff_once(stack: str, base: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "preflight", "diff", "--stack", stack, "--base", base],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env(),
        check=False,
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        failed = f"preflight diff --stack {stack} failed (exit {done.returncode})"
        raise SystemExit(f"{failed}:\n{done.stdout}{done.stderr}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--base", default="HEAD")
    parser.add_argument("--stacks", nargs="*", default=["dev", "staging", "prod"])
    args = parser.parse_args()
    print(f"{'stack':8} {'diff':>8} {'floor':>7} {'diff/floor':>10}")
    for stack in args.stacks:
        diff_once(stack, args.base)  # warm: bytecode, the base's archive
        walls = [diff_once(stack, args.base) for _ in range(args.runs)]
        floor = import_floor(provider_modules(program_modules(ROOT, stack)), args.runs)
        median = statistics.median(walls)
        print(f"{stack:8} {median:7.2f}s {floor:6.2f}s {median / floor:10.2f}")
    print(f"medians of {args.runs} runs against --base {args.base}; python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
