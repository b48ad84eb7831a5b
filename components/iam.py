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
    boundary: pulumi.Input[str] | None = None,
) -> tuple[iam.Role, list[iam.RolePolicyAttachment]]:
    """A role an AWS service assumes, with AWS-managed policies attached (by short name), under the
    stack's permissions boundary when it has one."""
    opts = pulumi.ResourceOptions(parent=parent)
    role = iam.Role(
        name,
        assume_role_policy=service_trust(service),
        permissions_boundary=boundary,
        tags=tags,
        opts=opts,
    )
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


def boundary_name(environment: str) -> str:
    return f"pouw-{environment}-boundary"


def pipeline_role_name(environment: str, kind: str) -> str:
    """The deploy and preview roles' names (PipelineIdentities): fixed, so policies can name them."""
    return f"pouw-{environment}-{kind}"


def boundary_document(environment: str) -> str:
    """The most any role this stack creates may ever do: every service but IAM, Organizations and
    Account, the IAM reads and service-linked role the AWS Load Balancer Controller and the EKS
    cluster role call, and never a change to the pipeline roles or to this boundary. So a role the
    deploy role creates or changes never administers IAM (AWS IAM User Guide, "Permissions boundaries
    for IAM entities"). The deploy role's own grants outside IAM are narrower than this cap (generated
    from the permission table, components/pipeline_policies.py): a role it writes may hold service
    actions the deploy role lacks, within this boundary.

    Written with NotAction: a boundary grants nothing by itself, it caps. Listing each service's
    actions here would duplicate every AWS-managed policy the stack attaches and drift from them.
    """
    pipeline_roles = [
        f"arn:aws:iam::*:role/{pipeline_role_name(environment, k)}" for k in ("deploy", "preview")
    ]
    return document(
        [
            {
                "Sid": "EverythingButIdentityAdministration",
                "Effect": "Allow",
                "NotAction": ["iam:*", "organizations:*", "account:*"],
                "Resource": "*",
            },
            {
                "Sid": "LoadBalancerCertificates",
                "Effect": "Allow",
                "Action": ["iam:GetServerCertificate", "iam:ListServerCertificates"],
                "Resource": "*",
            },
            {
                "Sid": "ElbServiceLinkedRole",
                "Effect": "Allow",
                "Action": ["iam:CreateServiceLinkedRole"],
                "Resource": "*",
                "Condition": {"StringEquals": {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}},
            },
            {
                "Sid": "NeverThePipelineRoles",
                "Effect": "Deny",
                "Action": ["sts:AssumeRole", "sts:TagSession"],
                "Resource": pipeline_roles,
            },
        ]
    )


def permissions_boundary(name: str, environment: str, tags: dict[str, str]) -> iam.Policy:
    """The stack's permissions boundary (a customer-managed policy, named pouw-<env>-boundary): every
    role the stack makes, except the pipeline roles, carries it, and the deploy role may create or
    change a role only if it does (PipelineIdentities, `deploy_iam_policy`)."""
    return iam.Policy(
        name,
        name=boundary_name(environment),
        description=f"Permissions boundary of every role pouw-cicd creates in {environment}",
        policy=boundary_document(environment),
        tags=tags,
    )
