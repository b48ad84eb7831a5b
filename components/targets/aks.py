"""The AKS target: a hardened cluster in the stack's resource group, and one rollout-driven workload
set per service through the shared Kubernetes layer.

The cluster: Entra ID only (managed Entra integration, Azure RBAC authorizes every Kubernetes call,
local accounts disabled, so no certificate or static token can reach the API), an API server whose
public endpoint admits only this stack's AWS NAT egress (where the in-network CI runners run pulumi),
the cluster's own egress and `aks.authorizedCidrs` (or a private cluster), the OIDC issuer and
workload identity, Azure CNI Overlay with Cilium (which enforces NetworkPolicy), a system pool that
runs only critical add-ons and an autoscaled user pool across zones, both without public node
addresses, an auto-upgrade channel and the Azure Policy add-on. Nodes leave through a NAT gateway
with one static address (made by the stack context, before the registry, whose firewall admits it):
the ACR's `selectedNetworks` rules let exactly that address pull. The kubelet runs as a user-assigned
identity with AcrPull on the environment's registry only: that is the pull identity.

Routing: Application Gateway for Containers (AGC) through the Gateway API. AGC's HTTPRoute weights are
the same model GKE uses (weighted `backendRefs` over per-slot Services), so the shared layer's Gateway
and HTTPRoute helpers serve both; the managed NGINX add-on (application routing) has only annotation
canaries, a second traffic model, and AGIC (Application Gateway Ingress Controller) is the legacy path
that AGC replaces. The AGC resource, its subnet association and each service's frontend are Azure
resources of this stack ("bring your own" deployment); the ALB Controller, installed from its Helm
chart with a workload identity of its own, programs them from the Gateways and routes. Blue-green
switches the stable Service's selector (the route points at it and never changes); canary weights are
the route's. A traffic shift changes only the route (and HPA bounds), never a pod template.

Access for `pulumi`: the Kubernetes provider's kubeconfig execs `kubelogin`, which exchanges the
runner's Entra identity for a token of the AKS server application; the pipeline identities hold AKS's
Azure RBAC data-plane roles (components/runners.py). The bootstrap identity that creates the cluster
needs the same (README, "AKS"): with Azure RBAC, a cluster's creator has no Kubernetes rights.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import pulumi
import pulumi_azure_native.authorization as authorization
import pulumi_azure_native.containerservice as containerservice
import pulumi_azure_native.managedidentity as managedidentity
import pulumi_azure_native.network as network
import pulumi_azure_native.servicenetworking as servicenetworking
import pulumi_kubernetes.core.v1 as core
import pulumi_kubernetes.helm.v3 as helm
from pulumi_kubernetes.provider import Provider
from pydantic import Field, model_validator

from components.admission import (
    ADMISSION_SERVICE_ACCOUNT,
    KYVERNO_NAMESPACE,
    Kyverno,
    KyvernoArgs,
    Verification,
)
from components.permissions import ADMISSION_ROLES
from components.registry import AcrRegistry
from components.rollout import Model as _Model
from components.rollout import RolloutPlan
from components.schema import (
    _CHART_VERSION,
    _CIDR,
    _KUBERNETES_VERSION,
    AzureSettings,
    ServiceSettings,
    _matching,
)
from components.targets.aci import ACR_PULL_ROLE
from components.targets.base import Target, TargetEndpoints
from components.targets.gke import _as_cidr as as_cidr
from components.targets.kubernetes import (
    GATEWAY_ROUTING_TYPES,
    WORKLOAD_TYPES,
    egress_only_policies,
    gateway,
    http_route,
    network_policies,
    secret_environment,
    service_namespace,
    slot_services,
    slot_workloads,
)

if TYPE_CHECKING:
    from components.context import StackContext


_AKS_VM_SIZE = _matching(r"^Standard_[A-Za-z0-9_]+$", "must be an Azure VM size such as Standard_D4ds_v5")
_AKS_ZONE = _matching(r"^[1-3]$", 'must be an availability zone number: "1", "2" or "3" (quoted)')
_K8S_SECRET_NAME = _matching(
    r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$",
    "must be a Kubernetes Secret name: lowercase letters, digits, '-' or '.', e.g. web-tls",
)


class AksNodePoolSettings(_Model):
    """An AKS node pool: autoscaled between minCount and maxCount nodes, spread over the cluster's zones."""

    vm_size: Annotated[str, _AKS_VM_SIZE] = "Standard_D4ds_v5"
    min_count: Annotated[int, Field(ge=1, le=100)] = 2
    max_count: Annotated[int, Field(ge=1, le=100)] = 4
    # Ephemeral: the OS disk lives on the VM's local storage (nothing persisted to Azure Storage, faster
    # reimages); it needs a size with local storage of at least osDiskSizeGb (the `d` of Dds_v5).
    os_disk_type: Literal["Ephemeral", "Managed"] = "Ephemeral"
    os_disk_size_gb: Annotated[int, Field(ge=30, le=2048)] = 64

    @model_validator(mode="after")
    def _ordered(self) -> AksNodePoolSettings:
        if self.max_count < self.min_count:
            raise ValueError(
                f"maxCount ({self.max_count}) is below minCount ({self.min_count}); raise maxCount"
            )
        return self


