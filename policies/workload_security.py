"""Workload security: the Pod Security Standards `restricted` profile and CIS Kubernetes hygiene.

Each PSS control is its own policy so a violation names exactly what to fix. They look at every pod
template the program declares (Deployments, StatefulSets, DaemonSets, Jobs, CronJobs, bare Pods).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from pack_support import FSBP, PROJECT, SECRET_NAME, control, resource_policy, setting

PSS = "Kubernetes Pod Security Standards (restricted)"
CIS_K8S = "CIS Kubernetes Benchmark"
WORKLOADS = frozenset(
    {
        "kubernetes:apps/v1:Deployment",
        "kubernetes:apps/v1:StatefulSet",
        "kubernetes:apps/v1:DaemonSet",
        "kubernetes:batch/v1:Job",
        "kubernetes:batch/v1:CronJob",
        "kubernetes:core/v1:Pod",
    }
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
    spec = args.props.get("spec") or {}
    if args.resource_type == "kubernetes:core/v1:Pod":
        return spec
    if args.resource_type == "kubernetes:batch/v1:CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return (spec.get("template") or {}).get("spec") or {}


def containers(pod: Any) -> Iterator[tuple[str, Any]]:
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod.get(kind) or []:
            yield container.get("name") or "?", container


def _security(container: Any) -> Any:
    return container.get("securityContext") or {}


def _privileged(args: ResourceValidationArgs) -> Iterable[str]:
    for name, c in containers(pod_spec(args)):
        if _security(c).get("privileged") is True:
            yield f"container {name} is privileged"


def _host_namespaces(args: ResourceValidationArgs) -> Iterable[str]:
    pod = pod_spec(args)
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field) is True:
            yield f"pod shares the host's namespace ({field}: true)"


def _volumes(args: ResourceValidationArgs) -> Iterable[str]:
    for volume in pod_spec(args).get("volumes") or []:
        kinds = [k for k in volume if k != "name"]
        for kind in kinds:
            if kind not in ALLOWED_VOLUMES:
                allowed = ", ".join(sorted(ALLOWED_VOLUMES))
                yield f"volume {volume.get('name')} is of type {kind}; restricted allows {allowed}"


def _capabilities(args: ResourceValidationArgs) -> Iterable[str]:
    for name, c in containers(pod_spec(args)):
        caps = _security(c).get("capabilities") or {}
        if "ALL" not in list(caps.get("drop") or []):
            yield f"container {name} does not drop ALL capabilities"
        extra = [cap for cap in caps.get("add") or [] if cap != "NET_BIND_SERVICE"]
        if extra:
            yield f"container {name} adds capabilities {', '.join(extra)}; only NET_BIND_SERVICE is allowed"


def _privilege_escalation(args: ResourceValidationArgs) -> Iterable[str]:
    for name, c in containers(pod_spec(args)):
        if _security(c).get("allowPrivilegeEscalation") is not False:
            yield f"container {name} does not set allowPrivilegeEscalation: false"


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


def _seccomp(args: ResourceValidationArgs) -> Iterable[str]:
    pod = pod_spec(args)
    pod_profile = ((pod.get("securityContext") or {}).get("seccompProfile") or {}).get("type")
    for name, c in containers(pod):
        profile = (_security(c).get("seccompProfile") or {}).get("type") or pod_profile
        if profile not in ("RuntimeDefault", "Localhost"):
            yield f"container {name} has seccomp profile {profile or 'unset'}; use RuntimeDefault"


def _read_only_root(args: ResourceValidationArgs) -> Iterable[str]:
    for name, c in containers(pod_spec(args)):
        if _security(c).get("readOnlyRootFilesystem") is not True:
            yield f"container {name} has a writable root filesystem; mount an emptyDir where it writes"


def _resources(args: ResourceValidationArgs) -> Iterable[str]:
    for name, c in containers(pod_spec(args)):
        resources = c.get("resources") or {}
        for part in ("requests", "limits"):
            missing = [r for r in ("cpu", "memory") if not (resources.get(part) or {}).get(r)]
            if missing:
                yield f"container {name} has no {part} for {', '.join(missing)}"


def _probes(args: ResourceValidationArgs) -> Iterable[str]:
    for c in pod_spec(args).get("containers") or []:  # init containers run once; no probes
        name = c.get("name") or "?"
        missing = [p for p in ("readinessProbe", "livenessProbe") if not c.get(p)]
        if missing:
            yield f"container {name} has no {' or '.join(missing)}"


def _token_automount(args: ResourceValidationArgs) -> Iterable[str]:
    if pod_spec(args).get("automountServiceAccountToken") is not False:
        yield "pod mounts a service account token; set automountServiceAccountToken: false"


def _pss(name: str, description: str, rule: Any, reference: str, severity: Severity, fix: str) -> Any:
    return resource_policy(
        name=name,
        description=description,
        types=WORKLOADS,
        rule=rule,
        severity=severity,
        framework=control(PSS, reference),
        remediation=fix,
        tags=["workload-security"],
    )


POLICIES = [
    _pss(
        "k8s-no-privileged",
        "Containers are not privileged.",
        _privileged,
        "Privileged Containers",
        Severity.CRITICAL,
        "Remove securityContext.privileged.",
    ),
    _pss(
        "k8s-no-host-namespaces",
        "Pods do not share the host's network, PID or IPC namespace.",
        _host_namespaces,
        "Host Namespaces",
        Severity.CRITICAL,
        "Remove hostNetwork, hostPID and hostIPC.",
    ),
    _pss(
        "k8s-volume-types",
        "Pods use only the volume types the restricted profile allows (no hostPath).",
        _volumes,
        "Volume Types",
        Severity.HIGH,
        "Use emptyDir, configMap, secret, projected or a PersistentVolumeClaim instead.",
    ),
    _pss(
        "k8s-drop-all-capabilities",
        "Containers drop ALL capabilities and add none but NET_BIND_SERVICE.",
        _capabilities,
        "Capabilities",
        Severity.HIGH,
        "Set securityContext.capabilities.drop: [ALL].",
    ),
    _pss(
        "k8s-no-privilege-escalation",
        "Containers set allowPrivilegeEscalation: false.",
        _privilege_escalation,
        "Privilege Escalation",
        Severity.HIGH,
        "Set securityContext.allowPrivilegeEscalation: false.",
    ),
    _pss(
        "k8s-run-as-non-root",
        "Containers run as a non-root user.",
        _non_root,
        "Running as Non-root",
        Severity.HIGH,
        "Set runAsNonRoot: true and a non-zero runAsUser (the image's USER).",
    ),
    _pss(
        "k8s-seccomp-runtime-default",
        "Containers run with the RuntimeDefault (or a Localhost) seccomp profile.",
        _seccomp,
        "Seccomp",
        Severity.MEDIUM,
        "Set securityContext.seccompProfile.type: RuntimeDefault on the pod.",
    ),
    resource_policy(
        name="k8s-read-only-root-filesystem",
        description="Containers have a read-only root filesystem.",
        types=WORKLOADS,
        rule=_read_only_root,
        severity=Severity.MEDIUM,
        framework=control(CIS_K8S, "5.7.3 (apply security context)"),
        remediation="Set readOnlyRootFilesystem: true and mount an emptyDir at /tmp.",
        tags=["workload-security"],
    ),
    resource_policy(
        name="k8s-resource-limits",
        description="Containers declare CPU and memory requests and limits.",
        types=WORKLOADS,
        rule=_resources,
        severity=Severity.MEDIUM,
        framework=control(PROJECT, "capacity"),
        remediation="Set services[].resources (cpu, memory, cpuLimit, memoryLimit).",
        tags=["quality"],
    ),
    resource_policy(
        name="k8s-health-probes",
        description="Application containers have readiness and liveness probes.",
        types=WORKLOADS,
        rule=_probes,
        severity=Severity.MEDIUM,
        framework=control(PROJECT, "health-checks"),
        remediation="Probe the service's healthPath (components.targets.eks does).",
        tags=["quality"],
    ),
    resource_policy(
        name="k8s-no-service-account-token",
        description="Pods do not mount a service account token unless they need the API.",
        types=WORKLOADS,
        rule=_token_automount,
        severity=Severity.MEDIUM,
        framework=control(CIS_K8S, "5.1.6"),
        remediation="Set automountServiceAccountToken: false on the pod spec.",
        tags=["workload-security", "identity"],
    ),
]


ECS_TASK = "aws:ecs/taskDefinition:TaskDefinition"
ECS_SERVICE = "aws:ecs/service:Service"


def ecs_containers(args: ResourceValidationArgs) -> list[Any]:
    """Container definitions are a JSON string in the task definition's inputs."""
    raw = args.props.get("containerDefinitions") or "[]"
    parsed = json.loads(raw) if isinstance(raw, str) else raw
    return list(parsed or [])


