"""Contract tests: every registered target is covered by the policy pack, found from the registry.

A target declares its workload and routing types (`Target.workload_types`, `routing_types`). For
each one, over the resources the project stacks really make of that type:
- the image policies catch a workload image that is not pinned by digest, or not from an approved
  registry (each image reference in the resource is rewritten, then sent through the Analyzer protocol);
- some workload policy (outside the image and quality families) is declared for the type (the pack's
  own type filters, read in the pack's interpreter);
- the traffic-split policy catches a weight that no longer sums to 100 on every routing type that
  carries weights; a routing type without weights (a Service selector) still has a policy of its own.

A target added to `TARGETS` without teaching the pack its types fails here, naming the target, the
type and the policy.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import empty_pb2

from components.targets import TARGETS
from preflight.analyzer import PolicyPackProcess, analyze, load_policy_config
from preflight.engine import Registration
from preflight.report import Preflight
from tests.conftest import ROOT

DIGEST_REF = re.compile(r"(?P<repo>[a-z0-9.-]+(?::[0-9]+)?/[A-Za-z0-9._/-]+)@sha256:[0-9a-f]{64}")
IMAGE_POLICIES = ("image-digest-pinned", "image-approved-registries")
SPLIT_POLICY = "rollout-weights-sum-100"
WEIGHT_KEYS = ("weight", "percent")
# Families whose policies are not about how a workload runs.
NOT_WORKLOAD_FAMILIES = {"family:images-registries", "family:quality"}
ENFORCED = ("staging", "prod")


def _rewrite(value: Any, strings: Callable[[str], str]) -> Any:
    """`value` with `strings` applied to every string, JSON documents inside strings included."""
    if isinstance(value, dict):
        return {k: _rewrite(v, strings) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, strings) for v in value]
    if isinstance(value, str):
        return strings(value)
    return value


def _shift_weights(value: Any) -> tuple[Any, int]:
    """`value` with every weight/percent raised by 7 (inside embedded JSON too), and how many."""
    if isinstance(value, dict):
        shifted, count = {}, 0
        for k, v in value.items():
            # Numbers arrive as floats on the wire (80.0).
            if k in WEIGHT_KEYS and isinstance(v, int | float) and not isinstance(v, bool):
                shifted[k], count = v + 7, count + 1
            else:
                shifted[k], n = _shift_weights(v)
                count += n
        return shifted, count
    if isinstance(value, list):
        pairs = [_shift_weights(v) for v in value]
        return [p for p, _ in pairs], sum(n for _, n in pairs)
    if isinstance(value, str) and value[:1] in "{[":
        try:
            document = json.loads(value)
        except ValueError:
            return value, 0
        shifted, count = _shift_weights(document)
        return (json.dumps(shifted) if count else value), count
    return value, 0


def _resources(stack_runs: dict[str, Preflight], types: Any) -> Iterator[tuple[str, Registration]]:
    """The enforced stacks' resources of these types (staging and prod use every target between them,
    and their policy configs carry the registry allow-lists)."""
    for stack, run in stack_runs.items():
        if stack not in ENFORCED:
            continue
        for r in run.run.resources:
            if r.type in types:
                yield stack, r


def _violations(
    pack: PolicyPackProcess, run: Preflight, resources: list[Registration], policy: str
) -> set[tuple[str, str]]:
    """The policy's verdicts on `resources` under the stack's own policy config (its allow-lists)."""
    result = analyze(pack, resources, load_policy_config(Path(run.policy_config)))
    return {(v.urn, v.detail) for v in result.violations if v.policy == policy}


def _replaced(resources: list[Registration], target: Registration, inputs: Any) -> list[Registration]:
    changed = copy.copy(target)
    changed.inputs = inputs
    return [changed if r.urn == target.urn else r for r in resources]


@pytest.fixture(scope="module")
def type_filters() -> dict[str, dict[str, Any]]:
    """Each resource policy's family and which of the targets' types its type filter accepts, as the
    pack itself declares them (its modules imported in its own interpreter, as `__main__` does)."""
    types = sorted(
        {t for target in TARGETS.values() for t in (*target.workload_types, *target.routing_types)}
    )
    script = f"""
import importlib, json, pathlib
for path in sorted(pathlib.Path('.').glob('*.py')):
    if path.stem not in ('__main__', 'shared_analysis'):
        importlib.import_module(path.stem)
