"""How preflight scales with the number of services, next to what the SDK itself costs.

    .venv/bin/python bench/scaling.py [--sizes 1 10 50] [--runs 3]
    .venv/bin/python bench/scaling.py --sizes 200 --runs 1      # the 200-service figure (slower)

Each size is the prod stack (Pulumi.prod.yaml) with its services repeated to that many: its services
in turn, the first round under their own names (`--sizes 2` is the prod stack itself), later rounds
named `<name>-<round>`, in a temporary project dir that symlinks the real code (as tests/conftest.py's
`project_copy` does; `--source DIR` takes the program and the pack from another checkout or a `git
archive` export, to compare revisions; preflight itself is always this checkout's). Each run is the
CLI (`preflight.cli.main --stack prod --project-dir <tmp>`, what `python -m preflight` runs) in a fresh
interpreter, as a user runs it (interpreter start and imports included; the report is discarded),
timed inside by wrapping the CLI's `run_program` and `Analysis.finish`:

- `wall`: the whole command, timed by this script; `program`: `__main__.py` under the mocks, of which
  `imports` is the wall time spent importing modules (the providers, components/; other threads may run
  meanwhile) and `register` the rest
  (settings, building and registering the resources); `analyze`: what the policy round adds after the
  program (the pack analyses each resource while the program registers the next: the answers still
  pending, then AnalyzeStack);
- `ms/res`: `register` milliseconds per resource; `+ms/svc`: wall milliseconds per service added since
  the previous size (the marginal cost of one more service);
- `rss`: peak resident memory of the preflight process in MB; `pack`: the policy pack process's;
- `floor`: the SDK alone registering as many trivial resources under the same mocks (bench/floors.py),
  `fl ms/res` per resource, and `reg/floor`: the program's `register` over it.

Last line: the import floor, a fresh interpreter importing only the provider submodules the program
imported (bench/floors.py). Medians of `--runs` runs per size (peak memory: the largest). Figures
only; nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.floors import env, import_floor, provider_modules, sdk_floor  # noqa: E402
from components.releases import RECORD_FILE, parse_record  # noqa: E402
from delivery.release import pack_config  # noqa: E402
from tests.conftest import PROJECT_ENTRIES  # noqa: E402

STACK = "prod"
SERVICES_KEY = "pouw-cicd:services"

# The child: the CLI as `python -m preflight` runs it, with its phases timed. Import time is what
# importlib's _find_and_load (which the interpreter calls for a module not yet loaded) spends at the
# outermost level of each thread, nested imports included once.
_CHILD = """
import importlib._bootstrap as bootstrap, json, resource, sys, threading, time
sys.path.insert(0, sys.argv[1])
timings = {"imports": 0.0}
nesting = threading.local()
find_and_load = bootstrap._find_and_load
def timed_find_and_load(name, import_):
    if getattr(nesting, "depth", 0):
        return find_and_load(name, import_)
    nesting.depth = 1
    t0 = time.perf_counter()
    try:
        return find_and_load(name, import_)
    finally:
        timings["imports"] += time.perf_counter() - t0
        nesting.depth = 0
bootstrap._find_and_load = timed_find_and_load
from preflight import cli
def timed(name, fn):
    def wrapper(*args, **kwargs):
        imports, t0 = timings["imports"], time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timings[name] = time.perf_counter() - t0
            timings[name + "_imports"] = timings["imports"] - imports
    return wrapper
cli.run_program = timed("program", cli.run_program)
if hasattr(cli, "Analysis"):
    cli.Analysis.finish = timed("analyze", cli.Analysis.finish)
else:  # a revision that analysed only after the program (for --source comparisons of preflight itself)
    cli.analyze = timed("analyze", cli.analyze)
before = set(sys.modules)
real_run = cli.run_preflight
def run_preflight(*args, **kwargs):
    result = real_run(*args, **kwargs)
    timings["resources"] = len(result.run.resources)
    timings["error"] = result.run.error_text or result.error
    # Loaded, not merely announced: the providers register their service packages lazily.
    loaded = {m for m in set(sys.modules) - before if type(sys.modules[m]).__name__ != "_LazyModule"}
    timings["modules"] = sorted(loaded)
    return result
cli.run_preflight = run_preflight
import contextlib, io
report = io.StringIO()
with contextlib.redirect_stdout(report):
    timings["code"] = cli.main(["--stack", sys.argv[2], "--project-dir", sys.argv[3]])
if timings["code"] == 2 and not timings.get("error"):  # refused before the program ran: what it said
    timings["error"] = report.getvalue().strip()[-2000:]