def _ecs_privileged(args: ResourceValidationArgs) -> Iterable[str]:
    for c in ecs_containers(args):
        if c.get("privileged") is True:
            yield f"container {c.get('name')} is privileged"


def _ecs_read_only(args: ResourceValidationArgs) -> Iterable[str]:
    for c in ecs_containers(args):
        if c.get("readonlyRootFilesystem") is not True:
            yield f"container {c.get('name')} has a writable root filesystem (readonlyRootFilesystem)"


def _ecs_non_root(args: ResourceValidationArgs) -> Iterable[str]:
    for c in ecs_containers(args):
        user = str(c.get("user") or "")
        if user.split(":")[0] in ("", "0", "root"):
            yield f"container {c.get('name')} runs as root (set user to a non-zero uid)"


def _ecs_env_secrets(args: ResourceValidationArgs) -> Iterable[str]:
    for c in ecs_containers(args):
        for variable in c.get("environment") or []:
            if SECRET_NAME.search(str(variable.get("name"))):
                yield (
                    f"container {c.get('name')} passes {variable.get('name')} in environment; "
                    "use secrets (Secrets Manager or SSM) so it is never stored in the task definition"
                )


def _ecs_public_ip(args: ResourceValidationArgs) -> Iterable[str]:
    network = args.props.get("networkConfiguration") or {}
    if network.get("assignPublicIp") is True:
        yield "ECS service assigns public IPs to its tasks; run them in private subnets behind the ALB"


