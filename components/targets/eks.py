"""The EKS target: a hardened cluster from pulumi-aws primitives, and one rollout-driven workload set
per service.

Routing: blue-green switches the `<svc>` Service's selector to the active slot and keeps a
`<svc>-preview` Service on the idle one. Canary splits traffic with weighted target groups on an
Application Load Balancer (AWS Load Balancer Controller `actions.*` annotation) over the per-slot
`<svc>-stable` / `<svc>-canary` Services; each slot's HPA bounds follow its weight. Deployments
never carry a replica count (their HPA owns it) nor anything that depends on weight or on which
slot is active, so a traffic shift rolls no pod.

Each slot runs in its workload (`SlotPlan.workload`, the slot's name unless the stack file names
another): Deployments, HPAs, PDBs and the `slot` label are keyed by it, routing by the slot's role.
A strategy switch that names the live workload therefore keeps its pods, and every routing object
waits for the workloads (the provider awaits a Deployment's readiness), so a new slot is ready
before any traffic reaches it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import pulumi
import pulumi_aws.cloudwatch as cloudwatch
import pulumi_aws.ec2 as ec2
import pulumi_aws.eks as eks
import pulumi_aws.iam as iam
import pulumi_aws.kms as kms
import pulumi_kubernetes.helm.v3 as helm
import pulumi_kubernetes.networking.v1 as networking
from pulumi_aws.get_caller_identity import get_caller_identity_output
from pulumi_kubernetes.provider import Provider
from pydantic import Field, model_validator

from components.admission import (
    ADMISSION_SERVICE_ACCOUNT,
    KYVERNO_NAMESPACE,
    Kyverno,
    KyvernoArgs,
    Verification,
)
from components.iam import document, irsa_trust, service_role
from components.network import AwsNetwork, log_key, web_acl
from components.permissions import ADMISSION_READS
from components.registry import EcrRegistry
from components.rollout import Model as _Model
from components.rollout import RolloutPlan
from components.schema import _ACM_ARN, _CIDR, _KUBERNETES_VERSION, ServiceSettings
from components.targets.base import (
    ALB_HEADER_MATCH_FORMS,
    ALB_HEADER_NAME_MAX,
    TLS_POLICY,
    Target,
    TargetEndpoints,
    alb_header_values,
)
from components.targets.kubernetes import (
    WORKLOAD_TYPES,
    labels,
    metadata,
    network_policies,
    service_namespace,
    slot_services,
    slot_workloads,
)

if TYPE_CHECKING:
    from components.context import StackContext


class NodeGroupSettings(_Model):
    instance_types: Annotated[tuple[str, ...], Field(min_length=1)] = ("m7i.large",)
    min_size: Annotated[int, Field(ge=1, le=100)] = 2
    max_size: Annotated[int, Field(ge=1, le=100)] = 4
    desired_size: Annotated[int, Field(ge=1, le=100)] = 2
    disk_size_gb: Annotated[int, Field(ge=20, le=1000)] = 50

    @model_validator(mode="after")
    def _ordered(self) -> NodeGroupSettings:
        if not self.min_size <= self.desired_size <= self.max_size:
            raise ValueError(
                f"needs minSize <= desiredSize <= maxSize, got {self.min_size}/{self.desired_size}/"
                f"{self.max_size}"
            )
        return self


class EksSettings(_Model):
    kubernetes_version: Annotated[str, _KUBERNETES_VERSION] = "1.33"
    # Public API endpoint: on outside prod unless set; in prod private unless set true.
    endpoint_public_access: bool | None = None
    public_access_cidrs: tuple[Annotated[str, _CIDR], ...] = ()
    nodes: NodeGroupSettings = Field(default_factory=NodeGroupSettings)
    log_retention_days: Literal[1, 3, 5, 7, 14, 30, 60, 90, 180, 365] = 30
    load_balancer_controller_version: str = "1.13.4"
    # ACM certificate for the HTTPS listener of service ingresses; HTTP only when unset (dev).
    certificate_arn: Annotated[str, _ACM_ARN] | None = None
    internal: bool = False
    # A WAFv2 web ACL (AWS managed rule groups, per-IP rate limit) on the ingresses' ALBs. Unset: on in prod.
    waf: bool | None = None
    # Requests per client IP in any 5 minutes before the web ACL blocks it.
    waf_rate_limit: Annotated[int, Field(ge=10, le=2_000_000_000)] = 2000

    # Prod defaults, resolved here with the block they belong to (`prod`: the stack is prod).
    def public_endpoint(self, prod: bool) -> bool:
        """Explicit, or a public API endpoint (restricted to publicAccessCidrs) everywhere but prod."""
        return (not prod) if self.endpoint_public_access is None else self.endpoint_public_access

    def waf_on(self, prod: bool) -> bool:
        """Explicit, or a WAF on the ingresses' ALBs in prod."""
        return prod if self.waf is None else self.waf


