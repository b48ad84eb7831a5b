"""`python -m delivery.release record`: the release record and the pack configs, edited together.

The pack's `image-release-recorded` reads the digests from its config, never from releases.yaml (the
pack imports no program file): these tests prove the two agree, that `record` keeps them agreeing, and
that the gate refuses a digest the pack config does not carry (what the CLI path enforces too).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from components import admission
from components.releases import RECORD_FILE, parse_record, signer_identity
from delivery.release import PACK_CONFIGS, RECORD_POLICY, main
from preflight.cli import main as preflight_main
from tests.conftest import ROOT, STACKS, project_copy, released, stack_file
from tests.test_pipelines import action, workflow

DIGEST = "sha256:" + "c" * 64


def recorded_in_pack(config_dir: Path, stack: str) -> dict[str, dict[str, str]]:
    data = json.loads((config_dir / f"{stack}.json").read_text())
    found: dict[str, dict[str, str]] = data[RECORD_POLICY]["recorded"]
    return found


def record_digests(path: Path) -> dict[str, dict[str, str]]:
    record = parse_record(path.read_text(), RECORD_FILE)
    return {s: {v: i.digest for v, i in vs.items()} for s, vs in record.services.items()}


@pytest.mark.parametrize("stack", STACKS)
def test_every_pack_config_carries_the_record(stack: str) -> None:
    assert recorded_in_pack(ROOT / PACK_CONFIGS, stack) == record_digests(ROOT / RECORD_FILE)


def test_staging_and_prod_enforce_it() -> None:
    for stack in ("staging", "prod"):
        config = json.loads((ROOT / PACK_CONFIGS / f"{stack}.json").read_text())
        assert config["all"] == "mandatory"
        assert "enforcementLevel" not in config[RECORD_POLICY]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "policies").mkdir()
    shutil.copytree(ROOT / PACK_CONFIGS, tmp_path / PACK_CONFIGS)
    shutil.copy(ROOT / RECORD_FILE, tmp_path / RECORD_FILE)
    return tmp_path


def record(project: Path, *extra: str, version: str = "1.5.0", digest: str = DIGEST) -> int:
    argv = ["record", "--service", "web", "--version", version, "--digest", digest]
    return main([*argv, "--repository", "ghcr.io/pouw/web", *extra], project)


def test_record_adds_one_entry_round_trip_and_updates_every_pack_config(project: Path) -> None:
    before = (project / RECORD_FILE).read_text()
    assert record(project) == 0
    after = (project / RECORD_FILE).read_text()
    added = [line for line in after.splitlines() if line not in before.splitlines()]
    assert added == [f'    "1.5.0": {{repository: ghcr.io/pouw/web, digest: "{DIGEST}"}}']
    assert [line for line in before.splitlines() if line not in after.splitlines()] == []  # comments kept
    digests = record_digests(project / RECORD_FILE)
    assert digests["web"]["1.5.0"] == DIGEST
    for stack in STACKS:
        assert recorded_in_pack(project / PACK_CONFIGS, stack) == digests
        config = json.loads((project / PACK_CONFIGS / f"{stack}.json").read_text())
        original = json.loads((ROOT / PACK_CONFIGS / f"{stack}.json").read_text())
        assert {k: v for k, v in config.items() if k != RECORD_POLICY} == {
            k: v for k, v in original.items() if k != RECORD_POLICY
        }


def test_record_is_idempotent_and_never_rewrites_a_version(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert record(project) == 0
    text = (project / RECORD_FILE).read_text()
    assert record(project) == 0  # the same digest again (a re-run release): nothing to do
    assert (project / RECORD_FILE).read_text() == text
    capsys.readouterr()
    assert record(project, digest="sha256:" + "d" * 64) == 2
    err = capsys.readouterr().err
    assert "web 1.5.0 is already recorded as ghcr.io/pouw/web@sha256:ccc" in err and "never rebuilt" in err
    assert (project / RECORD_FILE).read_text() == text


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"digest": "sha256:abc"}, "--digest 'sha256:abc' is not sha256:<64 lowercase hex>"),
        ({"version": "latest"}, "'latest' is not a semantic version"),
    ],
)
def test_record_refuses_bad_input(
    project: Path, capsys: pytest.CaptureFixture[str], args: dict[str, str], problem: str
) -> None:
    text = (project / RECORD_FILE).read_text()
    assert record(project, **args) == 2
    assert problem in capsys.readouterr().err
    assert (project / RECORD_FILE).read_text() == text


def test_dry_run_writes_nothing(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (project / RECORD_FILE).read_text()
    assert record(project, "--dry-run") == 0
    assert (project / RECORD_FILE).read_text() == text
    assert f'+    "1.5.0": {{repository: ghcr.io/pouw/web, digest: "{DIGEST}"}}' in capsys.readouterr().out


def test_the_gate_refuses_a_digest_the_pack_config_does_not_carry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record the pack config was not updated with (a hand edit of releases.yaml): prod's gate fails."""
    config = stack_file("prod")["config"]
    changed = released(config)
    changed["services"]["web"]["1.4.2"]["digest"] = DIGEST
    project = project_copy(tmp_path, "prod", config, changed)
    code = preflight_main(["--stack", "prod", "--project-dir", str(project)])
    out = capsys.readouterr().out
    assert code == 1
    assert "image-release-recorded" in out and "mandatory" in out