def _ecs_circuit_breaker(args: ResourceValidationArgs) -> Iterable[str]:
    breaker = args.props.get("deploymentCircuitBreaker") or {}
    if breaker.get("enable") is not True or breaker.get("rollback") is not True:
        yield "ECS service has no deployment circuit breaker with rollback"


POLICIES += [
    resource_policy(
        name="ecs-no-privileged",
        description="ECS containers are not privileged.",
        types=[ECS_TASK],
        rule=_ecs_privileged,
        severity=Severity.CRITICAL,
        framework=control(FSBP, "ECS.4"),
        remediation="Remove privileged from the container definition.",
        tags=["workload-security"],
    ),
    resource_policy(
        name="ecs-read-only-root-filesystem",
        description="ECS containers have a read-only root filesystem.",
        types=[ECS_TASK],
        rule=_ecs_read_only,
        severity=Severity.MEDIUM,
        framework=control(FSBP, "ECS.5"),
        remediation="Set readonlyRootFilesystem: true and mount a task volume at /tmp.",
        tags=["workload-security"],
    ),
    resource_policy(
        name="ecs-non-root-user",
        description="ECS containers run as a non-root user.",
        types=[ECS_TASK],
        rule=_ecs_non_root,
        severity=Severity.HIGH,
        framework=control(PROJECT, "non-root"),
        remediation="Set the container definition's user to the image's non-root uid:gid.",
        tags=["workload-security"],
    ),
    resource_policy(
        name="ecs-no-secrets-in-environment",
        description="Secrets reach ECS containers through `secrets`, never `environment`.",
        types=[ECS_TASK],
        rule=_ecs_env_secrets,
        severity=Severity.HIGH,
        framework=control(FSBP, "ECS.8"),
        remediation="Move the value to services[].runtimeSecrets (a Secrets Manager or SSM ARN).",
        tags=["workload-security"],
    ),
    resource_policy(
        name="ecs-no-public-ip",
        description="ECS services do not assign public IPs.",
        types=[ECS_SERVICE],
        rule=_ecs_public_ip,
        severity=Severity.HIGH,
        framework=control(FSBP, "ECS.2"),
        remediation="Set network_configuration.assign_public_ip=False and use private subnets.",
        tags=["network-exposure"],
    ),
    resource_policy(
        name="ecs-circuit-breaker",
        description="ECS services roll back failed deployments (deployment circuit breaker).",
        types=[ECS_SERVICE],
        rule=_ecs_circuit_breaker,
        severity=Severity.MEDIUM,
        framework=control(PROJECT, "safe-deployments"),
        remediation="Set deployment_circuit_breaker enable=True, rollback=True.",
        tags=["quality"],
    ),
]


