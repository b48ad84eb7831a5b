"""Image builds as resources: BuildKit (pulumi-docker-build), built once, copied and pinned by digest."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_docker_build as docker_build

from components.registry import CACHE_TAG, PushTarget
from components.releases import RecordedImage
from components.schema import ServiceSettings

# BuildKit's Dockerfile frontend: "Opt into deterministic output regardless of multi-platform output
# or not" (frontend/dockerfile/docs/reference.md). The build is then always an image index, even for
# one platform, which is what makes a copy keep the build's digest (see `ImageBuild`).
MULTI_PLATFORM_ARG = "BUILDKIT_MULTI_PLATFORM"


@dataclass(frozen=True)
class ImageBuildArgs:
    service: ServiceSettings
    # The environment's build registry (`registry.build_registry`): the one push, and the BuildKit cache.
    registry: PushTarget
    # Every other registry the service's targets pull from: each gets a copy of the build's digest.
    copies: Sequence[PushTarget]
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


def copy_name(build: str, kind: str) -> str:
    """`web-copy-artifact-registry`: the copy's resource name, from the build's and the registry kind."""
    return f"{build}-copy-{re.sub(r'(?<!^)(?=[A-Z])', '-', kind).lower()}"


def copied_ref(repository: str, index_ref: str, digest: str) -> str:
    """`repository@digest` of a copy, once the copy is known to hold exactly the build's digest.

    The Index reports `<tag>@<digest it pushed>` (only `<tag>` while previewing): a copy whose
    digest differs from the build's is a failed carbon copy, and nothing may deploy it.
    """
    _, _, pushed = index_ref.partition("@")
    if pushed and pushed != digest:
        raise ValueError(f"{repository}: the copy is {pushed}, not the build's {digest} (no carbon copy)")
    return f"{repository}@{digest}"


class ImageBuild(pulumi.ComponentResource):
    """Builds one service image once, into the build registry, and copies that digest to the others.

    The `Image` pushes only to the environment's build registry, which does not depend on the
    service's targets: adding a target never changes the build (no rebuild, no new digest, so no
    workload on another target restarts). Every other registry gets an `Index` with the build as its
    single source: `docker buildx imagetools create` "performs a carbon copy" when its only source
    is an image index (https://docs.docker.com/reference/cli/docker/buildx/imagetools/create/), and
    MULTI_PLATFORM_ARG makes every build an index, so the copy keeps the build's digest.

    A copy pulls from the build registry and pushes to its own: the `Index` carries the push login
    (`registry`, whose password changes it ignores), and one explicit provider per build carries the
    pull login (provider `registries`), because an `Index` has a single login of its own. That login
    is short-lived and docker-build replaces a provider on any configuration change, so an update
    re-creates the copies: an idempotent re-push of the same digest under the same tag, retained;
    the refs below stay the same, so no workload changes.

    `refs[kind]` is that registry's `repository@sha256:<the build's digest>`; downstream code
    deploys only these. A copy's ref comes from the Index's output, so a workload pulling from that
    registry is deployed only after its copy exists.

    `build_on_preview` is off: a pull-request preview needs no builder, and shows the digest as
    unknown until `pulumi up` builds it. The image and its copies are `retain_on_delete`: replacing
    or removing them (a new version replaces a copy) never deletes pushed images that a running slot
    may still use; registry cleanup policies do that.
    """

    digest: pulumi.Output[str]
    refs: dict[str, pulumi.Output[str]]
    ref: pulumi.Output[str]
    copies: dict[str, docker_build.Index]

    def __init__(self, name: str, args: ImageBuildArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pouw:index:ImageBuild", name, None, opts)
        build = args.service.build
        version = args.service.version
        home = args.registry
        cache_ref = home.repository_url.apply(lambda url: f"{url}:{CACHE_TAG}")

        self.image = docker_build.Image(
            name,
            context=docker_build.BuildContextArgs(location=build.context),
            dockerfile=docker_build.DockerfileArgs(location=build.dockerfile),
            target=build.target,
            platforms=[docker_build.Platform(p) for p in build.platforms],
            build_args={**build.args, MULTI_PLATFORM_ARG: "1"},
            labels=oci_labels(args),
            tags=[home.repository_url.apply(lambda url: f"{url}:{version}")],
            push=True,
            registries=[home.credentials],
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
        self.ref = pulumi.Output.concat(home.repository_url, "@", self.digest)
        self.refs = {home.kind: self.ref}
        self.copies = {}
        if args.copies:
            puller = docker_build.Provider(
                f"{name}-copy", registries=[home.credentials], opts=pulumi.ResourceOptions(parent=self)
            )
            for target in args.copies:
                self.copies[target.kind] = index = docker_build.Index(
                    copy_name(name, target.kind),
                    sources=[self.ref],
                    tag=target.repository_url.apply(lambda url: f"{url}:{version}"),
                    push=True,
                    registry=target.credentials,
                    opts=pulumi.ResourceOptions(parent=self, provider=puller, retain_on_delete=True),
                )
                pushed = pulumi.Output.all(target.repository_url, index.ref, self.digest)
                self.refs[target.kind] = pushed.apply(lambda a: copied_ref(a[0], a[1], a[2]))
        self.register_outputs({"digest": self.digest, "refs": self.refs})


RELEASE_TAG_PREFIX = "release-"


def release_tag(version: str) -> str:
    """`release-1.4.2`: a copied release's tag, apart from the `1.4.2` an environment's own build used
    (dev's unreleased builds, and every build before releases were recorded): ECR's and Artifact
    Registry's tags are immutable, so the release's bytes cannot take over a tag another build holds."""
    return f"{RELEASE_TAG_PREFIX}{version}"


@dataclass(frozen=True)
class ReleaseImageArgs:
    service: str
    # version -> the release's image (components/releases.py): each is copied, never rebuilt.
    versions: Mapping[str, RecordedImage]
    # Every registry the service's targets pull from (never GHCR: the release's own source).
    registries: Sequence[PushTarget]
    # The source registry's login, when the stack has one (GHCR); else the host's Docker login.
    source_credentials: docker_build.RegistryArgs | None = None


def _pinned_copy(
    repository: pulumi.Output[str], index_ref: pulumi.Output[str], digest: str
) -> pulumi.Output[str]:
    return pulumi.Output.all(repository, index_ref).apply(lambda a: copied_ref(a[0], a[1], digest))


class ReleaseImage(pulumi.ComponentResource):
    """A service's released versions, copied by digest into the registries its targets pull from.

    Nothing is built: each recorded `repository@digest` (the release's one build, signed and
    attested) is the single source of an `Index` per registry, the carbon copy `ImageBuild` also
    makes, so the copy has the release's digest. The digest comes from the record, so a preview
    already shows the exact `<registry>/<service>@<digest>` every target deploys; the ref still
    comes through the Index's output (and `copied_ref` refuses a copy with another digest), so a
    workload is deployed only after its copy exists. Copies are `retain_on_delete`, as builds are.

    `refs[version][kind]` is that registry's digest-pinned ref of the version.
    """

    digests: dict[str, str]
    refs: dict[str, dict[str, pulumi.Output[str]]]
    copies: dict[tuple[str, str], docker_build.Index]

    def __init__(self, name: str, args: ReleaseImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pouw:index:ReleaseImage", name, None, opts)
        provider = None
        if args.source_credentials is not None and args.registries:
            provider = docker_build.Provider(
                f"{name}-source",
                registries=[args.source_credentials],
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.digests = {version: image.digest for version, image in args.versions.items()}
        self.refs = {}
        self.copies = {}
        for version, image in sorted(args.versions.items()):
            self.refs[version] = {}
            for target in args.registries:
                index = self._copy(name, version, image, target, provider)
                self.copies[(version, target.kind)] = index
                self.refs[version][target.kind] = _pinned_copy(target.repository_url, index.ref, image.digest)
        self.register_outputs({"refs": self.refs})

    def _copy(
        self,
        name: str,
        version: str,
        image: RecordedImage,
        target: PushTarget,
        provider: docker_build.Provider | None,
    ) -> docker_build.Index:
        tag = release_tag(version)
        return docker_build.Index(
            f"{name}-{version}-{copy_name('release', target.kind)}",
            sources=[image.ref],
            tag=target.repository_url.apply(lambda url: f"{url}:{tag}"),
            push=True,
            registry=target.credentials,
            opts=pulumi.ResourceOptions(parent=self, provider=provider, retain_on_delete=True),
        )
