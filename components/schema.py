"""The stack config's shared schema: the pieces every component reads, parsed by `components/settings.py`.

Frozen pydantic models (`Model`: camelCase keys, unknown keys refused) and the annotated validators
whose hints the error formatter shows (`_matching`). Each target's own block (`EksSettings`,
`GkeSettings`, ...) lives in its module under `components/targets/`; `components/settings.py` keeps
the loader, the error formatting and the root model assembled from the target registry.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pulumi_docker_build import Platform
from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from components.rollout import WORKLOAD_PATTERN, RollingRollout, RolloutSettings, release_version
from components.rollout import Model as _Model

Environment = Literal["dev", "staging", "prod"]

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")
_PLATFORMS = frozenset(p.value for p in Platform)
# regex -> what a matching value looks like, for messages (`_matching` fills it).
_PATTERN_HINTS: dict[str, str] = {}


def _matching(regex: str, hint: str) -> Any:
    """`Field(pattern=regex)`, whose mismatch is described to the user as `hint`, not as the regex."""
    _PATTERN_HINTS[regex] = hint
    return Field(pattern=regex)


_CPU = _matching(r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$", "must be a CPU quantity such as 250m or 1")
_MEMORY = _matching(r"^[0-9]+(Ki|Mi|Gi)$", "must be a memory quantity such as 256Mi or 2Gi")
_SECRET_ARN = _matching(
    r"^arn:aws:(secretsmanager|ssm):",
    "must be a Secrets Manager or SSM parameter ARN (arn:aws:secretsmanager:... or arn:aws:ssm:...)",
)
_GCP_SECRET = _matching(
    r"^[A-Za-z0-9_-]{1,255}:(latest|[0-9]+)$",
    "must be a Secret Manager secret as <secret-id>:<version>, e.g. db-url:latest",
)
_AWS_ACCOUNT = _matching(r"^[0-9]{12}$", "must be a 12-digit AWS account id (quote it)")
_ACR_NAME = _matching(r"^[a-zA-Z0-9]{5,50}$", "must be 5-50 letters or digits (an ACR name has no '-')")
_AR_REPOSITORY = _matching(
    r"^[a-z][a-z0-9-]{1,61}[a-z0-9]$", "must be 3-63 lowercase letters, digits or '-', starting with a letter"
)
_KMS_KEY = _matching(
    r"^projects/.+/cryptoKeys/.+$",
    "must be a KMS key name: projects/<project>/locations/<location>/keyRings/<ring>/cryptoKeys/<key>",
)
_GITHUB_OWNER = _matching(
    r"^[a-z0-9](?:[a-z0-9-]{0,38})$", "must be a GitHub user or organisation in lowercase, e.g. pouw"
)
_VPC_CIDR = _matching(r"^[0-9]{1,3}(\.[0-9]{1,3}){3}/16$", "must be an IPv4 /16 range such as 10.40.0.0/16")
_KUBERNETES_VERSION = _matching(
    r"^1\.[0-9]{2}$", 'must be a Kubernetes minor version such as "1.33" (quoted)'
)
_CIDR = _matching(r"^[0-9.]+/[0-9]{1,2}$", "must be an IPv4 range such as 203.0.113.0/24")
_ACM_ARN = _matching(r"^arn:aws:acm:", "must be an ACM certificate ARN (arn:aws:acm:...)")
_SUBNET_ID = _matching(
    r"^/subscriptions/.+/subnets/.+$", "must be a subnet resource id (/subscriptions/.../subnets/...)"
)
_SCALE_SET_NAME = _matching(
    r"^[a-z0-9][a-z0-9-]{0,44}$", "must be up to 45 lowercase letters, digits or '-', not starting with '-'"
)
_CHART_VERSION = _matching(r"^[0-9]+\.[0-9]+\.[0-9]+$", "must be a chart version such as 0.12.1")
_GITHUB_CONFIG_URL = _matching(
    r"^https://github\.com/[A-Za-z0-9-]+(/[A-Za-z0-9._-]+)?$",
    "must be https://github.com/<org> or https://github.com/<org>/<repo>",
)
_OIDC_PROVIDER_ARN = _matching(
    r"^arn:aws:iam::[0-9]{12}:oidc-provider/",
    "must be an IAM OIDC provider ARN (arn:aws:iam::<account>:oidc-provider/...)",
)
_HTTPS = _matching(r"^https://", "must be an https:// URL")
_REPOSITORY = _matching(
    r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$",
    "must be <owner>/<repo> on GitHub, e.g. pouw/pouw-cicd",
)
_RESOURCE_GROUP = _matching(
    r"^[-\w.()]{1,89}[-\w()]$",
    "must be an Azure resource group name: up to 90 letters, digits, '-', '_', '.', '(' or ')', "
    "not ending in '.'",
)
_GCP_PROJECT = _matching(
    r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$",
    "must be a GCP project id: 6-30 lowercase letters, digits or '-', starting with a letter",
)


# The rollout models' workload names (components/rollout.py).
_matching(
    WORKLOAD_PATTERN,
    "must be a workload name: a lowercase letter, then up to 19 lowercase letters, digits or '-'",
)


class BuildSettings(_Model):
    """How a service's image is built (BuildKit through pulumi-docker-build)."""

    context: str = "app"
    dockerfile: str = "app/Dockerfile"
    target: str = "runtime"
    platforms: tuple[str, ...] = ("linux/amd64",)
    args: dict[str, str] = Field(default_factory=dict)
    # BuildKit secret id -> config key (in this namespace) that holds the secret value.
    secrets: dict[str, str] = Field(default_factory=dict)

    @field_validator("platforms")
    @classmethod
    def _known_platforms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("needs at least one platform, e.g. [linux/amd64]")
        for platform in value:
            if platform not in _PLATFORMS:
                raise ValueError(
                    f"unknown platform {platform!r}; use one of linux/amd64, linux/arm64 "
                    "(any BuildKit os/arch pair is accepted)"
                )
        if len(set(value)) != len(value):
            raise ValueError("lists a platform twice; remove the duplicate")
        return value


