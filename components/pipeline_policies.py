"""The pipeline roles' AWS grants, generated from the permission table (components/permissions.py).

The deploy role (`pouw-<env>-deploy`) gets every AWS row's create, update, delete and read actions,
except IAM (its inline policy, `deploy_iam_policy` in components/runners.py, scopes those to the stack's
roles and the boundary) and what only the bootstrap identity does (a row's `bootstrap`). The preview
role (`pouw-<env>-preview`) gets every AWS row's read actions, IAM reads included. A row change is a
policy change: nothing here names an action; the table does.

Each action is granted on the ARNs of what this stack makes (`SCOPES`, by service: the account, the
stack's names `pouw-<env>`, `/pouw/...`, `*-alb-logs-*`), on `*` only where the Service Authorization
Reference lists no resource type for it (`UNSCOPED`, one reason per action group), and EC2 deletions of
a resource the stack tags only while it carries this environment's tag (`conditions`).

IAM quotas (IAM User Guide, "IAM and AWS STS quotas"): a managed policy is at most 6,144 characters,
whitespace not counted, and a role has at most 10 managed policies attached by default. The statements
are packed, in a fixed order, into as few documents as fit; each becomes `pouw-<env>-<kind>-<n>`.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from components.permissions import PERMISSIONS, Row

MAX_POLICY_CHARS = 6144  # a customer managed policy document, whitespace not counted
MAX_MANAGED_POLICIES = 10  # managed policies attached to one role (default quota)
ACCOUNT_DIGITS = 12  # an account id is always 12 digits: the split is decided before the id is known
TAG_KEY = "environment"  # Settings.tags(): every resource the stack tags carries it

# Where each service's resources are, by the stack's conventions; `{account}`, `{env}` filled in.
SCOPES: dict[str, tuple[str, ...]] = {
    # Scalable targets have random ids: the account's.
    "application-autoscaling": ("arn:aws:application-autoscaling:*:{account}:scalable-target/*",),
    # EC2 ARNs carry ids, not names: the account's (deletions also need the tag, `conditions`), plus
    # the public AMIs and their snapshots that RunInstances (EKS nodes) reads, which have no account.
    "ec2": ("arn:aws:ec2:*:{account}:*", "arn:aws:ec2:*::image/*", "arn:aws:ec2:*::snapshot/*"),
    # Repositories are named after the services (EcrRepository): the account's repositories.
    "ecr": ("arn:aws:ecr:*:{account}:repository/*",),
    # The ECS cluster is `pouw-<env>` (StackContext.cluster_name), its services under it; task
    # definition families are the services' slots.
    "ecs": (
        "arn:aws:ecs:*:{account}:cluster/pouw-{env}",
        "arn:aws:ecs:*:{account}:service/pouw-{env}/*",
        "arn:aws:ecs:*:{account}:task-definition/*",
    ),
    # Web ACLs are autonamed (ecs-waf, eks-waf); associations act on the web ACL and the load balancer
    # (Service Authorization Reference, AWS WAF V2: AssociateWebACL, GetWebACLForResource).
    "wafv2": (
        "arn:aws:wafv2:*:{account}:regional/webacl/*",
        "arn:aws:wafv2:*:{account}:regional/managedruleset/*",
        "arn:aws:elasticloadbalancing:*:{account}:loadbalancer/app/*",
    ),
    # The EKS cluster is `pouw-<env>`: it, its node groups and its access entries.
    "eks": (
        "arn:aws:eks:*:{account}:cluster/pouw-{env}",
        "arn:aws:eks:*:{account}:nodegroup/pouw-{env}/*",
        "arn:aws:eks:*:{account}:access-entry/pouw-{env}/*",
    ),
    # Load balancers, target groups, listeners and rules are autonamed: the account's.
    "elasticloadbalancing": (
        "arn:aws:elasticloadbalancing:*:{account}:loadbalancer/app/*",
        "arn:aws:elasticloadbalancing:*:{account}:targetgroup/*",
        "arn:aws:elasticloadbalancing:*:{account}:listener/app/*",
        "arn:aws:elasticloadbalancing:*:{account}:listener-rule/app/*",
    ),
    # Keys have random ids: the account's keys.
    "kms": ("arn:aws:kms:*:{account}:key/*",),
    # The stack's log groups: /pouw/... (AwsNetwork, EcsService) and the EKS control plane's.
    "logs": (
        "arn:aws:logs:*:{account}:log-group:/pouw/*",
        "arn:aws:logs:*:{account}:log-group:/aws/eks/pouw-{env}/*",
    ),
    # The ALB access-log bucket (EcsCluster, `<cluster>-alb-logs`, autonamed).
    "s3": ("arn:aws:s3:::*-alb-logs-*",),
    # The preview role's IAM reads (the deploy role's are its inline policy): filled in by the caller
    # (components/runners.py knows the stack's role names), plus the stack's own managed policies and
    # the AWS managed ones attached to its roles.
    "iam": (
        "arn:aws:iam::{account}:policy/pouw-{env}-*",
        "arn:aws:iam::aws:policy/*",
        "arn:aws:iam::{account}:oidc-provider/*",
    ),
}

# Actions without a resource type in the Service Authorization Reference: granted on `*`. By group,
# with why; `unscoped()` is the one test of membership.
_NO_RESOURCE_TYPE: dict[str, tuple[str, ...]] = {
    "EC2, ELB and Application Auto Scaling Describe calls list: no resource-level permissions": (
        "ec2:Describe*",
        "elasticloadbalancing:Describe*",
        "application-autoscaling:Describe*",
    ),
    "ECR: the registry login and the registry-wide scanning setting have no resource": (
        "ecr:GetAuthorizationToken",
        "ecr:PutRegistryScanningConfiguration",
        "ecr:GetRegistryScanningConfiguration",
    ),
    "Inspector: enabling scanning is account-wide": ("inspector2:Enable",),
    "KMS: a key that does not exist yet has no ARN": ("kms:CreateKey",),
    "ECS: creating a cluster and task definition revisions have no resource type": (
        "ecs:CreateCluster",
        "ecs:RegisterTaskDefinition",
        "ecs:DeregisterTaskDefinition",
        "ecs:DescribeTaskDefinition",
    ),
    "EKS: creating a cluster has no resource type (request-tag conditions only)": ("eks:CreateCluster",),
    "CloudWatch Logs: log deliveries have no resource type; DescribeLogGroups lists the account's": (
        "logs:CreateLogDelivery",
        "logs:DeleteLogDelivery",
        "logs:DescribeLogGroups",
    ),
}
UNSCOPED: dict[str, str] = {
    pattern: reason for reason, patterns in _NO_RESOURCE_TYPE.items() for pattern in patterns
}


def unscoped(action: str) -> str | None:
    """Why `action` is granted on `*` (None: it is scoped). `ec2:Describe*` here is a way to name the
    group, not a grant: the policies list each action the table names."""
    for pattern, reason in UNSCOPED.items():
        if fnmatch.fnmatchcase(action, pattern):
            return reason
    return None


def service(action: str) -> str:
    return action.split(":", 1)[0]


def aws_rows(rows: Mapping[str, Row] = PERMISSIONS) -> dict[str, Row]:
    return {t: r for t, r in rows.items() if r.cloud == "aws"}


def tag_conditioned(rows: Mapping[str, Row] = PERMISSIONS) -> frozenset[str]:
    """EC2 delete actions of the rows whose resources are tagged at creation (`ec2:CreateTags`) that
    nothing else needs unconditioned: granted only while the resource carries this environment's tag."""
    aws = aws_rows(rows).values()
    tagged = {a for r in aws if "ec2:CreateTags" in r.create for a in r.delete if service(a) == "ec2"}
    elsewhere = {
        a
        for r in aws
        for op, actions in (
            ("create", r.create),
            ("update", r.update),
            ("delete", r.delete),
            ("read", r.read),
        )
        for a in actions
        if op != "delete" or "ec2:CreateTags" not in r.create
    }
    return frozenset(tagged - elsewhere)


