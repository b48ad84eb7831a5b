"""The rollout helper: one-line edits that keep the stack file's comments, and honest plan differences."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest

from preflight import rollout
from preflight.rollout import RolloutEditError, edit
from tests.conftest import ROOT, project_copy, stack_file


def changed_lines(old: str, new: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def test_set_weight_is_a_one_line_edit_that_keeps_comments() -> None:
    old = (ROOT / "Pulumi.prod.yaml").read_text()
    new = edit(old, "web", "set-weight", 50)
    assert changed_lines(old, new) == [
        "-          canary: {version: 1.4.2, weight: 10}",
        "+          canary: {version: 1.4.2, weight: 50}",
    ]
    assert "# Canary: 1.4.2 takes 10% next to 1.4.1" in new  # comments survive


def test_explicit_stable_weight_moves_with_the_canary() -> None:
    old = (
        (ROOT / "Pulumi.prod.yaml")
        .read_text()
        .replace("stable: {version: 1.4.1}", "stable: {version: 1.4.1, weight: 90}")
    )
    assert changed_lines(old, edit(old, "web", "set-weight", 30)) == [
        "-          stable: {version: 1.4.1, weight: 90}",
        "-          canary: {version: 1.4.2, weight: 10}",
        "+          stable: {version: 1.4.1, weight: 70}",
        "+          canary: {version: 1.4.2, weight: 30}",
    ]


def test_promote_and_rollback() -> None:
    prod = (ROOT / "Pulumi.prod.yaml").read_text()
    assert changed_lines(prod, edit(prod, "web", "promote")) == [
        "-          stable: {version: 1.4.1}",
        "-          canary: {version: 1.4.2, weight: 10}",
        "+          stable: {version: 1.4.2}",
    ]
    assert (
        changed_lines(prod, edit(prod, "web", "rollback"))[-1]
        == "+          canary: {version: 1.4.2, weight: 0}"
    )
    assert changed_lines(prod, edit(prod, "worker", "promote")) == [
        "-        activeSlot: blue",
        "+        activeSlot: green",
    ]
    with pytest.raises(RolloutEditError, match="activeSlot is already blue"):
        edit(prod, "worker", "rollback")


def test_the_file_keeps_its_own_key_spelling() -> None:
    """The model accepts snake_case keys too: the step edits the key the file has."""
    old = (ROOT / "Pulumi.prod.yaml").read_text().replace("activeSlot: blue", "active_slot: 'blue'")
    assert changed_lines(old, edit(old, "worker", "promote")) == [
        "-        active_slot: 'blue'",
        "+        active_slot: 'green'",
    ]


@pytest.mark.parametrize(
    ("service", "action", "message"),
    [
        ("api", "promote", "no service 'api'"),
        ("worker", "set-weight", "worker: blue-green has no weights"),
        ("web", "set-weight", "web: --weight must be an integer 0..100"),
    ],
)
def test_edit_errors(service: str, action: str, message: str) -> None:
    with pytest.raises(RolloutEditError, match=message):
        edit(
            (ROOT / "Pulumi.prod.yaml").read_text(), service, action, 120 if action == "set-weight" else None
        )


@pytest.mark.parametrize("action", ["promote", "rollback", "set-weight"])
def test_a_rolling_service_has_no_step(action: str) -> None:
    dev = (ROOT / "Pulumi.dev.yaml").read_text()
    with pytest.raises(RolloutEditError) as refused:
        edit(dev, "web", action, 50)
    assert str(refused.value) == "the stack file: web: rolls out with rolling: nothing to promote or shift"


def test_cli_reports_routing_only_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = project_copy(tmp_path, "prod", stack_file("prod")["config"])
    (project / "Pulumi.prod.yaml").unlink()
    shutil.copy(ROOT / "Pulumi.prod.yaml", project / "Pulumi.prod.yaml")
    code = rollout.main(["set-weight", "--stack", "prod", "--service", "web", "--weight", "50"], project)
    out = capsys.readouterr().out
    assert code == 0
    routing = out.split("routing changes (7):", 1)[1].split("workload changes", 1)[0]
    assert "web-eks-ingress" in routing and "web-cloudrun (traffics)" in routing
    assert "HTTPRoute web-gke-route (spec)" in routing  # GKE's weighted route (and both targets' HPAs)
    assert "workload changes (0):\n  none: no pod, task or revision restarts" in out
    assert "weight: 50}" in (project / "Pulumi.prod.yaml").read_text()
    # The title the deploy pipelines read (a rollback is announced as one: tests/test_pipelines.py).
    assert out.rstrip().endswith("commit message: rollout(prod/web): set-weight to 50%")


def test_cli_reports_workload_changes_on_promotion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = project_copy(tmp_path, "prod", stack_file("prod")["config"])
    (project / "Pulumi.prod.yaml").unlink()
    shutil.copy(ROOT / "Pulumi.prod.yaml", project / "Pulumi.prod.yaml")
    before = (project / "Pulumi.prod.yaml").read_text()
    assert rollout.main(["promote", "--stack", "prod", "--service", "web", "--dry-run"], project) == 0
    out = capsys.readouterr().out
    assert "kubernetes:apps/v1:Deployment web-eks-canary ((removed))" in out
    assert "kubernetes:apps/v1:Deployment web-eks-stable (metadata, spec)" in out  # stable moves to 1.4.2
    assert (project / "Pulumi.prod.yaml").read_text() == before  # --dry-run wrote nothing


def test_the_comparison_names_the_routing_resources_a_step_must_update(tmp_path: Path) -> None:
    """`compare` is what the helper prints and what the rollout driver targets its `pulumi up` at."""
    project = project_copy(tmp_path, "prod", stack_file("prod")["config"])
    old = (ROOT / "Pulumi.prod.yaml").read_text()
    changes = rollout.compare(project, "prod", old, edit(old, "web", "set-weight", 50))
    assert not changes.restarts and len(changes.routing) == len(changes.routing_urns) == 7
    names = {urn.rsplit("::", 1)[-1] for urn in changes.routing_urns}
    assert {"web-eks-ingress", "web-cloudrun", "web-gke-route"} <= names
    assert all(urn.startswith("urn:pulumi:prod::pouw-cicd::") for urn in changes.routing_urns)
    promoted = rollout.compare(project, "prod", old, edit(old, "web", "promote"))
    assert promoted.restarts and not set(promoted.routing_urns) & {
        r.urn for r in promoted.after.resources if r.type == "kubernetes:apps/v1:Deployment"
    }