def _system_pool() -> AksNodePoolSettings:
    return AksNodePoolSettings(vm_size="Standard_D2ds_v5", min_count=1, max_count=3)


class AksSettings(_Model):
    """A hardened AKS cluster per environment (components/targets/aks.py).

    Entra ID only (no local accounts; Azure RBAC authorizes Kubernetes calls), nodes without public
    addresses behind a NAT gateway, Cilium enforcing NetworkPolicy. The API server's public endpoint
    admits only this stack's AWS NAT egress (the in-network CI runners), the cluster's own egress and
    `authorizedCidrs`; `privateCluster: true` turns it off (then only callers inside the AKS VNet reach
    the API: the AWS runners cannot)."""

    kubernetes_version: Annotated[str, _KUBERNETES_VERSION] = "1.33"
    # AKS auto-upgrade channel. Unset: stable in prod (one minor behind the latest), patch elsewhere.
    # stable and rapid move the minor themselves: raise kubernetesVersion when AKS has (a cluster update
    # that names an older minor is refused as a downgrade).
    upgrade_channel: Literal["patch", "stable", "rapid"] | None = None
    authorized_cidrs: tuple[Annotated[str, _CIDR], ...] = ()
    private_cluster: bool = False
    zones: Annotated[tuple[Annotated[str, _AKS_ZONE], ...], Field(min_length=1, max_length=3)] = (
        "1",
        "2",
        "3",
    )
    # The system pool runs only the cluster's critical add-ons (CriticalAddonsOnly taint); services run
    # on `nodes`.
    system_nodes: AksNodePoolSettings = Field(default_factory=_system_pool)
    nodes: AksNodePoolSettings = Field(default_factory=AksNodePoolSettings)
    # The cluster's VNet: the nodes' subnet, the subnet delegated to Application Gateway for Containers
    # (at least a /24; Gateway traffic reaches pods from it), and the overlay's pod and service ranges.
    vnet_cidr: Annotated[str, _CIDR] = "10.70.0.0/16"
    nodes_cidr: Annotated[str, _CIDR] = "10.70.0.0/22"
    gateway_cidr: Annotated[str, _CIDR] = "10.70.8.0/24"
    pods_cidr: Annotated[str, _CIDR] = "10.244.0.0/16"
    services_cidr: Annotated[str, _CIDR] = "10.72.0.0/16"
    # A kubernetes.io/tls Secret in each service's namespace (cert-manager, or synced from Key Vault): the
    # Gateway then listens on HTTPS 443 only. Unset: HTTP 80.
    certificate_secret: Annotated[str, _K8S_SECRET_NAME] | None = None
    # Unset: Standard (the financially backed API server SLA) in prod, Free elsewhere.
    tier: Literal["Free", "Standard"] | None = None
    # The ALB Controller chart that programs Application Gateway for Containers (its release notes:
    # learn.microsoft.com/azure/application-gateway/for-containers/alb-controller-release-notes).
    alb_controller_version: Annotated[str, _CHART_VERSION] = "1.13.0"

    # Prod defaults, resolved here with the block they belong to (`prod`: the stack is prod).
    def channel(self, prod: bool) -> str:
        """Explicit, or stable in prod (one minor behind the newest, its latest patch), patch elsewhere
        (the newest patch of the pinned minor: staging meets a minor upgrade only when it is chosen)."""
        return self.upgrade_channel or ("stable" if prod else "patch")

    def sku_tier(self, prod: bool) -> str:
        """Explicit, or Standard in prod (the uptime SLA), Free elsewhere."""
        return self.tier or ("Standard" if prod else "Free")


