"""CI runners and pipeline identities: Helm releases, RBAC, and trust pinned to repository and environment."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.runners import MAX_SESSION_SECONDS, STACK_ROLES
from preflight.cli import main
from preflight.engine import SECRET_SIG, SIG_KEY, ProgramRun
from preflight.report import Preflight
from tests.conftest import ROOT, project_copy, run_config, stack_file
from tests.iam_simulator import allowed

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
    assert runner["image"] == stack_file("dev")["config"]["pouw-cicd:ciRunners"]["arc"]["runnerImage"]
    assert runner["image"].startswith("ghcr.io/actions/actions-runner:2.328.0@sha256:")
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
        ("ci-runners-jenkins-push", "jenkins-deploy", "jenkins-deploy"),  # the deploy job's agents only
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


def pod_security(run: ProgramRun) -> dict[str, dict[str, str]]:
    return {
        r.inputs["metadata"]["name"]: {
            k.rsplit("/", 1)[1]: v
            for k, v in r.inputs["metadata"]["labels"].items()
            if k.startswith("pod-security.kubernetes.io/")
        }
        for r in run.by_type("kubernetes:core/v1:Namespace")
        if r.name.startswith("ci-runners-")
    }


def test_pod_security_admits_the_runner_pods_it_will_get(stack_runs: dict[str, Preflight]) -> None:
    """Admission must accept what each namespace runs, and nothing more, or no job ever starts.

    Kubernetes-mode runners (dev) run restricted pods. A dind scale set's docker sidecar is privileged and
    the Jenkins agent's rootless BuildKit needs seccomp and AppArmor Unconfined (ci/jenkins-agent.yaml):
    only `enforce: privileged` admits them. Audit and warn keep reporting against restricted everywhere.
    """
    restricted = {"enforce": "restricted", "audit": "restricted", "warn": "restricted"}
    privileged = {**restricted, "enforce": "privileged"}
    dev = pod_security(stack_runs["dev"].run)
    assert dev == {
        "arc-systems": restricted,
        "arc-runners": restricted,
        "jenkins-agents": privileged,
        "jenkins-deploy": privileged,
    }
    for stack in ("staging", "prod"):
        run = stack_runs[stack].run
        values = run.get(RELEASE, f"ci-runners-pouw-{stack}").inputs["values"]
        assert values["containerMode"] == {"type": "dind"} and values["runnerScaleSetName"] == f"pouw-{stack}"
        assert pod_security(run) == {
            "arc-systems": restricted,
            "arc-runners": privileged,
            "jenkins-agents": privileged,
            "jenkins-deploy": privileged,
        }
    agent = yaml.safe_load((ROOT / "ci" / "jenkins-agent.yaml").read_text())
    buildkit = next(c for c in agent["spec"]["containers"] if c["name"] == "buildkitd")
    assert buildkit["securityContext"]["seccompProfile"] == {"type": "Unconfined"}
    assert (
        buildkit["securityContext"].get("privileged") is not True and buildkit["securityContext"]["runAsUser"]
    )


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_aws_deploy_and_preview_roles_are_pinned(stack_runs: dict[str, Preflight], stack: str) -> None:
    run = stack_runs[stack].run
    for kind, subject in (
        ("deploy", f"repo:pouw/pouw-cicd:environment:{stack}"),
        # Pull requests, and deploy-stack.yml's plan job (environment <env>-plan, no reviewers).
        ("preview", ["repo:pouw/pouw-cicd:pull_request", f"repo:pouw/pouw-cicd:environment:{stack}-plan"]),
    ):
        statement = trust(run, f"pipeline-{kind}")
        assert statement["Principal"]["Federated"].endswith(f"oidc-provider/{GITHUB}")
        assert statement["Condition"]["StringEquals"] == {
            f"{GITHUB}:aud": "sts.amazonaws.com",
            f"{GITHUB}:sub": subject,
        }
    # No AWS managed policy (PowerUserAccess, ReadOnlyAccess): each role holds its own generated
    # policies, pouw-<env>-<kind>-<n> (components/pipeline_policies.py; tests/test_permissions.py).
    policies = {p.outputs["arn"]: p.inputs["name"] for p in run.by_type("aws:iam/policy:Policy")}
    for kind in ("deploy", "preview"):
        role = run.get(ROLE, f"pipeline-{kind}")
        attached = [
            r.inputs["policyArn"]
            for r in run.by_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
            if r.inputs["role"] == role.outputs["name"] or r.name.startswith(f"pipeline-{kind}-")
        ]
        assert attached and all(arn in policies for arn in attached), attached
        assert sorted(policies[arn] for arn in attached) == [
            f"pouw-{stack}-{kind}-{n}" for n in range(1, len(attached) + 1)
        ]
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
    # The prod plan job (deploy-stack.yml, environment prod-plan) signs in as the preview identity too.
    plan = run.get("azure-native:managedidentity:FederatedIdentityCredential", "pipeline-preview-github-plan")
    assert plan.inputs["subject"] == "repo:pouw/pouw-cicd:environment:prod-plan"
    gcp_plan = run.get("gcp:serviceaccount/iAMMember:IAMMember", "pipeline-preview-wif-plan").inputs
    assert gcp_plan["member"].endswith("/subject/repo:pouw/pouw-cicd:environment:prod-plan")
    rbac = run.get("azure-native:authorization:RoleAssignment", "pipeline-deploy-rbac").inputs
    assert rbac["roleDefinitionId"].endswith("f58310d9-a9f6-439a-9e8d-f62e7b41a168")  # RBAC Administrator...
    assert rbac["scope"].endswith("/resourceGroups/rg-pouw-prod") and rbac["conditionVersion"] == "2.0"
    # ...that may write and delete only Network Contributor, AcrPull and AppGw for Containers
    # Configuration Manager assignments (ACI, AKS), only for service principals
    condition = rbac["condition"]
    roles = (
        "4d97b98b-1d4f-4787-a291-c67834d212e7, 7f951dda-4ed3-4680-a7ca-43fe172d538d, "
        "fbc52c3f-28ad-4303-a892-8a056630b8f1"
    )
    for source in ("Request", "Resource"):
        assert (
            f"@{source}[Microsoft.Authorization/roleAssignments:RoleDefinitionId] "
            f"ForAnyOfAnyValues:GuidEquals {{{roles}}}" in condition
        )
        assert (
            f"@{source}[Microsoft.Authorization/roleAssignments:PrincipalType] "
            "ForAnyOfAnyValues:StringEqualsIgnoreCase {'ServicePrincipal'}" in condition
        )
    assigned = {
        r.inputs["roleDefinitionId"].rsplit("/", 1)[1]
        for r in run.by_type("azure-native:authorization:RoleAssignment")
        if not r.name.startswith("pipeline-")
    }
    assert assigned == set(roles.split(", "))  # what the stack assigns, all in the condition
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
            lambda c: c["pouw-cicd:ciRunners"]["jenkins"].update(deployNamespace="jenkins-agents"),
            "pouw-cicd:ciRunners.jenkins: deployNamespace and namespace are both 'jenkins-agents': "
            "pull-request builds run in namespace and must not reach the deploy roles; set deployNamespace",
        ),
        (
            lambda c: c["pouw-cicd:ciRunners"]["jenkins"].update(deployNamespace="Jenkins_Deploy"),
            "pouw-cicd:ciRunners.jenkins.deployNamespace: must be a Kubernetes namespace",
        ),
        (
            lambda c: c["pouw-cicd:pipelineIdentities"].update(
                jenkinsTrust={
                    "oidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.example/id/X",
                    "issuer": "https://oidc.eks.eu-west-1.amazonaws.com/id/X",
                    "deployNamespace": "jenkins-agents",
                    "deployServiceAccount": "jenkins-agent",
                }
            ),
            "pouw-cicd:pipelineIdentities.jenkinsTrust: deployNamespace/deployServiceAccount name the same "
            "service account as namespace/serviceAccount",
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


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_only_the_deploy_namespace_reaches_the_deploy_role(
    stack_runs: dict[str, Preflight], stack: str
) -> None:
    """A pull-request build runs in jenkins-agents: that service account may assume the preview role and
    nothing else. The deploy role trusts only jenkins-deploy's account, which only the deploy job's cloud
    can start pods with (its own controller account, bound in that namespace alone)."""
    run = stack_runs[stack].run
    for kind, github_sub, account in (
        ("deploy", f"repo:pouw/pouw-cicd:environment:{stack}", "jenkins-deploy:jenkins-deploy"),
        (
            "preview",
            ["repo:pouw/pouw-cicd:pull_request", f"repo:pouw/pouw-cicd:environment:{stack}-plan"],
            "jenkins-agents:jenkins-agent",
        ),
    ):
        github, jenkins = json.loads(run.get(ROLE, f"pipeline-{kind}").inputs["assumeRolePolicy"])[
            "Statement"
        ]
        assert github["Condition"]["StringEquals"][f"{GITHUB}:sub"] == github_sub
        subjects = [v for k, v in jenkins["Condition"]["StringEquals"].items() if k.endswith(":sub")]
        assert subjects == [f"system:serviceaccount:{account}"]
    accounts = {
        (r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"]): r.inputs["metadata"].get(
            "annotations"
        )
        for r in run.by_type("kubernetes:core/v1:ServiceAccount")
        if r.name.startswith("ci-runners-jenkins")
    }
    push = run.outputs["ciRunnerPushRoles"]
    assert accounts == {
        ("jenkins-agents", "jenkins-controller"): None,
        ("jenkins-agents", "jenkins-agent"): None,  # no AWS role of its own: no push from a PR build
        ("jenkins-deploy", "jenkins-controller"): None,
        ("jenkins-deploy", "jenkins-deploy"): {"eks.amazonaws.com/role-arn": push["jenkins-deploy"]},
    }
    assert "jenkins-agents" not in push
    bindings = {
        r.inputs["metadata"]["namespace"]: r.inputs["subjects"]
        for r in run.by_type("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding")
        if r.name.startswith("ci-runners-jenkins")
    }
    assert bindings == {
        ns: [{"kind": "ServiceAccount", "name": "jenkins-controller", "namespace": ns}]
        for ns in ("jenkins-agents", "jenkins-deploy")
    }
    clouds = run.outputs["jenkinsClouds"]
    assert {k: (v["namespace"], v["serviceAccount"]) for k, v in clouds.items()} == {
        f"pouw-{stack}": ("jenkins-agents", "jenkins-agent"),
        f"pouw-{stack}-deploy": ("jenkins-deploy", "jenkins-deploy"),
    }
    template = json.loads(
        run.get("kubernetes:core/v1:ConfigMap", "ci-runners-jenkins-deploy-pod-template").inputs["data"][
            "pod-template.yaml"
        ]
    )
    assert template["spec"]["serviceAccountName"] == "jenkins-deploy"
    assert run.outputs["ciRunnerTrust"]["issuer"].startswith("https://oidc.eks.")


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_pipeline_roles_have_eks_access_entries(stack_runs: dict[str, Preflight], stack: str) -> None:
    """Authentication mode API: no entry, no Kubernetes API. Deploy is cluster admin (Helm charts install
    CRDs and cluster RBAC), preview may only view; nothing else the stack makes gets an entry."""
    run = stack_runs[stack].run
    roles = {r.outputs["arn"]: r.name for r in run.by_type(ROLE)}
    entries = {roles[r.inputs["principalArn"]]: r for r in run.by_type("aws:eks/accessEntry:AccessEntry")}
    assert set(entries) == {"pipeline-deploy", "pipeline-preview"}
    cluster = run.get("aws:eks/cluster:Cluster", "eks")
    assert cluster.inputs["accessConfig"]["authenticationMode"] == "API"
    policies = {}
    for association in run.by_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation"):
        assert association.inputs["accessScope"] == {"type": "cluster"}
        assert association.inputs["clusterName"] == cluster.outputs["name"]
        policies[roles[association.inputs["principalArn"]]] = association.inputs["policyArn"]
    prefix = "arn:aws:eks::aws:cluster-access-policy/"
    assert policies == {
        "pipeline-deploy": prefix + "AmazonEKSClusterAdminPolicy",
        "pipeline-preview": prefix + "AmazonEKSViewPolicy",
    }
    for name, entry in entries.items():
        urn = run.get(ROLE, name).urn
        assert urn in entry.dependencies and cluster.urn in entry.dependencies  # made after both


def deploy_policies(run: ProgramRun) -> list[Any]:
    """The deploy role's generated managed policies, then its inline IAM policy (last)."""
    managed = sorted(
        (p for p in run.by_type("aws:iam/policy:Policy") if p.name.startswith("pipeline-deploy-")),
        key=lambda p: int(p.name.rsplit("-", 1)[1]),
    )
    inline = run.get("aws:iam/rolePolicy:RolePolicy", "pipeline-deploy-iam").inputs["policy"]
    return [*(p.inputs["policy"] for p in managed), inline]


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_stack_role_carries_the_boundary_and_matches_a_stack_name(
    stack_runs: dict[str, Preflight], stack: str
) -> None:
    run = stack_runs[stack].run
    boundary = run.get("aws:iam/policy:Policy", "permissions-boundary")
    assert boundary.inputs["name"] == f"pouw-{stack}-boundary"
    for role in run.by_type(ROLE):
        if role.name.startswith("pipeline-"):
            # The pipeline roles are the bootstrap identity's, named, and outside the boundary.
            assert role.inputs["name"] == f"pouw-{stack}-{role.name.removeprefix('pipeline-')}"
            assert "permissionsBoundary" not in role.inputs
            continue
        assert role.inputs["permissionsBoundary"] == boundary.outputs["arn"], role.name
        autoname = f"{role.name}-1a2b3c4"  # how Pulumi names a role the program does not name
        assert any(fnmatch.fnmatchcase(autoname, p) for p in STACK_ROLES), (
            f"role {role.name} matches no STACK_ROLES pattern in components/runners.py: add a row "
            "(its name pattern and the service it is passed to), or name it pouw-<env>-..."
        )
    assert run.get(ROLE, "pipeline-deploy").inputs["maxSessionDuration"] == MAX_SESSION_SECONDS


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_the_deploy_role_cannot_escalate(stack_runs: dict[str, Preflight], stack: str) -> None:
    """What the deploy role's grants (PowerUserAccess + its inline IAM policy) allow, evaluated offline:
    stack roles under the boundary, passed only to their service; never itself, the preview role or the
    boundary; never a role without the boundary or outside the stack's names."""
    run = stack_runs[stack].run
    policies = deploy_policies(run)
    boundary = run.get("aws:iam/policy:Policy", "permissions-boundary").outputs["arn"]
    account = boundary.split(":")[4]
    role = f"arn:aws:iam::{account}:role"
    own = {"iam:PermissionsBoundary": boundary}
    deploy, preview = (f"{role}/pouw-{stack}-{k}" for k in ("deploy", "preview"))

    def can(action: str, resource: str, **context: str) -> bool:
        return allowed(policies, action, resource, context)

    # What `pulumi up` does to the stack's roles.
    for name in ("eks-cluster-1a2b3c4", "worker-ecs-task-0f0f0f0", "ci-runners-arc-push-abcdef0"):
        assert can("iam:CreateRole", f"{role}/{name}", **own)
        assert can("iam:PutRolePolicy", f"{role}/{name}", **own)
        assert can("iam:UpdateAssumeRolePolicy", f"{role}/{name}") and can("iam:DeleteRole", f"{role}/{name}")
        assert can("iam:PutRolePermissionsBoundary", f"{role}/{name}", **own)  # existing roles join it
        # Without the boundary, or with another one, or off the stack's names: never.
        assert not can("iam:CreateRole", f"{role}/{name}")
        assert not can("iam:AttachRolePolicy", f"{role}/{name}", **{"iam:PermissionsBoundary": "arn:other"})
        assert not can("iam:DeleteRolePermissionsBoundary", f"{role}/{name}")
    assert not can("iam:CreateRole", f"{role}/admin", **own)
    assert can("iam:CreateRole", f"{role}/pouw-{stack}-new-thing", **own)
    # PassRole: each role to its service only.
    assert can("iam:PassRole", f"{role}/eks-cluster-1a2b3c4", **{"iam:PassedToService": "eks.amazonaws.com"})
    assert not can(
        "iam:PassRole", f"{role}/eks-cluster-1a2b3c4", **{"iam:PassedToService": "ec2.amazonaws.com"}
    )
    assert not can("iam:PassRole", f"{role}/eks-cluster-1a2b3c4")
    assert can(
        "iam:PassRole",
        f"{role}/web-ecs-execution-1a2b3c4",
        **{"iam:PassedToService": "ecs-tasks.amazonaws.com"},
    )
    assert not can(
        "iam:PassRole", f"{role}/ci-runners-arc-push-1a2b3c4", **{"iam:PassedToService": "eks.amazonaws.com"}
    )
    # Never itself, the preview role or the boundary.
    for target in (deploy, preview):
        assert not can("iam:PassRole", target, **{"iam:PassedToService": "eks.amazonaws.com"})
        for action in (
            "iam:UpdateAssumeRolePolicy",
            "iam:PutRolePolicy",
            "iam:AttachRolePolicy",
            "iam:DeleteRole",
        ):
            assert not can(action, target, **own), (action, target)
        assert not can("iam:PutRolePermissionsBoundary", target, **own)
    for action in ("iam:CreatePolicyVersion", "iam:SetDefaultPolicyVersion", "iam:DeletePolicy"):
        assert not can(action, boundary)
    assert not can("iam:CreatePolicy", f"arn:aws:iam::{account}:policy/pouw-{stack}-admin")
    assert not can("iam:CreateUser", f"arn:aws:iam::{account}:user/x")
    assert not can("iam:CreateAccessKey", f"arn:aws:iam::{account}:user/x")
    # Reads `pulumi up` needs.
    assert can("iam:GetRole", deploy) and can(
        "iam:GetPolicyVersion", "arn:aws:iam::aws:policy/AmazonEKSClusterPolicy"
    )
    # Outside IAM too, nothing beyond the stack: no other account, no service-linked role, no user.
    assert not can(
        "ec2:DeleteVpc",
        "arn:aws:ec2:eu-west-1:999999999999:vpc/vpc-1",
        **{"aws:ResourceTag/environment": stack},
    )
    assert not can("ecs:DeleteCluster", f"arn:aws:ecs:eu-west-1:{account}:cluster/someone-else")
    assert not can("iam:CreateServiceLinkedRole", "*") and not can("s3:GetObject", "arn:aws:s3:::x/y")
    inline = json.loads(policies[-1])["Statement"]
    assert not [s for s in inline if s["Effect"] == "Allow" and s.get("Resource") == "*"]
    assert not [a for s in inline if s["Effect"] == "Allow" for a in s["Action"] if a.endswith("*")]


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_the_boundary_caps_stack_roles_below_iam_administration(
    stack_runs: dict[str, Preflight], stack: str
) -> None:
    run = stack_runs[stack].run
    boundary = run.get("aws:iam/policy:Policy", "permissions-boundary").inputs["policy"]
    account = run.get("aws:iam/policy:Policy", "permissions-boundary").outputs["arn"].split(":")[4]
    for action in (
        "iam:CreateRole",
        "iam:PutRolePolicy",
        "iam:CreateAccessKey",
        "organizations:LeaveOrganization",
    ):
        assert not allowed([boundary], action, f"arn:aws:iam::{account}:role/x")
    # What the stack's roles call: the LB controller's and the EKS cluster role's IAM calls included.
    assert allowed(
        [boundary],
        "iam:CreateServiceLinkedRole",
        "*",
        {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"},
    )
    assert allowed([boundary], "iam:GetServerCertificate", "*")
    assert allowed([boundary], "ecr:PutImage", "arn:aws:ecr:eu-west-1:1:repository/web")
    assert not allowed([boundary], "sts:AssumeRole", f"arn:aws:iam::{account}:role/pouw-{stack}-deploy")
    # Every statement of the LB controller's published policy stays within the boundary.
    lb = json.loads(run.get("aws:iam/rolePolicy:RolePolicy", "eks-lb-controller").inputs["policy"])
    for statement in lb["Statement"]:
        for action in statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]:
            context = {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}
            assert allowed([boundary], action, "*", context), action