# -- the pipelines: refuse an existing version early, record the digest, verify before up ------------


def steps_of(job: dict[str, Any]) -> list[str]:
    """Each step as its action (`owner/repo`) or its name."""
    return [action(s) or str(s.get("name", "")) for s in job["steps"]]


def test_release_refuses_an_existing_version_before_it_builds() -> None:
    build = workflow("release.yml")["jobs"]["build"]
    steps = steps_of(build)
    refuse = steps.index("Refuse a version already in the registry")
    assert steps.index("docker/login-action") < refuse < steps.index("docker/build-push-action")
    script = build["steps"][refuse]["run"]
    assert 'docker buildx imagetools inspect "${IMAGE}:${VERSION}"' in script
    assert script.index("already exists") < script.index("not found|manifest unknown")


@pytest.mark.parametrize(
    ("inspect", "builds"),
    [
        ("exit 0", False),  # the version exists: never rebuilt
        ("echo 'ERROR: ghcr.io/pouw/web:1.5.0: not found' >&2; exit 1", True),
        # A service's first release: GHCR has no package of that name yet.
        ("echo 'ERROR: name unknown: repository name not known to registry' >&2; exit 1", True),
        ("echo 'ERROR: denied: denied' >&2; exit 1", False),  # proves nothing: refused
    ],
)
def test_the_existence_check_runs_before_the_build(tmp_path: Path, inspect: str, builds: bool) -> None:
    (step,) = [
        s
        for s in workflow("release.yml")["jobs"]["build"]["steps"]
        if s.get("name") == "Refuse a version already in the registry"
    ]
    docker = tmp_path / "docker"
    docker.write_text(f"#!/bin/sh\n{inspect}\n")
    docker.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "IMAGE": "ghcr.io/pouw/web", "VERSION": "1.5.0"}
    done = subprocess.run(["bash", "-c", step["run"]], env=env, capture_output=True, text=True, check=False)
    assert (done.returncode == 0) is builds, done.stdout


def test_release_records_the_signed_digest_by_pull_request() -> None:
    jobs = workflow("release.yml")["jobs"]
    job = jobs["record"]
    assert job["needs"] == ["tag", "build", "sign"]  # only a signed digest is recorded
    assert job["permissions"] == {"contents": "write", "pull-requests": "write"}
    steps = steps_of(job)
    checkout = job["steps"][0]
    assert checkout["with"]["ref"] == "${{ github.event.repository.default_branch }}"
    assert checkout["with"]["persist-credentials"] is False
    recording = job["steps"][steps.index("Record the digest")]
    assert "python -m delivery.release record" in recording["run"]
    assert recording["env"]["DIGEST"] == "${{ needs.build.outputs.digest }}"
    assert recording["env"]["IMAGE"] == "${{ needs.build.outputs.image }}"
    opening = job["steps"][steps.index("Open the record's pull request")]["run"]
    assert "git add releases.yaml policies/config" in opening and "gh pr create" in opening
    assert steps.index("Record the digest") < steps.index("Open the record's pull request")


def test_deploy_verifies_the_release_signatures_before_pulumi_up() -> None:
    up = workflow("deploy-stack.yml")["jobs"]["up"]
    assert up["permissions"]["packages"] == "read"
    steps = steps_of(up)
    names = [str(s.get("id", "")) for s in up["steps"]]
    verify = steps.index("Verify the release signatures (no pulumi up when one fails)")
    assert steps.index("docker/login-action") < steps.index("sigstore/cosign-installer") < verify
    assert steps.index("Program and policy pack environments") < verify < names.index("up")
    assert up["steps"][verify]["run"] == '.venv/bin/python -m delivery.release verify --stack "$STACK"'
    text = (ROOT / "Jenkinsfile").read_text().split("def deployStack(", 1)[1].split("\npipeline {", 1)[0]
    assert text.index("delivery.release verify --stack") < text.index("pulumi up --yes")
    assert text.index("make .venv/.installed") < text.index("delivery.release verify --stack")


