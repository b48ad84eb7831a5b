"""Hardened container registries that image builds push to and workloads pull from.

One shape, four clouds: every registry hands `ImageBuild` a `PushTarget` per service (where the
service's image lives, and short-lived push credentials obtained from the cloud itself). The
environment's build registry (`build_registry`) receives the build itself; every other registry a
service's targets pull from receives a copy of that exact digest. The registry resources are secure
by default: immutable tags, scanning, encryption, cleanup, no admin users, network-restricted
outside dev.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pulumi
import pulumi_aws.ecr as ecr
import pulumi_aws.kms as kms
import pulumi_azure_native.authorization as azure_authorization
import pulumi_azure_native.containerregistry as acr
import pulumi_docker as docker
import pulumi_docker_build as docker_build
import pulumi_gcp.artifactregistry as artifactregistry
import pulumi_gcp.organizations as gcp_organizations
from pulumi_aws.get_caller_identity import get_caller_identity_output
from pulumi_aws.get_region import get_region_output

from components.iam import document
from components.releases import release_repository
from components.schema import (
    AcrNetworkAccess,
    AcrSettings,
    ArtifactRegistrySettings,
    AzureSettings,
    EcrSettings,
    GcpSettings,
    GhcrSettings,
    RegistriesSettings,
)

# The BuildKit registry cache is the one tag that is rewritten on every build; only it may move.
CACHE_TAG = "buildcache"
# ACR's fixed user name for a refresh token obtained from an Entra ID token.
ACR_TOKEN_USER = "00000000-0000-0000-0000-000000000000"
ECR_PULL_ACTIONS = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
# The order in which a configured registry becomes the environment's build registry.
REGISTRY_KINDS = ("ecr", "acr", "artifactRegistry", "ghcr")


@dataclass(frozen=True)
class PushTarget:
    """Where one service's image goes in one registry, and how a build logs in there."""

    kind: str  # ecr | acr | artifactRegistry | ghcr
    repository_url: pulumi.Output[str]  # host/path/<service>, no tag
    credentials: docker_build.RegistryArgs


class Registry(Protocol):
    """The one registry protocol: what an image build pushes to and what a target pulls from.

    `target(service)` is where the service's image goes and how to log in (made once per service);
    `pinned(service)` turns a tag an earlier update pushed into `repository@sha256:...`.
    """

    kind: str

    def target(self, service: str) -> PushTarget: ...

    def pinned(self, service: str) -> Callable[[str], pulumi.Output[str]]: ...


def build_registry(registries: RegistriesSettings) -> str:
    """The registry every build of this environment pushes to (and caches in): the first configured.

    It depends on the environment only, never on a service's targets, so adding a target to a
    service never changes its build (only adds a copy).
    """
    configured = registries.model_dump(by_alias=True)
    return next(kind for kind in REGISTRY_KINDS if configured.get(kind) is not None)


def _unknown() -> pulumi.Output[str]:
    """A value that only `pulumi up` can know (what a provider would show as unknown in preview)."""
    return pulumi.Output.from_input(pulumi.output.UNKNOWN)  # type: ignore[arg-type]


def ecr_lifecycle_policy(settings: EcrSettings) -> str:
    """Expire untagged manifests after D days, keep the newest N images (ECR lifecycle JSON)."""
    return json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": "expire untagged manifests",
                    "selection": {
                        "tagStatus": "untagged",
                        "countType": "sinceImagePushed",
                        "countUnit": "days",
                        "countNumber": settings.expire_untagged_after_days,
                    },
                    "action": {"type": "expire"},
                },
                {
                    "rulePriority": 2,
                    "description": "keep the newest tagged images",
                    "selection": {
                        "tagStatus": "any",
                        "countType": "imageCountMoreThan",
                        "countNumber": settings.keep_tagged_images,
                    },
                    "action": {"type": "expire"},
                },
            ]
        },
        sort_keys=True,
    )


