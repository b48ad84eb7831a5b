"""A strategy switch keeps the serving workload and routes to a new slot only once it is ready.

Plan comparisons on every target at once (one service on EKS, ECS, ACI and Cloud Run): for each
switch the stack file names the live slot's workload, and the live workloads' inputs must be
identical before and after (no replacement, no restart); the new slot's workload is created and
every routing resource depends on the workloads, so the engine creates (and awaits) them first.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from preflight.engine import ProgramRun, run_program
from preflight.stackconfig import load_stack_config
from tests.conftest import project_copy, stack_file

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
K8S_SERVICE = "kubernetes:core/v1:Service"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
ECS_SERVICE = "aws:ecs/service:Service"
RULE = "aws:lb/listenerRule:ListenerRule"
GROUP = "azure-native:containerinstance:ContainerGroup"
ORIGIN = "azure-native:cdn:AFDOrigin"
RUN = "gcp:cloudrunv2/service:Service"
# The physical workloads of one slot on each target, by logical-name suffix.
WORKLOADS = {DEPLOYMENT: "eks", TASK: "ecs", ECS_SERVICE: "ecs", GROUP: "aci"}


def config(version: str, rollout: dict[str, Any]) -> dict[str, Any]:
    """prod's stack with one service `app` on all four targets."""
    base = copy.deepcopy(stack_file("prod")["config"])
    web = base["pouw-cicd:services"][0]
    web.update(name="app", version=version, targets=["eks", "ecs", "aci", "cloudrun"], rollout=rollout)
    base["pouw-cicd:services"] = [web]
    base.pop("pouw-cicd:workerDatabaseUrl")
    return base


def run(
    tmp_path: Path, name: str, version: str, rollout: dict[str, Any], registry: dict[str, str]
) -> ProgramRun:
    project = project_copy(tmp_path / name, "prod", config(version, rollout))
    result = run_program(project, load_stack_config(project, "prod"), registry=registry)
    assert result.error is None, result.error_text
    return result


def workload(result: ProgramRun, type_: str, lane: str) -> dict[str, Any]:
    inputs: dict[str, Any] = result.get(type_, f"app-{WORKLOADS[type_]}-{lane}").inputs
    return inputs


def lanes(result: ProgramRun, type_: str) -> set[str]:
    prefix = f"app-{WORKLOADS[type_]}-"
    return {r.name[len(prefix) :] for r in result.by_type(type_)}