def test_every_workflow_update_is_preceded_by_the_verification() -> None:
    """Every job that changes a stack (`pulumi up`, or the rollout driver whose steps are `pulumi up`s)
    verifies the release signatures first, with GHCR readable and cosign installed."""
    updating = 0
    for path in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        for name, job in workflow(path.name)["jobs"].items():
            steps = job.get("steps", [])
            text = [json.dumps(s) for s in steps]
            updates = [
                i
                for i, s in enumerate(steps)
                if (action(s) == "pulumi/actions" and s.get("with", {}).get("command") == "up")
                or "delivery.driver run" in str(s.get("run", ""))
            ]
            if not updates:
                continue
            updating += 1
            verify = next(i for i, t in enumerate(text) if "delivery.release verify --stack" in t)
            assert verify < updates[0], f"{path.name} {name}"
            assert steps_of(job).index("sigstore/cosign-installer") < verify, f"{path.name} {name}"
            assert steps_of(job).index("docker/login-action") < verify, f"{path.name} {name}"
            assert job["permissions"]["packages"] == "read", f"{path.name} {name}"
    assert updating == 3  # deploy-stack.yml's up, rollout.yml's drive and approve


def test_every_verifier_has_the_same_cosign() -> None:
    """Jenkins runs `delivery.release verify` on the agent image (ci/Dockerfile), which must carry cosign,
    at the version the workflows install: a deploy verifies alike on both paths, and as release.yml signs."""
    dockerfile = (ROOT / "ci" / "Dockerfile").read_text()
    (version,) = re.findall(r"^FROM ghcr\.io/sigstore/cosign/cosign:(v[0-9.]+) AS cosign$", dockerfile, re.M)
    assert "COPY --from=cosign /ko-app/cosign /usr/local/bin/cosign" in dockerfile
    assert "RUN cosign version" in dockerfile
    installs = [
        step
        for name in ("deploy-stack.yml", "release.yml", "rollout.yml")
        for job in workflow(name)["jobs"].values()
        for step in job.get("steps", [])
        if action(step) == "sigstore/cosign-installer"
    ]
    assert len(installs) == 4  # deploy-stack.yml's up, rollout.yml's drive and approve, release.yml's sign
    assert all(step["with"]["cosign-release"] == version for step in installs)
    pod = (ROOT / "ci" / "jenkins-agent.yaml").read_text()
    assert "pouw-cicd-ci" in pod  # the agent's pulumi container is this image


# -- `delivery.release verify`: cosign verify every recorded image a stack deploys -------------------

FAKE_COSIGN = """#!/bin/sh
printf '%s\\n' "$*" >> "$(dirname "$0")/calls"
case "$*" in *"$REFUSE"*) echo "Error: no matching signatures" >&2; exit 1;; esac
"""


