"""How every policy in this pack is declared: a decorator right above its rule.

A rule is a function that receives the validation args and yields violation messages. The decorator
(`Family.resource` / `Family.stack`) registers the policy with its stable name, severity, framework
controls, equivalent third-party check ids and remediation; it filters on resource type and leaves
the SDK's unknown-value handling alone: a rule that touches a value unknown during preview raises
`UnknownValueError`, which the SDK reports as a "can't run policy during preview" diagnostic
instead of a silent pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from pulumi_policy import (
    Policy,
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
Schema = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Control:
    """One control of a framework a policy implements (`CIS Kubernetes` `5.2.2`)."""

    framework: Framework
    reference: str

    @property
    def tag(self) -> str:
        return f"control:{self.framework.key}:{self.reference}"


@dataclass(frozen=True)
class Framework:
    """A compliance framework; `key` is its short label (tables, tags), `name` what GetAnalyzerInfo says."""

    key: str
    name: str
    version: str = ""

    def __call__(self, reference: str) -> Control:
        return Control(self, reference)


PSS_BASELINE = Framework("PSS baseline", "Kubernetes Pod Security Standards (baseline)", "v1.33")
PSS_RESTRICTED = Framework("PSS restricted", "Kubernetes Pod Security Standards (restricted)", "v1.33")
CIS_K8S = Framework("CIS Kubernetes", "CIS Kubernetes Benchmark", "1.9.0")
FSBP = Framework("AWS FSBP", "AWS Foundational Security Best Practices")
CIS_GCP = Framework("CIS GCP", "CIS Google Cloud Platform Foundation Benchmark", "2.0.0")
CIS_GKE = Framework("CIS GKE", "CIS Google Kubernetes Engine (GKE) Benchmark", "1.6.0")
CIS_DOCKER = Framework("CIS Docker", "CIS Docker Benchmark")
AZURE_POLICY = Framework("Azure Policy", "Azure Policy built-in")
PROJECT = Framework("baseline", "pouw-cicd baseline")


# Violation messages carry the frameworks only in GetAnalyzerInfo: the SDK's `framework` field holds
# one, so every control and third-party check id also travels as a tag (`control:<key>:<ref>`,
# `checkov:<id>`, `family:<key>`), which is what the README's table is generated from.
@dataclass(frozen=True)
class Family:
    """A group of policies by concern (the README's sections, the counts in a release note).

    `family.resource(...)` and `family.stack(...)` declare a policy right above its rule::

        @KUBERNETES_WORKLOADS.resource(
            "k8s-no-host-ports", "Containers do not bind host ports.",
            types=t.WORKLOADS, severity=Severity.HIGH,
            controls=[PSS_BASELINE("Host Ports")], checkov=["CKV_K8S_26"],
            remediation="Remove hostPort; expose the pod through a Service.",
        )
        def _host_ports(args): ...
    """

    key: str
    title: str

    def resource(
        self,
        name: str,
        description: str,
        *,
        types: Iterable[str] | Callable[[str], bool],
        severity: Severity,
        controls: list[Control],
        remediation: str,
        checkov: Iterable[str] = (),
        config: Schema | None = None,
        fix: Callable[[ResourceValidationArgs], dict[str, Any] | None] | None = None,
    ) -> Callable[[ResourceRule], ResourceRule]:
        """A policy over the resources whose type is in `types` (or for which `types(type)` holds).

        `fix`, when given, is its remediation: it runs only where the stack's policy config sets the
        policy's level to `remediate` (never by default) and returns the resource's corrected
        properties, or None when there is nothing to fix."""
        wanted = _type_filter(types)

        def register(rule: ResourceRule) -> ResourceRule:
            def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
                if not wanted(args.resource_type):
                    return
                for message in rule(args):
                    report(message, None)

            def remediate(args: ResourceValidationArgs) -> dict[str, Any] | None:
                return fix(args) if fix is not None and wanted(args.resource_type) else None

            # Read by shared_analysis: for any other type this policy's validate reports nothing.
            TYPE_FILTERS[name] = wanted
            _register(
                ResourceValidationPolicy(
                    name=name,
                    description=description,
                    validate=validate,
                    # The SDK types remediations as async, but runs plain functions too.
                    remediate=cast(ResourceRemediation, remediate) if fix is not None else None,
                    **self._metadata(severity, controls, checkov, remediation, config),
                )
            )
            return rule

        return register

    def stack(
        self,
        name: str,
        description: str,
        *,
        severity: Severity,
        controls: list[Control],
        remediation: str,
        checkov: Iterable[str] = (),
        config: Schema | None = None,
    ) -> Callable[[StackRule], StackRule]:
        """A policy over the whole stack. Its rule must stay linear in the number of resources: index
        what it needs in one pass, never compare resources pairwise."""

        def register(rule: StackRule) -> StackRule:
            def validate(args: StackValidationArgs, report: ReportViolation) -> None:
                for message, urn in rule(args):
                    report(message, urn)

            _register(
                StackValidationPolicy(
                    name=name,
                    description=description,
                    validate=validate,
                    **self._metadata(severity, controls, checkov, remediation, config),
                )
            )
            return rule

        return register

    def _metadata(
        self,
        severity: Severity,
        controls: list[Control],
        checkov: Iterable[str],
        remediation: str,
        config: Schema | None,
    ) -> dict[str, Any]:
        if not controls:
            raise ValueError("a policy names at least one framework control (PROJECT(...) if none)")
        first = controls[0]
        return {
            "severity": severity,
            "framework": PolicyComplianceFramework(
                name=first.framework.name, version=first.framework.version, reference=first.reference
            ),
            "remediation_steps": remediation,
            "config_schema": PolicyConfigSchema(properties={**(config or {}), **NOTE}),
            "tags": [f"family:{self.key}", *(c.tag for c in controls), *(f"checkov:{c}" for c in checkov)],
        }


# Every policy accepts a `note` in the stack's policy config: why this stack sets the level it does
# (a reviewed exception, a gap being fixed). The policies ignore it; the config files stay JSON.
NOTE: Schema = {
    "note": {"type": "string", "description": "Why this stack sets this policy's level (for readers)."}
}

REGISTRY: list[Policy] = []
# Resource policy name -> the type predicate its validate checks before anything else.
TYPE_FILTERS: dict[str, Callable[[str], bool]] = {}


def ordered() -> list[Policy]:
    """The registered policies, grouped by family in FAMILIES order (declaration order within one)."""
    rank = {f"family:{f.key}": i for i, f in enumerate(FAMILIES)}
    return sorted(REGISTRY, key=lambda p: min(rank.get(tag, len(rank)) for tag in p.tags or [""]))


def _register(policy: Policy) -> None:
    if any(p.name == policy.name for p in REGISTRY):
        raise ValueError(f"policy {policy.name} is declared twice")
    REGISTRY.append(policy)


def _type_filter(types: Iterable[str] | Callable[[str], bool]) -> Callable[[str], bool]:
    if callable(types):
        return types
    wanted = frozenset(types)
    return wanted.__contains__


IMAGES_REGISTRIES = Family("images-registries", "Images and registries")
KUBERNETES_WORKLOADS = Family("kubernetes-workloads", "Kubernetes workloads (Pod Security Standards)")
KUBERNETES_ACCESS = Family("kubernetes-access", "Kubernetes access and exposure")
AWS_COMPUTE = Family("aws-compute", "AWS compute: EKS, ECS, EC2")
AWS_IDENTITY = Family("aws-identity", "AWS resource policies and identities")
AWS_NETWORK_DATA = Family("aws-network-data", "AWS network and data")
GCP = Family("gcp", "Google Cloud")
AZURE = Family("azure", "Azure")
CI = Family("ci", "CI runners, agents and pipeline identities")
QUALITY = Family("quality", "Quality: attribution, protection, capacity, rollouts")
FAMILIES = [
    IMAGES_REGISTRIES,
    KUBERNETES_WORKLOADS,
    KUBERNETES_ACCESS,
    AWS_COMPUTE,
    AWS_IDENTITY,
    AWS_NETWORK_DATA,
    GCP,
    AZURE,
    CI,
    QUALITY,
]


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
