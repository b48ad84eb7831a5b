"""Supply chain at admission: clusters verify the release's signatures before a pod runs, Cloud Run
requires Binary Authorization."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity, StackValidationArgs

import resource_types as t
from pack_support import GCP, IMAGES_REGISTRIES, PROJECT, present, setting

# Namespaces whose workloads are the platform's, not a service's.
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease", "kyverno"})

ENFORCE_SCHEMA: dict[str, dict[str, Any]] = {
    "requireEnforce": {
        "type": "boolean",
        "default": True,
        "description": "Require failureAction Enforce (false: an Audit policy passes, as in dev).",
    }
}


def _cluster(resource: Any) -> str:
    """The Kubernetes provider a resource is made with (one cluster), or '' when not known."""
    provider = getattr(resource, "provider", None)
    return str(getattr(provider, "urn", "") or "")


def _verifying(rule: Any, enforce: bool) -> bool:
    """Whether a ClusterPolicy rule verifies images with a keyless attestor pinned to an identity."""
    for verify in rule.get("verifyImages") or []:
        if enforce and verify.get("failureAction") != "Enforce":
            continue
        if verify.get("required") is False:
            continue
        for attestor in verify.get("attestors") or []:
            for entry in attestor.get("entries") or []:
                keyless = entry.get("keyless") or {}
                subject = present(keyless, "subject") or present(keyless, "subjectRegExp")
                if subject and present(keyless, "issuer"):
                    return True
    return False


def _matched_namespaces(rule: Any) -> set[str]:
    """The namespaces a rule's `match` selects Pods in."""
    found: set[str] = set()
    for clause in (rule.get("match") or {}).get("any") or []:
        resources = clause.get("resources") or {}
        if "Pod" in (resources.get("kinds") or []):
            found.update(resources.get("namespaces") or [])
    return found


@IMAGES_REGISTRIES.stack(
    "cluster-image-verification",
    "Every cluster namespace that runs service workloads is covered by a Kyverno ClusterPolicy that "
    "verifies image signatures (keyless, a pinned identity and issuer) and enforces it.",
    severity=Severity.CRITICAL,
    controls=[PROJECT("signed-images-at-admission")],
    remediation="Deploy the service through an EKS, GKE or AKS target: each cluster installs Kyverno and "
    "the verify-release-signatures ClusterPolicy (components/admission.py); set admission.enforce "
    "true outside dev.",
    config=ENFORCE_SCHEMA,
)
def _cluster_image_verification(args: StackValidationArgs) -> Iterable[tuple[str, str | None]]:
    enforce = bool(setting(args, ENFORCE_SCHEMA, "requireEnforce"))
    covered: set[tuple[str, str]] = set()
    workloads: dict[tuple[str, str], str] = {}
    for r in args.resources:
        if r.resource_type == t.KYVERNO_CLUSTER_POLICY:
            for rule in (r.props.get("spec") or {}).get("rules") or []:
                if _verifying(rule, enforce):
                    covered.update((_cluster(r), ns) for ns in _matched_namespaces(rule))
        elif r.resource_type in t.WORKLOADS:
            namespace = str((r.props.get("metadata") or {}).get("namespace") or "default")
            if namespace not in SYSTEM_NAMESPACES:
                workloads.setdefault((_cluster(r), namespace), r.urn)
    level = "enforcing " if enforce else ""
    for (cluster, namespace), urn in workloads.items():
        if (cluster, namespace) not in covered:
            yield (
                f"namespace {namespace} runs workloads but no {level}Kyverno verifyImages rule with a "
                "keyless attestor covers its pods: unsigned images would be admitted",
                urn,
            )


@GCP.resource(
    "cloudrun-binary-authorization",
    "Cloud Run services admit revisions through Binary Authorization (the project's policy or a named "
    "one), so only attested release digests run.",
    types=[t.CLOUD_RUN],
    severity=Severity.HIGH,
    controls=[PROJECT("signed-images-at-admission")],
    remediation="Deploy through components.targets.cloudrun with the admission block on: the service "
    "sets binaryAuthorization.useDefault and the stack makes the release attestor and policy.",
)
def _cloudrun_binary_authorization(args: ResourceValidationArgs) -> Iterable[str]:
    binauthz = args.props.get("binaryAuthorization") or {}
    if binauthz.get("useDefault") is not True and not present(binauthz, "policy"):
        yield "Cloud Run service does not use Binary Authorization: any image would run"
    elif present(binauthz, "breakglassJustification"):
        yield "Cloud Run service bypasses Binary Authorization with a breakglass justification"
