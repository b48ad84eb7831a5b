"""Managed Kubernetes clusters outside AWS: GKE and AKS hardening (private nodes and API access,
workload identity, shielded nodes, no legacy authorization, network policy enforcement)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from operator import getitem
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity
from pulumi_policy.proxy import UnknownValueError

import resource_types as t
from pack_support import AZURE, CIS_GKE, GCP, PROJECT, Framework

OPEN_RANGES = frozenset({"0.0.0.0/0", "::/0"})
RELEASE_CHANNELS = frozenset({"RAPID", "REGULAR", "STABLE"})
CIS_AKS = Framework("CIS AKS", "CIS Azure Kubernetes Service (AKS) Benchmark", "1.7.0")
# AKS enforces NetworkPolicy with one of these (networkProfile.networkPolicy); `none` enforces nothing.
AKS_NETWORK_POLICIES = frozenset({"azure", "calico", "cilium"})
AKS_UPGRADE_CHANNELS = frozenset({"patch", "stable", "rapid", "node-image"})
AKS_SYSTEM_TAINT = "CriticalAddonsOnly=true:NoSchedule"


def _open_range(read: Callable[[], Any]) -> str | None:
    """The range `read` returns when it admits every address, else None.

    A range unknown during preview is one a provider computes (a NAT gateway's address, added as a /32):
    a single address, never a wildcard. `pulumi up` checks it again, known.
    """
    try:
        value = str(read() or "").strip()
    except UnknownValueError:
        return None
    return value if value in OPEN_RANGES or value.endswith("/0") else None


def _open_block(block: Any) -> str | None:
    return _open_range(lambda: block.get("cidrBlock"))


def _node_config(args: ResourceValidationArgs) -> Any:
    """A node pool's node config; a cluster's only when it keeps its default pool."""
    if args.resource_type == t.GKE_CLUSTER and args.props.get("removeDefaultNodePool") is True:
        return None
    return args.props.get("nodeConfig") or {}


@GCP.resource(
    "gke-private-nodes",
    "GKE nodes have internal addresses only (private nodes).",
    types=[t.GKE_CLUSTER],
    severity=Severity.HIGH,
    controls=[CIS_GKE("5.6.5")],
    checkov=["CKV_GCP_25"],
    remediation="Set private_cluster_config.enable_private_nodes=True (components.targets.gke.GkeCluster).",
)
def _gke_private_nodes(args: ResourceValidationArgs) -> Iterable[str]:
    private = args.props.get("privateClusterConfig") or {}
    if private.get("enablePrivateNodes") is not True:
        yield "GKE nodes get external IP addresses (privateClusterConfig.enablePrivateNodes is not true)"


@GCP.resource(
    "gke-control-plane-access",
    "The GKE control plane is private, or its public endpoint admits only authorized networks.",
    types=[t.GKE_CLUSTER],
    severity=Severity.HIGH,
    controls=[CIS_GKE("5.6.3")],
    checkov=["CKV_GCP_20"],
    remediation="List gke.authorizedCidrs (the NAT egress of the runners is added), or set "
    "gke.privateEndpoint: true.",
)
def _gke_control_plane(args: ResourceValidationArgs) -> Iterable[str]:
    private = args.props.get("privateClusterConfig") or {}
    if private.get("enablePrivateEndpoint") is True:
        return
    networks = args.props.get("masterAuthorizedNetworksConfig")
    if not networks:
        yield "GKE control plane is reachable from any address (no masterAuthorizedNetworksConfig)"
        return
    opened = [b for b in (_open_block(block) for block in networks.get("cidrBlocks") or []) if b]
    if opened:
        yield f"GKE authorized networks admit {', '.join(opened)}: the whole internet"
    if networks.get("gcpPublicCidrsAccessEnabled") is True:
        yield "GKE authorized networks admit every Google Cloud public address (gcpPublicCidrsAccessEnabled)"


@GCP.resource(
    "gke-workload-identity",
    "GKE clusters use Workload Identity and nodes expose only the GKE metadata server.",
    types=[t.GKE_CLUSTER, t.GKE_NODE_POOL],
    severity=Severity.HIGH,
    controls=[PROJECT("workload-identity")],
    checkov=["CKV_GCP_69"],
    remediation="Set workload_identity_config.workload_pool=<project>.svc.id.goog on the cluster and "
    "node_config.workload_metadata_config.mode=GKE_METADATA on every node pool.",
)
def _gke_workload_identity(args: ResourceValidationArgs) -> Iterable[str]:
    if args.resource_type == t.GKE_CLUSTER and not (args.props.get("workloadIdentityConfig") or {}).get(
        "workloadPool"
    ):
        yield "GKE cluster has no Workload Identity pool (workloadIdentityConfig.workloadPool)"
    nodes = _node_config(args)
    if nodes is not None and (nodes.get("workloadMetadataConfig") or {}).get("mode") != "GKE_METADATA":
        yield "GKE nodes expose the Compute Engine metadata server to pods (workloadMetadataConfig.mode)"


@GCP.resource(
    "gke-shielded-nodes",
    "GKE nodes are Shielded VMs with secure boot.",
    types=[t.GKE_CLUSTER, t.GKE_NODE_POOL],
    severity=Severity.MEDIUM,
    controls=[CIS_GKE("5.5.5")],
    checkov=["CKV_GCP_71"],
    remediation="Leave enable_shielded_nodes on and set shielded_instance_config.enable_secure_boot=True.",
)
def _gke_shielded(args: ResourceValidationArgs) -> Iterable[str]:
    if args.resource_type == t.GKE_CLUSTER and args.props.get("enableShieldedNodes") is False:
        yield "GKE cluster turns Shielded GKE Nodes off (enableShieldedNodes)"
    nodes = _node_config(args)
    if nodes is not None and (nodes.get("shieldedInstanceConfig") or {}).get("enableSecureBoot") is not True:
        yield "GKE nodes boot without secure boot (shieldedInstanceConfig.enableSecureBoot)"


@GCP.resource(
    "gke-no-legacy-authorization",
    "GKE clusters use neither legacy ABAC nor client certificates: Kubernetes RBAC and Google identities.",
    types=[t.GKE_CLUSTER],
    severity=Severity.HIGH,
    controls=[PROJECT("least-privilege")],
    checkov=["CKV_GCP_7", "CKV_GCP_13"],
    remediation="Set enable_legacy_abac=False and master_auth.client_certificate_config."
    "issue_client_certificate=False.",
)
def _gke_legacy_auth(args: ResourceValidationArgs) -> Iterable[str]:
    if args.props.get("enableLegacyAbac") is True:
        yield "GKE cluster authorizes with legacy ABAC (enableLegacyAbac)"
    certificate = ((args.props.get("masterAuth") or {}).get("clientCertificateConfig") or {}).get(
        "issueClientCertificate"
    )
    if certificate is True:
        yield "GKE cluster issues a client certificate: a credential that cannot be revoked"


@GCP.resource(
    "gke-network-policy",
    "GKE enforces NetworkPolicy (Dataplane V2 or the network policy add-on).",
    types=[t.GKE_CLUSTER],
    severity=Severity.HIGH,
    controls=[PROJECT("network-segmentation")],
    checkov=["CKV_GCP_12"],
    remediation="Set datapath_provider=ADVANCED_DATAPATH (Dataplane V2), or network_policy.enabled=True.",
)
def _gke_network_policy(args: ResourceValidationArgs) -> Iterable[str]:
    dataplane_v2 = args.props.get("datapathProvider") == "ADVANCED_DATAPATH"
    addon = (args.props.get("networkPolicy") or {}).get("enabled") is True
    if not (dataplane_v2 or addon):
        yield "GKE does not enforce NetworkPolicy: namespaces' deny rules would be ignored"


@GCP.resource(
    "gke-release-channel",
    "GKE clusters follow a release channel (Google-managed control plane and node upgrades).",
    types=[t.GKE_CLUSTER],
    severity=Severity.MEDIUM,
    controls=[CIS_GKE("5.5.4")],
    remediation="Set release_channel.channel to REGULAR or STABLE (gke.releaseChannel).",
)
def _gke_release_channel(args: ResourceValidationArgs) -> Iterable[str]:
    channel = (args.props.get("releaseChannel") or {}).get("channel")
    if channel not in RELEASE_CHANNELS:
        yield f"GKE cluster follows no release channel ({channel or 'unset'}): upgrades are manual"


# --- AKS (components/targets/aks.py). Checkov ids from checkov/terraform/checks/resource/azure (AKS*.py).


def _aks_pools(args: ResourceValidationArgs) -> list[Any]:
    """A cluster's inline agent pools, or the one pool an AgentPool resource is."""
    if args.resource_type == t.AKS_AGENT_POOL:
        return [args.props]
    return list(args.props.get("agentPoolProfiles") or [])


@AZURE.resource(
    "aks-local-accounts-disabled",
    "AKS clusters have no local accounts: every caller signs in with Entra ID (no static admin kubeconfig).",
    types=[t.AKS_CLUSTER],
    severity=Severity.HIGH,
    controls=[CIS_AKS("5.5.1")],
    checkov=["CKV_AZURE_141"],
    remediation="Set disable_local_accounts=True (components.targets.aks.AksCluster).",
)
def _aks_local_accounts(args: ResourceValidationArgs) -> Iterable[str]:
    if args.props.get("disableLocalAccounts") is not True:
        yield "AKS cluster keeps local accounts: its admin kubeconfig is a credential Entra ID cannot revoke"


@AZURE.resource(
    "aks-entra-azure-rbac",
    "AKS clusters use managed Entra ID integration, Kubernetes RBAC and Azure RBAC for Kubernetes "
    "authorization.",
    types=[t.AKS_CLUSTER],
    severity=Severity.HIGH,
    controls=[CIS_AKS("5.5.1"), CIS_AKS("5.5.2")],
    checkov=["CKV_AZURE_5"],
    remediation="Set aad_profile.managed=True, aad_profile.enable_azure_rbac=True and enable_rbac=True.",
)
def _aks_rbac(args: ResourceValidationArgs) -> Iterable[str]:
    if args.props.get("enableRBAC") is False:
        yield "AKS cluster has Kubernetes RBAC off (enableRBAC: false): every caller is cluster-admin"
    aad = args.props.get("aadProfile") or {}
    if aad.get("managed") is not True:
        yield "AKS cluster is not integrated with Entra ID (aadProfile.managed is not true)"
    elif aad.get("enableAzureRBAC") is not True:
        yield "AKS cluster does not authorize Kubernetes calls with Azure RBAC (aadProfile.enableAzureRBAC)"


@AZURE.resource(
    "aks-api-access",
    "The AKS API server is private, or its public endpoint admits only authorized IP ranges.",
    types=[t.AKS_CLUSTER],
    severity=Severity.HIGH,
    controls=[CIS_AKS("5.4.1")],
    checkov=["CKV_AZURE_6", "CKV_AZURE_115"],
    remediation="List aks.authorizedCidrs (the runners' NAT egress and the cluster's own are added), or set "
    "aks.privateCluster: true.",
)
def _aks_api_access(args: ResourceValidationArgs) -> Iterable[str]:
    access = args.props.get("apiServerAccessProfile") or {}
    if access.get("enablePrivateCluster") is True:
        return
    ranges = access.get("authorizedIPRanges") or []
    if not ranges:
        yield "AKS API server is reachable from any address (no apiServerAccessProfile.authorizedIPRanges)"
        return
    opened = [r for r in (_open_range(partial(getitem, ranges, i)) for i in range(len(ranges))) if r]
    if opened:
        yield f"AKS authorized IP ranges admit {', '.join(opened)}: the whole internet"


@AZURE.resource(
    "aks-network-policy",
    "AKS enforces NetworkPolicy (Cilium, Azure or Calico network policy).",
    types=[t.AKS_CLUSTER],
    severity=Severity.HIGH,
    controls=[CIS_AKS("5.4.4")],
    checkov=["CKV_AZURE_7"],
    remediation="Set network_profile.network_policy=cilium with network_dataplane=cilium (Azure CNI "
    "powered by Cilium).",
)
def _aks_network_policy(args: ResourceValidationArgs) -> Iterable[str]:
    policy = str((args.props.get("networkProfile") or {}).get("networkPolicy") or "none")
    if policy.lower() not in AKS_NETWORK_POLICIES:
        yield (
            f"AKS does not enforce NetworkPolicy (networkPolicy {policy}): namespaces' deny rules would be "
            "ignored"
        )


@AZURE.resource(
    "aks-workload-identity",
    "AKS clusters run the OIDC issuer and workload identity, not the deprecated pod-managed identity.",
    types=[t.AKS_CLUSTER],
    severity=Severity.MEDIUM,
    controls=[PROJECT("workload-identity")],
    remediation="Set oidc_issuer_profile.enabled=True and security_profile.workload_identity.enabled=True; "
    "remove pod_identity_profile.",
)
def _aks_workload_identity(args: ResourceValidationArgs) -> Iterable[str]:
    if (args.props.get("oidcIssuerProfile") or {}).get("enabled") is not True:
        yield "AKS cluster has no OIDC issuer (oidcIssuerProfile.enabled): pods cannot federate identities"
    workload = ((args.props.get("securityProfile") or {}).get("workloadIdentity") or {}).get("enabled")
    if workload is not True:
        yield "AKS cluster has workload identity off (securityProfile.workloadIdentity.enabled)"
    if (args.props.get("podIdentityProfile") or {}).get("enabled") is True:
        yield "AKS cluster runs pod-managed identity (podIdentityProfile): deprecated, node-wide NMI"


@AZURE.resource(
    "aks-private-nodes",
    "AKS nodes have no public IP addresses.",
    types=[t.AKS_CLUSTER, t.AKS_AGENT_POOL],
    severity=Severity.HIGH,
    controls=[CIS_AKS("5.4.3")],
    checkov=["CKV_AZURE_143"],
    remediation="Set enable_node_public_ip=False on every agent pool; nodes leave through a NAT gateway.",
)
def _aks_private_nodes(args: ResourceValidationArgs) -> Iterable[str]:
    for pool in _aks_pools(args):
        if pool.get("enableNodePublicIP") is True:
            yield f"AKS node pool {pool.get('name') or args.name} gives each node a public IP address"


@AZURE.resource(
    "aks-auto-upgrade",
    "AKS clusters follow an auto-upgrade channel and patch their node images.",
    types=[t.AKS_CLUSTER],
    severity=Severity.MEDIUM,
    controls=[PROJECT("patching")],
    checkov=["CKV_AZURE_171"],
    remediation="Set auto_upgrade_profile.upgrade_channel (aks.upgradeChannel: stable in prod, patch "
    "elsewhere) and node_os_upgrade_channel NodeImage.",
)
def _aks_auto_upgrade(args: ResourceValidationArgs) -> Iterable[str]:
    profile = args.props.get("autoUpgradeProfile") or {}
    channel = str(profile.get("upgradeChannel") or "none")
    if channel.lower() not in AKS_UPGRADE_CHANNELS:
        yield f"AKS cluster follows no auto-upgrade channel ({channel}): upgrades are manual"
    node_os = str(profile.get("nodeOSUpgradeChannel") or "NodeImage")
    if node_os.lower() in ("none", "unmanaged"):
        yield f"AKS node images are never patched by AKS (nodeOSUpgradeChannel {node_os})"


@AZURE.resource(
    "aks-system-pool-critical-only",
    "AKS system node pools run only critical add-ons (CriticalAddonsOnly taint): services run elsewhere.",
    types=[t.AKS_CLUSTER, t.AKS_AGENT_POOL],
    severity=Severity.LOW,
    controls=[PROJECT("workload-isolation")],
    checkov=["CKV_AZURE_232"],
    remediation=f"Add the {AKS_SYSTEM_TAINT} taint to system pools and run services on a User pool.",
)
def _aks_system_pool(args: ResourceValidationArgs) -> Iterable[str]:
    for pool in _aks_pools(args):
        if str(pool.get("mode") or "") == "System" and AKS_SYSTEM_TAINT not in list(
            pool.get("nodeTaints") or []
        ):
            name = pool.get("name") or args.name
            yield f"AKS system pool {name} also schedules services (no {AKS_SYSTEM_TAINT} taint)"


@AZURE.resource(
    "aks-azure-policy-addon",
    "AKS clusters run the Azure Policy add-on (Gatekeeper), which audits workloads against Azure Policy.",
    types=[t.AKS_CLUSTER],
    severity=Severity.LOW,
    controls=[PROJECT("admission-control")],
    checkov=["CKV_AZURE_116"],
    remediation="Set addon_profiles.azurepolicy.enabled=True.",
)
def _aks_azure_policy(args: ResourceValidationArgs) -> Iterable[str]:
    if ((args.props.get("addonProfiles") or {}).get("azurepolicy") or {}).get("enabled") is not True:
        yield "AKS cluster runs without the Azure Policy add-on (addonProfiles.azurepolicy)"
