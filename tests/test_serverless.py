"""Cloud Run and ACI: shapes, and plan comparisons proving a shift changes only traffics / origins."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from components.rollout import SlotPlan
from components.targets.aci import origin_weight
from components.targets.cloudrun import revision_name, tagged_url
from preflight.cli import main
from preflight.engine import ProgramRun
from preflight.report import Preflight
from tests.conftest import diff, project_copy, run_config, stack_file

RUN = "gcp:cloudrunv2/service:Service"
INVOKER = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
GROUP = "azure-native:containerinstance:ContainerGroup"
ORIGIN = "azure-native:cdn:AFDOrigin"


def traffics(run: ProgramRun) -> list[tuple[str, int, str]]:
    return [
        (t["revision"], int(t["percent"]), t["tag"]) for t in run.get(RUN, "web-cloudrun").inputs["traffics"]
    ]


def by_version(run: ProgramRun) -> list[tuple[str, int, str]]:
    """`traffics` with each revision as its `<service>-<version>` part (names end in `--<template hash>`)."""
    found = []
    for revision, percent, tag in traffics(run):
        base, _, digest = revision.partition("--")
        assert re.fullmatch(r"[0-9a-f]{8}", digest), revision
        found.append((base, percent, tag))
    return found


def origins(run: ProgramRun) -> dict[str, tuple[int, str]]:
    return {
        r.inputs["originName"]: (int(r.inputs["weight"]), r.inputs["enabledState"])
        for r in run.by_type(ORIGIN)
        if not r.name.endswith("-header-origin")  # a header route's own origin group (A/B)
    }


def rollout_edit(stack: str, service: int, mutate: Any) -> dict[str, Any]:
    config = stack_file(stack)["config"]
    mutate(config["pouw-cicd:services"][service]["rollout"])
    return config


def test_cloud_run_canary_shape(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["prod"].run
    service = run.get(RUN, "web-cloudrun").inputs
    # The template is the revision this update introduces; stable routes to the one already there.
    assert service["template"]["revision"].startswith("web-1-4-2--")
    assert by_version(run) == [("web-1-4-1", 90, "stable"), ("web-1-4-2", 10, "canary")]
    assert traffics(run)[1][0] == service["template"]["revision"]
    assert service["ingress"] == "INGRESS_TRAFFIC_INTERNAL_AND_CLOUD_LOAD_BALANCING"
    assert service["deletionProtection"] is True
    assert service["template"]["serviceAccount"] == "run-web@pouw-prod.iam.gserviceaccount.com"
    container = service["template"]["containers"][0]
    assert container["image"] == run.outputs["web"]["images"]["artifactRegistry"]
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    out = run.outputs["web"]["cloudrun"]
    assert (
        out["previewUrl"]
        == tagged_url(out["url"], "canary")
        == "https://canary---web-x7q2ab3c4d-ew.a.run.app"
    )
    assert out["images"]["stable"].startswith("europe-west1-docker.pkg.dev/pouw-prod/containers/web@sha256:")
    assert {r.inputs["member"] for r in run.by_type(INVOKER) if r.inputs["role"] == "roles/run.invoker"} == {
        "serviceAccount:edge-lb@pouw-prod.iam.gserviceaccount.com"
    }
    # The only other member of the service: the deploy identity, which manages its invokers.
    assert {(r.inputs["role"], r.inputs["member"]) for r in run.by_type(INVOKER)} - {
        ("roles/run.invoker", "serviceAccount:edge-lb@pouw-prod.iam.gserviceaccount.com")
    } == {("roles/run.admin", "serviceAccount:deploy-prod@pouw-prod.iam.gserviceaccount.com")}
    pull = run.get("gcp:artifactregistry/repositoryIamMember:RepositoryIamMember", "web-cloudrun-pull").inputs
    assert pull["role"] == "roles/artifactregistry.reader"
    assert pull["member"] == "serviceAccount:run-web@pouw-prod.iam.gserviceaccount.com"


def test_cloud_run_blue_green_and_defaults(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["staging"].run
    assert by_version(run) == [("web-1-4-1", 100, "blue"), ("web-1-4-2", 0, "green")]
    assert run.get(RUN, "web-cloudrun").inputs["ingress"] == "INGRESS_TRAFFIC_ALL"  # not prod


def test_cloud_run_weight_change_alters_only_traffics(tmp_path: Path) -> None:
    before = run_config(tmp_path / "a", "prod", stack_file("prod")["config"])

    def shift(rollout: dict[str, Any]) -> None:
        rollout["slots"]["stable"]["weight"], rollout["slots"]["canary"]["weight"] = 50, 50

    after = run_config(tmp_path / "b", "prod", rollout_edit("prod", 0, shift))
    a, b = before.get(RUN, "web-cloudrun").inputs, after.get(RUN, "web-cloudrun").inputs
    assert {k for k in a if a[k] != b[k]} == {"traffics"}  # the template (a new revision) never changes
    assert traffics(after) == [(revision, 50, tag) for revision, _, tag in traffics(before)]
    assert by_version(after) == [("web-1-4-1", 50, "stable"), ("web-1-4-2", 50, "canary")]
    assert (RUN, "web-cloudrun") in diff(before, after)["changed"]


def test_cloud_run_promotion_is_a_traffic_change(tmp_path: Path) -> None:
    before = run_config(tmp_path / "a", "prod", stack_file("prod")["config"])

    def promote(rollout: dict[str, Any]) -> None:
        rollout["slots"] = {"stable": {"version": "1.4.2", "weight": 100}}
        rollout["steps"] = []

    after = run_config(tmp_path / "b", "prod", rollout_edit("prod", 0, promote))
    a, b = before.get(RUN, "web-cloudrun").inputs, after.get(RUN, "web-cloudrun").inputs
    assert a["template"]["revision"] == b["template"]["revision"]
    assert traffics(after) == [(a["template"]["revision"], 100, "stable")]
    assert by_version(after) == [("web-1-4-2", 100, "stable")]


def test_aci_blue_green_shape(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["prod"].run
    assert {r.name for r in run.by_type(GROUP)} == {"worker-aci-blue", "worker-aci-green"}
    assert origins(run) == {"blue": (1000, "Enabled"), "green": (1, "Disabled")}
    green = run.get(GROUP, "worker-aci-green").inputs
    assert green["osType"] == "Linux" and green["restartPolicy"] == "Always"
    assert green["identity"]["type"] == "UserAssigned"
    (credential,) = green["imageRegistryCredentials"]
    assert credential["server"] == "pouwcicdprod.azurecr.io" and "password" not in credential
    (container,) = green["containers"]
    assert container["image"] == run.outputs["worker"]["images"]["acr"]
    secure = [e for e in container["environmentVariables"] if e["name"] == "DATABASE_URL"]
    assert (
        secure and "value" not in secure[0] and secure[0]["secureValue"]["4dabf18193072939515e22adb298388d"]
    )
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    group = run.get("azure-native:cdn:AFDOriginGroup", "worker-aci-origins").inputs
    assert group["loadBalancingSettings"]["additionalLatencyInMilliseconds"] == 1000
    assert group["healthProbeSettings"]["probePath"] == "/health"
    route = run.get("azure-native:cdn:Route", "worker-aci-route").inputs
    assert route["httpsRedirect"] == "Enabled" and route["patternsToMatch"] == ["/*"]
    pull = run.get("azure-native:authorization:RoleAssignment", "worker-aci-acr-pull").inputs
    assert pull["roleDefinitionId"].endswith("/roleDefinitions/7f951dda-4ed3-4680-a7ca-43fe172d538d")
    out = run.outputs["worker"]["aci"]
    assert out["previewUrl"] == "http://worker-green-prod.westeurope.azurecontainer.io:9090"
    assert out["url"] == "https://worker-prod-abc123.z01.azurefd.net"


def test_aci_canary_and_weight_change_alters_only_origins(
    stack_runs: dict[str, Preflight], tmp_path: Path
) -> None:
    assert origins(stack_runs["staging"].run) == {"stable": (800, "Enabled"), "canary": (200, "Enabled")}
    before = run_config(tmp_path / "a", "staging", stack_file("staging")["config"])

    def all_in(rollout: dict[str, Any]) -> None:
        rollout["slots"]["stable"]["weight"], rollout["slots"]["canary"]["weight"] = 0, 100

    after = run_config(tmp_path / "b", "staging", rollout_edit("staging", 1, all_in))
    changed = {(t, n) for t, n in diff(before, after)["changed"] if n.startswith("worker-aci")}
    assert changed == {(ORIGIN, "worker-aci-stable"), (ORIGIN, "worker-aci-canary")}
    assert origins(after) == {"stable": (1, "Disabled"), "canary": (1000, "Enabled")}


@pytest.mark.parametrize(
    ("weight", "expected"),
    [(0, (1, "Disabled")), (1, (10, "Enabled")), (50, (500, "Enabled")), (100, (1000, "Enabled"))],
)
def test_origin_weight(weight: int, expected: tuple[int, str]) -> None:
    assert origin_weight(SlotPlan("canary", "1.0.0", weight, True, 1, 1)) == expected


@pytest.mark.parametrize(
    ("service", "version", "expected"),
    [
        ("web", "1.4.2", "web-1-4-2"),
        ("web", "1.5.0-RC.1", "web-1-5-0-rc-1"),
        ("a" * 40, "9" * 40, ("a" * 40 + "-" + "9" * 40)[:63]),
    ],
)
def test_revision_names(service: str, version: str, expected: str) -> None:
    assert revision_name(service, version) == expected
    assert len(expected) <= 63


def test_public_invoker_in_prod_is_blocked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = stack_file("prod")["config"]
    config["pouw-cicd:cloudRun"]["allowPublic"] = True
    project = project_copy(tmp_path, "prod", config)
    assert main(["--stack", "prod", "--project-dir", str(project)]) == 1
    assert "cloudrun-no-public-invoker" in capsys.readouterr().out