ROLLING = {"strategy": "rolling"}
CANARY = {
    "strategy": "canary",
    "slots": {"stable": {"version": "1.0.0"}, "canary": {"version": "1.1.0", "weight": 10}},
}
BLUE_GREEN = {
    "strategy": "blue-green",
    "activeSlot": "blue",
    "slots": {"blue": {"version": "1.0.0"}, "green": {"version": "1.1.0"}},
}
# (before version, before rollout, after version, after rollout, lanes kept, lanes created)
SWITCHES = {
    "rolling-to-canary": (
        "1.0.0",
        ROLLING,
        "1.1.0",
        {
            "strategy": "canary",
            "slots": {
                "stable": {"version": "1.0.0", "workload": "main"},
                "canary": {"version": "1.1.0", "weight": 10},
            },
        },
        {"main"},
        {"canary"},
    ),
    "rolling-to-blue-green": (
        "1.0.0",
        ROLLING,
        "1.1.0",
        {
            "strategy": "blue-green",
            "activeSlot": "blue",
            "slots": {"blue": {"version": "1.0.0", "workload": "main"}, "green": {"version": "1.1.0"}},
        },
        {"main"},
        {"green"},
    ),
    "canary-to-blue-green": (
        "1.1.0",
        CANARY,
        "1.1.0",
        {
            "strategy": "blue-green",
            "activeSlot": "blue",
            "slots": {
                "blue": {"version": "1.0.0", "workload": "stable"},
                "green": {"version": "1.1.0", "workload": "canary"},
            },
        },
        {"stable", "canary"},
        set(),
    ),
    "blue-green-to-canary": (
        "1.1.0",
        BLUE_GREEN,
        "1.1.0",
        {
            "strategy": "canary",
            "slots": {
                "stable": {"version": "1.0.0", "workload": "blue"},
                "canary": {"version": "1.1.0", "weight": 0, "workload": "green"},
            },
        },
        {"blue", "green"},
        set(),
    ),
    "promoted-canary-to-rolling": (
        "1.1.0",
        {"strategy": "canary", "slots": {"stable": {"version": "1.1.0"}}},
        "1.1.0",
        {"strategy": "rolling", "workload": "stable"},
        {"stable"},
        set(),
    ),
}


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_switch_keeps_the_live_workloads_on_every_target(tmp_path: Path, switch: str) -> None:
    old_version, old_rollout, new_version, new_rollout, kept, created = SWITCHES[switch]
    registry: dict[str, str] = {}  # what the first update pushed, as the registry keeps it
    before = run(tmp_path, "before", old_version, old_rollout, registry)
    after = run(tmp_path, "after", new_version, new_rollout, registry)
    for type_ in WORKLOADS:
        assert lanes(before, type_) >= kept
        assert lanes(after, type_) == kept | created, type_
        for lane in kept:
            # Same URN, same inputs: nothing is replaced, no pod, task or container restarts.
            assert workload(after, type_, lane) == workload(before, type_, lane), (type_, lane)
    # Cloud Run names revisions by version: the template (this update's revision) only changes
    # when the built version does, and the switch itself is a traffic change.
    if old_version == new_version:
        assert (
            after.get(RUN, "app-cloudrun").inputs["template"]
            == before.get(RUN, "app-cloudrun").inputs["template"]
        )


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_routing_waits_for_every_workload(tmp_path: Path, switch: str) -> None:
    _, _, version, rollout, _, _ = SWITCHES[switch]
    after = run(tmp_path, "after", version, rollout, {})
    deployments = {r.urn for r in after.by_type(DEPLOYMENT)}
    for routing in after.by_type(INGRESS) + after.by_type(K8S_SERVICE):
        assert deployments <= set(routing.dependencies), routing.name
    services = {r.urn for r in after.by_type(ECS_SERVICE)}
    traffic = after.get(RULE, "app-ecs-traffic")
    assert services <= set(traffic.dependencies)
    for service in after.by_type(ECS_SERVICE):
        assert service.inputs["waitForSteadyState"] is True
        # ...and each service's target group is attached (test listener) before the service exists.
        assert after.get(RULE, "app-ecs-preview").urn in service.dependencies
    groups = {r.urn for r in after.by_type(GROUP)}
    for origin in after.by_type(ORIGIN):
        assert set(origin.dependencies) & groups, origin.name


def test_switch_without_naming_the_live_workload_replaces_it(tmp_path: Path) -> None:
    """Why `workload:` exists: a canary's slots default to their own names, so `main` would go."""
    before = run(tmp_path, "before", "1.0.0", ROLLING, {})
    after = run(tmp_path, "after", "1.1.0", CANARY, {})
    assert lanes(before, DEPLOYMENT) == {"main"}
    assert lanes(after, DEPLOYMENT) == {"stable", "canary"}


def test_two_slots_cannot_share_a_workload(tmp_path: Path) -> None:
    rollout = {
        "strategy": "blue-green",
        "activeSlot": "blue",
        "slots": {
            "blue": {"version": "1.0.0", "workload": "main"},
            "green": {"version": "1.1.0", "workload": "main"},
        },
    }
    project = project_copy(tmp_path, "prod", config("1.1.0", rollout))
    result = run_program(project, load_stack_config(project, "prod"))
    assert result.resources == []
    assert "pouw-cicd:services[0].rollout.slots.blue.workload: 'main' runs two slots" in result.error_text
