"""`python -m preflight diff --stack prod --base origin/main`: what a change does to a stack's resources.

The program runs twice under the same mocks: as it was at a git revision (the files of that commit,
with that commit's `Pulumi.<stack>.yaml`) and as it is in the working tree. The two plans are
matched the way the engine matches a program against its last state: by URN, then by each new
resource's aliases. What is left is created, updated, replaced or deleted, and the changes a
reviewer must not miss are flagged: the replacement or deletion of a protected or stateful resource
(renaming a service deletes its registry, key, load balancer and Front Door endpoint), and a restart
of a workload that serves traffic.

This is an offline prediction. Without a provider there is no provider `Diff`: replacements are
predicted from a table of replace-triggering inputs (REPLACE_ON_CHANGES). `pulumi preview` is the
authoritative diff.

    python -m preflight diff --stack prod --base origin/main --markdown diff.md --json diff.json

Exit codes: 0 the diff was shown (flags are informational), 1 with --fail-on-flags when anything
is flagged, 2 an error (bad revision, not a git repository, a program that does not run).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from preflight.engine import SIG_KEY, PlanDiff, ProgramRun, Registration
from preflight.program_imports import forkserver
from preflight.report import masked
from preflight.stackconfig import StackConfigError, load_stack_config

# The directory that holds the `preflight` package (the tool), whatever project it is run against.
TOOL_ROOT = Path(__file__).resolve().parent.parent
ROOT_STACK = "pulumi:pulumi:Stack"
PROGRAM_TIMEOUT = 300.0  # seconds for the program runs (the base, then the head)

# ---------------------------------------------------------------------------------------------
# Classification: the one place that says what a workload is and which inputs restart it.
# `preflight rollout` and `preflight diff` share it.
# From the target registry (`Target.workload_types`): the one list of what a workload is.
# ---------------------------------------------------------------------------------------------

CLOUD_RUN = "gcp:cloudrunv2/service:Service"


@functools.cache
def workload_restart_inputs() -> Mapping[str, tuple[str, ...] | None]:
    """Every target's workload types, each with the input paths whose change starts new pods, tasks,
    revisions or containers (None: any input). From the target registry, the one list of what a
    workload is (`Target.workload_types`); imported on first use, as only a plan diff needs it."""
    from components.targets import TARGETS

    merged: dict[str, tuple[str, ...] | None] = {}
    for target in TARGETS.values():
        for type_, inputs in target.workload_types.items():
            if merged.setdefault(type_, inputs) != inputs:
                raise ValueError(f"targets disagree on what restarts a {type_}")
    return merged


def is_workload(type_: str) -> bool:
    return type_ in workload_restart_inputs()


# Not a running workload, but a rebuilt image: never a pure traffic step.
BUILD_TYPES = frozenset({"docker-build:index:Image", "docker-build:index:Index"})

# Deleting (or replacing) one of these loses data or takes traffic down. Each says what is lost.
# Anything with `protect=True` is flagged as well, whatever its type.
STATEFUL_TYPES: Mapping[str, str] = {
    "aws:ecr/repository:Repository": "its images, which running workloads pull",
    "azure-native:containerregistry:Registry": "its images, which running workloads pull",
    "gcp:artifactregistry/repository:Repository": "its images, which running workloads pull",
    "aws:kms/key:Key": "the key: whatever it encrypts becomes unreadable",
    "gcp:kms/cryptoKey:CryptoKey": "the key: whatever it encrypts becomes unreadable",
    "aws:eks/cluster:Cluster": "the cluster and every workload on it",
    "gcp:container/cluster:Cluster": "the cluster and every workload on it",
    "azure-native:containerservice:ManagedCluster": "the cluster and every workload on it",
    "aws:ecs/cluster:Cluster": "the cluster and every service on it",
    "aws:ec2/vpc:Vpc": "the network everything runs in",
    "aws:ec2/subnet:Subnet": "a subnet with its addresses and the workloads in it",
    "aws:ec2/eip:Eip": "a public address partners may allow-list",
    "aws:s3/bucket:Bucket": "the bucket's objects",
    "aws:s3/bucketV2:BucketV2": "the bucket's objects",
    "aws:cloudwatch/logGroup:LogGroup": "the logs it holds",
    "aws:lb/loadBalancer:LoadBalancer": "the load balancer and its DNS name: traffic stops",
    "aws:secretsmanager/secret:Secret": "the secret's value",
    "aws:route53/zone:Zone": "the DNS zone",
    "aws:route53/record:Record": "a DNS record users resolve",
    "azure-native:resources:ResourceGroup": "the resource group and everything in it",
    "azure-native:cdn:Profile": "the Front Door profile and every endpoint on it",
    "azure-native:cdn:AFDEndpoint": "the Front Door endpoint and its host name: traffic stops",
    "azure-native:servicenetworking:FrontendsInterface": "the AGC frontend and its host name: traffic stops",
    "azure-native:network:PublicIPAddress": "a public address partners may allow-list",
    "azure-native:network:DnsZone": "the DNS zone",
    "azure-native:dns:Zone": "the DNS zone",
    "azure-native:keyvault:Vault": "the vault's keys and secrets",
    "gcp:dns/managedZone:ManagedZone": "the DNS zone",
    "gcp:dns/recordSet:RecordSet": "a DNS record users resolve",
    "gcp:secretmanager/secret:Secret": "the secret's versions",
    "kubernetes:core/v1:Namespace": "the namespace and every object in it",
    "kubernetes:core/v1:PersistentVolumeClaim": "the volume's data",
}

# REPLACEMENT PREDICTION. Offline there is no provider `Diff`, so which input changes force a
# replacement is predicted from this table: the physical names and the create-only properties of
# the types this project uses (Terraform-bridged providers: the attributes their schemas mark
# ForceNew; azure-native: the resource's own name and its parents' names, which form its ARM id,
# plus `location`; Kubernetes: the object's name and namespace and immutable fields). None means
# any input but tags (immutable resources). A type not listed is predicted to update in place.
# `pulumi preview`, which asks the provider, is the authority.
ANY_BUT_TAGS = None
REPLACE_ON_CHANGES: Mapping[str, tuple[str, ...] | None] = {
    # AWS
    "aws:ecr/repository:Repository": ("name", "encryptionConfigurations"),
    "aws:ecr/lifecyclePolicy:LifecyclePolicy": ("repository",),
    "aws:ecr/repositoryPolicy:RepositoryPolicy": ("repository",),
    "aws:kms/key:Key": ("customerMasterKeySpec", "keyUsage", "multiRegion", "customKeyStoreId", "xksKeyId"),
    "aws:eks/cluster:Cluster": (
        "name",
        "roleArn",
        "bootstrapSelfManagedAddons",
        "kubernetesNetworkConfig",
        "outpostConfig",
        "accessConfig.bootstrapClusterCreatorAdminPermissions",
    ),
    "aws:eks/nodeGroup:NodeGroup": (
        "clusterName",
        "nodeGroupName",
        "nodeGroupNamePrefix",
        "nodeRoleArn",
        "subnetIds",
        "amiType",
        "capacityType",
        "diskSize",
        "instanceTypes",
        "remoteAccess",
    ),
    "aws:ecs/cluster:Cluster": ("name",),
    "aws:ecs/service:Service": (
        "name",
        "cluster",
        "launchType",
        "schedulingStrategy",
        "deploymentController",
    ),
    # Task definitions are immutable: any change registers a new revision (shown as a replace).
    "aws:ecs/taskDefinition:TaskDefinition": ANY_BUT_TAGS,
    "aws:lb/loadBalancer:LoadBalancer": ("name", "namePrefix", "internal", "loadBalancerType"),
    "aws:lb/targetGroup:TargetGroup": (
        "name",
        "namePrefix",
        "port",
        "protocol",
        "protocolVersion",
        "targetType",
        "vpcId",
    ),
    "aws:lb/listener:Listener": ("loadBalancerArn",),
    "aws:lb/listenerRule:ListenerRule": ("listenerArn",),
    "aws:ec2/vpc:Vpc": ("cidrBlock", "ipv4IpamPoolId"),
    "aws:ec2/subnet:Subnet": ("vpcId", "cidrBlock", "availabilityZone", "availabilityZoneId"),
    "aws:ec2/securityGroup:SecurityGroup": ("name", "namePrefix", "description", "vpcId"),
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": ("vpcId",),
    "aws:ec2/eip:Eip": ("domain",),
    "aws:ec2/natGateway:NatGateway": ("allocationId", "subnetId", "connectivityType"),
    "aws:ec2/routeTable:RouteTable": ("vpcId",),
    "aws:ec2/routeTableAssociation:RouteTableAssociation": ("subnetId", "gatewayId"),
    "aws:ec2/flowLog:FlowLog": ANY_BUT_TAGS,
    "aws:ec2/launchTemplate:LaunchTemplate": ("name", "namePrefix"),
    "aws:cloudwatch/logGroup:LogGroup": ("name", "namePrefix", "logGroupClass"),
    "aws:s3/bucket:Bucket": ("bucket", "bucketPrefix", "objectLockEnabled"),
    "aws:s3/bucketV2:BucketV2": ("bucket", "bucketPrefix", "objectLockEnabled"),
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": ("bucket", "expectedBucketOwner"),
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": ("bucket",),
    "aws:s3/bucketPolicy:BucketPolicy": ("bucket",),
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": ("bucket",),
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": (
        "bucket",
        "expectedBucketOwner",
    ),
    "aws:iam/role:Role": ("name", "namePrefix", "path"),
    "aws:iam/rolePolicy:RolePolicy": ("name", "namePrefix", "role"),
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": ("role", "policyArn"),
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider": ("url",),
    "aws:appautoscaling/target:Target": ("resourceId", "scalableDimension", "serviceNamespace"),
    "aws:appautoscaling/policy:Policy": ("name", "resourceId", "scalableDimension", "serviceNamespace"),
    # Google Cloud
    "gcp:artifactregistry/repository:Repository": (
        "repositoryId",
        "location",
        "project",
        "format",
        "mode",
        "kmsKeyName",
    ),
    "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember": ANY_BUT_TAGS,
    CLOUD_RUN: ("name", "location", "project"),
    "gcp:cloudrunv2/serviceIamMember:ServiceIamMember": ANY_BUT_TAGS,
    "gcp:serviceaccount/account:Account": ("accountId", "project"),
    "gcp:serviceaccount/iAMMember:IAMMember": ANY_BUT_TAGS,
    "gcp:projects/iAMMember:IAMMember": ANY_BUT_TAGS,
    "gcp:secretmanager/secretIamMember:SecretIamMember": ANY_BUT_TAGS,
    "gcp:iam/workloadIdentityPool:WorkloadIdentityPool": ("workloadIdentityPoolId", "project"),
    "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider": (
        "workloadIdentityPoolId",
        "workloadIdentityPoolProviderId",
        "project",
    ),
    # Azure (azure-native): the names in the resource's ARM id, and its location.
    "azure-native:resources:ResourceGroup": ("resourceGroupName", "location"),
    "azure-native:containerregistry:Registry": ("registryName", "resourceGroupName", "location"),
    # Most container group changes are updates (which restart its containers); Azure rejects an
    # in-place change of ACI_REDEPLOY_ONLY, which pulumi does not plan as a replacement either.
    "azure-native:containerinstance:ContainerGroup": ("containerGroupName", "resourceGroupName", "location"),
    "azure-native:cdn:Profile": ("profileName", "resourceGroupName", "location"),
    "azure-native:cdn:AFDEndpoint": ("endpointName", "profileName", "resourceGroupName", "location"),
    "azure-native:cdn:AFDOriginGroup": ("originGroupName", "profileName", "resourceGroupName"),
    "azure-native:cdn:AFDOrigin": ("originName", "originGroupName", "profileName", "resourceGroupName"),
    "azure-native:cdn:Route": ("routeName", "endpointName", "profileName", "resourceGroupName"),
    "azure-native:managedidentity:UserAssignedIdentity": ("resourceName", "resourceGroupName", "location"),
    "azure-native:managedidentity:FederatedIdentityCredential": (
        "federatedIdentityCredentialResourceName",
        "resourceName",
        "resourceGroupName",
    ),
    "azure-native:authorization:RoleAssignment": (
        "roleAssignmentName",
        "scope",
        "principalId",
        "roleDefinitionId",
    ),
    # Kubernetes (plus KUBERNETES_IDENTITY for every object)
    "kubernetes:apps/v1:Deployment": ("spec.selector",),
    "kubernetes:apps/v1:StatefulSet": ("spec.selector", "spec.serviceName", "spec.volumeClaimTemplates"),
    "kubernetes:core/v1:Service": ("spec.clusterIP", "spec.clusterIPs"),
    "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding": ("roleRef",),
    "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding": ("roleRef",),
    "kubernetes:helm.sh/v3:Release": ("name", "namespace"),
}
KUBERNETES_IDENTITY = ("metadata.name", "metadata.namespace")
AZURE_IDENTITY = ("resourceGroupName", "location")  # any other azure-native type
TAG_INPUTS = frozenset({"tags", "tagsAll"})
ACI_REDEPLOY_ONLY = ("osType", "containers.resources", "restartPolicy", "subnetIds", "zones", "sku")


def replace_rules(type_: str) -> tuple[str, ...] | None:
    """The input paths whose change is predicted to replace a resource of this type (None: any)."""
    if type_ in REPLACE_ON_CHANGES:
        rules = REPLACE_ON_CHANGES[type_]
        if rules is not None and type_.startswith("kubernetes:") and "helm.sh" not in type_:
            return KUBERNETES_IDENTITY + rules
        return rules
    if type_.startswith("kubernetes:") and not type_.startswith("kubernetes:helm.sh"):
        return KUBERNETES_IDENTITY
    if type_.startswith("azure-native:"):
        return AZURE_IDENTITY
    return ()


def _bare(path: str) -> str:
    """A property path without list indexes: `containers[0].image` -> `containers.image`."""
    return re.sub(r"\[\d+\]", "", path)


def matches(path: str, rule: str) -> bool:
    """Whether a changed path is, is under, or contains the rule's path."""
    p = _bare(path)
    return p == rule or p.startswith(rule + ".") or rule.startswith(p + ".")


