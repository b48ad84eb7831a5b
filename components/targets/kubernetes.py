"""The Kubernetes workload layer every Kubernetes target shares (EKS, GKE, AKS).

Per service: a namespace under Pod Security `restricted`, a service account without a mounted token,
network policies (deny everything, then allow the entry point in, DNS and HTTPS out), and per slot a
Deployment (restricted pod, the one container contract), an HPA that owns the replica count and a
PDB; ClusterIP Services select a slot's workload. Each target adds its own cluster and its own
weighted entry point (EKS: ALB-weighted Ingress actions; GKE and AKS: a Gateway API `HTTPRoute` with
weighted `backendRefs`, built here). Every resource is a child of the target's service component,
named as EKS always named them, so no URN moves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes.apps.v1 as apps
import pulumi_kubernetes.autoscaling.v2 as autoscaling
import pulumi_kubernetes.core.v1 as core
import pulumi_kubernetes.meta.v1 as meta
import pulumi_kubernetes.networking.v1 as networking
import pulumi_kubernetes.policy.v1 as policy
from pulumi_kubernetes.apiextensions import CustomResource

from components.rollout import HeaderMatch, RolloutPlan, SlotPlan
from components.schema import ServiceSettings
from components.targets.base import ContainerSpec

# What a Deployment runs: only a change of its pod template starts new pods (replicas belong to the HPA).
WORKLOAD_TYPES: Mapping[str, tuple[str, ...] | None] = {"kubernetes:apps/v1:Deployment": ("spec.template",)}
# What routes a Gateway API target's traffic (GKE, AKS): Service selectors (blue-green), HTTPRoute weights.
GATEWAY_ROUTING_TYPES = frozenset(
    {"kubernetes:core/v1:Service", "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute"}
)
RESTRICTED = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}
GATEWAY_API = "gateway.networking.k8s.io/v1"
# The cluster DNS every target runs (CoreDNS on EKS and AKS, kube-dns on GKE): both carry this label.
CLUSTER_DNS: networking.NetworkPolicyPeerArgsDict = {
    "namespace_selector": {"match_labels": {"kubernetes.io/metadata.name": "kube-system"}},
    "pod_selector": {"match_labels": {"k8s-app": "kube-dns"}},
}


def labels(service: str, workload: str | None = None, version: str | None = None) -> dict[str, str]:
    """The `slot` label holds the workload's name (a slot's own name unless a switch renamed it)."""
    out = {
        "app.kubernetes.io/name": service,
        "app.kubernetes.io/part-of": "pouw-cicd",
        "app.kubernetes.io/managed-by": "pulumi",
    }
    if workload is not None:
        out["app.kubernetes.io/instance"] = f"{service}-{workload}"
        out["slot"] = workload
    if version is not None:
        out["app.kubernetes.io/version"] = version
    return out


def selector(service: str, workload: str) -> dict[str, str]:
    """What a Service or Deployment matches on: never the version (selectors are immutable)."""
    return {"app.kubernetes.io/name": service, "slot": workload}


def metadata(
    name: str,
    namespace: pulumi.Input[str],
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
) -> meta.ObjectMetaArgsDict:
    out: meta.ObjectMetaArgsDict = {"name": name, "namespace": namespace, "labels": labels}
    if annotations:
        out["annotations"] = annotations
    return out


def probe(service: ServiceSettings, period: int, failures: int) -> core.ProbeArgsDict:
    return {
        "http_get": {"path": service.health_path, "port": "http"},
        "period_seconds": period,
        "failure_threshold": failures,
    }


def pod_spec(
    service: ServiceSettings, slot: SlotPlan, image: pulumi.Input[str], secret_env: SecretEnv | None = None
) -> core.PodSpecArgsDict:
    """Pod Security Standards `restricted`, probes on the health path, requests and limits."""
    spec = ContainerSpec.of(service, slot)
    env: list[core.EnvVarArgsDict] = [{"name": k, "value": v} for k, v in spec.ordered_environment()]
    if secret_env is not None:  # by reference to the Secret: the pod template holds no value
        env += [
            {"name": var, "value_from": {"secret_key_ref": {"name": secret_env.secret, "key": var}}}
            for var in secret_env.variables
        ]
    return {
        "service_account_name": service.name,
        "automount_service_account_token": False,
        "security_context": {
            "run_as_non_root": True,
            "run_as_user": spec.uid,
            "run_as_group": spec.gid,
            "seccomp_profile": {"type": "RuntimeDefault"},
        },
        "topology_spread_constraints": [
            {
                "max_skew": 1,
                "topology_key": "topology.kubernetes.io/zone",
                "when_unsatisfiable": "ScheduleAnyway",
                "label_selector": {"match_labels": selector(service.name, slot.workload)},
            }
        ],
        "containers": [
            {
                "name": "app",
                "image": image,
                "ports": [{"name": "http", "container_port": service.port}],
                # The one container contract: the service's `environment`, then the platform's, then
                # the secret variables by reference.
                "env": env,
                "resources": {
                    "requests": {"cpu": service.resources.cpu, "memory": service.resources.memory},
                    "limits": {"cpu": service.resources.cpu_limit, "memory": service.resources.memory_limit},
                },
                "security_context": {
                    "allow_privilege_escalation": False,
                    "read_only_root_filesystem": True,
                    "run_as_non_root": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "startup_probe": probe(service, 2, 30),
                "readiness_probe": probe(service, 5, 3),
                "liveness_probe": probe(service, 10, 3),
                "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],
            }
        ],
        "volumes": [{"name": "tmp", "empty_dir": {"size_limit": "64Mi"}}],
    }


def cluster_service(
    name: str,
    service_name: str,
    app: str,
    workload: str,
    ns: pulumi.Input[str],
    k8s: pulumi.ResourceOptions,
) -> None:
    spec: core.ServiceSpecArgsDict = {
        "type": "ClusterIP",
        "selector": selector(app, workload),
        "ports": [{"name": "http", "port": 80, "target_port": "http"}],
    }
    core.Service(
        f"{name}-svc-{service_name}",
        metadata=metadata(service_name, ns, labels(app)),
        spec=spec,
        opts=k8s,
    )


def slot_workload(
    name: str,
    svc: ServiceSettings,
    slot: SlotPlan,
    image: pulumi.Input[str],
    ns: pulumi.Input[str],
    k8s: pulumi.ResourceOptions,
    recreate: bool,
    secret_env: SecretEnv | None = None,
) -> apps.Deployment:
    workload = slot.workload
    deployment_name = f"{svc.name}-{workload}"
    strategy: apps.DeploymentStrategyArgsDict = (
        {"type": "Recreate"}
        if recreate
        else {"type": "RollingUpdate", "rolling_update": {"max_surge": "25%", "max_unavailable": 0}}
    )
    deployment: apps.DeploymentSpecArgsDict = {
        # No `replicas`: the HPA owns the count, so a weight change never touches this object.
        "selector": {"match_labels": selector(svc.name, workload)},
        "strategy": strategy,
        "revision_history_limit": 5,
        "progress_deadline_seconds": 600,
        "template": {
            "metadata": {"labels": labels(svc.name, workload, slot.version)},
            "spec": pod_spec(svc, slot, image, secret_env),
        },
    }
    created = apps.Deployment(
        f"{name}-{workload}",
        metadata=metadata(deployment_name, ns, labels(svc.name, workload, slot.version)),
        spec=deployment,
        opts=k8s,
    )
    hpa: autoscaling.HorizontalPodAutoscalerSpecArgsDict = {
        "scale_target_ref": {"api_version": "apps/v1", "kind": "Deployment", "name": deployment_name},
        "min_replicas": slot.min_replicas,
        "max_replicas": slot.max_replicas,
        "metrics": [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "average_utilization": 70}},
            }
        ],
    }
    autoscaling.HorizontalPodAutoscaler(
        f"{name}-{workload}",
        metadata=metadata(deployment_name, ns, labels(svc.name, workload)),
        spec=hpa,
        opts=k8s,
    )
    pdb: policy.PodDisruptionBudgetSpecArgsDict = {
        "max_unavailable": 1,
        "selector": {"match_labels": selector(svc.name, workload)},
    }
    policy.PodDisruptionBudget(
        f"{name}-{workload}",
        metadata=metadata(deployment_name, ns, labels(svc.name, workload)),
        spec=pdb,
        opts=k8s,
    )
    return created


def service_namespace(
    name: str,
    svc: ServiceSettings,
    k8s: pulumi.ResourceOptions,
    account_annotations: dict[str, str] | None = None,
) -> pulumi.Output[str]:
    """The service's namespace (restricted) and its service account (no token mounted; annotated for
    the cloud's workload identity where the target needs one). Returns the namespace's name."""
    namespace = core.Namespace(
        name, metadata={"name": svc.name, "labels": {**labels(svc.name), **RESTRICTED}}, opts=k8s
    )
    ns = namespace.metadata.name
    account = metadata(svc.name, ns, labels(svc.name))
    if account_annotations:
        account["annotations"] = account_annotations
    core.ServiceAccount(name, metadata=account, automount_service_account_token=False, opts=k8s)
    return ns


def slot_workloads(
    name: str,
    svc: ServiceSettings,
    plan: RolloutPlan,
    images: Mapping[str, pulumi.Input[str]],
    ns: pulumi.Input[str],
    k8s: pulumi.ResourceOptions,
    secret_env: SecretEnv | None = None,
) -> list[apps.Deployment]:
    """One Deployment + HPA + PDB per slot of the plan."""
    recreate = plan.strategy == "recreate"
    return [
        slot_workload(name, svc, slot, images[slot.name], ns, k8s, recreate, secret_env)
        for slot in plan.slots
    ]


@dataclass(frozen=True)
class SecretEnv:
    """Environment variables a service's pods read from a Kubernetes Secret (key = variable name)."""

    secret: str
    variables: tuple[str, ...]


