"""The stack context: what every target and build of one stack shares.

Settings (parsed once), tags and labels, protection, secret lookups, the shared AWS network and Azure
resource group (made only when something needs them), the permissions boundary, and the registries
behind one `Registry` protocol. Components never read `pulumi.Config`; the context does, once, and hands
them plain settings and `pulumi.Input` values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import pulumi
import pulumi_azure_native.network as azure_network
import pulumi_azure_native.resources as azure_resources

from components import sdk_aliases
from components.iam import permissions_boundary
from components.image import ImageBuild, ImageBuildArgs, ReleaseImage, ReleaseImageArgs
from components.network import AwsNetwork, AwsNetworkArgs
from components.registry import (
    AcrRegistry,
    AcrRegistryArgs,
    ArtifactRegistry,
    ArtifactRegistryArgs,
    EcrRegistry,
    GhcrRegistry,
    Registry,
    build_registry,
    ecr_enhanced_scanning,
)
from components.rollout import RolloutPlan
from components.schema import ServiceSettings
from components.settings import Settings
from components.targets.aks import address_of, egress_address

# Before the program constructs any resource: alias URNs only when the SDK reads them.
sdk_aliases.install()


class StackContext:
    """One stack's shared resources and lookups. `network` is made when a target of `needs_network`
    is used (EKS and ECS share one VPC per environment); the rest when the settings configure them."""

    def __init__(
        self,
        settings: Settings,
        config: pulumi.Config,
        *,
        revision: str | None = None,
        needs_network: bool = False,
    ) -> None:
        self.settings = settings
        self.config = config
        self.revision = revision  # the commit being deployed (OCI revision label)
        self.protect = settings.is_prod
        self.cluster_name = f"pouw-{settings.environment}"
        registries = settings.registries
        if registries.ecr is not None and registries.ecr.enhanced_scanning:
            ecr_enhanced_scanning("ecr-enhanced-scanning")
        self.resource_group: azure_resources.ResourceGroup | None = None
        if settings.azure is not None:
            self.resource_group = azure_resources.ResourceGroup(
                "resource-group",
                resource_group_name=settings.azure.resource_group,
                location=settings.azure.location,
                tags=settings.tags(),
                opts=pulumi.ResourceOptions(protect=self.protect),
            )
        self.registries: dict[str, Registry] = {}
        if registries.artifact_registry is not None and settings.gcp is not None:
            self.registries["artifactRegistry"] = ArtifactRegistry(
                "artifact-registry",
                ArtifactRegistryArgs(
                    settings=registries.artifact_registry,
                    gcp=settings.gcp,
                    labels=settings.labels(),
                    protect=self.protect,
                ),
            )
        # Every role the stack makes carries this boundary; the deploy role may manage no other.
        self.boundary: pulumi.Output[str] | None = None
        identities = settings.pipeline_identities
        if identities is not None and identities.aws:
            self.boundary = permissions_boundary(
                "permissions-boundary", settings.environment, settings.tags("ci")
            ).arn
        self.network: AwsNetwork | None = None
        eks = "eks" in settings.targets()
        if needs_network and settings.network is not None:
            self.network = AwsNetwork(
                "network",
                AwsNetworkArgs(
                    settings=settings.network,
                    cluster_name=self.cluster_name if eks else None,
                    tags=settings.tags(),
                    protect=self.protect,
                    flow_log_retention_days=settings.flow_log_retention_days,
                    encrypt_logs=settings.is_prod,
                    permissions_boundary=self.boundary,
                ),
            )
        # AKS nodes' one outbound address, made before the registry whose firewall admits it (the AKS
        # target puts it on the cluster's NAT gateway).
        self.aks_egress: azure_network.PublicIPAddress | None = None
        if "aks" in settings.targets() and self.resource_group is not None and settings.azure is not None:
            self.aks_egress = egress_address(
                "aks-egress", self.resource_group.name, settings.azure.location, settings.tags(), self.protect
            )
        # The ACR admits this stack's NAT egress (the in-network runners that push), AKS's egress (its
        # kubelets pull) and ACI's identity.
        egress: list[pulumi.Input[str]] = (
            list(self.network.nat_public_ips) if self.network is not None else []
        )
        if self.aks_egress is not None:
            egress.append(address_of(self.aks_egress))
        if registries.acr is not None and self.resource_group is not None and settings.azure is not None:
            self.registries["acr"] = AcrRegistry(
                "acr",
                AcrRegistryArgs(
                    settings=registries.acr,
                    azure=settings.azure,
                    resource_group_name=self.resource_group.name,
                    network_access=settings.acr_network_access,
                    egress_ips=egress,
                    trusted_services="aci" in settings.targets(),
                    zone_redundant=settings.acr_zone_redundant,
                    tags=settings.tags(),
                    protect=self.protect,
                ),
            )
        if registries.ecr is not None:
            self.registries["ecr"] = EcrRegistry(registries.ecr, settings.tags, self.protect)
        if registries.ghcr is not None:
            self.registries["ghcr"] = GhcrRegistry(
                registries.ghcr, config.require_secret(registries.ghcr.token_key)
            )
        self._slot_images: dict[tuple[str, str], dict[str, pulumi.Output[str]]] = {}

    def secret(self, key: str) -> pulumi.Output[str]:
        """A secure config value by its key (names come from settings, never values)."""
        return self.config.require_secret(key)

    def secrets(self, keys: Mapping[str, str]) -> dict[str, pulumi.Output[str]]:
        return {name: self.secret(key) for name, key in keys.items()}

    @cached_property
    def build_kind(self) -> str:
        """The environment's build registry: every build goes there; the others get copies."""
        return build_registry(self.settings.registries)

    def images(self, service: ServiceSettings, plan: RolloutPlan) -> ServiceImages:
        """The service's images: every released version its slots run, copied from the release record
        (`ReleaseImage`); a version the release has not recorded is built here, which settings allow
        in dev only (`releases.buildUnreleased`)."""
        record = self.settings.record
        versions = {service.version, *(s.version for s in plan.slots)}
        released = {v: image for v in sorted(versions) if (image := record.image(service.name, v))}
        release = None
        if released:
            kinds = [k for k in self.settings.registries_for(service) if k != "ghcr" and k in self.registries]
            ghcr = self.registries.get("ghcr")
            release = ReleaseImage(
                service.name,
                ReleaseImageArgs(
                    service=service.name,
                    versions=released,
                    registries=[
                        self.registries[k].target(service.name) for k in kinds if k in self.registries
                    ],
                    source_credentials=ghcr.target(service.name).credentials if ghcr is not None else None,
                ),
            )
        build = None if service.version in released else self.build(service)
        return ServiceImages(service.version, release, build)

    def build(self, service: ServiceSettings) -> ImageBuild:
        """The service's one build, pushed to the build registry and copied to each other it needs."""
        kinds = [k for k in self.settings.registries_for(service) if k != self.build_kind]
        pushes = [self.build_kind, *kinds]
        targets = {k: self.registries[k].target(service.name) for k in pushes if k in self.registries}
        return ImageBuild(
            service.name,
            ImageBuildArgs(
                service=service,
                registry=targets[self.build_kind],
                copies=[targets[k] for k in pushes[1:] if k in targets],
                source_repository=self.settings.source_repository,
                revision=self.revision,
                secrets=self.secrets(service.build.secrets),
            ),
        )

    def slot_images(
        self, service: ServiceSettings, plan: RolloutPlan, images: ServiceImages, kind: str
    ) -> dict[str, pulumi.Output[str]]:
        """Each slot's digest-pinned image in registry `kind`: a released version's copy, this update's
        build, or (dev, unreleased) an earlier build resolved once from its immutable tag (targets
        pulling from the same registry share the lookup)."""
        key = (service.name, kind)
        if key not in self._slot_images:
            found: dict[str, pulumi.Output[str]] = {}
            for slot in plan.slots:
                ref = images.ref(slot.version, kind)
                if ref is None:
                    ref = self.registries[kind].pinned(service.name)(slot.version)
                found[slot.name] = ref
            self._slot_images[key] = found
        return self._slot_images[key]


@dataclass(frozen=True)
class ServiceImages:
    """A service's released copies and, for an unreleased version (dev), its build."""

    version: str  # the service's `version`: what `digest` and `refs` describe
    release: ReleaseImage | None
    build: ImageBuild | None

    def ref(self, version: str, kind: str) -> pulumi.Output[str] | None:
        if self.release is not None and version in self.release.refs:
            return self.release.refs[version].get(kind)
        if self.build is not None and version == self.version:
            return self.build.refs.get(kind)
        return None

    @property
    def refs(self) -> dict[str, pulumi.Output[str]]:
        if self.build is not None:
            return self.build.refs
        assert self.release is not None
        return self.release.refs[self.version]

    @property
    def digest(self) -> pulumi.Output[str]:
        if self.build is not None:
            return self.build.digest
        assert self.release is not None
        return pulumi.Output.from_input(self.release.digests[self.version])
