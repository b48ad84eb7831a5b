"""CI runners and agents: the pods that run pipeline jobs (ARC runner scale sets, Jenkins agent pod
templates) are pinned, keyless where they can be, non-root with a high UID, read-only where they can.

Runner pods are not declared as workloads: an ARC scale set's pod template sits in its Helm values,
a Jenkins agent's in the ConfigMap the controller reads (`podTemplateKeys`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import yaml
from pulumi_policy import ResourceValidationArgs, Severity

import resource_types as t
from pack_support import CI, CIS_K8S, PROJECT, num, setting
from workload_security import scale_set

TEMPLATE_SCHEMA: dict[str, dict[str, Any]] = {
    "podTemplateKeys": {
        "type": "array",
        "items": {"type": "string"},
        "default": ["pod-template.yaml"],
        "description": "ConfigMap data keys that hold a CI agent pod template (Jenkins Kubernetes plugin).",
    }
}
UID_SCHEMA: dict[str, dict[str, Any]] = {
    **TEMPLATE_SCHEMA,
    "minimumUid": {
        "type": "integer",
        "default": 10000,
        "description": "Lowest UID a runner container may run as (above the host's users).",
    },
}
WRITABLE_SCHEMA: dict[str, dict[str, Any]] = {
    **TEMPLATE_SCHEMA,
    "writableContainers": {
        "type": "array",
        "items": {"type": "string"},
        "default": ["dind"],
        "description": "Runner containers that need a writable root (the Docker daemon of dind mode).",
    },
}


def runner_pods(
    args: ResourceValidationArgs, schema: dict[str, dict[str, Any]]
) -> Iterator[tuple[str, Any, str]]:
    """(what, pod spec, container mode) of every CI runner or agent pod template in the resource."""
    values = scale_set(args) if args.resource_type == t.HELM_RELEASE else None
    if values is not None:
        mode = str((values.get("containerMode") or {}).get("type") or "")
        name = values.get("runnerScaleSetName") or args.name
        yield f"runner scale set {name}", (values.get("template") or {}).get("spec") or {}, mode
    elif args.resource_type == t.CONFIG_MAP:
        keys = setting(args, schema, "podTemplateKeys")
        for key, text in (args.props.get("data") or {}).items():
            if key in keys and isinstance(text, str):
                document = _parse(text)
                if isinstance(document, dict) and document.get("kind", "Pod") == "Pod":
                    yield f"agent pod template {key}", document.get("spec") or {}, "jenkins"


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return None


def _containers(pod: Any) -> Iterator[Any]:
    for kind in ("initContainers", "containers"):
        yield from pod.get(kind) or []


RUNNER_TYPES = [t.HELM_RELEASE, t.CONFIG_MAP]


@CI.resource(
    "ci-runner-image-digest",
    "Runner and agent images are pinned by digest.",
    types=RUNNER_TYPES,
    severity=Severity.HIGH,
    controls=[PROJECT("immutable-image-references")],
    checkov=["CKV_K8S_43"],
    remediation="Pin ciRunners images as name@sha256:... (Dependabot or Renovate moves the digest).",
    config=TEMPLATE_SCHEMA,
)
def _runner_digest(args: ResourceValidationArgs) -> Iterable[str]:
    for what, pod, _ in runner_pods(args, TEMPLATE_SCHEMA):
        for c in _containers(pod):
            image = str(c.get("image") or "")
            if "@sha256:" not in image:
                yield f"{what}: container {c.get('name')} image {image!r} is not pinned by digest"


@CI.resource(
    "ci-runner-no-service-account-token",
    "Runner and agent pods mount no service-account token unless their mode drives the Kubernetes API.",
    types=RUNNER_TYPES,
    severity=Severity.MEDIUM,
    controls=[CIS_K8S("5.1.6")],
    checkov=["CKV_K8S_38"],
    remediation="Set automountServiceAccountToken: false (IRSA's projected token is mounted separately); "
    "ARC containerMode kubernetes keeps it, its runner creates the job pods.",
    config=TEMPLATE_SCHEMA,
)
def _runner_token(args: ResourceValidationArgs) -> Iterable[str]:
    for what, pod, mode in runner_pods(args, TEMPLATE_SCHEMA):
        if mode != "kubernetes" and pod.get("automountServiceAccountToken") is not False:
            yield f"{what} mounts a service-account token it does not need (mode {mode or 'default'})"


@CI.resource(
    "ci-runner-non-root-high-uid",
    "Runner and agent containers run as non-root with a high UID (not a host user's).",
    types=RUNNER_TYPES,
    severity=Severity.MEDIUM,
    controls=[PROJECT("non-root")],
    checkov=["CKV_K8S_40"],
    remediation="Set runAsNonRoot: true and runAsUser >= minimumUid in the pod's securityContext.",
    config=UID_SCHEMA,
)
def _runner_uid(args: ResourceValidationArgs) -> Iterable[str]:
    minimum = setting(args, UID_SCHEMA, "minimumUid")
    for what, pod, _ in runner_pods(args, UID_SCHEMA):
        pod_sc = pod.get("securityContext") or {}
        for c in _containers(pod):
            if c.get("name") == "dind":  # the Docker daemon: arc-dind-advisory says so
                continue
            sc = c.get("securityContext") or {}
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
                yield f"{what}: container {c.get('name')} does not set runAsNonRoot: true"
            elif uid is None or uid < minimum:
                shown = "the image's" if uid is None else str(num(uid))
                yield f"{what}: container {c.get('name')} runs as UID {shown}; use {num(minimum)} or above"


@CI.resource(
    "ci-runner-read-only-root",
    "Runner and agent containers have a read-only root filesystem (work dirs on emptyDir).",
    types=RUNNER_TYPES,
    severity=Severity.LOW,
    controls=[CIS_K8S("5.7.3")],
    checkov=["CKV_K8S_22"],
    remediation="Set readOnlyRootFilesystem: true and mount emptyDir at the work, home and /tmp dirs.",
    config=WRITABLE_SCHEMA,
)
def _runner_read_only(args: ResourceValidationArgs) -> Iterable[str]:
    writable = set(setting(args, WRITABLE_SCHEMA, "writableContainers"))
    for what, pod, _ in runner_pods(args, WRITABLE_SCHEMA):
        for c in _containers(pod):
            name = c.get("name")
            if (
                name not in writable
                and (c.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True
            ):
                yield f"{what}: container {name} has a writable root filesystem"
