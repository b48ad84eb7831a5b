"""The Cloud Run target: one service, one named revision per template, `traffics` for the split.

Cloud Run splits traffic natively between revisions. The service's template describes the revision
this update introduces (the built version); every other slot routes to a revision an earlier update
created. Revisions are named by version and content, not by slot: `<service>-<version>--<hash>`,
where the hash covers the whole template (image digest, environment, resources, probes, scaling,
labels, identity). Cloud Run rejects a known revision name with a different template, so a name
that is a function of the template is never reused for another one, while a version that moves
between slots (canary -> stable on promotion) keeps its template and therefore its name: promotion
and weight changes stay pure traffic changes. Because the new revision is the template of the same
update that first routes to it, traffic never points at a revision that does not exist yet.

An older slot routes to the revision that already serves its version: found in the live service's
traffic (which also finds revisions named before content hashes, `<service>-<version>`, and ones
created under settings that have changed since), else the name this rule gives that version's
template with the current settings. Each slot gets a `tag`, which is its own preview URL.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pulumi
import pulumi_gcp.artifactregistry as artifactregistry
import pulumi_gcp.cloudrunv2 as cloudrunv2
import pulumi_gcp.secretmanager as secretmanager
import pulumi_gcp.serviceaccount as serviceaccount

from components.admission import BinaryAuthorization, BinaryAuthorizationArgs, Verification
from components.registry import ArtifactRegistry
from components.rollout import Model as _Model
from components.rollout import RolloutPlan
from components.schema import GcpSettings, ServiceSettings
from components.targets.base import Target, TargetEndpoints, cpu_cores

if TYPE_CHECKING:
    from components.context import StackContext


class CloudRunSettings(_Model):
    # Unset: all outside prod; internal-and-cloud-load-balancing in prod.
    ingress: Literal["all", "internal", "internal-and-cloud-load-balancing"] | None = None
    # Members granted roles/run.invoker, e.g. group:devs@example.com; allUsers only with allowPublic.
    invokers: tuple[str, ...] = ()
    allow_public: bool = False

    def ingress_for(self, prod: bool) -> str:
        """Explicit, or only through a load balancer in prod, all elsewhere (`prod`: the stack is prod)."""
        return self.ingress or ("internal-and-cloud-load-balancing" if prod else "all")


# Hex characters of the template hash in a revision name, and the room left for `<service>-<version>`.
HASH_CHARS = 8
_BASE_CHARS = 63 - 2 - HASH_CHARS


CLOUD_RUN_SERVICE = "gcp:cloudrunv2/service:Service"


def _base(service: str, version: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", f"{service}-{version}".lower())
    return re.sub(r"-+", "-", name).strip("-")


def revision_name(service: str, version: str) -> str:
    """`<service>-<version>` in Cloud Run's revision grammar: lowercase, digits, '-', at most 63.

    The part of every revision name that says which version it runs (a single '-' between words,
    never two); on its own, the name revisions had before they carried a template hash.
    """
    return _base(service, version)[:63].rstrip("-")


def template_hash(template: Mapping[str, Any]) -> str:
    """A short SHA-256 of a revision template's resolved content (canonical JSON)."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_CHARS]


def content_revision_name(service: str, version: str, template: Mapping[str, Any]) -> str:
    """`<service>-<version>--<template hash>`: the name of the revision this exact template makes.

    '--' cannot occur in `revision_name`, so the version part of a name is never mistaken for a hash.
    """
    return f"{_base(service, version)[:_BASE_CHARS].rstrip('-')}--{template_hash(template)}"


def serving_revision(live: Iterable[tuple[str, int]], service: str, version: str, derived: str) -> str:
    """The revision an older slot keeps routing to: one that already serves `version`.

    `live` is the live service's (revision, percent) traffic. A revision of this version found
    there wins (`derived`, the name this version's template has with today's settings, if it is
    among them; else the one with the most traffic); without one, `derived`. A name too long to
    tell versions apart once cut to 63 characters is never guessed from live traffic.
    """
    if len(_base(service, version)) > _BASE_CHARS:
        return derived
    legacy = revision_name(service, version)
    hashed = re.compile(re.escape(f"{legacy}--") + f"[0-9a-f]{{{HASH_CHARS}}}")
    found = {(name, percent) for name, percent in live if name == legacy or hashed.fullmatch(name)}
    if not found or derived in {name for name, _ in found}:
        return derived
    return max(found, key=lambda f: (f[1], f[0]))[0]


def tagged_url(uri: str, tag: str) -> str:
    """Cloud Run serves a tagged revision at https://<tag>---<service host>."""
    return uri.replace("https://", f"https://{tag}---", 1)