def restarts(type_: str, paths: Iterable[str]) -> bool:
    """Whether changing these inputs of a resource of this type starts new containers."""
    restart_inputs = workload_restart_inputs()
    if type_ not in restart_inputs:
        return False
    inputs = [p for p in paths if not p.startswith("(")]  # "(options)", "(protect)": not inputs
    rules = restart_inputs[type_]
    if rules is None:
        return bool(inputs)
    return any(matches(p, r) for p in inputs for r in rules)


def classify(change: PlanDiff) -> tuple[list[str], list[str]]:
    """(routing changes, workload changes) of an engine plan diff, each as `type name (fields)` lines.

    What `preflight rollout` prints: a resource added or removed, an image rebuilt, or a workload
    input that restarts containers (RESTART_INPUTS) is a workload change; the rest is routing.
    """
    routing: list[str] = []
    workloads: list[str] = []
    for key in sorted(change.changed | change.added | change.removed):
        type_, name = key
        fields = sorted(change.fields.get(key, {"(added)" if key in change.added else "(removed)"}))
        line = f"{type_} {name} ({', '.join(fields)})"
        is_workload = key in change.added or key in change.removed or type_ in BUILD_TYPES
        is_workload = is_workload or restarts(type_, fields)
        (workloads if is_workload else routing).append(line)
    return routing, workloads