@pytest.fixture
def cosign(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "cosign"
    path.parent.mkdir()
    path.write_text(FAKE_COSIGN)
    path.chmod(0o755)
    return path


def calls(cosign: Path) -> list[str]:
    log = cosign.parent / "calls"
    return log.read_text().splitlines() if log.exists() else []


def test_verify_checks_every_slot_against_the_release_identity(
    cosign: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFUSE", "nothing-matches-this")
    assert main(["verify", "--stack", "prod", "--cosign", str(cosign)], ROOT) == 0
    recorded = parse_record((ROOT / RECORD_FILE).read_text(), RECORD_FILE)
    expected = []
    for service, version in (("web", "1.4.2"), ("web", "1.4.1"), ("worker", "2.0.1"), ("worker", "2.0.0")):
        image = recorded.image(service, version)
        assert image is not None
        identity = signer_identity("pouw/pouw-cicd", service, version)
        expected.append(
            f"verify {image.ref} --certificate-identity-regexp {identity} "
            "--certificate-oidc-issuer https://token.actions.githubusercontent.com"
        )
    assert calls(cosign) == expected
    assert "web 1.4.1: ghcr.io/pouw/web@sha256:" in capsys.readouterr().out


def test_the_identity_is_release_yml_at_the_versions_tag_only() -> None:
    pattern = re.compile(signer_identity("pouw/pouw-cicd", "web", "1.4.2"))
    # What release.yml's own verification names: server/repository/.github/workflows/release.yml@ref.
    assert pattern.match(
        "https://github.com/pouw/pouw-cicd/.github/workflows/release.yml@refs/tags/web/v1.4.2"
    )
    for other in (
        "https://github.com/pouw/pouw-cicd/.github/workflows/release.yml@refs/tags/web/v1.4.20",
        "https://github.com/pouw/pouw-cicd/.github/workflows/deploy.yml@refs/tags/web/v1.4.2",
        "https://github.com/pouw/pouw-cicd/.github/workflows/release.yml@refs/heads/main",
        "https://github.com/evil/pouw-cicd/.github/workflows/release.yml@refs/tags/web/v1.4.2",
    ):
        assert not pattern.match(other), other


@pytest.mark.parametrize(
    ("source", "signer", "expected"),
    [
        ("https://github.com/pouw/pouw-cicd.git", None, "pouw/pouw-cicd"),
        ("https://gitlab.example/pouw/pouw-cicd", "pouw/pouw-cicd", "pouw/pouw-cicd"),
        ("https://github.com/pouw/pouw-cicd", "acme/shop", "acme/shop"),
    ],
)
def test_the_deploy_and_the_clusters_check_one_signer(
    cosign: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    signer: str | None,
    expected: str,
) -> None:
    """`delivery.release verify` reads the signer as the settings do (`admission.signer`, else
    `sourceRepository`'s `<owner>/<repo>`), so it checks the certificate the clusters' Kyverno admits."""
    monkeypatch.setenv("REFUSE", "nothing-matches-this")
    config = stack_file("staging")["config"]
    config["pouw-cicd:sourceRepository"] = source
    if signer:
        config["pouw-cicd:admission"] = {"signer": signer}
    project = project_copy(tmp_path / "p", "staging", config)
    assert main(["verify", "--stack", "staging", "--cosign", str(cosign)], project) == 0
    deploy = re.compile(calls(cosign)[0].split(" --certificate-identity-regexp ")[1].split(" ")[0])
    (rule,) = admission.verify_rule("web", expected, True, "amazon")["verifyImages"]
    kyverno = re.compile(rule["attestors"][0]["entries"][0]["keyless"]["subjectRegExp"])
    certificate = f"https://github.com/{expected}/.github/workflows/release.yml@refs/tags/web/v1.4.2"
    assert deploy.match(certificate) and kyverno.match(certificate)
    assert not deploy.match(certificate.replace(expected, "pouw/other"))


def test_verify_without_a_github_signer_names_the_key(
    cosign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = stack_file("staging")["config"]
    config["pouw-cicd:sourceRepository"] = "https://gitlab.example/pouw/pouw-cicd"
    project = project_copy(tmp_path / "p", "staging", config)
    assert main(["verify", "--stack", "staging", "--cosign", str(cosign)], project) == 2
    assert "set pouw-cicd:admission.signer to the <owner>/<repo>" in capsys.readouterr().err
    assert calls(cosign) == []


def test_verify_refuses_an_unsigned_digest(
    cosign: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = parse_record((ROOT / RECORD_FILE).read_text(), RECORD_FILE)
    bad = recorded.image("worker", "2.0.0")
    assert bad is not None
    monkeypatch.setenv("REFUSE", bad.digest)
    assert main(["verify", "--stack", "staging", "--cosign", str(cosign)], ROOT) == 2
    err = capsys.readouterr().err
    assert f"worker 2.0.0: {bad.ref} is not signed by .github/workflows/release.yml at worker/v2.0.0" in err
    assert "no matching signatures" in err


def test_verify_in_dev_names_what_it_builds_and_elsewhere_refuses_an_unrecorded_version(
    cosign: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFUSE", "nothing-matches-this")
    assert main(["verify", "--stack", "dev", "--cosign", str(cosign)], ROOT) == 0
    out = capsys.readouterr().out
    assert "web 1.5.0-rc.1: not released, built by this stack (dev)" in out and calls(cosign) == []
    config = stack_file("staging")["config"]
    config["pouw-cicd:services"][0]["version"] = "9.9.9"
    project = project_copy(tmp_path / "p", "staging", config, {"services": {}})
    assert main(["verify", "--stack", "staging", "--cosign", str(cosign)], project) == 2
    err = capsys.readouterr().err
    assert "pouw-cicd:services[0].version: web 9.9.9 (staging) has no release record in releases.yaml" in err
    assert "push the tag web/v9.9.9" in err
