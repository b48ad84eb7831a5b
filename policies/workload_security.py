"""Workload security: the Pod Security Standards (baseline and restricted) and CIS Kubernetes hygiene.

Each PSS control is its own policy so a violation names exactly what to fix. They look at every pod
template a stack declares (resource_types.WORKLOADS: Deployments, StatefulSets, DaemonSets,
ReplicaSets, Jobs, CronJobs, bare Pods, PodTemplates, ReplicationControllers). Then the same
container hygiene for ECS task definitions, and the image rules every platform shares.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

import resource_types as t
from pack_support import (
    AWS_COMPUTE,
    CI,
    CIS_K8S,
    FSBP,
    IMAGES_REGISTRIES,
    KUBERNETES_WORKLOADS,
    PROJECT,
    PSS_BASELINE,
    PSS_RESTRICTED,
    SECRET_NAME,
    setting,
)

ALLOWED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)


def pod_spec(args: ResourceValidationArgs) -> Any:
    """The pod spec of any workload kind: a Pod's own, a PodTemplate's `template`, the rest's
    `spec.template` (a CronJob's one level further down, under `jobTemplate`)."""
    return pod_spec_of(args.resource_type, args.props)


def pod_spec_of(resource_type: str, props: Any) -> Any:
    if resource_type == t.POD_TEMPLATE:
        return (props.get("template") or {}).get("spec") or {}
    spec = props.get("spec") or {}
    if resource_type == t.POD:
        return spec
    if resource_type in t.CRON_JOBS:
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return (spec.get("template") or {}).get("spec") or {}


def pod_metadata(args: ResourceValidationArgs) -> Any:
    """The pod's metadata (annotations), wherever the kind keeps its template."""
    if args.resource_type == t.POD:
        return args.props.get("metadata") or {}
    if args.resource_type == t.POD_TEMPLATE:
        return (args.props.get("template") or {}).get("metadata") or {}
    spec = args.props.get("spec") or {}
    if args.resource_type in t.CRON_JOBS:
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return (spec.get("template") or {}).get("metadata") or {}


def containers(pod: Any) -> Iterator[tuple[str, Any]]:
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod.get(kind) or []:
            yield container.get("name") or "?", container


def _security(container: Any) -> Any:
    return container.get("securityContext") or {}


@KUBERNETES_WORKLOADS.resource(
    "k8s-no-privileged",
    "Containers are not privileged.",
    types=t.WORKLOADS,
    severity=Severity.CRITICAL,
    controls=[PSS_BASELINE("Privileged Containers"), CIS_K8S("5.2.2")],
    checkov=["CKV_K8S_16"],
    remediation="Remove securityContext.privileged.",
)
def _privileged(args: ResourceValidationArgs) -> Iterable[str]:
    for name, c in containers(pod_spec(args)):
        if _security(c).get("privileged") is True:
            yield f"container {name} is privileged"


@KUBERNETES_WORKLOADS.resource(
    "k8s-no-host-namespaces",
    "Pods do not share the host's network, PID or IPC namespace.",
    types=t.WORKLOADS,
    severity=Severity.CRITICAL,
    controls=[PSS_BASELINE("Host Namespaces"), CIS_K8S("5.2.3"), CIS_K8S("5.2.4"), CIS_K8S("5.2.5")],
    checkov=["CKV_K8S_17", "CKV_K8S_18", "CKV_K8S_19"],
    remediation="Remove hostNetwork, hostPID and hostIPC.",
)
def _host_namespaces(args: ResourceValidationArgs) -> Iterable[str]:
    pod = pod_spec(args)
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field) is True:
            yield f"pod shares the host's namespace ({field}: true)"


