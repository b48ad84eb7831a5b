"""Cloud Run and Azure Container Instances (with Front Door): identity, exposure, secrets."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from pack_support import PROJECT, SECRET_NAME, control, resource_policy, setting

CLOUD_RUN = "gcp:cloudrunv2/service:Service"
RUN_INVOKER = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
CONTAINER_GROUP = "azure-native:containerinstance:ContainerGroup"
FRONT_DOOR_ROUTE = "azure-native:cdn:Route"
PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
CIS_GCP = "CIS Google Cloud Platform Foundation Benchmark"

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


def _public_invoker(args: ResourceValidationArgs) -> Iterable[str]:
    member = args.props.get("member")
    if member in PUBLIC_MEMBERS and not setting(args, PUBLIC_SCHEMA, "allowPublic"):
        yield f"Cloud Run service is invokable by {member}; this environment does not allow public invokers"


def _dedicated_account(args: ResourceValidationArgs) -> Iterable[str]:
    account = (args.props.get("template") or {}).get("serviceAccount")
    if not account:
        yield "Cloud Run revisions run as the Compute Engine default service account; set a dedicated one"
    elif str(account).endswith("-compute@developer.gserviceaccount.com"):
        yield f"Cloud Run revisions run as the default compute account {account}; use a dedicated one"


def _ingress(args: ResourceValidationArgs) -> Iterable[str]:
    ingress = args.props.get("ingress") or "INGRESS_TRAFFIC_ALL"
    if ingress == "INGRESS_TRAFFIC_ALL" and not setting(args, INGRESS_SCHEMA, "allowAll"):
        yield "Cloud Run ingress is all; this environment requires internal(-and-cloud-load-balancing)"


def _aci_secure_values(args: ResourceValidationArgs) -> Iterable[str]:
    for container in args.props.get("containers") or []:
        for variable in container.get("environmentVariables") or []:
            name = str(variable.get("name"))
            if SECRET_NAME.search(name) and variable.get("value") is not None:
                yield f"container {container.get('name')} passes {name} as a plain value; use secureValue"


def _aci_identity_pull(args: ResourceValidationArgs) -> Iterable[str]:
    for credential in args.props.get("imageRegistryCredentials") or []:
        if not credential.get("identity") or credential.get("password") is not None:
            yield f"images from {credential.get('server')} are pulled with a password; use a managed identity"


def _aci_private_with_vnet(args: ResourceValidationArgs) -> Iterable[str]:
    ip = args.props.get("ipAddress") or {}
    if args.props.get("subnetIds") and ip.get("type") == "Public":
        yield "container group sits in a VNet but also has a public IP; set ipAddress.type Private"


def _front_door_https(args: ResourceValidationArgs) -> Iterable[str]:
    protocols = list(args.props.get("supportedProtocols") or ["Http", "Https"])
    if "Http" in protocols and args.props.get("httpsRedirect") != "Enabled":
        yield "Front Door route serves plain HTTP; support Https only or enable httpsRedirect"


POLICIES = [
    resource_policy(
        name="cloudrun-no-public-invoker",
        description="Cloud Run services are not invokable by allUsers where not allowed (prod).",
        types=[RUN_INVOKER],
        rule=_public_invoker,
        severity=Severity.HIGH,
        framework=control(PROJECT, "no-public-endpoints"),
        remediation="Remove cloudRun.allowPublic; grant roles/run.invoker to cloudRun.invokers.",
        config=PUBLIC_SCHEMA,
        tags=["network-exposure", "identity"],
    ),
    resource_policy(
        name="cloudrun-dedicated-service-account",
        description="Cloud Run revisions run as a dedicated service account, never the compute default.",
        types=[CLOUD_RUN],
        rule=_dedicated_account,
        severity=Severity.HIGH,
        framework=control(CIS_GCP, "4.1 (default service account)"),
        remediation="Deploy through components.targets.cloudrun, which creates run-<service>.",
        tags=["identity"],
    ),
    resource_policy(
        name="cloudrun-restricted-ingress",
        description="Cloud Run ingress is not open to all where not allowed (prod).",
        types=[CLOUD_RUN],
        rule=_ingress,
        severity=Severity.MEDIUM,
        framework=control(PROJECT, "no-public-endpoints"),
        remediation="Leave cloudRun.ingress unset in prod (internal-and-cloud-load-balancing).",
        config=INGRESS_SCHEMA,
        tags=["network-exposure"],
    ),
    resource_policy(
        name="aci-secure-environment",
        description="Secrets reach ACI containers as secure environment values only.",
        types=[CONTAINER_GROUP],
        rule=_aci_secure_values,
        severity=Severity.HIGH,
        framework=control(PROJECT, "secrets-not-in-plain-env"),
        remediation="Move the value to services[].azureSecureEnvironment (a secure config key).",
        tags=["workload-security"],
    ),
    resource_policy(
        name="aci-managed-identity-pull",
        description="ACI pulls images with a managed identity, never a registry password.",
        types=[CONTAINER_GROUP],
        rule=_aci_identity_pull,
        severity=Severity.HIGH,
        framework=control(PROJECT, "keyless-pull"),
        remediation="Use image_registry_credentials with identity= the service's AcrPull identity.",
        tags=["identity"],
    ),
    resource_policy(
        name="aci-no-public-ip-in-vnet",
        description="Container groups in a VNet have no public IP.",
        types=[CONTAINER_GROUP],
        rule=_aci_private_with_vnet,
        severity=Severity.HIGH,
        framework=control(PROJECT, "no-public-endpoints"),
        remediation="With aci.subnetId set, container groups get private IPs (components do this).",
        tags=["network-exposure"],
    ),
    resource_policy(
        name="frontdoor-https-only",
        description="Front Door routes serve HTTPS only (HTTP redirects).",
        types=[FRONT_DOOR_ROUTE],
        rule=_front_door_https,
        severity=Severity.HIGH,
        framework=control(PROJECT, "encryption-in-transit"),
        remediation="Set https_redirect Enabled or supported_protocols [Https].",
        tags=["network-exposure"],
    ),
]
