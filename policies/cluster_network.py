"""Clusters and network exposure: private control planes, IMDSv2, encrypted secrets, audit logs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from pack_support import FSBP, control, num, present, resource_policy, setting

EKS_CLUSTER = "aws:eks/cluster:Cluster"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
INSTANCE = "aws:ec2/instance:Instance"
REQUIRED_LOGS = ("api", "audit", "authenticator")

PRIVATE_ENDPOINT_SCHEMA: dict[str, dict[str, Any]] = {
    "requirePrivate": {
        "type": "boolean",
        "default": False,
        "description": "Require the EKS API endpoint to be private (prod).",
    }
}


def _private_endpoint(args: ResourceValidationArgs) -> Iterable[str]:
    vpc = args.props.get("vpcConfig") or {}
    if vpc.get("endpointPrivateAccess") is not True:
        yield "EKS API endpoint has no private access (vpcConfig.endpointPrivateAccess)"
    public = vpc.get("endpointPublicAccess", True) is not False
    if public and setting(args, PRIVATE_ENDPOINT_SCHEMA, "requirePrivate"):
        yield "EKS API endpoint is public; this environment requires it private"
    elif public and not vpc.get("publicAccessCidrs"):
        yield "EKS API endpoint is open to 0.0.0.0/0; set eks.publicAccessCidrs or make it private"


def _secrets_encryption(args: ResourceValidationArgs) -> Iterable[str]:
    encryption = args.props.get("encryptionConfig") or {}
    if "secrets" not in list(encryption.get("resources") or []) or not present(
        encryption.get("provider") or {}, "keyArn"
    ):
        yield "EKS does not encrypt Kubernetes secrets with a KMS key (encryptionConfig)"


def _control_plane_logs(args: ResourceValidationArgs) -> Iterable[str]:
    enabled = set(args.props.get("enabledClusterLogTypes") or [])
    missing = [log for log in REQUIRED_LOGS if log not in enabled]
    if missing:
        yield f"EKS control plane logs missing: {', '.join(missing)}"


def _imdsv2(args: ResourceValidationArgs) -> Iterable[str]:
    options = args.props.get("metadataOptions") or {}
    if options.get("httpTokens") != "required":
        yield "instance metadata allows IMDSv1 (metadataOptions.httpTokens must be required)"


POLICIES = [
    resource_policy(
        name="eks-private-endpoint",
        description="EKS API endpoints are private where required, never open to the internet.",
        types=[EKS_CLUSTER],
        rule=_private_endpoint,
        severity=Severity.HIGH,
        framework=control(FSBP, "EKS.1"),
        remediation="Leave eks.endpointPublicAccess unset in prod (private), or list publicAccessCidrs.",
        config=PRIVATE_ENDPOINT_SCHEMA,
        tags=["network-exposure"],
    ),
    resource_policy(
        name="eks-secrets-encryption",
        description="EKS encrypts Kubernetes secrets with a KMS key.",
        types=[EKS_CLUSTER],
        rule=_secrets_encryption,
        severity=Severity.HIGH,
        framework=control(FSBP, "EKS.3"),
        remediation="Create the cluster through components.targets.eks.EksCluster (KMS key per cluster).",
        tags=["workload-security"],
    ),
    resource_policy(
        name="eks-control-plane-logging",
        description="EKS sends api, audit and authenticator logs to CloudWatch.",
        types=[EKS_CLUSTER],
        rule=_control_plane_logs,
        severity=Severity.MEDIUM,
        framework=control(FSBP, "EKS.8"),
        remediation="Enable log types api, audit, authenticator (EksCluster enables all five).",
        tags=["quality"],
    ),
    resource_policy(
        name="ec2-imdsv2-required",
        description="EC2 capacity (nodes, runners) requires IMDSv2.",
        types=[LAUNCH_TEMPLATE, INSTANCE],
        rule=_imdsv2,
        severity=Severity.HIGH,
        framework=control(FSBP, "EC2.8"),
        remediation="Set metadata_options http_tokens='required' (and hop limit 1 to keep pods out).",
        tags=["workload-security"],
    ),
]


LISTENER = "aws:lb/listener:Listener"
LOAD_BALANCER = "aws:lb/loadBalancer:LoadBalancer"

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


def _tls_policy(args: ResourceValidationArgs) -> Iterable[str]:
    if args.props.get("protocol") != "HTTPS":
        return
    policy = args.props.get("sslPolicy")
    if policy not in setting(args, TLS_SCHEMA, "allowedPolicies"):
        yield f"HTTPS listener uses TLS policy {policy or 'the default'}; use a TLS 1.2+ policy"


def _alb_hardening(args: ResourceValidationArgs) -> Iterable[str]:
    if args.props.get("loadBalancerType", "application") != "application":
        return
    if args.props.get("dropInvalidHeaderFields") is not True:
        yield "ALB does not drop invalid HTTP header fields (request smuggling)"


def _alb_access_logs(args: ResourceValidationArgs) -> Iterable[str]:
    logs = args.props.get("accessLogs") or {}
    if logs.get("enabled") is not True or not present(logs, "bucket"):
        yield "ALB access logs are off; send them to the environment's log bucket"


def _alb_deletion_protection(args: ResourceValidationArgs) -> Iterable[str]:
    if setting(args, DELETION_SCHEMA, "required") and args.props.get("enableDeletionProtection") is not True:
        yield "ALB has no deletion protection; this environment requires it"


POLICIES += [
    resource_policy(
        name="alb-https-only",
        description="HTTP listeners only redirect to HTTPS.",
        types=[LISTENER],
        rule=_https_only,
        severity=Severity.HIGH,
        framework=control(FSBP, "ELB.1"),
        remediation="Set ecs.certificateArn: the HTTP listener then only redirects to the HTTPS one.",
        config=HTTPS_SCHEMA,
        tags=["network-exposure"],
    ),
    resource_policy(
        name="alb-tls-policy",
        description="HTTPS listeners allow TLS 1.2 and later only.",
        types=[LISTENER],
        rule=_tls_policy,
        severity=Severity.HIGH,
        framework=control(FSBP, "ELB.17"),
        remediation="Use ssl_policy ELBSecurityPolicy-TLS13-1-2-2021-06.",
        config=TLS_SCHEMA,
        tags=["network-exposure"],
    ),
    resource_policy(
        name="alb-drop-invalid-headers",
        description="Application Load Balancers drop invalid HTTP headers.",
        types=[LOAD_BALANCER],
        rule=_alb_hardening,
        severity=Severity.MEDIUM,
        framework=control(FSBP, "ELB.4"),
        remediation="Set drop_invalid_header_fields=True.",
        tags=["network-exposure"],
    ),
    resource_policy(
        name="alb-access-logs",
        description="Application Load Balancers write access logs.",
        types=[LOAD_BALANCER],
        rule=_alb_access_logs,
        severity=Severity.MEDIUM,
        framework=control(FSBP, "ELB.5"),
        remediation="Set access_logs to the EcsCluster's log bucket with enabled=True.",
        tags=["quality"],
    ),
    resource_policy(
        name="alb-deletion-protection",
        description="Application Load Balancers have deletion protection where required (prod).",
        types=[LOAD_BALANCER],
        rule=_alb_deletion_protection,
        severity=Severity.MEDIUM,
        framework=control(FSBP, "ELB.6"),
        remediation="Set enable_deletion_protection=True (components do in prod).",
        config=DELETION_SCHEMA,
        tags=["quality"],
    ),
]