def _registered_target(value: str) -> str:
    """A key of the target registry (`components/targets/__init__.py` `TARGETS`, the only list of
    targets), reported like any other choice. Imported when a stack file is validated: the targets
    import this module."""
    from components.targets import TARGETS

    if value not in TARGETS:
        expected = ", ".join(repr(key) for key in TARGETS)
        raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})
    return value


# A service's target: one of the registered targets' keys.
Target = Annotated[str, AfterValidator(_registered_target)]


class ReplicaSettings(_Model):
    min: Annotated[int, Field(ge=1, le=100)] = 2
    max: Annotated[int, Field(ge=1, le=100)] = 4

    @model_validator(mode="after")
    def _ordered(self) -> ReplicaSettings:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min}); raise max or lower min")
        return self


class ResourceSettings(_Model):
    """Container requests and limits (Kubernetes quantities)."""

    cpu: Annotated[str, _CPU] = "250m"
    memory: Annotated[str, _MEMORY] = "256Mi"
    cpu_limit: Annotated[str, _CPU] = "500m"
    memory_limit: Annotated[str, _MEMORY] = "256Mi"


_FARGATE_MEMORY = {
    256: (512, 2048),
    512: (1024, 4096),
    1024: (2048, 8192),
    2048: (4096, 16384),
    4096: (8192, 30720),
}


class FargateSettings(_Model):
    """Task size on ECS Fargate (CPU units and MiB; Fargate allows set combinations only)."""

    cpu: Literal[256, 512, 1024, 2048, 4096] = 256
    memory: int = 512

    @model_validator(mode="after")
    def _valid_combination(self) -> FargateSettings:
        lo, hi = _FARGATE_MEMORY[self.cpu]
        if not lo <= self.memory <= hi or (self.memory % 1024 and self.memory != 512):
            raise ValueError(
                f"memory {self.memory} is not valid with cpu {self.cpu}; Fargate takes {lo}..{hi} MiB "
                "(512 or whole GiB)"
            )
        return self


