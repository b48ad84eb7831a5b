"""Identity: least privilege on the roles the project creates."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from pack_support import PROJECT, control, resource_policy

IAM_POLICIES = frozenset({"aws:iam/rolePolicy:RolePolicy", "aws:iam/policy:Policy"})


def _statements(document: Any) -> list[Any]:
    parsed = json.loads(document) if isinstance(document, str) else document
    statements = (parsed or {}).get("Statement") or []
    return statements if isinstance(statements, list) else [statements]


def _no_wildcards(args: ResourceValidationArgs) -> Iterable[str]:
    for statement in _statements(args.props.get("policy")):
        if statement.get("Effect") != "Allow":
            continue
        actions = statement.get("Action") or []
        for action in [actions] if isinstance(actions, str) else actions:
            if action == "*" or str(action).endswith(":*"):
                yield f"IAM policy allows {action!r}; list the actions the role needs"


POLICIES = [
    resource_policy(
        name="iam-no-wildcard-actions",
        description="IAM policies the project attaches list explicit actions, never '*' or 'service:*'.",
        types=IAM_POLICIES,
        rule=_no_wildcards,
        severity=Severity.HIGH,
        framework=control("AWS Foundational Security Best Practices", "IAM.21"),
        remediation="Replace the wildcard with the actions the workload calls (see components/iam.py).",
        tags=["identity"],
    ),
]


GITHUB = "token.actions.githubusercontent.com"
AWS_ROLE = "aws:iam/role:Role"
GCP_WIF_PROVIDER = "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider"
AZURE_FEDERATED = "azure-native:managedidentity:FederatedIdentityCredential"
PINNED_SUBJECT = re.compile(r"^repo:[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+:[^*]+$")
PINNED_CONDITION = re.compile(r"assertion\.repository\s*==\s*['\"][A-Za-z0-9-]+/[A-Za-z0-9._-]+['\"]")


def _github_trust(args: ResourceValidationArgs) -> Iterable[str]:
    if args.resource_type == AWS_ROLE:
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
    elif args.resource_type == GCP_WIF_PROVIDER:
        issuer = str((args.props.get("oidc") or {}).get("issuerUri") or "")
        if GITHUB in issuer and not PINNED_CONDITION.search(str(args.props.get("attributeCondition") or "")):
            yield "GitHub workload identity provider has no attribute condition pinning assertion.repository"
    elif GITHUB in str(args.props.get("issuer") or ""):
        subject = str(args.props.get("subject") or "")
        if not PINNED_SUBJECT.match(subject):
            yield f"federated credential subject {subject!r} is not pinned to one repository"


POLICIES += [
    resource_policy(
        name="github-oidc-trust-pinned",
        description="Keyless CI identities trust GitHub's OIDC token for one repository only.",
        types=[AWS_ROLE, GCP_WIF_PROVIDER, AZURE_FEDERATED],
        rule=_github_trust,
        severity=Severity.CRITICAL,
        framework=control(PROJECT, "keyless-ci-identities"),
        remediation="Set pipelineIdentities.repository (owner/repo); sub is then pinned per environment.",
        tags=["identity"],
    ),
]