# ---------------------------------------------------------------------------------------------
# The plan diff
# ---------------------------------------------------------------------------------------------

ACTIONS = ("replace", "delete", "create", "update")  # the order reviewers read them in


@dataclass(frozen=True)
class Leaf:
    """One changed input: its path and its old and new values (wire format, secrets marked)."""

    path: str
    old: Any
    new: Any


@dataclass(frozen=True)
class Flag:
    kind: str  # protected | stateful | restart
    reason: str


@dataclass
class Change:
    action: str  # create | update | replace | delete
    type: str
    name: str
    urn: str  # the URN after the change (before it, for a delete)
    base_urn: str = ""  # the URN before the change, when an alias carried the resource over
    custom: bool = True
    protect: bool = False
    changed: list[Leaf] = field(default_factory=list)
    replace_paths: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [leaf.path for leaf in self.changed]


@dataclass
class PlanChanges:
    changes: list[Change]
    unchanged: int
    # New URN -> old URN for the resources that aliases carry over (renamed or moved in code).
    moved: dict[str, str] = field(default_factory=dict)

    def of(self, action: str) -> list[Change]:
        return [c for c in self.changes if c.action == action]

    @property
    def flagged(self) -> list[Change]:
        return [c for c in self.changes if c.flags]

    def counts(self) -> dict[str, int]:
        counts = {action: len(self.of(action)) for action in ACTIONS}
        return {**counts, "unchanged": self.unchanged, "moved": len(self.moved), "flagged": len(self.flagged)}


_MISSING = object()


def changed_leaves(old: Any, new: Any, path: str = "") -> list[Leaf]:
    """The inputs that differ, as property paths; JSON documents inside strings are compared as JSON."""
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict) and SIG_KEY not in old and SIG_KEY not in new:
        leaves: list[Leaf] = []
        for key in sorted(old.keys() | new.keys()):
            sub = _child(path, key)
            leaves += changed_leaves(old.get(key, _MISSING), new.get(key, _MISSING), sub)
        return leaves
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            leaf
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for leaf in changed_leaves(a, b, f"{path}[{i}]")
        ]
    if isinstance(old, str) and isinstance(new, str) and old[:1] in "[{" and new[:1] in "[{":
        with contextlib.suppress(ValueError):
            return changed_leaves(json.loads(old), json.loads(new), path) or [Leaf(path, old, new)]
    return [Leaf(path or "(value)", None if old is _MISSING else old, None if new is _MISSING else new)]


