"""How every policy in this pack is declared: one helper, so each policy is only its rule.

A rule is a function that receives the validation args and yields violation messages. The helper
filters on resource type, wires severity, framework control and remediation steps, and leaves the
SDK's unknown-value handling alone: a rule that touches a value unknown during preview raises
`UnknownValueError`, which the SDK reports as a "can't run policy during preview" diagnostic
instead of a silent pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, cast

from pulumi_policy import (
    PolicyComplianceFramework,
    PolicyConfigSchema,
    ReportViolation,
    ResourceRemediation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

# Names that say "this value is a secret": such values belong in secret stores, never in plain config.
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|PRIVATE_KEY|CREDENTIAL|DATABASE_URL)", re.I)

ResourceRule = Callable[[ResourceValidationArgs], Iterable[str]]
StackRule = Callable[[StackValidationArgs], Iterable[tuple[str, str | None]]]

FSBP = "AWS Foundational Security Best Practices"
CIS_DOCKER = "CIS Docker Benchmark"
PROJECT = "pouw-cicd baseline"


def control(framework: str, reference: str, version: str = "") -> PolicyComplianceFramework:
    return PolicyComplianceFramework(name=framework, version=version, reference=reference)


def resource_policy(
    *,
    name: str,
    description: str,
    types: Iterable[str],
    rule: ResourceRule,
    severity: Severity,
    framework: PolicyComplianceFramework,
    remediation: str,
    config: dict[str, dict[str, Any]] | None = None,
    tags: list[str] | None = None,
    fix: Callable[[ResourceValidationArgs], dict[str, Any] | None] | None = None,
) -> ResourceValidationPolicy:
    """A policy over `types`. `fix`, when given, is its remediation: it runs only where the stack's
    policy config sets the policy's level to `remediate` (never by default) and returns the
    resource's corrected properties, or None when there is nothing to fix."""
    wanted = frozenset(types)

    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        if args.resource_type not in wanted:
            return
        for message in rule(args):
            report(message, None)

    def remediate(args: ResourceValidationArgs) -> dict[str, Any] | None:
        return fix(args) if fix is not None and args.resource_type in wanted else None

    return ResourceValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        # The SDK types remediations as async, but runs plain functions too (policy.py Remediate).
        remediate=cast(ResourceRemediation, remediate) if fix is not None else None,
        severity=severity,
        framework=framework,
        remediation_steps=remediation,
        config_schema=PolicyConfigSchema(properties=config) if config else None,
        tags=tags,
    )


def stack_policy(
    *,
    name: str,
    description: str,
    rule: StackRule,
    severity: Severity,
    framework: PolicyComplianceFramework,
    remediation: str,
    config: dict[str, dict[str, Any]] | None = None,
    tags: list[str] | None = None,
) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        for message, urn in rule(args):
            report(message, urn)

    return StackValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        severity=severity,
        framework=framework,
        remediation_steps=remediation,
        config_schema=PolicyConfigSchema(properties=config) if config else None,
        tags=tags,
    )


def setting(
    args: ResourceValidationArgs | StackValidationArgs, schema: dict[str, dict[str, Any]], key: str
) -> Any:
    """A policy config property, or its schema default when the stack's config leaves it out."""
    config = args.get_config() or {}
    return config.get(key, schema[key]["default"])


def present(mapping: Any, key: str) -> bool:
    """Whether `key` holds a value. A value that is unknown during preview is set, just not known yet."""
    try:
        return mapping.get(key) not in (None, "", [], {})
    except UnknownValueError:
        return True


def num(value: Any) -> Any:
    """Protobuf Structs carry every number as a float: show 80, not 80.0."""
    return int(value) if isinstance(value, float) and value.is_integer() else value
