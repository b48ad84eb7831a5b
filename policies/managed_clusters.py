"""Managed Kubernetes clusters outside AWS: GKE and AKS hardening (private nodes and API access,
workload identity, shielded nodes, no legacy authorization, network policy enforcement)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity
from pulumi_policy.proxy import UnknownValueError

import resource_types as t
from pack_support import CIS_GKE, GCP, PROJECT

OPEN_RANGES = frozenset({"0.0.0.0/0", "::/0"})
RELEASE_CHANNELS = frozenset({"RAPID", "REGULAR", "STABLE"})


def _open_block(block: Any) -> str | None:
    """The block's range when it admits every address, else None.

    A range unknown during preview is one a provider computes (a NAT gateway's address, added as a /32):
    a single address, never a wildcard. `pulumi up` checks it again, known.
    """
    try:
        value = str(block.get("cidrBlock") or "").strip()
    except UnknownValueError:
        return None
    return value if value in OPEN_RANGES or value.endswith("/0") else None


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
