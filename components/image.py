"""Image builds as resources: BuildKit (pulumi-docker-build), pushed once per registry, pinned by digest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pulumi
import pulumi_docker_build as docker_build

from components.registry import CACHE_TAG
from components.settings import ServiceSettings


class PushTarget(Protocol):
    """What a registry component offers a build: where to push and how to log in."""

    @property
    def repository_url(self) -> pulumi.Output[str]: ...

    def credentials(self) -> docker_build.RegistryArgs: ...


@dataclass(frozen=True)
class ImageBuildArgs:
    service: ServiceSettings
    registries: Sequence[PushTarget]
    source_repository: str
    # BuildKit secret id -> secret value (an Output marked secret, from `Config.require_secret`).
    secrets: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


def oci_labels(service: ServiceSettings, source_repository: str) -> dict[str, str]:
    """OCI annotations. `created` is left out on purpose: it would make every build unique."""
    return {
        "org.opencontainers.image.title": service.name,
        "org.opencontainers.image.version": service.version,
        "org.opencontainers.image.source": source_repository,
    }


class ImageBuild(pulumi.ComponentResource):
    """Builds one service image for its platforms and pushes the release tag to every registry.

    `refs[i]` is `registries[i]`'s `repository@sha256:...`; downstream code deploys only these.
    `build_on_preview` is off: a pull-request preview needs no registry credentials and no builder,
    and shows the digest as unknown until `pulumi up` builds it.
    """

    digest: pulumi.Output[str]
    refs: list[pulumi.Output[str]]
    ref: pulumi.Output[str]

    def __init__(self, name: str, args: ImageBuildArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pouw:index:ImageBuild", name, None, opts)
        if not args.registries:
            raise ValueError(f"ImageBuild {name}: needs at least one registry to push to")
        build = args.service.build
        urls = [r.repository_url for r in args.registries]
        cache_ref = urls[0].apply(lambda url: f"{url}:{CACHE_TAG}")

        self.image = docker_build.Image(
            name,
            context=docker_build.BuildContextArgs(location=build.context),
            dockerfile=docker_build.DockerfileArgs(location=build.dockerfile),
            target=build.target,
            platforms=[docker_build.Platform(p) for p in build.platforms],
            build_args=dict(build.args),
            labels=oci_labels(args.service, args.source_repository),
            tags=[url.apply(lambda u: f"{u}:{args.service.version}") for url in urls],
            push=True,
            registries=[r.credentials() for r in args.registries],
            secrets=dict(args.secrets) or None,
            cache_from=[
                docker_build.CacheFromArgs(registry=docker_build.CacheFromRegistryArgs(ref=cache_ref))
            ],
            cache_to=[
                docker_build.CacheToArgs(
                    registry=docker_build.CacheToRegistryArgs(
                        ref=cache_ref,
                        mode=docker_build.CacheMode.MAX,
                        image_manifest=True,
                        oci_media_types=True,
                    )
                )
            ],
            build_on_preview=False,
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
        )
        self.digest = self.image.digest
        self.refs = [pulumi.Output.concat(url, "@", self.digest) for url in urls]
        self.ref = self.refs[0]
        self.register_outputs({"digest": self.digest, "ref": self.ref})