@KUBERNETES_WORKLOADS.resource(
    "k8s-volume-types",
    "Pods use only the volume types the restricted profile allows (no hostPath).",
    types=t.WORKLOADS,
    severity=Severity.HIGH,
    controls=[PSS_RESTRICTED("Volume Types"), PSS_BASELINE("HostPath Volumes"), CIS_K8S("5.2.12")],
    checkov=["CKV_K8S_27"],
    remediation="Use emptyDir, configMap, secret, projected or a PersistentVolumeClaim instead.",
)
def _volumes(args: ResourceValidationArgs) -> Iterable[str]:
    for volume in pod_spec(args).get("volumes") or []:
        kinds = [k for k in volume if k != "name"]
        for kind in kinds:
            if kind not in ALLOWED_VOLUMES:
                allowed = ", ".join(sorted(ALLOWED_VOLUMES))
                yield f"volume {volume.get('name')} is of type {kind}; restricted allows {allowed}"


@KUBERNETES_WORKLOADS.resource(
    "k8s-drop-all-capabilities",
    "Containers drop ALL capabilities and add none but NET_BIND_SERVICE.",
    types=t.WORKLOADS,
    severity=Severity.HIGH,
    controls=[
        PSS_RESTRICTED("Capabilities"),
        PSS_BASELINE("Capabilities"),
        CIS_K8S("5.2.8"),
        CIS_K8S("5.2.9"),
        CIS_K8S("5.2.10"),
    ],
    checkov=["CKV_K8S_25", "CKV_K8S_28", "CKV_K8S_37", "CKV_K8S_39"],
    remediation="Set securityContext.capabilities.drop: [ALL].",
)
def _capabilities(args: ResourceValidationArgs) -> Iterable[str]:
    for name, c in containers(pod_spec(args)):
        caps = _security(c).get("capabilities") or {}
        if "ALL" not in list(caps.get("drop") or []):
            yield f"container {name} does not drop ALL capabilities"
        extra = [cap for cap in caps.get("add") or [] if cap != "NET_BIND_SERVICE"]
        if extra:
            yield f"container {name} adds capabilities {', '.join(extra)}; only NET_BIND_SERVICE is allowed"


@KUBERNETES_WORKLOADS.resource(
    "k8s-no-privilege-escalation",
    "Containers set allowPrivilegeEscalation: false.",
    types=t.WORKLOADS,
    severity=Severity.HIGH,
    controls=[PSS_RESTRICTED("Privilege Escalation"), CIS_K8S("5.2.6")],
    checkov=["CKV_K8S_20"],
    remediation="Set securityContext.allowPrivilegeEscalation: false.",
)
def _privilege_escalation(args: ResourceValidationArgs) -> Iterable[str]:
    for name, c in containers(pod_spec(args)):
        if _security(c).get("allowPrivilegeEscalation") is not False:
            yield f"container {name} does not set allowPrivilegeEscalation: false"


@KUBERNETES_WORKLOADS.resource(
    "k8s-run-as-non-root",
    "Containers run as a non-root user.",
    types=t.WORKLOADS,
    severity=Severity.HIGH,
    controls=[
        PSS_RESTRICTED("Running as Non-root"),
        PSS_RESTRICTED("Running as Non-root user"),
        CIS_K8S("5.2.7"),
    ],
    checkov=["CKV_K8S_23"],
    remediation="Set runAsNonRoot: true and a non-zero runAsUser (the image's USER).",
)
def _non_root(args: ResourceValidationArgs) -> Iterable[str]:
    pod = pod_spec(args)
    pod_sc = pod.get("securityContext") or {}
    if pod_sc.get("runAsUser") == 0:
        yield "pod runs as user 0 (root)"
    for name, c in containers(pod):
        sc = _security(c)
        if sc.get("runAsUser") == 0:
            yield f"container {name} runs as user 0 (root)"
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            yield f"container {name} does not set runAsNonRoot: true (pod or container)"