def _child(path: str, key: str) -> str:
    """Pulumi's property path syntax: `a.b`, or `a["org.opencontainers.image.version"]`."""
    if re.fullmatch(r"[A-Za-z_$][\w$-]*", key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


_SEGMENT = re.compile(r'\.?([^.\[\]]+)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')


def _segments(path: str) -> list[str]:
    """A property path's keys and indexes, as rendered: `a[0]["x.y"].b` -> a, [0], ["x.y"], b."""
    return [m.group(1) or f"[{m.group(2) or m.group(3)}]" for m in _SEGMENT.finditer(path)]


def make_urn(parent: str, type_: str, name: str, project: str, stack: str) -> str:
    """The URN a resource with this parent, type and name gets, in the scheme of the monitor that
    recorded the plans (the SDK's MockMonitor: the parent's own type, then `$`, then the type)."""
    if parent:
        type_ = parent.split("::")[2].split("$")[-1] + "$" + type_
    return f"urn:pulumi:{stack}::{project}::{type_}::{name}"


def _urn_name(urn: str) -> str:
    return urn.split("::", 3)[3]


def _urn_type(urn: str) -> str:
    return urn.split("::")[2].split("$")[-1]


class AliasResolver:
    """Alias specs to URNs, as the engine's step generator does it.

    A spec's name and type default to the resource's own; its parent is the spec's (through that
    parent's own matched alias), or none (`noParent`), or the resource's parent; project and stack
    default to the deployment's. A resource whose parent was matched through an alias also inherits
    aliases: its name with the parent's name prefix swapped for the old parent's, under the old
    parent (Pulumi's `{parent}-child` naming convention).
    """

    def __init__(self, project: str, stack: str) -> None:
        self.project = project
        self.stack = stack
        self.root = f"urn:pulumi:{stack}::{project}::{ROOT_STACK}::{project}-{stack}"
        # New URN -> the old URN it matched through an alias (only those: as the engine records it).
        self.aliased: dict[str, str] = {}

    def candidates(self, r: Registration) -> list[str]:
        urns: list[str] = []
        specs: list[dict[str, Any]] = []
        for raw in r.aliases:
            if raw.startswith("urn:"):
                urns.append(raw)
                continue
            alias = json.loads(raw)
            if alias.get("urn"):
                urns.append(alias["urn"])
            elif "spec" in alias:
                specs.append(alias["spec"])
                urns.append(self._collapse(r, alias["spec"]))
        parent_alias = self.aliased.get(r.parent)
        if parent_alias is not None:
            parent_name = _urn_name(r.parent)
            urns.append(self._inherited(r.type, r.name, parent_name, parent_alias))
            for spec in specs:
                child = self._collapse(r, spec)
                urns.append(self._inherited(_urn_type(child), _urn_name(child), parent_name, parent_alias))
        return list(dict.fromkeys(urns))

    def _collapse(self, r: Registration, spec: Mapping[str, Any]) -> str:
        parent = spec.get("parentUrn") or ""
        parent = self.aliased.get(parent, parent) if parent else r.parent
        if spec.get("noParent") or not parent or _urn_type(parent) == ROOT_STACK:
            parent = self.root  # under mocks every top-level resource is the root stack's child
        return make_urn(
            parent,
            spec.get("type") or r.type,
            spec.get("name") or r.name,
            spec.get("project") or self.project,
            spec.get("stack") or self.stack,
        )

    def _inherited(self, child_type: str, child_name: str, parent_name: str, parent_alias: str) -> str:
        name = child_name
        if child_name.startswith(parent_name):
            name = _urn_name(parent_alias) + child_name[len(parent_name) :]
        return make_urn(parent_alias, child_type, name, self.project, self.stack)


def match(base: ProgramRun, head: ProgramRun) -> dict[str, str]:
    """Head URN -> base URN for every head resource that is a base resource (by URN or alias)."""
    olds = {r.urn for r in base.resources}
    news = {r.urn for r in head.resources}
    resolver = AliasResolver(head.project, head.stack)
    matched: dict[str, str] = {}
    claimed: set[str] = set()
    for r in head.resources:  # in registration order: parents before their children
        if r.aliases and make_urn(r.parent, r.type, r.name, head.project, head.stack) != r.urn:
            raise DiffError(
                f"{r.urn}: the monitor names resources differently from make_urn(); "
                "aliases cannot be resolved until make_urn follows it"
            )
        if r.urn in olds:
            matched[r.urn] = r.urn
            claimed.add(r.urn)
            continue
        for alias in resolver.candidates(r):
            if alias in olds and alias not in news and alias not in claimed:
                matched[r.urn] = alias
                claimed.add(alias)
                resolver.aliased[r.urn] = alias
                break
    return matched


def _leaf_strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaf_strings(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaf_strings(v, f"{path}[{i}]")
    elif isinstance(value, str):
        yield path, value


def _physical_ids(old: Registration, new: Registration) -> dict[str, str]:
    """What an alias keeps: the resource's URN, id and outputs. The mocks derive ids, ARNs and
    names from the logical name, so a renamed (aliased) resource would seem to change them; the
    real resource keeps its own, and everything that refers to it sees no change."""
    pairs = {new.urn: old.urn, f"{new.name}-id": f"{old.name}-id"}
    olds = dict(_leaf_strings(old.outputs))
    for path, value in _leaf_strings(new.outputs):
        if path in olds and olds[path] != value:
            pairs[value] = olds[path]
    return {k: v for k, v in pairs.items() if k != v}


class Substitution:
    """Rewrites head values into base terms: exact strings always, inside longer strings only
    for identifier-like values (URNs, ARNs, ids, host names), never for a bare name."""

    def __init__(self, pairs: Mapping[str, str]) -> None:
        self.exact = dict(pairs)
        inner = sorted(
            (k for k in pairs if len(k) >= 8 and any(c in k for c in ":/.")), key=len, reverse=True
        )
        self.pattern = re.compile("|".join(re.escape(k) for k in inner)) if inner else None

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, str):
            if value in self.exact:
                return self.exact[value]
            if self.pattern is not None:
                return self.pattern.sub(lambda m: self.exact[m.group(0)], value)
        return value


def _option_leaves(old: Registration, new: Registration, subst: Substitution) -> list[Leaf]:
    leaves = []
    for label, a, b in (
        ("protect", old.protect, new.protect),
        ("retainOnDelete", old.retain_on_delete, new.retain_on_delete),
        ("deleteBeforeReplace", old.delete_before_replace, new.delete_before_replace),
        ("ignoreChanges", sorted(old.ignore_changes), sorted(new.ignore_changes)),
        ("provider", old.provider, subst(new.provider)),
    ):
        if a != b:
            leaves.append(Leaf(f"({label})", a, b))
    return leaves


def _normal(path: str) -> str:
    """A property path as changed_leaves writes it (`a["b"]` -> `a.b`, `a["b.c"]` stays)."""
    out = ""
    for seg in _segments(path):
        if re.fullmatch(r"\[\d+\]", seg):
            out += seg
        else:
            out = _child(out, json.loads(seg[1:-1]) if seg.startswith('["') else seg)
    return out


def _ignored(path: str, ignore_changes: Iterable[str]) -> bool:
    """Whether the resource's `ignoreChanges` covers the path (the engine then keeps the old value)."""
    return any(matches(path, _bare(_normal(rule))) for rule in ignore_changes)


def compare(base: ProgramRun, head: ProgramRun) -> PlanChanges:
    """What `pulumi up` would do to go from the base plan to the head plan (predicted)."""
    matched = match(base, head)
    olds = {r.urn: r for r in base.resources}
    news = {r.urn: r for r in head.resources}
    pairs: dict[str, str] = {}
    for new_urn, old_urn in matched.items():
        if new_urn != old_urn:
            pairs.update(_physical_ids(olds[old_urn], news[new_urn]))
    subst = Substitution(pairs)
    serving = _Serving(base, head)

    changes: list[Change] = []
    unchanged = 0
    for r in head.resources:
        found = matched.get(r.urn)
        if found is None:
            changes.append(Change("create", r.type, r.name, r.urn, custom=r.custom, protect=r.protect))
            continue
        old = olds[found]
        leaves = [
            leaf
            for leaf in changed_leaves(old.inputs, subst(r.inputs))
            if not _ignored(leaf.path, r.ignore_changes)
        ] + _option_leaves(old, r, subst)
        if not leaves:
            unchanged += 1
            continue
        change = Change(
            "update",
            r.type,
            r.name,
            r.urn,
            base_urn=found if found != r.urn else "",
            custom=r.custom,
            protect=old.protect or r.protect,
            changed=leaves,
        )
        _predict_replace(change)
        _flag(change, old, r, serving)
        changes.append(change)
    carried = set(matched.values())
    for old in base.resources:
        if old.urn not in carried:
            change = Change("delete", old.type, old.name, old.urn, custom=old.custom, protect=old.protect)
            _flag(change, old, None, serving)
            changes.append(change)
    changes.sort(key=lambda c: (ACTIONS.index(c.action), c.type, c.name))
    return PlanChanges(changes, unchanged, {new: old for new, old in matched.items() if new != old})


def _predict_replace(change: Change) -> None:
    rules = replace_rules(change.type)
    inputs = [p for p in change.paths if not p.startswith("(")]
    if rules is None:
        change.replace_paths = [p for p in inputs if p.split(".")[0].split("[")[0] not in TAG_INPUTS]
    else:
        change.replace_paths = [p for p in inputs if any(matches(p, rule) for rule in rules)]
    if change.replace_paths:
        change.action = "replace"
    if change.type == "aws:ecs/taskDefinition:TaskDefinition" and change.action == "replace":
        change.notes.append("a new task definition revision; its service rolls its tasks onto it")
    if change.type == "azure-native:containerinstance:ContainerGroup" and change.action == "update":
        change.notes.append("Azure restarts every container of the group on update")
        fixed = sorted({r for p in inputs for r in ACI_REDEPLOY_ONLY if matches(p, r)})
        if fixed:
            change.notes.append(
                f"Azure cannot change {', '.join(fixed)} in place: the group must be deleted and redeployed"
            )
    if change.type == CLOUD_RUN and any(matches(p, "template") for p in inputs):
        change.notes.append("a new revision")
    if change.type in BUILD_TYPES:
        change.notes.append("the image is rebuilt and pushed (or copied)")


class _Serving:
    """Which workloads serve traffic, from the stack outputs every target reports (per service and
    target: `weights` and `images` per slot): a workload runs the image of its slot."""

    def __init__(self, base: ProgramRun, head: ProgramRun) -> None:
        self.runs = {"base": base, "head": head}
        self.weights = {"base": _image_weights(base.outputs), "head": _image_weights(head.outputs)}
        self.by_urn = {side: {r.urn: r for r in run.resources} for side, run in self.runs.items()}

    def _images(self, side: str, r: Registration) -> set[str]:
        text = json.dumps(r.inputs)
        found = {image for image in self.weights[side] if image in text}
        if not found:  # an ECS service runs its task definition's image
            for dep in r.dependencies:
                other = self.by_urn[side].get(dep)
                if other is not None and is_workload(other.type) and other.urn != r.urn:
                    other_text = json.dumps(other.inputs)
                    found |= {image for image in self.weights[side] if image in other_text}
        return found

    def weight(self, old: Registration | None, new: Registration | None) -> int | None:
        """The most traffic the workload takes before or after the change; None if unknown."""
        weights = []
        for side, r in (("base", old), ("head", new)):
            if r is not None:
                weights += [self.weights[side][image] for image in self._images(side, r)]
        return max(weights) if weights else None


def _image_weights(outputs: Any) -> dict[str, int]:
    found: dict[str, int] = {}

    def walk(value: Any) -> None:
        if not isinstance(value, dict):
            return
        weights, images = value.get("weights"), value.get("images")
        if isinstance(weights, dict) and isinstance(images, dict):
            for slot, image in images.items():
                weight = weights.get(slot)
                if isinstance(image, str) and len(image) >= 10 and not image.startswith("["):
                    found[image] = max(found.get(image, 0), weight if isinstance(weight, int) else 0)
        for v in value.values():
            walk(v)

    walk(outputs)
    return found


def _flag(change: Change, old: Registration, new: Registration | None, serving: _Serving) -> None:
    if not change.custom:
        return
    verb = {"replace": "replaced", "delete": "deleted"}.get(change.action)
    if verb is not None:
        if change.protect:
            change.flags.append(
                Flag(
                    "protected", f"protect=true: `pulumi up` refuses to {change.action} it until unprotected"
                )
            )
        retained = change.action == "delete" and old.retain_on_delete
        if change.type in STATEFUL_TYPES and not retained:
            change.flags.append(Flag("stateful", f"{verb}: loses {STATEFUL_TYPES[change.type]}"))
    if not is_workload(change.type):
        return
    if change.action == "update" and not restarts(change.type, change.paths):
        return
    weight = serving.weight(old, new)
    if weight == 0:
        return  # an idle slot (blue-green preview, a canary at 0): restarting it is the point
    share = "its slot is not in the stack outputs: assumed serving" if weight is None else f"weight {weight}"
    if change.action == "update":
        rules = workload_restart_inputs()[change.type]
        inputs = [p for p in change.paths if not p.startswith("(")]
        inputs = [p for p in inputs if rules is None or any(matches(p, r) for r in rules)]
        what = f"restarts ({', '.join(_short(inputs))} changed)"
    elif change.action == "replace":
        what = "is replaced: new containers take over its traffic once ready"
    else:
        what = "is deleted: its traffic stops"
    change.flags.append(Flag("restart", f"serves traffic ({share}) and {what}"))


def _short(paths: list[str], limit: int = 3) -> list[str]:
    """A few paths, cut to their first two keys, for a one-line reason."""
    tops = []
    for p in paths:
        keys = [k for k in _segments(p) if not re.fullmatch(r"\[\d+\]", k)][:2]
        tops.append("".join(k if k.startswith("[") or i == 0 else f".{k}" for i, k in enumerate(keys)))
    tops = list(dict.fromkeys(tops))
    return tops[:limit] + ([f"+{len(tops) - limit} more"] if len(tops) > limit else [])


# ---------------------------------------------------------------------------------------------
# The base revision and the two program runs
# ---------------------------------------------------------------------------------------------


class DiffError(Exception):
    """Not a diff: the message is the one line to print."""


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False, timeout=120)
    except FileNotFoundError as err:
        raise DiffError("git is not installed: the diff needs it to read the base revision") from err


