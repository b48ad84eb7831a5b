"""IAM policy documents, written once: trust policies and least-privilege statements."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_aws.iam as iam


def document(statements: Sequence[dict[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)}, sort_keys=True)


def service_trust(service: str) -> str:
    """Trust policy letting an AWS service (e.g. eks.amazonaws.com) assume the role."""
    return document([{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}])


def irsa_statement(
    provider_arn: str, issuer_url: str, namespace: str, service_account: str
) -> dict[str, Any]:
    """Trust one Kubernetes service account through the cluster's OIDC provider (IRSA)."""
    issuer = issuer_url.removeprefix("https://")
    return {
        "Effect": "Allow",
        "Principal": {"Federated": provider_arn},
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {
            "StringEquals": {
                f"{issuer}:aud": "sts.amazonaws.com",
                f"{issuer}:sub": f"system:serviceaccount:{namespace}:{service_account}",
            }
        },
    }


def irsa_trust(provider_arn: str, issuer_url: str, namespace: str, service_account: str) -> str:
    return document([irsa_statement(provider_arn, issuer_url, namespace, service_account)])


def managed_policy(name: str) -> str:
    return f"arn:aws:iam::aws:policy/{name}"


def service_role(
    name: str,
    service: str,
    managed_policies: Sequence[str],
    tags: dict[str, str],
    parent: pulumi.Resource,
) -> tuple[iam.Role, list[iam.RolePolicyAttachment]]:
    """A role an AWS service assumes, with AWS-managed policies attached (by short name)."""
    opts = pulumi.ResourceOptions(parent=parent)
    role = iam.Role(name, assume_role_policy=service_trust(service), tags=tags, opts=opts)
    attachments = [
        iam.RolePolicyAttachment(
            f"{name}-{policy.rsplit('/', 1)[-1]}",
            role=role.name,
            policy_arn=managed_policy(policy),
            opts=opts,
        )
        for policy in managed_policies
    ]
    return role, attachments
