"""The program under mocks: the captured graph of each stack (types, parents, options, inputs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from preflight.cli import main
from preflight.engine import SECRET_SIG, SIG_KEY, ProgramRun, Registration
from preflight.report import Preflight, plan_json
from preflight.stackconfig import SECRET_PLACEHOLDER
from tests.conftest import STACKS, project_copy, stack_file

REPO = "aws:ecr/repository:Repository"
KEY = "aws:kms/key:Key"
IMAGE = "docker-build:index:Image"
INDEX = "docker-build:index:Index"
LIFECYCLE = "aws:ecr/lifecyclePolicy:LifecyclePolicy"
ACR = "azure-native:containerregistry:Registry"
AR = "gcp:artifactregistry/repository:Repository"
RESOURCE_GROUP = "azure-native:resources:ResourceGroup"


def parent_of(run: ProgramRun, r: Registration) -> Registration:
    return next(p for p in run.resources if p.urn == r.parent)


def services(stack: str) -> list[str]:
    return [s["name"] for s in stack_file(stack)["config"]["pouw-cicd:services"]]


def registries(stack: str) -> set[str]:
    return set(stack_file(stack)["config"]["pouw-cicd:registries"])


@pytest.mark.parametrize("stack", STACKS)
def test_graph_shape(stack_runs: dict[str, Preflight], stack: str) -> None:
    run = stack_runs[stack].run
    assert run.error is None, run.error_text
    n = len(services(stack))
    cmk = stack != "dev"
    azure = "acr" in registries(stack)
    gcp = "artifactRegistry" in registries(stack)
    built = n if stack == "dev" else 0  # staging and prod deploy the release's digest, never build
    expected = {
        "pouw:index:EcrRepository": n,
        "pouw:index:ImageBuild": built,
        "pouw:index:ReleaseImage": n - built,
        REPO: n,
        LIFECYCLE: n,
        IMAGE: built,
        "aws:ecr/repositoryPolicy:RepositoryPolicy": n if stack == "prod" else 0,
        "aws:ecr/registryScanningConfiguration:RegistryScanningConfiguration": int(stack == "prod"),
        "pouw:index:AcrRegistry": int(azure),
        ACR: int(azure),
        RESOURCE_GROUP: int(azure),
        "pouw:index:ArtifactRegistry": int(gcp),
        AR: int(gcp),
    }
    assert {t: len(run.by_type(t)) for t in expected} == expected
    registry_keys = [k for k in run.by_type(KEY) if parent_of(run, k).type == "pouw:index:EcrRepository"]
    assert len(registry_keys) == (n if cmk else 0)
    for name in services(stack):
        repo = run.get(REPO, f"{name}-ecr")
        assert parent_of(run, repo).type == "pouw:index:EcrRepository"
        if not built:
            version = next(
                s["version"] for s in stack_file(stack)["config"]["pouw-cicd:services"] if s["name"] == name
            )
            copy = run.get(INDEX, f"{name}-{version}-release-copy-ecr")
            assert parent_of(run, copy).type == "pouw:index:ReleaseImage"
            assert repo.urn in copy.dependencies  # the copy pushes to the repository
            continue
        image = run.get(IMAGE, name)
        assert parent_of(run, image).type == "pouw:index:ImageBuild"
        assert repo.urn in image.dependencies  # the build pushes to the repository (the build registry)


# Where each service's image goes: what its targets pull from (+ GHCR, a distribution registry); a
# service without targets goes to every configured registry. The first is the build registry (ECR, the
# first configured), the others get a copy of its digest.
PUSHES = {
    "dev": {"web": ["ecr", "ghcr"], "worker": ["ecr", "ghcr"]},
    "staging": {"web": ["ecr", "artifactRegistry"], "worker": ["ecr", "acr"]},
    "prod": {"web": ["ecr", "artifactRegistry"], "worker": ["ecr", "acr"]},
}


@pytest.mark.parametrize("stack", ["dev"])  # staging and prod: tests/test_release_images.py
def test_one_build_per_service_is_copied_to_the_registries_it_needs(
    stack_runs: dict[str, Preflight], stack: str
) -> None:
    run = stack_runs[stack].run
    hosts = {
        "ecr": "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        "acr": f"pouwcicd{stack}.azurecr.io",
        "artifactRegistry": f"europe-west1-docker.pkg.dev/pouw-{stack}/containers",
        "ghcr": "ghcr.io/pouw",
    }
    for name, service in zip(services(stack), stack_file(stack)["config"]["pouw-cicd:services"], strict=True):
        image = run.get(IMAGE, name)
        build, *copies = PUSHES[stack][name]
        assert image.inputs["tags"] == [f"{hosts[build]}/{name}:{service['version']}"]
        (login,) = image.inputs["registries"]
        assert login["password"][SIG_KEY] == SECRET_SIG
        copied = {r.inputs["tag"] for r in run.by_type(INDEX) if r.name.startswith(f"{name}-copy-")}
        assert copied == {f"{hosts[k]}/{name}:{service['version']}" for k in copies}
        out = run.outputs[name]
        assert list(out["images"]) == PUSHES[stack][name]
        for kind, ref in out["images"].items():
            assert ref.startswith(hosts[kind])
            assert ref.endswith(f"/{name}@{out['digest']}")


@pytest.mark.parametrize("stack", STACKS)
def test_protect_only_in_prod_and_builds_never_delete_images(
    stack_runs: dict[str, Preflight], stack: str
) -> None:
    run = stack_runs[stack].run
    stateful = [r for r in run.resources if r.type in (REPO, KEY, ACR, AR, RESOURCE_GROUP)]
    assert stateful
    for r in stateful:
        assert r.protect is (stack == "prod"), r.urn
    for r in run.by_type(IMAGE):
        assert r.retain_on_delete, r.urn
        assert not r.protect


def test_ecr_hardened_defaults(stack_runs: dict[str, Preflight]) -> None:
    prod = stack_runs["prod"].run
    repo = prod.get(REPO, "web-ecr")
    assert repo.inputs["name"] == "web"
    assert repo.inputs["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert repo.inputs["imageTagMutabilityExclusionFilters"] == [
        {"filter": "buildcache", "filterType": "WILDCARD"}
    ]
    assert repo.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo.inputs["encryptionConfigurations"][0]["encryptionType"] == "KMS"
    assert repo.inputs["encryptionConfigurations"][0]["kmsKey"].endswith(":web-ecr-key")
    assert repo.inputs["forceDelete"] is False
    assert repo.inputs["tags"] == {
        "owner": "platform-team",
        "environment": "prod",
        "cost-center": "cc-1042",
        "managed-by": "pulumi",
        "service": "web",
    }
    key = prod.get(KEY, "web-ecr-key")
    assert key.inputs["enableKeyRotation"] is True
    policy = json.loads(prod.get(LIFECYCLE, "web-ecr-lifecycle").inputs["policy"])
    untagged, tagged = policy["rules"]
    assert untagged["selection"] == {
        "tagStatus": "untagged",
        "countType": "sinceImagePushed",
        "countUnit": "days",
        "countNumber": 14,
    }
    assert tagged["selection"]["countNumber"] == 50
    dev_repo = stack_runs["dev"].run.get(REPO, "web-ecr")
    assert "kmsKey" not in dev_repo.inputs["encryptionConfigurations"][0]


def test_image_build_inputs(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["dev"].run  # dev builds its unreleased versions; staging and prod build nothing
    image = run.get(IMAGE, "web")
    url = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/web"
    assert image.inputs["tags"][0] == f"{url}:1.5.0-rc.1"  # the first registry also holds the cache
    assert image.inputs["platforms"] == ["linux/amd64"]
    assert image.inputs["target"] == "runtime"
    assert image.inputs["push"] is True
    assert image.inputs["buildOnPreview"] is False
    assert image.inputs["context"] == {"location": "app"}
    assert image.inputs["dockerfile"] == {"location": "app/Dockerfile"}
    # Always an image index (even for one platform), so a copy keeps the digest.
    assert image.inputs["buildArgs"] == {"PYTHON_VERSION": "3.12", "BUILDKIT_MULTI_PLATFORM": "1"}
    assert image.inputs["labels"]["org.opencontainers.image.version"] == "1.5.0-rc.1"
    assert image.inputs["labels"]["org.opencontainers.image.source"].startswith("https://github.com/")
    assert "org.opencontainers.image.created" not in image.inputs["labels"]
    assert image.inputs["cacheFrom"] == [{"registry": {"ref": f"{url}:buildcache"}}]
    assert image.inputs["cacheTo"][0]["registry"]["mode"] == "max"
    # Secrets stay marked secret on the wire: the build secret and the registry password.
    assert image.inputs["secrets"][SIG_KEY] == SECRET_SIG
    (ecr_login,) = image.inputs["registries"]  # the build registry only; GHCR gets a copy
    assert ecr_login["address"] == url.split("/")[0] and ecr_login["username"] == "AWS"
    assert ecr_login["password"][SIG_KEY] == SECRET_SIG
    assert "secrets" not in run.get(IMAGE, "worker").inputs


@pytest.mark.parametrize("stack", STACKS)
def test_outputs_are_digest_pinned(stack_runs: dict[str, Preflight], stack: str) -> None:
    run = stack_runs[stack].run
    for name in services(stack):
        out = run.outputs[name]
        assert out["digest"].startswith("sha256:") and len(out["digest"]) == 71
        for ref in out["images"].values():
            repository, digest = ref.split("@")
            assert digest == out["digest"]
            assert ":" not in repository.rsplit("/", 1)[1]  # no tag in a deployable ref


def test_plan_json_masks_secrets(stack_runs: dict[str, Preflight]) -> None:
    text = plan_json(stack_runs["prod"])
    plan = json.loads(text)
    assert SECRET_PLACEHOLDER not in text
    assert "preflight-placeholder-token" not in text
    copy = next(
        r for r in plan["resources"] if r["type"] == INDEX and r["name"] == "web-1.4.2-release-copy-ecr"
    )
    assert copy["inputs"]["registry"]["password"] == "[secret]"
    dev = json.loads(plan_json(stack_runs["dev"]))
    image = next(r for r in dev["resources"] if r["type"] == IMAGE and r["name"] == "web")
    assert image["inputs"]["secrets"] == "[secret]"
    assert plan["secretPlaceholders"] == [  # in the stack file's order
        "pouw-cicd:pipIndexToken",
        "pouw-cicd:workerDatabaseUrl",
        "pouw-cicd:arcAppId",
        "pouw-cicd:arcInstallationId",
        "pouw-cicd:arcPrivateKey",
    ]
    assert plan["exitCode"] == 0


def test_broken_stack_file_exits_2_with_key_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = stack_file("prod")["config"]
    config["pouw-cicd:services"][0]["port"] = 70000
    project = project_copy(tmp_path, "prod", config)
    code = main(["--stack", "prod", "--project-dir", str(project), "--json", str(tmp_path / "p.json")])
    out = capsys.readouterr().out
    assert code == 2
    assert "pouw-cicd:services[0].port: must be 1..65535, got 70000" in out
    assert "Traceback" not in out
    assert "0 resources were registered" in out
    assert json.loads((tmp_path / "p.json").read_text())["resources"] == []


def test_unknown_stack_and_bad_yaml_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--stack", "qa"]) == 2
    assert "no such stack file; known stacks: dev, prod, staging" in capsys.readouterr().out
    project = project_copy(tmp_path, "dev", {})
    (project / "Pulumi.dev.yaml").write_text("config: [unclosed\n")
    assert main(["--stack", "dev", "--project-dir", str(project)]) == 2
    assert "Pulumi.dev.yaml: not valid YAML" in capsys.readouterr().out


def test_program_error_exits_2_with_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = project_copy(tmp_path, "dev", stack_file("dev")["config"])
    (project / "__main__.py").unlink()
    (project / "__main__.py").write_text("raise RuntimeError('boom in program')\n")
    assert main(["--stack", "dev", "--project-dir", str(project)]) == 2
    out = capsys.readouterr().out
    assert "RuntimeError: boom in program" in out