def secret_environment(
    name: str,
    svc: ServiceSettings,
    values: Mapping[str, pulumi.Input[str]],
    ns: pulumi.Input[str],
    k8s: pulumi.ResourceOptions,
) -> SecretEnv | None:
    """The service's secret variables as one Secret in its namespace (values are secret Outputs of
    the stack's `secure:` config, so the state keeps them encrypted), or None when it has none."""
    if not values:
        return None
    secret_name = f"{svc.name}-secure-environment"
    core.Secret(
        f"{name}-secure-environment",
        metadata=metadata(secret_name, ns, labels(svc.name)),
        type="Opaque",
        string_data=dict(values),
        opts=k8s,
    )
    return SecretEnv(secret_name, tuple(sorted(values)))


def slot_services(
    name: str, svc: ServiceSettings, plan: RolloutPlan, ns: pulumi.Input[str], routing: pulumi.ResourceOptions
) -> None:
    """The stable Service (blue-green's selector switch, the rolling service, the canary's stable), the
    preview Service of the idle slot, and with weights one Service per slot for the weighted route."""
    cluster_service(name, svc.name, svc.name, plan.workload(plan.stable_slot), ns, routing)
    if plan.preview_slot is not None:
        cluster_service(name, f"{svc.name}-preview", svc.name, plan.workload(plan.preview_slot), ns, routing)
    if plan.weighted:
        for slot in plan.slots:
            cluster_service(name, f"{svc.name}-{slot.name}", svc.name, slot.workload, ns, routing)


