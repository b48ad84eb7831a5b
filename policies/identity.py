"""Identity: least privilege on the roles the project creates."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from pack_support import control, resource_policy

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
