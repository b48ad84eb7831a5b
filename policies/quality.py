"""Quality gates: every resource is attributable, and what holds state survives a stray delete."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

from pack_support import PROJECT, control, num, resource_policy, setting

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
    }
}


def _required_tags(args: ResourceValidationArgs) -> Iterable[str]:
    tags = args.props.get("labels" if args.resource_type in LABELLED else "tags") or {}
    missing = [key for key in setting(args, TAGS_SCHEMA, "requiredTags") if not tags.get(key)]
    if missing:
        yield f"missing required tags: {', '.join(missing)}"


def _protected(args: ResourceValidationArgs) -> Iterable[str]:
    if not args.opts.protect:
        yield f"{args.resource_type} is not protected; `pulumi destroy` or a rename would delete it"


POLICIES = [
    resource_policy(
        name="required-tags",
        description="Taggable resources carry the owner, environment, service and cost-center tags.",
        types=TAGGED | LABELLED,
        rule=_required_tags,
        severity=Severity.LOW,
        framework=control(PROJECT, "attribution"),
        remediation="Create resources with tags=settings.tags(service); owner and costCenter come "
        "from the stack file.",
        config=TAGS_SCHEMA,
        tags=["quality"],
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
