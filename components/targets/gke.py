"""The GKE target: a private, hardened regional cluster, and one rollout-driven workload set per
service through the shared Kubernetes layer.

The cluster: private nodes (no external addresses) in a VPC of its own, a control plane whose public
endpoint admits only this stack's AWS NAT egress (where the in-network CI runners run pulumi) and the
configured ranges, Workload Identity, shielded nodes with secure boot, a release channel, legacy ABAC
off, no client certificates, Dataplane V2 (which enforces NetworkPolicy), and the Gateway API. Nodes run
as a service account of their own with the default-node role and Artifact Registry reader on the
environment's repository only: that is the pull identity.

Routing: the Gateway API through GKE's own Gateway controller, class `gke-l7-regional-external-managed`
(or `gke-l7-rilb` when internal): a regional Application Load Balancer in the cluster's region, so
traffic and its logs stay in the region the stack names, and its proxies reach pods from the
proxy-only subnet this module makes, which is a range the NetworkPolicy can name. Blue-green switches
the stable Service's selector (the HTTPRoute points at it and never changes); canary weights are the
HTTPRoute's `backendRefs` weights over the per-slot Services. A traffic shift changes only the route
(and HPA bounds), never a pod template.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Literal

import pulumi
import pulumi_gcp.artifactregistry as artifactregistry
import pulumi_gcp.compute as compute
import pulumi_gcp.container as container
import pulumi_gcp.projects as projects
import pulumi_gcp.serviceaccount as serviceaccount
from pulumi_kubernetes.apiextensions import CustomResource
from pulumi_kubernetes.provider import Provider
from pydantic import Field, model_validator

from components.admission import (
    ADMISSION_SERVICE_ACCOUNT,
    KYVERNO_NAMESPACE,
    WEBHOOK_PORT,
    Kyverno,
    KyvernoArgs,
    Verification,
)
from components.permissions import ADMISSION_ROLES
from components.registry import ArtifactRegistry
from components.rollout import Model as _Model
from components.rollout import RolloutPlan
from components.schema import _CIDR, GcpSettings, ServiceSettings, _matching
from components.targets.base import Target, TargetEndpoints
from components.targets.kubernetes import (
    GATEWAY_HEADER_MATCH_FORMS,
    GATEWAY_ROUTING_TYPES,
    WORKLOAD_TYPES,
    backend_services,
    gateway,
    http_route,
    labels,
    metadata,
    network_policies,
    service_namespace,
    slot_services,
    slot_workloads,
)

if TYPE_CHECKING:
    from components.context import StackContext


_GKE_MACHINE_TYPE = _matching(
    r"^[a-z][a-z0-9]*-[a-z0-9-]+$", "must be a Compute Engine machine type such as e2-standard-4"
)


class GkeNodePoolSettings(_Model):
    """The GKE node pool: per zone of the regional cluster (three zones)."""

    machine_type: Annotated[str, _GKE_MACHINE_TYPE] = "e2-standard-4"
    min_nodes_per_zone: Annotated[int, Field(ge=1, le=100)] = 1
    max_nodes_per_zone: Annotated[int, Field(ge=1, le=100)] = 3
    disk_size_gb: Annotated[int, Field(ge=20, le=1000)] = 50

    @model_validator(mode="after")
    def _ordered(self) -> GkeNodePoolSettings:
        if self.max_nodes_per_zone < self.min_nodes_per_zone:
            raise ValueError(
                f"maxNodesPerZone ({self.max_nodes_per_zone}) is below minNodesPerZone "
                f"({self.min_nodes_per_zone}); raise maxNodesPerZone"
            )
        return self


class GkeSettings(_Model):
    """A private, regional GKE cluster per environment (components/targets/gke.py).

    Nodes are always private. The control plane's public endpoint admits only this stack's AWS NAT
    egress (the in-network CI runners) and `authorizedCidrs`; `privateEndpoint: true` turns it off
    (then only callers inside the GKE VPC reach the API: the AWS runners cannot)."""

    # Unset: STABLE in prod, REGULAR elsewhere.
    release_channel: Literal["RAPID", "REGULAR", "STABLE"] | None = None
    authorized_cidrs: tuple[Annotated[str, _CIDR], ...] = ()
    private_endpoint: bool = False
    nodes: GkeNodePoolSettings = Field(default_factory=GkeNodePoolSettings)
    # The cluster's VPC: nodes, pods and services (secondary ranges), the control plane's peering range,
    # and the regional load balancers' proxy-only subnet (where Gateway traffic reaches pods from).
    nodes_cidr: Annotated[str, _CIDR] = "10.50.0.0/20"
    pods_cidr: Annotated[str, _CIDR] = "10.64.0.0/14"
    services_cidr: Annotated[str, _CIDR] = "10.68.0.0/20"
    master_cidr: Annotated[str, _CIDR] = "172.16.0.0/28"
    proxy_cidr: Annotated[str, _CIDR] = "10.50.16.0/23"
    # A regional internal Application Load Balancer (gke-l7-rilb) instead of the external one.
    internal: bool = False
    # A Certificate Manager regional certificate (name): the Gateway then listens on HTTPS 443 only.
    certificate: str | None = None

    def channel(self, prod: bool) -> str:
        """Explicit, or STABLE in prod, REGULAR elsewhere (`prod`: the stack is prod)."""
        return self.release_channel or ("STABLE" if prod else "REGULAR")


EXTERNAL_GATEWAY_CLASS = "gke-l7-regional-external-managed"
INTERNAL_GATEWAY_CLASS = "gke-l7-rilb"
# Google's load balancer health checkers (cloud.google.com/load-balancing/docs/health-check-concepts).
HEALTH_CHECK_RANGES = ("35.191.0.0/16", "130.211.0.0/22")
# The least-privilege role Google publishes for node service accounts (logs, metrics, metadata).
NODE_ROLE = "roles/container.defaultNodeServiceAccount"
PULL_ROLE = "roles/artifactregistry.reader"
PODS_RANGE = "pods"
SERVICES_RANGE = "services"


def kubeconfig(endpoint: str, ca_data: str, cluster_name: str) -> str:
    """A kubeconfig that authenticates with gke-gcloud-auth-plugin (the deployer's Google identity)."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": cluster_name,
                    "cluster": {"server": f"https://{endpoint}", "certificate-authority-data": ca_data},
                }
            ],
            "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
            "current-context": cluster_name,
            "users": [
                {
                    "name": cluster_name,
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "gke-gcloud-auth-plugin",
                            "provideClusterInfo": True,
                            "installHint": "gcloud components install gke-gcloud-auth-plugin",
                        }
                    },
                }
            ],
        }
    )


