"""pouw-cicd: build every service's image and push it to each hardened registry the stack names.

Thin on purpose: read the settings once (nothing is registered if they are invalid), build the
platform from components, export what pipelines and people need.
"""

import os

import pulumi
import pulumi_azure_native.resources as azure_resources

from components import settings as settings_module
from components.image import ImageBuild, ImageBuildArgs
from components.registry import (
    AcrRegistry,
    AcrRegistryArgs,
    ArtifactRegistry,
    ArtifactRegistryArgs,
    EcrRepository,
    EcrRepositoryArgs,
    PushTarget,
    ecr_enhanced_scanning,
    ghcr_target,
)

settings = settings_module.load()
config = pulumi.Config(settings_module.NAMESPACE)
registries = settings.registries
# The commit being deployed, as GitHub Actions and Jenkins expose it (OCI revision label).
revision = os.environ.get("GITHUB_SHA") or os.environ.get("GIT_COMMIT")

if registries.ecr is not None and registries.ecr.enhanced_scanning:
    ecr_enhanced_scanning("ecr-enhanced-scanning")

acr_registry = None
if registries.acr is not None and settings.azure is not None:
    resource_group = azure_resources.ResourceGroup(
        "resource-group",
        resource_group_name=settings.azure.resource_group,
        location=settings.azure.location,
        tags=settings.tags(),
        opts=pulumi.ResourceOptions(protect=settings.is_prod),
    )
    acr_registry = AcrRegistry(
        "acr",
        AcrRegistryArgs(
            settings=registries.acr,
            azure=settings.azure,
            resource_group_name=resource_group.name,
            public_network_access=settings.acr_public_network_access,
            tags=settings.tags(),
            protect=settings.is_prod,
        ),
    )

artifact_registry = None
if registries.artifact_registry is not None and settings.gcp is not None:
    artifact_registry = ArtifactRegistry(
        "artifact-registry",
        ArtifactRegistryArgs(
            settings=registries.artifact_registry,
            gcp=settings.gcp,
            labels=settings.labels(),
            protect=settings.is_prod,
        ),
    )

ghcr_token = config.require_secret(registries.ghcr.token_key) if registries.ghcr else None

for service in settings.services:
    targets: list[PushTarget] = []
    if registries.ecr is not None:
        repository = EcrRepository(
            f"{service.name}-ecr",
            EcrRepositoryArgs(
                service=service.name,
                settings=registries.ecr,
                tags=settings.tags(service.name),
                protect=settings.is_prod,
            ),
        )
        targets.append(repository.target())
    if acr_registry is not None:
        targets.append(acr_registry.target(service.name))
    if artifact_registry is not None:
        targets.append(artifact_registry.target(service.name))
    if registries.ghcr is not None and ghcr_token is not None:
        targets.append(ghcr_target(registries.ghcr, service.name, ghcr_token))

    image = ImageBuild(
        service.name,
        ImageBuildArgs(
            service=service,
            targets=targets,
            source_repository=settings.source_repository,
            revision=revision,
            secrets={sid: config.require_secret(key) for sid, key in service.build.secrets.items()},
        ),
    )
    pulumi.export(
        service.name,
        {"version": service.version, "digest": image.digest, "images": image.refs},
    )
