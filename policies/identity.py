"""Identity: least privilege on the roles the project creates."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

import resource_types as t
from pack_support import AWS_IDENTITY, CI, FSBP, PROJECT


def _statements(document: Any) -> list[Any]:
    parsed = json.loads(document) if isinstance(document, str) else document
    statements = (parsed or {}).get("Statement") or []
    return statements if isinstance(statements, list) else [statements]


@AWS_IDENTITY.resource(
    "iam-no-wildcard-actions",
    "IAM policies the project attaches list explicit actions, never '*' or 'service:*'.",
    types=t.IAM_POLICIES,
    severity=Severity.HIGH,
    controls=[FSBP("IAM.21")],
    checkov=["CKV_AWS_63"],
    remediation="Replace the wildcard with the actions the workload calls (see components/iam.py).",
)
def _no_wildcards(args: ResourceValidationArgs) -> Iterable[str]:
    for statement in _statements(args.props.get("policy")):
        if statement.get("Effect") != "Allow":
            continue
        actions = statement.get("Action") or []
        for action in [actions] if isinstance(actions, str) else actions:
            if action == "*" or str(action).endswith(":*"):
                yield f"IAM policy allows {action!r}; list the actions the role needs"


GITHUB = "token.actions.githubusercontent.com"
PINNED_SUBJECT = re.compile(r"^repo:[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+:[^*]+$")
PINNED_CONDITION = re.compile(r"assertion\.repository\s*==\s*['\"][A-Za-z0-9-]+/[A-Za-z0-9._-]+['\"]")


@CI.resource(
    "github-oidc-trust-pinned",
    "Keyless CI identities trust GitHub's OIDC token for one repository only.",
    types=[t.IAM_ROLE, t.GCP_WIF_PROVIDER, t.FEDERATED_CREDENTIAL],
    severity=Severity.CRITICAL,
    controls=[PROJECT("keyless-ci-identities")],
    checkov=["CKV_GCP_118"],
    remediation="Set pipelineIdentities.repository (owner/repo); sub is then pinned per environment.",
)
def _github_trust(args: ResourceValidationArgs) -> Iterable[str]:
    if args.resource_type == t.IAM_ROLE:
        for statement in _statements(args.props.get("assumeRolePolicy")):
            federated = str((statement.get("Principal") or {}).get("Federated") or "")
            if GITHUB not in federated:
                continue
            conditions = statement.get("Condition") or {}
            exact = conditions.get("StringEquals") or {}
            like = conditions.get("StringLike") or {}
            sub = exact.get(f"{GITHUB}:sub") or like.get(f"{GITHUB}:sub")
            subs = [sub] if isinstance(sub, str) else list(sub or [])
            if not subs:
                yield "GitHub OIDC trust has no sub condition: any repository on GitHub could assume the role"
            for value in subs:
                if not PINNED_SUBJECT.match(str(value)):
                    yield f"GitHub OIDC trust sub {value!r} is not pinned to one repository (no wildcards)"
            if exact.get(f"{GITHUB}:aud") != "sts.amazonaws.com":
                yield "GitHub OIDC trust does not pin aud to sts.amazonaws.com"
    elif args.resource_type == t.GCP_WIF_PROVIDER:
        issuer = str((args.props.get("oidc") or {}).get("issuerUri") or "")
        if GITHUB in issuer and not PINNED_CONDITION.search(str(args.props.get("attributeCondition") or "")):
            yield "GitHub workload identity provider has no attribute condition pinning assertion.repository"
    elif GITHUB in str(args.props.get("issuer") or ""):
        subject = str(args.props.get("subject") or "")
        if not PINNED_SUBJECT.match(subject):
            yield f"federated credential subject {subject!r} is not pinned to one repository"


# Condition keys that pin who may use a `Principal: "*"` grant: an organisation, an account, a source
# resource or network. Anything else (a tag, a time) still lets the whole internet in.
RESTRICTING_KEYS = frozenset(
    k.lower()
    for k in (
        "aws:PrincipalOrgID",
        "aws:PrincipalOrgPaths",
        "aws:PrincipalAccount",
        "aws:PrincipalArn",
        "aws:SourceAccount",
        "aws:SourceArn",
        "aws:SourceOrgID",
        "aws:SourceOrgPaths",
        "aws:SourceVpc",
        "aws:SourceVpce",
        "aws:SourceIp",
        "aws:userid",
        "kms:CallerAccount",
    )
)


def _public_principal(principal: Any) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, dict):
        values = principal.get("AWS")
        return "*" in ([values] if isinstance(values, str) else list(values or []))
    return False


def _restricted(statement: Any) -> bool:
    for operator in (statement.get("Condition") or {}).values():
        if any(str(key).lower() in RESTRICTING_KEYS for key in operator or {}):
            return True
    return False


def _public_grants(document: Any) -> Iterable[Any]:
    for statement in _statements(document):
        public = statement.get("Effect") == "Allow" and _public_principal(statement.get("Principal"))
        if public and not _restricted(statement):
            yield statement


@AWS_IDENTITY.resource(
    "aws-resource-policy-not-public",
    "Resource policies (ECR, S3, KMS, SQS, SNS, Secrets Manager) never grant Principal '*' without a "
    "condition that pins the organisation, account, source or network.",
    types=t.RESOURCE_POLICIES,
    severity=Severity.CRITICAL,
    controls=[PROJECT("no-public-resource-policies")],
    checkov=["CKV_AWS_32", "CKV_AWS_70", "CKV_AWS_33", "CKV_AWS_168", "CKV_AWS_169"],
    remediation="Name the account or role principals, or add aws:PrincipalOrgID / aws:SourceAccount.",
)
def _resource_policy_public(args: ResourceValidationArgs) -> Iterable[str]:
    for statement in _public_grants(args.props.get("policy")):
        sid = statement.get("Sid")
        yield f"policy statement {sid or '(no Sid)'} allows Principal '*' with no restricting condition"


@AWS_IDENTITY.resource(
    "iam-role-trust-not-public",
    "Role trust policies never let Principal '*' assume the role without a restricting condition.",
    types=[t.IAM_ROLE],
    severity=Severity.CRITICAL,
    controls=[PROJECT("no-public-resource-policies")],
    checkov=["CKV_AWS_60"],
    remediation="Trust the accounts, roles, services or OIDC providers that assume the role.",
)
def _role_trust_public(args: ResourceValidationArgs) -> Iterable[str]:
    for _ in _public_grants(args.props.get("assumeRolePolicy")):
        yield "role trust policy lets Principal '*' assume the role"


ADMIN_POLICIES = re.compile(r"^arn:aws[a-z-]*:iam::aws:policy/(AdministratorAccess|IAMFullAccess)$")


@AWS_IDENTITY.resource(
    "iam-no-admin-managed-policies",
    "No role, user or group gets the AWS managed AdministratorAccess or IAMFullAccess policy.",
    types=t.IAM_ATTACHMENTS | {t.IAM_ROLE},
    severity=Severity.CRITICAL,
    controls=[PROJECT("least-privilege")],
    checkov=["CKV_AWS_274", "CKV2_AWS_56"],
    remediation="Attach a customer managed policy with the actions the identity needs.",
)
def _admin_managed(args: ResourceValidationArgs) -> Iterable[str]:
    if args.resource_type == t.IAM_ROLE:
        arns = list(args.props.get("managedPolicyArns") or [])
    else:
        arns = [args.props.get("policyArn")]
    for arn in arns:
        if ADMIN_POLICIES.match(str(arn or "")):
            yield f"attaches {arn}, which grants full administrative or IAM access"


# Actions that let an identity give itself (or a role it passes) more than it has: the known IAM
# privilege-escalation paths. A pattern (`iam:Put*`, `iam:*`, `*`) that covers one counts too.
ESCALATION_ACTIONS = tuple(
    f"iam:{action}".lower()
    for action in (
        "PassRole",
        "CreateRole",
        "CreatePolicyVersion",
        "SetDefaultPolicyVersion",
        "CreateAccessKey",
        "CreateLoginProfile",
        "UpdateLoginProfile",
        "AttachUserPolicy",
        "AttachGroupPolicy",
        "AttachRolePolicy",
        "PutUserPolicy",
        "PutGroupPolicy",
        "PutRolePolicy",
        "AddUserToGroup",
        "UpdateAssumeRolePolicy",
    )
)


def _covers_escalation(action: str) -> bool:
    pattern = action.strip().lower()
    return any(fnmatch.fnmatchcase(escalation, pattern) for escalation in ESCALATION_ACTIONS)


def _any_resource(resource: Any) -> bool:
    values = [resource] if isinstance(resource, str) else list(resource or [])
    return any(v == "*" or str(v).endswith(":*") or str(v).endswith("/*") for v in values)


@AWS_IDENTITY.resource(
    "iam-no-privilege-escalation",
    "IAM policies do not allow iam:PassRole or the Create/Put/Attach/Update escalation actions on every "
    "resource.",
    types=t.IAM_POLICIES,
    severity=Severity.CRITICAL,
    controls=[PROJECT("least-privilege")],
    checkov=["CKV_AWS_286"],
    remediation="Scope the statement's Resource to the roles and policies it manages "
    "(and iam:PassedToService).",
)
def _privilege_escalation(args: ResourceValidationArgs) -> Iterable[str]:
    for statement in _statements(args.props.get("policy")):
        if statement.get("Effect") != "Allow" or not _any_resource(statement.get("Resource")):
            continue
        actions = statement.get("Action") or []
        for action in [actions] if isinstance(actions, str) else actions:
            if _covers_escalation(str(action)):
                yield (
                    f"IAM policy allows {action} on every resource: an identity could escalate its own access"
                )