@dataclass(frozen=True)
class GkeClusterArgs:
    settings: GkeSettings
    gcp: GcpSettings
    cluster_name: str
    release_channel: str
    registry: ArtifactRegistry  # the pull identity reads this repository only
    # Who reaches the public control-plane endpoint: this stack's NAT egress addresses and ranges.
    authorized_ips: Sequence[pulumi.Input[str]] = ()
    labels: dict[str, str] = field(default_factory=dict)
    protect: bool = False


class GkeCluster(pulumi.ComponentResource):
    """A private regional GKE Standard cluster in its own VPC, with one autoscaled node pool.

    `provider` is the Kubernetes provider every workload uses.
    """

    provider: Provider
    node_account_email: pulumi.Output[str]

    def __init__(self, name: str, args: GkeClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pouw:index:GkeCluster", name, None, opts)
        s = args.settings
        project, region = args.gcp.project, args.gcp.region
        child = pulumi.ResourceOptions(parent=self)
        stateful = pulumi.ResourceOptions(parent=self, protect=args.protect)

        network = compute.Network(
            f"{name}-vpc",
            name=args.cluster_name,
            project=project,
            auto_create_subnetworks=False,
            routing_mode="REGIONAL",
            opts=stateful,
        )
        subnet = compute.Subnetwork(
            f"{name}-nodes",
            name=f"{args.cluster_name}-nodes",
            project=project,
            region=region,
            network=network.id,
            ip_cidr_range=s.nodes_cidr,
            private_ip_google_access=True,  # private nodes pull from Artifact Registry this way
            secondary_ip_ranges=[
                {"range_name": PODS_RANGE, "ip_cidr_range": s.pods_cidr},
                {"range_name": SERVICES_RANGE, "ip_cidr_range": s.services_cidr},
            ],
            log_config={"aggregation_interval": "INTERVAL_5_SEC", "flow_sampling": 0.5},
            opts=stateful,
        )
        # The regional load balancers' Envoy proxies run here; Gateway traffic reaches pods from it.
        compute.Subnetwork(
            f"{name}-proxy-only",
            name=f"{args.cluster_name}-proxy-only",
            project=project,
            region=region,
            network=network.id,
            ip_cidr_range=s.proxy_cidr,
            purpose="REGIONAL_MANAGED_PROXY",
            role="ACTIVE",
            opts=stateful,
        )

        account = serviceaccount.Account(
            f"{name}-nodes",
            account_id=f"{args.cluster_name}-nodes",
            project=project,
            display_name=f"GKE nodes of {args.cluster_name}",
            opts=child,
        )
        self.node_account = account
        self.network = network
        self.args = args
        self.node_account_email = account.email
        member = account.email.apply(lambda email: f"serviceAccount:{email}")
        node_role = projects.IAMMember(
            f"{name}-nodes-role", project=project, role=NODE_ROLE, member=member, opts=child
        )
        # The pull identity: read-only on the environment's repository, nothing project-wide.
        pull = artifactregistry.RepositoryIamMember(
            f"{name}-nodes-pull",
            project=project,
            location=region,
            repository=args.registry.repository.repository_id,
            role=PULL_ROLE,
            member=member,
            opts=child,
        )

        authorized: list[container.ClusterMasterAuthorizedNetworksConfigCidrBlockArgsDict] = [
            {"cidr_block": pulumi.Output.from_input(ip).apply(_as_cidr), "display_name": "pouw-cicd"}
            for ip in args.authorized_ips
        ]
        self.cluster = container.Cluster(
            name,
            name=args.cluster_name,
            project=project,
            location=region,  # regional: a control plane replica and nodes in each zone
            network=network.id,
            subnetwork=subnet.id,
            remove_default_node_pool=True,
            initial_node_count=1,
            deletion_protection=args.protect,
            release_channel={"channel": args.release_channel},
            networking_mode="VPC_NATIVE",
            ip_allocation_policy={
                "cluster_secondary_range_name": PODS_RANGE,
                "services_secondary_range_name": SERVICES_RANGE,
            },
            private_cluster_config={
                "enable_private_nodes": True,
                "enable_private_endpoint": s.private_endpoint,
                "master_ipv4_cidr_block": s.master_cidr,
            },
            master_authorized_networks_config={
                "cidr_blocks": authorized,
                "gcp_public_cidrs_access_enabled": False,
            },
            master_auth={"client_certificate_config": {"issue_client_certificate": False}},
            workload_identity_config={"workload_pool": f"{project}.svc.id.goog"},
            enable_shielded_nodes=True,
            enable_legacy_abac=False,
            enable_intranode_visibility=True,
            # Dataplane V2 (eBPF) enforces NetworkPolicy itself (no network_policy addon with it).
            datapath_provider="ADVANCED_DATAPATH",
            gateway_api_config={"channel": "CHANNEL_STANDARD"},
            security_posture_config={"mode": "BASIC", "vulnerability_mode": "VULNERABILITY_BASIC"},
            logging_config={"enable_components": ["SYSTEM_COMPONENTS", "WORKLOADS", "APISERVER"]},
            resource_labels=args.labels,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect, depends_on=[node_role, pull]),
        )
        container.NodePool(
            f"{name}-nodes",
            name="default",
            project=project,
            location=region,
            cluster=self.cluster.name,
            initial_node_count=s.nodes.min_nodes_per_zone,
            autoscaling={
                "min_node_count": s.nodes.min_nodes_per_zone,
                "max_node_count": s.nodes.max_nodes_per_zone,
            },
            management={"auto_repair": True, "auto_upgrade": True},
            upgrade_settings={"max_surge": 1, "max_unavailable": 0},
            node_config={
                "machine_type": s.nodes.machine_type,
                "disk_size_gb": s.nodes.disk_size_gb,
                "disk_type": "pd-balanced",
                "image_type": "COS_CONTAINERD",
                "service_account": account.email,
                "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"],  # IAM decides
                "workload_metadata_config": {"mode": "GKE_METADATA"},
                "shielded_instance_config": {"enable_secure_boot": True, "enable_integrity_monitoring": True},
                "metadata": {"disable-legacy-endpoints": "true"},
                "resource_labels": args.labels,
            },
            opts=child,
        )

        config = pulumi.Output.all(self.cluster.endpoint, self.cluster.master_auth).apply(
            lambda a: kubeconfig(
                a[0] or "", (a[1].cluster_ca_certificate if a[1] else None) or "", args.cluster_name
            )
        )
        secret_config: pulumi.Output[str] = pulumi.Output.secret(config)
        self.provider = Provider(
            f"{name}-k8s", kubeconfig=secret_config, delete_unreachable=False, opts=child
        )
        self.register_outputs(
            {"clusterName": self.cluster.name, "nodeServiceAccount": self.node_account_email}
        )

    def verify_signatures(self, name: str, verification: Verification) -> Kyverno:
        """Kyverno, whose admission controller reads the environment's repository as a Google service
        account of its own (Workload Identity; the permission table's ADMISSION_ROLES), and a firewall
        rule that lets the private control plane call its webhook: GKE's firewall admits the control
        plane to the nodes on 443 and 10250 only, so without it every pod admission times out (GKE,
        "Adding firewall rules for specific use cases": cloud.google.com/kubernetes-engine/docs/how-to/
        private-clusters#add_firewall_rules)."""
        args = self.args
        project, region = args.gcp.project, args.gcp.region
        child = pulumi.ResourceOptions(parent=self)
        account = serviceaccount.Account(
            f"{name}-kyverno",
            account_id=f"{args.cluster_name}-admit",
            project=project,
            display_name=f"Kyverno admission on {args.cluster_name} (reads image manifests)",
            opts=child,
        )
        member = account.email.apply(lambda email: f"serviceAccount:{email}")
        read = artifactregistry.RepositoryIamMember(
            f"{name}-kyverno-read",
            project=project,
            location=region,
            repository=args.registry.repository.repository_id,
            role=ADMISSION_ROLES["gcp"],
            member=member,
            opts=child,
        )
        federated = serviceaccount.IAMMember(
            f"{name}-kyverno-workload-identity",
            service_account_id=account.name,
            role="roles/iam.workloadIdentityUser",
            member=f"serviceAccount:{project}.svc.id.goog[{KYVERNO_NAMESPACE}/{ADMISSION_SERVICE_ACCOUNT}]",
            opts=child,
        )
        webhook = compute.Firewall(
            f"{name}-kyverno-webhook",
            name=f"{args.cluster_name}-kyverno-webhook",
            project=project,
            network=self.network.id,
            direction="INGRESS",
            source_ranges=[args.settings.master_cidr],
            target_service_accounts=[self.node_account_email],
            allows=[{"protocol": "tcp", "ports": [str(WEBHOOK_PORT)]}],
            description="GKE control plane to the Kyverno admission webhook",
            opts=child,
        )
        return Kyverno(
            f"{name}-kyverno",
            KyvernoArgs(
                provider=self.provider,
                verification=verification,
                credentials="google",
                annotations={"iam.gke.io/gcp-service-account": account.email},
                depends_on=[read, federated, webhook],
            ),
            opts=child,
        )