@KUBERNETES_WORKLOADS.resource(
    "k8s-seccomp-runtime-default",
    "Containers run with the RuntimeDefault (or a Localhost) seccomp profile.",
    types=t.WORKLOADS,
    severity=Severity.MEDIUM,
    controls=[PSS_RESTRICTED("Seccomp"), PSS_BASELINE("Seccomp"), CIS_K8S("5.7.2")],
    checkov=["CKV_K8S_31"],
    remediation="Set securityContext.seccompProfile.type: RuntimeDefault on the pod.",
)
def _seccomp(args: ResourceValidationArgs) -> Iterable[str]:
    pod = pod_spec(args)
    pod_profile = ((pod.get("securityContext") or {}).get("seccompProfile") or {}).get("type")
    for name, c in containers(pod):
        profile = (_security(c).get("seccompProfile") or {}).get("type") or pod_profile
        if profile not in ("RuntimeDefault", "Localhost"):
            yield f"container {name} has seccomp profile {profile or 'unset'}; use RuntimeDefault"


@KUBERNETES_WORKLOADS.resource(
    "k8s-read-only-root-filesystem",
    "Containers have a read-only root filesystem.",
    types=t.WORKLOADS,
    severity=Severity.MEDIUM,
    controls=[CIS_K8S("5.7.3")],
    checkov=["CKV_K8S_22"],
    remediation="Set readOnlyRootFilesystem: true and mount an emptyDir at /tmp.",
)
def _read_only_root(args: ResourceValidationArgs) -> Iterable[str]:
    for name, c in containers(pod_spec(args)):
        if _security(c).get("readOnlyRootFilesystem") is not True:
            yield f"container {name} has a writable root filesystem; mount an emptyDir where it writes"


@KUBERNETES_WORKLOADS.resource(
    "k8s-resource-limits",
    "Containers declare CPU and memory requests and limits.",
    types=t.WORKLOADS,
    severity=Severity.MEDIUM,
    controls=[PROJECT("capacity")],
    checkov=["CKV_K8S_10", "CKV_K8S_11", "CKV_K8S_12", "CKV_K8S_13"],
    remediation="Set services[].resources (cpu, memory, cpuLimit, memoryLimit).",
)
def _resources(args: ResourceValidationArgs) -> Iterable[str]:
    for name, c in containers(pod_spec(args)):
        resources = c.get("resources") or {}
        for part in ("requests", "limits"):
            missing = [r for r in ("cpu", "memory") if not (resources.get(part) or {}).get(r)]
            if missing:
                yield f"container {name} has no {part} for {', '.join(missing)}"


@KUBERNETES_WORKLOADS.resource(
    "k8s-health-probes",
    "Application containers have readiness and liveness probes.",
    types=t.WORKLOADS,
    severity=Severity.MEDIUM,
    controls=[PROJECT("health-checks")],
    checkov=["CKV_K8S_8", "CKV_K8S_9"],
    remediation="Probe the service's healthPath (components.targets.eks does).",
)
def _probes(args: ResourceValidationArgs) -> Iterable[str]:
    for c in pod_spec(args).get("containers") or []:  # init containers run once; no probes
        name = c.get("name") or "?"
        missing = [p for p in ("readinessProbe", "livenessProbe") if not c.get(p)]
        if missing:
            yield f"container {name} has no {' or '.join(missing)}"


@KUBERNETES_WORKLOADS.resource(
    "k8s-no-service-account-token",
    "Pods do not mount a service account token unless they need the API.",
    types=t.WORKLOADS,
    severity=Severity.MEDIUM,
    controls=[CIS_K8S("5.1.6")],
    checkov=["CKV_K8S_38"],
    remediation="Set automountServiceAccountToken: false on the pod spec.",
)
def _token_automount(args: ResourceValidationArgs) -> Iterable[str]:
    if pod_spec(args).get("automountServiceAccountToken") is not False:
        yield "pod mounts a service account token; set automountServiceAccountToken: false"


def ecs_containers(args: ResourceValidationArgs) -> list[Any]:
    """Container definitions are a JSON string in the task definition's inputs."""
    raw = args.props.get("containerDefinitions") or "[]"
    parsed = json.loads(raw) if isinstance(raw, str) else raw
    return list(parsed or [])