class ServiceSettings(_Model):
    """One containerised service: what to build and how it answers health checks."""

    name: str
    version: str
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    health_path: str = "/health"
    build: BuildSettings = Field(default_factory=BuildSettings)
    targets: tuple[Target, ...] = ()
    replicas: ReplicaSettings = Field(default_factory=ReplicaSettings)
    resources: ResourceSettings = Field(default_factory=ResourceSettings)
    rollout: RolloutSettings = Field(default_factory=RollingRollout)
    fargate: FargateSettings = Field(default_factory=FargateSettings)
    # Plain runtime configuration; never secrets (a policy checks the names).
    environment: dict[str, str] = Field(default_factory=dict)
    # Runtime secrets: variable name -> Secrets Manager or SSM parameter ARN, injected by the platform.
    runtime_secrets: dict[str, Annotated[str, _SECRET_ARN]] = Field(default_factory=dict)
    # Cloud Run: variable name -> Secret Manager secret as "secret-id:version".
    gcp_secrets: dict[str, Annotated[str, _GCP_SECRET]] = Field(default_factory=dict)
    # ACI and AKS: variable name -> secure config key (in this namespace): a secure environment value on
    # ACI, a Kubernetes Secret the pods read by reference on AKS.
    azure_secure_environment: dict[str, str] = Field(default_factory=dict)
    # The container's own health check; default: Python's urllib against healthPath (the sample app).
    health_command: tuple[str, ...] | None = None

    @field_validator("name")
    @classmethod
    def _dns_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                "must be a DNS label: 2-40 lowercase letters, digits or '-', starting with a letter"
            )
        return value

    @field_validator("version")
    @classmethod
    def _release_version(cls, value: str) -> str:
        return release_version(value)

    @field_validator("health_path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be an absolute HTTP path such as /health")
        return value


class EcrSettings(_Model):
    """Hardening knobs for the per-service ECR repositories."""

    scan_on_push: bool = True
    # Account-wide Amazon Inspector scanning (continuous, OS and language packages).
    enhanced_scanning: bool = False
    customer_managed_key: bool = False
    keep_tagged_images: Annotated[int, Field(ge=1, le=1000)] = 30
    expire_untagged_after_days: Annotated[int, Field(ge=1, le=365)] = 7
    # Other AWS accounts whose workloads may pull (read-only repository policy).
    pull_accounts: tuple[Annotated[str, _AWS_ACCOUNT], ...] = ()


# Who may reach an ACR's public endpoint (every caller still needs an Entra ID token; no anonymous pull).
#   public: any network (dev's default).
#   selectedNetworks (the default outside dev): only this stack's NAT egress addresses (the in-network CI
#     runners that build and push) and `allowedCidrs`; ACI pulls with its managed identity as a trusted
#     Azure service.
#   privateEndpoints: public access Disabled; every push and pull goes over private endpoints that are
#     managed outside this stack (this stack creates none, and none reaches its AWS VPC).
# Both restricted modes are Premium features.
AcrNetworkAccess = Literal["public", "selectedNetworks", "privateEndpoints"]
# ACR takes at most 100 IP rules; up to 3 are the stack's NAT gateways (natGateways: perAz).
ACR_MAX_IP_RULES = 100
_MAX_NAT_GATEWAYS = 3


class AcrSettings(_Model):
    """One Azure Container Registry per environment; each service is a repository in it."""

    name: Annotated[str, _ACR_NAME]
    sku: Literal["Basic", "Standard", "Premium"] = "Standard"
    network_access: AcrNetworkAccess | None = None
    # selectedNetworks only: more IPv4 ranges that may push and pull, e.g. the VPN that runs `pulumi up`
    # by hand; the stack's own NAT egress addresses are always allowed.
    allowed_cidrs: Annotated[
        tuple[Annotated[str, _CIDR], ...], Field(max_length=ACR_MAX_IP_RULES - _MAX_NAT_GATEWAYS)
    ] = ()
    # Premium only: purge untagged manifests after this many days.
    untagged_retention_days: Annotated[int, Field(ge=0, le=365)] | None = None
    # Premium only: zoneRedundancy Enabled. Unset: on for a Premium registry in prod (protected).
    zone_redundant: bool | None = None

    @model_validator(mode="after")
    def _zones_need_premium(self) -> AcrSettings:
        if self.zone_redundant and self.sku != "Premium":
            raise ValueError("zoneRedundant needs sku: Premium (a Premium feature); remove it or set Premium")
        return self

    @model_validator(mode="after")
    def _retention_needs_premium(self) -> AcrSettings:
        if self.untagged_retention_days is not None and self.sku != "Premium":
            raise ValueError(
                "untaggedRetentionDays needs sku: Premium (ACR retention policies are a Premium feature); "
                "remove it or set sku: Premium"
            )
        return self


