"""The pipelines: workflows pass a real schema validator and security audit; the gates are in order."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent
STACKS = ["dev", "staging", "prod"]


def workflow(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads a bare `on:` key as True
    return data


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def audit(path: Path) -> subprocess.CompletedProcess[str]:
    config = ROOT / ".github" / "zizmor.yml"
    command = [
        str(BIN / "zizmor"),
        "--offline",
        "--config",
        str(config),
        "--min-severity",
        "medium",
        str(path),
    ]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_workflows_pass_the_schema_and_the_audit() -> None:
    assert validate(*sorted(WORKFLOWS.glob("*.yml"))).returncode == 0
    assert audit(WORKFLOWS).returncode == 0


def test_the_validators_catch_broken_workflows(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("name: bad\non: push\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    stepz: []\n")
    assert validate(bad).returncode != 0
    unpinned = tmp_path / "unpinned.yml"
    unpinned.write_text(
        "name: u\non: push\npermissions: {}\njobs:\n  x:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - uses: someone/some-action@main\n"
    )
    result = audit(unpinned)
    assert result.returncode != 0 and "unpinned-uses" in result.stdout + result.stderr


def test_pull_request_workflow() -> None:
    pr = workflow("pull-request.yml")
    assert pr["on"] == {"pull_request": {"branches": ["main"]}}
    assert pr["permissions"] == {"contents": "read"}
    assert pr["concurrency"]["group"] == "pull-request-${{ github.event.pull_request.number }}"
    assert pr["concurrency"]["cancel-in-progress"] is True
    jobs = pr["jobs"]
    assert any(step.get("run") == "make test" for step in jobs["checks"]["steps"])
    assert jobs["preflight"]["strategy"]["matrix"]["stack"] == STACKS
    preflight_steps = " ".join(str(s.get("run", "")) for s in jobs["preflight"]["steps"])
    assert "--markdown preflight.md" in preflight_steps and "GITHUB_STEP_SUMMARY" in preflight_steps
    assert "gh pr comment" in preflight_steps
    preview = jobs["preview"]
    assert preview["needs"] == ["checks", "preflight"]
    assert preview["permissions"] == {"contents": "read", "id-token": "write", "pull-requests": "write"}
    assert [m["stack"] for m in preview["strategy"]["matrix"]["include"]] == STACKS
    (pulumi,) = [s for s in preview["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@")]
    assert pulumi["uses"] == "pulumi/actions@v6"
    assert pulumi["with"]["command"] == "preview" and pulumi["with"]["comment-on-pr"] is True
    assert pulumi["with"]["policyPacks"] == "policies"
    assert pulumi["with"]["policyPackConfigs"] == "policies/config/${{ matrix.stack }}.json"
    for step in [s for job in jobs.values() for s in job["steps"] if "with" in s]:
        assert "setup-python" not in step.get("uses", "") or step["with"]["cache"] == "pip"


def test_deploy_workflow_chain_and_gate() -> None:
    deploy = workflow("deploy.yml")
    assert deploy["on"]["push"] == {"branches": ["main"]}
    jobs = deploy["jobs"]
    assert [jobs[s].get("needs") for s in STACKS] == [None, "dev", "staging"]
    assert all(jobs[s]["with"]["stack"] == s for s in STACKS)
    assert all(jobs[s]["permissions"]["id-token"] == "write" for s in STACKS)
    up = workflow("deploy-stack.yml")["jobs"]["up"]
    assert up["environment"] == "${{ inputs.stack }}"  # prod's reviewers are the environment's
    steps = up["steps"]
    gate = next(i for i, s in enumerate(steps) if "preflight" in str(s.get("run", "")))
    deploy_step = next(i for i, s in enumerate(steps) if s.get("uses") == "pulumi/actions@v6")
    assert gate < deploy_step  # a failing preflight stops the job before `pulumi up`
    assert steps[deploy_step]["with"]["command"] == "up"
    assert steps[deploy_step]["with"]["policyPackConfigs"] == "policies/config/${{ inputs.stack }}.json"


def test_no_long_lived_cloud_secrets_in_workflows() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        assert "secrets." not in text, path
        assert not re.search(r"AWS_SECRET_ACCESS_KEY|AZURE_CLIENT_SECRET|GOOGLE_CREDENTIALS", text), path


def jenkins_stages() -> list[str]:
    return re.findall(r"stage\('([^']+)'\)", (ROOT / "Jenkinsfile").read_text())


def test_jenkinsfile_gates() -> None:
    text = (ROOT / "Jenkinsfile").read_text()
    stages = jenkins_stages()
    assert stages == [
        "Install",
        "Checks",
        "Lint and types",
        "Tests",
        "Preflight",
        "Preview",
        "Deploy dev",
        "Deploy staging",
        "Approve prod",
        "Deploy prod",
    ]
    assert re.search(r"stage\('Checks'\) \{\s*parallel \{", text)
    approve = text.split("stage('Approve prod')", 1)[1].split("stage('Deploy prod')", 1)[0]
    assert "input message:" in approve
    commands = re.findall(r'sh "(pulumi (?:preview|up)[^"]*)"', text)
    assert len(commands) == 4
    for command in commands:
        assert "--policy-pack policies --policy-pack-config policies/config/" in command
    assert "yamlFile 'ci/jenkins-agent.yaml'" in text


def test_jenkins_agent_pod_is_restricted() -> None:
    pod = yaml.safe_load((ROOT / "ci" / "jenkins-agent.yaml").read_text())
    assert pod["spec"]["serviceAccountName"] == "jenkins-agent"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["spec"]["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert ":latest" not in container["image"]
