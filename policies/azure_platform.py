"""Azure: no standing Owner-level roles on a subscription, storage that only speaks TLS 1.2+ and is
never anonymously readable, a zone-redundant registry where required, Front Door that reaches its
origins over HTTPS."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

import resource_types as t
from pack_support import AZURE, PROJECT, setting

# Built-in role definition ids (the same in every tenant) and names.
PRIVILEGED_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
}
PRIVILEGED_NAMES = frozenset(PRIVILEGED_ROLES.values())


def _subscription_scope(scope: str) -> bool:
    """A subscription, a management group or the tenant root: wider than any one resource group."""
    parts = [p for p in scope.strip().lower().split("/") if p]
    if not parts:
        return scope.strip() == "/"
    subscription = len(parts) == 2 and parts[0] == "subscriptions"
    group = len(parts) == 4 and parts[0] == "providers" and parts[2] == "managementgroups"
    return subscription or group


@AZURE.resource(
    "azure-no-privileged-subscription-roles",
    "Owner, Contributor and User Access Administrator are never assigned at subscription (or wider) scope.",
    types=t.ROLE_ASSIGNMENTS,
    severity=Severity.CRITICAL,
    controls=[PROJECT("least-privilege")],
    remediation="Assign the role on the resource group or resource the identity manages.",
)
def _subscription_roles(args: ResourceValidationArgs) -> Iterable[str]:
    scope = str(args.props.get("scope") or "")
    if not _subscription_scope(scope):
        return
    definition = str(args.props.get("roleDefinitionId") or "").rsplit("/", 1)[-1].lower()
    role = PRIVILEGED_ROLES.get(definition) or (
        args.props.get("roleDefinitionName")
        if args.props.get("roleDefinitionName") in PRIVILEGED_NAMES
        else None
    )
    if role:
        yield f"assigns {role} at {scope}: control of every resource in it"


def _storage_settings(args: ResourceValidationArgs) -> tuple[Any, Any, Any]:
    p = args.props
    if args.resource_type == t.STORAGE_ACCOUNT:
        return p.get("enableHttpsTrafficOnly"), p.get("minimumTlsVersion"), p.get("allowBlobPublicAccess")
    return p.get("httpsTrafficOnlyEnabled"), p.get("minTlsVersion"), p.get("allowNestedItemsToBePublic")


@AZURE.resource(
    "azure-storage-secure-access",
    "Storage accounts refuse plain HTTP and TLS below 1.2, and never allow anonymous blob access.",
    types=t.STORAGE_ACCOUNTS,
    severity=Severity.HIGH,
    controls=[PROJECT("encryption-in-transit")],
    checkov=["CKV_AZURE_3", "CKV_AZURE_44", "CKV_AZURE_190", "CKV2_AZURE_47"],
    remediation="Set enable_https_traffic_only=True, minimum_tls_version TLS1_2 and "
    "allow_blob_public_access=False.",
)
def _storage(args: ResourceValidationArgs) -> Iterable[str]:
    https_only, tls, public = _storage_settings(args)
    if https_only is False:
        yield "storage account accepts plain HTTP"
    if tls not in ("TLS1_2", "TLS1_3"):
        yield f"storage account allows TLS {tls or 'below 1.2 (unset)'}; set TLS1_2"
    if public is not False:
        yield "storage account may allow anonymous blob access; set it to false"


ZONE_SCHEMA: dict[str, dict[str, Any]] = {
    "required": {"type": "boolean", "default": False, "description": "Require zone redundancy (prod)."}
}


@AZURE.resource(
    "acr-zone-redundant",
    "Azure Container Registries are zone redundant where required (prod).",
    types=[t.ACR_REGISTRY],
    severity=Severity.MEDIUM,
    controls=[PROJECT("availability")],
    checkov=["CKV_AZURE_233"],
    remediation="Set zone_redundancy Enabled (Premium; set at creation, so it replaces the registry).",
    config=ZONE_SCHEMA,
)
def _acr_zones(args: ResourceValidationArgs) -> Iterable[str]:
    if setting(args, ZONE_SCHEMA, "required") and args.props.get("zoneRedundancy") != "Enabled":
        yield "registry is not zone redundant; this environment requires it"


@AZURE.resource(
    "frontdoor-https-to-origin",
    "Front Door reaches its origins over HTTPS only.",
    types=[t.FRONT_DOOR_ROUTE],
    severity=Severity.HIGH,
    controls=[PROJECT("encryption-in-transit")],
    remediation="Set forwarding_protocol HttpsOnly and serve TLS at the origin.",
)
def _origin_https(args: ResourceValidationArgs) -> Iterable[str]:
    protocol = args.props.get("forwardingProtocol") or "MatchRequest"
    if protocol != "HttpsOnly":
        yield f"Front Door forwards to its origin with {protocol}: plain HTTP behind the edge"