class ArtifactRegistrySettings(_Model):
    """One Google Artifact Registry Docker repository per environment."""

    repository: Annotated[str, _AR_REPOSITORY] = "containers"
    keep_tagged_images: Annotated[int, Field(ge=1, le=1000)] = 30
    delete_untagged_after_days: Annotated[int, Field(ge=1, le=365)] = 7
    kms_key_name: Annotated[str, _KMS_KEY] | None = None


class GhcrSettings(_Model):
    """GitHub Container Registry: nothing to create; a token with write:packages pushes."""

    owner: Annotated[str, _GITHUB_OWNER]
    username: str
    # Config key (in this namespace) of the secret token, e.g. ghcrToken.
    token_key: str


class ReleasesSettings(_Model):
    """How the stack gets its images: from the release record (releases.yaml), or, in dev only, also
    built from source for a version the release has not recorded yet (`buildUnreleased`)."""

    build_unreleased: bool = False


class RegistriesSettings(_Model):
    """Which registries this environment pushes to; every service goes to each one present."""

    ecr: EcrSettings | None = Field(default_factory=EcrSettings)
    acr: AcrSettings | None = None
    artifact_registry: ArtifactRegistrySettings | None = None
    ghcr: GhcrSettings | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> RegistriesSettings:
        if not any((self.ecr, self.acr, self.artifact_registry, self.ghcr)):
            raise ValueError("names no registry; configure at least one of ecr, acr, artifactRegistry, ghcr")
        return self


class NetworkSettings(_Model):
    """The AWS VPC that EKS and ECS run in."""

    cidr: Annotated[str, _VPC_CIDR] = "10.40.0.0/16"
    availability_zones: Annotated[tuple[str, ...], Field(min_length=2, max_length=3)]
    # none: private subnets have no internet egress; single: one NAT; perAz: one NAT per zone (HA).
    nat_gateways: Literal["none", "single", "perAz"] = "single"
    # How long VPC flow logs are kept. Unset: 365 days in prod (the network is protected), 30 elsewhere.
    flow_log_retention_days: Literal[1, 3, 5, 7, 14, 30, 60, 90, 180, 365] | None = None


class ScaleSetSettings(_Model):
    """One ARC runner scale set; workflows select it with `runs-on: <name>`."""

    name: Annotated[str, _SCALE_SET_NAME]
    min_runners: Annotated[int, Field(ge=0, le=100)] = 0
    max_runners: Annotated[int, Field(ge=1, le=200)] = 5
    runner_group: str = "default"
    # kubernetes: job containers run as their own pods, nothing privileged. dind: a privileged sidecar.
    container_mode: Literal["kubernetes", "dind"] = "kubernetes"
    cpu: Annotated[str, _CPU] = "1"
    memory: Annotated[str, _MEMORY] = "2Gi"
    work_volume: Annotated[str, _MEMORY] = "10Gi"
    storage_class: str = "gp2"

    @model_validator(mode="after")
    def _ordered(self) -> ScaleSetSettings:
        if self.max_runners < self.min_runners:
            raise ValueError(
                f"maxRunners ({self.max_runners}) is below minRunners ({self.min_runners}); raise maxRunners"
            )
        return self


class ArcSettings(_Model):
    """GitHub Actions Runner Controller (runner scale sets) on the environment's EKS cluster."""

    chart_version: Annotated[str, _CHART_VERSION] = "0.12.1"
    github_config_url: Annotated[str, _GITHUB_CONFIG_URL]
    runner_image: str
    # GitHub App credentials: names of secure config keys, never the values.
    app_id_key: str
    installation_id_key: str
    private_key_key: str
    scale_sets: Annotated[tuple[ScaleSetSettings, ...], Field(min_length=1)]

    @field_validator("runner_image")
    @classmethod
    def _pinned(cls, value: str) -> str:
        if "@sha256:" not in value and (":" not in value.rsplit("/", 1)[-1] or value.endswith(":latest")):
            raise ValueError("pin the runner image by version or digest (never latest)")
        return value