def test_gcp_grants_are_scoped_to_the_resources_the_stack_manages(stack_runs: dict[str, Preflight]) -> None:
    """No basic role, no project-wide admin, no project-level serviceAccountUser (CKV_GCP_41/42/49/117):
    project level only run.developer (create services) for deploy and viewer roles for preview; IAM on
    the repository, the Cloud Run service and its runtime account, each on that resource."""
    run = stack_runs["prod"].run
    project_roles = {
        r.name: r.inputs["role"]
        for r in run.by_type("gcp:projects/iAMMember:IAMMember")
        if r.name.startswith("pipeline-")
    }
    assert {r for n, r in project_roles.items() if n.startswith("pipeline-deploy-")} == {
        "roles/run.developer",
        "roles/serviceusage.serviceUsageConsumer",
        # GKE and its VPC have no resource-level IAM: a custom role of exactly the table's permissions.
        "projects/pouw-prod/roles/pouw_prod_deploy",
    }
    for role in project_roles.values():
        assert role not in {"roles/viewer", "roles/editor", "roles/owner", "roles/iam.serviceAccountUser"}
        assert not role.endswith("admin") and not role.endswith("Admin"), role
    preview = {r for n, r in project_roles.items() if n.startswith("pipeline-preview-")}
    assert all(r.endswith(("viewer", "Viewer", "reader", "Consumer", "_preview")) for r in preview), preview
    deploy = run.get("gcp:serviceaccount/account:Account", "pipeline-deploy").outputs["email"]
    member = f"serviceAccount:{deploy}"
    repository = run.get(
        "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember",
        "pipeline-deploy-repository-containers",
    )
    assert (
        repository.inputs["role"] == "roles/artifactregistry.admin" and repository.inputs["member"] == member
    )
    assert (
        repository.inputs["repository"]
        == run.get("gcp:artifactregistry/repository:Repository", "artifact-registry").outputs["repositoryId"]
    )
    service = run.get("gcp:cloudrunv2/serviceIamMember:ServiceIamMember", "pipeline-deploy-run-web").inputs
    assert service["role"] == "roles/run.admin" and service["name"] == "web" and service["member"] == member
    actas = run.get("gcp:serviceaccount/iAMMember:IAMMember", "pipeline-deploy-actas-web").inputs
    runtime = run.get("gcp:serviceaccount/account:Account", "web-cloudrun-sa")
    assert (
        actas["role"] == "roles/iam.serviceAccountUser"
        and actas["serviceAccountId"] == runtime.outputs["name"]
    )
    apis = {r.inputs["service"]: r for r in run.by_type("gcp:projects/service:Service")}
    assert set(apis) >= {"iamcredentials.googleapis.com", "sts.googleapis.com", "iam.googleapis.com"}
    assert all(a.inputs["disableOnDestroy"] is False for a in apis.values())
    pool = run.get("gcp:iam/workloadIdentityPool:WorkloadIdentityPool", "pipeline-pool")
    assert {a.urn for a in apis.values()} <= set(pool.dependencies)  # the APIs first


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_ci_namespaces_deny_by_default_and_only_call_out(
    stack_runs: dict[str, Preflight], stack: str
) -> None:
    """Runner and agent pods take no connections and reach only DNS and HTTPS (Jenkins: its agent port)."""
    run = stack_runs[stack].run
    namespaces = {
        r.name: r.inputs["metadata"]["name"]
        for r in run.by_type("kubernetes:core/v1:Namespace")
        if r.name.startswith("ci-runners-")
    }
    assert namespaces  # every stack here runs runners or agents
    policies = {r.name: r.inputs for r in run.by_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")}
    for resource_name, namespace in namespaces.items():
        deny = policies[f"{resource_name}-default-deny"]
        assert deny["metadata"]["namespace"] == namespace
        assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        egress = policies[f"{resource_name}-allow-egress"]["spec"]
        assert egress["policyTypes"] == ["Egress"] and "ingress" not in egress
        dns, out = egress["egress"]
        assert {p["port"] for p in dns["ports"]} == {53}
        assert out["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
        ports = {p["port"] for p in out["ports"]}
        assert ports == ({443, 50000} if namespace.startswith("jenkins") else {443}), namespace


def test_pods_that_never_call_the_kubernetes_api_mount_no_token(stack_runs: dict[str, Preflight]) -> None:
    """Jenkins agents and dind runners (jobs on the sidecar's Docker) get no API token; kubernetes-mode
    runners keep theirs (the runner creates the job pods)."""
    prod, dev = stack_runs["prod"].run, stack_runs["dev"].run
    dind = prod.get(RELEASE, "ci-runners-pouw-prod").inputs["values"]["template"]["spec"]
    assert dind["automountServiceAccountToken"] is False
    kube = dev.get(RELEASE, "ci-runners-pouw-linux").inputs["values"]["template"]["spec"]
    assert "automountServiceAccountToken" not in kube
    for run in (prod, dev):
        for config_map in run.by_type("kubernetes:core/v1:ConfigMap"):
            if config_map.name.endswith("pod-template"):
                template = json.loads(config_map.inputs["data"]["pod-template.yaml"])
                assert template["spec"]["automountServiceAccountToken"] is False, config_map.name
