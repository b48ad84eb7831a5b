"""Clusters and network exposure: private control planes, IMDSv2, encrypted secrets, audit logs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

import resource_types as t
from pack_support import AWS_COMPUTE, AWS_NETWORK_DATA, FSBP, num, present, setting

REQUIRED_LOGS = ("api", "audit", "authenticator")

PRIVATE_ENDPOINT_SCHEMA: dict[str, dict[str, Any]] = {
    "requirePrivate": {
        "type": "boolean",
        "default": False,
        "description": "Require the EKS API endpoint to be private (prod).",
    }
}


@AWS_COMPUTE.resource(
    "eks-private-endpoint",
    "EKS API endpoints are private where required, never open to the internet.",
    types=[t.EKS_CLUSTER],
    severity=Severity.HIGH,
    controls=[FSBP("EKS.1")],
    checkov=["CKV_AWS_38", "CKV_AWS_39"],
    remediation="Leave eks.endpointPublicAccess unset in prod (private), or list publicAccessCidrs.",
    config=PRIVATE_ENDPOINT_SCHEMA,
)
def _private_endpoint(args: ResourceValidationArgs) -> Iterable[str]:
    vpc = args.props.get("vpcConfig") or {}
    if vpc.get("endpointPrivateAccess") is not True:
        yield "EKS API endpoint has no private access (vpcConfig.endpointPrivateAccess)"
    public = vpc.get("endpointPublicAccess", True) is not False
    if public and setting(args, PRIVATE_ENDPOINT_SCHEMA, "requirePrivate"):
        yield "EKS API endpoint is public; this environment requires it private"
    elif public and not vpc.get("publicAccessCidrs"):
        yield "EKS API endpoint is open to 0.0.0.0/0; set eks.publicAccessCidrs or make it private"


@AWS_COMPUTE.resource(
    "eks-secrets-encryption",
    "EKS encrypts Kubernetes secrets with a KMS key.",
    types=[t.EKS_CLUSTER],
    severity=Severity.HIGH,
    controls=[FSBP("EKS.3")],
    checkov=["CKV_AWS_58"],
    remediation="Create the cluster through components.targets.eks.EksCluster (KMS key per cluster).",
)
def _secrets_encryption(args: ResourceValidationArgs) -> Iterable[str]:
    encryption = args.props.get("encryptionConfig") or {}
    if "secrets" not in list(encryption.get("resources") or []) or not present(
        encryption.get("provider") or {}, "keyArn"
    ):
        yield "EKS does not encrypt Kubernetes secrets with a KMS key (encryptionConfig)"


@AWS_COMPUTE.resource(
    "eks-control-plane-logging",
    "EKS sends api, audit and authenticator logs to CloudWatch.",
    types=[t.EKS_CLUSTER],
    severity=Severity.MEDIUM,
    controls=[FSBP("EKS.8")],
    checkov=["CKV_AWS_37"],
    remediation="Enable log types api, audit, authenticator (EksCluster enables all five).",
)
def _control_plane_logs(args: ResourceValidationArgs) -> Iterable[str]:
    enabled = set(args.props.get("enabledClusterLogTypes") or [])
    missing = [log for log in REQUIRED_LOGS if log not in enabled]
    if missing:
        yield f"EKS control plane logs missing: {', '.join(missing)}"


@AWS_COMPUTE.resource(
    "ec2-imdsv2-required",
    "EC2 capacity (nodes, runners) requires IMDSv2.",
    types=[t.LAUNCH_TEMPLATE, t.INSTANCE],
    severity=Severity.HIGH,
    controls=[FSBP("EC2.8")],
    checkov=["CKV_AWS_79"],
    remediation="Set metadata_options http_tokens='required' (and hop limit 1 to keep pods out).",
)
def _imdsv2(args: ResourceValidationArgs) -> Iterable[str]:
    options = args.props.get("metadataOptions") or {}
    if options.get("httpTokens") != "required":
        yield "instance metadata allows IMDSv1 (metadataOptions.httpTokens must be required)"


HTTPS_SCHEMA: dict[str, dict[str, Any]] = {
    "allowPlainHttp": {
        "type": "boolean",
        "default": False,
        "description": "Allow HTTP listeners that serve traffic (dev without a certificate).",
    }
}
TLS_SCHEMA: dict[str, dict[str, Any]] = {
    "allowedPolicies": {
        "type": "array",
        "items": {"type": "string"},
        "default": [
            "ELBSecurityPolicy-TLS13-1-2-2021-06",
            "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
            "ELBSecurityPolicy-TLS13-1-3-2021-06",
            "ELBSecurityPolicy-TLS13-1-2-FIPS-2023-04",
            "ELBSecurityPolicy-TLS-1-2-2017-01",
            "ELBSecurityPolicy-TLS-1-2-Ext-2018-06",
        ],
        "description": "ALB security policies that allow TLS 1.2 and later only.",
    }
}
DELETION_SCHEMA: dict[str, dict[str, Any]] = {
    "required": {"type": "boolean", "default": False, "description": "Require deletion protection (prod)."}
}


@AWS_NETWORK_DATA.resource(
    "alb-https-only",
    "HTTP listeners only redirect to HTTPS.",
    types=[t.LISTENER],
    severity=Severity.HIGH,
    controls=[FSBP("ELB.1")],
    checkov=["CKV_AWS_2", "CKV2_AWS_20"],
    remediation="Set ecs.certificateArn: the HTTP listener then only redirects to the HTTPS one.",
    config=HTTPS_SCHEMA,
)
def _https_only(args: ResourceValidationArgs) -> Iterable[str]:
    if args.props.get("protocol") != "HTTP":
        return
    actions = list(args.props.get("defaultActions") or [])
    redirects = actions and all(
        a.get("type") == "redirect" and (a.get("redirect") or {}).get("protocol") == "HTTPS" for a in actions
    )
    if not redirects and not setting(args, HTTPS_SCHEMA, "allowPlainHttp"):
        port = num(args.props.get("port"))
        yield f"HTTP listener on port {port} serves traffic; it must only redirect to HTTPS"


@AWS_NETWORK_DATA.resource(
    "alb-tls-policy",
    "HTTPS listeners allow TLS 1.2 and later only.",
    types=[t.LISTENER],
    severity=Severity.HIGH,
    controls=[FSBP("ELB.17")],
    checkov=["CKV_AWS_103"],
    remediation="Use ssl_policy ELBSecurityPolicy-TLS13-1-2-2021-06.",
    config=TLS_SCHEMA,
)
def _tls_policy(args: ResourceValidationArgs) -> Iterable[str]:
    if args.props.get("protocol") != "HTTPS":
        return
    policy = args.props.get("sslPolicy")
    if policy not in setting(args, TLS_SCHEMA, "allowedPolicies"):
        yield f"HTTPS listener uses TLS policy {policy or 'the default'}; use a TLS 1.2+ policy"


@AWS_NETWORK_DATA.resource(
    "alb-drop-invalid-headers",
    "Application Load Balancers drop invalid HTTP headers.",
    types=t.LOAD_BALANCERS,
    severity=Severity.MEDIUM,
    controls=[FSBP("ELB.4")],
    checkov=["CKV_AWS_131"],
    remediation="Set drop_invalid_header_fields=True.",
)
def _alb_hardening(args: ResourceValidationArgs) -> Iterable[str]:
    if args.props.get("loadBalancerType", "application") != "application":
        return
    if args.props.get("dropInvalidHeaderFields") is not True:
        yield "ALB does not drop invalid HTTP header fields (request smuggling)"


@AWS_NETWORK_DATA.resource(
    "alb-access-logs",
    "Application Load Balancers write access logs.",
    types=t.LOAD_BALANCERS,
    severity=Severity.MEDIUM,
    controls=[FSBP("ELB.5")],
    checkov=["CKV_AWS_91"],
    remediation="Set access_logs to the EcsCluster's log bucket with enabled=True.",
)
def _alb_access_logs(args: ResourceValidationArgs) -> Iterable[str]:
    logs = args.props.get("accessLogs") or {}
    if logs.get("enabled") is not True or not present(logs, "bucket"):
        yield "ALB access logs are off; send them to the environment's log bucket"


@AWS_NETWORK_DATA.resource(
    "alb-deletion-protection",
    "Application Load Balancers have deletion protection where required (prod).",
    types=t.LOAD_BALANCERS,
    severity=Severity.MEDIUM,
    controls=[FSBP("ELB.6")],
    checkov=["CKV_AWS_150"],
    remediation="Set enable_deletion_protection=True (components do in prod).",
    config=DELETION_SCHEMA,
)
def _alb_deletion_protection(args: ResourceValidationArgs) -> Iterable[str]:
    if setting(args, DELETION_SCHEMA, "required") and args.props.get("enableDeletionProtection") is not True:
        yield "ALB has no deletion protection; this environment requires it"
