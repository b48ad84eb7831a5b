"""The pipelines: workflows pass a real schema validator and security audit; the gates are in order."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent
STACKS = ["dev", "staging", "prod"]
SAME_REPO = "github.event.pull_request.head.repo.full_name == github.repository"
MAKE_POLICY_VENV = re.compile(r"\bmake\b[^\n]*\bpolicy-venv\b")


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
    assert "gh api" in preflight_steps  # the keyed comment; see test_preflight_comments_are_keyed_per_stack
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


# --- The policy pack's own environment -------------------------------------------------------------


def workflow_jobs() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path.name, name, job)
        for path in sorted(WORKFLOWS.glob("*.yml"))
        for name, job in workflow(path.name)["jobs"].items()
    ]


def passes_the_pack(step: dict[str, Any]) -> bool:
    return "policyPacks" in (step.get("with") or {}) or "--policy-pack" in str(step.get("run", ""))


def policy_venv_name() -> str:
    """The virtualenv PulumiPolicy.yaml declares: the directory the CLI runs the pack from."""
    runtime = yaml.safe_load((ROOT / "policies" / "PulumiPolicy.yaml").read_text())["runtime"]
    assert runtime["name"] == "python"
    assert runtime["options"].get("toolchain", "pip") == "pip"
    name: str = runtime["options"]["virtualenv"]
    return name


def test_pack_environment_is_prepared_before_every_step_that_passes_the_pack() -> None:
    users = []
    for path, name, job in workflow_jobs():
        steps = job.get("steps", [])
        for index, step in enumerate(steps):
            if passes_the_pack(step):
                users.append((path, name))
                earlier = " ".join(str(s.get("run", "")) for s in steps[:index])
                assert MAKE_POLICY_VENV.search(earlier), (
                    f"{path} {name}: pack passed before `make policy-venv`"
                )
    assert ("pull-request.yml", "preview") in users and ("deploy-stack.yml", "up") in users


def jenkins_stage_bodies() -> dict[str, str]:
    """Each stage's text, up to the next stage (a parent stage keeps only its text before its first child)."""
    text = (ROOT / "Jenkinsfile").read_text()
    starts = [(m.start(), m.group(1)) for m in re.finditer(r"stage\('([^']+)'\)", text)]
    ends = [start for start, _ in starts[1:]] + [len(text)]
    return {name: text[start:end] for (start, name), end in zip(starts, ends, strict=True)}


def test_jenkins_prepares_the_pack_environment_in_every_stage_that_passes_it() -> None:
    users = []
    for name, body in jenkins_stage_bodies().items():
        if "--policy-pack" in body:
            users.append(name)
            prepared = re.search(r"sh '(make policy-venv)'", body)
            assert prepared and prepared.start() < body.index("--policy-pack"), name
    assert users == ["Preview", "Deploy dev", "Deploy staging", "Deploy prod"]


def test_policy_venv_target_reads_the_directory_from_pulumipolicy_yaml() -> None:
    makefile = (ROOT / "Makefile").read_text()
    target = re.search(r"^policy-venv:[^\n]*\n((?:\t[^\n]*\n)+)", makefile, re.MULTILINE)
    assert target, "Makefile has no policy-venv target"
    recipe = target.group(1)
    assert "policies/PulumiPolicy.yaml" in recipe and "-r policies/requirements.txt" in recipe
    assert "virtualenv" in makefile.split("policy-venv:")[0]  # the name comes from the runtime options
    name = policy_venv_name()
    assert f"policies/{name}" not in makefile  # never hard-coded a second time
    assert f"/policies/{name}/" in (ROOT / ".gitignore").read_text().splitlines()
    # Not `pulumi install` (pulumi/pulumi#16605: inside a pack under the program it installs the program).
    assert "pulumi install" not in recipe


def make_copy(tmp_path: Path, policy_yaml: str) -> Path:
    """The Makefile and the files policy-venv reads, with this checkout's .venv (no reinstall)."""
    for name in ("Makefile", "requirements.txt", "requirements-dev.txt"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / "policies").mkdir()
    shutil.copy2(ROOT / "policies" / "requirements.txt", tmp_path / "policies" / "requirements.txt")
    (tmp_path / "policies" / "PulumiPolicy.yaml").write_text(policy_yaml)
    (tmp_path / ".venv").symlink_to(BIN.parent, target_is_directory=True)
    return tmp_path


