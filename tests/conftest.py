"""Shared helpers: run the real program under mocks, and the real pack over gRPC."""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.releases import RECORD_FILE
from preflight.analyzer import PolicyPackProcess
from preflight.cli import run_preflight
from preflight.engine import ProgramRun, plan_diff, run_program
from preflight.report import Preflight
from preflight.stackconfig import StackConfig, load_stack_config

ROOT = Path(__file__).resolve().parent.parent


# Collection imports every provider SDK the tests use: with the cyclic collector running, their
# millions of new objects trigger full collections over and over (the engine and preflight's diff
# pause it around the same imports). Paused until collection is over, then frozen out of its way.
# (Hooks, not at import: bench/ imports this module for its helpers and keeps its collector.)
def pytest_configure(config: pytest.Config) -> None:
    gc.disable()


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.freeze()
    gc.enable()


STACKS = ("dev", "staging", "prod")
PROJECT_ENTRIES = ("Pulumi.yaml", "__main__.py", "components", "policies", "app")


def stack_file(stack: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    return data


def sample_digest(service: str, version: str) -> str:
    """How releases.yaml's sample entries are made: the sha256 of a label, the digest of no image."""
    return "sha256:" + hashlib.sha256(f"sample {service} {version}".encode()).hexdigest()


def released(config: dict[str, Any]) -> dict[str, Any]:
    """The project's release record plus, outside dev, an entry for every version the config deploys
    (service version and slot versions): what a test stack that deploys is given as released. A
    test of an unreleased version passes its own record to `project_copy`."""
    record: dict[str, Any] = yaml.safe_load((ROOT / RECORD_FILE).read_text()) or {}
    listed = record.setdefault("services", {})
    if config.get("pouw-cicd:environment") == "dev":
        return record
    for service in config.get("pouw-cicd:services") or []:
        if not isinstance(service, dict) or not isinstance(service.get("name"), str):
            continue
        slots = ((service.get("rollout") or {}).get("slots") or {}).values()
        versions = {service.get("version"), *(s.get("version") for s in slots if isinstance(s, dict))}
        for version in sorted(v for v in versions if isinstance(v, str)):
            entry = {
                "repository": f"ghcr.io/pouw/{service['name']}",
                "digest": sample_digest(service["name"], version),
            }
            listed.setdefault(service["name"], {}).setdefault(version, entry)
    return record


def project_copy(
    tmp_path: Path, stack: str, config: dict[str, Any], record: dict[str, Any] | None = None
) -> Path:
    """A project dir that shares the real code (symlinks) but has its own stack file and release record
    (`record`, else `released(config)`)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    for entry in PROJECT_ENTRIES:
        (tmp_path / entry).symlink_to(ROOT / entry)
    (tmp_path / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}, sort_keys=False))
    chosen = released(config) if record is None else record
    (tmp_path / RECORD_FILE).write_text(yaml.safe_dump(chosen, sort_keys=False))
    return tmp_path


# The program's runs on this project's code (what project_copy links), by what else determines them:
# the stack, its config as the program receives it, and the environment (the program reads some of
# it, GITHUB_SHA for one; pytest's own per-test variable aside). The same stack, config and environment
# give the same ProgramRun, so a repeated one is not run again; tests only read the runs they share.
# Kept: the stack files' own runs (stack_runs holds them anyway) and the RECENT_RUNS latest others (a
# test file's tests mostly repeat each other's configs; keeping every run would hold them all in memory:
# a prod run's registrations pickle to 0.7 MB). 8 missed the repeats of a file whose parametrised
# tests each run five configs (test_strategy_switch.py), so 32.
_STACK_FILE_RUNS: dict[tuple[Any, ...], ProgramRun] = {}
_RECENT: OrderedDict[tuple[Any, ...], ProgramRun] = OrderedDict()
RECENT_RUNS = 32
_PER_TEST_ENV = "PYTEST_CURRENT_TEST"


def _run_key(config: StackConfig) -> tuple[Any, ...]:
    environment = tuple(sorted((k, v) for k, v in os.environ.items() if k != _PER_TEST_ENV))
    return (
        config.project,
        config.stack,
        tuple(sorted(config.values.items())),
        tuple(config.secret_keys),
        environment,
    )


def _record_key(path: Path) -> str:
    """What a release record says (not how it is spelled): part of what determines a run."""
    return json.dumps(yaml.safe_load(path.read_text()), sort_keys=True)


def run_config(
    tmp_path: Path, stack: str, config: dict[str, Any], record: dict[str, Any] | None = None
) -> ProgramRun:
    """The program on `config` (a stack file's `config:` mapping), run unless the same run is kept;
    `record`: the release record (default `released(config)`)."""
    project = project_copy(tmp_path, stack, config, record)
    stack_config = load_stack_config(project, stack)
    return kept_run(project, stack_config, "__main__.py", lambda: run_program(project, stack_config))


def _kept_key(project: Path, config: StackConfig, program: Hashable) -> tuple[Any, ...]:
    return (*_run_key(config), _record_key(project / RECORD_FILE), program)


def kept_run(
    project: Path, config: StackConfig, program: Hashable, run: Callable[[], ProgramRun]
) -> ProgramRun:
    """`run()` unless a run of the same `program` (`"__main__.py"`, or what else the caller runs on
    this project's code) on the same config, environment and release record is kept."""
    key = _kept_key(project, config, program)
    if key in _STACK_FILE_RUNS:
        return _STACK_FILE_RUNS[key]
    done = _RECENT.pop(key, None) or run()
    _RECENT[key] = done  # now the latest
    while len(_RECENT) > RECENT_RUNS:
        _RECENT.popitem(last=False)
    return done


def stack_file_run(stack: str) -> ProgramRun:
    """The program on the project's own stack file and release record: stack_runs' run when that
    fixture ran first in this process, else run here (and kept as any other run)."""
    config = load_stack_config(ROOT, stack)
    return kept_run(ROOT, config, "__main__.py", lambda: run_program(ROOT, config))


@pytest.fixture(scope="session")
def stack_runs() -> dict[str, Preflight]:
    """Each project stack through the whole preflight once per session (program + pack); its program
    runs are also what run_config answers for the stack files' own configs."""
    results = {stack: run_preflight(stack) for stack in STACKS}
    for result in results.values():
        _STACK_FILE_RUNS[_kept_key(ROOT, result.config, "__main__.py")] = result.run
    return results


@pytest.fixture(scope="session")
def pack() -> Iterator[PolicyPackProcess]:
    """One pack process per test process: every analysis opens, configures and analyses from scratch
    (Handshake, ConfigureStack, Configure with every policy's level), so rounds share no state."""
    with PolicyPackProcess(ROOT / "policies", project="pouw-cicd", stack="test") as running:
        yield running


def diff(before: ProgramRun, after: ProgramRun) -> dict[str, set[tuple[str, str]]]:
    """The engine's plan diff as plain sets, for compact assertions."""
    change = plan_diff(before, after)
    return {"added": set(change.added), "removed": set(change.removed), "changed": set(change.changed)}


def comparable_plan(run: ProgramRun) -> dict[str, Any]:
    """A run's registrations, outputs and error as JSON data, ordered as `ordered_plan` orders them."""
    data = {
        "resources": [dataclasses.asdict(r) for r in run.resources],
        "outputs": run.outputs,
        "secret_outputs": run.secret_outputs,
        "error": run.error_text,
    }
    return ordered_plan(json.loads(json.dumps(data, default=str)))


def ordered_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """Registrations by URN and dependencies as sets: the order the SDK registers resources in, and
    the order of the dependency sets it collects, differ between any two runs, whatever the loading."""
    resources = {}
    for resource in plan["resources"]:
        resource["dependencies"] = sorted(resource["dependencies"])
        by_property = resource["property_dependencies"]
        resource["property_dependencies"] = {k: sorted(v) for k, v in by_property.items()}
        resources[resource["urn"]] = resource
    assert len(resources) == len(plan["resources"])
    return {**plan, "resources": resources}