@AWS_COMPUTE.resource(
    "ecs-no-privileged",
    "ECS containers are not privileged.",
    types=[t.ECS_TASK],
    severity=Severity.CRITICAL,
    controls=[FSBP("ECS.4")],
    checkov=["CKV_AWS_334"],
    remediation="Remove privileged from the container definition.",
)
def _ecs_privileged(args: ResourceValidationArgs) -> Iterable[str]:
    for c in ecs_containers(args):
        if c.get("privileged") is True:
            yield f"container {c.get('name')} is privileged"


@AWS_COMPUTE.resource(
    "ecs-read-only-root-filesystem",
    "ECS containers have a read-only root filesystem.",
    types=[t.ECS_TASK],
    severity=Severity.MEDIUM,
    controls=[FSBP("ECS.5")],
    checkov=["CKV_AWS_336"],
    remediation="Set readonlyRootFilesystem: true and mount a task volume at /tmp.",
)
def _ecs_read_only(args: ResourceValidationArgs) -> Iterable[str]:
    for c in ecs_containers(args):
        if c.get("readonlyRootFilesystem") is not True:
            yield f"container {c.get('name')} has a writable root filesystem (readonlyRootFilesystem)"


@AWS_COMPUTE.resource(
    "ecs-non-root-user",
    "ECS containers run as a non-root user.",
    types=[t.ECS_TASK],
    severity=Severity.HIGH,
    controls=[PROJECT("non-root")],
    remediation="Set the container definition's user to the image's non-root uid:gid.",
)
def _ecs_non_root(args: ResourceValidationArgs) -> Iterable[str]:
    for c in ecs_containers(args):
        user = str(c.get("user") or "")
        if user.split(":")[0] in ("", "0", "root"):
            yield f"container {c.get('name')} runs as root (set user to a non-zero uid)"


@AWS_COMPUTE.resource(
    "ecs-no-secrets-in-environment",
    "Secrets reach ECS containers through `secrets`, never `environment`.",
    types=[t.ECS_TASK],
    severity=Severity.HIGH,
    controls=[FSBP("ECS.8")],
    remediation="Move the value to services[].runtimeSecrets (a Secrets Manager or SSM ARN).",
)
def _ecs_env_secrets(args: ResourceValidationArgs) -> Iterable[str]:
    for c in ecs_containers(args):
        for variable in c.get("environment") or []:
            if SECRET_NAME.search(str(variable.get("name"))):
                yield (
                    f"container {c.get('name')} passes {variable.get('name')} in environment; "
                    "use secrets (Secrets Manager or SSM) so it is never stored in the task definition"
                )


@AWS_COMPUTE.resource(
    "ecs-no-public-ip",
    "ECS services do not assign public IPs.",
    types=[t.ECS_SERVICE],
    severity=Severity.HIGH,
    controls=[FSBP("ECS.2")],
    checkov=["CKV_AWS_333"],
    remediation="Set network_configuration.assign_public_ip=False and use private subnets.",
)
def _ecs_public_ip(args: ResourceValidationArgs) -> Iterable[str]:
    network = args.props.get("networkConfiguration") or {}
    if network.get("assignPublicIp") is True:
        yield "ECS service assigns public IPs to its tasks; run them in private subnets behind the ALB"


@AWS_COMPUTE.resource(
    "ecs-circuit-breaker",
    "ECS services roll back failed deployments (deployment circuit breaker).",
    types=[t.ECS_SERVICE],
    severity=Severity.MEDIUM,
    controls=[PROJECT("safe-deployments")],
    remediation="Set deployment_circuit_breaker enable=True, rollback=True.",
)
def _ecs_circuit_breaker(args: ResourceValidationArgs) -> Iterable[str]:
    breaker = args.props.get("deploymentCircuitBreaker") or {}
    if breaker.get("enable") is not True or breaker.get("rollback") is not True:
        yield "ECS service has no deployment circuit breaker with rollback"


def scale_set(args: ResourceValidationArgs) -> Any:
    chart = str(args.props.get("chart") or "")
    return args.props.get("values") or {} if chart.endswith("/gha-runner-scale-set") else None