def run_policy_venv(copy: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    command = ["make", "--no-print-directory", "-o", ".venv/.installed", "policy-venv"]
    return subprocess.run(
        command, cwd=copy, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.skipif(
    not (BIN / "uv").exists() or shutil.which("make") is None, reason="needs make and .venv/bin/uv"
)
def test_policy_venv_target_creates_the_environment_pulumipolicy_yaml_names(tmp_path: Path) -> None:
    real = (ROOT / "policies" / "PulumiPolicy.yaml").read_text()
    renamed = real.replace(f"virtualenv: {policy_venv_name()}", "virtualenv: pack-env")
    assert renamed != real
    copy = make_copy(tmp_path, renamed)
    result = run_policy_venv(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in (copy / "policies").iterdir() if p.is_dir()) == ["pack-env"]
    python = copy / "policies" / "pack-env" / "bin" / "python"
    check = subprocess.run(
        [str(python), "-c", "import pulumi, pulumi_policy"], capture_output=True, check=False
    )
    assert check.returncode == 0, check.stderr
    assert run_policy_venv(copy).returncode == 0  # idempotent


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_policy_venv_target_refuses_a_pack_without_a_virtualenv(tmp_path: Path) -> None:
    copy = make_copy(tmp_path, "name: p\nruntime: python\n")
    result = run_policy_venv(copy)
    assert result.returncode != 0
    assert "runtime.options.virtualenv" in result.stderr
    assert [p.name for p in (copy / "policies").iterdir() if p.is_dir()] == []


# --- Concurrency and stack locks -------------------------------------------------------------------


def test_deploy_concurrency_is_per_stack_not_workflow_wide() -> None:
    deploy = workflow("deploy.yml")
    assert "concurrency" not in deploy  # one group for all stacks let a pending prod approval hold dev
    assert all("concurrency" not in job for job in deploy["jobs"].values())
    up = workflow("deploy-stack.yml")["jobs"]["up"]
    assert "inputs.stack" in up["concurrency"]["group"]
    assert up["concurrency"] == {"group": "deploy-${{ inputs.stack }}", "cancel-in-progress": False}
    assert "concurrency" not in workflow("deploy-stack.yml")


def test_a_locked_stack_is_named_in_the_job_summary() -> None:
    steps = workflow("deploy-stack.yml")["jobs"]["up"]["steps"]
    up = next(i for i, s in enumerate(steps) if s.get("id") == "up")
    (explain,) = [s for s in steps if "is locked by another update" in str(s.get("run", ""))]
    assert steps.index(explain) > up
    assert "failure()" in explain["if"] and "steps.up.outcome == 'failure'" in explain["if"]
    script = explain["run"]
    assert "is locked by another update (Jenkins or another run); re-run when it finishes" in script
    assert "GITHUB_STEP_SUMMARY" in script and "currentOperation" in script
    assert explain["env"]["STACK"] == "${{ inputs.stack }}"


def test_jenkins_locks_each_stack_and_keeps_deploys_in_order() -> None:
    text = (ROOT / "Jenkinsfile").read_text()
    bodies = jenkins_stage_bodies()
    ordinals = []
    for stack in STACKS:
        body = bodies[f"Deploy {stack}"]
        milestone = re.search(r"milestone\((\d+)\)", body)
        lock = body.find(f"lock(resource: 'pouw-cicd-{stack}') {{")
        up = body.find(f"pulumi up --yes --stack ${{PULUMI_ORG}}/pouw-cicd/{stack} ")
        assert milestone and 0 <= milestone.start() < lock < up, stack
        ordinals.append(int(milestone.group(1)))
    assert ordinals == sorted(set(ordinals))
    # A build waiting for the prod approval must not queue every later build: the locks serialise instead.
    options = re.search(r"\n  options \{([^}]*)\}", text)
    assert options and "disableConcurrentBuilds" not in options.group(1)


# --- Pull-request comments and forks ---------------------------------------------------------------


def preflight_step(name: str) -> dict[str, Any]:
    steps: list[dict[str, Any]] = workflow("pull-request.yml")["jobs"]["preflight"]["steps"]
    (step,) = [s for s in steps if s.get("name") == name]
    return step


def test_preflight_comments_are_keyed_per_stack() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        assert "--edit-last" not in path.read_text(), path
    comment = preflight_step("Comment on the pull request")
    script = comment["run"]
    assert comment["env"]["STACK"] == "${{ matrix.stack }}"
    assert 'MARKER="<!-- pouw-cicd:preflight:${STACK} -->"' in script
    assert '{ echo "$MARKER"; cat comment.md; } > body.md' in script  # the marker is the first line
    assert 'issues/${PR}/comments" --paginate' in script and "startswith(env.MARKER)" in script
    assert "--method PATCH" in script and 'gh pr comment "$PR" --body-file body.md' in script
    assert "always()" in comment["if"] and SAME_REPO in comment["if"]


def test_reporting_steps_run_always_and_take_context_through_env() -> None:
    for name in ("Plan diff against the base branch", "Job summary", "Comment on the pull request"):
        assert "always()" in preflight_step(name)["if"], name
    for path, name, job in workflow_jobs():
        for step in job.get("steps", []):
            assert "${{" not in str(step.get("run", "")), f"{path} {name}: inline expression in run"


@pytest.mark.skipif(shutil.which("jq") is None, reason="needs jq")
def test_the_comment_lookup_finds_only_this_stacks_comment_by_this_identity() -> None:
    (query,) = re.findall(r"--jq '([^']+)'", preflight_step("Comment on the pull request")["run"])
    bot = "github-actions[bot]"
    page = [
        {"id": 1, "user": {"login": bot}, "body": "#### :tropical_drink: `preview` on pouw-cicd/dev\n"},
        {"id": 2, "user": {"login": bot}, "body": "<!-- pouw-cicd:preflight:staging -->\nstaging"},
        {"id": 3, "user": {"login": "someone"}, "body": "<!-- pouw-cicd:preflight:dev -->\nquoted"},
        {"id": 4, "user": {"login": bot}, "body": "<!-- pouw-cicd:preflight:dev -->\ndev"},
    ]
    env = {**os.environ, "MARKER": "<!-- pouw-cicd:preflight:dev -->"}
    found = subprocess.run(
        ["jq", "-r", query], input=json.dumps(page), env=env, capture_output=True, text=True, check=True
    )
    assert found.stdout.split() == ["4"]


def test_forks_skip_the_preview_but_not_the_preflight() -> None:
    jobs = workflow("pull-request.yml")["jobs"]
    assert jobs["preview"]["if"] == SAME_REPO
    assert "if" not in jobs["preflight"]
    summary = preflight_step("Job summary")
    assert (
        summary["env"]["FORK"] == "${{ github.event.pull_request.head.repo.full_name != github.repository }}"
    )
    assert "pulumi preview skipped: pull requests from forks get no cloud credentials" in summary["run"]
