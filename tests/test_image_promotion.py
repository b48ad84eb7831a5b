"""Build once, copy by digest: adding a target adds its copy and touches nothing else; revision names.

Plan comparisons run the real program under mocks; the policy check goes through the real pack.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from components.settings import TARGET_REGISTRY
from components.targets.cloudrun import content_revision_name, revision_name, serving_revision
from preflight.analyzer import PolicyPackProcess, analyze
from preflight.engine import SECRET_SIG, SIG_KEY, ProgramRun, Registration
from preflight.report import Preflight
from tests.conftest import diff, released, run_config, stack_file

IMAGE = "docker-build:index:Image"
INDEX = "docker-build:index:Index"
COPY_PROVIDER = "pulumi:providers:docker-build"
READER = "pulumi:providers:docker"
RUN = "gcp:cloudrunv2/service:Service"
RUN_MEMBER = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
ACCOUNT_MEMBER = "gcp:serviceaccount/iAMMember:IAMMember"
WORKLOADS = (
    "kubernetes:apps/v1:Deployment",
    "aws:ecs/taskDefinition:TaskDefinition",
    "azure-native:containerinstance:ContainerGroup",
    RUN,
)
COPY_NAMES = {"acr": "acr", "artifactRegistry": "artifact-registry", "ghcr": "ghcr"}


def repositories(stack: str) -> dict[str, str]:
    return {
        "ecr": "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        "acr": f"pouwcicd{stack}.azurecr.io",
        "artifactRegistry": f"europe-west1-docker.pkg.dev/pouw-{stack}/containers",
        "ghcr": "ghcr.io/pouw",
    }


def services(config: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = config["pouw-cicd:services"]
    return found


def images(r: Registration) -> list[str]:
    """The images a workload registration runs, whatever the platform."""
    if r.type == "kubernetes:apps/v1:Deployment":
        containers = r.inputs["spec"]["template"]["spec"]["containers"]
    elif r.type == "aws:ecs/taskDefinition:TaskDefinition":
        containers = json.loads(r.inputs["containerDefinitions"])
    elif r.type == RUN:
        containers = r.inputs["template"]["containers"]
    else:
        containers = r.inputs["containers"]
    return [str(c["image"]) for c in containers]


def workloads_of(run: ProgramRun, service: str, target: str) -> list[Registration]:
    return [r for r in run.resources if r.type in WORKLOADS and r.name.startswith(f"{service}-{target}")]


def depends_on(r: Registration) -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    return frozenset(r.dependencies), {k: frozenset(v) for k, v in r.property_dependencies.items()}


def assert_only_added(
    before: ProgramRun,
    after: ProgramRun,
    allowed: Callable[[tuple[str, str]], bool],
    may_change: frozenset[tuple[str, str]] = frozenset(),
) -> set[tuple[str, str]]:
    """No resource of `before` is removed or has any input or option changed (but `may_change`); what is
    new is `allowed`."""
    assert after.error is None, after.error_text
    change = diff(before, after)
    assert change["removed"] == set()
    assert change["changed"] == set(may_change)
    old = {r.urn: depends_on(r) for r in before.resources}
    for r in after.resources:  # nor does any existing resource gain a dependency (a new ordering)
        assert r.urn not in old or depends_on(r) == old[r.urn], r.urn
    unexpected = {added for added in change["added"] if not allowed(added)}
    assert unexpected == set()
    return change["added"]


def test_adding_aci_to_prod_web_adds_only_its_copy_and_the_target(tmp_path: Path) -> None:
    before = run_config(tmp_path / "a", "prod", stack_file("prod")["config"])
    config = stack_file("prod")["config"]
    services(config)[0]["targets"].append("aci")  # web: eks, cloudrun -> eks, cloudrun, aci
    after = run_config(tmp_path / "b", "prod", config)

    copies = {(INDEX, f"web-{v}-release-copy-acr") for v in ("1.4.1", "1.4.2")}  # each slot's release
    added = assert_only_added(before, after, lambda a: a in copies or a[1].startswith("web-aci"))
    assert copies <= added
    assert ("azure-native:containerinstance:ContainerGroup", "web-aci-canary") in added
    # The release did not move: same digest, so EKS and Cloud Run keep their image.
    assert after.outputs["web"]["digest"] == before.outputs["web"]["digest"]
    assert after.outputs["web"]["images"]["acr"].endswith(before.outputs["web"]["digest"])


def test_adding_cloudrun_to_a_service_on_eks_adds_only_its_copy_and_the_target(tmp_path: Path) -> None:
    config = stack_file("prod")["config"]
    services(config)[0]["targets"] = ["eks"]
    before = run_config(tmp_path / "a", "prod", config)
    config = stack_file("prod")["config"]
    services(config)[0]["targets"] = ["eks", "cloudrun"]  # (prod's web is on GKE too: test_gke.py)
    after = run_config(tmp_path / "b", "prod", config)

    # Each slot's release is copied (no lookup of an older slot: the record names its digest) ...
    copy = {(INDEX, f"web-{v}-release-copy-artifact-registry") for v in ("1.4.1", "1.4.2")}
    # ...and the deploy identity's grants on the new service and its runtime account (PipelineIdentities).
    grants = {(RUN_MEMBER, "pipeline-deploy-run-web"), (ACCOUNT_MEMBER, "pipeline-deploy-actas-web")}
    # The first Cloud Run service brings the release attestor (components/admission.py), its trust for the
    # release environment, and the attestor's rows in the pipeline's custom roles.
    # (before it, the preview account had no custom role: nothing project-scoped to read).
    custom = "gcp:projects/iAMCustomRole:IAMCustomRole"
    attestor = {(ACCOUNT_MEMBER, "pipeline-attester-wif"), (custom, "pipeline-preview-custom")}
    attestor |= {("gcp:projects/iAMMember:IAMMember", "pipeline-preview-custom")}
    roles = frozenset({(custom, "pipeline-deploy-custom")})
    added = assert_only_added(
        before,
        after,
        lambda a: a in copy or a in grants or a in attestor or a[1].startswith(("web-cloudrun", "binauthz")),
        may_change=roles,
    )
    assert copy <= added
    assert (RUN, "web-cloudrun") in added
    assert not after.by_type(IMAGE) and not after.by_type(READER)  # nothing built, nothing looked up


@pytest.mark.parametrize(
    "stack", ["dev"]
)  # dev builds unreleased versions; staging, prod: test_release_images
def test_every_target_deploys_the_build_digest_from_its_own_registry(
    stack_runs: dict[str, Preflight], stack: str
) -> None:
    run = stack_runs[stack].run
    hosts = repositories(stack)
    for service in services(stack_file(stack)["config"]):
        name, version = service["name"], service["version"]
        image = run.get(IMAGE, name)
        digest = image.outputs["digest"]
        build_repo = f"{hosts['ecr']}/{name}"  # ECR: the first configured registry in every stack
        assert image.inputs["tags"] == [f"{build_repo}:{version}"]
        refs = run.outputs[name]["images"]
        assert refs["ecr"] == f"{build_repo}@{digest}"
        for kind, ref in refs.items():
            assert ref == f"{hosts[kind]}/{name}@{digest}"  # the same digest in every registry
            if kind == "ecr":
                continue
            copy = run.get(INDEX, f"{name}-copy-{COPY_NAMES[kind]}")
            assert copy.inputs["sources"] == [f"{build_repo}@{digest}"]  # copied from the build, by digest
            assert copy.inputs["tag"] == f"{hosts[kind]}/{name}:{version}"
            assert copy.outputs["ref"] == f"{copy.inputs['tag']}@{digest}"  # a carbon copy
            assert copy.retain_on_delete and copy.inputs["push"] is True
            assert copy.inputs["registry"]["password"][SIG_KEY] == SECRET_SIG
            assert image.urn in copy.dependencies
        for target in service.get("targets", []):
            kind = TARGET_REGISTRY[target]
            ref = f"{hosts[kind]}/{name}@{digest}"
            built = [w for w in workloads_of(run, name, target) if ref in images(w)]
            assert built, (name, target)  # this update's slot runs the build, from its own registry
            for workload in workloads_of(run, name, target):
                assert all(i.startswith(f"{hosts[kind]}/{name}@sha256:") for i in images(workload))
            # ... and is registered only once what it pulls exists there: the copy, or the build.
            source = image if kind == "ecr" else run.get(INDEX, f"{name}-copy-{COPY_NAMES[kind]}")
            for workload in built:
                assert source.urn in workload.dependencies, (workload.urn, source.urn)


def test_copies_pull_with_the_build_registry_login(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["dev"].run
    provider = run.get(COPY_PROVIDER, "web-copy")
    assert provider.inputs["registries"][SIG_KEY] == SECRET_SIG  # the whole login list stays secret
    (login,) = json.loads(provider.inputs["registries"]["value"])
    assert login["address"] == "123456789012.dkr.ecr.eu-west-1.amazonaws.com" and login["username"] == "AWS"
    copy = run.get(INDEX, "web-copy-ghcr")
    assert copy.provider.startswith(provider.urn + "::")  # pull login from the provider ...
    assert copy.inputs["registry"]["address"] == "ghcr.io"  # ... push login its own
    assert copy.parent == run.get("pouw:index:ImageBuild", "web").urn
    image = run.get(IMAGE, "web")
    assert not image.aliases and image.parent == copy.parent  # the build keeps its name and URN


def test_a_single_platform_build_is_still_an_index(stack_runs: dict[str, Preflight]) -> None:
    # dev builds one platform; imagetools only carbon-copies an index, so every build must be one.
    image = stack_runs["dev"].run.get(IMAGE, "web")
    assert image.inputs["platforms"] == ["linux/amd64"]
    assert image.inputs["buildArgs"]["BUILDKIT_MULTI_PLATFORM"] == "1"


def test_latest_copy_tags_are_refused_by_the_gate(pack: PolicyPackProcess) -> None:
    def index(tag: str) -> Registration:
        sources = ["123456789012.dkr.ecr.eu-west-1.amazonaws.com/web@sha256:" + "0" * 64]
        return Registration(
            urn=f"urn:pulumi:test::pouw-cicd::{INDEX}::web-copy-acr",
            type=INDEX,
            name="web-copy-acr",
            inputs={"push": True, "sources": sources, "tag": tag},
        )

    def found(tag: str) -> list[str]:
        result = analyze(pack, [index(tag)], {"all": "mandatory"})
        return [v.detail for v in result.violations if v.policy == "image-no-latest-tag"]

    assert found("pouwcicdprod.azurecr.io/web:1.4.2") == []
    (latest,) = found("pouwcicdprod.azurecr.io/web:latest")
    assert "image tag 'pouwcicdprod.azurecr.io/web:latest' is 'latest', which moves" in latest


# --- Cloud Run revision names -------------------------------------------------------------------------

DIGEST = "europe-west1-docker.pkg.dev/pouw-prod/containers/web@sha256:"
TEMPLATE: dict[str, Any] = {
    "service_account": "run-web@pouw-prod.iam.gserviceaccount.com",
    "scaling": {"min_instance_count": 4, "max_instance_count": 12},
    "containers": [
        {
            "image": DIGEST + "a" * 64,
            "envs": [{"name": "APP_VERSION", "value": "1.4.2"}],
            "resources": {"limits": {"cpu": "1", "memory": "512Mi"}},
            "startup_probe": {"http_get": {"path": "/health", "port": 8080}},
        }
    ],
}


def variant(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    changed: Any = json.loads(json.dumps(TEMPLATE))
    node = changed
    for key in path[:-1]:
        node = node[key]
    if isinstance(node, list) and path[-1] == len(node):
        node.append(value)
    else:
        node[path[-1]] = value
    result: dict[str, Any] = changed
    return result


@pytest.mark.parametrize(
    "path, value",
    [
        (("containers", 0, "image"), DIGEST + "b" * 64),
        (("containers", 0, "envs", 1), {"name": "LOG_LEVEL", "value": "debug"}),
        (("containers", 0, "resources", "limits", "memory"), "1Gi"),
        (("containers", 0, "startup_probe", "http_get", "path"), "/ready"),
        (("scaling", "max_instance_count"), 13),
    ],
)
def test_a_different_template_never_gets_the_same_revision_name(path: tuple[Any, ...], value: Any) -> None:
    name = content_revision_name("web", "1.4.2", TEMPLATE)
    assert re.fullmatch(r"web-1-4-2--[0-9a-f]{8}", name)
    assert content_revision_name("web", "1.4.2", json.loads(json.dumps(TEMPLATE))) == name  # same content
    assert content_revision_name("web", "1.4.2", variant(path, value)) != name


def test_revision_names_fit_cloud_run_and_keep_the_version_apart_from_the_hash() -> None:
    long = content_revision_name("a" * 40, "9" * 40, TEMPLATE)
    assert len(long) <= 63 and re.fullmatch(r"[a-z][a-z0-9-]*--[0-9a-f]{8}", long)
    # '--' never occurs in the version part: "1.4.2-deadbeef" is not revision "1.4.2" plus a hash.
    assert "--" not in revision_name("web", "1.4.2-deadbeef--x")
    assert content_revision_name("web", "1.4.2-deadbeef", TEMPLATE).startswith("web-1-4-2-deadbeef--")


DERIVED = "web-1-4-1--0123abcd"


@pytest.mark.parametrize(
    "live, expected",
    [
        ([], DERIVED),  # nothing live (preflight's mocks, a first deploy): the rule's name
        ([("web-1-4-1", 90), ("web-1-4-2--9999ffff", 10)], "web-1-4-1"),  # named before content hashes
        ([("web-1-4-1--77778888", 90)], "web-1-4-1--77778888"),  # created under other settings
        ([("web-1-4-1--77778888", 10), (DERIVED, 0)], DERIVED),  # the rule's name, when it is live
        ([("web-1-4-1--11112222", 10), ("web-1-4-1--77778888", 90)], "web-1-4-1--77778888"),
        # Other versions never match: 1.4.10, 1.4.1-rc.1 and a '-deadbeef' suffix are not 1.4.1.
        ([("web-1-4-10", 90), ("web-1-4-1-rc-1--77778888", 5), ("web-1-4-1-deadbeef", 5)], DERIVED),
    ],
)
def test_an_older_slot_keeps_the_revision_that_serves_its_version(
    live: list[tuple[str, int]], expected: str
) -> None:
    assert serving_revision(live, "web", "1.4.1", DERIVED) == expected


def test_too_long_names_are_never_guessed_from_live_traffic() -> None:
    version = "1." + "9" * 60  # cut to 63 characters, two such versions would share a name
    derived = content_revision_name("web", version, TEMPLATE)
    assert serving_revision([(revision_name("web", version), 100)], "web", version, derived) == derived


def rollout_edit(stack: str, mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    config = stack_file(stack)["config"]
    mutate(services(config)[0])
    return config


def revision(run: ProgramRun) -> str:
    name: str = run.get(RUN, "web-cloudrun").inputs["template"]["revision"]
    return name


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.update(environment={"LOG_LEVEL": "debug"}),
        lambda s: s.update(resources={**s["resources"], "memoryLimit": "1Gi"}),
        lambda s: s.update(healthPath="/ready"),
    ],
)
def test_a_template_change_under_the_same_version_is_a_new_revision(
    stack_runs: dict[str, Preflight], tmp_path: Path, mutate: Callable[[dict[str, Any]], None]
) -> None:
    before = stack_runs["prod"].run
    after = run_config(tmp_path, "prod", rollout_edit("prod", mutate))
    assert after.error is None, after.error_text
    a = before.get(RUN, "web-cloudrun").inputs["template"]
    b = after.get(RUN, "web-cloudrun").inputs["template"]
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} - {"revision"}  # the template changed
    assert revision(after) != revision(before)  # ... so it is not sent under the old name
    assert revision(after).startswith("web-1-4-2--")
    canary = next(t for t in after.get(RUN, "web-cloudrun").inputs["traffics"] if t["tag"] == "canary")
    assert canary["revision"] == revision(after)  # and the slot that runs it routes to the new name


def test_another_recorded_digest_under_the_same_version_is_a_new_revision(
    stack_runs: dict[str, Preflight], tmp_path: Path
) -> None:
    """What a new build under the same version was before releases: new bytes, so a new revision name."""
    before = stack_runs["prod"].run
    config = stack_file("prod")["config"]
    record = released(config)
    record["services"]["web"]["1.4.2"]["digest"] = "sha256:" + "1" * 64
    after = run_config(tmp_path, "prod", config, record)
    assert after.error is None, after.error_text
    assert revision(after) != revision(before) and revision(after).startswith("web-1-4-2--")
    assert after.outputs["web"]["digest"] == "sha256:" + "1" * 64


def test_a_blue_green_switch_keeps_every_revision(stack_runs: dict[str, Preflight], tmp_path: Path) -> None:
    before = stack_runs["staging"].run
    switch = rollout_edit("staging", lambda s: s["rollout"].update(activeSlot="green"))
    after = run_config(tmp_path, "staging", switch)
    a, b = before.get(RUN, "web-cloudrun").inputs, after.get(RUN, "web-cloudrun").inputs
    assert {k for k in a if a[k] != b[k]} == {"traffics"}
    assert [t["revision"] for t in a["traffics"]] == [t["revision"] for t in b["traffics"]]
    assert [int(t["percent"]) for t in b["traffics"]] == [0, 100]