from pack_support import REGISTRY, TYPE_FILTERS
types = {types!r}
print(json.dumps({{p.name: {{'families': [t for t in p.tags if t.startswith('family:')],
    'types': [t for t in types if TYPE_FILTERS[p.name](t)]}} for p in REGISTRY if p.name in TYPE_FILTERS}}))
"""
    python = ROOT / "policies" / "venv" / "bin" / "python"
    out = subprocess.run(
        [str(python), "-c", script], cwd=ROOT / "policies", capture_output=True, text=True, check=True
    )
    filters: dict[str, dict[str, Any]] = json.loads(out.stdout)
    return filters


def test_the_pack_knows_the_contract_policies(pack: PolicyPackProcess) -> None:
    names = {p.name for p in pack.stub.GetAnalyzerInfo(empty_pb2.Empty()).policies}
    assert {*IMAGE_POLICIES, SPLIT_POLICY} <= names


@pytest.mark.parametrize("key", sorted(TARGETS))
def test_workload_images_are_gated(
    key: str, stack_runs: dict[str, Preflight], pack: PolicyPackProcess
) -> None:
    target = TARGETS[key]
    by_stack: dict[str, list[Registration]] = {s: run.run.resources for s, run in stack_runs.items()}
    checked: set[str] = set()
    for stack, r in _resources(stack_runs, target.workload_types):
        if not DIGEST_REF.search(json.dumps(r.inputs)) or r.type in checked:
            continue  # e.g. an ECS service: its image is in the task definition
        checked.add(r.type)
        rewrites = {
            "image-digest-pinned": lambda s: DIGEST_REF.sub(lambda m: f"{m['repo']}:1.0.0", s),
            "image-approved-registries": lambda s: DIGEST_REF.sub(
                lambda m: f"docker.io/someone/app@sha256:{'0' * 64}", s
            ),
        }
        for policy, strings in rewrites.items():
            resources = _replaced(by_stack[stack], r, _rewrite(r.inputs, strings))
            before = _violations(pack, stack_runs[stack], by_stack[stack], policy)
            after = _violations(pack, stack_runs[stack], resources, policy)
            assert any(urn == r.urn for urn, _ in after - before), (
                f"target {key}: policy {policy} does not check the images of {r.type} ({stack} {r.name})"
            )
    assert checked, (
        f"target {key}: no workload of {sorted(target.workload_types)} carries an image in any stack"
    )


@pytest.mark.parametrize("key", sorted(TARGETS))
def test_workload_types_have_workload_policies(key: str, type_filters: dict[str, dict[str, Any]]) -> None:
    for type_ in TARGETS[key].workload_types:
        policies = [
            name
            for name, f in type_filters.items()
            if type_ in f["types"] and not set(f["families"]) & NOT_WORKLOAD_FAMILIES
        ]
        assert policies, f"target {key}: no workload security policy is declared for {type_}"


@pytest.mark.parametrize("key", sorted(TARGETS))
def test_routing_types_are_gated(
    key: str,
    stack_runs: dict[str, Preflight],
    pack: PolicyPackProcess,
    type_filters: dict[str, dict[str, Any]],
) -> None:
    target = TARGETS[key]
    seen: set[str] = set()
    weighted: set[str] = set()
    for stack, r in _resources(stack_runs, target.routing_types):
        seen.add(r.type)
        if r.type in weighted:
            continue
        inputs, count = _shift_weights(r.inputs)
        if not count:
            continue
        weighted.add(r.type)
        resources = stack_runs[stack].run.resources
        before = _violations(pack, stack_runs[stack], resources, SPLIT_POLICY)
        after = _violations(pack, stack_runs[stack], _replaced(resources, r, inputs), SPLIT_POLICY)
        same_type = {x.urn for x in resources if x.type == r.type}
        assert any(urn in same_type for urn, _ in after - before), (
            f"target {key}: policy {SPLIT_POLICY} does not check the weights of {r.type} ({stack} {r.name})"
        )
    assert seen == set(target.routing_types), (
        f"target {key}: no stack makes {sorted(set(target.routing_types) - seen)}; exercise it in a stack"
    )
    assert weighted, f"target {key}: none of {sorted(target.routing_types)} carries weights in any stack"
    for type_ in set(target.routing_types) - weighted:
        assert any(type_ in f["types"] for f in type_filters.values()), (
            f"target {key}: no policy is declared for its routing type {type_}"
        )