# Built-in role definitions (learn.microsoft.com/azure/role-based-access-control/built-in-roles:
# Networking, Identity, Containers); the same ids in every tenant.
NETWORK_CONTRIBUTOR = "4d97b98b-1d4f-4787-a291-c67834d212e7"
# AppGw for Containers Configuration Manager
AGC_CONFIGURATION_MANAGER = "fbc52c3f-28ad-4303-a892-8a056630b8f1"
# The Entra application every AKS API server accepts tokens for ("Azure Kubernetes Service AAD Server",
# azure.github.io/kubelogin/concepts/aks.html).
AKS_SERVER_APP = "6dae42f8-4368-4678-94ff-3960e28e3630"
EXTERNAL_GATEWAY_CLASS = "azure-alb-external"
ALB_CHART = "oci://mcr.microsoft.com/application-lb/charts/alb-controller"
# The chart skips its own Namespace when the release is installed into the controller's namespace,
# so the stack makes it (baseline enforced, restricted audited, default-deny) and installs the
# release there.
ALB_NAMESPACE = "azure-alb-system"
ALB_SERVICE_ACCOUNT = "alb-controller-sa"
ALB_CREDENTIAL = "azure-alb-identity"  # the federated credential name the AGC quickstarts use
SYSTEM_POOL_TAINT = "CriticalAddonsOnly=true:NoSchedule"
NODES_SUBNET, GATEWAY_SUBNET = "nodes", "gateway"


def role_definition(role: str, subscription: str) -> str:
    return f"/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{role}"


def assign(
    name: str,
    role: str,
    scope: pulumi.Input[str],
    principal: pulumi.Input[str | None],
    subscription: pulumi.Output[str],
    parent: pulumi.Resource,
) -> authorization.RoleAssignment:
    """A built-in role for a managed identity on one resource (the deploy identity may assign only the
    roles in components/runners.py AZURE_ASSIGNED_ROLES, only to service principals)."""
    return authorization.RoleAssignment(
        name,
        scope=scope,
        principal_id=cast("pulumi.Input[str]", principal),  # known once the identity exists
        principal_type="ServicePrincipal",
        role_definition_id=subscription.apply(lambda sub: role_definition(role, sub)),
        opts=pulumi.ResourceOptions(parent=parent),
    )


def egress_address(
    name: str,
    resource_group_name: pulumi.Input[str],
    location: str,
    tags: Mapping[str, str],
    protect: bool,
) -> network.PublicIPAddress:
    """The one static, zone-redundant address AKS nodes reach the internet (and the ACR) from. The
    stack context makes it before the registry, which admits it; `AksCluster` puts it on its NAT
    gateway. In prod it is protected: others may allow-list it."""
    return network.PublicIPAddress(
        name,
        resource_group_name=resource_group_name,
        location=location,
        sku={"name": "Standard", "tier": "Regional"},
        public_ip_allocation_method="Static",
        public_ip_address_version="IPv4",
        zones=["1", "2", "3"],
        idle_timeout_in_minutes=4,
        tags=dict(tags),
        opts=pulumi.ResourceOptions(protect=protect),
    )


def address_of(egress: network.PublicIPAddress) -> pulumi.Output[str]:
    """The egress address, as the ACR's IP rules and the API server's authorized ranges take it (Azure
    assigns a Static address when it creates the resource: known from then on)."""
    return egress.ip_address.apply(lambda ip: ip or "")


