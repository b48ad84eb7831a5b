"""CI runners and pipeline identities: Helm releases, RBAC, and trust pinned to repository and environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from preflight.cli import main
from preflight.engine import SECRET_SIG, SIG_KEY, ProgramRun
from preflight.report import Preflight
from tests.conftest import project_copy, run_config, stack_file

RELEASE = "kubernetes:helm.sh/v3:Release"
ROLE = "aws:iam/role:Role"
GITHUB = "token.actions.githubusercontent.com"


def trust(run: ProgramRun, name: str) -> dict[str, Any]:
    statement: dict[str, Any] = json.loads(run.get(ROLE, name).inputs["assumeRolePolicy"])["Statement"][0]
    return statement


def test_arc_releases_and_secret(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["dev"].run
    controller = run.get(RELEASE, "ci-runners-arc-controller").inputs
    assert (
        controller["chart"]
        == "oci://ghcr.io/actions/actions-runner-controller-charts/gha-runner-scale-set-controller"
    )
    assert controller["version"] == "0.12.1" and controller["namespace"] == "arc-systems"
    scale_set = run.get(RELEASE, "ci-runners-pouw-linux").inputs
    assert scale_set["namespace"] == "arc-runners"  # controller and runners apart
    values = scale_set["values"]
    assert values["githubConfigSecret"] == "github-app"  # referenced by name...
    assert "github_app_private_key" not in json.dumps(scale_set)  # ...never inlined
    assert (values["minRunners"], values["maxRunners"]) == (0, 10)
    assert values["runnerScaleSetName"] == "pouw-linux" and values["runnerGroup"] == "default"
    assert values["containerMode"]["type"] == "kubernetes"
    (runner,) = values["template"]["spec"]["containers"]
    assert runner["image"] == "ghcr.io/actions/actions-runner:2.328.0"
    assert runner["securityContext"]["allowPrivilegeEscalation"] is False
    assert values["template"]["spec"]["serviceAccountName"] == "arc-runner"
    secret = run.get("kubernetes:core/v1:Secret", "ci-runners-github-app").inputs
    assert secret["stringData"][SIG_KEY] == SECRET_SIG  # the app credentials stay secret
    assert set(secret["stringData"]["value"]) == {
        "github_app_id",
        "github_app_installation_id",
        "github_app_private_key",
    }
    namespaces = {r.inputs["metadata"]["name"] for r in run.by_type("kubernetes:core/v1:Namespace")}
    assert {"arc-systems", "arc-runners", "jenkins-agents"} <= namespaces


def test_runner_roles_push_only_to_the_project_repositories(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["dev"].run
    for name, namespace, account in (
        ("ci-runners-arc-push", "arc-runners", "arc-runner"),
        ("ci-runners-jenkins-push", "jenkins-agents", "jenkins-agent"),
    ):
        condition = trust(run, name)["Condition"]["StringEquals"]
        assert f"system:serviceaccount:{namespace}:{account}" in condition.values()
        policy = json.loads(run.get("aws:iam/rolePolicy:RolePolicy", name).inputs["policy"])
        login, push = policy["Statement"]
        assert login["Action"] == ["ecr:GetAuthorizationToken"]
        assert sorted(push["Resource"]) == sorted(
            run.get("aws:ecr/repository:Repository", f"{s}-ecr").outputs["arn"] for s in ("web", "worker")
        )
        assert not any("*" in a for a in push["Action"])


def test_jenkins_rbac_and_pod_template(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["dev"].run
    role = run.get("kubernetes:rbac.authorization.k8s.io/v1:Role", "ci-runners-jenkins-agents").inputs
    assert {"pods", "pods/exec"} <= set(role["rules"][0]["resources"])
    binding = run.get(
        "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding", "ci-runners-jenkins-agents"
    ).inputs
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "jenkins-controller", "namespace": "jenkins-agents"}
    ]
    template = json.loads(
        run.get("kubernetes:core/v1:ConfigMap", "ci-runners-jenkins-pod-template").inputs["data"][
            "pod-template.yaml"
        ]
    )
    assert template["spec"]["serviceAccountName"] == "jenkins-agent"
    (agent,) = template["spec"]["containers"]
    assert agent["securityContext"]["capabilities"] == {"drop": ["ALL"]} and agent["resources"]["limits"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_aws_deploy_and_preview_roles_are_pinned(stack_runs: dict[str, Preflight], stack: str) -> None:
    run = stack_runs[stack].run
    for kind, subject in (
        ("deploy", f"repo:pouw/pouw-cicd:environment:{stack}"),
        ("preview", "repo:pouw/pouw-cicd:pull_request"),
    ):
        statement = trust(run, f"pipeline-{kind}")
        assert statement["Principal"]["Federated"].endswith(f"oidc-provider/{GITHUB}")
        assert statement["Condition"]["StringEquals"] == {
            f"{GITHUB}:aud": "sts.amazonaws.com",
            f"{GITHUB}:sub": subject,
        }
    attachments = {
        r.inputs["policyArn"]
        for r in run.by_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if r.name.startswith("pipeline-")
    }
    assert attachments == {
        "arn:aws:iam::aws:policy/PowerUserAccess",
        "arn:aws:iam::aws:policy/ReadOnlyAccess",
    }
    assert run.outputs["pipelineIdentities"]["awsDeployRoleArn"].endswith(":pipeline-deploy")


def test_gcp_and_azure_identities(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["prod"].run
    provider = run.get(
        "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider", "pipeline-provider"
    )
    assert provider.inputs["attributeCondition"] == "assertion.repository == 'pouw/pouw-cicd'"
    binding = run.get("gcp:serviceaccount/iAMMember:IAMMember", "pipeline-deploy-wif").inputs
    assert binding["role"] == "roles/iam.workloadIdentityUser"
    assert binding["member"].endswith("/subject/repo:pouw/pouw-cicd:environment:prod")
    credential = run.get(
        "azure-native:managedidentity:FederatedIdentityCredential", "pipeline-deploy-github"
    ).inputs
    assert credential["subject"] == "repo:pouw/pouw-cicd:environment:prod"
    assert credential["audiences"] == ["api://AzureADTokenExchange"]
    for kind, role in (
        ("deploy", "b24988ac-6180-42a0-ab88-20f7382dd24c"),
        ("preview", "acdd72a7-3385-48ef-bd42-f606fba81ae7"),
    ):
        assignment = run.get("azure-native:authorization:RoleAssignment", f"pipeline-{kind}-role").inputs
        assert assignment["scope"].endswith("/resourceGroups/rg-pouw-prod")  # the environment's group only
        assert assignment["roleDefinitionId"].endswith(role)  # Contributor to deploy, Reader to preview
    preview = run.get("azure-native:managedidentity:FederatedIdentityCredential", "pipeline-preview-github")
    assert preview.inputs["subject"] == "repo:pouw/pouw-cicd:pull_request"
    viewer = run.get("gcp:projects/iAMMember:IAMMember", "pipeline-preview-viewer").inputs
    assert viewer["role"] == "roles/viewer" and viewer["member"].startswith("serviceAccount:preview-prod@")
    outputs = run.outputs["pipelineIdentities"]
    assert {"gcpWorkloadIdentityProvider", "gcpServiceAccount", "azureClientId", "azureTenantId"} <= set(
        outputs
    )


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: c["pouw-cicd:pipelineIdentities"].update(repository="*/pouw-cicd"),
            "pouw-cicd:pipelineIdentities.repository: must be <owner>/<repo> on GitHub, e.g. "
            "pouw/pouw-cicd, got '*/pouw-cicd'",
        ),
        (
            lambda c: c["pouw-cicd:ciRunners"]["arc"]["scaleSets"][0].update(minRunners=5, maxRunners=2),
            "pouw-cicd:ciRunners.arc.scaleSets[0]: maxRunners (2) is below minRunners (5); raise maxRunners",
        ),
        (
            lambda c: c["pouw-cicd:ciRunners"]["arc"].update(
                runnerImage="ghcr.io/actions/actions-runner:latest"
            ),
            "pouw-cicd:ciRunners.arc.runnerImage: pin the runner image by version or digest",
        ),
        (
            lambda c: c.pop("pouw-cicd:arcPrivateKey"),
            "pouw-cicd:ciRunners.arc.privateKeyKey: config key pouw-cicd:arcPrivateKey is not set",
        ),
    ],
)
def test_bad_runner_settings(tmp_path: Path, mutate: Any, expected: str) -> None:
    config = stack_file("dev")["config"]
    mutate(config)
    run = run_config(tmp_path, "dev", config)
    assert run.resources == [] and expected in run.error_text, run.error_text


def test_dind_is_an_advisory_even_in_prod_levels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = stack_file("dev")["config"]
    config["pouw-cicd:ciRunners"]["arc"]["scaleSets"][0]["containerMode"] = "dind"
    project = project_copy(tmp_path, "dev", config)
    prod_levels = str(Path(__file__).resolve().parent.parent / "policies" / "config" / "prod.json")
    plan = tmp_path / "plan.json"
    main(
        ["--stack", "dev", "--project-dir", str(project), "--policy-config", prod_levels, "--json", str(plan)]
    )
    levels = {(d["policy"], d["level"]) for d in json.loads(plan.read_text())["diagnostics"]}
    assert ("arc-dind-advisory", "advisory") in levels  # said, never blocking
    assert not any(policy == "arc-runner-not-privileged" for policy, _ in levels)
    assert "Docker-in-Docker" in capsys.readouterr().out


def test_jenkins_agents_may_assume_the_pipeline_roles_of_their_stack(
    stack_runs: dict[str, Preflight],
) -> None:
    run = stack_runs["dev"].run
    statements = json.loads(run.get(ROLE, "pipeline-deploy").inputs["assumeRolePolicy"])["Statement"]
    github, jenkins = statements
    assert github["Condition"]["StringEquals"][f"{GITHUB}:sub"] == "repo:pouw/pouw-cicd:environment:dev"
    assert (
        "system:serviceaccount:jenkins-agents:jenkins-agent" in jenkins["Condition"]["StringEquals"].values()
    )
    assert run.outputs["ciRunnerTrust"]["issuer"].startswith("https://oidc.eks.")
    # prod has no Jenkins trust configured: GitHub only.
    assert (
        len(
            json.loads(stack_runs["prod"].run.get(ROLE, "pipeline-deploy").inputs["assumeRolePolicy"])[
                "Statement"
            ]
        )
        == 1
    )
