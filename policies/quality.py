"""Quality gates: every resource is attributable, and what holds state survives a stray delete."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity, StackValidationArgs

import resource_types as t
from pack_support import AWS_NETWORK_DATA, FSBP, PROJECT, QUALITY, num, setting

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


@QUALITY.resource(
    "required-tags",
    "Taggable resources carry the owner, environment, service and cost-center tags.",
    types=TAGGED | LABELLED,
    severity=Severity.LOW,
    controls=[PROJECT("attribution")],
    remediation="Create resources with tags=settings.tags(service); owner and costCenter come "
    "from the stack file. Or set the level to remediate with `defaults` to fill them in.",
    config=TAGS_SCHEMA,
    fix=_add_default_tags,
)
def _required_tags(args: ResourceValidationArgs) -> Iterable[str]:
    tags = args.props.get("labels" if args.resource_type in LABELLED else "tags") or {}
    missing = [key for key in setting(args, TAGS_SCHEMA, "requiredTags") if not tags.get(key)]
    if missing:
        yield f"missing required tags: {', '.join(missing)}"


@QUALITY.resource(
    "protect-stateful-resources",
    "Registries, keys, clusters and resource groups have protect=True (enabled for prod).",
    types=STATEFUL,
    severity=Severity.HIGH,
    controls=[PROJECT("stateful-protection")],
    remediation="Pass ResourceOptions(protect=True); components do this when environment is prod.",
)
def _protected(args: ResourceValidationArgs) -> Iterable[str]:
    if not args.opts.protect:
        yield f"{args.resource_type} is not protected; `pulumi destroy` or a rename would delete it"


RETENTION_SCHEMA: dict[str, dict[str, Any]] = {
    "minimumDays": {
        "type": "integer",
        "default": 7,
        "description": "Shortest acceptable retention of a log group, in days.",
    }
}


@AWS_NETWORK_DATA.resource(
    "log-group-retention",
    "CloudWatch log groups have a retention period, at least the environment's minimum.",
    types=[t.LOG_GROUP],
    severity=Severity.LOW,
    controls=[FSBP("CloudWatch.16")],
    checkov=["CKV_AWS_66"],
    remediation="Set logRetentionDays (ecs, eks) in the stack file.",
    config=RETENTION_SCHEMA,
)
def _retention(args: ResourceValidationArgs) -> Iterable[str]:
    days = args.props.get("retentionInDays")
    minimum = setting(args, RETENTION_SCHEMA, "minimumDays")
    if not days:
        yield "log group keeps logs forever (no retentionInDays); set a retention"
    elif days < minimum:
        yield f"log group keeps logs {num(days)} days; this environment requires at least {num(minimum)}"


AVAILABILITY_SCHEMA: dict[str, dict[str, Any]] = {
    "minimumReplicas": {
        "type": "integer",
        "default": 1,
        "description": "Fewest pods a service may run across its slots (prod: 2).",
    }
}


@QUALITY.resource(
    "autoscaling-bounds",
    "Autoscaling bounds are sane: 1 <= min <= max.",
    types=[t.HPA, t.SCALING_TARGET],
    severity=Severity.MEDIUM,
    controls=[PROJECT("capacity")],
    remediation="Set services[].replicas with 1 <= min <= max.",
)
def _bounds(args: ResourceValidationArgs) -> Iterable[str]:
    if args.resource_type == t.HPA:
        spec, lo_key, hi_key = args.props.get("spec") or {}, "minReplicas", "maxReplicas"
    else:
        spec, lo_key, hi_key = args.props, "minCapacity", "maxCapacity"
    lo, hi = spec.get(lo_key), spec.get(hi_key)
    if lo is None or hi is None:
        yield f"autoscaling has no {lo_key} / {hi_key}"
    elif not 1 <= lo <= hi:
        yield f"autoscaling bounds {num(lo)}..{num(hi)} are not 1 <= min <= max"


@QUALITY.stack(
    "rollout-weights-sum-100",
    "Every traffic split (ALB, listener rules, Gateway API HTTPRoutes, Cloud Run, Front Door) sends "
    "exactly 100%.",
    severity=Severity.CRITICAL,
    controls=[PROJECT("zero-downtime-rollouts")],
    remediation="Fix the slots' weights in services[].rollout so they sum to 100.",
)
def _weights(args: StackValidationArgs) -> Iterable[tuple[str, str | None]]:
    """Every traffic split the program declares sends 100% somewhere: no slot lost, none doubled."""
    origin_groups: dict[str, int] = {}
    origin_urns: dict[str, str] = {}
    for r in args.resources:
        splits: list[tuple[str, float]] = []
        if r.resource_type == t.INGRESS:
            annotations = (r.props.get("metadata") or {}).get("annotations") or {}
            for key, value in annotations.items():
                if key.startswith("alb.ingress.kubernetes.io/actions."):
                    groups = (json.loads(value).get("forwardConfig") or {}).get("targetGroups") or []
                    splits.append((key, sum(g.get("weight", 0) for g in groups)))
        elif r.resource_type == t.LISTENER_RULE:
            for action in r.props.get("actions") or []:
                groups = (action.get("forward") or {}).get("targetGroups") or []
                if groups:
                    splits.append(("forward", sum(g.get("weight") or 0 for g in groups)))
        elif r.resource_type == t.HTTP_ROUTE:
            for i, rule in enumerate((r.props.get("spec") or {}).get("rules") or []):
                backends = list(rule.get("backendRefs") or [])
                # Gateway API weights are relative; the program always writes percentages.
                if any("weight" in b for b in backends):
                    splits.append((f"rules[{i}].backendRefs", sum(b.get("weight") or 0 for b in backends)))
        elif r.resource_type == t.CLOUD_RUN and r.props.get("traffics"):
            splits.append(("traffics", sum(t.get("percent") or 0 for t in r.props.get("traffics") or [])))
        elif r.resource_type == t.AFD_ORIGIN:
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


def _header_rules(r: Any) -> Iterable[tuple[str, list[str]]]:
    """(where, the backends it forwards to) for each rule of a resource that matches on a header or a
    cookie: an ALB Ingress `conditions.<action>` with its `actions.<action>`, a listener rule with an
    http_header condition, an HTTPRoute rule with header matches, a Front Door rule with a header or
    cookie condition (its route override's origin group)."""
    if r.resource_type == t.INGRESS:
        annotations = (r.props.get("metadata") or {}).get("annotations") or {}
        prefix = "alb.ingress.kubernetes.io/"
        for key in annotations:
            if key.startswith(prefix + "conditions."):
                action = key[len(prefix + "conditions.") :]
                conditions = json.loads(annotations[key] or "[]")
                if not any(c.get("field") == "http-header" for c in conditions):
                    continue
                forward = json.loads(annotations.get(prefix + "actions." + action) or "{}")
                groups = (forward.get("forwardConfig") or {}).get("targetGroups") or []
                yield action, [str(g.get("serviceName")) for g in groups if g.get("weight", 1)]
    elif r.resource_type == t.LISTENER_RULE:
        if any(c.get("httpHeader") for c in r.props.get("conditions") or []):
            for action in r.props.get("actions") or []:
                groups = (action.get("forward") or {}).get("targetGroups") or []
                single = [action["targetGroupArn"]] if action.get("targetGroupArn") else []
                yield "forward", single + [str(g.get("arn")) for g in groups if g.get("weight") != 0]
    elif r.resource_type == t.HTTP_ROUTE:
        for i, rule in enumerate((r.props.get("spec") or {}).get("rules") or []):
            if any(m.get("headers") for m in rule.get("matches") or []):
                backends = rule.get("backendRefs") or []
                yield f"rules[{i}]", [str(b.get("name")) for b in backends if b.get("weight", 1)]
    elif r.resource_type == t.AFD_RULE:
        names = {c.get("name") for c in r.props.get("conditions") or []}
        if names & {"RequestHeader", "Cookies"}:
            groups = [
                str(((a.get("parameters") or {}).get("originGroupOverride") or {}).get("originGroup"))
                for a in r.props.get("actions") or []
                if a.get("name") == "RouteConfigurationOverride"
            ]
            yield "actions", [g for g in groups if g != "None"]


@QUALITY.stack(
    "header-route-single-slot",
    "An A/B rule (a header or cookie match) sends every matching request to one slot's backend, "
    "which the stack declares.",
    severity=Severity.HIGH,
    controls=[PROJECT("zero-downtime-rollouts")],
    remediation="Let the targets build header routes from services[].rollout.headerRoute: each "
    "forwards to the canary's Service, target group or origin group only (stable after a rollback).",
)
def _header_routes(args: StackValidationArgs) -> Iterable[tuple[str, str | None]]:
    """A header rule that splits is not A/B (the requests a tester sends land anywhere), and one that
    names a Service the stack does not declare sends them nowhere (the ALB or Gateway answers 503)."""
    services = {
        str((r.props.get("metadata") or {}).get("name"))
        for r in args.resources
        if r.resource_type == t.SERVICE
    }
    for r in args.resources:
        for where, backends in _header_rules(r):
            if len(backends) != 1:
                yield (
                    f"header route ({where}) forwards to {len(backends)} backends; an A/B rule sends "
                    "matching requests to one slot",
                    r.urn,
                )
            elif r.resource_type in (t.INGRESS, t.HTTP_ROUTE) and backends[0] not in services:
                yield (
                    f"header route ({where}) forwards to Service {backends[0]}, which this stack does "
                    "not declare",
                    r.urn,
                )


def _covered(labels: set[tuple[str, str]], selectors: set[frozenset[tuple[str, str]]]) -> bool:
    """Whether some selector is a subset of the labels: by lookup of the labels' subsets while they are
    few (pods carry a handful of labels), else by scanning the selectors."""
    if len(labels) > 10:
        return any(selector <= labels for selector in selectors)
    pairs = sorted(labels)
    return any(
        frozenset(subset) in selectors
        for size in range(1, len(pairs) + 1)
        for subset in itertools.combinations(pairs, size)
    )


@QUALITY.stack(
    "k8s-availability",
    "Kubernetes services keep a minimum number of pods and a PodDisruptionBudget.",
    severity=Severity.MEDIUM,
    controls=[PROJECT("availability")],
    remediation="Raise services[].replicas.min; components.targets.eks adds a PDB per slot.",
    config=AVAILABILITY_SCHEMA,
)
def _availability(args: StackValidationArgs) -> Iterable[tuple[str, str | None]]:
    """Per app: enough replicas across slots, and every Deployment covered by a PodDisruptionBudget."""
    minimum = setting(args, AVAILABILITY_SCHEMA, "minimumReplicas")
    hpa_min = {}
    for r in args.resources:
        if r.resource_type == t.HPA:
            spec = r.props.get("spec") or {}
            hpa_min[(spec.get("scaleTargetRef") or {}).get("name")] = spec.get("minReplicas") or 0
    # Each PDB's matchLabels as a set of pairs: a Deployment is covered when one of them is a subset of
    # its pod labels. Looked up by the subsets of those labels (a handful), so the policy stays linear
    # in the resources, not Deployments x PDBs.
    pdb_selectors = {
        frozenset((str(k), str(v)) for k, v in selector.items())
        for r in args.resources
        if r.resource_type == t.PDB
        and (selector := ((r.props.get("spec") or {}).get("selector") or {}).get("matchLabels"))
    }
    per_app: dict[str, float] = {}
    app_urn: dict[str, str] = {}
    for r in args.resources:
        if r.resource_type != t.DEPLOYMENT:
            continue
        name = (r.props.get("metadata") or {}).get("name")
        template = (r.props.get("spec") or {}).get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        app = str(labels.get("app.kubernetes.io/name", name))
        replicas = hpa_min.get(name, (r.props.get("spec") or {}).get("replicas") or 1)
        per_app[app] = per_app.get(app, 0) + replicas
        app_urn[app] = r.urn
        if not _covered({(str(k), str(v)) for k, v in labels.items()}, pdb_selectors):
            yield f"Deployment {name} has no PodDisruptionBudget", r.urn
    for app, total in per_app.items():
        if total < minimum:
            yield (
                f"{app} runs at least {num(total)} pod(s) across its slots; this environment needs {minimum}",
                app_urn[app],
            )