LOG_TYPES = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
LB_CONTROLLER = "aws-load-balancer-controller"
DROP_INVALID_HEADERS = "routing.http.drop_invalid_header_fields.enabled=true"
EKS_ACCESS_POLICIES = "arn:aws:eks::aws:cluster-access-policy"
# The AWS Load Balancer Controller's IAM policy, exactly as published for the app version the default
# chart installs (chart 1.13.4 = controller v2.13.4), tag conditions and all: it may change only the load
# balancers, target groups and security groups it tagged for this cluster. Refresh it with the chart:
#   curl -o components/data/aws-load-balancer-controller-v<app>-iam-policy.json \
#     https://raw.githubusercontent.com/kubernetes-sigs/aws-load-balancer-controller/v<app>/docs/install/iam_policy.json
LB_CONTROLLER_APP_VERSION = "v2.13.4"  # tag commit aefed36aa30528e35a73281a5dc131ed26caa0f4
LB_CONTROLLER_POLICY_SOURCE = (
    "https://github.com/kubernetes-sigs/aws-load-balancer-controller/blob/"
    f"{LB_CONTROLLER_APP_VERSION}/docs/install/iam_policy.json"
)
LB_CONTROLLER_POLICY_FILE = (
    Path(__file__).resolve().parent.parent
    / "data"
    / f"aws-load-balancer-controller-{LB_CONTROLLER_APP_VERSION}-iam-policy.json"
)
LB_CONTROLLER_POLICY_SHA256 = "16f232c9d9f79366fe949c4550ad517a202380058a9e48d45a4e215044a20a6a"


def lb_controller_policy() -> str:
    """The published document, parsed (so a corrupt file fails here) and written compactly."""
    text = LB_CONTROLLER_POLICY_FILE.read_text()
    return json.dumps(json.loads(text), separators=(",", ":"))


def admission_read_policy(repository_arns: list[str]) -> str:
    """Kyverno's registry reads (components/permissions.py ADMISSION_READS): the login on `*` (it has
    no resource), the image reads on the stack's repositories only."""
    login = "ecr:GetAuthorizationToken"
    reads = sorted(a for a in ADMISSION_READS["aws"].read if a != login)
    return document(
        [
            {"Effect": "Allow", "Action": [login], "Resource": "*"},
            {"Effect": "Allow", "Action": reads, "Resource": sorted(repository_arns)},
        ]
    )