def kubeconfig(user_kubeconfig: str | None, fqdn: str | None, cluster_name: str) -> str:
    """A kubeconfig that authenticates with `kubelogin get-token` (the runner's Entra identity).

    The server and CA come from the cluster's user credentials (on an Entra-only cluster they carry no
    secret: the CA and a kubelogin user, which this replaces); without them (a preview of a new
    cluster) the server is the cluster's FQDN. The login method is the runner's AAD_LOGIN_METHOD
    (kubelogin's documented environment variable): workloadidentity in CI (the workflows), azurecli by
    hand.
    """
    server, ca = _cluster_entry(user_kubeconfig)
    cluster: dict[str, Any] = {"server": server or f"https://{fqdn or cluster_name}:443"}
    if ca:
        cluster["certificate-authority-data"] = ca
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": cluster_name, "cluster": cluster}],
            "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
            "current-context": cluster_name,
            "users": [
                {
                    "name": cluster_name,
                    "user": {
                        "exec": {
                            "apiVersion": "client.authentication.k8s.io/v1beta1",
                            "command": "kubelogin",
                            "args": [
                                "get-token",
                                "--environment",
                                "AzurePublicCloud",
                                "--server-id",
                                AKS_SERVER_APP,
                            ],
                            "interactiveMode": "Never",
                            "installHint": "kubelogin: https://azure.github.io/kubelogin/install.html; set "
                            "AAD_LOGIN_METHOD=azurecli after `az login`",
                        }
                    },
                }
            ],
        }
    )


_SERVER = re.compile(r"^\s*server:\s*(\S+)\s*$", re.M)
_CA = re.compile(r"^\s*certificate-authority-data:\s*(\S+)\s*$", re.M)


def _cluster_entry(encoded: str | None) -> tuple[str | None, str | None]:
    """(server, CA data) of the one cluster in the base64 kubeconfig `listClusterUserCredential` returns
    (AKS writes both as plain `key: value` lines)."""
    if not encoded:
        return None, None
    try:
        text = base64.b64decode(encoded).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    server, ca = _SERVER.search(text), _CA.search(text)
    return (server.group(1) if server else None), (ca.group(1) if ca else None)


def dns_service_ip(services_cidr: str) -> str:
    """The cluster DNS Service's address: the tenth of the service range (AKS's own convention)."""
    return str(ipaddress.ip_network(services_cidr, strict=False).network_address + 10)


def agent_pool(
    name: str,
    mode: str,
    pool: AksNodePoolSettings,
    zones: Sequence[str],
    subnet_id: pulumi.Input[str],
    taints: Sequence[str] = (),
) -> containerservice.ManagedClusterAgentPoolProfileArgsDict:
    """An autoscaled scale-set pool across the zones, Azure Linux, no public node addresses."""
    profile: containerservice.ManagedClusterAgentPoolProfileArgsDict = {
        "name": name,
        "mode": mode,
        "type": "VirtualMachineScaleSets",
        "vm_size": pool.vm_size,
        "os_type": "Linux",
        "os_sku": "AzureLinux",
        "os_disk_type": pool.os_disk_type,
        "os_disk_size_gb": pool.os_disk_size_gb,
        "enable_auto_scaling": True,
        "count": pool.min_count,
        "min_count": pool.min_count,
        "max_count": pool.max_count,
        "availability_zones": list(zones),
        "vnet_subnet_id": subnet_id,
        "enable_node_public_ip": False,
        "max_pods": 110,
        "upgrade_settings": {"max_surge": "33%"},
    }
    if taints:
        profile["node_taints"] = list(taints)
    return profile


@dataclass(frozen=True)
class AksClusterArgs:
    settings: AksSettings
    azure: AzureSettings
    resource_group_name: pulumi.Input[str]
    cluster_name: str
    upgrade_channel: str
    tier: str
    registry: AcrRegistry  # the pull identity reads this registry only
    egress: network.PublicIPAddress  # the nodes' one outbound address (the stack context's)
    # Who reaches the API server's public endpoint: this stack's NAT egress addresses and ranges.
    authorized_ips: Sequence[pulumi.Input[str]] = ()
    tags: dict[str, str] = field(default_factory=dict)
    protect: bool = False