def named(service: str, version: str, template: cloudrunv2.ServiceTemplateArgsDict) -> pulumi.Output[str]:
    """The content name of `template` once its outputs (identity, image digest) are known."""
    return pulumi.Output.from_input(dict(template)).apply(
        lambda resolved: content_revision_name(service, version, resolved)
    )


def live_traffic(service: cloudrunv2.GetServiceResult) -> list[tuple[str, int]]:
    """(revision, percent) of every traffic target the live service has, observed and configured."""
    observed = [(t.revision, t.percent) for t in service.traffic_statuses or []]
    configured = [(t.revision, t.percent) for t in service.traffics or []]
    return [(revision, int(percent or 0)) for revision, percent in observed + configured if revision]


def revision_template(
    svc: ServiceSettings,
    labels: Mapping[str, str],
    service_account: pulumi.Input[str],
    version: str,
    image: pulumi.Input[str],
) -> cloudrunv2.ServiceTemplateArgsDict:
    """The revision template of one version of the service (everything but its name)."""
    envs: list[cloudrunv2.ServiceTemplateContainerEnvArgsDict] = [
        {"name": k, "value": v} for k, v in sorted(svc.environment.items())
    ]
    envs += [{"name": "APP_VERSION", "value": version}]
    envs += [
        {
            "name": variable,
            "value_source": {"secret_key_ref": {"secret": ref.split(":")[0], "version": ref.split(":")[1]}},
        }
        for variable, ref in sorted(svc.gcp_secrets.items())
    ]
    probe: cloudrunv2.ServiceTemplateContainerStartupProbeHttpGetArgsDict = {
        "path": svc.health_path,
        "port": svc.port,
    }
    return {
        "service_account": service_account,
        "execution_environment": "EXECUTION_ENVIRONMENT_GEN2",
        # The service's bounds, not the slot's: Cloud Run already scales each revision with its
        # traffic, and a weight change must not touch the template (that would cut a revision).
        "scaling": {"min_instance_count": svc.replicas.min, "max_instance_count": svc.replicas.max},
        "labels": {**labels, "version": revision_name("v", version)},
        "containers": [
            {
                "name": "app",
                "image": image,
                "ports": {"container_port": svc.port},
                "envs": envs,
                "resources": {
                    "limits": {
                        # Whole CPUs: fractions below 1 need concurrency 1.
                        "cpu": str(max(1, math.ceil(cpu_cores(svc.resources.cpu_limit)))),
                        "memory": svc.resources.memory_limit,
                    },
                    "cpu_idle": True,
                    "startup_cpu_boost": True,
                },
                "startup_probe": {"http_get": probe, "period_seconds": 2, "failure_threshold": 30},
                "liveness_probe": {"http_get": probe, "period_seconds": 10, "failure_threshold": 3},
            }
        ],
    }


@dataclass(frozen=True)
class CloudRunServiceArgs:
    service: ServiceSettings
    plan: RolloutPlan
    images: Mapping[str, pulumi.Input[str]]  # slot name -> digest-pinned image ref
    settings: CloudRunSettings
    gcp: GcpSettings
    registry: ArtifactRegistry
    ingress: str
    labels: dict[str, str] = field(default_factory=dict)
    protect: bool = False
    # The project's Binary Authorization policy admits its revisions (the release's attestation).
    binary_authorization: bool = False