_K8S_NAMESPACE = _matching(
    r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
    "must be a Kubernetes namespace: up to 63 lowercase letters, digits or '-', not starting or "
    "ending with '-'",
)


class JenkinsSettings(_Model):
    """Where a Jenkins controller's Kubernetes plugin launches agent pods.

    Two namespaces, two Kubernetes clouds in Jenkins: `namespace` for every build (pull requests
    included; its agents may assume only the preview roles) and `deployNamespace` for the deploy job of
    the main branch alone (its agents may assume the deploy roles and push images).
    """

    namespace: Annotated[str, _K8S_NAMESPACE] = "jenkins-agents"
    deploy_namespace: Annotated[str, _K8S_NAMESPACE] = "jenkins-deploy"
    agent_image: str

    @field_validator("agent_image")
    @classmethod
    def _pinned(cls, value: str) -> str:
        return ArcSettings._pinned(value)

    @model_validator(mode="after")
    def _apart(self) -> JenkinsSettings:
        if self.deploy_namespace == self.namespace:
            raise ValueError(
                f"deployNamespace and namespace are both {self.namespace!r}: pull-request builds run in "
                "namespace and must not reach the deploy roles; set deployNamespace to another "
                "namespace, e.g. jenkins-deploy"
            )
        return self


class CiRunnersSettings(_Model):
    arc: ArcSettings | None = None
    jenkins: JenkinsSettings | None = None


class JenkinsTrustSettings(_Model):
    oidc_provider_arn: Annotated[str, _OIDC_PROVIDER_ARN]
    issuer: Annotated[str, _HTTPS]
    # Every build's agents (pull requests too): may assume the preview roles only.
    namespace: Annotated[str, _K8S_NAMESPACE] = "jenkins-agents"
    service_account: str = "jenkins-agent"
    # The main-branch deploy job's agents: may assume the deploy roles.
    deploy_namespace: Annotated[str, _K8S_NAMESPACE] = "jenkins-deploy"
    deploy_service_account: str = "jenkins-deploy"

    @model_validator(mode="after")
    def _apart(self) -> JenkinsTrustSettings:
        if (self.deploy_namespace, self.deploy_service_account) == (self.namespace, self.service_account):
            raise ValueError(
                "deployNamespace/deployServiceAccount name the same service account as namespace/"
                "serviceAccount: pull-request builds would assume the deploy roles; set deployNamespace "
                "to the deploy job's namespace, e.g. jenkins-deploy"
            )
        return self


class PipelineIdentitySettings(_Model):
    """Keyless deploy identities for this environment's pipeline (GitHub Actions OIDC)."""

    # owner/repo, exactly: the trust policies pin `sub` to it.
    repository: Annotated[str, _REPOSITORY]
    aws: bool = True
    # The account's token.actions.githubusercontent.com provider, when another stack already made it.
    aws_oidc_provider_arn: Annotated[str, _OIDC_PROVIDER_ARN] | None = None
    gcp: bool = False
    azure: bool = False
    # Jenkins agents on another stack's cluster that also deploy this environment: that cluster's
    # OIDC provider and issuer (its `ciRunnerTrust` output). In the stack that hosts the agents this
    # is wired automatically.
    jenkins_trust: JenkinsTrustSettings | None = None


class AzureSettings(_Model):
    location: str
    resource_group: Annotated[str, _RESOURCE_GROUP]


class GcpSettings(_Model):
    project: Annotated[str, _GCP_PROJECT]
    region: str


class AdmissionSettings(_Model):
    """Signature verification at admission: Kyverno on the clusters (EKS, GKE, AKS), Binary
    Authorization on Cloud Run (components/admission.py).

    `signer` is the repository whose release workflow signs the images (the certificate names
    `https://github.com/<signer>/.github/workflows/release.yml@refs/tags/<service>/v...`); unset, it is
    `sourceRepository`'s. `enforce` rejects what is unsigned; unset, dev audits and staging and prod
    enforce. `ghcrTokenKey` names the secure config key of a GHCR token (read:packages) that Kyverno
    reads the signatures with: needed when the release's GHCR packages are private.
    """

    signer: Annotated[str, _REPOSITORY] | None = None
    enforce: bool | None = None
    ghcr_token_key: str | None = None
    kyverno_chart_version: Annotated[str, _CHART_VERSION] = "3.9.0"
