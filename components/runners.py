"""CI runner infrastructure and keyless pipeline identities.

`CiRunners` puts ephemeral, autoscaling GitHub Actions runners (ARC runner scale sets) and a place for
Jenkins agents on the environment's EKS cluster. Both push images through an IRSA role that may push
to this project's ECR repositories and do nothing else.

`PipelineIdentities` gives the pipeline of one environment a way into each cloud without a stored
secret: GitHub's OIDC token is trusted only for this repository and this GitHub environment (the
deploy identity) or for its pull requests (the read-only preview identity).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws.iam as aws_iam
import pulumi_azure_native.authorization as authorization
import pulumi_azure_native.managedidentity as managedidentity
import pulumi_gcp.iam as gcp_iam
import pulumi_gcp.projects as gcp_projects
import pulumi_gcp.serviceaccount as serviceaccount
import pulumi_kubernetes.core.v1 as core
import pulumi_kubernetes.helm.v3 as helm
import pulumi_kubernetes.rbac.v1 as rbac

from components.iam import document, irsa_statement, irsa_trust, managed_policy
from components.settings import (
    ArcSettings,
    CiRunnersSettings,
    JenkinsSettings,
    PipelineIdentitySettings,
    ScaleSetSettings,
)
from components.targets.eks import EksCluster

ARC_CHARTS = "oci://ghcr.io/actions/actions-runner-controller-charts"
ARC_SYSTEM, ARC_RUNNERS, ARC_SERVICE_ACCOUNT = "arc-systems", "arc-runners", "arc-runner"
ARC_SECRET = "github-app"
GITHUB_OIDC = "token.actions.githubusercontent.com"
AZURE_CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"  # built-in Contributor
AZURE_READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"  # built-in Reader
ECR_PUSH_ACTIONS = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:CompleteLayerUpload",
    "ecr:GetDownloadUrlForLayer",
    "ecr:InitiateLayerUpload",
    "ecr:PutImage",
    "ecr:UploadLayerPart",
]
# A deploy role runs `pulumi up`: PowerUserAccess covers every service but IAM; these IAM actions,
# listed one by one, let it manage the roles the program declares.
DEPLOY_IAM_ACTIONS = [
    "iam:AttachRolePolicy",
    "iam:CreateOpenIDConnectProvider",
    "iam:CreatePolicy",
    "iam:CreateRole",
    "iam:CreateServiceLinkedRole",
    "iam:DeleteOpenIDConnectProvider",
    "iam:DeletePolicy",
    "iam:DeleteRole",
    "iam:DeleteRolePolicy",
    "iam:DetachRolePolicy",
    "iam:GetOpenIDConnectProvider",
    "iam:GetPolicy",
    "iam:GetPolicyVersion",
    "iam:GetRole",
    "iam:GetRolePolicy",
    "iam:ListAttachedRolePolicies",
    "iam:ListInstanceProfilesForRole",
    "iam:ListPolicyVersions",
    "iam:ListRolePolicies",
    "iam:PassRole",
    "iam:PutRolePolicy",
    "iam:TagOpenIDConnectProvider",
    "iam:TagRole",
    "iam:UntagRole",
    "iam:UpdateAssumeRolePolicy",
]


def push_policy(repository_arns: Sequence[str]) -> str:
    """Push to the project's repositories; log in to ECR (which has no resource to scope)."""
    return document(
        [
            {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
            {"Effect": "Allow", "Action": ECR_PUSH_ACTIONS, "Resource": sorted(repository_arns)},
        ]
    )


def github_statement(provider_arn: str, subject: str) -> dict[str, Any]:
    """Trust GitHub's OIDC token for exactly one subject, audience pinned to STS."""
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
    """A CI cluster's service account that may also assume the pipeline roles (Jenkins agents, IRSA)."""

    provider_arn: pulumi.Input[str]
    issuer: pulumi.Input[str]
    namespace: str
    service_account: str


def _trust(subject: str, jenkins: KubernetesTrust | None, values: list[str]) -> str:
    statements = [github_statement(values[0], subject)]
    if jenkins is not None:
        statements.append(irsa_statement(values[1], values[2], jenkins.namespace, jenkins.service_account))
    return document(statements)


def _wif_principal(subject: str, pool_name: str) -> str:
    return f"principal://iam.googleapis.com/{pool_name}/subject/{subject}"


def subjects(repository: str, environment: str) -> tuple[str, str]:
    """GitHub's `sub` claim for a job in the environment, and for a pull request."""
    return f"repo:{repository}:environment:{environment}", f"repo:{repository}:pull_request"


@dataclass(frozen=True)
class CiRunnersArgs:
    settings: CiRunnersSettings
    cluster: EksCluster
    repository_arns: Sequence[pulumi.Input[str]]
    # GitHub App credentials read with Config.require_secret: stay secrets all the way to the cluster.
    app_credentials: dict[str, pulumi.Input[str]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class CiRunners(pulumi.ComponentResource):
    """ARC (controller + one scale set per setting) and Jenkins agent RBAC, on the EKS cluster."""

    def __init__(self, name: str, args: CiRunnersArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pouw:index:CiRunners", name, None, opts)
        self.args = args
        self.k8s = pulumi.ResourceOptions(parent=self, provider=args.cluster.provider)
        self.push_roles: dict[str, pulumi.Output[str]] = {}
        if args.settings.arc is not None:
            self._arc(name, args.settings.arc)
        if args.settings.jenkins is not None:
            self._jenkins(name, args.settings.jenkins)
        self.register_outputs({"pushRoles": self.push_roles})

    def _namespace(self, name: str, namespace: str) -> core.Namespace:
        pss = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
        return core.Namespace(name, metadata={"name": namespace, "labels": pss}, opts=self.k8s)

    def _push_role(self, name: str, namespace: str, service_account: str) -> pulumi.Output[str]:
        """An IRSA role for one service account: push to the project's ECR repositories, nothing more."""
        cluster = self.args.cluster
        role = aws_iam.Role(
            name,
            assume_role_policy=pulumi.Output.all(cluster.oidc_provider_arn, cluster.oidc_issuer).apply(
                lambda a: irsa_trust(a[0], a[1], namespace, service_account)
            ),
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
        runners = self._namespace(f"{name}-arc-runners", ARC_RUNNERS)
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
        namespace = self._namespace(f"{name}-jenkins", jenkins.namespace)
        ns = namespace.metadata.name
        controller = core.ServiceAccount(
            f"{name}-jenkins-controller",
            metadata={"name": "jenkins-controller", "namespace": ns},
            opts=self.k8s,
        )
        role = rbac.Role(
            f"{name}-jenkins-agents",
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
            f"{name}-jenkins-agents",
            metadata={"name": "jenkins-agents", "namespace": ns},
            role_ref={"api_group": "rbac.authorization.k8s.io", "kind": "Role", "name": role.metadata.name},
            subjects=[{"kind": "ServiceAccount", "name": controller.metadata.name, "namespace": ns}],
            opts=self.k8s,
        )
        role_arn = self._push_role(f"{name}-jenkins-push", jenkins.namespace, "jenkins-agent")
        agent = core.ServiceAccount(
            f"{name}-jenkins-agent",
            metadata={
                "name": "jenkins-agent",
                "namespace": ns,
                "annotations": {"eks.amazonaws.com/role-arn": role_arn},
            },
            opts=self.k8s,
        )
        core.ConfigMap(
            f"{name}-jenkins-pod-template",
            metadata={"name": "jenkins-agent-pod-template", "namespace": ns},
            data={
                "pod-template.yaml": agent.metadata.name.apply(lambda sa: jenkins_pod_template(jenkins, sa))
            },
            opts=self.k8s,
        )


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
    return values


def jenkins_pod_template(jenkins: JenkinsSettings, service_account: str) -> str:
    """The pod template the Kubernetes plugin uses (Manage Jenkins > Clouds > Pod templates, raw YAML)."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "spec": {
                "serviceAccountName": service_account,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000},
                "containers": [restricted_container("jnlp", jenkins.agent_image, "1", "2Gi")],
            },
        },
        indent=2,
        sort_keys=True,
    )


@dataclass(frozen=True)
class PipelineIdentitiesArgs:
    settings: PipelineIdentitySettings
    environment: str
    gcp_project: str | None = None
    azure_resource_group: pulumi.Input[str] | None = None
    azure_resource_group_id: pulumi.Input[str] | None = None
    azure_location: str | None = None
    jenkins: KubernetesTrust | None = None  # Jenkins agents that also deploy (AWS roles)
    tags: dict[str, str] = field(default_factory=dict)


class PipelineIdentities(pulumi.ComponentResource):
    """One environment's keyless pipeline identities in AWS, GCP and Azure."""

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
        roles = {}
        for kind, subject, managed in (
            ("deploy", deploy, "PowerUserAccess"),
            ("preview", preview, "ReadOnlyAccess"),
        ):
            role = aws_iam.Role(
                f"{name}-{kind}",
                name=f"pouw-{args.environment}-{kind}",
                assume_role_policy=pulumi.Output.all(
                    provider_arn, *((jenkins.provider_arn, jenkins.issuer) if jenkins else ())
                ).apply(functools.partial(_trust, subject, jenkins)),
                max_session_duration=3600,
                tags=args.tags,
                opts=child,
            )
            aws_iam.RolePolicyAttachment(
                f"{name}-{kind}-{managed}", role=role.name, policy_arn=managed_policy(managed), opts=child
            )
            roles[kind] = role
        aws_iam.RolePolicy(
            f"{name}-deploy-iam",
            role=roles["deploy"].id,
            policy=document([{"Effect": "Allow", "Action": DEPLOY_IAM_ACTIONS, "Resource": "*"}]),
            opts=child,
        )
        self.outputs["awsDeployRoleArn"] = roles["deploy"].arn
        self.outputs["awsPreviewRoleArn"] = roles["preview"].arn

    def _gcp(self, name: str, args: PipelineIdentitiesArgs, deploy: str, preview: str) -> None:
        child = pulumi.ResourceOptions(parent=self)
        project = args.gcp_project
        pool = gcp_iam.WorkloadIdentityPool(
            f"{name}-pool",
            project=project,
            workload_identity_pool_id=f"github-{args.environment}",
            display_name=f"GitHub Actions ({args.environment})",
            opts=child,
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
        emails = {}
        for kind, subject, roles in (
            (
                "deploy",
                deploy,
                ("roles/run.admin", "roles/artifactregistry.admin", "roles/iam.serviceAccountUser"),
            ),
            ("preview", preview, ("roles/viewer",)),
        ):
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
            for role in roles:
                gcp_projects.IAMMember(
                    f"{name}-{kind}-{role.split('/')[1].replace('.', '-').lower()}",
                    project=project or "",
                    role=role,
                    member=account.email.apply(lambda email: f"serviceAccount:{email}"),
                    opts=child,
                )
            emails[kind] = account.email
        self.outputs["gcpWorkloadIdentityProvider"] = provider.name
        self.outputs["gcpServiceAccount"] = emails["deploy"]
        self.outputs["gcpPreviewServiceAccount"] = emails["preview"]

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
            authorization.RoleAssignment(
                f"{name}-{kind}-role",
                scope=args.azure_resource_group_id,
                principal_id=identity.principal_id,
                principal_type="ServicePrincipal",
                role_definition_id=client.subscription_id.apply(functools.partial(_azure_role, role)),
                opts=child,
            )
            self.outputs["azureClientId" if kind == "deploy" else "azurePreviewClientId"] = identity.client_id
        self.outputs["azureTenantId"] = client.tenant_id
        self.outputs["azureSubscriptionId"] = client.subscription_id


def _azure_role(role: str, subscription: str) -> str:
    return f"/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{role}"
