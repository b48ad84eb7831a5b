"""Clusters and network exposure: private control planes, IMDSv2, encrypted secrets, audit logs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from pack_support import FSBP, control, present, resource_policy, setting

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