def ecr_key_policy(account: str, region: str) -> str:
    """The ECR key's policy, as the ECR User Guide describes a customer managed key's use
    (docs.aws.amazon.com/AmazonECR/latest/userguide/encryption-at-rest.html): the account administers the
    key (its IAM policies decide who may), and the account's principals may use it only through ECR in
    this region, which creates the grant it encrypts and decrypts layers with."""
    return document(
        [
            {
                "Sid": "AccountAdministers",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "UseThroughEcr",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                "Action": [
                    "kms:Encrypt",
                    "kms:Decrypt",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:DescribeKey",
                    "kms:CreateGrant",
                    "kms:RetireGrant",
                ],
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        "kms:ViaService": f"ecr.{region}.amazonaws.com",
                        "kms:CallerAccount": account,
                    }
                },
            },
        ]
    )


def ecr_pull_policy(accounts: tuple[str, ...]) -> str:
    """Repository policy letting other accounts pull (never push)."""
    return document(
        [
            {
                "Sid": "CrossAccountPull",
                "Effect": "Allow",
                "Principal": {"AWS": [f"arn:aws:iam::{a}:root" for a in accounts]},
                "Action": ECR_PULL_ACTIONS,
            }
        ]
    )


@dataclass(frozen=True)
class EcrRepositoryArgs:
    service: str
    settings: EcrSettings
    tags: dict[str, str] = field(default_factory=dict)
    protect: bool = False


