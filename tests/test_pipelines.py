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

from tests.conftest import ROOT, stack_file

WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent
STACKS = ["dev", "staging", "prod"]
SAME_REPO = "github.event.pull_request.head.repo.full_name == github.repository"
MAKE_POLICY_VENV = re.compile(r"\bmake\b[^\n]*\bpolicy-venv\b")


def workflow(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads a bare `on:` key as True
    return data


def action(step: dict[str, Any]) -> str:
    """`owner/repo` of a step's action ('' for a `run` step)."""
    return str(step.get("uses", "")).split("@", 1)[0]


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
    (pulumi,) = [s for s in preview["steps"] if action(s) == "pulumi/actions"]
    assert pulumi["with"]["command"] == "preview" and pulumi["with"]["comment-on-pr"] is True
    assert pulumi["with"]["policyPacks"] == "policies"
    assert pulumi["with"]["policyPackConfigs"] == "policies/config/${{ matrix.stack }}.json"


def test_deploy_workflow_chain_and_gate() -> None:
    deploy = workflow("deploy.yml")
    assert deploy["on"]["push"] == {"branches": ["main"]}
    jobs = deploy["jobs"]
    # Each stack after the previous stack's rollout (a release walks dev's steps before staging's).
    assert [jobs[s].get("needs") for s in STACKS] == [None, "dev-rollout", "staging-rollout"]
    assert all(jobs[s]["with"]["stack"] == s for s in STACKS)
    assert all(jobs[s]["permissions"]["id-token"] == "write" for s in STACKS)
    up = workflow("deploy-stack.yml")["jobs"]["up"]
    assert up["environment"] == "${{ inputs.stack }}"  # prod's reviewers are the environment's
    steps = up["steps"]
    gate = next(i for i, s in enumerate(steps) if "-m preflight --stack" in str(s.get("run", "")))
    deploy_step = next(i for i, s in enumerate(steps) if action(s) == "pulumi/actions")
    assert gate < deploy_step  # a failing preflight stops the job before `pulumi up`
    assert steps[deploy_step]["with"]["command"] == "up"
    assert steps[deploy_step]["with"]["policyPackConfigs"] == "policies/config/${{ inputs.stack }}.json"


ROLLOUT = "./.github/workflows/rollout.yml"


def test_the_rollout_driver_runs_after_each_deploy_with_its_runner() -> None:
    """deploy.yml calls rollout.yml after each stack's deploy, on that stack's (in-network) runner, with
    the deployed commit; the call is the only place the deploy workflow grants `contents: write`."""
    jobs = workflow("deploy.yml")["jobs"]
    assert list(jobs) == ["dev", "dev-rollout", "staging", "staging-rollout", "prod", "prod-rollout"]
    for stack in STACKS:
        call = jobs[f"{stack}-rollout"]
        assert call["uses"] == ROLLOUT and call["needs"] == stack
        assert call["with"] == {
            "stack": stack,
            "runner": jobs[stack]["with"]["runner"],
            "deployed": "${{ github.sha }}",
        }
        assert call["secrets"] == jobs[stack]["secrets"]
        assert call["permissions"] == {"contents": "write", "id-token": "write"}
        assert jobs[stack]["permissions"]["contents"] == "read"
    assert workflow("deploy.yml")["permissions"] == {"contents": "read"}
    inputs = workflow("rollout.yml")["on"]["workflow_call"]["inputs"]
    assert set(jobs["prod-rollout"]["with"]) <= set(inputs) and inputs["deployed"]["default"] == ""


def rollout_jobs() -> dict[str, Any]:
    jobs: dict[str, Any] = workflow("rollout.yml")["jobs"]
    return jobs


def test_only_the_jobs_that_push_may_write_and_they_share_the_deploys_group() -> None:
    jobs = rollout_jobs()
    writers = {name for name, job in jobs.items() if job["permissions"].get("contents") == "write"}
    pushers = {name for name, job in jobs.items() if "git -c http.extraheader" in json.dumps(job["steps"])}
    assert writers == pushers == {"drive", "approve"}
    up = workflow("deploy-stack.yml")["jobs"]["up"]
    for name in ("drive", "approve"):
        job = jobs[name]
        # The driver's steps are `pulumi up`s: never while the stack is deployed, never two at once.
        assert (
            job["concurrency"]
            == up["concurrency"]
            == {"group": "deploy-${{ inputs.stack }}", "cancel-in-progress": False}
        )
        assert job["strategy"]["max-parallel"] == 1, name  # one service after the other on one stack
        assert job["environment"] == "${{ inputs.stack }}", name
        assert job["runs-on"].startswith("${{ inputs.runner ||"), name  # deploy.yml's in-network runner
    # The manual pause: reviewers of `<stack>-rollout`, a job that holds nothing and takes no group.
    gate = jobs["approval"]
    assert gate["environment"] == "${{ inputs.stack }}-rollout" and gate["permissions"] == {}
    assert "concurrency" not in gate
    assert jobs["approve"]["if"] == "always() && needs.approval.result == 'success'"
    assert jobs["drive"]["if"] == "${{ !inputs.approve && needs.services.outputs.services != '[]' }}"


def guard_steps() -> tuple[dict[str, Any], dict[str, Any]]:
    steps = rollout_jobs()["services"]["steps"]
    names = [s.get("name") for s in steps]
    guard = steps[names.index("The branch holds what the deploy applied")]
    listing = steps[names.index("List them")]
    assert names.index("The branch holds what the deploy applied") < names.index("List them")
    return guard, listing


def run_step(step: dict[str, Any], repo: Path, env: dict[str, str]) -> tuple[int, dict[str, str], str]:
    """A `run:` step under bash in `repo`, with GitHub's output and summary files."""
    output, summary = repo.parent / "output", repo.parent / "summary"
    output.write_text("")
    summary.write_text("")
    environ = {**os.environ, **env, "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary)}
    done = subprocess.run(
        ["bash", "-e", "-c", step["run"]], cwd=repo, env=environ, capture_output=True, text=True
    )
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
    return done.returncode, outputs, summary.read_text() + done.stdout


def git(repo: Path, *args: str) -> str:
    command = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def commit(repo: Path, name: str, text: str, subject: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", subject)
    return git(repo, "rev-parse", "HEAD")


@pytest.mark.parametrize(
    ("later", "code", "moved", "said"),
    [
        ([], 0, "false", ""),
        ([("README.md", "rollout(staging/worker): set-weight to 50%")], 0, "false", ""),  # not the stack file
        (
            [("Pulumi.staging.yaml", "feat(worker): 2.0.2")],
            0,
            "true",
            "the deploy of that change runs its rollout",
        ),
        (
            [("Pulumi.staging.yaml", "rollout(staging/worker): set-weight to 50%")],
            1,
            "true",
            "::error::this deploy applied Pulumi.staging.yaml of",
        ),
    ],
)
def test_after_a_deploy_the_rollout_walks_only_the_deployed_stack_file(
    tmp_path: Path, later: list[tuple[str, str]], code: int, moved: str, said: str
) -> None:
    """The guard's own shell in a real repository: the branch moved on by a human commit (its deploy will
    run the rollout), or only by driver commits this older deploy has just undone (a loud failure)."""
    guard, listing = guard_steps()
    assert guard["if"] == "inputs.deployed != ''"
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    deployed = commit(repo, "Pulumi.staging.yaml", "weight: 20\n", "deploy")
    for n, (name, subject) in enumerate(later):
        commit(repo, name, f"change {n}\n", subject)
    env = {"STACK": "staging", "DEPLOYED": deployed, "GITHUB_REF_NAME": "main"}
    returned, outputs, text = run_step(guard, repo, env)
    assert (returned, outputs.get("moved")) == (code, moved), text
    assert said in text
    if code == 1:
        assert "dispatch deploy.yml on main to deploy the branch" in text
    if moved == "true":  # nothing is driven from a stack file this run did not deploy
        returned, outputs, _ = run_step(listing, repo, {"STACK": "staging", "SERVICE": "", "MOVED": "true"})
        assert (returned, outputs["services"]) == (0, "[]")


def test_the_services_job_reads_the_history_pending_needs() -> None:
    """`pending` refuses a shallow clone (the rollback commits are in the history)."""
    (checkout,) = [s for s in rollout_jobs()["services"]["steps"] if action(s) == "actions/checkout"]
    assert checkout["with"]["fetch-depth"] == 0
    _, listing = guard_steps()
    assert 'python -m delivery.driver pending --stack "$STACK"' in listing["run"]


def test_no_long_lived_cloud_secrets_in_workflows() -> None:
    """OIDC everywhere: the only secret a workflow reads is the (optional) notification webhook."""
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        assert set(re.findall(r"secrets\.(\w+)", text)) <= {"POUW_NOTIFY_WEBHOOK"}, path
        assert not re.search(r"AWS_SECRET_ACCESS_KEY|AZURE_CLIENT_SECRET|GOOGLE_CREDENTIALS", text), path


def jenkins_stages() -> list[str]:
    return re.findall(r"stage\('([^']+)'\)", (ROOT / "Jenkinsfile").read_text())


def test_jenkinsfile_gates() -> None:
    text = (ROOT / "Jenkinsfile").read_text()
    assert jenkins_stages() == [
        "Checks and preflight",
        "Preview",
        "pulumi preview",
        "Deploy dev",
        "Deploy staging",
        "Plan prod",
        "Approve prod",
        "Deploy prod",
    ]
    bodies = jenkins_stage_bodies()
    checks = bodies["Checks and preflight"]
    assert (
        checks.index("make lint types") < checks.index("make pytest") < checks.index("-m preflight --stack")
    )
    assert "junit testResults: 'reports/*.xml'" in checks and "--junitxml=reports/pytest.xml" in checks
    assert re.search(r"when \{ changeRequest\(\) \}", bodies["Preview"])
    commands = re.findall(r"(pulumi (?:preview|up) (?:[^\n\\]|\\\n)*)", text)
    assert len(commands) == 3  # preview per stack, the prod plan, up per stack
    for command in commands:
        assert "--policy-pack policies --policy-pack-config" in command, command
    assert text.count("yamlFile 'ci/jenkins-agent.yaml'") == len(re.findall(r"kubernetes \{", text))
    # Every pod is cleaned up after its stage; every stage that talks to Pulumi Cloud binds the token.
    assert text.count("cleanWs()") == text.count("kubernetes {")  # each pod's workspace is cleaned
    for name, body in bodies.items():
        if re.search(r"pulumi (preview|up|stack)", body):
            uses_deploy = "deployStack(" in body
            assert uses_deploy or "credentialsId: 'pulumi-access-token'" in body, name
    deploy_fn = text.split("def deployStack(", 1)[1].split("\n}\n", 1)[0]
    assert "credentialsId: 'pulumi-access-token', variable: 'PULUMI_ACCESS_TOKEN'" in deploy_fn


def test_jenkins_change_requests_can_never_reach_a_deploy_identity() -> None:
    """PR builds run with the preview service account; deploy pods only in the deploy job's own clouds."""
    text = (ROOT / "Jenkinsfile").read_text()
    bodies = jenkins_stage_bodies()
    for name, body in bodies.items():
        deploy_pod = "serviceAccount 'jenkins-deploy'" in body
        assert deploy_pod == name.startswith("Deploy "), name
        if deploy_pod:
            assert "when { expression { isDeployJob() } }" in body, name
            assert re.search(r"cloud 'pouw-(dev|staging|prod)-deploy'", body), name
            assert "namespace 'jenkins-deploy'" in body, name
        elif "kubernetes {" in body:
            assert "serviceAccount 'jenkins-agent'" in body and "namespace 'jenkins-agents'" in body, name
            assert "-deploy'" not in body.split("kubernetes {", 1)[1].split("}", 1)[0], name
    assert "env.BRANCH_NAME == 'main' && env.JOB_NAME.startsWith('deploy/')" in text
    roles = re.findall(r"role/pouw-\$\{[^}]+\}-(\w+)", text)
    assert set(roles) == {"preview", "deploy"}
    assert "pouw-${stack}-deploy" in text.split("def deployStack(", 1)[1].split("\n}\n", 1)[0]
    for name in ("Preview", "pulumi preview", "Plan prod", "Checks and preflight"):
        assert '-deploy"' not in bodies[name] and "role/pouw-prod-deploy" not in bodies[name], name


def test_jenkins_prod_approval_holds_no_agent_and_applies_the_saved_plan() -> None:
    bodies = jenkins_stage_bodies()
    plan, approve, prod = bodies["Plan prod"], bodies["Approve prod"], bodies["Deploy prod"]
    assert "--save-plan prod.plan.json" in plan and "preflight diff --stack prod --base" in plan
    assert "pulumi stack tag get pouw:commit" in plan and "stash name: 'prod-plan'" in plan
    assert "archiveArtifacts artifacts: 'prod-preview.txt, prod-diff.md, prod.plan.json'" in plan
    assert "agent none" in approve and "kubernetes" not in approve
    assert re.search(r"timeout\(time: \d+, unit: 'HOURS'\)", approve)
    assert "submitter 'pouw-prod-approvers'" in approve
    assert "unstash 'prod-plan'" in prod and "deployStack('prod', 'prod.plan.json')" in prod
    deploy_fn = (ROOT / "Jenkinsfile").read_text().split("def deployStack(", 1)[1]
    assert 'plan=(--plan "$PLAN")' in deploy_fn
    assert "pulumi stack tag set pouw:commit" in deploy_fn
    top = (ROOT / "Jenkinsfile").read_text().split("pipeline {", 1)[1]
    assert top.lstrip().startswith("agent none")  # no pipeline-wide pod waiting through the approval


def test_jenkins_agent_pod_is_restricted() -> None:
    pod = yaml.safe_load((ROOT / "ci" / "jenkins-agent.yaml").read_text())
    assert "serviceAccountName" not in pod["spec"]  # chosen per stage (preview or deploy)
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    assert set(containers) == {"pulumi", "buildkitd"}
    assert containers["pulumi"]["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    buildkit = containers["buildkitd"]
    assert buildkit["image"].endswith("-rootless") and ":latest" not in buildkit["image"]
    assert buildkit["args"][:2] == ["--addr", "tcp://127.0.0.1:1234"]  # the pod's loopback only
    assert {"privileged", "capabilities"}.isdisjoint(buildkit["securityContext"])
    env = {e["name"]: e["value"] for e in containers["pulumi"]["env"]}
    assert env["BUILDKIT_ADDR"] == "tcp://127.0.0.1:1234"


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


def jenkins_function(name: str) -> str:
    """The text of a top-level `def` of the Jenkinsfile, up to its closing brace at column 0."""
    text = (ROOT / "Jenkinsfile").read_text()
    return text.split(f"def {name}(", 1)[1].split("\n}\n", 1)[0]


def test_jenkins_prepares_the_pack_environment_in_every_stage_that_passes_it() -> None:
    text = (ROOT / "Jenkinsfile").read_text()
    users = []
    for name, body in {**jenkins_stage_bodies(), "deployStack": jenkins_function("deployStack")}.items():
        if "--policy-pack" in body:
            users.append(name)
            prepared = re.search(r"sh '(make [^']*policy-venv)'", body)
            assert prepared and prepared.start() < body.index("--policy-pack"), name
    assert users == ["Checks and preflight", "pulumi preview", "Plan prod", "deployStack"]
    assert text.count("deployStack('") == 3


def test_policy_venv_target_reads_the_directory_from_pulumipolicy_yaml() -> None:
    makefile = (ROOT / "Makefile").read_text()
    target = re.search(r"^policy-venv:[^\n]*\n((?:\t[^\n]*\n)+)", makefile, re.MULTILINE)
    assert target, "Makefile has no policy-venv target"
    recipe = target.group(1)
    assert "policies/PulumiPolicy.yaml" in recipe and "policies/requirements-lock.txt" in recipe
    assert "virtualenv" in makefile.split("policy-venv:")[0]  # the name comes from the runtime options
    name = policy_venv_name()
    assert f"policies/{name}" not in makefile  # never hard-coded a second time
    assert f"/policies/{name}/" in (ROOT / ".gitignore").read_text().splitlines()
    # Not `pulumi install` (pulumi/pulumi#16605: inside a pack under the program it installs the program).
    assert "pulumi install" not in recipe


def make_copy(tmp_path: Path, policy_yaml: str) -> Path:
    """The Makefile and the files policy-venv reads, with this checkout's .venv (no reinstall)."""
    for name in ("Makefile", "requirements.txt", "requirements-dev.txt", "requirements-lock.txt"):
        shutil.copy2(ROOT / name, tmp_path / name)
    (tmp_path / "policies").mkdir()
    for name in ("requirements.txt", "requirements-lock.txt"):
        shutil.copy2(ROOT / "policies" / name, tmp_path / "policies" / name)
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
    # Created without ensurepip's pip, the environment still has one: the pip the lock pins, which the
    # CLI's pip toolchain expects there.
    pinned = re.search(
        r"^pip==(\S+)", (ROOT / "policies" / "requirements-lock.txt").read_text(), re.MULTILINE
    )
    assert pinned
    pip = subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True, text=True, check=False)
    assert pip.stdout.startswith(f"pip {pinned.group(1)} "), pip.stdout + pip.stderr
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
    deploy = jenkins_function("deployStack")
    milestone = deploy.index('milestone(label: "deploy ${stack}")')
    lock = deploy.index('lock(resource: "pouw-cicd-${stack}") {')
    up = deploy.index('pulumi up --yes --stack "$PULUMI_ORG/pouw-cicd/$STACK"')
    assert 0 <= milestone < lock < up
    bodies = jenkins_stage_bodies()
    assert [f"deployStack('{s}'" in bodies[f"Deploy {s}"] for s in STACKS] == [True, True, True]
    assert "409" in deploy and "is locked by another update" in deploy
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


# --- The real path: pins, builder, network, sessions, approval, notifications ---------------------

PINNED = re.compile(r"^(?P<action>[\w.-]+/[\w.-]+)@(?P<sha>[0-9a-f]{40})$")
# The oldest major each action may be on: moving back below it (or to a tag) fails. Dependabot moves
# the pins forward (.github/dependabot.yml).
CURRENT_MAJORS = {
    "actions/checkout": 7,
    "actions/setup-python": 7,
    "actions/upload-artifact": 7,
    "actions/download-artifact": 8,
    "actions/attest": 4,
    "anchore/sbom-action": 0,
    "astral-sh/setup-uv": 10,
    "aws-actions/configure-aws-credentials": 6,
    "azure/use-kubelogin": 1,
    "docker/setup-buildx-action": 4,
    "docker/setup-qemu-action": 4,
    "docker/login-action": 4,
    "docker/build-push-action": 7,
    "google-github-actions/auth": 3,
    "pulumi/actions": 7,
    "pulumi/auth-actions": 2,
    "sigstore/cosign-installer": 4,
}


def all_steps() -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, name, step) for path, name, job in workflow_jobs() for step in job.get("steps", [])]


def test_every_action_is_pinned_by_commit_to_a_current_major() -> None:
    seen = set()
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for line in path.read_text().splitlines():
            use = re.match(r"\s*(?:- )?uses: (\S+)(?: # (v\d+)\.\d+\.\d+)?$", line)
            if not use or use.group(1).startswith("./"):
                continue
            pinned = PINNED.match(use.group(1))
            assert pinned and use.group(2), f"{path.name}: {line.strip()} is not `<sha> # vX.Y.Z`"
            name = pinned.group("action")
            assert name in CURRENT_MAJORS, f"{path.name}: {name} has no current major in this test"
            assert int(use.group(2)[1:]) >= CURRENT_MAJORS[name], f"{path.name}: {line.strip()}"
            seen.add(name)
    assert {"actions/checkout", "pulumi/actions", "docker/setup-buildx-action"} <= seen
    assert "azure/login" not in seen  # the Azure provider signs in itself (see the session test)


def test_the_cli_version_comes_from_the_pin_file() -> None:
    version = (ROOT / ".pulumi-version").read_text().strip()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    pulumi = [step for _, _, step in all_steps() if action(step) == "pulumi/actions"]
    # CLI install for the analysis, PR preview, prod plan, up, pack publish, and the rollout driver's
    # two jobs (drive, approve)
    assert len(pulumi) == 7
    for step in pulumi:
        assert step["with"].get("pulumi-version-file") == ".pulumi-version", step
        assert "pulumi-version" not in step["with"]
    # Steps that call the CLI directly run after pulumi/actions installed it, in the same job.
    for path, name, job in workflow_jobs():
        steps = job.get("steps", [])
        for index, step in enumerate(steps):
            if re.search(r"(^|\s)pulumi (stack|policy|preview|up)", str(step.get("run", ""))):
                assert any(action(s) == "pulumi/actions" for s in steps[:index]), f"{path} {name}"
    # Jenkins: the agent image is built from the same file and carries that exact CLI.
    pod = yaml.safe_load((ROOT / "ci" / "jenkins-agent.yaml").read_text())
    (image,) = [c["image"] for c in pod["spec"]["containers"] if c["name"] == "pulumi"]
    assert image.endswith(f":{version}"), image
    dockerfile = (ROOT / "ci" / "Dockerfile").read_text()
    assert "FROM docker.io/pulumi/pulumi-python-3.11:${PULUMI_VERSION}" in dockerfile
    assert 'test "$(pulumi version)" = "v${PULUMI_VERSION}"' in dockerfile
    build = workflow("ci-image.yml")["jobs"]["image"]
    text = json.dumps(build)
    assert "cat .pulumi-version" in text and "PULUMI_VERSION=${{ steps.version.outputs.version }}" in text
    assert workflow("ci-image.yml")["on"]["push"]["paths"] == ["ci/Dockerfile", ".pulumi-version"]


def test_a_buildkit_builder_is_set_up_before_every_update() -> None:
    up = workflow("deploy-stack.yml")["jobs"]["up"]["steps"]
    index = {action(s) or s.get("name", ""): i for i, s in enumerate(up)}
    (pulumi_up,) = [i for i, s in enumerate(up) if s.get("id") == "up"]
    assert index["docker/setup-qemu-action"] < index["docker/setup-buildx-action"] < pulumi_up
    buildx = up[index["docker/setup-buildx-action"]]["with"]
    assert buildx == {"driver": "docker-container", "use": True}  # the default driver refuses both
    # Previews never build (build_on_preview=False): no builder there.
    assert "build_on_preview=False" in (ROOT / "components" / "image.py").read_text()
    # Jenkins: the pod's BuildKit daemon becomes the current buildx builder before `pulumi up`.
    deploy = jenkins_function("deployStack")
    assert deploy.index("useBuilder()") < deploy.index("pulumi up")
    assert '--driver remote "$BUILDKIT_ADDR" --use' in jenkins_function("useBuilder")


def scale_sets(stack: str) -> set[str]:
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    arc = (config.get("pouw-cicd:ciRunners") or {}).get("arc") or {}
    return {s["name"] for s in arc.get("scaleSets", [])}


def test_private_stacks_are_deployed_and_previewed_from_inside_their_network() -> None:
    """Staging's EKS API is VPN-only and prod's private: their jobs run on their own in-network runners."""
    deploy = workflow("deploy.yml")["jobs"]
    runners = {stack: deploy[stack]["with"]["runner"] for stack in STACKS}
    assert runners == {"dev": "ubuntu-24.04", "staging": "pouw-staging", "prod": "pouw-prod"}
    for stack in ("staging", "prod"):
        assert runners[stack] in scale_sets(stack), f"Pulumi.{stack}.yaml runs no scale set {runners[stack]}"
        config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
        assert config["pouw-cicd:eks"]["publicAccessCidrs"] != ["0.0.0.0/0"]
    for job in workflow("deploy-stack.yml")["jobs"].values():
        assert job["runs-on"] == "${{ inputs.runner }}"
    preview = workflow("pull-request.yml")["jobs"]["preview"]
    assert preview["runs-on"] == "${{ matrix.runner }}"
    assert {m["stack"]: m["runner"] for m in preview["strategy"]["matrix"]["include"]} == runners
    # Jenkins: every stage touching staging or prod runs its pod in that stack's own cluster.
    for name, body in jenkins_stage_bodies().items():
        for stack in ("staging", "prod"):
            if name.endswith(f" {stack}") and "agent none" not in body:
                assert re.search(rf"cloud 'pouw-{stack}(-deploy)?'", body), name
    assert 'cloud "pouw-${STACK}"' in jenkins_stage_bodies()["Preview"]


def test_credentials_outlive_the_job() -> None:
    """AWS sessions, the Pulumi token and the roles' limit all cover the job's timeout."""
    from components.runners import MAX_SESSION_SECONDS

    for path, name, job in workflow_jobs():
        steps = job.get("steps", [])
        timeout = int(job.get("timeout-minutes", 360)) * 60
        for step in steps:
            if action(step) == "aws-actions/configure-aws-credentials":
                assert int(step["with"]["role-duration-seconds"]) == MAX_SESSION_SECONDS, f"{path} {name}"
                assert timeout <= MAX_SESSION_SECONDS, f"{path} {name}: the job outlives its AWS session"
            if action(step) == "pulumi/auth-actions":
                assert int(step["with"]["token-expiration"]) >= timeout, f"{path} {name}"
            if "ARM_USE_OIDC=true" in str(step.get("run", "")):
                assert job["permissions"]["id-token"] == "write"
    text = "".join(p.read_text() for p in WORKFLOWS.glob("*.yml"))
    assert "azure/login" not in text.lower()  # no CLI token that can expire mid-update
    assert text.count("ARM_USE_OIDC=true") == 5  # plan, up, preview, the rollout driver's drive and approve


def test_role_sessions_match_the_pipelines(stack_runs: dict[str, Any]) -> None:
    from components.runners import MAX_SESSION_SECONDS

    for stack in ("dev", "prod"):
        roles = [
            r
            for r in stack_runs[stack].run.by_type("aws:iam/role:Role")
            if r.name in {"pipeline-deploy", "pipeline-preview"}
        ]
        assert len(roles) == 2 and all(r.inputs["maxSessionDuration"] == MAX_SESSION_SECONDS for r in roles)


def test_prod_approves_a_saved_plan_and_applies_exactly_that() -> None:
    deploy = workflow("deploy.yml")["jobs"]
    assert [deploy[s]["with"].get("approval", False) for s in STACKS] == [False, False, True]
    jobs = workflow("deploy-stack.yml")["jobs"]
    plan, up = jobs["plan"], jobs["up"]
    assert plan["if"] == "inputs.approval" and plan["environment"] == "${{ inputs.stack }}-plan"
    assert up["needs"] == "plan" and up["environment"] == "${{ inputs.stack }}"
    assert "needs.plan.result == 'success'" in up["if"] and "!inputs.approval" in up["if"]
    (preview,) = [s for s in plan["steps"] if action(s) == "pulumi/actions"]
    assert preview["with"]["command"] == "preview" and preview["with"]["plan"] == "plan.json"
    assert preview["with"]["policyPacks"] == "policies"
    names = [s.get("name", action(s)) for s in plan["steps"]]
    assert names.index("Offline plan diff against the deployed commit") > names.index("pulumi/actions")
    diff = next(s for s in plan["steps"] if s.get("name") == "Offline plan diff against the deployed commit")
    assert "pulumi stack tag get pouw:commit" in diff["run"] and "GITHUB_STEP_SUMMARY" in diff["run"]
    (upload,) = [s for s in plan["steps"] if action(s) == "actions/upload-artifact"]
    (download,) = [s for s in up["steps"] if action(s) == "actions/download-artifact"]
    assert upload["with"]["name"] == download["with"]["name"] == "update-plan-${{ inputs.stack }}"
    (pulumi_up,) = [s for s in up["steps"] if s.get("id") == "up"]
    assert pulumi_up["with"]["plan"] == "${{ inputs.approval && 'plan.json' || '' }}"
    assert up["steps"].index(download) < up["steps"].index(pulumi_up)
    tag = next(s for s in up["steps"] if s.get("name") == "Record the deployed commit on the stack")
    assert 'pulumi stack tag set pouw:commit "$GITHUB_SHA"' in tag["run"]
    assert up["steps"].index(tag) > up["steps"].index(pulumi_up)


def test_deploy_approval_and_outcome_are_notified() -> None:
    stack_call = workflow("deploy-stack.yml")
    assert stack_call["on"]["workflow_call"]["secrets"]["POUW_NOTIFY_WEBHOOK"]["required"] is False
    for stack in STACKS:
        job = workflow("deploy.yml")["jobs"][stack]
        assert job["secrets"] == {"POUW_NOTIFY_WEBHOOK": "${{ secrets.POUW_NOTIFY_WEBHOOK }}"}
    notes = [
        (job_name, step) for _, job_name, step in all_steps() if "delivery.notify" in str(step.get("run", ""))
    ]
    events = {(job, re.search(r'--event "?\$?(\w+)', s["run"]).group(1)) for job, s in notes}  # type: ignore[union-attr]
    assert events == {("plan", "approval"), ("up", "deploy"), ("up", "event")}  # event: deploy or rollback
    for _, step in notes:
        assert step["env"]["POUW_NOTIFY_WEBHOOK"] == "${{ secrets.POUW_NOTIFY_WEBHOOK }}"
    ended = next(s for j, s in notes if '--status "$OUTCOME"' in s["run"])
    assert ended["if"].startswith("always()")
    text = (ROOT / "Jenkinsfile").read_text()
    assert "CredentialNotFoundException" in text  # no credential: notifications off, build unaffected
    deploy = jenkins_function("deployStack")
    assert re.findall(r"notify\((?:'deploy'|deployEvent\(stack\)), stack, '(\w+)'\)", deploy) == [
        "started",
        "succeeded",
        "failed",
    ]
    assert "notify('approval', 'prod'" in jenkins_stage_bodies()["Plan prod"]


def test_the_real_cli_analyses_the_exported_plan_next_to_the_gate() -> None:
    steps = workflow("pull-request.yml")["jobs"]["preflight"]["steps"]
    names = [s.get("name", action(s)) for s in steps]
    gate = steps[names.index("Offline preview and policy gate")]
    assert "--json plan.json --export state.json" in gate["run"]
    check = steps[names.index("Real CLI policy analysis agrees with the gate")]
    install = names.index("Real CLI policy analysis agrees with the gate") - 1
    assert action(steps[install]) == "pulumi/actions" and "command" not in steps[install]["with"]
    assert steps[install]["if"] == check["if"] == "always()"  # also when the gate blocked
    script = check["run"]
    assert "pulumi policy analyze --file state.json --policy-pack policies" in script
    assert '--policy-pack-config "policies/config/${STACK}.json" --json > analyze.json' in script
    assert "preflight agree --preflight plan.json --cli analyze.json" in script
    assert '--cli-exit-code "$status"' in script and "set +e" in script.split("pulumi policy analyze")[0]
    assert "agree.md" in preflight_step("Job summary")["run"]
    checks = jenkins_stage_bodies()["Checks and preflight"]
    assert '--export "state-$STACK.json"' in checks and "pulumi policy analyze --file" in checks
    assert "preflight agree" in checks and 'exit "$gate"' in checks
    assert "set -euo" not in checks  # a blocking gate must not skip the analysis


@pytest.mark.parametrize(
    ("stack", "action", "event"),
    [("prod", "rollback", "rollback"), ("staging", "rollback", "deploy"), ("prod", "promote", "deploy")],
)
def test_a_rollback_commit_is_announced_as_a_rollback(stack: str, action: str, event: str) -> None:
    """The subject `preflight rollout` suggests drives the event, in GitHub's shell and in Jenkins."""
    from preflight.rollout import commit_subject

    subject = commit_subject("prod", "web", action)
    steps = workflow("deploy-stack.yml")["jobs"]["up"]["steps"]
    (ended,) = [s for s in steps if s.get("name") == "Notify how the deploy ended"]
    script = ended["run"].split("python3 -m delivery.notify", 1)[0] + 'echo "$event"\n'
    env = {**os.environ, "STACK": stack, "MESSAGE": f"{subject}\n\nbody"}
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == event
    groovy = jenkins_function("deployEvent")
    assert "subject.startsWith(\"rollout(${stack}/\") && subject.contains('): rollback')" in groovy


def test_kubelogin_signs_in_wherever_pulumi_reaches_aks() -> None:
    """The AKS kubeconfig execs kubelogin (components/targets/aks.py): every job that runs pulumi against a
    stack with AKS installs it (one pinned version, the CI image's too) and signs it in with the job's
    OIDC token (workload identity, a token file renewed in the background), before pulumi runs."""
    dockerfile = (ROOT / "ci" / "Dockerfile").read_text()
    (image,) = re.findall(r"^FROM ghcr\.io/azure/kubelogin:(v[0-9.]+) AS kubelogin$", dockerfile, re.M)
    assert "COPY --from=kubelogin /usr/local/bin/kubelogin /usr/local/bin/kubelogin" in dockerfile
    preview = workflow("pull-request.yml")["jobs"]["preview"]
    jobs = [*workflow("deploy-stack.yml")["jobs"].values(), preview]
    for job in jobs:
        steps = job["steps"]
        (install,) = [i for i, s in enumerate(steps) if action(s) == "azure/use-kubelogin"]
        (sign_in,) = [
            i for i, s in enumerate(steps) if "AAD_LOGIN_METHOD=workloadidentity" in str(s.get("run"))
        ]
        pulumi = next(i for i, s in enumerate(steps) if action(s) == "pulumi/actions")
        assert install < sign_in < pulumi, job["name"]
        assert steps[install]["with"]["kubelogin-version"] == image
        run = steps[sign_in]["run"]
        assert "AZURE_FEDERATED_TOKEN_FILE=" in run and "audience=api://AzureADTokenExchange" in run
        assert job["permissions"]["id-token"] == "write"
    # Pull requests install it only for the stacks that run AKS.
    aks = {m["stack"]: m["aks"] for m in preview["strategy"]["matrix"]["include"]}
    assert aks == {stack: "pouw-cicd:aks" in stack_file(stack)["config"] for stack in STACKS}
    for step in preview["steps"]:
        if action(step) == "azure/use-kubelogin" or "AAD_LOGIN_METHOD" in str(step.get("run")):
            assert str(step["if"]).startswith("matrix.aks") or "(matrix.aks)" in str(step["if"]), step