def network_policies(
    name: str,
    svc: ServiceSettings,
    ns: pulumi.Input[str],
    k8s: pulumi.ResourceOptions,
    ingress_from: Sequence[pulumi.Input[str]],
) -> None:
    """Deny all traffic in and out of every pod in the service's namespace, then allow what the
    service needs: its port from the cluster's entry point (`ingress_from`: the load balancer's
    source ranges), DNS to the cluster DNS in kube-system, and HTTPS out."""
    app: meta.LabelSelectorArgsDict = {"match_labels": {"app.kubernetes.io/name": svc.name}}
    deny: networking.NetworkPolicySpecArgsDict = {"pod_selector": {}, "policy_types": ["Ingress", "Egress"]}
    networking.NetworkPolicy(
        f"{name}-default-deny", metadata=metadata("default-deny", ns, labels(svc.name)), spec=deny, opts=k8s
    )
    ingress: networking.NetworkPolicySpecArgsDict = {
        "pod_selector": app,
        "policy_types": ["Ingress"],
        "ingress": [
            {
                "from_": [{"ip_block": {"cidr": cidr}} for cidr in ingress_from],
                "ports": [{"protocol": "TCP", "port": svc.port}],
            }
        ],
    }
    networking.NetworkPolicy(
        f"{name}-allow-ingress",
        metadata=metadata(f"{svc.name}-allow-ingress", ns, labels(svc.name)),
        spec=ingress,
        opts=k8s,
    )
    egress: networking.NetworkPolicySpecArgsDict = {
        "pod_selector": app,
        "policy_types": ["Egress"],
        "egress": [
            {
                "to": [CLUSTER_DNS],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            },
            {"to": [{"ip_block": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 443}]},
        ],
    }
    networking.NetworkPolicy(
        f"{name}-allow-egress",
        metadata=metadata(f"{svc.name}-allow-egress", ns, labels(svc.name)),
        spec=egress,
        opts=k8s,
    )