class EcrRepository(pulumi.ComponentResource):
    """An ECR repository with immutable tags, scan on push, KMS encryption and a lifecycle policy.

    In prod (`protect=True`) the repository and its key are protected: deleting the stack must not
    delete the images that running workloads pull.
    """

    repository_url: pulumi.Output[str]
    registry_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: EcrRepositoryArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("pouw:index:EcrRepository", name, None, opts)
        stateful = pulumi.ResourceOptions(parent=self, protect=args.protect)
        child = pulumi.ResourceOptions(parent=self)

        encryption: dict[str, pulumi.Input[str]] = {"encryption_type": "KMS"}
        self.key: kms.Key | None = None
        if args.settings.customer_managed_key:
            invoke = pulumi.InvokeOutputOptions(parent=self)
            account = get_caller_identity_output(opts=invoke).account_id
            region = get_region_output(opts=invoke).region
            self.key = kms.Key(
                f"{name}-key",
                description=f"ECR images of {args.service}",
                enable_key_rotation=True,
                deletion_window_in_days=30,
                policy=pulumi.Output.all(account, region).apply(lambda a: ecr_key_policy(a[0], a[1])),
                tags=args.tags,
                opts=stateful,
            )
            encryption["kms_key"] = self.key.arn

        self.repository = ecr.Repository(
            name,
            name=args.service,
            image_tag_mutability="IMMUTABLE_WITH_EXCLUSION",
            image_tag_mutability_exclusion_filters=[
                ecr.RepositoryImageTagMutabilityExclusionFilterArgs(filter=CACHE_TAG, filter_type="WILDCARD")
            ],
            image_scanning_configuration=ecr.RepositoryImageScanningConfigurationArgs(
                scan_on_push=args.settings.scan_on_push
            ),
            encryption_configurations=[ecr.RepositoryEncryptionConfigurationArgs(**encryption)],
            force_delete=False,
            tags=args.tags,
            opts=stateful,
        )
        ecr.LifecyclePolicy(
            f"{name}-lifecycle",
            repository=self.repository.name,
            policy=ecr_lifecycle_policy(args.settings),
            opts=child,
        )
        if args.settings.pull_accounts:
            ecr.RepositoryPolicy(
                f"{name}-pull",
                repository=self.repository.name,
                policy=ecr_pull_policy(args.settings.pull_accounts),
                opts=child,
            )

        self.repository_url = self.repository.repository_url
        self.registry_id = self.repository.registry_id
        self.register_outputs({"repositoryUrl": self.repository_url})

    def pinned(self, tag: str) -> pulumi.Output[str]:
        """`repository@sha256:...` of an image an earlier update pushed, resolved from its immutable tag.

        A real preview fails here if the tag was never pushed: no traffic is routed to an image that
        does not exist.
        """
        image = ecr.get_image_output(
            repository_name=self.repository.name, image_tag=tag, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        return pulumi.Output.concat(self.repository_url, "@", image.image_digest)

    def target(self) -> PushTarget:
        """Short-lived push credentials from ECR itself; the password stays a secret."""
        token = ecr.get_authorization_token_output(
            registry_id=self.registry_id, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        return PushTarget(
            kind="ecr",
            repository_url=self.repository_url,
            credentials=docker_build.RegistryArgs(
                address=self.repository_url.apply(lambda url: url.split("/", 1)[0]),
                username=token.user_name,
                password=pulumi.Output.secret(token.password),
            ),
        )


def ecr_enhanced_scanning(name: str) -> ecr.RegistryScanningConfiguration:
    """Account-wide continuous scanning by Amazon Inspector (one per account and region)."""
    return ecr.RegistryScanningConfiguration(
        name,
        scan_type="ENHANCED",
        rules=[
            ecr.RegistryScanningConfigurationRuleArgs(
                scan_frequency="CONTINUOUS_SCAN",
                repository_filters=[
                    ecr.RegistryScanningConfigurationRuleRepositoryFilterArgs(
                        filter="*", filter_type="WILDCARD"
                    )
                ],
            )
        ],
    )


def acr_refresh_token(login_server: str, tenant: str, entra_token: str, endpoint: str | None = None) -> str:
    """Exchange an Entra ID access token for an ACR refresh token (ACR's `/oauth2/exchange`).

    This is what `az acr login` does; the result is the password for user ACR_TOKEN_USER.
    """
    url = endpoint or f"https://{login_server}/oauth2/exchange"
    body = urllib.parse.urlencode(
        {
            "grant_type": "access_token",
            "service": login_server,
            "tenant": tenant,
            "access_token": entra_token,
        }
    ).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        token = json.loads(response.read())["refresh_token"]
    if not isinstance(token, str) or not token:
        raise RuntimeError(f"ACR {login_server} returned no refresh token")
    return token


class _RemoteRegistry(pulumi.ComponentResource):
    """A registry resolved through the Docker provider: `pinned` turns a pushed tag into its digest.

    ECR has its own data source (`EcrRepository.pinned`); for ACR and Artifact Registry the program
    reads the registry with `docker.get_registry_image`, logged in with the same short-lived
    credentials the build pushes with.
    """

    def __init__(self, type_: str, name: str, opts: pulumi.ResourceOptions | None) -> None:
        super().__init__(type_, name, None, opts)
        self._name = name
        self._reader: docker.Provider | None = None
        self._targets: dict[str, PushTarget] = {}

    def target(self, service: str) -> PushTarget:
        """Where `service` goes and how to log in; made once per service (the login is an invoke)."""
        if service not in self._targets:
            self._targets[service] = self._make_target(service)
        return self._targets[service]

    def _make_target(self, service: str) -> PushTarget:
        raise NotImplementedError

    def pinned(self, service: str) -> Callable[[str], pulumi.Output[str]]:
        target = self.target(service)

        def resolve(tag: str) -> pulumi.Output[str]:
            image = docker.get_registry_image_output(
                name=target.repository_url.apply(lambda url: f"{url}:{tag}"),
                opts=pulumi.InvokeOutputOptions(parent=self, provider=self._registry_reader(target)),
            )
            return pulumi.Output.concat(target.repository_url, "@", image.sha256_digest)

        return resolve

    def _registry_reader(self, target: PushTarget) -> docker.Provider:
        if self._reader is None:
            creds = target.credentials
            self._reader = docker.Provider(
                f"{self._name}-reader",
                registry_auth=[
                    docker.ProviderRegistryAuthArgs(
                        address=creds.address, username=creds.username, password=creds.password
                    )
                ],
                opts=pulumi.ResourceOptions(parent=self),
            )
        return self._reader


@dataclass(frozen=True)
class AcrRegistryArgs:
    settings: AcrSettings
    azure: AzureSettings
    resource_group_name: pulumi.Input[str]
    network_access: AcrNetworkAccess
    # selectedNetworks: the public addresses of this stack's own egress: its NAT gateways (the in-network
    # builds push from there) and AKS's outbound address (its kubelets pull from there). Each is an IP rule,
    # counted against ACR_MAX_IP_RULES (Settings.acr_egress_rules).
    egress_ips: Sequence[pulumi.Input[str]] = ()
    # ACI container groups pull with a managed identity: as a trusted Azure service they bypass the
    # registry's network rules, which otherwise refuse them (their addresses are Azure's, not ours).
    trusted_services: bool = False
    zone_redundant: bool = False  # Premium only; create-only (see the registry's ignore_changes)
    tags: dict[str, str] = field(default_factory=dict)
    protect: bool = False


def acr_network(args: AcrRegistryArgs) -> dict[str, Any]:
    """The registry's network arguments for its access mode (see `AcrNetworkAccess`).

    selectedNetworks keeps the public endpoint but denies every address except the stack's NAT
    egress and `allowedCidrs`: without a private endpoint (which nothing here could reach from AWS),
    that is how in-network CI runners push. privateEndpoints disables the public endpoint outright.
    """
    if args.network_access == "public":
        return {"public_network_access": "Enabled"}
    rules = None
    if args.network_access == "selectedNetworks":
        allowed = [*args.egress_ips, *args.settings.allowed_cidrs]
        rules = acr.NetworkRuleSetArgs(
            default_action="Deny",
            ip_rules=[acr.IPRuleArgs(i_p_address_or_range=ip, action="Allow") for ip in allowed],
        )
    return {
        "public_network_access": "Enabled" if rules is not None else "Disabled",
        "network_rule_set": rules,
        "network_rule_bypass_options": "AzureServices" if args.trusted_services else "None",
    }


class AcrRegistry(_RemoteRegistry):
    """An Azure Container Registry: no admin user, no anonymous pull, network-restricted outside dev.

    Builds push with an ACR refresh token exchanged from the deployer's Entra ID token, so no
    registry password exists anywhere. The exchange needs the real registry, so it runs on
    `pulumi up` only; a preview shows the password as unknown.
    """

    kind = "acr"

    login_server: pulumi.Output[str]
    registry_id: pulumi.Output[str]

    def __init__(self, name: str, args: AcrRegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pouw:index:AcrRegistry", name, opts)
        policies = None
        if args.settings.untagged_retention_days is not None:
            policies = acr.PoliciesArgs(
                retention_policy=acr.RetentionPolicyArgs(
                    days=args.settings.untagged_retention_days, status="enabled"
                )
            )
        self.registry = acr.Registry(
            name,
            registry_name=args.settings.name,
            resource_group_name=args.resource_group_name,
            location=args.azure.location,
            sku=acr.SkuArgs(name=args.settings.sku),
            admin_user_enabled=False,
            anonymous_pull_enabled=False,
            policies=policies,
            zone_redundancy="Enabled" if args.zone_redundant else "Disabled",
            **acr_network(args),
            tags=args.tags,
            # zoneRedundancy is set when a registry is created (ARM cannot convert a registry in place), and
            # Azure now makes every registry in a zone-capable region zone redundant whatever the property
            # says (learn.microsoft.com/azure/container-registry/zone-redundancy): an existing registry is
            # left as it is, never replaced for it; a new one is created with the setting.
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect, ignore_changes=["zoneRedundancy"]),
        )
        self.login_server = self.registry.login_server
        self.registry_id = self.registry.id
        self.register_outputs({"loginServer": self.login_server})

    def _make_target(self, service: str) -> PushTarget:
        if pulumi.runtime.is_dry_run():
            password = _unknown()
        else:
            invoke = pulumi.InvokeOutputOptions(parent=self)
            tenant = azure_authorization.get_client_config_output(opts=invoke).tenant_id
            entra = azure_authorization.get_client_token_output(opts=invoke).token
            password = pulumi.Output.all(self.login_server, tenant, entra).apply(
                lambda a: acr_refresh_token(a[0], a[1], a[2])
            )
        return PushTarget(
            kind="acr",
            repository_url=self.login_server.apply(lambda host: f"{host}/{service}"),
            credentials=docker_build.RegistryArgs(
                address=self.login_server, username=ACR_TOKEN_USER, password=pulumi.Output.secret(password)
            ),
        )


@dataclass(frozen=True)
class ArtifactRegistryArgs:
    settings: ArtifactRegistrySettings
    gcp: GcpSettings
    labels: dict[str, str] = field(default_factory=dict)
    protect: bool = False


class ArtifactRegistry(_RemoteRegistry):
    """A Google Artifact Registry Docker repository: immutable tags, cleanup policies, CMEK if set."""

    kind = "artifactRegistry"

    host: str
    repository_path: pulumi.Output[str]

    def __init__(
        self, name: str, args: ArtifactRegistryArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("pouw:index:ArtifactRegistry", name, opts)
        s = args.settings
        self.repository = artifactregistry.Repository(
            name,
            repository_id=s.repository,
            project=args.gcp.project,
            location=args.gcp.region,
            format="DOCKER",
            description="pouw-cicd service images",
            docker_config=artifactregistry.RepositoryDockerConfigArgs(immutable_tags=True),
            cleanup_policy_dry_run=False,
            cleanup_policies=[
                artifactregistry.RepositoryCleanupPolicyArgs(
                    id="delete-untagged",
                    action="DELETE",
                    condition=artifactregistry.RepositoryCleanupPolicyConditionArgs(
                        tag_state="UNTAGGED", older_than=f"{s.delete_untagged_after_days * 86400}s"
                    ),
                ),
                artifactregistry.RepositoryCleanupPolicyArgs(
                    id="keep-recent",
                    action="KEEP",
                    most_recent_versions=artifactregistry.RepositoryCleanupPolicyMostRecentVersionsArgs(
                        keep_count=s.keep_tagged_images
                    ),
                ),
            ],
            kms_key_name=s.kms_key_name,
            labels=args.labels,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        self.host = f"{args.gcp.region}-docker.pkg.dev"
        self.repository_path = self.repository.repository_id.apply(
            lambda rid: f"{self.host}/{args.gcp.project}/{rid}"
        )
        self.register_outputs({"repositoryPath": self.repository_path})

    def _make_target(self, service: str) -> PushTarget:
        """Push with the deployer's own OAuth access token (user `oauth2accesstoken`)."""
        client = gcp_organizations.get_client_config_output(opts=pulumi.InvokeOutputOptions(parent=self))
        return PushTarget(
            kind="artifactRegistry",
            repository_url=self.repository_path.apply(lambda path: f"{path}/{service}"),
            credentials=docker_build.RegistryArgs(
                address=self.host,
                username="oauth2accesstoken",
                password=pulumi.Output.secret(client.access_token),
            ),
        )


class EcrRegistry:
    """ECR behind the Registry protocol: one `EcrRepository` (`<service>-ecr`) per service, made on
    first use; its `pinned` reads ECR's own data source."""

    kind = "ecr"

    def __init__(self, settings: EcrSettings, tags: Callable[[str], dict[str, str]], protect: bool) -> None:
        self.settings = settings
        self._tags = tags
        self._protect = protect
        self.repositories: dict[str, EcrRepository] = {}
        self._targets: dict[str, PushTarget] = {}

    def repository(self, service: str) -> EcrRepository:
        if service not in self.repositories:
            self.repositories[service] = EcrRepository(
                f"{service}-ecr",
                EcrRepositoryArgs(
                    service=service, settings=self.settings, tags=self._tags(service), protect=self._protect
                ),
            )
        return self.repositories[service]

    def target(self, service: str) -> PushTarget:
        if service not in self._targets:
            self._targets[service] = self.repository(service).target()
        return self._targets[service]

    def pinned(self, service: str) -> Callable[[str], pulumi.Output[str]]:
        return self.repository(service).pinned


class GhcrRegistry:
    """GHCR behind the Registry protocol: a distribution registry no target pulls from."""

    kind = "ghcr"

    def __init__(self, settings: GhcrSettings, token: pulumi.Input[str]) -> None:
        self.settings = settings
        self._token = token

    def target(self, service: str) -> PushTarget:
        return ghcr_target(self.settings, service, self._token)

    def pinned(self, service: str) -> Callable[[str], pulumi.Output[str]]:
        raise NotImplementedError("no target pulls from GHCR: it distributes images, nothing deploys from it")


def ghcr_target(settings: GhcrSettings, service: str, token: pulumi.Input[str]) -> PushTarget:
    """GHCR has nothing to create; the package links to the repository via the OCI source label."""
    return PushTarget(
        kind="ghcr",
        repository_url=pulumi.Output.from_input(release_repository(settings.owner, service)),
        credentials=docker_build.RegistryArgs(
            address="ghcr.io", username=settings.username, password=pulumi.Output.secret(token)
        ),
    )