def _as_cidr(ip: str) -> str:
    """A NAT address (`52.0.0.1`) as the /32 authorized networks take; ranges stay as they are."""
    return ip if "/" in ip else f"{ip}/32"


@dataclass(frozen=True)
class GkeServiceArgs:
    service: ServiceSettings
    plan: RolloutPlan
    images: Mapping[str, pulumi.Input[str]]  # slot name -> digest-pinned image ref
    provider: Provider
    settings: GkeSettings


def health_check_policy(
    name: str, svc: ServiceSettings, backend: str, ns: pulumi.Input[str], routing: pulumi.ResourceOptions
) -> CustomResource:
    """The load balancer's health check of one backend Service: the service's health path (GKE's
    Gateway would otherwise probe `/`)."""
    return CustomResource(
        f"{name}-health-{backend}",
        api_version="networking.gke.io/v1",
        kind="HealthCheckPolicy",
        metadata=metadata(backend, ns, labels(svc.name)),
        spec={
            "default": {
                "config": {
                    "type": "HTTP",
                    "httpHealthCheck": {
                        "requestPath": svc.health_path,
                        "portSpecification": "USE_SERVING_PORT",
                    },
                }
            },
            "targetRef": {"group": "", "kind": "Service", "name": backend},
        },
        opts=routing,
    )