@dataclass(frozen=True)
class BaseRevision:
    ref: str
    commit: str
    toplevel: Path
    project_path: str  # the project directory relative to the repository root ("" at the root)


def resolve_base(project_dir: Path, ref: str) -> BaseRevision:
    top = _git(["rev-parse", "--show-toplevel"], project_dir)
    if top.returncode != 0:
        raise DiffError(f"{project_dir} is not in a git repository: the diff needs the base revision's files")
    toplevel = Path(top.stdout.decode().strip()).resolve()
    commit = _git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"], toplevel)
    if commit.returncode != 0 or ref.startswith("-"):
        raise DiffError(
            f"--base {ref}: not a commit in {toplevel} (for a branch of a fresh CI clone, fetch it first: "
            "`git fetch origin <branch>` or check out with fetch-depth: 0)"
        )
    relative = project_dir.resolve().relative_to(toplevel).as_posix()
    return BaseRevision(ref, commit.stdout.decode().strip(), toplevel, "" if relative == "." else relative)


def materialise(base: BaseRevision, into: Path) -> Path | None:
    """The project's files at the base commit, under `into`; None if the project did not exist then.

    `git archive` reads the commit's tree from the object store: the working tree, the index, the
    stash and `.git/worktrees` are never touched, and nothing needs cleaning up if we are killed
    (a `git worktree add` would register a worktree in `.git` that a crash leaves behind). Paths
    the commit's `.gitattributes` marks `export-ignore` are left out, as in any archive.
    """
    spec = [base.project_path] if base.project_path else []
    if (
        spec
        and not _git(["ls-tree", "--name-only", base.commit, "--", base.project_path], base.toplevel).stdout
    ):
        return None
    archive = subprocess.Popen(
        ["git", "archive", "--format=tar", base.commit, "--", *spec],
        cwd=base.toplevel,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert archive.stdout is not None
    try:
        with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
            tar.extractall(into, filter="data")
    except tarfile.TarError as err:
        archive.kill()
        raise DiffError(f"cannot read {base.ref} ({base.commit[:12]}): {err}") from err
    finally:
        _, stderr = archive.communicate()
    if archive.returncode != 0:
        last = (stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        raise DiffError(f"git archive {base.ref} failed: {last}")
    return into / base.project_path if base.project_path else into


# Each program runs in a process of its own: `__main__.py` imports `components` (and any other
# module) from its own project directory, and a module imported from one copy would otherwise be
# reused by the other. The processes are forked from a server that preloaded the provider SDKs the
# project imports (`preflight.program_imports`), so a run does not pay for importing them again;
# only the `preflight` package comes from the tool, and no project module is loaded before the run.


def _emit_child(
    project_dir: str, stack: str, out: str, registry_file: str, log: str, environment: dict[str, str]
) -> None:
    """The forked run: its output to `log` (the program's prints and, on a crash, the traceback),
    in the project directory, with an import path that leads to no project but this one, and the
    caller's environment (a fork of the server would have the server's, as it was at its start)."""
    os.environ.clear()
    os.environ.update(environment)

    with open(log, "wb") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
    os.chdir(project_dir)
    # The parent's path (the server hands it over) holds its project directory (pytest's root, `-m`'s
    # working directory): a fresh `python -P` has neither; run_program puts this project first.
    projects = [p for p in sys.path if not p or Path(p) == TOOL_ROOT or (Path(p) / "Pulumi.yaml").exists()]
    sys.path[:] = [p for p in sys.path if p not in projects]
    sys.exit(emit_plan([project_dir, stack, out, registry_file]))


def emit_plan(argv: list[str]) -> int:
    """Subprocess entry: run `<project_dir>/__main__.py` for a stack and write the plan as JSON."""
    project_dir, stack, out = Path(argv[0]), argv[1], Path(argv[2])
    # What the base revision's run pushed: the head's older slots resolve their tags to those digests,
    # as the registry would after the base was deployed.
    registry = json.loads(Path(argv[3]).read_text()) if len(argv) > 3 else None
    from preflight.engine import run_program

    _forget_tool_project_modules()
    run = run_program(project_dir, load_stack_config(project_dir, stack), registry=registry)
    data = {
        "stack": run.stack,
        "project": run.project,
        "resources": [dataclasses.asdict(r) for r in run.resources],
        "outputs": run.outputs,
        "secretOutputs": run.secret_outputs,
        "error": run.error_text or (repr(run.error) if run.error is not None else None),
        "pushed": run.pushed,
    }
    out.write_text(json.dumps(data, default=str))
    return 0


def _forget_tool_project_modules() -> None:
    """Drop modules imported from the tool's own project copy (`components`, should a preflight
    module import it), so the program imports its own. Safe in this fresh process: nothing here
    uses them again."""
    for name, module in list(sys.modules.items()):
        top = name.split(".")[0]
        file = getattr(module, "__file__", None)
        if top == "preflight" or not file:
            continue
        path = Path(file).resolve()  # importable from the tool's root itself (not its .venv)
        if path == TOOL_ROOT / f"{top}.py" or path.is_relative_to(TOOL_ROOT / top):
            del sys.modules[name]


def _load_plan(path: Path) -> ProgramRun:
    data = json.loads(path.read_text())
    error = data.get("error")
    return ProgramRun(
        stack=data["stack"],
        project=data["project"],
        resources=[Registration(**r) for r in data["resources"]],
        outputs=data["outputs"],
        secret_outputs=data["secretOutputs"],
        error=RuntimeError(error) if error else None,
        error_text=error or "",
        pushed=data.get("pushed") or {},
    )


def run_programs(
    jobs: Mapping[str, Path],
    stack: str,
    workdir: Path,
    timeout: float,
    pushed: Mapping[str, str] | None = None,
) -> dict[str, ProgramRun]:
    """Each labelled project's plan, each program in its own interpreter, one after the other.

    The base runs first: the head's older slots then resolve their tags to what the base pushed (or
    `pushed`, a cached base's), as a real registry would after the base was deployed, so a slot that
    keeps its version keeps its digest and is not reported as restarting.
    """
    deadline = time.monotonic() + timeout
    runs: dict[str, ProgramRun] = {}
    registry = dict(pushed or {})
    try:
        context = forkserver(stack)
    except OSError as err:  # no socket or process for the server (a full /tmp, a process limit)
        raise DiffError(f"cannot start the program runs: {err}") from err
    for label in sorted(jobs, key=lambda x: x != "base"):
        out, log = workdir / f"plan-{label}.json", workdir / f"run-{label}.log"
        registry_file = workdir / f"pushed-{label}.json"
        registry_file.write_text(json.dumps(registry))
        args = (str(jobs[label]), stack, str(out), str(registry_file), str(log), dict(os.environ))
        proc = context.Process(target=_emit_child, args=args, name=f"preflight-diff-{label}", daemon=True)
        try:
            proc.start()
        except OSError as err:
            raise DiffError(f"cannot start the {label} program: {err}") from err
        try:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.exitcode is None:
                raise DiffError(f"the {label} program did not finish within {timeout:.0f} s")
        finally:
            if proc.exitcode is None:
                proc.kill()
                proc.join()
        if proc.exitcode != 0 or not out.exists():
            lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
            last = lines[-1] if lines else f"exit status {proc.exitcode}"
            raise DiffError(f"the {label} program could not be run: {last}")
        runs[label] = _load_plan(out)
        registry.update(runs[label].pushed)
    return runs


def _empty(project: str, stack: str) -> ProgramRun:
    return ProgramRun(stack=stack, project=project, resources=[], outputs={}, secret_outputs=[])


@dataclass
class DiffResult:
    stack: str
    base: BaseRevision
    base_stack_file: bool  # False: the stack did not exist at the base revision
    plan: PlanChanges


# (commit, project path, stack) -> the base plan, for a caller that diffs one base many times.
PlanCache = dict[tuple[str, str, str], ProgramRun]


def diff_against(
    project_dir: Path,
    stack: str,
    ref: str,
    timeout: float = PROGRAM_TIMEOUT,
    cache: PlanCache | None = None,
) -> DiffResult:
    """The working tree's plan for `stack` against the plan at git revision `ref`.

    `cache` keeps base plans by commit (a commit's files are fixed) for callers that compare many
    working trees with one base; the CLI makes one comparison and passes none.
    """
    head_config = load_stack_config(project_dir, stack)  # fails early, with the CLI's message
    base = resolve_base(project_dir, ref)
    key = (base.commit, base.project_path, stack)
    with tempfile.TemporaryDirectory(prefix="preflight-diff-") as tmp:
        jobs = {"head": project_dir.resolve()}
        cached = cache.get(key) if cache is not None else None
        has_stack = cached is not None
        if cached is None:
            base_dir = materialise(base, Path(tmp) / "base")
            has_stack = base_dir is not None and (base_dir / f"Pulumi.{stack}.yaml").exists()
            if base_dir is not None and has_stack:
                try:
                    load_stack_config(base_dir, stack)  # the base's own Pulumi.yaml and stack file
                except StackConfigError as err:
                    raise DiffError(f"at {ref}: {err}") from err
                jobs["base"] = base_dir
        runs = run_programs(jobs, stack, Path(tmp), timeout, cached.pushed if cached else None)
    for label, run in runs.items():
        if run.error is not None:
            where = f"at {ref}" if label == "base" else "in the working tree"
            raise DiffError(f"the program fails {where}: {_error_line(run.error_text)}")
    if cached is None and "base" in runs and cache is not None:
        cache[key] = runs["base"]
    before = cached or runs.get("base") or _empty(head_config.project, stack)
    return DiffResult(stack, base, has_stack, compare(before, runs["head"]))


def _error_line(text: str) -> str:
    """A program error in one line: a traceback's last line (the exception), else the first."""
    lines = [line for line in text.strip().splitlines() if line.strip()] or ["unknown error"]
    return lines[-1].strip() if lines[0].startswith("Traceback") else lines[0].strip()


# ---------------------------------------------------------------------------------------------
# Reports: console, Markdown (PR comment), JSON
# ---------------------------------------------------------------------------------------------

SYMBOLS = {"create": "+", "update": "~", "replace": "+-", "delete": "-"}
COLORS = {"create": "green", "update": "yellow", "replace": "magenta", "delete": "red"}
PREDICTION = (
    "Predicted offline from the program under mocks (replacements from a table of replace-triggering "
    "inputs); `pulumi preview` asks the providers and is authoritative."
)


def _text(value: Any) -> str:
    shown = masked(value)
    return shown if isinstance(shown, str) else json.dumps(shown, sort_keys=True)


def _old_new(old: Any, new: Any, width: int = 40) -> str:
    """`old -> new`, long values cut to where they differ (`...:web-ecr-key -> ...:web-ecr-cmk`)."""
    a, b = _text(old), _text(new)
    if max(len(a), len(b)) > width:
        common = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        cut = max((a.rfind(c, 0, common) for c in ":/.@"), default=-1)
        if cut > 8:
            a, b = "..." + a[cut:], "..." + b[cut:]
        a, b = (x if len(x) <= width else x[: width - 3] + "..." for x in (a, b))
    return f"{a} -> {b}"


def _details(change: Change) -> str:
    """What changed, in one line: replace-triggering inputs with their values, other paths briefly."""
    parts = []
    by_path = {leaf.path: leaf for leaf in change.changed}
    for path in change.replace_paths[:3]:
        leaf = by_path[path]
        parts.append(f"{path}: {_old_new(leaf.old, leaf.new)}")
    others = [p for p in change.paths if p not in change.replace_paths]
    if others:
        parts.append(", ".join(_short(others, 4)))
    return "; ".join(parts + change.notes)


def _headline(result: DiffResult) -> str:
    counts = result.plan.counts()
    return (
        f"{counts['create']} to create, {counts['update']} to update, {counts['replace']} to replace, "
        f"{counts['delete']} to delete, {counts['unchanged']} unchanged"
    )


def _no_stack_file(result: DiffResult) -> str:
    return f"Pulumi.{result.stack}.yaml does not exist at {result.base.ref}: everything is created"


def _moved(plan: PlanChanges) -> str:
    return f"{len(plan.moved)} resource(s) keep their identity through aliases (renamed or moved in code)"


def _base_label(result: DiffResult) -> str:
    return f"{result.base.ref} ({result.base.commit[:10]})"


def print_diff(result: DiffResult, console: Console) -> None:
    plan = result.plan
    stack = escape(result.stack)
    console.print(
        f"[bold]Plan diff[/] of stack [cyan]{stack}[/]: {escape(_base_label(result))} -> working tree"
    )
    if not result.base_stack_file:
        console.print(f"[dim]{escape(_no_stack_file(result))}[/]")
    console.print(_headline(result))
    if plan.moved:
        console.print(f"[dim]{_moved(plan)}[/]")
    if plan.flagged:
        console.print(f"[red bold]{len(plan.flagged)} flagged:[/]")
        for c in plan.flagged:
            console.print(f"  [red]! {c.action} {escape(c.type)} [bold]{escape(c.name)}[/][/]")
            for f in c.flags:
                console.print(f"      [red]{f.kind}:[/] {escape(f.reason)}")
    if plan.changes:
        table = Table(show_edge=False, pad_edge=False)
        for column in ("", "type", "name"):
            table.add_column(column, no_wrap=True)
        table.add_column("changes", overflow="fold")
        for c in plan.changes:
            color = "red bold" if c.flags else COLORS[c.action]
            style = "" if c.custom else "dim"  # components: no cloud resource of their own
            table.add_row(
                f"[{color}]{SYMBOLS[c.action]}[/]",
                escape(c.type),
                f"[{color}]{escape(c.name)}[/]" if c.flags else escape(c.name),
                escape(_details(c)),
                style=style,
            )
        console.print(table)
    else:
        console.print("[green]No changes.[/]")
    console.print(f"[dim]{PREDICTION}[/]")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(result: DiffResult) -> str:
    plan = result.plan
    counts = plan.counts()
    marker = f":warning: **{counts['flagged']} flagged** · " if counts["flagged"] else ""
    lines = [
        f"### Plan diff `{result.stack}`: `{result.base.ref}` (`{result.base.commit[:10]}`) → this change",
        "",
        marker + _headline(result).replace(", ", " · "),
        "",
    ]
    if plan.moved:
        lines += [f"_{_moved(plan)}._", ""]
    if not result.base_stack_file:
        lines += [f"_{_no_stack_file(result)}._", ""]
    if plan.flagged:
        lines += [
            f"#### :warning: Flagged ({len(plan.flagged)})",
            "",
            "| | action | resource | why |",
            "| --- | --- | --- | --- |",
        ]
        for c in plan.flagged:
            why = "<br>".join(f"**{f.kind}**: {_cell(f.reason)}" for f in c.flags)
            lines.append(f"| :warning: | {c.action} | `{c.name}` (`{c.type}`) | {why} |")
        lines.append("")
    for action in ACTIONS:
        changes = plan.of(action)
        if not changes:
            continue
        rows = ["| resource | type | changes |", "| --- | --- | --- |"]
        rows += [
            f"| {':warning: ' if c.flags else ''}`{c.name}` | `{c.type}` | {_cell(_details(c))} |"
            for c in changes
        ]
        lines.append(f"#### {action.capitalize()} ({len(changes)})")
        lines.append("")
        if len(changes) > 15:
            lines += ["<details><summary>show</summary>", "", *rows, "", "</details>"]
        else:
            lines += rows
        lines.append("")
    if not plan.changes:
        lines += ["No changes.", ""]
    lines.append(f"_{PREDICTION}_")
    return "\n".join(lines) + "\n"


def error_markdown(stack: str, message: str) -> str:
    return f"### Plan diff `{stack}`: failed\n\n```\n{message}\n```\n"


def as_json(result: DiffResult) -> dict[str, Any]:
    return {
        "stack": result.stack,
        "base": {"ref": result.base.ref, "commit": result.base.commit, "stackFile": result.base_stack_file},
        "counts": result.plan.counts(),
        "moved": [{"urn": new, "baseUrn": old} for new, old in sorted(result.plan.moved.items())],
        "flags": [
            {
                "kind": f.kind,
                "reason": f.reason,
                "action": c.action,
                "type": c.type,
                "name": c.name,
                "urn": c.urn,
            }
            for c in result.plan.flagged
            for f in c.flags
        ],
        "changes": [
            {
                "action": c.action,
                "type": c.type,
                "name": c.name,
                "urn": c.urn,
                "baseUrn": c.base_urn or None,
                "custom": c.custom,
                "protect": c.protect,
                "changed": [
                    {"path": leaf.path, "old": masked(leaf.old), "new": masked(leaf.new)}
                    for leaf in c.changed
                ],
                "replaceBecause": c.replace_paths,
                "notes": c.notes,
                "flags": [f.kind for f in c.flags],
            }
            for c in result.plan.changes
        ],
        "prediction": PREDICTION,
    }


def main(argv: list[str], project_dir: Path) -> int:
    parser = argparse.ArgumentParser(prog="python -m preflight diff", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True, help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument("--base", required=True, metavar="REF", help="git revision to compare with")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="write a PR-comment summary")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the changes as JSON")
    parser.add_argument("--fail-on-flags", action="store_true", help="exit 1 when anything is flagged")
    parser.add_argument("--timeout", type=float, default=PROGRAM_TIMEOUT, help="seconds per program run")
    args = parser.parse_args(argv)
    # Piped output (CI logs, tests) gets a wide fixed width instead of rich's 80 columns.
    console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
    for flag, path in (("--markdown", args.markdown), ("--json", args.json)):
        if path is not None and (path.is_dir() or not path.absolute().parent.is_dir()):
            console.print(
                f"[red bold]error:[/] {flag} {escape(str(path))}: not a file in an existing directory"
            )
            return 2
    try:
        result = diff_against(project_dir, args.stack, args.base, args.timeout)
    except (DiffError, StackConfigError) as err:
        console.print(f"[red bold]error:[/] {escape(str(err))}")
        if args.markdown:
            with contextlib.suppress(OSError):
                args.markdown.write_text(error_markdown(args.stack, str(err)))
        return 2
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        return 2
    print_diff(result, console)
    try:
        if args.markdown:
            args.markdown.write_text(markdown(result))
        if args.json:
            args.json.write_text(json.dumps(as_json(result), indent=2, sort_keys=True, default=str) + "\n")
    except OSError as err:
        console.print(f"[red bold]error:[/] cannot write the report: {escape(str(err))}")
        return 2
    return exit_status(result, args.fail_on_flags)


def exit_status(result: DiffResult, fail_on_flags: bool) -> int:
    """0: the diff is informational; 1 with --fail-on-flags when anything is flagged."""
    return 1 if fail_on_flags and result.plan.flagged else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], TOOL_ROOT))
