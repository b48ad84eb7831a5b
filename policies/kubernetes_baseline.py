"""The Pod Security Standards controls workload_security.py does not cover yet: host ports, sysctls,
AppArmor, SELinux, /proc mount, Windows HostProcess; and literal secrets in container environments.

Values follow the PSS definitions (kubernetes.io/docs/concepts/security/pod-security-standards).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

import resource_types as t
from pack_support import CIS_K8S, KUBERNETES_WORKLOADS, PROJECT, PSS_BASELINE, SECRET_NAME
from workload_security import containers, pod_metadata, pod_spec

# PSS baseline "Sysctls": the namespaced, isolated ones.
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def _contexts(pod: Any) -> Iterable[tuple[str, Any]]:
    """(where, securityContext) for the pod and each of its containers."""
    yield "pod", pod.get("securityContext") or {}
    for name, c in containers(pod):
        yield f"container {name}", c.get("securityContext") or {}


@KUBERNETES_WORKLOADS.resource(
    "k8s-no-host-ports",
    "Containers do not bind ports on the node (hostPort).",
    types=t.WORKLOADS,
    severity=Severity.HIGH,
    controls=[PSS_BASELINE("Host Ports"), CIS_K8S("5.2.13")],
    checkov=["CKV_K8S_26"],
    remediation="Remove ports[].hostPort; expose the pod through a Service.",
)
def _host_ports(args: ResourceValidationArgs) -> Iterable[str]:
    for name, c in containers(pod_spec(args)):
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                yield f"container {name} binds host port {int(port.get('hostPort'))}"


@KUBERNETES_WORKLOADS.resource(
    "k8s-safe-sysctls",
    "Pods set only the safe, namespaced sysctls.",
    types=t.WORKLOADS,
    severity=Severity.HIGH,
    controls=[PSS_BASELINE("Sysctls")],
    remediation="Remove the sysctl, or tune it on the node pool instead of in the pod.",
)
def _sysctls(args: ResourceValidationArgs) -> Iterable[str]:
    for sysctl in (pod_spec(args).get("securityContext") or {}).get("sysctls") or []:
        name = str(sysctl.get("name") or "")
        if name not in SAFE_SYSCTLS:
            yield f"pod sets sysctl {name}, which is outside the safe set"


@KUBERNETES_WORKLOADS.resource(
    "k8s-apparmor-profile",
    "AppArmor is never switched off: profiles are RuntimeDefault or Localhost.",
    types=t.WORKLOADS,
    severity=Severity.HIGH,
    controls=[PSS_BASELINE("AppArmor")],
    remediation="Leave appArmorProfile unset or set type RuntimeDefault (or a Localhost profile).",
)
def _apparmor(args: ResourceValidationArgs) -> Iterable[str]:
    for where, sc in _contexts(pod_spec(args)):
        kind = (sc.get("appArmorProfile") or {}).get("type")
        if kind not in (None, "RuntimeDefault", "Localhost"):
            yield f"{where} has AppArmor profile {kind}"
    annotations = pod_metadata(args).get("annotations") or {}
    for key, value in annotations.items():
        if (
            key.startswith(APPARMOR_ANNOTATION)
            and value != "runtime/default"
            and not str(value).startswith("localhost/")
        ):
            yield f"container {key[len(APPARMOR_ANNOTATION) :]} has AppArmor profile {value}"


@KUBERNETES_WORKLOADS.resource(
    "k8s-selinux-options",
    "SELinux options do not set a custom user or role, and only container types.",
    types=t.WORKLOADS,
    severity=Severity.HIGH,
    controls=[PSS_BASELINE("SELinux")],
    remediation="Remove seLinuxOptions.user and .role; use type container_t (or leave it unset).",
)
def _selinux(args: ResourceValidationArgs) -> Iterable[str]:
    for where, sc in _contexts(pod_spec(args)):
        options = sc.get("seLinuxOptions") or {}
        if str(options.get("type") or "") not in SELINUX_TYPES:
            yield f"{where} sets SELinux type {options.get('type')}"
        for field in ("user", "role"):
            if options.get(field):
                yield f"{where} sets SELinux {field} {options.get(field)}"


@KUBERNETES_WORKLOADS.resource(
    "k8s-default-proc-mount",
    "Containers keep the default (masked) /proc mount.",
    types=t.WORKLOADS,
    severity=Severity.HIGH,
    controls=[PSS_BASELINE("/proc Mount Type")],
    remediation="Remove securityContext.procMount (or set it to Default).",
)
def _proc_mount(args: ResourceValidationArgs) -> Iterable[str]:
    for name, c in containers(pod_spec(args)):
        mount = (c.get("securityContext") or {}).get("procMount")
        if mount not in (None, "Default"):
            yield f"container {name} sets procMount {mount}"


@KUBERNETES_WORKLOADS.resource(
    "k8s-no-windows-host-process",
    "Windows pods do not run as HostProcess containers.",
    types=t.WORKLOADS,
    severity=Severity.CRITICAL,
    controls=[PSS_BASELINE("HostProcess"), CIS_K8S("5.2.11")],
    remediation="Remove windowsOptions.hostProcess; run node-level agents outside the workload stack.",
)
def _host_process(args: ResourceValidationArgs) -> Iterable[str]:
    for where, sc in _contexts(pod_spec(args)):
        if (sc.get("windowsOptions") or {}).get("hostProcess") is True:
            yield f"{where} runs as a Windows HostProcess container"


@KUBERNETES_WORKLOADS.resource(
    "k8s-no-literal-secrets-in-env",
    "Container environment variables that name a secret take it from a Secret, never a literal value.",
    types=t.WORKLOADS,
    severity=Severity.HIGH,
    controls=[PROJECT("secrets-not-in-plain-env")],
    remediation="Use env[].valueFrom.secretKeyRef (or a mounted Secret) instead of a literal value.",
)
def _literal_secrets(args: ResourceValidationArgs) -> Iterable[str]:
    for name, c in containers(pod_spec(args)):
        for variable in c.get("env") or []:
            key = str(variable.get("name") or "")
            if SECRET_NAME.search(key) and variable.get("value") not in (None, ""):
                yield f"container {name} sets {key} to a literal value; take it from a Secret"