@CI.resource(
    "arc-runner-not-privileged",
    "ARC runner pods are not privileged.",
    types=[t.HELM_RELEASE],
    severity=Severity.CRITICAL,
    controls=[PSS_BASELINE("Privileged Containers")],
    checkov=["CKV_K8S_16"],
    remediation="Remove privileged from the runner template; use containerMode kubernetes.",
)
def _runner_privileged(args: ResourceValidationArgs) -> Iterable[str]:
    values = scale_set(args)
    if values is None:
        return
    spec = (values.get("template") or {}).get("spec") or {}
    for container in spec.get("containers") or []:
        if (container.get("securityContext") or {}).get("privileged") is True:
            yield f"runner container {container.get('name')} is privileged"


@CI.resource(
    "arc-dind-advisory",
    "Says when a runner scale set runs Docker-in-Docker (privileged); an advisory by design.",
    types=[t.HELM_RELEASE],
    severity=Severity.HIGH,
    controls=[PSS_BASELINE("Privileged Containers")],
    remediation="Use containerMode kubernetes (the default) unless jobs truly need a Docker daemon.",
)
def _runner_dind(args: ResourceValidationArgs) -> Iterable[str]:
    values = scale_set(args)
    if values is not None and (values.get("containerMode") or {}).get("type") == "dind":
        yield "runner scale set uses Docker-in-Docker: a privileged sidecar can escape to the node"


def workload_images(args: ResourceValidationArgs) -> Iterator[tuple[str, str]]:
    """(container name, image) of every container a workload runs, whatever the platform."""
    if args.resource_type == t.ECS_TASK:
        found = [(c.get("name"), c.get("image")) for c in ecs_containers(args)]
    elif args.resource_type == t.CONTAINER_GROUP:
        found = [(c.get("name"), c.get("image")) for c in args.props.get("containers") or []]
    elif args.resource_type == t.CLOUD_RUN:
        template = args.props.get("template") or {}
        found = [(c.get("name") or "app", c.get("image")) for c in template.get("containers") or []]
    else:
        found = [(name, c.get("image")) for name, c in containers(pod_spec(args))]
    for name, image in found:
        yield str(name or "?"), str(image or "")


@IMAGES_REGISTRIES.resource(
    "image-digest-pinned",
    "Workloads (Kubernetes, ECS, ACI, Cloud Run) run images pinned by digest.",
    types=t.IMAGE_WORKLOADS,
    severity=Severity.HIGH,
    controls=[PROJECT("immutable-image-references")],
    checkov=["CKV_K8S_43"],
    remediation="Deploy the ImageBuild's digest ref (repo@sha256:...), not a tag.",
)
def _digest_pinned(args: ResourceValidationArgs) -> Iterable[str]:
    for name, image in workload_images(args):
        if "@sha256:" not in image:
            yield f"container {name} image {image!r} is not pinned by digest (repo@sha256:...)"


APPROVED_SCHEMA: dict[str, dict[str, Any]] = {
    "registries": {
        "type": "array",
        "items": {"type": "string"},
        "default": [],
        "description": "Image prefixes workloads may pull from (registry host and path); empty: any.",
    }
}


@IMAGES_REGISTRIES.resource(
    "image-approved-registries",
    "Workloads pull only from the environment's approved registries.",
    types=t.IMAGE_WORKLOADS,
    severity=Severity.HIGH,
    controls=[PROJECT("trusted-image-sources")],
    remediation="Push the image through ImageBuild to this environment's registries.",
    config=APPROVED_SCHEMA,
)
def _approved_registries(args: ResourceValidationArgs) -> Iterable[str]:
    approved = setting(args, APPROVED_SCHEMA, "registries")
    for name, image in workload_images(args):
        if approved and not any(image.startswith(prefix.rstrip("/") + "/") for prefix in approved):
            yield f"container {name} image {image!r} is not from an approved registry ({', '.join(approved)})"
