"""Image builds as resources: BuildKit (pulumi-docker-build), pushed once per registry, pinned by digest."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_docker_build as docker_build

from components.registry import CACHE_TAG, PushTarget
from components.rollout import RolloutPlan
from components.settings import ServiceSettings


@dataclass(frozen=True)
class ImageBuildArgs:
    service: ServiceSettings
    targets: Sequence[PushTarget]
    source_repository: str
    # The commit being built, when the pipeline knows it (OCI `revision` label).
    revision: str | None = None
    # BuildKit secret id -> secret value (an Output marked secret, from `Config.require_secret`).
    secrets: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


def oci_labels(args: ImageBuildArgs) -> dict[str, str]:
    """OCI annotations. `created` is left out on purpose: it would make every build unique."""
    labels = {
        "org.opencontainers.image.title": args.service.name,
        "org.opencontainers.image.version": args.service.version,
        "org.opencontainers.image.source": args.source_repository,
    }
    if args.revision:
        labels["org.opencontainers.image.revision"] = args.revision
    return labels


class ImageBuild(pulumi.ComponentResource):
    """Builds one service image for its platforms and pushes the release tag to every registry.

    `refs[kind]` is that registry's `repository@sha256:...`; downstream code deploys only these.
    The first target also holds the BuildKit registry cache.

    `build_on_preview` is off: a pull-request preview needs no registry credentials and no builder,
    and shows the digest as unknown until `pulumi up` builds it. The image resource is
    `retain_on_delete`: replacing or removing it never deletes pushed images that a running slot
    may still use; registry cleanup policies do that.
    """

    digest: pulumi.Output[str]
    refs: dict[str, pulumi.Output[str]]
    ref: pulumi.Output[str]

    def __init__(self, name: str, args: ImageBuildArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pouw:index:ImageBuild", name, None, opts)
        if not args.targets:
            raise ValueError(f"ImageBuild {name}: needs at least one registry to push to")
        build = args.service.build
        version = args.service.version
        cache_ref = args.targets[0].repository_url.apply(lambda url: f"{url}:{CACHE_TAG}")

        self.image = docker_build.Image(
            name,
            context=docker_build.BuildContextArgs(location=build.context),
            dockerfile=docker_build.DockerfileArgs(location=build.dockerfile),
            target=build.target,
            platforms=[docker_build.Platform(p) for p in build.platforms],
            build_args=dict(build.args),
            labels=oci_labels(args),
            tags=[t.repository_url.apply(lambda url: f"{url}:{version}") for t in args.targets],
            push=True,
            registries=[t.credentials for t in args.targets],
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
        self.refs = {t.kind: pulumi.Output.concat(t.repository_url, "@", self.digest) for t in args.targets}
        self.ref = self.refs[args.targets[0].kind]
        self.register_outputs({"digest": self.digest, "refs": self.refs})


def slot_images(
    plan: RolloutPlan,
    built_version: str,
    built_ref: pulumi.Output[str],
    pinned: Callable[[str], pulumi.Output[str]],
) -> dict[str, pulumi.Output[str]]:
    """Each slot's digest-pinned image: this update's build, or an earlier build by its tag."""
    return {s.name: built_ref if s.version == built_version else pinned(s.version) for s in plan.slots}
