"""pouw-cicd: build every service's image and push it to hardened registries.

Thin on purpose: read the settings once (nothing is registered if they are invalid), build the
platform from components, export what pipelines and people need.
"""

import pulumi

from components import settings as settings_module
from components.image import ImageBuild, ImageBuildArgs
from components.registry import EcrRepository, EcrRepositoryArgs

settings = settings_module.load()
config = pulumi.Config(settings_module.NAMESPACE)

for service in settings.services:
    repository = EcrRepository(
        f"{service.name}-ecr",
        EcrRepositoryArgs(
            service=service.name,
            settings=settings.registries.ecr,
            tags=settings.tags(service.name),
            protect=settings.is_prod,
        ),
    )
    image = ImageBuild(
        service.name,
        ImageBuildArgs(
            service=service,
            registries=[repository],
            source_repository=settings.source_repository,
            secrets={sid: config.require_secret(key) for sid, key in service.build.secrets.items()},
        ),
    )
    pulumi.export(
        service.name,
        {
            "version": service.version,
            "repositoryUrl": repository.repository_url,
            "image": image.ref,
            "digest": image.digest,
        },
    )