class GkeService(pulumi.ComponentResource):
    """One service on GKE: the shared workload layer, a Gateway and a weighted HTTPRoute."""

    endpoints: TargetEndpoints

    def __init__(self, name: str, args: GkeServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pouw:index:GkeService", name, None, opts)
        svc, plan, s = args.service, args.plan, args.settings
        k8s = pulumi.ResourceOptions(parent=self, provider=args.provider)
        ns = service_namespace(name, svc, k8s)
        network_policies(name, svc, ns, k8s, [s.proxy_cidr, *HEALTH_CHECK_RANGES])
        workloads = slot_workloads(name, svc, plan, args.images, ns, k8s)
        # Routing changes only once every workload is ready (a new slot's pods first).
        routing = pulumi.ResourceOptions.merge(k8s, pulumi.ResourceOptions(depends_on=workloads))
        slot_services(name, svc, plan, ns, routing)
        for backend in backend_services(svc, plan):
            health_check_policy(name, svc, backend, ns, routing)
        if s.certificate:
            listener = {
                "name": "https",
                "protocol": "HTTPS",
                "port": 443,
                "tls": {
                    "mode": "Terminate",
                    "options": {"networking.gke.io/cert-manager-certs": s.certificate},
                },
            }
        else:
            listener = {"name": "http", "protocol": "HTTP", "port": 80}
        class_name = INTERNAL_GATEWAY_CLASS if s.internal else EXTERNAL_GATEWAY_CLASS
        gateway(name, svc, ns, class_name, listener, routing)
        http_route(name, svc, plan, ns, routing)
        scheme = "https" if s.certificate else "http"
        preview = f"http://{svc.name}-preview.{svc.name}.svc.cluster.local" if plan.preview_slot else None
        self.endpoints = TargetEndpoints(
            url=f"{scheme}://(Gateway {svc.name} address known after pulumi up)",
            preview_url=preview,
            weights=plan.weights,
            images=dict(args.images),
        )
        self.register_outputs(self.endpoints.as_outputs())


# What the deploy identity manages with project-level permissions: GCP has no resource-level IAM for
# creating clusters, node pools, networks and subnetworks. components/ci.py grants exactly the table's
# permissions for these (a custom role, components/permissions.py), never roles/container.admin.
PROJECT_SCOPED_TYPES = frozenset(
    {
        "gcp:container/cluster:Cluster",
        "gcp:container/nodePool:NodePool",
        "gcp:compute/network:Network",
        "gcp:compute/subnetwork:Subnetwork",
        "gcp:compute/firewall:Firewall",  # the control plane's way to the Kyverno webhook
    }
)


class GkeTarget(Target):
    """GKE: the environment's private regional cluster, a Deployment per slot, routing by Service
    selector (blue-green) or Gateway API HTTPRoute weights (canary)."""

    key = "gke"
    settings_key = "gke"
    settings_model = GkeSettings
    registry = "artifactRegistry"
    workload_types = WORKLOAD_TYPES
    routing_types = GATEWAY_ROUTING_TYPES
    header_match_forms = GATEWAY_HEADER_MATCH_FORMS

    def __init__(self, ctx: StackContext) -> None:
        super().__init__(ctx)
        s = ctx.settings
        registry = ctx.registries.get("artifactRegistry")
        # settings validation guarantees all three (gke needs gcp; a gke service needs the registry)
        assert s.gke is not None and s.gcp is not None and isinstance(registry, ArtifactRegistry)
        self.settings = s.gke
        nat = ctx.network.nat_public_ips if ctx.network is not None else []
        self.cluster = GkeCluster(
            "gke",
            GkeClusterArgs(
                settings=s.gke,
                gcp=s.gcp,
                cluster_name=ctx.cluster_name,
                release_channel=s.gke.channel(s.is_prod),
                registry=registry,
                authorized_ips=[*nat, *s.gke.authorized_cidrs],
                labels=s.labels(),
                protect=ctx.protect,
            ),
        )
        verification = Verification.of(s, self.key, ctx.secret)
        self.admission = (
            self.cluster.verify_signatures("gke", verification) if verification is not None else None
        )

    def deploy(
        self, service: ServiceSettings, plan: RolloutPlan, images: Mapping[str, pulumi.Input[str]]
    ) -> TargetEndpoints:
        return GkeService(
            f"{service.name}-gke",
            GkeServiceArgs(
                service=service,
                plan=plan,
                images=images,
                provider=self.cluster.provider,
                settings=self.settings,
            ),
        ).endpoints
