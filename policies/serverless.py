"""Cloud Run and Azure Container Instances (with Front Door): identity, exposure, secrets."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

import resource_types as t
from gcp_iam import grants
from pack_support import AZURE, CIS_GCP, GCP, PROJECT, SECRET_NAME, setting

PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")

PUBLIC_SCHEMA: dict[str, dict[str, Any]] = {
    "allowPublic": {
        "type": "boolean",
        "default": True,
        "description": "Allow allUsers / allAuthenticatedUsers as Cloud Run invokers (false in prod).",
    }
}
INGRESS_SCHEMA: dict[str, dict[str, Any]] = {
    "allowAll": {
        "type": "boolean",
        "default": True,
        "description": "Allow ingress from the whole internet (INGRESS_TRAFFIC_ALL); false in prod.",
    }
}


@GCP.resource(
    "cloudrun-no-public-invoker",
    "Cloud Run services are not invokable by allUsers where not allowed (prod).",
    types=t.RUN_INVOKERS,
    severity=Severity.HIGH,
    controls=[PROJECT("no-public-endpoints")],
    checkov=["CKV_GCP_102"],
    remediation="Remove cloudRun.allowPublic; grant roles/run.invoker to cloudRun.invokers.",
    config=PUBLIC_SCHEMA,
)
def _public_invoker(args: ResourceValidationArgs) -> Iterable[str]:
    if setting(args, PUBLIC_SCHEMA, "allowPublic"):
        return
    for _, member in grants(args):
        if member in PUBLIC_MEMBERS:
            yield (
                f"Cloud Run service is invokable by {member}; this environment does not allow public invokers"
            )


@GCP.resource(
    "cloudrun-dedicated-service-account",
    "Cloud Run revisions run as a dedicated service account, never the compute default.",
    types=[t.CLOUD_RUN],
    severity=Severity.HIGH,
    controls=[CIS_GCP("4.1")],
    remediation="Deploy through components.targets.cloudrun, which creates run-<service>.",
)
def _dedicated_account(args: ResourceValidationArgs) -> Iterable[str]:
    account = (args.props.get("template") or {}).get("serviceAccount")
    if not account:
        yield "Cloud Run revisions run as the Compute Engine default service account; set a dedicated one"
    elif str(account).endswith("-compute@developer.gserviceaccount.com"):
        yield f"Cloud Run revisions run as the default compute account {account}; use a dedicated one"


@GCP.resource(
    "cloudrun-restricted-ingress",
    "Cloud Run ingress is not open to all where not allowed (prod).",
    types=[t.CLOUD_RUN],
    severity=Severity.MEDIUM,
    controls=[PROJECT("no-public-endpoints")],
    remediation="Leave cloudRun.ingress unset in prod (internal-and-cloud-load-balancing).",
    config=INGRESS_SCHEMA,
)
def _ingress(args: ResourceValidationArgs) -> Iterable[str]:
    ingress = args.props.get("ingress") or "INGRESS_TRAFFIC_ALL"
    if ingress == "INGRESS_TRAFFIC_ALL" and not setting(args, INGRESS_SCHEMA, "allowAll"):
        yield "Cloud Run ingress is all; this environment requires internal(-and-cloud-load-balancing)"


@AZURE.resource(
    "aci-secure-environment",
    "Secrets reach ACI containers as secure environment values only.",
    types=[t.CONTAINER_GROUP],
    severity=Severity.HIGH,
    controls=[PROJECT("secrets-not-in-plain-env")],
    checkov=["CKV_AZURE_235"],
    remediation="Move the value to services[].azureSecureEnvironment (a secure config key).",
)
def _aci_secure_values(args: ResourceValidationArgs) -> Iterable[str]:
    for container in args.props.get("containers") or []:
        for variable in container.get("environmentVariables") or []:
            name = str(variable.get("name"))
            if SECRET_NAME.search(name) and variable.get("value") is not None:
                yield f"container {container.get('name')} passes {name} as a plain value; use secureValue"


@AZURE.resource(
    "aci-managed-identity-pull",
    "ACI pulls images with a managed identity, never a registry password.",
    types=[t.CONTAINER_GROUP],
    severity=Severity.HIGH,
    controls=[PROJECT("keyless-pull")],
    remediation="Use image_registry_credentials with identity= the service's AcrPull identity.",
)
def _aci_identity_pull(args: ResourceValidationArgs) -> Iterable[str]:
    for credential in args.props.get("imageRegistryCredentials") or []:
        if not credential.get("identity") or credential.get("password") is not None:
            yield f"images from {credential.get('server')} are pulled with a password; use a managed identity"


@AZURE.resource(
    "aci-no-public-ip-in-vnet",
    "Container groups in a VNet have no public IP.",
    types=[t.CONTAINER_GROUP],
    severity=Severity.HIGH,
    controls=[PROJECT("no-public-endpoints")],
    remediation="With aci.subnetId set, container groups get private IPs (components do this).",
)
def _aci_private_with_vnet(args: ResourceValidationArgs) -> Iterable[str]:
    ip = args.props.get("ipAddress") or {}
    if args.props.get("subnetIds") and ip.get("type") == "Public":
        yield "container group sits in a VNet but also has a public IP; set ipAddress.type Private"


@AZURE.resource(
    "frontdoor-https-only",
    "Front Door routes serve HTTPS only (HTTP redirects).",
    types=[t.FRONT_DOOR_ROUTE],
    severity=Severity.HIGH,
    controls=[PROJECT("encryption-in-transit")],
    remediation="Set https_redirect Enabled or supported_protocols [Https].",
)
def _front_door_https(args: ResourceValidationArgs) -> Iterable[str]:
    protocols = list(args.props.get("supportedProtocols") or ["Http", "Https"])
    if "Http" in protocols and args.props.get("httpsRedirect") != "Enabled":
        yield "Front Door route serves plain HTTP; support Https only or enable httpsRedirect"