def egress_only_policies(
    name: str,
    ns: pulumi.Input[str],
    k8s: pulumi.ResourceOptions,
    ports: Sequence[int] = (443,),
    pod_labels: dict[str, str] | None = None,
) -> None:
    """For namespaces whose pods only call out (CI runners and agents, controllers): deny all traffic in
    and out of every pod, then allow DNS to the cluster DNS and TCP `ports` anywhere. Nothing may
    connect to these pods."""
    everything: meta.LabelSelectorArgsDict = {}
    deny: networking.NetworkPolicySpecArgsDict = {
        "pod_selector": everything,
        "policy_types": ["Ingress", "Egress"],
    }
    networking.NetworkPolicy(
        f"{name}-default-deny", metadata=metadata("default-deny", ns, pod_labels or {}), spec=deny, opts=k8s
    )
    egress: networking.NetworkPolicySpecArgsDict = {
        "pod_selector": everything,
        "policy_types": ["Egress"],
        "egress": [
            {
                "to": [CLUSTER_DNS],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            },
            {
                "to": [{"ip_block": {"cidr": "0.0.0.0/0"}}],
                "ports": [{"protocol": "TCP", "port": port} for port in ports],
            },
        ],
    }
    networking.NetworkPolicy(
        f"{name}-allow-egress", metadata=metadata("allow-egress", ns, pod_labels or {}), spec=egress, opts=k8s
    )


def route_backends(svc: ServiceSettings, plan: RolloutPlan) -> list[dict[str, Any]]:
    """The HTTPRoute's backends: with weights, one per slot Service at the plan's weight; otherwise the
    stable Service (blue-green switches its selector, so the route itself never changes)."""
    if plan.weighted:
        return [{"name": f"{svc.name}-{s.name}", "port": 80, "weight": s.weight} for s in plan.slots]
    return [{"name": svc.name, "port": 80}]


def backend_services(svc: ServiceSettings, plan: RolloutPlan) -> list[str]:
    """The Services an HTTPRoute of this plan sends traffic to (what a health check policy targets)."""
    return [b["name"] for b in route_backends(svc, plan)]