def kubeconfig(endpoint: str, ca_data: str, cluster_name: str, region: str) -> str:
    """A kubeconfig that authenticates with `aws eks get-token` (the deployer's AWS identity)."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": cluster_name, "cluster": {"server": endpoint, "certificate-authority-data": ca_data}}
            ],
            "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
            "current-context": cluster_name,
            "users": [
                {
                    "name": cluster_name,
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "aws",
                            "args": ["eks", "get-token", "--cluster-name", cluster_name, "--region", region],
                        }
                    },
                }
            ],
        }
    )


@dataclass(frozen=True)
class EksClusterArgs:
    settings: EksSettings
    network: AwsNetwork
    cluster_name: str
    public_endpoint: bool
    tags: dict[str, str] = field(default_factory=dict)
    protect: bool = False
    encrypt_logs: bool = False  # a customer-managed key for the control-plane log group (prod)
    waf: bool = False  # a WAFv2 web ACL the ingresses' ALBs are associated with (prod unless `eks.waf`)
    # The stack's permissions boundary (components/iam.py): every role made here carries it.
    permissions_boundary: pulumi.Input[str] | None = None


def secrets_key_policy(account: str, cluster_role_arn: str) -> str:
    """The secrets key's policy: the account administers it (its IAM policies decide who may; whoever
    creates the cluster needs kms:DescribeKey and kms:CreateGrant), and the cluster role uses it for
    envelope encryption (EKS User Guide: docs.aws.amazon.com/eks/latest/userguide/envelope-encryption.html
    and enable-kms.html)."""
    return document(
        [
            {
                "Sid": "AccountAdministers",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "ClusterEncryptsSecrets",
                "Effect": "Allow",
                "Principal": {"AWS": cluster_role_arn},
                "Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey", "kms:ListGrants"],
                "Resource": "*",
            },
        ]
    )


class EksCluster(pulumi.ComponentResource):
    """EKS with KMS-encrypted secrets, all control-plane logs, private nodes with IMDSv2 only, an OIDC
    provider for workload identities, and the AWS Load Balancer Controller.

    `provider` is the Kubernetes provider every workload uses.
    """

    provider: Provider
    oidc_provider_arn: pulumi.Output[str]
    oidc_issuer: pulumi.Output[str]
    web_acl_arn: pulumi.Output[str] | None

    def __init__(self, name: str, args: EksClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pouw:index:EksCluster", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        stateful = pulumi.ResourceOptions(parent=self, protect=args.protect)
        tags = args.tags

        log_group = f"/aws/eks/{args.cluster_name}/cluster"
        log_key_arn = (
            log_key(
                f"{name}-logs",
                f"EKS control-plane logs of {args.cluster_name}",
                log_group,
                tags,
                self,
                args.protect,
            ).arn
            if args.encrypt_logs
            else None
        )
        logs = cloudwatch.LogGroup(
            f"{name}-control-plane",
            name=log_group,
            retention_in_days=s.log_retention_days,
            kms_key_id=log_key_arn,
            tags=tags,
            opts=stateful,  # the control plane's audit log
        )
        cluster_role, cluster_policies = service_role(
            f"{name}-cluster",
            "eks.amazonaws.com",
            ["AmazonEKSClusterPolicy"],
            tags,
            self,
            args.permissions_boundary,
        )
        account = get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self)).account_id
        key = kms.Key(
            f"{name}-secrets",
            description=f"EKS secrets of {args.cluster_name}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=pulumi.Output.all(account, cluster_role.arn).apply(
                lambda a: secrets_key_policy(a[0], a[1])
            ),
            tags=tags,
            opts=stateful,
        )
        self.cluster = eks.Cluster(
            name,
            name=args.cluster_name,
            version=s.kubernetes_version,
            role_arn=cluster_role.arn,
            vpc_config=eks.ClusterVpcConfigArgs(
                subnet_ids=args.network.private_subnet_ids,
                endpoint_private_access=True,
                endpoint_public_access=args.public_endpoint,
                public_access_cidrs=list(s.public_access_cidrs)
                if args.public_endpoint and s.public_access_cidrs
                else None,
            ),
            encryption_config=eks.ClusterEncryptionConfigArgs(
                provider=eks.ClusterEncryptionConfigProviderArgs(key_arn=key.arn), resources=["secrets"]
            ),
            enabled_cluster_log_types=LOG_TYPES,
            access_config=eks.ClusterAccessConfigArgs(
                authentication_mode="API", bootstrap_cluster_creator_admin_permissions=True
            ),
            tags=tags,
            opts=pulumi.ResourceOptions(
                parent=self, protect=args.protect, depends_on=[logs, *cluster_policies]
            ),
        )

        # The node role is the pull identity of EKS workloads: read-only ECR, nothing more.
        node_role, attachments = service_role(
            f"{name}-nodes",
            "ec2.amazonaws.com",
            ["AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly"],
            tags,
            self,
            args.permissions_boundary,
        )
        template = ec2.LaunchTemplate(
            f"{name}-nodes",
            metadata_options=ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1
            ),
            block_device_mappings=[
                ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name="/dev/xvda",
                    ebs=ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=s.nodes.disk_size_gb, volume_type="gp3", encrypted="true"
                    ),
                )
            ],
            tag_specifications=[ec2.LaunchTemplateTagSpecificationArgs(resource_type="instance", tags=tags)],
            tags=tags,
            opts=child,
        )
        eks.NodeGroup(
            f"{name}-nodes",
            cluster_name=self.cluster.name,
            node_role_arn=node_role.arn,
            subnet_ids=args.network.private_subnet_ids,
            instance_types=list(s.nodes.instance_types),
            ami_type="AL2023_x86_64_STANDARD",
            scaling_config=eks.NodeGroupScalingConfigArgs(
                min_size=s.nodes.min_size, max_size=s.nodes.max_size, desired_size=s.nodes.desired_size
            ),
            update_config=eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            launch_template=eks.NodeGroupLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str)
            ),
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=attachments),
        )

        self.oidc_issuer = self.cluster.identities.apply(lambda ids: ids[0].oidcs[0].issuer or "")  # type: ignore[index]
        oidc = iam.OpenIdConnectProvider(
            f"{name}-oidc", url=self.oidc_issuer, client_id_lists=["sts.amazonaws.com"], tags=tags, opts=child
        )
        self.oidc_provider_arn = oidc.arn

        config = pulumi.Output.all(
            self.cluster.endpoint,
            self.cluster.certificate_authority.data,
            self.cluster.name,
            self.cluster.arn,
        ).apply(lambda a: kubeconfig(a[0], a[1], a[2], a[3].split(":")[3]))
        secret_config: pulumi.Output[str] = pulumi.Output.secret(config)
        self.provider = Provider(
            f"{name}-k8s", kubeconfig=secret_config, delete_unreachable=False, opts=child
        )
        self._load_balancer_controller(name, args)
        # The controller associates this web ACL with each ingress's ALB (the wafv2-acl-arn annotation;
        # its published IAM policy grants wafv2:AssociateWebACL).
        self.web_acl_arn = web_acl(f"{name}-waf", s.waf_rate_limit, tags, self).arn if args.waf else None
        self.register_outputs({"clusterName": self.cluster.name, "oidcProviderArn": self.oidc_provider_arn})

    def grant_access(
        self,
        name: str,
        principal_arn: pulumi.Input[str],
        policy: str,
        tags: dict[str, str],
        parent: pulumi.Resource,
    ) -> eks.AccessPolicyAssociation:
        """Let an IAM principal into this cluster's Kubernetes API with one EKS access policy, cluster-wide.

        The cluster authenticates with access entries only (authentication mode API): a principal with
        no entry gets 401 from the API server, whatever its IAM permissions. The caller creates the
        entry where both the cluster and the principal exist (the pipeline roles are made after the
        cluster), so the entry depends on both and nothing depends back.
        """
        opts = pulumi.ResourceOptions(parent=parent)
        entry = eks.AccessEntry(
            name, cluster_name=self.cluster.name, principal_arn=principal_arn, tags=tags, opts=opts
        )
        return eks.AccessPolicyAssociation(
            name,
            cluster_name=self.cluster.name,
            principal_arn=entry.principal_arn,
            policy_arn=f"{EKS_ACCESS_POLICIES}/{policy}",
            access_scope=eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
            opts=opts,
        )

    def verify_signatures(
        self,
        name: str,
        verification: Verification,
        repository_arns: list[pulumi.Output[str]],
        args: EksClusterArgs,
    ) -> Kyverno:
        """Kyverno, whose admission controller reads the stack's ECR repositories through IRSA (the
        permission table's ADMISSION_READS) to check the release signature of every service pod."""
        role = iam.Role(
            f"{name}-kyverno",
            assume_role_policy=pulumi.Output.all(self.oidc_provider_arn, self.oidc_issuer).apply(
                lambda a: irsa_trust(a[0], a[1], KYVERNO_NAMESPACE, ADMISSION_SERVICE_ACCOUNT)
            ),
            permissions_boundary=args.permissions_boundary,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        policy = iam.RolePolicy(
            f"{name}-kyverno",
            role=role.id,
            policy=pulumi.Output.all(*repository_arns).apply(lambda arns: admission_read_policy(arns)),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return Kyverno(
            f"{name}-kyverno",
            KyvernoArgs(
                provider=self.provider,
                verification=verification,
                credentials="amazon",
                annotations={"eks.amazonaws.com/role-arn": role.arn},
                depends_on=[policy],
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _load_balancer_controller(self, name: str, args: EksClusterArgs) -> None:
        role = iam.Role(
            f"{name}-lb-controller",
            assume_role_policy=pulumi.Output.all(self.oidc_provider_arn, self.oidc_issuer).apply(
                lambda a: irsa_trust(a[0], a[1], "kube-system", LB_CONTROLLER)
            ),
            permissions_boundary=args.permissions_boundary,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        iam.RolePolicy(
            f"{name}-lb-controller",
            role=role.id,
            policy=lb_controller_policy(),
            opts=pulumi.ResourceOptions(parent=self),
        )
        helm.Release(
            f"{name}-lb-controller",
            name=LB_CONTROLLER,
            chart=LB_CONTROLLER,
            version=args.settings.load_balancer_controller_version,
            repository_opts=helm.RepositoryOptsArgs(repo="https://aws.github.io/eks-charts"),
            namespace="kube-system",
            values={
                "clusterName": args.cluster_name,
                "vpcId": args.network.vpc_id,
                "serviceAccount": {
                    "create": True,
                    "name": LB_CONTROLLER,
                    "annotations": {"eks.amazonaws.com/role-arn": role.arn},
                },
            },
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider),
        )


@dataclass(frozen=True)
class EksServiceArgs:
    service: ServiceSettings
    plan: RolloutPlan
    images: Mapping[str, pulumi.Input[str]]  # slot name -> digest-pinned image ref
    provider: Provider
    settings: EksSettings
    environment: str
    web_acl_arn: pulumi.Input[str] | None = None  # the cluster's web ACL, where it has one
    # Where the ALB reaches pods from (target type ip): the VPC's range.
    ingress_cidrs: tuple[str, ...] = ()


def alb_annotations(
    settings: EksSettings,
    service: ServiceSettings,
    environment: str,
    web_acl_arn: pulumi.Input[str] | None = None,
) -> dict[str, Any]:
    """The ALB the AWS Load Balancer Controller makes for a service's Ingress (values are strings, but
    the web ACL's ARN is an Output: Ingress metadata takes Inputs)."""
    annotations: dict[str, Any] = {
        "alb.ingress.kubernetes.io/scheme": "internal" if settings.internal else "internet-facing",
        "alb.ingress.kubernetes.io/target-type": "ip",
        "alb.ingress.kubernetes.io/healthcheck-path": service.health_path,
        "alb.ingress.kubernetes.io/load-balancer-attributes": DROP_INVALID_HEADERS,
        "alb.ingress.kubernetes.io/tags": f"environment={environment},service={service.name}",
    }
    if settings.certificate_arn:
        annotations.update(
            {
                "alb.ingress.kubernetes.io/listen-ports": json.dumps([{"HTTP": 80}, {"HTTPS": 443}]),
                "alb.ingress.kubernetes.io/ssl-redirect": "443",
                "alb.ingress.kubernetes.io/certificate-arn": settings.certificate_arn,
                "alb.ingress.kubernetes.io/ssl-policy": TLS_POLICY,
            }
        )
    else:
        annotations["alb.ingress.kubernetes.io/listen-ports"] = json.dumps([{"HTTP": 80}])
    if web_acl_arn is not None:
        annotations["alb.ingress.kubernetes.io/wafv2-acl-arn"] = web_acl_arn
    return annotations


def weighted_action(service: str, plan: RolloutPlan) -> str:
    """ALB forward action over the per-slot Services, weighted as the plan says."""
    groups = [
        {"serviceName": f"{service}-{s.name}", "servicePort": "80", "weight": s.weight} for s in plan.slots
    ]
    return json.dumps({"type": "forward", "forwardConfig": {"targetGroups": groups}}, sort_keys=True)


def header_conditions(plan: RolloutPlan) -> str:
    """The header route's ALB conditions (`conditions.<action>` annotation): every match, ANDed."""
    assert plan.header_route is not None
    conditions = [
        {
            "field": "http-header",
            "httpHeaderConfig": {"httpHeaderName": m.name, "values": alb_header_values(m)},
        }
        for m in plan.header_route.matches
    ]
    return json.dumps(conditions, sort_keys=True)


def header_action(service: str, plan: RolloutPlan) -> str:
    """The header route's ALB action: forward to the one slot's Service (the canary; stable after a
    rollback)."""
    assert plan.header_route is not None
    group = {"serviceName": f"{service}-{plan.header_route.slot}", "servicePort": "80", "weight": 100}
    return json.dumps({"type": "forward", "forwardConfig": {"targetGroups": [group]}}, sort_keys=True)


def _hostname(status: Any) -> str:
    ingress = status.load_balancer.ingress if status and status.load_balancer else None
    return (ingress[0].hostname or "") if ingress else ""


class EksService(pulumi.ComponentResource):
    """One service on EKS: namespace, service account, one Deployment+HPA+PDB per slot, routing."""

    endpoints: TargetEndpoints

    def __init__(self, name: str, args: EksServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pouw:index:EksService", name, None, opts)
        svc = args.service
        plan = args.plan
        k8s = pulumi.ResourceOptions(parent=self, provider=args.provider)
        ns = service_namespace(name, svc, k8s)
        network_policies(name, svc, ns, k8s, args.ingress_cidrs)
        workloads = slot_workloads(name, svc, plan, args.images, ns, k8s)
        # Routing changes only once every workload is ready (a new slot's pods first).
        routing = pulumi.ResourceOptions.merge(k8s, pulumi.ResourceOptions(depends_on=workloads))
        slot_services(name, svc, plan, ns, routing)
        annotations = alb_annotations(args.settings, svc, args.environment, args.web_acl_arn)
        backend: networking.IngressBackendArgsDict = {"service": {"name": svc.name, "port": {"number": 80}}}
        paths: list[networking.HTTPIngressPathArgsDict] = []
        if plan.weighted:
            action = f"{svc.name}-weighted"
            annotations[f"alb.ingress.kubernetes.io/actions.{action}"] = weighted_action(svc.name, plan)
            backend = {"service": {"name": action, "port": {"name": "use-annotation"}}}
        if plan.header_route is not None:
            # The A/B rule comes first. From v2.4.3 the controller orders an Ingress's paths Exact first,
            # then Prefix by length, longest first, with a stable sort (kubernetes-sigs/
            # aws-load-balancer-controller pkg/ingress/model_build_listener_rules.go, sortIngressPaths;
            # docs guide/ingress/spec): two `/` Prefix paths keep their order, and priorities follow it.
            header = f"{svc.name}-header"
            annotations[f"alb.ingress.kubernetes.io/conditions.{header}"] = header_conditions(plan)
            annotations[f"alb.ingress.kubernetes.io/actions.{header}"] = header_action(svc.name, plan)
            paths.append(
                {
                    "path": "/",
                    "path_type": "Prefix",
                    "backend": {"service": {"name": header, "port": {"name": "use-annotation"}}},
                }
            )
        paths.append({"path": "/", "path_type": "Prefix", "backend": backend})
        ingress_spec: networking.IngressSpecArgsDict = {
            "ingress_class_name": "alb",
            "rules": [{"http": {"paths": paths}}],
        }
        ingress = networking.Ingress(
            f"{name}-ingress",
            metadata=metadata(svc.name, ns, labels(svc.name), annotations),
            spec=ingress_spec,
            opts=routing,
        )
        scheme = "https" if args.settings.certificate_arn else "http"
        url = ingress.status.apply(_hostname).apply(
            lambda host: f"{scheme}://{host}" if host else "(ALB hostname known after pulumi up)"
        )
        preview = f"http://{svc.name}-preview.{svc.name}.svc.cluster.local" if plan.preview_slot else None
        self.endpoints = TargetEndpoints(
            url=url, preview_url=preview, weights=plan.weights, images=dict(args.images)
        )
        self.register_outputs(self.endpoints.as_outputs())


class EksTarget(Target):
    """EKS: the environment's hardened cluster (in the shared VPC), a Deployment per slot, routing by
    Service selector (blue-green) or ALB-weighted Ingress actions (canary)."""

    key = "eks"
    settings_key = "eks"
    settings_model = EksSettings
    registry = "ecr"
    needs_network = True
    workload_types = WORKLOAD_TYPES
    routing_types = frozenset({"kubernetes:core/v1:Service", "kubernetes:networking.k8s.io/v1:Ingress"})
    header_match_forms = ALB_HEADER_MATCH_FORMS
    header_name_max = ALB_HEADER_NAME_MAX

    def __init__(self, ctx: StackContext) -> None:
        super().__init__(ctx)
        s = ctx.settings
        assert s.eks is not None and ctx.network is not None  # settings validation guarantees both
        self.settings = s.eks
        self.cluster_args = EksClusterArgs(
            settings=s.eks,
            network=ctx.network,
            cluster_name=ctx.cluster_name,
            public_endpoint=s.eks.public_endpoint(s.is_prod),
            tags=s.tags(),
            protect=ctx.protect,
            encrypt_logs=s.is_prod,
            waf=s.eks.waf_on(s.is_prod),
            permissions_boundary=ctx.boundary,
        )
        self.cluster = EksCluster("eks", self.cluster_args)
        verification = Verification.of(s, self.key, ctx.secret)
        ecr = ctx.registries.get("ecr")
        self.admission = None
        if verification is not None and isinstance(ecr, EcrRegistry):
            arns = [ecr.repository(service).repository.arn for service in verification.services]
            self.admission = self.cluster.verify_signatures("eks", verification, arns, self.cluster_args)

    def deploy(
        self, service: ServiceSettings, plan: RolloutPlan, images: Mapping[str, pulumi.Input[str]]
    ) -> TargetEndpoints:
        return EksService(
            f"{service.name}-eks",
            EksServiceArgs(
                service=service,
                plan=plan,
                images=images,
                provider=self.cluster.provider,
                settings=self.settings,
                environment=self.ctx.settings.environment,
                web_acl_arn=self.cluster.web_acl_arn,
                ingress_cidrs=(self.ctx.settings.network.cidr,) if self.ctx.settings.network else (),
            ),
        ).endpoints