def conditions(environment: str, rows: Mapping[str, Row] = PERMISSIONS) -> dict[str, tuple[str, Any]]:
    """Actions granted only under a condition: (the statement's kind, the IAM Condition block)."""
    tagged = {"StringEquals": {f"aws:ResourceTag/{TAG_KEY}": environment}}
    out: dict[str, tuple[str, Any]] = {a: ("Tagged", tagged) for a in tag_conditioned(rows)}
    # A KMS grant only for an AWS service that uses the key for a resource (ECR's repository
    # encryption), never one the role hands to a principal of its choosing (KMS Developer Guide,
    # condition key kms:GrantIsForAWSResource).
    out["kms:CreateGrant"] = ("ForAwsResource", {"Bool": {"kms:GrantIsForAWSResource": "true"}})
    return out


def deploy_actions(rows: Mapping[str, Row] = PERMISSIONS) -> frozenset[str]:
    """Every AWS row's create, update, delete (bar the bootstrap identity's) and read actions, but IAM."""
    actions: set[str] = set()
    for row in aws_rows(rows).values():
        for operation in ("create", "update", "delete"):
            if operation not in row.bootstrap:
                actions.update(row.actions(operation))
        actions.update(row.read)
    return frozenset(a for a in actions if service(a) != "iam")