def gateway(
    name: str,
    svc: ServiceSettings,
    ns: pulumi.Input[str],
    class_name: str,
    listener: dict[str, Any],
    routing: pulumi.ResourceOptions,
    annotations: dict[str, str] | None = None,
    addresses: list[dict[str, Any]] | None = None,
) -> CustomResource:
    """The service's Gateway: one listener, routes from its own namespace only."""
    spec: dict[str, Any] = {
        "gatewayClassName": class_name,
        "listeners": [{**listener, "allowedRoutes": {"namespaces": {"from": "Same"}}}],
    }
    if addresses:
        spec["addresses"] = addresses
    return CustomResource(
        f"{name}-gateway",
        api_version=GATEWAY_API,
        kind="Gateway",
        metadata=metadata(svc.name, ns, labels(svc.name), annotations),
        spec=spec,
        opts=routing,
    )


# The match forms a Gateway API HTTPRoute can route, as `header_match` translates them: Exact is core;
# a prefix, a regex and a cookie become a RegularExpression match (implementation-specific: GKE has it,
# Application Gateway for Containers does not, so AKS declares exact only).
GATEWAY_HEADER_MATCH_FORMS = frozenset(
    {"header-exact", "header-prefix", "header-regex", "cookie-exact", "cookie-prefix"}
)


def header_match(match: HeaderMatch) -> dict[str, str]:
    """One HTTPRoute header match. A cookie is a RegularExpression on the Cookie header (Gateway API has
    no cookie match): its name and value between `; ` separators.

    GKE's Gateway builds an Envoy-based Application Load Balancer, and Envoy matches a header regex
    against the whole value ("the entire request header value must match the regex. The rule will not
    match if only a subsequence of the request header value matches": envoyproxy/envoy
    api/envoy/config/route/v3/route_components.proto, HeaderMatcher.safe_regex_match; Gateway API
    leaves the semantics implementation-specific). So every generated pattern spans the whole value
    (the other cookies before and after included), anchored too, for a router that searches instead."""
    value = match.match
    if match.header_name is not None:
        if value.kind == "exact":
            return {"type": "Exact", "name": match.name, "value": value.value}
        pattern = f"^{re.escape(value.value)}.*" if value.kind == "prefix" else value.value
        return {"type": "RegularExpression", "name": match.name, "value": pattern}
    rest = "" if value.kind == "exact" else "[^;]*"
    pattern = f"^(.*;\\s*)?{re.escape(match.name)}={re.escape(value.value)}{rest}(;.*)?$"
    return {"type": "RegularExpression", "name": "Cookie", "value": pattern}


def http_route(
    name: str, svc: ServiceSettings, plan: RolloutPlan, ns: pulumi.Input[str], routing: pulumi.ResourceOptions
) -> CustomResource:
    """The service's HTTPRoute on its Gateway: every path to the plan's backends, at its weights; with a
    header route, first a rule sending matching requests to its one slot's Service (Gateway API
    prefers the rule with more header matches, so it wins over the weighted one whatever the order)."""
    rules: list[dict[str, Any]] = []
    if plan.header_route is not None:
        rules.append(
            {
                "matches": [
                    {
                        "path": {"type": "PathPrefix", "value": "/"},
                        "headers": [header_match(m) for m in plan.header_route.matches],
                    }
                ],
                "backendRefs": [{"name": f"{svc.name}-{plan.header_route.slot}", "port": 80}],
            }
        )
    rules.append(
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": route_backends(svc, plan),
        }
    )
    spec = {"parentRefs": [{"name": svc.name}], "rules": rules}
    return CustomResource(
        f"{name}-route",
        api_version=GATEWAY_API,
        kind="HTTPRoute",
        metadata=metadata(svc.name, ns, labels(svc.name)),
        spec=spec,
        opts=routing,
    )
