"""What every Gateway API target (GKE, AKS) does the same way through the shared Kubernetes layer:
a traffic shift changes only the HTTPRoute's weights and the slots' scaling bounds, and a blue-green
switch only the stable Services' selectors. Each target is built alone (tests/test_targets.py `build`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from preflight.engine import ProgramRun, Registration
from tests.conftest import diff
from tests.test_targets import build

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
ROUTE = "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute"
# target -> (the stack and service that run on it, the two versions its slots take)
GATEWAY_TARGETS = {
    "gke": ("prod", "web", ("1.4.1", "1.4.2")),
    "aks": ("staging", "worker", ("2.0.0", "2.0.1")),
}


def k8s(run: ProgramRun, type_: str, name: str) -> Registration:
    return next(r for r in run.by_type(type_) if r.inputs["metadata"]["name"] == name)


def route_weights(run: ProgramRun, service: str) -> dict[str, int]:
    (rule,) = k8s(run, ROUTE, service).inputs["spec"]["rules"]
    return {b["name"]: int(b.get("weight", 1)) for b in rule["backendRefs"]}


def with_rollout(service: str, rollout: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(config: dict[str, Any]) -> None:
        next(s for s in config["pouw-cicd:services"] if s["name"] == service)["rollout"] = rollout

    return mutate


@pytest.mark.parametrize("key", sorted(GATEWAY_TARGETS))
def test_a_traffic_shift_changes_only_routing(tmp_path: Path, key: str) -> None:
    stack, service, (old, new) = GATEWAY_TARGETS[key]

    def canary(weight: int) -> Callable[[dict[str, Any]], None]:
        slots = {"stable": {"version": old}, "canary": {"version": new, "weight": weight}}
        return with_rollout(service, {"strategy": "canary", "slots": slots})

    before = build(tmp_path / "before", stack, [key], canary(10))
    after = build(tmp_path / "after", stack, [key], canary(50))
    assert route_weights(after, service) == {f"{service}-stable": 50, f"{service}-canary": 50}
    change = diff(before, after)
    assert not change["added"] and not change["removed"]
    changed_types = {t for t, _ in change["changed"]}
    assert ROUTE in changed_types
    assert changed_types <= {ROUTE, HPA}, change["changed"]  # capacity follows weight; no pod template
    for deployment in before.by_type(DEPLOYMENT):
        assert after.get(DEPLOYMENT, deployment.name).inputs == deployment.inputs


@pytest.mark.parametrize("key", sorted(GATEWAY_TARGETS))
def test_blue_green_switches_the_stable_service_only(tmp_path: Path, key: str) -> None:
    stack, service, (old, new) = GATEWAY_TARGETS[key]

    def active(slot: str) -> Callable[[dict[str, Any]], None]:
        slots = {"blue": {"version": old}, "green": {"version": new}}
        return with_rollout(service, {"strategy": "blue-green", "activeSlot": slot, "slots": slots})

    blue = build(tmp_path / "blue", stack, [key], active("blue"))
    green = build(tmp_path / "green", stack, [key], active("green"))
    assert route_weights(blue, service) == {service: 1}  # the route targets the stable Service, never a slot
    assert k8s(blue, SERVICE, service).inputs["spec"]["selector"]["slot"] == "blue"
    assert k8s(green, SERVICE, service).inputs["spec"]["selector"]["slot"] == "green"
    changed = diff(blue, green)["changed"]
    assert {t for t, _ in changed} == {SERVICE}, changed  # the stable and preview Services swap selectors
