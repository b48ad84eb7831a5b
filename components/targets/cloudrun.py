"""The Cloud Run target: one service, one named revision per release, `traffics` for the split.

Cloud Run splits traffic natively between revisions. The service's template describes the revision
this update introduces (the built version); every other slot routes to a revision an earlier update
created. Revisions are named by version (`<service>-<version>`), not by slot: a revision name is
immutable while a version moves between slots (canary -> stable on promotion), so naming by version
makes promotion a pure traffic change and keeps every older revision addressable. Because the new
revision is the template of the same update that first routes to it, traffic never points at a
revision that does not exist yet. Each slot gets a `tag`, which is its own preview URL.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp.artifactregistry as artifactregistry
import pulumi_gcp.cloudrunv2 as cloudrunv2
import pulumi_gcp.secretmanager as secretmanager
import pulumi_gcp.serviceaccount as serviceaccount

from components.registry import ArtifactRegistry
from components.rollout import RolloutPlan
from components.settings import CloudRunSettings, GcpSettings, ServiceSettings
from components.targets.base import TargetEndpoints, cpu_cores


def revision_name(service: str, version: str) -> str:
    """`<service>-<version>` in Cloud Run's revision grammar: lowercase, digits, '-', at most 63."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"{service}-{version}".lower())
    return re.sub(r"-+", "-", name)[:63].rstrip("-")


def tagged_url(uri: str, tag: str) -> str:
    """Cloud Run serves a tagged revision at https://<tag>---<service host>."""
    return uri.replace("https://", f"https://{tag}---", 1)


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


class CloudRunService(pulumi.ComponentResource):
    """A Cloud Run service with its own service account, Artifact Registry read access, and invokers."""

    endpoints: TargetEndpoints

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
        envs: list[cloudrunv2.ServiceTemplateContainerEnvArgsDict] = [
            {"name": k, "value": v} for k, v in sorted(svc.environment.items())
        ]
        envs += [{"name": "APP_VERSION", "value": svc.version}]
        envs += [
            {
                "name": variable,
                "value_source": {
                    "secret_key_ref": {"secret": ref.split(":")[0], "version": ref.split(":")[1]}
                },
            }
            for variable, ref in sorted(svc.gcp_secrets.items())
        ]
        probe: cloudrunv2.ServiceTemplateContainerStartupProbeHttpGetArgsDict = {
            "path": svc.health_path,
            "port": svc.port,
        }
        template: cloudrunv2.ServiceTemplateArgsDict = {
            "revision": revision_name(svc.name, svc.version),
            "service_account": account.email,
            "execution_environment": "EXECUTION_ENVIRONMENT_GEN2",
            # The service's bounds, not the slot's: Cloud Run already scales each revision with its
            # traffic, and a weight change must not touch the template (that would cut a revision).
            "scaling": {"min_instance_count": svc.replicas.min, "max_instance_count": svc.replicas.max},
            "labels": {**args.labels, "version": revision_name("v", svc.version)},
            "containers": [
                {
                    "name": "app",
                    "image": args.images[built.name],
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
        traffics: list[cloudrunv2.ServiceTrafficArgsDict] = [
            {
                "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
                "revision": revision_name(svc.name, slot.version),
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