def preview_actions(rows: Mapping[str, Row] = PERMISSIONS) -> frozenset[str]:
    """Every AWS row's read actions, IAM's included."""
    return frozenset(a for row in aws_rows(rows).values() for a in row.read)


def _sid(*words: str) -> str:
    return "".join(w[:1].upper() + w[1:] for part in words for w in re.split(r"[^A-Za-z0-9]+", part) if w)


def statements(
    actions: Iterable[str],
    environment: str,
    account: str,
    scopes: Mapping[str, Sequence[str]] | None = None,
    conditioned: Mapping[str, tuple[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One statement per service and kind (scoped; `*` for actions without a resource type; each
    condition of `conditioned`), in a fixed order. A service without a scope is an error naming this file."""
    scopes = {**SCOPES, **(scopes or {})}
    conditioned = conditioned or {}
    groups: dict[tuple[str, str], set[str]] = {}
    for action in actions:
        kind = "NoResourceType" if unscoped(action) else conditioned.get(action, ("", None))[0]
        if kind != "NoResourceType" and service(action) not in scopes:
            raise KeyError(
                f"{action}: no resource scope for {service(action)!r} in components/pipeline_policies.py "
                "SCOPES (add the ARN patterns of what the stack makes), or add it to UNSCOPED with why"
            )
        groups.setdefault((service(action), kind), set()).add(action)
    out = []
    for (svc, kind), members in sorted(groups.items()):
        statement: dict[str, Any] = {"Sid": _sid(svc, kind), "Effect": "Allow", "Action": sorted(members)}
        if kind == "NoResourceType":
            statement["Resource"] = "*"
        else:
            fill = {"account": account, "env": environment}
            statement["Resource"] = sorted({p.format(**fill) for p in scopes[svc]})
        condition = next((c for k, c in conditioned.values() if k == kind and kind), None)
        if condition is not None:
            statement["Condition"] = condition
        out.append(statement)
    return out


def size(document: str | Mapping[str, Any]) -> int:
    """A policy's size as IAM counts it: characters without whitespace."""
    text = document if isinstance(document, str) else json.dumps(document)
    return len(re.sub(r"\s", "", text))


def _doc(statements: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)}, sort_keys=True)


def _fit(statement: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """A statement too large for one policy, halved by its actions (Sids numbered) until each fits."""
    if size(_doc([statement])) <= limit:
        return [statement]
    actions = statement["Action"]
    if len(actions) < 2:
        raise ValueError(f"{statement['Sid']}: one action does not fit in {limit} characters")
    half = len(actions) // 2
    parts = [dict(statement, Action=actions[:half]), dict(statement, Action=actions[half:])]
    out = [p for part in parts for p in _fit(part, limit)]
    return [dict(p, Sid=f"{statement['Sid']}{i}") for i, p in enumerate(out, 1)]


def pack(statements: Sequence[dict[str, Any]], limit: int = MAX_POLICY_CHARS) -> list[str]:
    """The statements, in order, in as few documents of at most `limit` characters as they fill
    (first fit in order: the same table gives the same documents)."""
    documents: list[list[dict[str, Any]]] = []
    for statement in (p for s in statements for p in _fit(s, limit)):
        if documents and size(_doc([*documents[-1], statement])) <= limit:
            documents[-1].append(statement)
        else:
            documents.append([statement])
    if len(documents) > MAX_MANAGED_POLICIES:
        raise ValueError(f"{len(documents)} policies exceed IAM's {MAX_MANAGED_POLICIES} per role")
    return [_doc(d) for d in documents]


def deploy_documents(environment: str, account: str) -> list[str]:
    """The deploy role's managed policies outside IAM (pouw-<env>-deploy-<n>)."""
    return pack(statements(deploy_actions(), environment, account, conditioned=conditions(environment)))


def preview_documents(environment: str, account: str, role_arns: Sequence[str]) -> list[str]:
    """The preview role's read policies (pouw-<env>-preview-<n>): IAM reads on the stack's roles
    (`role_arns`), its managed policies and OIDC providers, and the AWS managed policies."""
    iam = (*role_arns, *SCOPES["iam"])
    return pack(statements(preview_actions(), environment, account, scopes={"iam": iam}))


def placeholder_account() -> str:
    """An account id of the real one's length: how many documents there are is known before it is."""
    return "0" * ACCOUNT_DIGITS