HELM_RELEASE = "kubernetes:helm.sh/v3:Release"


def _scale_set(args: ResourceValidationArgs) -> Any:
    chart = str(args.props.get("chart") or "")
    return args.props.get("values") or {} if chart.endswith("/gha-runner-scale-set") else None


def _runner_privileged(args: ResourceValidationArgs) -> Iterable[str]:
    values = _scale_set(args)
    if values is None:
        return
    spec = (values.get("template") or {}).get("spec") or {}
    for container in spec.get("containers") or []:
        if (container.get("securityContext") or {}).get("privileged") is True:
            yield f"runner container {container.get('name')} is privileged"


def _runner_dind(args: ResourceValidationArgs) -> Iterable[str]:
    values = _scale_set(args)
    if values is not None and (values.get("containerMode") or {}).get("type") == "dind":
        yield "runner scale set uses Docker-in-Docker: a privileged sidecar can escape to the node"


POLICIES += [
    resource_policy(
        name="arc-runner-not-privileged",
        description="ARC runner pods are not privileged.",
        types=[HELM_RELEASE],
        rule=_runner_privileged,
        severity=Severity.CRITICAL,
        framework=control(PSS, "Privileged Containers"),
        remediation="Remove privileged from the runner template; use containerMode kubernetes.",
        tags=["workload-security"],
    ),
    resource_policy(
        name="arc-dind-advisory",
        description="Says when a runner scale set runs Docker-in-Docker (privileged); an advisory by design.",
        types=[HELM_RELEASE],
        rule=_runner_dind,
        severity=Severity.HIGH,
        framework=control(PSS, "Privileged Containers"),
        remediation="Use containerMode kubernetes (the default) unless jobs truly need a Docker daemon.",
        tags=["workload-security"],
    ),
]


ACI_GROUP = "azure-native:containerinstance:ContainerGroup"
CLOUD_RUN = "gcp:cloudrunv2/service:Service"
IMAGE_WORKLOADS = WORKLOADS | {ECS_TASK, ACI_GROUP, CLOUD_RUN}


def workload_images(args: ResourceValidationArgs) -> Iterator[tuple[str, str]]:
    """(container name, image) of every container a workload runs, whatever the platform."""
    if args.resource_type == ECS_TASK:
        found = [(c.get("name"), c.get("image")) for c in ecs_containers(args)]
    elif args.resource_type == ACI_GROUP:
        found = [(c.get("name"), c.get("image")) for c in args.props.get("containers") or []]
    elif args.resource_type == CLOUD_RUN:
        template = args.props.get("template") or {}
        found = [(c.get("name") or "app", c.get("image")) for c in template.get("containers") or []]
    else:
        found = [(name, c.get("image")) for name, c in containers(pod_spec(args))]
    for name, image in found:
        yield str(name or "?"), str(image or "")


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


def _approved_registries(args: ResourceValidationArgs) -> Iterable[str]:
    approved = setting(args, APPROVED_SCHEMA, "registries")
    for name, image in workload_images(args):
        if approved and not any(image.startswith(prefix.rstrip("/") + "/") for prefix in approved):
            yield f"container {name} image {image!r} is not from an approved registry ({', '.join(approved)})"


POLICIES += [
    resource_policy(
        name="image-digest-pinned",
        description="Workloads (Kubernetes, ECS, ACI, Cloud Run) run images pinned by digest.",
        types=IMAGE_WORKLOADS,
        rule=_digest_pinned,
        severity=Severity.HIGH,
        framework=control(PROJECT, "immutable-image-references"),
        remediation="Deploy the ImageBuild's digest ref (repo@sha256:...), not a tag.",
        tags=["images-and-registries"],
    ),
    resource_policy(
        name="image-approved-registries",
        description="Workloads pull only from the environment's approved registries.",
        types=IMAGE_WORKLOADS,
        rule=_approved_registries,
        severity=Severity.HIGH,
        framework=control(PROJECT, "trusted-image-sources"),
        remediation="Push the image through ImageBuild to this environment's registries.",
        config=APPROVED_SCHEMA,
        tags=["images-and-registries"],
    ),
]