timings["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
timings["pack_rss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
sys.stderr.write("\\n" + json.dumps(timings) + "\\n")
"""


def services_repeated(services: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """`count` services: the stack's own in turn, later rounds renamed `<name>-<round>`."""
    out = []
    for i in range(count):
        service = json.loads(json.dumps(services[i % len(services)]))
        round_ = i // len(services) + 1
        if round_ > 1:
            service["name"] = f"{service['name']}-{round_}"
        out.append(service)
    return out


def project_with(source: Path, services: int, into: Path) -> Path:
    """A project dir with `source`'s code (symlinks) and a prod stack file of `services` services."""
    config = yaml.safe_load((source / f"Pulumi.{STACK}.yaml").read_text())["config"]
    original = json.dumps(config[SERVICES_KEY])
    config[SERVICES_KEY] = services_repeated(config[SERVICES_KEY], services)
    kept = json.dumps(config[SERVICES_KEY])
    for name, value in list(config.items()):
        # Fewer services than the stack has: a secret that only a dropped service names would be an
        # unused key, which the settings refuse.
        short = f'"{name.split(":", 1)[-1]}"'
        if isinstance(value, dict) and "secure" in value and short in original and short not in kept:
            del config[name]
    into.mkdir(parents=True)
    for entry in PROJECT_ENTRIES:
        if entry != "policies":
            (into / entry).symlink_to(source / entry)
    (into / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump({"config": config}, sort_keys=False))
    record_copies(source, [s["name"] for s in config[SERVICES_KEY]], into)
    return into


def record_copies(source: Path, names: list[str], into: Path) -> None:
    """The release record for the repeated services: `web-2` runs what `web` was released as (the same
    digests), in `releases.yaml` and in the pack's config (`image-release-recorded`), as `python -m
    delivery.release record` keeps them, so prod's gate sees recorded releases, not violations.
    The pack's own files stay links to `source`'s. (A `--source` from before the record: links only.)"""
    policies = into / "policies"
    if not (source / RECORD_FILE).is_file():
        policies.symlink_to(source / "policies")
        return
    record = yaml.safe_load((source / RECORD_FILE).read_text()) or {}
    released = record.setdefault("services", {})
    for name in names:
        original = name.rsplit("-", 1)[0] if name not in released else name
        released.setdefault(name, released.get(original, {}))
    (into / RECORD_FILE).write_text(yaml.safe_dump(record, sort_keys=False))
    policies.mkdir()
    for entry in (source / "policies").iterdir():
        if entry.name != "config":
            (policies / entry.name).symlink_to(entry)
    (policies / "config").mkdir()
    parsed = parse_record((into / RECORD_FILE).read_text(), RECORD_FILE)
    for config_file in (source / "policies" / "config").iterdir():
        target = policies / "config" / config_file.name
        if config_file.name == f"{STACK}.json":
            target.write_text(pack_config(config_file.read_text(), parsed.services))
        else:
            target.symlink_to(config_file)


def preflight_once(project: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(ROOT), STACK, str(project)],
        capture_output=True,
        text=True,
        env=env(),
        check=False,
    )
    wall = time.perf_counter() - t0
    try:
        timings: dict[str, Any] = json.loads(done.stderr.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise SystemExit(f"preflight of {project} failed (exit {done.returncode}):\n{done.stderr}") from None
    if timings["code"] == 2:
        raise SystemExit(f"preflight of {project} failed: {timings['error']}")
    timings["wall"] = wall
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 50], help="services per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per size (medians)")
    parser.add_argument("--no-floor", action="store_true", help="skip the SDK floor (halves the time)")
    parser.add_argument(
        "--source", type=Path, default=ROOT, help="the project whose program and pack run (default: this one)"
    )
    args = parser.parse_args()
    print(
        f"{'services':>8} {'res':>5} {'wall':>7} {'program':>7} {'imports':>7} {'register':>8} "
        f"{'analyze':>7} {'ms/res':>6} {'+ms/svc':>7} {'rss':>5} {'pack':>5} {'floor':>6} {'fl ms/res':>9} "
        f"{'reg/floor':>9}"
    )
    previous: tuple[int, float] | None = None
    modules: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="preflight-scaling-") as tmp:
        for size in args.sizes:
            project = project_with(args.source.resolve(), size, Path(tmp) / f"services-{size}")
            samples = [preflight_once(project) for _ in range(args.runs)]
            modules.update(samples[0]["modules"])
            resources = int(samples[0]["resources"])

            def median(key: str, samples: list[dict[str, Any]] = samples) -> float:
                return statistics.median(float(s.get(key, 0.0)) for s in samples)

            wall, program, imports = median("wall"), median("program"), median("program_imports")
            register = statistics.median(s["program"] - s["program_imports"] for s in samples)
            marginal = f"{1000 * (wall - previous[1]) / (size - previous[0]):>7.0f}" if previous else " " * 7
            previous = (size, wall)
            line = (
                f"{size:>8} {resources:>5} {wall:>6.2f}s {program:>6.2f}s {imports:>6.2f}s {register:>7.2f}s "
                f"{median('analyze'):>6.2f}s {1000 * register / resources:>6.2f} {marginal} "
                f"{max(s['rss'] for s in samples):>5.0f} {max(s['pack_rss'] for s in samples):>5.0f}"
            )
            if not args.no_floor:
                floor = sdk_floor(resources, args.runs)
                line += f" {floor:>5.2f}s {1000 * floor / resources:>9.2f} {register / floor:>9.1f}"
            print(line, flush=True)
    providers = provider_modules(modules)
    print(
        f"import floor: {import_floor(providers, args.runs):.2f}s (a fresh python importing the "
        f"{len(providers)} provider modules the program loaded); medians of {args.runs} run(s); "
        f"{os.cpu_count()} cores; python {sys.version.split()[0]}; load average {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
