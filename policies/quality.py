"""Quality gates: every resource is attributable, and what holds state survives a stray delete."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pulumi_policy import Policy, ResourceValidationArgs, Severity, StackValidationArgs

from pack_support import PROJECT, control, num, resource_policy, setting, stack_policy

# Types this project creates that take tags (GCP: labels); the list grows with each target.
TAGGED = frozenset(
    {
        "aws:ecr/repository:Repository",
        "aws:kms/key:Key",
        "azure-native:containerregistry:Registry",
        "azure-native:resources:ResourceGroup",
    }
)
LABELLED = frozenset({"gcp:artifactregistry/repository:Repository"})
# Resources whose deletion loses data or breaks every running workload.
STATEFUL = frozenset(
    {
        "aws:ecr/repository:Repository",
        "aws:kms/key:Key",
        "aws:eks/cluster:Cluster",
        "aws:s3/bucket:Bucket",
        "azure-native:containerregistry:Registry",
        "azure-native:resources:ResourceGroup",
        "gcp:artifactregistry/repository:Repository",
    }
)

TAGS_SCHEMA: dict[str, dict[str, Any]] = {
    "requiredTags": {
        "type": "array",
        "items": {"type": "string"},
        "default": ["owner", "environment", "service", "cost-center"],
        "description": "Tag keys every taggable resource must carry, with a non-empty value.",
    },
    "defaults": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "default": {},
        "description": "Values to fill in for missing tags when the policy's level is remediate.",
    },
}


def _required_tags(args: ResourceValidationArgs) -> Iterable[str]:
    tags = args.props.get("labels" if args.resource_type in LABELLED else "tags") or {}
    missing = [key for key in setting(args, TAGS_SCHEMA, "requiredTags") if not tags.get(key)]
    if missing:
        yield f"missing required tags: {', '.join(missing)}"


def _add_default_tags(args: ResourceValidationArgs) -> dict[str, Any] | None:
    """Fill in missing required tags from the configured defaults (safe: it only adds)."""
    key = "labels" if args.resource_type in LABELLED else "tags"
    tags = dict(args.props.get(key) or {})
    defaults = setting(args, TAGS_SCHEMA, "defaults")
    missing = {
        tag: defaults[tag]
        for tag in setting(args, TAGS_SCHEMA, "requiredTags")
        if not tags.get(tag) and defaults.get(tag)
    }
    if not missing:
        return None
    return {**dict(args.props), key: {**tags, **missing}}


def _protected(args: ResourceValidationArgs) -> Iterable[str]:
    if not args.opts.protect:
        yield f"{args.resource_type} is not protected; `pulumi destroy` or a rename would delete it"


POLICIES: list[Policy] = [
    resource_policy(
        name="required-tags",
        description="Taggable resources carry the owner, environment, service and cost-center tags.",
        types=TAGGED | LABELLED,
        rule=_required_tags,
        severity=Severity.LOW,
        framework=control(PROJECT, "attribution"),
        remediation="Create resources with tags=settings.tags(service); owner and costCenter come "
        "from the stack file. Or set the level to remediate with `defaults` to fill them in.",
        config=TAGS_SCHEMA,
        tags=["quality"],
        fix=_add_default_tags,
    ),
    resource_policy(
        name="protect-stateful-resources",
        description="Registries, keys, clusters and resource groups have protect=True (enabled for prod).",
        types=STATEFUL,
        rule=_protected,
        severity=Severity.HIGH,
        framework=control(PROJECT, "stateful-protection"),
        remediation="Pass ResourceOptions(protect=True); components do this when environment is prod.",
        tags=["quality"],
    ),
]


LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
RETENTION_SCHEMA: dict[str, dict[str, Any]] = {
    "minimumDays": {
        "type": "integer",
        "default": 7,
        "description": "Shortest acceptable retention of a log group, in days.",
    }
}


def _retention(args: ResourceValidationArgs) -> Iterable[str]:
    days = args.props.get("retentionInDays")
    minimum = setting(args, RETENTION_SCHEMA, "minimumDays")
    if not days:
        yield "log group keeps logs forever (no retentionInDays); set a retention"
    elif days < minimum:
        yield f"log group keeps logs {num(days)} days; this environment requires at least {num(minimum)}"


POLICIES += [
    resource_policy(
        name="log-group-retention",
        description="CloudWatch log groups have a retention period, at least the environment's minimum.",
        types=[LOG_GROUP],
        rule=_retention,
        severity=Severity.LOW,
        framework=control("AWS Foundational Security Best Practices", "CloudWatch.16"),
        remediation="Set logRetentionDays (ecs, eks) in the stack file.",
        config=RETENTION_SCHEMA,
        tags=["quality"],
    ),
]


HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
SCALING_TARGET = "aws:appautoscaling/target:Target"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
LISTENER_RULE = "aws:lb/listenerRule:ListenerRule"
CLOUD_RUN = "gcp:cloudrunv2/service:Service"
ORIGIN = "azure-native:cdn:AFDOrigin"
AVAILABILITY_SCHEMA: dict[str, dict[str, Any]] = {
    "minimumReplicas": {
        "type": "integer",
        "default": 1,
        "description": "Fewest pods a service may run across its slots (prod: 2).",
    }
}


def _bounds(args: ResourceValidationArgs) -> Iterable[str]:
    if args.resource_type == HPA:
        spec, lo_key, hi_key = args.props.get("spec") or {}, "minReplicas", "maxReplicas"
    else:
        spec, lo_key, hi_key = args.props, "minCapacity", "maxCapacity"
    lo, hi = spec.get(lo_key), spec.get(hi_key)
    if lo is None or hi is None:
        yield f"autoscaling has no {lo_key} / {hi_key}"
    elif not 1 <= lo <= hi:
        yield f"autoscaling bounds {num(lo)}..{num(hi)} are not 1 <= min <= max"


def _weights(args: StackValidationArgs) -> Iterable[tuple[str, str | None]]:
    """Every traffic split the program declares sends 100% somewhere: no slot lost, none doubled."""
    origin_groups: dict[str, int] = {}
    origin_urns: dict[str, str] = {}
    for r in args.resources:
        splits: list[tuple[str, float]] = []
        if r.resource_type == INGRESS:
            annotations = (r.props.get("metadata") or {}).get("annotations") or {}
            for key, value in annotations.items():
                if key.startswith("alb.ingress.kubernetes.io/actions."):
                    groups = (json.loads(value).get("forwardConfig") or {}).get("targetGroups") or []
                    splits.append((key, sum(g.get("weight", 0) for g in groups)))
        elif r.resource_type == LISTENER_RULE:
            for action in r.props.get("actions") or []:
                groups = (action.get("forward") or {}).get("targetGroups") or []
                if groups:
                    splits.append(("forward", sum(g.get("weight") or 0 for g in groups)))
        elif r.resource_type == CLOUD_RUN and r.props.get("traffics"):
            splits.append(("traffics", sum(t.get("percent") or 0 for t in r.props.get("traffics") or [])))
        elif r.resource_type == ORIGIN:
            group = str(r.props.get("originGroupName"))
            enabled = r.props.get("enabledState", "Enabled") == "Enabled"
            origin_groups[group] = origin_groups.get(group, 0) + (
                int(r.props.get("weight") or 0) if enabled else 0
            )
            origin_urns[group] = r.urn
        for where, total in splits:
            if total != 100:
                yield f"traffic split ({where}) sums to {num(total)}, not 100", r.urn
    for group, total in origin_groups.items():
        if total != 1000:
            yield (
                f"Front Door origin group {group}: enabled weights sum to {total}, not 1000 (100%)",
                origin_urns[group],
            )


def _availability(args: StackValidationArgs) -> Iterable[tuple[str, str | None]]:
    """Per app: enough replicas across slots, and every Deployment covered by a PodDisruptionBudget."""
    minimum = setting(args, AVAILABILITY_SCHEMA, "minimumReplicas")
    hpa_min = {}
    for r in args.resources:
        if r.resource_type == HPA:
            spec = r.props.get("spec") or {}
            hpa_min[(spec.get("scaleTargetRef") or {}).get("name")] = spec.get("minReplicas") or 0
    pdb_selectors = [
        ((r.props.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        for r in args.resources
        if r.resource_type == PDB
    ]
    per_app: dict[str, float] = {}
    app_urn: dict[str, str] = {}
    for r in args.resources:
        if r.resource_type != DEPLOYMENT:
            continue
        name = (r.props.get("metadata") or {}).get("name")
        template = (r.props.get("spec") or {}).get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        app = str(labels.get("app.kubernetes.io/name", name))
        replicas = hpa_min.get(name, (r.props.get("spec") or {}).get("replicas") or 1)
        per_app[app] = per_app.get(app, 0) + replicas
        app_urn[app] = r.urn
        if not any(sel and all(labels.get(k) == v for k, v in sel.items()) for sel in pdb_selectors):
            yield f"Deployment {name} has no PodDisruptionBudget", r.urn
    for app, total in per_app.items():
        if total < minimum:
            yield (
                f"{app} runs at least {num(total)} pod(s) across its slots; this environment needs {minimum}",
                app_urn[app],
            )


POLICIES += [
    resource_policy(
        name="autoscaling-bounds",
        description="Autoscaling bounds are sane: 1 <= min <= max.",
        types=[HPA, SCALING_TARGET],
        rule=_bounds,
        severity=Severity.MEDIUM,
        framework=control(PROJECT, "capacity"),
        remediation="Set services[].replicas with 1 <= min <= max.",
        tags=["quality"],
    ),
    stack_policy(
        name="rollout-weights-sum-100",
        description="Every traffic split (ALB, listener rules, Cloud Run, Front Door) sends exactly 100%.",
        rule=_weights,
        severity=Severity.CRITICAL,
        framework=control(PROJECT, "zero-downtime-rollouts"),
        remediation="Fix the slots' weights in services[].rollout so they sum to 100.",
        tags=["quality"],
    ),
    stack_policy(
        name="k8s-availability",
        description="Kubernetes services keep a minimum number of pods and a PodDisruptionBudget.",
        rule=_availability,
        severity=Severity.MEDIUM,
        framework=control(PROJECT, "availability"),
        remediation="Raise services[].replicas.min; components.targets.eks adds a PDB per slot.",
        config=AVAILABILITY_SCHEMA,
        tags=["quality"],
    ),
]
