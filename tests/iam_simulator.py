"""A small offline IAM evaluator for the policies this program writes: explicit Deny wins, then any
Allow; `Action`/`NotAction` and `Resource` match with IAM's `*`/`?` wildcards; conditions support the
operators the program uses (StringEquals, StringLike, their Not forms, Bool, Null). Enough to prove what a
deploy role can and cannot do without AWS's policy simulator, not a general implementation."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping, Sequence
from typing import Any


def _list(value: Any) -> list[Any]:
    return [value] if isinstance(value, str) else list(value or [])


def _match(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def _conditions(block: Mapping[str, Mapping[str, Any]], context: Mapping[str, str]) -> bool:
    for operator, tests in block.items():
        for key, wanted in tests.items():
            present = key in context
            if operator == "Null":
                if (str(wanted).lower() == "true") == present:
                    return False
                continue
            if not present:
                if operator.startswith("StringNot"):
                    continue  # IAM: a Not operator on an absent key matches
                return False
            value = context[key]
            if operator == "StringEquals":
                ok = value in _list(wanted)
            elif operator == "StringLike":
                ok = any(_match(w, value) for w in _list(wanted))
            elif operator == "StringNotEquals":
                ok = value not in _list(wanted)
            elif operator == "StringNotLike":
                ok = not any(_match(w, value) for w in _list(wanted))
            elif operator == "Bool":
                ok = value.lower() in [str(w).lower() for w in _list(wanted)]
            else:
                raise NotImplementedError(operator)
            if not ok:
                return False
    return True


def _applies(statement: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str]) -> bool:
    if "Action" in statement:
        if not any(_match(a, action) for a in _list(statement["Action"])):
            return False
    elif any(_match(a, action) for a in _list(statement.get("NotAction"))):
        return False
    if not any(_match(r, resource) for r in _list(statement.get("Resource", "*"))):
        return False
    return _conditions(statement.get("Condition") or {}, context)


def allowed(
    policies: Sequence[str | Mapping[str, Any]],
    action: str,
    resource: str,
    context: Mapping[str, str] | None = None,
) -> bool:
    """Whether the identity policies together allow `action` on `resource`."""
    statements = []
    for policy in policies:
        document = json.loads(policy) if isinstance(policy, str) else policy
        statements += (
            _list(document["Statement"])
            if not isinstance(document["Statement"], dict)
            else [document["Statement"]]
        )
    context = context or {}
    if any(s["Effect"] == "Deny" and _applies(s, action, resource, context) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and _applies(s, action, resource, context) for s in statements)
