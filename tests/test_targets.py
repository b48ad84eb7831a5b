"""The Target interface: one list of targets, one container contract, components built directly.

Each target is built here without `__main__.py`: a StackContext from a stack's config, the target, and
`deploy` per service, under the same mocks preflight uses (`run_function`), so a target's test asserts
only that target.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components import settings as settings_module
from components.context import StackContext
from components.schema import ServiceSettings
from components.settings import TARGET_FIELDS, TARGET_REGISTRY, Settings
from components.targets import TARGETS
from components.targets.base import RUN_AS_UID, ContainerSpec
from preflight.diff import restarts, workload_restart_inputs
from preflight.engine import ProgramRun, run_function
from preflight.stackconfig import load_stack_config
from tests.conftest import kept_run, project_copy, stack_file

FEATURE = {"FEATURE_X": "on"}
# The service component each Kubernetes target puts its Deployments under.
K8S_COMPONENTS = {
    "pouw:index:EksService": "eks",
    "pouw:index:GkeService": "gke",
    "pouw:index:AksService": "aks",
}


def build(
    tmp_path: Path, stack: str, keys: list[str], mutate: Callable[[dict[str, Any]], None]
) -> ProgramRun:
    """The stack's services deployed to the targets in `keys` only, built directly (no __main__)."""
    config = stack_file(stack)["config"]
    mutate(config)
    project = project_copy(tmp_path, stack, config)

    def program() -> None:
        settings = settings_module.load()
        ctx = StackContext(
            settings,
            pulumi.Config(settings_module.NAMESPACE),
            needs_network=any(TARGETS[k].needs_network for k in keys),
        )
        targets = {k: TARGETS[k](ctx) for k in keys}
        for service in settings.services:
            plan = service.rollout.plan(service.version, service.replicas.min, service.replicas.max)
            image = ctx.images(service, plan)
            for key in service.targets:
                if key in targets:
                    images = ctx.slot_images(service, plan, image, targets[key].registry)
                    targets[key].deploy(service, plan, images)

    stack_config = load_stack_config(project, stack)
    run = kept_run(
        project, stack_config, ("build", tuple(keys)), lambda: run_function(program, project, stack_config)
    )
    assert run.error is None, run.error_text
    return run


def with_feature(config: dict[str, Any]) -> None:
    for service in config["pouw-cicd:services"]:
        service["environment"] = {**service.get("environment", {}), **FEATURE}


def workload_environments(run: ProgramRun) -> dict[str, list[dict[str, str]]]:
    """Every workload's container environment (name/value pairs), by target, as each platform has it."""
    found: dict[str, list[dict[str, str]]] = {key: [] for key in TARGETS}
    for r in run.by_type("kubernetes:apps/v1:Deployment"):
        (container,) = r.inputs["spec"]["template"]["spec"]["containers"]
        # The shared Kubernetes layer: which target made it is its service component's type.
        component = r.parent.split("::")[-2].rsplit("$", 1)[-1]
        key = K8S_COMPONENTS[component]
        found[key].append({e["name"]: e["value"] for e in container["env"] if "value" in e})
    for r in run.by_type("aws:ecs/taskDefinition:TaskDefinition"):
        (container,) = json.loads(r.inputs["containerDefinitions"])
        found["ecs"].append({e["name"]: e["value"] for e in container["environment"]})
    for r in run.by_type("gcp:cloudrunv2/service:Service"):
        (container,) = r.inputs["template"]["containers"]
        found["cloudrun"].append({e["name"]: e["value"] for e in container["envs"] if "value" in e})
    for r in run.by_type("azure-native:containerinstance:ContainerGroup"):
        (container,) = r.inputs["containers"]
        found["aci"].append(
            {e["name"]: e["value"] for e in container["environmentVariables"] if "value" in e}
        )
    return found


def test_the_target_list_exists_once() -> None:
    """Settings validate against the same keys and registries the registry declares."""
    assert {key: target.registry for key, target in TARGETS.items()} == TARGET_REGISTRY
    assert all(target.key == key for key, target in TARGETS.items())
    # The root model has each target's block under its settings key, typed by its own module's schema.
    for key, target in TARGETS.items():
        field = Settings.model_fields[TARGET_FIELDS[key]]
        assert field.alias == target.settings_key
        assert field.annotation == (target.settings_model | None), (key, field.annotation)
        assert target.settings_model.__module__ == target.__module__


def test_preflight_classifies_exactly_the_targets_workloads() -> None:
    """The plan diff's restart rules are the targets' own declarations, and nothing else."""
    declared = {k: v for t in TARGETS.values() for k, v in t.workload_types.items()}
    assert workload_restart_inputs() == declared
    assert restarts("kubernetes:apps/v1:Deployment", ["spec.template.spec.containers[0].image"])
    assert not restarts("kubernetes:apps/v1:Deployment", ["spec.replicas"])
    assert restarts("aws:ecs/taskDefinition:TaskDefinition", ["tags"])  # immutable: any input
    assert not restarts("aws:lb/listenerRule:ListenerRule", ["actions[0].forward"])


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_every_target_passes_the_services_environment(tmp_path: Path, stack: str) -> None:
    """The one container contract: `service.environment` reaches every workload on every target.

    (EKS used to drop it: its pod spec listed only PORT, APP_VERSION and APP_SLOT.)
    """
    run = build(tmp_path, stack, list(TARGETS), with_feature)
    environments = workload_environments(run)
    used = {t for s in stack_file(stack)["config"]["pouw-cicd:services"] for t in s["targets"]}
    assert used == set(TARGETS)  # the stack really exercises every target
    for key in TARGETS:
        assert environments[key], key
        for env in environments[key]:
            assert env.get("FEATURE_X") == "on", (key, env)
            assert env["APP_VERSION"]  # the platform's variables are there too


def test_a_target_is_built_alone(tmp_path: Path) -> None:
    """Only what the target asked for is made: ECS alone makes no EKS cluster, no Front Door."""
    run = build(tmp_path, "prod", ["ecs"], lambda config: None)
    types = {r.type for r in run.resources}
    assert "aws:ecs/cluster:Cluster" in types and "aws:ecs/service:Service" in types
    assert "aws:eks/cluster:Cluster" not in types and "azure-native:cdn:Profile" not in types
    assert "gcp:cloudrunv2/service:Service" not in types


def test_the_container_contract() -> None:
    raw = stack_file("prod")["config"]["pouw-cicd:services"]
    worker = ServiceSettings.model_validate(next(s for s in raw if s["name"] == "worker"))
    plan = worker.rollout.plan(worker.version, worker.replicas.min, worker.replicas.max)
    spec = ContainerSpec.of(worker, plan.slots[0])
    assert spec.environment == {
        "LOG_LEVEL": "info",
        "PORT": "9090",
        "APP_VERSION": plan.slots[0].version,
        "APP_SLOT": plan.slots[0].workload,
    }
    assert spec.user == f"{RUN_AS_UID}:{RUN_AS_UID}" and spec.uid == RUN_AS_UID
    # The platform's values win over a user's variable of the same name, and come last in order.
    custom = ContainerSpec.of(
        worker.model_copy(update={"environment": {"PORT": "1", "A": "b"}}), plan.slots[0]
    )
    assert custom.ordered_environment() == [
        ("A", "b"),
        ("PORT", "9090"),
        ("APP_VERSION", plan.slots[0].version),
        ("APP_SLOT", plan.slots[0].workload),
    ]