class AksCluster(pulumi.ComponentResource):
    """An AKS cluster in a VNet of its own, its AGC resource and the ALB Controller that programs it.

    `provider` is the Kubernetes provider every workload uses; `traffic_controller` the AGC resource
    each service adds a frontend to; `controller` the ALB Controller release (it installs the Gateway
    API definitions the services' Gateways need).
    """

    provider: Provider
    traffic_controller: servicenetworking.TrafficControllerInterface
    controller: helm.Release

    def __init__(self, name: str, args: AksClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pouw:index:AksCluster", name, None, opts)
        s, rg, location = args.settings, args.resource_group_name, args.azure.location
        tags = args.tags
        child = pulumi.ResourceOptions(parent=self)
        stateful = pulumi.ResourceOptions(parent=self, protect=args.protect)
        subscription = authorization.get_client_config_output(
            opts=pulumi.InvokeOutputOptions(parent=self)
        ).subscription_id

        nat = network.NatGateway(
            f"{name}-nat",
            nat_gateway_name=f"{args.cluster_name}-aks",
            resource_group_name=rg,
            location=location,
            sku={"name": "Standard"},
            public_ip_addresses=[{"id": args.egress.id}],
            idle_timeout_in_minutes=4,
            tags=tags,
            opts=child,
        )
        vnet = network.VirtualNetwork(
            f"{name}-vnet",
            virtual_network_name=f"{args.cluster_name}-aks",
            resource_group_name=rg,
            location=location,
            address_space={"address_prefixes": [s.vnet_cidr]},
            # Both subnets inline (a VNet update would otherwise drop subnets it does not list).
            subnets=[
                {
                    "name": NODES_SUBNET,
                    "address_prefix": s.nodes_cidr,
                    "nat_gateway": {"id": nat.id},
                    "default_outbound_access": False,  # the NAT gateway is the only way out
                },
                {
                    "name": GATEWAY_SUBNET,
                    "address_prefix": s.gateway_cidr,
                    "default_outbound_access": False,
                    "delegations": [
                        {"name": "agc", "service_name": "Microsoft.ServiceNetworking/trafficControllers"}
                    ],
                },
            ],
            tags=tags,
            opts=stateful,
        )
        nodes_subnet = vnet.id.apply(lambda vnet_id: f"{vnet_id}/subnets/{NODES_SUBNET}")
        gateway_subnet = vnet.id.apply(lambda vnet_id: f"{vnet_id}/subnets/{GATEWAY_SUBNET}")

        access: containerservice.ManagedClusterAPIServerAccessProfileArgsDict = (
            {"enable_private_cluster": True}
            if s.private_cluster
            else {
                "authorized_ip_ranges": [
                    pulumi.Output.from_input(ip).apply(as_cidr) for ip in args.authorized_ips
                ]
            }
        )
        self.cluster = containerservice.ManagedCluster(
            name,
            resource_name_=args.cluster_name,
            resource_group_name=rg,
            location=location,
            dns_prefix=args.cluster_name,
            kubernetes_version=s.kubernetes_version,
            sku={"name": "Base", "tier": args.tier},
            support_plan="KubernetesOfficial",
            identity={"type": containerservice.ResourceIdentityType.SYSTEM_ASSIGNED},
            aad_profile={"managed": True, "enable_azure_rbac": True},
            enable_rbac=True,
            disable_local_accounts=True,
            api_server_access_profile=access,
            oidc_issuer_profile={"enabled": True},
            security_profile={
                "workload_identity": {"enabled": True},
                "image_cleaner": {"enabled": True, "interval_hours": 48},
            },
            network_profile={
                "network_plugin": "azure",
                "network_plugin_mode": "overlay",
                "network_dataplane": "cilium",
                "network_policy": "cilium",  # Cilium enforces NetworkPolicy
                "pod_cidr": s.pods_cidr,
                "service_cidr": s.services_cidr,
                "dns_service_ip": dns_service_ip(s.services_cidr),
                "load_balancer_sku": "standard",
                "outbound_type": "userAssignedNATGateway",
            },
            agent_pool_profiles=[
                agent_pool("system", "System", s.system_nodes, s.zones, nodes_subnet, [SYSTEM_POOL_TAINT]),
                agent_pool("apps", "User", s.nodes, s.zones, nodes_subnet),
            ],
            auto_upgrade_profile={
                "upgrade_channel": args.upgrade_channel,
                "node_os_upgrade_channel": "NodeImage",
            },
            addon_profiles={"azurepolicy": {"enabled": True}},
            tags=tags,
            opts=stateful,
        )
        # The control plane (its system-assigned identity) joins the node subnet, whose NAT gateway it
        # configures; the kubelet identity AKS makes for the nodes (a user-assigned identity in the node
        # resource group) may pull from the registry and do nothing else.
        control_plane = self.cluster.identity.apply(lambda i: i.principal_id if i else None)
        kubelet = self.cluster.identity_profile.apply(
            lambda p: p["kubeletidentity"].object_id if p and "kubeletidentity" in p else None
        )
        grants = [
            assign(
                f"{name}-control-plane-subnet",
                NETWORK_CONTRIBUTOR,
                nodes_subnet,
                control_plane,
                subscription,
                self,
            ),
            assign(
                f"{name}-kubelet-pull", ACR_PULL_ROLE, args.registry.registry_id, kubelet, subscription, self
            ),
        ]

        credentials = containerservice.list_managed_cluster_user_credentials_output(
            resource_group_name=rg,
            resource_name=self.cluster.name,
            format="exec",
            opts=pulumi.InvokeOutputOptions(parent=self),
        )
        config = pulumi.Output.all(credentials.kubeconfigs, self.cluster.fqdn).apply(
            lambda a: kubeconfig(a[0][0].value if a[0] else None, a[1], args.cluster_name)
        )
        secret_config: pulumi.Output[str] = pulumi.Output.secret(config)
        # Workloads are made once their nodes may pull their images.
        self.provider = Provider(
            f"{name}-k8s",
            kubeconfig=secret_config,
            delete_unreachable=False,
            opts=pulumi.ResourceOptions(parent=self, depends_on=grants),
        )
        self.traffic_controller = self._gateway(name, args, gateway_subnet, subscription)
        self.args = args
        self.subscription = subscription
        self.register_outputs(
            {"clusterName": self.cluster.name, "trafficControllerId": self.traffic_controller.id}
        )

    def verify_signatures(self, name: str, verification: Verification) -> Kyverno:
        """Kyverno, whose admission controller reads the registry as a workload identity of its own
        (federated with its service account; AcrPull, the permission table's ADMISSION_ROLES, on the
        registry only), as the ALB Controller reads AGC."""
        args = self.args
        child = pulumi.ResourceOptions(parent=self)
        identity = managedidentity.UserAssignedIdentity(
            f"{name}-kyverno",
            resource_name_=f"{args.cluster_name}-aks-kyverno",
            resource_group_name=args.resource_group_name,
            location=args.azure.location,
            tags=args.tags,
            opts=child,
        )
        credential = managedidentity.FederatedIdentityCredential(
            f"{name}-kyverno",
            resource_name_=identity.name,
            resource_group_name=args.resource_group_name,
            federated_identity_credential_resource_name="kyverno-admission",
            issuer=self.cluster.oidc_issuer_profile.apply(lambda p: p.issuer_url if p else None),
            subject=f"system:serviceaccount:{KYVERNO_NAMESPACE}:{ADMISSION_SERVICE_ACCOUNT}",
            audiences=["api://AzureADTokenExchange"],
            opts=child,
        )
        pull = assign(
            f"{name}-kyverno-pull",
            ADMISSION_ROLES["azure"],
            args.registry.registry_id,
            identity.principal_id,
            self.subscription,
            self,
        )
        return Kyverno(
            f"{name}-kyverno",
            KyvernoArgs(
                provider=self.provider,
                verification=verification,
                credentials="azure",
                annotations={"azure.workload.identity/client-id": identity.client_id},
                pod_labels={"azure.workload.identity/use": "true"},
                depends_on=[credential, pull],
            ),
            opts=child,
        )

    def _gateway(
        self,
        name: str,
        args: AksClusterArgs,
        gateway_subnet: pulumi.Output[str],
        subscription: pulumi.Output[str],
    ) -> servicenetworking.TrafficControllerInterface:
        """The AGC resource, associated with the delegated subnet, and the ALB Controller: a workload
        identity federated with the cluster's OIDC issuer for the controller's service account, allowed
        to configure this AGC resource and join its subnet, nothing more."""
        rg, location, tags = args.resource_group_name, args.azure.location, args.tags
        child = pulumi.ResourceOptions(parent=self)
        traffic_controller = servicenetworking.TrafficControllerInterface(
            f"{name}-agc",
            traffic_controller_name=f"{args.cluster_name}-agc",
            resource_group_name=rg,
            location=location,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        servicenetworking.AssociationsInterface(
            f"{name}-agc-association",
            association_name=GATEWAY_SUBNET,
            traffic_controller_name=traffic_controller.name,
            resource_group_name=rg,
            location=location,
            association_type="subnets",
            subnet={"id": gateway_subnet},
            tags=tags,
            opts=child,
        )
        identity = managedidentity.UserAssignedIdentity(
            f"{name}-alb-controller",
            resource_name_=f"{args.cluster_name}-aks-alb-controller",
            resource_group_name=rg,
            location=location,
            tags=tags,
            opts=child,
        )
        issuer = self.cluster.oidc_issuer_profile.apply(lambda p: p.issuer_url if p else None)
        credential = managedidentity.FederatedIdentityCredential(
            f"{name}-alb-controller",
            resource_name_=identity.name,
            resource_group_name=rg,
            federated_identity_credential_resource_name=ALB_CREDENTIAL,
            issuer=issuer,
            subject=f"system:serviceaccount:{ALB_NAMESPACE}:{ALB_SERVICE_ACCOUNT}",
            audiences=["api://AzureADTokenExchange"],
            opts=child,
        )
        grants = [
            assign(
                f"{name}-alb-controller-agc",
                AGC_CONFIGURATION_MANAGER,
                traffic_controller.id,
                identity.principal_id,
                subscription,
                self,
            ),
            assign(
                f"{name}-alb-controller-subnet",
                NETWORK_CONTRIBUTOR,
                gateway_subnet,
                identity.principal_id,
                subscription,
                self,
            ),
        ]
        k8s = pulumi.ResourceOptions(parent=self, provider=self.provider)
        pss = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("audit", "warn")}
        pss["pod-security.kubernetes.io/enforce"] = "baseline"  # the chart's pods are Microsoft's
        namespace = core.Namespace(f"{name}-alb", metadata={"name": ALB_NAMESPACE, "labels": pss}, opts=k8s)
        # The controller only calls out: the API server, Entra ID and AGC's configuration endpoint (HTTPS).
        egress_only_policies(f"{name}-alb", namespace.metadata.name, k8s)
        self.controller = helm.Release(
            f"{name}-alb-controller",
            name="alb-controller",
            chart=ALB_CHART,
            version=args.settings.alb_controller_version,
            namespace=namespace.metadata.name,
            values={
                "albController": {"namespace": ALB_NAMESPACE, "podIdentity": {"clientID": identity.client_id}}
            },
            opts=pulumi.ResourceOptions.merge(k8s, pulumi.ResourceOptions(depends_on=[credential, *grants])),
        )
        return traffic_controller


@dataclass(frozen=True)
class AksServiceArgs:
    service: ServiceSettings
    plan: RolloutPlan
    images: Mapping[str, pulumi.Input[str]]  # slot name -> digest-pinned image ref
    cluster: AksCluster
    settings: AksSettings
    resource_group_name: pulumi.Input[str]
    location: str
    tags: dict[str, str] = field(default_factory=dict)
    # services[].azureSecureEnvironment: variable -> its secret value (as ACI gets it), read by the pods
    # from a Kubernetes Secret.
    secure_environment: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    protect: bool = False  # prod: the service's frontend (its FQDN, which users CNAME to) survives a rename


class AksService(pulumi.ComponentResource):
    """One service on AKS: the shared workload layer, an AGC frontend, a Gateway and a weighted HTTPRoute."""

    endpoints: TargetEndpoints

    def __init__(self, name: str, args: AksServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pouw:index:AksService", name, None, opts)
        svc, plan, s, cluster = args.service, args.plan, args.settings, args.cluster
        k8s = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        ns = service_namespace(name, svc, k8s)
        # AGC's proxies (and its health probes, which follow the pods' readiness probe) come from the
        # delegated subnet.
        network_policies(name, svc, ns, k8s, [s.gateway_cidr])
        secret_env = secret_environment(name, svc, args.secure_environment, ns, k8s)
        workloads = slot_workloads(name, svc, plan, args.images, ns, k8s, secret_env)
        # Routing changes only once every workload is ready (a new slot's pods first); the Gateway API
        # definitions come with the ALB Controller.
        routing = pulumi.ResourceOptions.merge(
            k8s, pulumi.ResourceOptions(depends_on=[*workloads, cluster.controller])
        )
        slot_services(name, svc, plan, ns, routing)
        frontend = servicenetworking.FrontendsInterface(
            f"{name}-frontend",
            frontend_name=svc.name,
            traffic_controller_name=cluster.traffic_controller.name,
            resource_group_name=args.resource_group_name,
            location=args.location,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        if s.certificate_secret:
            listener: dict[str, Any] = {
                "name": "https",
                "protocol": "HTTPS",
                "port": 443,
                "tls": {
                    "mode": "Terminate",
                    "certificateRefs": [{"kind": "Secret", "group": "", "name": s.certificate_secret}],
                },
            }
        else:
            listener = {"name": "http", "protocol": "HTTP", "port": 80}
        annotations: dict[str, Any] = {
            "alb.networking.azure.io/alb-id": cluster.traffic_controller.id,
            "alb.networking.azure.io/alb-frontend": svc.name,  # the frontend's name (frontend_name)
        }
        listening = pulumi.ResourceOptions.merge(routing, pulumi.ResourceOptions(depends_on=[frontend]))
        gateway(name, svc, ns, EXTERNAL_GATEWAY_CLASS, listener, listening, annotations)
        http_route(name, svc, plan, ns, routing)
        scheme = "https" if s.certificate_secret else "http"
        url = frontend.fqdn.apply(
            lambda fqdn: f"{scheme}://{fqdn}" if fqdn else "(AGC frontend FQDN known after pulumi up)"
        )
        preview = f"http://{svc.name}-preview.{svc.name}.svc.cluster.local" if plan.preview_slot else None
        self.endpoints = TargetEndpoints(
            url=url, preview_url=preview, weights=plan.weights, images=dict(args.images)
        )
        self.register_outputs(self.endpoints.as_outputs())


class AksTarget(Target):
    """AKS: the environment's hardened cluster, a Deployment per slot, routing by Service selector
    (blue-green) or Gateway API HTTPRoute weights on Application Gateway for Containers (canary)."""

    key = "aks"
    settings_key = "aks"
    settings_model = AksSettings
    registry = "acr"
    workload_types = WORKLOAD_TYPES
    routing_types = GATEWAY_ROUTING_TYPES
    # Application Gateway for Containers matches headers exactly only: its RegularExpression header
    # match is not implemented (Microsoft Q&A 1824077, confirmed by Azure support), and a cookie needs one.
    header_match_forms = frozenset({"header-exact"})

    def __init__(self, ctx: StackContext) -> None:
        super().__init__(ctx)
        s = ctx.settings
        registry = ctx.registries.get("acr")
        # settings validation guarantees them (aks needs azure; an aks service needs the registry; the
        # context makes the egress address whenever a service targets aks)
        assert s.aks is not None and s.azure is not None and ctx.resource_group is not None
        assert isinstance(registry, AcrRegistry) and ctx.aks_egress is not None
        self.settings = s.aks
        nat = ctx.network.nat_public_ips if ctx.network is not None else []
        egress = ctx.aks_egress
        self.cluster = AksCluster(
            "aks",
            AksClusterArgs(
                settings=s.aks,
                azure=s.azure,
                resource_group_name=ctx.resource_group.name,
                cluster_name=ctx.cluster_name,
                upgrade_channel=s.aks.channel(s.is_prod),
                tier=s.aks.sku_tier(s.is_prod),
                registry=registry,
                egress=egress,
                # The nodes reach the API server from the cluster's own egress address too.
                authorized_ips=[*nat, address_of(egress), *s.aks.authorized_cidrs],
                tags=s.tags(),
                protect=ctx.protect,
            ),
        )
        verification = Verification.of(s, self.key, ctx.secret)
        self.admission = (
            self.cluster.verify_signatures("aks", verification) if verification is not None else None
        )

    def deploy(
        self, service: ServiceSettings, plan: RolloutPlan, images: Mapping[str, pulumi.Input[str]]
    ) -> TargetEndpoints:
        assert self.ctx.resource_group is not None and self.ctx.settings.azure is not None
        return AksService(
            f"{service.name}-aks",
            AksServiceArgs(
                service=service,
                plan=plan,
                images=images,
                cluster=self.cluster,
                settings=self.settings,
                resource_group_name=self.ctx.resource_group.name,
                location=self.ctx.settings.azure.location,
                tags=self.ctx.settings.tags(service.name),
                secure_environment=self.ctx.secrets(service.azure_secure_environment),
                protect=self.ctx.protect,
            ),
        ).endpoints
