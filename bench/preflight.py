"""Median wall time of a preflight per stack, and where it goes (program vs policy round-trip).

    .venv/bin/python bench/preflight.py [--runs 5]

Phases, measured in-process one after the other: `program` = __main__.py under mocks; `pack start` =
launching the pack process until its gRPC port answers; `analyze` = Handshake..AnalyzeStack. `end-to-end`
runs `python -m preflight --stack S` as a user does (interpreter start and imports included; the pack
boots and analyses each resource while the program runs, so end-to-end is less than the sum of the
phases). `floor`: the import floor (bench/floors.py), a fresh python importing only the provider
submodules the stack's program loads, and `e2e/floor`.
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
from preflight.analyzer import PolicyPackProcess, analyze, load_policy_config  # noqa: E402
from preflight.engine import run_program  # noqa: E402
from preflight.stackconfig import load_stack_config  # noqa: E402


def phases(stack: str) -> tuple[float, float, float, int]:
    config = load_stack_config(ROOT, stack)
    t0 = time.perf_counter()
    run = run_program(ROOT, config)
    t1 = time.perf_counter()
    with PolicyPackProcess(ROOT / "policies", config.project, stack) as pack:
        _ = pack.stub  # measured on its own here: spawn until the gRPC port answers
        t2 = time.perf_counter()
        analyze(pack, run.resources, load_policy_config(ROOT / "policies" / "config" / f"{stack}.json"))
        t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, len(run.resources)


def end_to_end(stack: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "preflight", "--stack", stack],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        env=env(),
        check=False,
    )
    if done.returncode == 2:
        raise SystemExit(f"python -m preflight --stack {stack} failed (exit 2)")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stacks", nargs="*", default=["dev", "staging", "prod"])
    args = parser.parse_args()
    print(
        f"{'stack':<8} {'res':>4} {'program':>9} {'pack start':>11} {'analyze':>9} "
        f"{'program %':>10} {'policy %':>9} {'end-to-end':>11} {'floor':>7} {'e2e/floor':>9}"
    )
    for stack in args.stacks:
        samples = [phases(stack) for _ in range(args.runs)]
        floor = import_floor(provider_modules(program_modules(ROOT, stack)), args.runs)
        program = statistics.median(s[0] for s in samples)
        start = statistics.median(s[1] for s in samples)
        rpc = statistics.median(s[2] for s in samples)
        total = program + start + rpc
        e2e = statistics.median(end_to_end(stack) for _ in range(args.runs))
        print(
            f"{stack:<8} {samples[0][3]:>4} {program:>8.3f}s {start:>10.3f}s {rpc:>8.3f}s "
            f"{100 * program / total:>9.0f}% {100 * (start + rpc) / total:>8.0f}% {e2e:>10.3f}s "
            f"{floor:>6.2f}s {e2e / floor:>9.2f}"
        )
    print(f"medians of {args.runs} runs; machine: {sys.platform}, python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
