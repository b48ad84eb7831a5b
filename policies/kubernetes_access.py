"""Kubernetes access and exposure: RBAC that cannot escalate, Services that do not open nodes, and a
default-deny NetworkPolicy in every namespace that runs something."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity, StackValidationArgs

import resource_types as t
from pack_support import CIS_K8S, KUBERNETES_ACCESS, PROJECT, setting

ESCALATION_VERBS = ("bind", "escalate", "impersonate")
# Built-in roles that grant `*` on `*`: binding one hands over the cluster (or the namespace).
WILDCARD_ROLES = frozenset({"cluster-admin"})


def _rules(args: ResourceValidationArgs) -> Iterable[Any]:
    yield from args.props.get("rules") or []


@KUBERNETES_ACCESS.resource(
    "k8s-rbac-no-wildcards",
    "Roles and ClusterRoles name their verbs, resources and API groups; never '*'.",
    types=t.ROLES,
    severity=Severity.HIGH,
    controls=[CIS_K8S("5.1.3")],
    checkov=["CKV_K8S_49"],
    remediation="List the verbs, resources and API groups the subject needs.",
)
def _rbac_wildcards(args: ResourceValidationArgs) -> Iterable[str]:
    for rule in _rules(args):
        for field in ("verbs", "resources", "apiGroups"):
            if "*" in list(rule.get(field) or []):
                yield f"role rule grants '*' {field}"


@KUBERNETES_ACCESS.resource(
    "k8s-rbac-no-escalation-verbs",
    "Roles do not grant the bind, escalate or impersonate verbs.",
    types=t.ROLES,
    severity=Severity.HIGH,
    controls=[CIS_K8S("5.1.8")],
    checkov=["CKV_K8S_157", "CKV_K8S_158", "CKV2_K8S_3"],
    remediation="Remove bind, escalate and impersonate; grant the roles themselves instead.",
)
def _rbac_escalation(args: ResourceValidationArgs) -> Iterable[str]:
    for rule in _rules(args):
        verbs = list(rule.get("verbs") or [])
        for verb in ESCALATION_VERBS:
            if verb in verbs:
                yield f"role rule grants {verb} on {', '.join(rule.get('resources') or ['?'])}"


@KUBERNETES_ACCESS.resource(
    "k8s-no-admin-bindings",
    "No RoleBinding or ClusterRoleBinding grants cluster-admin.",
    types=t.BINDINGS,
    severity=Severity.CRITICAL,
    controls=[CIS_K8S("5.1.1")],
    remediation="Bind a Role with the permissions the subject needs "
    "(roles with '*' fail k8s-rbac-no-wildcards).",
)
def _admin_bindings(args: ResourceValidationArgs) -> Iterable[str]:
    role = (args.props.get("roleRef") or {}).get("name")
    if role in WILDCARD_ROLES:
        yield f"binding grants {role} (every verb on every resource)"


@KUBERNETES_ACCESS.resource(
    "k8s-no-node-port",
    "Services are not of type NodePort (a port on every node).",
    types=[t.SERVICE],
    severity=Severity.MEDIUM,
    controls=[PROJECT("no-public-endpoints")],
    remediation="Use ClusterIP behind an Ingress or Gateway.",
)
def _node_port(args: ResourceValidationArgs) -> Iterable[str]:
    if (args.props.get("spec") or {}).get("type") == "NodePort":
        yield "Service is of type NodePort; it opens a port on every node"


INTERNAL_LB_ANNOTATIONS = {
    "service.beta.kubernetes.io/aws-load-balancer-scheme": "internal",
    "service.beta.kubernetes.io/aws-load-balancer-internal": "true",
    "networking.gke.io/load-balancer-type": "Internal",
    "cloud.google.com/load-balancer-type": "Internal",
    "service.beta.kubernetes.io/azure-load-balancer-internal": "true",
}
LB_SCHEMA: dict[str, dict[str, Any]] = {
    "allowPublic": {
        "type": "boolean",
        "default": False,
        "description": "Allow internet-facing LoadBalancer Services without loadBalancerSourceRanges.",
    }
}


def _open_range(value: Any) -> bool:
    return str(value).strip() in ("0.0.0.0/0", "::/0")


@KUBERNETES_ACCESS.resource(
    "k8s-load-balancer-restricted",
    "LoadBalancer Services are internal, or admit only listed source ranges.",
    types=[t.SERVICE],
    severity=Severity.HIGH,
    controls=[PROJECT("no-public-endpoints")],
    remediation="Route through the ALB Ingress; or annotate the Service internal, or set "
    "loadBalancerSourceRanges.",
    config=LB_SCHEMA,
)
def _load_balancer(args: ResourceValidationArgs) -> Iterable[str]:
    spec = args.props.get("spec") or {}
    if spec.get("type") != "LoadBalancer" or setting(args, LB_SCHEMA, "allowPublic"):
        return
    annotations = (args.props.get("metadata") or {}).get("annotations") or {}
    if any(str(annotations.get(k, "")).lower() == v.lower() for k, v in INTERNAL_LB_ANNOTATIONS.items()):
        return
    ranges = list(spec.get("loadBalancerSourceRanges") or [])
    if not ranges or any(_open_range(r) for r in ranges):
        yield "LoadBalancer Service is internet-facing with no source ranges; make it internal or list ranges"


GATEWAY_SCHEMA: dict[str, dict[str, Any]] = {
    "allowPlainHttp": {
        "type": "boolean",
        "default": False,
        "description": "Allow Gateway listeners that serve plain HTTP (an environment without certificates).",
    }
}


@KUBERNETES_ACCESS.resource(
    "gateway-https-only",
    "Gateway API Gateways (GKE, AKS entry points) listen on HTTPS or TLS only, never plain HTTP.",
    types=[t.GATEWAY],
    severity=Severity.HIGH,
    controls=[PROJECT("encryption-in-transit")],
    remediation="Give the target its certificate (gke.certificate, aks.certificateSecret) so the Gateway "
    "listens on HTTPS 443 only.",
    config=GATEWAY_SCHEMA,
)
def _gateway_https(args: ResourceValidationArgs) -> Iterable[str]:
    if setting(args, GATEWAY_SCHEMA, "allowPlainHttp"):
        return
    for listener in (args.props.get("spec") or {}).get("listeners") or []:
        protocol = str(listener.get("protocol") or "")
        if protocol not in ("HTTPS", "TLS"):
            name, port = listener.get("name") or "?", listener.get("port")
            shown = int(port) if isinstance(port, int | float) else port  # numbers arrive as floats
            yield f"Gateway listener {name} serves {protocol or 'an unset protocol'} on port {shown}"


DENY_SCHEMA: dict[str, dict[str, Any]] = {
    "policyTypes": {
        "type": "array",
        "items": {"type": "string", "enum": ["Ingress", "Egress"]},
        "default": ["Ingress", "Egress"],
        "description": "Directions the namespace's default-deny NetworkPolicy must cover.",
    }
}


def _namespace_of(r: Any) -> str:
    if r.resource_type == t.HELM_RELEASE:
        return str(r.props.get("namespace") or "default")
    return str((r.props.get("metadata") or {}).get("namespace") or "default")


@KUBERNETES_ACCESS.stack(
    "k8s-default-deny-network-policy",
    "Every namespace the stack creates or runs workloads in has a default-deny NetworkPolicy and "
    "explicit allows.",
    severity=Severity.HIGH,
    controls=[CIS_K8S("5.3.2")],
    checkov=["CKV2_K8S_6"],
    remediation="Add a NetworkPolicy with podSelector {} and policyTypes [Ingress, Egress] and no "
    "rules, then one NetworkPolicy per allowed flow (DNS, the ingress controller, the API).",
    config=DENY_SCHEMA,
)
def _default_deny(args: StackValidationArgs) -> Iterable[tuple[str, str | None]]:
    """One pass: the namespaces in use (with a URN to report on), and what each one's policies do."""
    required = set(setting(args, DENY_SCHEMA, "policyTypes"))
    used: dict[str, str] = {}  # namespace -> the URN a violation names (its Namespace when declared)
    denied: dict[str, set[str]] = {}
    allows: set[str] = set()
    for r in args.resources:
        kind = r.resource_type
        if kind == t.NAMESPACE:
            used[str((r.props.get("metadata") or {}).get("name"))] = r.urn
        elif kind in t.WORKLOADS or kind == t.HELM_RELEASE:
            used.setdefault(_namespace_of(r), r.urn)
        elif kind == t.NETWORK_POLICY:
            namespace = _namespace_of(r)
            spec = r.props.get("spec") or {}
            selector = spec.get("podSelector") or {}
            types = set(spec.get("policyTypes") or ["Ingress"])
            rules = {d for d, key in (("Ingress", "ingress"), ("Egress", "egress")) if spec.get(key)}
            if not selector.get("matchLabels") and not selector.get("matchExpressions"):
                denied.setdefault(namespace, set()).update(types - rules)
            if rules:
                allows.add(namespace)
    for namespace, urn in used.items():
        missing = required - denied.get(namespace, set())
        if missing:
            yield (
                f"namespace {namespace} has no default-deny NetworkPolicy for {', '.join(sorted(missing))}",
                urn,
            )
        elif namespace not in allows:
            yield f"namespace {namespace} denies all traffic but no NetworkPolicy allows any", urn
