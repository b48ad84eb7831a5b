"""Build once, promote by digest: what staging and prod deploy is the digest the release recorded.

The program runs under mocks (the stack files' own runs, and edited configs); the record is the
project's releases.yaml, or one a test writes.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.releases import RECORD_FILE, ReleaseRecord, parse_record
from components.settings import TARGET_REGISTRY
from preflight.cli import main
from preflight.engine import SECRET_SIG, SIG_KEY, ProgramRun
from preflight.report import Preflight
from tests.conftest import ROOT, project_copy, released, run_config, stack_file
from tests.test_image_promotion import INDEX, images, repositories, services, workloads_of

BUILDS = ("docker-build:index:Image", "pouw:index:ImageBuild")
ALL_TARGETS = {"eks", "ecs", "aci", "cloudrun", "gke", "aks"}


def record() -> ReleaseRecord:
    return parse_record((ROOT / RECORD_FILE).read_text(), RECORD_FILE)


def slot_versions(service: dict[str, Any]) -> set[str]:
    slots = (service.get("rollout") or {}).get("slots") or {}
    return {service["version"], *(s["version"] for s in slots.values())}


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_every_target_deploys_the_recorded_digest_and_nothing_is_built(
    stack_runs: dict[str, Preflight], stack: str
) -> None:
    run = stack_runs[stack].run
    assert run.error is None, run.error_text
    assert [r for r in run.resources if r.type in BUILDS] == []  # no build resource at all
    hosts, recorded, covered = repositories(stack), record(), set()
    for service in services(stack_file(stack)["config"]):
        name = service["name"]
        current = recorded.image(name, service["version"])
        assert current is not None
        assert run.outputs[name]["digest"] == current.digest
        expected = {v: recorded.image(name, v) for v in slot_versions(service)}
        for target in service["targets"]:
            kind = TARGET_REGISTRY[target]
            refs = {f"{hosts[kind]}/{name}@{image.digest}" for image in expected.values() if image}
            assert run.outputs[name]["images"][kind] == f"{hosts[kind]}/{name}@{current.digest}"
            running = {i for w in workloads_of(run, name, target) for i in images(w)}
            # Every slot runs its version's recorded digest (Cloud Run: its template carries the current
            # version's; an older slot's revision keeps the one it was created with).
            assert running == ({f"{hosts[kind]}/{name}@{current.digest}"} if target == "cloudrun" else refs)
            for version, image in expected.items():
                assert image is not None
                copied = run.get(INDEX, f"{name}-{version}-release-copy-{COPY[kind]}")
                assert copied.inputs["sources"] == [f"{image.repository}@{image.digest}"]  # by digest
                assert copied.inputs["tag"] == f"{hosts[kind]}/{name}:release-{version}"
                assert copied.retain_on_delete and copied.inputs["push"] is True
                assert copied.inputs["registry"]["password"][SIG_KEY] == SECRET_SIG
                pinned = f"{hosts[kind]}/{name}@{image.digest}"
                for workload in workloads_of(run, name, target):
                    if pinned in images(workload):  # deployed only once its copy exists
                        assert copied.urn in workload.dependencies, (workload.urn, copied.urn)
            covered.add(target)
    assert covered == ALL_TARGETS  # both stacks put every platform on a release


COPY = {"ecr": "ecr", "acr": "acr", "artifactRegistry": "artifact-registry"}


@pytest.mark.parametrize(
    ("stack", "where"), [("staging", "version"), ("prod", "rollout.slots.stable.version")]
)
def test_an_unrecorded_version_is_refused_with_its_key_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stack: str, where: str
) -> None:
    config = stack_file(stack)["config"]
    web = config["pouw-cicd:services"][0]
    if where == "version":
        web["version"] = "1.4.3"
        if "canary" in web["rollout"]["slots"]:
            web["rollout"]["slots"]["canary"]["version"] = "1.4.3"
        else:
            web["rollout"]["slots"][web["rollout"].get("activeSlot", "blue")]["version"] = "1.4.3"
            web["rollout"]["slots"]["green"]["version"] = "1.4.3"
    else:
        web["rollout"]["slots"]["stable"]["version"] = "1.3.9"
    project = project_copy(tmp_path, stack, config, yaml.safe_load((ROOT / RECORD_FILE).read_text()))
    code = main(["--stack", stack, "--project-dir", str(project), "--json", str(tmp_path / "p.json")])
    out = capsys.readouterr().out
    assert code == 2
    assert f"pouw-cicd:services[0].{where}: web " in out and "has no release record in releases.yaml" in out
    assert "python -m delivery.release record" in out
    assert "0 resources were registered" in out
    assert json.loads((tmp_path / "p.json").read_text())["resources"] == []


def test_only_dev_may_build_unreleased_versions(tmp_path: Path) -> None:
    config = stack_file("prod")["config"]
    config["pouw-cicd:releases"] = {"buildUnreleased": True}
    run = run_config(tmp_path, "prod", config)
    assert run.error is not None
    assert "pouw-cicd:releases.buildUnreleased: only dev may build unreleased versions" in run.error_text


def test_dev_copies_a_recorded_version_and_builds_an_unreleased_one(tmp_path: Path) -> None:
    config = stack_file("dev")["config"]
    config["pouw-cicd:services"][0]["version"] = "1.4.2"  # web: released; worker 2.1.0-rc.1: not
    run = run_config(tmp_path, "dev", config)
    assert run.error is None, run.error_text
    assert [r.name for r in run.by_type("docker-build:index:Image")] == ["worker"]
    web = record().image("web", "1.4.2")
    assert web is not None and run.outputs["web"]["digest"] == web.digest
    ecr = repositories("dev")["ecr"]
    assert run.outputs["web"]["images"] == {"ecr": f"{ecr}/web@{web.digest}"}  # GHCR is the source itself
    source = run.get("pulumi:providers:docker-build", "web-source")  # dev's GHCR login pulls the release
    assert run.get(INDEX, "web-1.4.2-release-copy-ecr").provider.startswith(source.urn + "::")


def test_unreleased_dev_versions_need_the_key(tmp_path: Path) -> None:
    config = copy.deepcopy(stack_file("dev")["config"])
    del config["pouw-cicd:releases"]
    run = run_config(tmp_path, "dev", config, released(config))
    assert run.error is not None
    assert "pouw-cicd:services[0].version: web 1.5.0-rc.1 has no release record" in run.error_text


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "services: {web: {1.4: {repository: ghcr.io/pouw/web, digest: 'sha256:" + "a" * 64 + "'}}}",
            "quote it",
        ),
        ("services: {web: {'1.4.2': {repository: ghcr.io/pouw/web, digest: 'sha256:abc'}}}", "digest"),
        (
            "services: {web: {'1.4.2': {repository: 'ghcr.io/pouw/web:1.4.2', digest: 'sha256:"
            + "a" * 64
            + "'}}}",
            "repository",
        ),
    ],
)
def test_a_malformed_record_is_a_settings_error(tmp_path: Path, text: str, problem: str) -> None:
    project = project_copy(tmp_path, "prod", stack_file("prod")["config"])
    (project / RECORD_FILE).write_text(text)
    run = _run(project)
    assert run.error is not None and "releases.yaml" in run.error_text and problem in run.error_text
    assert run.resources == []


def _run(project: Path) -> ProgramRun:
    from preflight.engine import run_program
    from preflight.stackconfig import load_stack_config

    return run_program(project, load_stack_config(project, "prod"))
