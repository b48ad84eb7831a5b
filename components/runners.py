"""CI runner infrastructure and keyless pipeline identities.

`CiRunners` puts ephemeral, autoscaling GitHub Actions runners (ARC runner scale sets) and two places
for Jenkins agents on the environment's EKS cluster: one namespace for every build (pull requests
included) and one for the main branch's deploy job. ARC runners and the deploy job's agents push
images through an IRSA role that may push to this project's ECR repositories and do nothing else.

`PipelineIdentities` gives the pipeline of one environment a way into each cloud without a stored
secret: GitHub's OIDC token is trusted only for this repository and this GitHub environment (the
deploy identity) or for its pull requests (the read-only preview identity); Jenkins agents in the
deploy namespace may assume the deploy role, every other Jenkins agent only the preview role. The
deploy identity may manage what the stack declares and nothing more (the permissions boundary, the
table in components/permissions.py); its own grants are the bootstrap identity's to change.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws.iam as aws_iam
import pulumi_azure_native.authorization as authorization
import pulumi_azure_native.managedidentity as managedidentity
import pulumi_gcp.artifactregistry as artifactregistry
import pulumi_gcp.cloudrunv2 as cloudrunv2
import pulumi_gcp.iam as gcp_iam
import pulumi_gcp.projects as gcp_projects
import pulumi_gcp.serviceaccount as serviceaccount
import pulumi_kubernetes.core.v1 as core
import pulumi_kubernetes.helm.v3 as helm
import pulumi_kubernetes.meta.v1 as meta
import pulumi_kubernetes.rbac.v1 as rbac

from components.iam import document, irsa_statement, irsa_trust, pipeline_role_name
from components.permissions import DRIVER_READS, gcp_project_permissions
from components.pipeline_policies import deploy_documents, placeholder_account, preview_documents
from components.schema import (
    ArcSettings,
    CiRunnersSettings,
    JenkinsSettings,
    PipelineIdentitySettings,
    ScaleSetSettings,
)
from components.targets.aci import ACR_PULL_ROLE
from components.targets.aks import AGC_CONFIGURATION_MANAGER, NETWORK_CONTRIBUTOR
from components.targets.eks import EksCluster
from components.targets.kubernetes import egress_only_policies

ARC_CHARTS = "oci://ghcr.io/actions/actions-runner-controller-charts"
ARC_SYSTEM, ARC_RUNNERS, ARC_SERVICE_ACCOUNT = "arc-systems", "arc-runners", "arc-runner"
ARC_SECRET = "github-app"
# Jenkins: every build's agents, the deploy job's agents, and the controller's account in each namespace.
JENKINS_AGENT, JENKINS_DEPLOY, JENKINS_CONTROLLER = "jenkins-agent", "jenkins-deploy", "jenkins-controller"
# The Jenkins controller's TCP port for inbound agents (Manage Jenkins > Security > Agents); WebSocket
# agents use 443 instead.
JENKINS_AGENT_PORT = 50000
# The deploy and preview roles' session limit; pipelines ask for this much (tests/test_pipelines.py).
MAX_SESSION_SECONDS = 7200
GITHUB_OIDC = "token.actions.githubusercontent.com"
# Built-in Contributor; it also covers the rollout driver's Microsoft.Insights/metrics/read on the
# resource group's resources (components/permissions.py DRIVER_READS), so Azure needs no further grant.
AZURE_CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
AZURE_READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"  # built-in Reader
# GCP. The APIs keyless CI needs, enabled by the stack (the bootstrap identity's first `pulumi up`):
# IAM (pools, providers), STS (exchanging GitHub's token), IAM Credentials (impersonating the account).
GCP_IDENTITY_APIS = ("iam.googleapis.com", "iamcredentials.googleapis.com", "sts.googleapis.com")
# Project-level grants, only where no narrower scope exists; everything else is granted on the resource
# (GcpDeployScope). No basic role (viewer/editor/owner), no project-wide admin, no project-level
# serviceAccountUser. Cloud Run, Artifact Registry and IAM service accounts do not recognise IAM
# Conditions' resource attributes (cloud.google.com/iam/docs/conditions-resource-attributes), so the
# narrowing is by resource-level binding, not by condition.
GCP_PROJECT_ROLES = {
    # Create services and deploy revisions (no IAM on them: that is run.admin, per service).
    "deploy": ("roles/run.developer", "roles/serviceusage.serviceUsageConsumer"),
    "preview": (
        "roles/artifactregistry.reader",
        "roles/iam.serviceAccountViewer",
        "roles/iam.workloadIdentityPoolViewer",
        "roles/run.viewer",
        "roles/serviceusage.serviceUsageConsumer",
        "roles/serviceusage.serviceUsageViewer",
    ),
}
AZURE_RBAC_ADMIN = "f58310d9-a9f6-439a-9e8d-f62e7b41a168"  # built-in Role Based Access Control Administrator
# The role assignments the stack itself makes (the pipeline's own are the bootstrap identity's): each
# role definition it assigns and the principal types it assigns them to. Contributor cannot write role
# assignments; the deploy identity may write and delete these, and no other (PipelineIdentities._azure).
AZURE_ASSIGNED_ROLES = {
    ACR_PULL_ROLE: "ServicePrincipal",  # AciService's managed identity and AKS's kubelet identity pull
    # AksCluster: its control plane joins the node subnet, the ALB Controller's identity the AGC subnet...
    NETWORK_CONTRIBUTOR: "ServicePrincipal",
    AGC_CONFIGURATION_MANAGER: "ServicePrincipal",  # ...and configures the AGC resource
}
# The AKS API authorizes with Azure RBAC (components/targets/aks.py): the data-plane roles each pipeline
# identity holds at the resource group, so on the environment's cluster (built-in roles, Containers:
# learn.microsoft.com/azure/role-based-access-control/built-in-roles/containers). As CLUSTER_ACCESS_POLICIES
# for EKS: deploy manages cluster-scoped objects (the ALB Controller chart's CRDs and RBAC, namespaces),
# so Azure Kubernetes Service RBAC Cluster Admin; preview reads (RBAC Reader: no Secrets) and lists the
# cluster's user kubeconfig (Cluster User Role), from which its kubeconfig takes the server and CA.
AKS_PIPELINE_ROLES: dict[str, dict[str, str]] = {
    "deploy": {"aks-admin": "b1ff04bb-8a4e-4dc4-8eb5-8693973ce19b"},  # AKS RBAC Cluster Admin
    "preview": {
        "aks-reader": "7f6c6a51-bcf8-42ba-9220-52d62157d7db",  # Azure Kubernetes Service RBAC Reader
        "aks-user": "4abbcc35-e782-43d8-92c5-2d3f1bd2253f",  # Azure Kubernetes Service Cluster User Role
    },
}
ECR_PUSH_ACTIONS = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:CompleteLayerUpload",
    "ecr:GetDownloadUrlForLayer",
    "ecr:InitiateLayerUpload",
    "ecr:PutImage",
    "ecr:UploadLayerPart",
]
# The EKS access policy of each pipeline role, at cluster scope (PipelineIdentities._aws).
#   deploy: `pulumi up` manages cluster-scoped objects: Namespaces, and through the Helm charts (AWS Load
#     Balancer Controller, ARC) CustomResourceDefinitions, ClusterRoles, ClusterRoleBindings and webhook
#     configurations, plus Roles that grant pod rights (RBAC lets a subject grant only what it holds,
#     or needs `escalate`/`bind`). No narrower EKS access policy covers CRDs and cluster RBAC, and a
#     custom ClusterRole that did would be cluster-admin by another name (and would need an admin to
#     create it first): AmazonEKSClusterAdminPolicy it is, for this one role.
#   preview: `pulumi preview` reads; AmazonEKSViewPolicy (no Secrets, no writes).
#   Jenkins agents hold no entry of their own: they reach the cluster only as the preview or deploy
#     role they assume (web identity, see KubernetesTrust); their push roles may push images, nothing
#     else. Pods they start use Kubernetes RBAC (CiRunners._jenkins_cloud), not access entries.
CLUSTER_ACCESS_POLICIES = {"deploy": "AmazonEKSClusterAdminPolicy", "preview": "AmazonEKSViewPolicy"}
# A deploy role runs `pulumi up`: outside IAM it holds what the permission table's AWS rows name, on
# the stack's resources (components/pipeline_policies.py, pouw-<env>-deploy-<n>). In IAM it may manage
# only the roles this stack makes, only while they carry the stack's permissions boundary, pass each
# only to the service that uses it, and never touch itself, the preview role or the boundary.
#
# The roles this stack makes, by name. Pulumi names a role `<logical name>-<7 hex>` unless the program
# names it; these patterns cover exactly the logical names the components use (tests/test_runners.py
# checks every role of every stack against them), and the service each is passed to (None: an IRSA
# role, assumed by a pod, never passed). A new role is named `pouw-<env>-...` or gets a row here.
STACK_ROLES: dict[str, str | None] = {
    "network-flow-logs-*": "vpc-flow-logs.amazonaws.com",  # AwsNetwork: the VPC flow log
    "eks-cluster-*": "eks.amazonaws.com",  # EksCluster: the control plane
    "eks-nodes-*": "eks.amazonaws.com",  # EksCluster: the managed node group
    "eks-lb-controller-*": None,  # EksCluster: AWS Load Balancer Controller (IRSA)
    "eks-kyverno-*": None,  # EksCluster.verify_signatures: Kyverno's ECR reads (IRSA)
    "ci-runners-*-push-*": None,  # CiRunners: ECR push (IRSA)
    "*-ecs-execution-*": "ecs-tasks.amazonaws.com",  # EcsService: task execution (pull, logs, secrets)
    "*-ecs-task-*": "ecs-tasks.amazonaws.com",  # EcsService: the application's own role
    "ecs-infrastructure-*": "ecs.amazonaws.com",  # EcsCluster (ecs.native): ECS-managed load balancing
}
# Role actions IAM authorises with the `iam:PermissionsBoundary` condition key (Service Authorization
# Reference, IAM): allowed only when the role carries, or is given, the stack's boundary.
BOUNDED_ROLE_ACTIONS = [
    "iam:AttachRolePolicy",
    "iam:CreateRole",
    "iam:DeleteRolePolicy",
    "iam:DetachRolePolicy",
    "iam:PutRolePermissionsBoundary",
    "iam:PutRolePolicy",
]
# Role actions without that key: allowed on the stack's role names only.
STACK_ROLE_ACTIONS = [
    "iam:DeleteRole",
    "iam:TagRole",
    "iam:UntagRole",
    "iam:UpdateAssumeRolePolicy",
    "iam:UpdateRole",
    "iam:UpdateRoleDescription",
]
ROLE_READ_ACTIONS = [
    "iam:GetRole",
    "iam:GetRolePolicy",
    "iam:ListAttachedRolePolicies",
    "iam:ListInstanceProfilesForRole",
    "iam:ListRolePolicies",
    "iam:ListRoleTags",
]
POLICY_READ_ACTIONS = [
    "iam:GetPolicy",
    "iam:GetPolicyVersion",
    "iam:ListPolicyTags",
    "iam:ListPolicyVersions",
]
# The EKS cluster's OIDC provider (IRSA); the GitHub provider belongs to the bootstrap identity.
OIDC_PROVIDER_ACTIONS = [
    "iam:AddClientIDToOpenIDConnectProvider",
    "iam:CreateOpenIDConnectProvider",
    "iam:DeleteOpenIDConnectProvider",
    "iam:GetOpenIDConnectProvider",
    "iam:RemoveClientIDFromOpenIDConnectProvider",
    "iam:TagOpenIDConnectProvider",
    "iam:UntagOpenIDConnectProvider",
    "iam:UpdateOpenIDConnectProviderThumbprint",
]
# What the deploy role may never do to itself, the preview role or the boundary (explicit Deny wins).
SELF_ROLE_ACTIONS = sorted(
    {*BOUNDED_ROLE_ACTIONS, *STACK_ROLE_ACTIONS, "iam:DeleteRolePermissionsBoundary"} - {"iam:CreateRole"}
)
BOUNDARY_POLICY_ACTIONS = [
    "iam:CreatePolicyVersion",
    "iam:DeletePolicy",
    "iam:DeletePolicyVersion",
    "iam:SetDefaultPolicyVersion",
    "iam:TagPolicy",
    "iam:UntagPolicy",
]


def stack_role_arns(account: str, environment: str) -> list[str]:
    patterns = [*STACK_ROLES, f"pouw-{environment}-*"]  # roles the program names (PipelineIdentities)
    return [f"arn:aws:iam::{account}:role/{p}" for p in patterns]


def deploy_iam_policy(environment: str, boundary_arn: str) -> str:
    """The deploy role's IAM grants (next to its generated policies, `pipeline_documents`), for one stack.

    The deploy and preview roles themselves, and the boundary, are denied: changing them is the
    bootstrap identity's job (PipelineIdentities' docstring): a deploy role that could edit its own
    policy or trust could grant itself anything.
    """
    account = boundary_arn.split(":")[4]
    roles = stack_role_arns(account, environment)
    self_arns = [
        f"arn:aws:iam::{account}:role/{pipeline_role_name(environment, k)}" for k in ("deploy", "preview")
    ]
    bounded = {"StringEquals": {"iam:PermissionsBoundary": boundary_arn}}
    passes = [
        {
            "Sid": f"PassToService{i}",
            "Effect": "Allow",
            "Action": ["iam:PassRole"],
            "Resource": sorted(
                f"arn:aws:iam::{account}:role/{p}" for p, s in STACK_ROLES.items() if s == service
            ),
            "Condition": {"StringEquals": {"iam:PassedToService": service}},
        }
        for i, service in enumerate(sorted({s for s in STACK_ROLES.values() if s is not None}))
    ]
    return document(
        [
            {
                "Sid": "StackRolesWithinTheBoundary",
                "Effect": "Allow",
                "Action": BOUNDED_ROLE_ACTIONS,
                "Resource": roles,
                "Condition": bounded,
            },
            {"Sid": "StackRoles", "Effect": "Allow", "Action": STACK_ROLE_ACTIONS, "Resource": roles},
            {"Sid": "ReadStackRoles", "Effect": "Allow", "Action": ROLE_READ_ACTIONS, "Resource": roles},
            {
                "Sid": "ReadAttachedPolicies",
                "Effect": "Allow",
                "Action": POLICY_READ_ACTIONS,
                "Resource": [boundary_arn, "arn:aws:iam::aws:policy/*"],
            },
            {
                "Sid": "ClusterOidcProvider",
                "Effect": "Allow",
                "Action": OIDC_PROVIDER_ACTIONS,
                "Resource": [f"arn:aws:iam::{account}:oidc-provider/oidc.eks.*.amazonaws.com/id/*"],
            },
            {
                "Sid": "ReadGithubOidcProvider",
                "Effect": "Allow",
                "Action": ["iam:GetOpenIDConnectProvider"],
                "Resource": [f"arn:aws:iam::{account}:oidc-provider/{GITHUB_OIDC}"],
            },
            *passes,
            {
                "Sid": "NeverItself",
                "Effect": "Deny",
                "Action": SELF_ROLE_ACTIONS,
                "Resource": sorted(self_arns),
            },
            {
                "Sid": "NeverTheBoundary",
                "Effect": "Deny",
                "Action": BOUNDARY_POLICY_ACTIONS,
                "Resource": [boundary_arn],
            },
            {
                "Sid": "NoRoleLeavesTheBoundary",
                "Effect": "Deny",
                "Action": ["iam:DeleteRolePermissionsBoundary"],
                "Resource": "*",
            },
        ]
    )


def driver_metrics_policy() -> str:
    """The deploy role's metric reads for the rollout driver (components/permissions.py DRIVER_READS):
    on `*`, because neither action has a resource type (the row's Service Authorization Reference)."""
    statement = {"Sid": "RolloutDriverMetricReads", "Effect": "Allow", "Resource": "*"}
    return document([{**statement, "Action": sorted(DRIVER_READS["aws"].read)}])


def pipeline_documents(kind: str, environment: str, account: str) -> list[str]:
    """The deploy or preview role's managed policy documents (components/pipeline_policies.py)."""
    if kind == "deploy":
        return deploy_documents(environment, account)
    return preview_documents(environment, account, stack_role_arns(account, environment))


def _pipeline_document(kind: str, environment: str, n: int, boundary_arn: str) -> str:
    """The n-th (from 1) document, for the account the boundary is in."""
    return pipeline_documents(kind, environment, boundary_arn.split(":")[4])[n - 1]


def push_policy(repository_arns: Sequence[str]) -> str:
    """Push to the project's repositories; log in to ECR (which has no resource to scope)."""
    return document(
        [
            {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
            {"Effect": "Allow", "Action": ECR_PUSH_ACTIONS, "Resource": sorted(repository_arns)},
        ]
    )


def github_statement(provider_arn: str, subject: str | Sequence[str]) -> dict[str, Any]:
    """Trust GitHub's OIDC token for exactly these subjects (StringEquals on a list: any of them),
    audience pinned to STS."""
    subject = subject if isinstance(subject, str) else list(subject)
    return {
        "Effect": "Allow",
        "Principal": {"Federated": provider_arn},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {
            "StringEquals": {f"{GITHUB_OIDC}:aud": "sts.amazonaws.com", f"{GITHUB_OIDC}:sub": subject}
        },
    }


@dataclass(frozen=True)
class KubernetesTrust:
    """A CI cluster's Jenkins service accounts that may also assume the pipeline roles (IRSA): every
    build's agents (pull requests included) the preview role, the deploy job's agents the deploy role."""

    provider_arn: pulumi.Input[str]
    issuer: pulumi.Input[str]
    namespace: str
    service_account: str
    deploy_namespace: str = JENKINS_DEPLOY
    deploy_service_account: str = JENKINS_DEPLOY

    def account(self, kind: str) -> tuple[str, str]:
        """(namespace, service account) the `kind` ("deploy" or "preview") role trusts."""
        if kind == "deploy":
            return self.deploy_namespace, self.deploy_service_account
        return self.namespace, self.service_account


def _trust(
    subject: str | Sequence[str], jenkins: KubernetesTrust | None, kind: str, values: list[str]
) -> str:
    statements = [github_statement(values[0], subject)]
    if jenkins is not None:
        statements.append(irsa_statement(values[1], values[2], *jenkins.account(kind)))
    return document(statements)


def _wif_principal(subject: str, pool_name: str) -> str:
    return f"principal://iam.googleapis.com/{pool_name}/subject/{subject}"


def subjects(repository: str, environment: str) -> tuple[str, str]:
    """GitHub's `sub` claim for a job in the environment, and for a pull request."""
    return f"repo:{repository}:environment:{environment}", f"repo:{repository}:pull_request"


def release_subject(repository: str) -> str:
    """The `sub` of release.yml's signing job (GitHub environment `release`, limited to release tags)."""
    return f"repo:{repository}:environment:release"


def plan_subject(repository: str, environment: str) -> str:
    """The `sub` of a job in the `<env>-plan` environment: deploy-stack.yml's plan job, which saves the
    update plan the approver sees, with the read-only preview identity (no reviewers on that environment)."""
    return f"repo:{repository}:environment:{environment}-plan"


@dataclass(frozen=True)
class CiRunnersArgs:
    settings: CiRunnersSettings
    cluster: EksCluster
    repository_arns: Sequence[pulumi.Input[str]]
    # GitHub App credentials read with Config.require_secret: stay secrets all the way to the cluster.
    app_credentials: dict[str, pulumi.Input[str]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    # The stack's permissions boundary (components/iam.py): the push roles carry it.
    permissions_boundary: pulumi.Input[str] | None = None


class CiRunners(pulumi.ComponentResource):
    """ARC (controller + one scale set per setting) and Jenkins agent RBAC, on the EKS cluster."""

    def __init__(self, name: str, args: CiRunnersArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pouw:index:CiRunners", name, None, opts)
        self.args = args
        self.k8s = pulumi.ResourceOptions(parent=self, provider=args.cluster.provider)
        self.push_roles: dict[str, pulumi.Output[str]] = {}
        # What a Jenkins controller's two Kubernetes clouds need: "agents" (every build), "deploy".
        self.jenkins_clouds: dict[str, dict[str, pulumi.Input[str]]] = {}
        if args.settings.arc is not None:
            self._arc(name, args.settings.arc)
        if args.settings.jenkins is not None:
            self._jenkins(name, args.settings.jenkins)
        self.register_outputs({"pushRoles": self.push_roles})

    def _namespace(
        self, name: str, namespace: str, enforce: str = "restricted", egress_ports: Sequence[int] = (443,)
    ) -> core.Namespace:
        """A namespace under Pod Security admission (audit and warn always report against restricted)
        whose pods only call out: default-deny NetworkPolicies, then DNS and `egress_ports` out (GitHub,
        registries, cloud APIs and the cluster's API are all HTTPS)."""
        pss = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("audit", "warn")}
        pss["pod-security.kubernetes.io/enforce"] = enforce
        created = core.Namespace(name, metadata={"name": namespace, "labels": pss}, opts=self.k8s)
        egress_only_policies(name, created.metadata.name, self.k8s, egress_ports)
        return created

    def _push_role(self, name: str, namespace: str, service_account: str) -> pulumi.Output[str]:
        """An IRSA role for one service account: push to the project's ECR repositories, nothing more."""
        cluster = self.args.cluster
        role = aws_iam.Role(
            name,
            assume_role_policy=pulumi.Output.all(cluster.oidc_provider_arn, cluster.oidc_issuer).apply(
                lambda a: irsa_trust(a[0], a[1], namespace, service_account)
            ),
            permissions_boundary=self.args.permissions_boundary,
            tags=self.args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws_iam.RolePolicy(
            name,
            role=role.id,
            policy=pulumi.Output.all(*self.args.repository_arns).apply(lambda arns: push_policy(arns)),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.push_roles[namespace] = role.arn
        return role.arn

    def _arc(self, name: str, arc: ArcSettings) -> None:
        system = self._namespace(f"{name}-arc-systems", ARC_SYSTEM)
        # dind's docker sidecar is privileged: admission would refuse every runner pod of a dind scale
        # set in a namespace that enforces restricted (the chart cannot run it otherwise).
        dind = any(s.container_mode == "dind" for s in arc.scale_sets)
        runners = self._namespace(f"{name}-arc-runners", ARC_RUNNERS, "privileged" if dind else "restricted")
        controller = helm.Release(
            f"{name}-arc-controller",
            name="arc",
            chart=f"{ARC_CHARTS}/gha-runner-scale-set-controller",
            version=arc.chart_version,
            namespace=system.metadata.name,
            values={"replicaCount": 1},
            opts=self.k8s,
        )
        creds = self.args.app_credentials
        # The chart references this Secret by name; the private key never appears in chart values.
        secret = core.Secret(
            f"{name}-github-app",
            metadata={"name": ARC_SECRET, "namespace": runners.metadata.name},
            type="Opaque",
            string_data={
                "github_app_id": creds["github_app_id"],
                "github_app_installation_id": creds["github_app_installation_id"],
                "github_app_private_key": creds["github_app_private_key"],
            },
            opts=self.k8s,
        )
        role_arn = self._push_role(f"{name}-arc-push", ARC_RUNNERS, ARC_SERVICE_ACCOUNT)
        account = core.ServiceAccount(
            f"{name}-arc-runner",
            metadata={
                "name": ARC_SERVICE_ACCOUNT,
                "namespace": runners.metadata.name,
                "annotations": {"eks.amazonaws.com/role-arn": role_arn},
            },
            opts=self.k8s,
        )
        # With our own service account the chart does not create its kubernetes-mode role: the runner
        # starts each job's containers as pods, so it may manage pods, jobs and their secrets here only.
        kube_mode = rbac.Role(
            f"{name}-arc-kube-mode",
            metadata={"name": "arc-kube-mode", "namespace": runners.metadata.name},
            rules=[
                {"api_groups": [""], "resources": ["pods"], "verbs": ["get", "list", "create", "delete"]},
                {"api_groups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"]},
                {"api_groups": [""], "resources": ["pods/log"], "verbs": ["get", "list", "watch"]},
                {
                    "api_groups": ["batch"],
                    "resources": ["jobs"],
                    "verbs": ["get", "list", "create", "delete"],
                },
                {"api_groups": [""], "resources": ["secrets"], "verbs": ["get", "list", "create", "delete"]},
            ],
            opts=self.k8s,
        )
        rbac.RoleBinding(
            f"{name}-arc-kube-mode",
            metadata={"name": "arc-kube-mode", "namespace": runners.metadata.name},
            role_ref={
                "api_group": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": kube_mode.metadata.name,
            },
            subjects=[
                {"kind": "ServiceAccount", "name": account.metadata.name, "namespace": runners.metadata.name}
            ],
            opts=self.k8s,
        )
        for scale_set in arc.scale_sets:
            helm.Release(
                f"{name}-{scale_set.name}",
                name=scale_set.name,
                chart=f"{ARC_CHARTS}/gha-runner-scale-set",
                version=arc.chart_version,
                namespace=runners.metadata.name,
                values=scale_set_values(arc, scale_set, secret.metadata.name, account.metadata.name),
                opts=pulumi.ResourceOptions(
                    parent=self, provider=self.args.cluster.provider, depends_on=[controller, secret]
                ),
            )

    def _jenkins(self, name: str, jenkins: JenkinsSettings) -> None:
        """Two Kubernetes clouds for one Jenkins controller, one namespace each.

        `namespace` runs every build, pull requests included: its agent service account is trusted by
        the preview roles only and holds no AWS role of its own. `deployNamespace` runs the main
        branch's deploy job alone (Jenkins restricts that cloud to the job, with its own controller
        credential): its agent service account is the only one the deploy roles trust and the only one
        that may push images. A pull-request build cannot launch a pod there: the agents' controller
        account has no right in that namespace.
        """
        self.jenkins_clouds["agents"] = self._jenkins_cloud(
            f"{name}-jenkins", f"{name}-jenkins-agents", jenkins, jenkins.namespace, JENKINS_AGENT, None
        )
        push = self._push_role(f"{name}-jenkins-push", jenkins.deploy_namespace, JENKINS_DEPLOY)
        self.jenkins_clouds["deploy"] = self._jenkins_cloud(
            f"{name}-jenkins-deploy",
            f"{name}-jenkins-deploy",
            jenkins,
            jenkins.deploy_namespace,
            JENKINS_DEPLOY,
            push,
        )

    def _jenkins_cloud(
        self,
        prefix: str,
        rbac_name: str,
        jenkins: JenkinsSettings,
        namespace_name: str,
        agent_account: str,
        role_arn: pulumi.Output[str] | None,
    ) -> dict[str, pulumi.Input[str]]:
        """One namespace a Jenkins cloud launches agents in: the controller's service account, which may
        manage pods there only, the agents' service account and their pod template."""
        # The agent pod (ci/jenkins-agent.yaml) carries a rootless BuildKit daemon, which needs seccomp and
        # AppArmor Unconfined (moby/buildkit docs/rootless.md): allowed only where enforce is privileged.
        # It runs as uid 1000, no capability added, never privileged; audit and warn still say restricted.
        # Inbound agents dial the controller: HTTPS (WebSocket) or its TCP agent port.
        namespace = self._namespace(prefix, namespace_name, "privileged", (443, JENKINS_AGENT_PORT))
        ns = namespace.metadata.name
        controller = core.ServiceAccount(
            f"{prefix}-controller",
            metadata={"name": JENKINS_CONTROLLER, "namespace": ns},
            opts=self.k8s,
        )
        role = rbac.Role(
            rbac_name,
            metadata={"name": "jenkins-agents", "namespace": ns},
            rules=[
                {
                    "api_groups": [""],
                    "resources": ["pods", "pods/exec"],
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                },
                {"api_groups": [""], "resources": ["pods/log", "events"], "verbs": ["get", "list", "watch"]},
            ],
            opts=self.k8s,
        )
        rbac.RoleBinding(
            rbac_name,
            metadata={"name": "jenkins-agents", "namespace": ns},
            role_ref={"api_group": "rbac.authorization.k8s.io", "kind": "Role", "name": role.metadata.name},
            subjects=[{"kind": "ServiceAccount", "name": controller.metadata.name, "namespace": ns}],
            opts=self.k8s,
        )
        metadata: meta.ObjectMetaArgsDict = {"name": agent_account, "namespace": ns}
        if role_arn is not None:
            metadata["annotations"] = {"eks.amazonaws.com/role-arn": role_arn}
        agent = core.ServiceAccount(f"{prefix}-agent", metadata=metadata, opts=self.k8s)
        template = core.ConfigMap(
            f"{prefix}-pod-template",
            metadata={"name": "jenkins-agent-pod-template", "namespace": ns},
            data={
                "pod-template.yaml": agent.metadata.name.apply(lambda sa: jenkins_pod_template(jenkins, sa))
            },
            opts=self.k8s,
        )
        return {
            "namespace": ns,
            "serviceAccount": agent.metadata.name,
            "controllerServiceAccount": controller.metadata.name,
            "podTemplateConfigMap": template.metadata.name,
        }


def restricted_container(name: str, image: str, cpu: str, memory: str) -> dict[str, object]:
    return {
        "name": name,
        "image": image,
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def scale_set_values(
    arc: ArcSettings, scale_set: ScaleSetSettings, secret: pulumi.Input[str], account: pulumi.Input[str]
) -> dict[str, object]:
    """gha-runner-scale-set values: kubernetes container mode unless dind is asked for."""
    runner = restricted_container("runner", arc.runner_image, scale_set.cpu, scale_set.memory)
    runner["command"] = ["/home/runner/run.sh"]
    values: dict[str, object] = {
        "githubConfigUrl": arc.github_config_url,
        "githubConfigSecret": secret,
        "runnerScaleSetName": scale_set.name,
        "runnerGroup": scale_set.runner_group,
        "minRunners": scale_set.min_runners,
        "maxRunners": scale_set.max_runners,
        "controllerServiceAccount": {"namespace": ARC_SYSTEM, "name": "arc-gha-rs-controller"},
        "template": {"spec": {"serviceAccountName": account, "containers": [runner]}},
    }
    if scale_set.container_mode == "kubernetes":
        runner["env"] = [{"name": "ACTIONS_RUNNER_REQUIRE_JOB_CONTAINER", "value": "true"}]
        values["containerMode"] = {
            "type": "kubernetes",
            "kubernetesModeWorkVolumeClaim": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": scale_set.storage_class,
                "resources": {"requests": {"storage": scale_set.work_volume}},
            },
        }
    else:
        values["containerMode"] = {"type": "dind"}  # the chart adds a privileged docker sidecar
        # A dind runner runs its jobs on the sidecar's Docker, not as pods: no Kubernetes API token.
        template = values["template"]
        assert isinstance(template, dict)
        template["spec"]["automountServiceAccountToken"] = False
    return values


def jenkins_pod_template(jenkins: JenkinsSettings, service_account: str) -> str:
    """The pod template the Kubernetes plugin uses (Manage Jenkins > Clouds > Pod templates, raw YAML)."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "spec": {
                "serviceAccountName": service_account,
                # The agent talks to its controller, never to the Kubernetes API; IRSA's projected token
                # is mounted separately by the pod identity webhook.
                "automountServiceAccountToken": False,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000},
                "containers": [restricted_container("jnlp", jenkins.agent_image, "1", "2Gi")],
            },
        },
        indent=2,
        sort_keys=True,
    )


@dataclass(frozen=True)
class GcpDeployScope:
    """The GCP resources the deploy identity manages, each granted on the resource itself; keyed by a
    short name (the repository id, the service name) that names the grant."""

    repositories: Mapping[str, artifactregistry.Repository] = field(default_factory=dict)  # admin
    services: Mapping[str, cloudrunv2.Service] = field(default_factory=dict)  # run.admin (invokers)
    runtime_accounts: Mapping[str, serviceaccount.Account] = field(default_factory=dict)  # actAs
    # Project-level permissions from the permission table, by identity kind ("deploy", "preview"), for
    # what GCP has no resource-level IAM for (GKE clusters, node pools, VPCs): one custom role each.
    project_permissions: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # Binary Authorization's attesting account (components/admission.py): the release workflow's job in
    # the GitHub environment `release` may act as it, no other job.
    attester: serviceaccount.Account | None = None


@dataclass(frozen=True)
class PipelineIdentitiesArgs:
    settings: PipelineIdentitySettings
    environment: str
    gcp_project: str | None = None
    azure_resource_group: pulumi.Input[str] | None = None
    azure_resource_group_id: pulumi.Input[str] | None = None
    azure_location: str | None = None
    # The stack runs AKS: the Azure identities get AKS_PIPELINE_ROLES on the resource group.
    aks: bool = False
    jenkins: KubernetesTrust | None = None  # Jenkins agents that also deploy (AWS roles)
    # This environment's EKS cluster: the deploy and preview roles get access entries on it.
    cluster: EksCluster | None = None
    # The stack's permissions boundary (components/iam.py): the deploy role manages only roles under it.
    permissions_boundary: pulumi.Input[str] | None = None
    gcp_scope: GcpDeployScope = field(default_factory=GcpDeployScope)
    tags: dict[str, str] = field(default_factory=dict)


class PipelineIdentities(pulumi.ComponentResource):
    """One environment's keyless pipeline identities in AWS, GCP and Azure.

    Bootstrap order (README, "Bootstrap"). The identities are part of the stack, so they cannot run its
    first `pulumi up`: a bootstrap identity does, once per environment, and again for any change to
    what this component or the permissions boundary declares (the deploy identity is denied those on
    purpose: an identity that can edit its own grants can grant itself anything).

    1. Bootstrap identity (a person or an admin role, never the pipeline): AWS AdministratorAccess in the
       account; Azure Owner (or Contributor + Role Based Access Control Administrator) on the
       subscription, to create the resource group, and where the stack runs AKS also Azure Kubernetes
       Service RBAC Cluster Admin on the resource group (under Azure RBAC a cluster's creator holds no
       Kubernetes rights, unlike EKS's); GCP Owner on the project (or Project IAM Admin,
       Service Account Admin, Workload Identity Pool Admin, Service Usage Admin, Cloud Run Admin and
       Artifact Registry Admin). It runs the first `pulumi up`, in the program's order:
       a. the permissions boundary (pouw-<env>-boundary), before any role, so every role is born under it;
       b. network, EKS cluster (authentication mode API: the bootstrap identity, as its creator, is its
          only administrator, outside Pulumi's state), nodes, OIDC provider, load balancer controller;
       c. registries, builds, workloads, CI runners (as the cluster's creator);
       d. this component, after the cluster: the GitHub OIDC provider, the deploy and preview roles
          (pouw-<env>-deploy / -preview), then their EKS access entries (which need both the cluster and
          the roles: no cycle, the cluster never refers back), the deploy role's IAM policy (which names
          the boundary) and both roles' policies generated from the permission table
          (pouw-<env>-deploy-<n>, pouw-<env>-preview-<n>);
          GCP APIs (iam, iamcredentials, sts), the pool and provider, the accounts, their
          grants on the project and on the stack's repository, services and runtime accounts; Azure
          identities, federated credentials, role assignments.
    2. From then on the deploy identity runs every `pulumi up` (GitHub environment <env>, or the Jenkins
       deploy job in `ciRunners.jenkins.deployNamespace`), the preview identity every pull request's
       `pulumi preview` (GitHub pull_request, or Jenkins agents in `ciRunners.jenkins.namespace`).
    3. Back to the bootstrap identity for: this component's changes, the boundary, a new Cloud Run
       service (its deploy grants sit on the service) or runtime account, recreating the Artifact
       Registry repository or the resource group. The permission table (components/permissions.py,
       `bootstrap`) lists them; a deploy run that reaches one fails with an authorisation error.
    Optionally, once the pipeline roles work, remove the creator's own EKS access entry
    (`aws eks delete-access-entry`); the deploy role's entry then holds the cluster.
    """

    outputs: dict[str, pulumi.Input[str]]

    def __init__(
        self, name: str, args: PipelineIdentitiesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("pouw:index:PipelineIdentities", name, None, opts)
        s = args.settings
        deploy_subject, preview_subject = subjects(s.repository, args.environment)
        self.outputs = {}
        if s.aws:
            self._aws(name, args, deploy_subject, preview_subject)
        if s.gcp and args.gcp_project:
            self._gcp(name, args, deploy_subject, preview_subject)
        if s.azure and args.azure_resource_group is not None and args.azure_location:
            self._azure(name, args, deploy_subject, preview_subject)
        self.register_outputs(self.outputs)

    def _aws(self, name: str, args: PipelineIdentitiesArgs, deploy: str, preview: str) -> None:
        child = pulumi.ResourceOptions(parent=self)
        jenkins = args.jenkins
        provider_arn: pulumi.Input[str]
        if args.settings.aws_oidc_provider_arn:
            provider_arn = args.settings.aws_oidc_provider_arn
        else:
            provider_arn = aws_iam.OpenIdConnectProvider(
                f"{name}-github",
                url=f"https://{GITHUB_OIDC}",
                client_id_lists=["sts.amazonaws.com"],
                tags=args.tags,
                opts=child,
            ).arn
        assert args.permissions_boundary is not None, "the stack's permissions boundary (components/iam.py)"
        boundary = pulumi.Output.from_input(args.permissions_boundary)
        roles = {}
        for kind, subject in (
            ("deploy", deploy),
            ("preview", (preview, plan_subject(args.settings.repository, args.environment))),
        ):
            role = aws_iam.Role(
                f"{name}-{kind}",
                name=pipeline_role_name(args.environment, kind),
                assume_role_policy=pulumi.Output.all(
                    provider_arn, *((jenkins.provider_arn, jenkins.issuer) if jenkins else ())
                ).apply(functools.partial(_trust, subject, jenkins, kind)),
                # Covers the longest job (deploy-stack.yml: timeout-minutes 90, role-duration-seconds 7200).
                max_session_duration=MAX_SESSION_SECONDS,
                tags=args.tags,
                opts=child,
            )
            self._aws_policies(name, kind, args, role, boundary)
            roles[kind] = role
            if args.cluster is not None:
                args.cluster.grant_access(
                    f"{name}-{kind}-eks", role.arn, CLUSTER_ACCESS_POLICIES[kind], args.tags, self
                )
        aws_iam.RolePolicy(
            f"{name}-deploy-iam",
            role=roles["deploy"].id,
            policy=boundary.apply(functools.partial(deploy_iam_policy, args.environment)),
            opts=child,
        )
        aws_iam.RolePolicy(
            f"{name}-deploy-metrics",
            role=roles["deploy"].id,
            policy=driver_metrics_policy(),
            opts=child,
        )
        self.outputs["awsDeployRoleArn"] = roles["deploy"].arn
        self.outputs["awsPreviewRoleArn"] = roles["preview"].arn

    def _aws_policies(
        self,
        name: str,
        kind: str,
        args: PipelineIdentitiesArgs,
        role: aws_iam.Role,
        boundary: pulumi.Output[str],
    ) -> None:
        """The role's customer managed policies, generated from the permission table
        (components/pipeline_policies.py): `pouw-<env>-<kind>-<n>`, as many as the table fills. How
        many is known before the account id (always 12 digits); the documents are written with it."""
        env = args.environment
        count = len(pipeline_documents(kind, env, placeholder_account()))
        for n in range(1, count + 1):
            policy = aws_iam.Policy(
                f"{name}-{kind}-{n}",
                name=f"{pipeline_role_name(env, kind)}-{n}",
                description=f"pouw-cicd {kind} ({env}) {n}/{count}, generated from components/permissions.py",
                policy=boundary.apply(functools.partial(_pipeline_document, kind, env, n)),
                tags=args.tags,
                opts=pulumi.ResourceOptions(parent=self),
            )
            aws_iam.RolePolicyAttachment(
                f"{name}-{kind}-{n}",
                role=role.name,
                policy_arn=policy.arn,
                opts=pulumi.ResourceOptions(parent=self),
            )

    def _gcp(self, name: str, args: PipelineIdentitiesArgs, deploy: str, preview: str) -> None:
        child = pulumi.ResourceOptions(parent=self)
        project = args.gcp_project
        apis = [
            gcp_projects.Service(
                f"{name}-api-{api.split('.')[0]}",
                project=project,
                service=api,
                disable_on_destroy=False,  # other stacks' pipelines may share the project
                opts=child,
            )
            for api in GCP_IDENTITY_APIS
        ]
        pool = gcp_iam.WorkloadIdentityPool(
            f"{name}-pool",
            project=project,
            workload_identity_pool_id=f"github-{args.environment}",
            display_name=f"GitHub Actions ({args.environment})",
            opts=pulumi.ResourceOptions(parent=self, depends_on=apis),
        )
        provider = gcp_iam.WorkloadIdentityPoolProvider(
            f"{name}-provider",
            project=project,
            workload_identity_pool_id=pool.workload_identity_pool_id,
            workload_identity_pool_provider_id="github",
            attribute_mapping={
                "google.subject": "assertion.sub",
                "attribute.repository": "assertion.repository",
                "attribute.environment": "assertion.environment",
            },
            attribute_condition=f"assertion.repository == '{args.settings.repository}'",
            oidc=gcp_iam.WorkloadIdentityPoolProviderOidcArgs(issuer_uri=f"https://{GITHUB_OIDC}"),
            opts=child,
        )
        attester = args.gcp_scope.attester
        if attester is not None:
            serviceaccount.IAMMember(
                f"{name}-attester-wif",
                service_account_id=attester.name,
                role="roles/iam.workloadIdentityUser",
                member=pool.name.apply(
                    functools.partial(_wif_principal, release_subject(args.settings.repository))
                ),
                opts=child,
            )
            self.outputs["gcpAttesterServiceAccount"] = attester.email
            registry = next(iter(args.gcp_scope.repositories.values()), None)
            if registry is not None and project is not None:
                # This environment's line of release.yml's BINAUTHZ_ENVIRONMENTS variable ("Attest for
                # Binary Authorization": `<env> <project> <region> <repository> <provider>`), from the
                # resources themselves, so the attested URL is the Artifact Registry copy Cloud Run runs.
                self.outputs["binauthzEnvironment"] = pulumi.Output.concat(
                    args.environment,
                    " ",
                    project,
                    " ",
                    registry.location,
                    " ",
                    registry.repository_id,
                    " ",
                    provider.name,
                )
        emails = {}
        for kind, subject in (("deploy", deploy), ("preview", preview)):
            account = serviceaccount.Account(
                f"{name}-{kind}",
                project=project,
                account_id=f"{kind}-{args.environment}",
                display_name=f"pouw-cicd {kind} ({args.environment})",
                opts=child,
            )
            serviceaccount.IAMMember(
                f"{name}-{kind}-wif",
                service_account_id=account.name,
                role="roles/iam.workloadIdentityUser",
                member=pool.name.apply(functools.partial(_wif_principal, subject)),
                opts=child,
            )
            if kind == "preview":  # deploy-stack.yml's plan job, environment <env>-plan
                serviceaccount.IAMMember(
                    f"{name}-preview-wif-plan",
                    service_account_id=account.name,
                    role="roles/iam.workloadIdentityUser",
                    member=pool.name.apply(
                        functools.partial(
                            _wif_principal, plan_subject(args.settings.repository, args.environment)
                        )
                    ),
                    opts=child,
                )
            member = account.email.apply(lambda email: f"serviceAccount:{email}")
            for role in GCP_PROJECT_ROLES[kind]:
                gcp_projects.IAMMember(
                    f"{name}-{kind}-{role.split('/')[1].replace('.', '-').lower()}",
                    project=project or "",
                    role=role,
                    member=member,
                    opts=child,
                )
            # GKE's rows (components/ci.py), and for deploy at least the rollout driver's metric reads.
            permissions = args.gcp_scope.project_permissions.get(kind) or (
                gcp_project_permissions(frozenset(), kind) if kind == "deploy" else ()
            )
            if permissions:
                role_id = f"pouw_{args.environment}_{kind}"
                custom = gcp_projects.IAMCustomRole(
                    f"{name}-{kind}-custom",
                    project=project,
                    role_id=role_id,
                    title=f"pouw-cicd {kind} ({args.environment})",
                    description="Generated from components/permissions.py: what GKE and its VPC need.",
                    permissions=list(permissions),
                    opts=child,
                )
                gcp_projects.IAMMember(
                    f"{name}-{kind}-custom",
                    project=project or "",
                    role=f"projects/{project}/roles/{role_id}",
                    member=member,
                    opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[custom])),
                )
            if kind == "deploy":
                self._gcp_resource_grants(name, args.gcp_scope, member)
            emails[kind] = account.email
        self.outputs["gcpWorkloadIdentityProvider"] = provider.name
        self.outputs["gcpServiceAccount"] = emails["deploy"]
        self.outputs["gcpPreviewServiceAccount"] = emails["preview"]

    def _gcp_resource_grants(self, name: str, scope: GcpDeployScope, member: pulumi.Output[str]) -> None:
        """The deploy account's grants on the resources it manages, each on the resource alone."""
        child = pulumi.ResourceOptions(parent=self)
        for key, repository in scope.repositories.items():
            artifactregistry.RepositoryIamMember(
                f"{name}-deploy-repository-{key}",
                project=repository.project,
                location=repository.location,
                repository=repository.repository_id,
                role="roles/artifactregistry.admin",  # the repository and its IAM (the runtime readers)
                member=member,
                opts=child,
            )
        for key, service in scope.services.items():
            cloudrunv2.ServiceIamMember(
                f"{name}-deploy-run-{key}",
                project=service.project,
                location=service.location,
                name=service.name,
                role="roles/run.admin",  # the service's invokers
                member=member,
                opts=child,
            )
        for key, account in scope.runtime_accounts.items():
            serviceaccount.IAMMember(
                f"{name}-deploy-actas-{key}",
                service_account_id=account.name,
                role="roles/iam.serviceAccountUser",  # deploy revisions that run as it
                member=member,
                opts=child,
            )

    def _azure(self, name: str, args: PipelineIdentitiesArgs, deploy: str, preview: str) -> None:
        child = pulumi.ResourceOptions(parent=self)
        assert args.azure_resource_group is not None and args.azure_resource_group_id is not None
        client = authorization.get_client_config_output(opts=pulumi.InvokeOutputOptions(parent=self))
        for kind, subject, role in (
            ("deploy", deploy, AZURE_CONTRIBUTOR),
            ("preview", preview, AZURE_READER),
        ):
            identity = managedidentity.UserAssignedIdentity(
                f"{name}-{kind}",
                resource_name_=f"pouw-{args.environment}-{kind}",
                resource_group_name=args.azure_resource_group,
                location=args.azure_location,
                tags=args.tags,
                opts=child,
            )
            managedidentity.FederatedIdentityCredential(
                f"{name}-{kind}-github",
                resource_name_=identity.name,
                resource_group_name=args.azure_resource_group,
                federated_identity_credential_resource_name="github",
                issuer=f"https://{GITHUB_OIDC}",
                subject=subject,
                audiences=["api://AzureADTokenExchange"],
                opts=child,
            )
            if kind == "preview":  # deploy-stack.yml's plan job, environment <env>-plan
                managedidentity.FederatedIdentityCredential(
                    f"{name}-preview-github-plan",
                    resource_name_=identity.name,
                    resource_group_name=args.azure_resource_group,
                    federated_identity_credential_resource_name="github-plan",
                    issuer=f"https://{GITHUB_OIDC}",
                    subject=plan_subject(args.settings.repository, args.environment),
                    audiences=["api://AzureADTokenExchange"],
                    opts=child,
                )
            authorization.RoleAssignment(
                f"{name}-{kind}-role",
                scope=args.azure_resource_group_id,
                principal_id=identity.principal_id,
                principal_type="ServicePrincipal",
                role_definition_id=client.subscription_id.apply(functools.partial(_azure_role, role)),
                opts=child,
            )
            self.outputs["azureClientId" if kind == "deploy" else "azurePreviewClientId"] = identity.client_id
            for suffix, aks_role in (AKS_PIPELINE_ROLES[kind] if args.aks else {}).items():
                authorization.RoleAssignment(
                    f"{name}-{kind}-{suffix}",
                    scope=args.azure_resource_group_id,
                    principal_id=identity.principal_id,
                    principal_type="ServicePrincipal",
                    role_definition_id=client.subscription_id.apply(functools.partial(_azure_role, aks_role)),
                    opts=child,
                )
            if kind == "deploy":
                # Delegated role assignment with a condition (Azure RBAC docs, "Delegate Azure role
                # assignment management to others with conditions"): only the stack's own assignments.
                authorization.RoleAssignment(
                    f"{name}-deploy-rbac",
                    scope=args.azure_resource_group_id,
                    principal_id=identity.principal_id,
                    principal_type="ServicePrincipal",
                    role_definition_id=client.subscription_id.apply(
                        functools.partial(_azure_role, AZURE_RBAC_ADMIN)
                    ),
                    condition=assignment_condition(AZURE_ASSIGNED_ROLES),
                    condition_version="2.0",
                    description="pouw-cicd deploy: only the role assignments the stack declares",
                    opts=child,
                )
        self.outputs["azureTenantId"] = client.tenant_id
        self.outputs["azureSubscriptionId"] = client.subscription_id


def _azure_role(role: str, subscription: str) -> str:
    return f"/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{role}"


def assignment_condition(roles: dict[str, str]) -> str:
    """An ABAC condition on roleAssignments write and delete: only these role definitions, and only to
    these principal types (learn.microsoft.com/azure/role-based-access-control/
    conditions-authorization-actions-attributes: RoleDefinitionId, PrincipalType)."""
    ids = ", ".join(sorted(roles))
    types = ", ".join(f"'{t}'" for t in sorted(set(roles.values())))

    def allowed(source: str) -> str:
        return (
            f"@{source}[Microsoft.Authorization/roleAssignments:RoleDefinitionId] "
            f"ForAnyOfAnyValues:GuidEquals {{{ids}}} AND "
            f"@{source}[Microsoft.Authorization/roleAssignments:PrincipalType] "
            f"ForAnyOfAnyValues:StringEqualsIgnoreCase {{{types}}}"
        )

    return (
        "((!(ActionMatches{'Microsoft.Authorization/roleAssignments/write'})) OR "
        f"({allowed('Request')})) AND "
        "((!(ActionMatches{'Microsoft.Authorization/roleAssignments/delete'})) OR "
        f"({allowed('Resource')}))"
    )