class CloudRunService(pulumi.ComponentResource):
    """A Cloud Run service with its own service account, Artifact Registry read access, and invokers."""

    endpoints: TargetEndpoints
    # The runtime identity: the deploy identity may act as it (serviceAccountUser on it alone).
    account: serviceaccount.Account

    def __init__(
        self, name: str, args: CloudRunServiceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("pouw:index:CloudRunService", name, None, opts)
        svc = args.service
        plan = args.plan
        child = pulumi.ResourceOptions(parent=self)
        project, region = args.gcp.project, args.gcp.region

        # A dedicated identity, never the Compute default service account.
        account = serviceaccount.Account(
            f"{name}-sa",
            account_id=f"run-{svc.name}"[:30],
            display_name=f"Cloud Run {svc.name}",
            project=project,
            opts=child,
        )
        self.account = account
        member = account.email.apply(lambda email: f"serviceAccount:{email}")
        artifactregistry.RepositoryIamMember(
            f"{name}-pull",
            project=project,
            location=region,
            repository=args.registry.repository.repository_id,
            role="roles/artifactregistry.reader",
            member=member,
            opts=child,
        )
        for variable, ref in sorted(svc.gcp_secrets.items()):
            secretmanager.SecretIamMember(
                f"{name}-secret-{variable.lower()}",
                project=project,
                secret_id=ref.split(":")[0],
                role="roles/secretmanager.secretAccessor",
                member=member,
                opts=child,
            )

        built = next(s for s in plan.slots if s.version == svc.version)

        def template_of(version: str, image: pulumi.Input[str]) -> cloudrunv2.ServiceTemplateArgsDict:
            return revision_template(svc, args.labels, account.email, version, image)

        template = template_of(svc.version, args.images[built.name])
        revisions = {svc.version: named(svc.name, svc.version, template)}
        template["revision"] = revisions[svc.version]
        older = {s.version: s.name for s in plan.slots if s.version not in revisions}
        if older:
            live = cloudrunv2.get_service_output(
                name=svc.name, project=project, location=region, opts=pulumi.InvokeOutputOptions(parent=self)
            ).apply(live_traffic)
            for version, slot in older.items():
                derived = named(svc.name, version, template_of(version, args.images[slot]))
                revisions[version] = pulumi.Output.all(live, derived, version).apply(
                    lambda a: serving_revision(a[0], svc.name, a[2], a[1])
                )
        traffics: list[cloudrunv2.ServiceTrafficArgsDict] = [
            {
                "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
                "revision": revisions[slot.version],
                "percent": slot.weight,
                "tag": slot.name,
            }
            for slot in plan.slots
        ]
        self.service = cloudrunv2.Service(
            name,
            name=svc.name,
            project=project,
            location=region,
            ingress=f"INGRESS_TRAFFIC_{args.ingress.upper().replace('-', '_')}",
            deletion_protection=args.protect,
            labels=args.labels,
            template=template,
            traffics=traffics,
            binary_authorization={"use_default": True} if args.binary_authorization else None,
            opts=child,
        )
        invokers = list(args.settings.invokers) + (["allUsers"] if args.settings.allow_public else [])
        for invoker in invokers:
            cloudrunv2.ServiceIamMember(
                f"{name}-invoker-{re.sub(r'[^a-z0-9]+', '-', invoker.lower())}",
                project=project,
                location=region,
                name=self.service.name,
                role="roles/run.invoker",
                member=invoker,
                opts=child,
            )
        preview = plan.preview_slot
        self.endpoints = TargetEndpoints(
            url=self.service.uri,
            preview_url=self.service.uri.apply(lambda uri: tagged_url(uri, preview)) if preview else None,
            weights=plan.weights,
            images=dict(args.images),
        )
        self.register_outputs(self.endpoints.as_outputs())


class CloudRunTarget(Target):
    """Cloud Run: one service per app, a named revision per version, `traffics` percents and tags."""

    key = "cloudrun"
    settings_key = "cloudRun"
    settings_model = CloudRunSettings
    registry = "artifactRegistry"
    # The template is the revision an update creates; `traffics` only moves traffic.
    workload_types = {CLOUD_RUN_SERVICE: ("template",)}
    routing_types = frozenset({CLOUD_RUN_SERVICE})  # the same resource: `traffics` only moves traffic
    # Cloud Run splits by percent and serves each tagged revision at its own URL; it has no header
    # routing, so settings refuse a header route on it.
    header_route_instead = (
        "it routes by tag URL; the canary's tag URL (its previewUrl, https://canary---<service host>) "
        "is its A/B entry point"
    )

    def __init__(self, ctx: StackContext) -> None:
        super().__init__(ctx)
        s = ctx.settings
        assert s.gcp is not None and s.cloud_run is not None
        registry = ctx.registries["artifactRegistry"]
        assert isinstance(registry, ArtifactRegistry)
        self.registry_ = registry
        # The services made, by app: the pipeline identities grant the deploy account on each.
        self.services: dict[str, CloudRunService] = {}
        verification = Verification.of(s, self.key)
        self.binary_authorization = (
            BinaryAuthorization(
                "binauthz",
                BinaryAuthorizationArgs(
                    project=s.gcp.project,
                    region=s.gcp.region,
                    environment=s.environment,
                    enforce=verification.enforce,
                    protect=ctx.protect,
                    labels=s.labels(),
                ),
            )
            if verification is not None
            else None
        )

    def deploy(
        self, service: ServiceSettings, plan: RolloutPlan, images: Mapping[str, pulumi.Input[str]]
    ) -> TargetEndpoints:
        s = self.ctx.settings
        assert s.gcp is not None and s.cloud_run is not None
        run = CloudRunService(
            f"{service.name}-cloudrun",
            CloudRunServiceArgs(
                service=service,
                plan=plan,
                images=images,
                settings=s.cloud_run,
                gcp=s.gcp,
                registry=self.registry_,
                ingress=s.cloud_run.ingress_for(s.is_prod),
                labels=s.labels(service.name),
                protect=self.ctx.protect,
                binary_authorization=self.binary_authorization is not None,
            ),
        )
        self.services[service.name] = run
        return run.endpoints
