"""Shared helpers: run the real program under mocks, and the real pack over gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from preflight.analyzer import PolicyPackProcess
from preflight.cli import run_preflight
from preflight.engine import ProgramRun, plan_diff, run_program
from preflight.report import Preflight
from preflight.stackconfig import load_stack_config

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("dev", "staging", "prod")
PROJECT_ENTRIES = ("Pulumi.yaml", "__main__.py", "components", "policies", "app")


def stack_file(stack: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    return data


def project_copy(tmp_path: Path, stack: str, config: dict[str, Any]) -> Path:
    """A project dir that shares the real code (symlinks) but has its own stack file."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    for entry in PROJECT_ENTRIES:
        (tmp_path / entry).symlink_to(ROOT / entry)
    (tmp_path / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}, sort_keys=False))
    return tmp_path


def run_config(tmp_path: Path, stack: str, config: dict[str, Any]) -> ProgramRun:
    project = project_copy(tmp_path, stack, config)
    return run_program(project, load_stack_config(project, stack))


@pytest.fixture(scope="session")
def stack_runs() -> dict[str, Preflight]:
    """Each project stack through the whole preflight once per session (program + pack)."""
    return {stack: run_preflight(stack) for stack in STACKS}


@pytest.fixture(scope="module")
def pack() -> Iterator[PolicyPackProcess]:
    with PolicyPackProcess(ROOT / "policies", project="pouw-cicd", stack="test") as running:
        yield running


def diff(before: ProgramRun, after: ProgramRun) -> dict[str, set[tuple[str, str]]]:
    """The engine's plan diff as plain sets, for compact assertions."""
    change = plan_diff(before, after)
    return {"added": set(change.added), "removed": set(change.removed), "changed": set(change.changed)}
