"""The one place stack config is read and validated.

`load()` turns the `pouw-cicd:*` keys of the current stack into frozen, typed models. Every error
names the config key path and the fix, and all errors are raised before the program registers a
single resource: a typo in `Pulumi.prod.yaml` must never half-deploy prod.

Errors speak the stack file's language (keys, lists, mappings, quoting), not Python's or
pydantic's. The other namespaces are checked too: a key nobody reads (`pouw-cicdd:owner`) is a
typo, and `aws:region` is required wherever the stack deploys to AWS.

Secrets never enter these models. A model only names the config key that holds a secret; the
program reads it with `pulumi.Config.require_secret` so it stays an `Output` marked secret. A
secret inside a structured setting (`pulumi config set --secret --path`) is refused, because the
models would carry it as plain data.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import pulumi
import pulumi.runtime
from pulumi.runtime import config as runtime_config
from pydantic import BaseModel, Field, PrivateAttr, Tag, ValidationError, field_validator
from pydantic.fields import FieldInfo

from components.releases import RECORD_FILE, RecordError, ReleaseRecord, github_repository, load_record
from components.rollout import Model as _Model
from components.rollout import RolloutError, form_names
from components.schema import (
    _HTTPS,
    _PATTERN_HINTS,
    ACR_MAX_IP_RULES,
    AcrNetworkAccess,
    AdmissionSettings,
    AzureSettings,
    CiRunnersSettings,
    Environment,
    GcpSettings,
    NetworkSettings,
    PipelineIdentitySettings,
    RegistriesSettings,
    ReleasesSettings,
    ServiceSettings,
)
from components.targets import TARGETS
from components.targets.aci import AciSettings
from components.targets.aks import AksSettings
from components.targets.cloudrun import CloudRunSettings
from components.targets.ecs import EcsSettings
from components.targets.eks import EksSettings
from components.targets.gke import GkeSettings

NAMESPACE = "pouw-cicd"


# What each text pattern means to a person: messages show the hint, never the regex.


class SettingsError(pulumi.RunError):
    """Invalid stack config. A `RunError`, so the CLI prints the message without a traceback."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        body = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid stack config ({len(problems)} {noun}):\n{body}")


# Which registry each target pulls from: what each registered target declares.
TARGET_REGISTRY: dict[str, str] = {key: target.registry for key, target in TARGETS.items()}


class Settings(_Model):
    """Everything one stack deploys, parsed from the `pouw-cicd:*` config keys."""

    environment: Environment
    owner: str
    cost_center: str
    source_repository: Annotated[str, _HTTPS]
    registries: RegistriesSettings = Field(default_factory=RegistriesSettings)
    azure: AzureSettings | None = None
    gcp: GcpSettings | None = None
    network: NetworkSettings | None = None
    eks: EksSettings | None = None
    ecs: EcsSettings | None = None
    cloud_run: CloudRunSettings | None = None
    aci: AciSettings | None = None
    gke: GkeSettings | None = None
    aks: AksSettings | None = None
    ci_runners: CiRunnersSettings | None = None
    pipeline_identities: PipelineIdentitySettings | None = None
    admission: AdmissionSettings = Field(default_factory=AdmissionSettings)
    releases: ReleasesSettings = Field(default_factory=ReleasesSettings)
    services: tuple[ServiceSettings, ...]
    # The release record (releases.yaml, not a config key): what `parse` was given.
    _record: ReleaseRecord = PrivateAttr(default_factory=ReleaseRecord)

    @property
    def record(self) -> ReleaseRecord:
        return self._record

    @field_validator("services")
    @classmethod
    def _some_unique_services(cls, value: tuple[ServiceSettings, ...]) -> tuple[ServiceSettings, ...]:
        if not value:
            raise ValueError("needs at least one service")
        names = [s.name for s in value]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"service name {name!r} is used twice; names must be unique")
        return value

    def cross_key_problems(self) -> list[tuple[str, str]]:
        """(key path, problem) for settings that are valid alone but not together."""
        problems = []
        if self.registries.acr is not None and self.azure is None:
            problems.append(("registries.acr", "needs pouw-cicd:azure (location, resourceGroup); add it"))
        problems += self._acr_problems()
        if self.registries.artifact_registry is not None and self.gcp is None:
            problems.append(("registries.artifactRegistry", "needs pouw-cicd:gcp (project, region); add it"))
        if self.gke is not None and self.gcp is None:
            problems.append(("gke", "needs pouw-cicd:gcp (project, region); add it"))
        if self.aks is not None and self.azure is None:
            problems.append(("aks", "needs pouw-cicd:azure (location, resourceGroup); add it"))
        problems += self._api_access_problems()
        if self.admission_targets() and self.signer_repository is None:
            problems.append(
                (
                    "admission.signer",
                    f"sourceRepository {self.source_repository} is not https://github.com/<owner>/<repo>, "
                    "so the release workflow's signing identity is unknown; set admission.signer to the "
                    "<owner>/<repo> whose release.yml signs the images",
                )
            )
        for name, block in (("eks", self.eks), ("ecs", self.ecs)):
            if block is not None and self.network is None:
                problems.append((name, "needs pouw-cicd:network (availabilityZones, natGateways); add it"))
        if self.ci_runners is not None and self.eks is None:
            problems.append(("ciRunners", "runners run on the environment's EKS cluster; add pouw-cicd:eks"))
        identities = self.pipeline_identities
        if identities is not None and identities.gcp and self.gcp is None:
            problems.append(("pipelineIdentities.gcp", "needs pouw-cicd:gcp (project, region); add it"))
        if identities is not None and identities.azure and self.azure is None:
            problems.append(
                ("pipelineIdentities.azure", "needs pouw-cicd:azure (location, resourceGroup); add it")
            )
        registries = self.registries.model_dump(by_alias=True)
        for i, service in enumerate(self.services):
            for target in service.targets:
                registry = TARGET_REGISTRY[target]
                if registries.get(registry) is None:
                    problems.append(
                        (
                            f"services[{i}].targets",
                            f"{target} pulls from {registry}, but registries.{registry} is not configured; "
                            f"add it or remove {target}",
                        )
                    )
                if self.target_settings(target) is None:
                    settings_key = TARGETS[target].settings_key
                    problems.append(
                        (f"services[{i}].targets", f"{target} needs pouw-cicd:{settings_key}; add it")
                    )
            if (
                "ecs" in service.targets
                and self.ecs
                and self.ecs.native
                and service.rollout.strategy != "rolling"
            ):
                problems.append(
                    (
                        f"services[{i}].rollout.strategy",
                        "ecs.native lets ECS shift traffic itself; set strategy: rolling (ECS does the "
                        f"{self.ecs.native.strategy.lower().replace('_', '-')}) or remove ecs.native",
                    )
                )
            try:
                service.rollout.check(service.version)
            except RolloutError as err:
                problems.append((f"services[{i}].rollout.{err.path}", str(err)))
            problems += _header_route_problems(i, service)
        return problems

    def target_settings(self, key: str) -> BaseModel | None:
        """The target's own block (`pouw-cicd:<settings_key>`), or None when the stack has none."""
        field = TARGET_FIELDS[key]
        block: BaseModel | None = getattr(self, field)
        return block

    def registries_for(self, service: ServiceSettings) -> list[str]:
        """Where a service's image is pushed, first (the build cache) first: the registries its targets
        pull from, plus GHCR when configured (a distribution registry). A service with no target yet
        is pushed to every configured registry."""
        configured = [k for k, v in self.registries.model_dump(by_alias=True).items() if v is not None]
        if not service.targets:
            return configured
        needed = {TARGET_REGISTRY[t] for t in service.targets} | {"ghcr"}
        return [k for k in configured if k in needed]

    def targets(self) -> set[str]:
        return {t for s in self.services for t in s.targets}

    def aws_uses(self) -> list[str]:
        """What this stack deploys to AWS (and so what needs `aws:region`)."""
        uses = ["ecr"] if self.registries.ecr is not None else []
        uses += [t for t in ("eks", "ecs") if t in self.targets()]
        if self.pipeline_identities is not None and self.pipeline_identities.aws:
            uses.append("pipelineIdentities.aws")
        return uses

    @property
    def acr_zone_redundant(self) -> bool:
        """Explicit, or on for a Premium registry in prod."""
        acr = self.registries.acr
        if acr is None:
            return False
        explicit = acr.zone_redundant
        return (self.is_prod and acr.sku == "Premium") if explicit is None else explicit

    @property
    def flow_log_retention_days(self) -> int:
        """Explicit, or a year in prod (an audit trail), 30 days elsewhere."""
        explicit = self.network.flow_log_retention_days if self.network else None
        return explicit or (365 if self.is_prod else 30)

    def admission_targets(self) -> list[str]:
        """The targets that verify signatures at admission (Kyverno or Binary Authorization)."""
        return sorted(self.targets() & {"eks", "gke", "aks", "cloudrun"})

    @property
    def signer_repository(self) -> str | None:
        """`admission.signer`, or the GitHub `<owner>/<repo>` of `sourceRepository`."""
        if self.admission.signer is not None:
            return self.admission.signer
        return github_repository(self.source_repository)

    @property
    def admission_enforced(self) -> bool:
        """Explicit, or enforced everywhere but dev (dev audits: a violation is reported, not refused)."""
        explicit = self.admission.enforce
        return self.environment != "dev" if explicit is None else explicit

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    @property
    def acr_network_access(self) -> AcrNetworkAccess:
        """Explicit, or what the environment implies: public in dev, restricted everywhere else."""
        acr = self.registries.acr
        explicit = acr.network_access if acr else None
        return explicit or ("public" if self.environment == "dev" else "selectedNetworks")

    @property
    def nat_egress(self) -> bool:
        """Whether the program builds the AWS network with NAT gateways (as `__main__` does)."""
        return (
            self.network is not None
            and self.network.nat_gateways != "none"
            and bool(self.targets() & {"eks", "ecs"})
        )

    def _api_access_problems(self) -> list[tuple[str, str]]:
        """A GKE or AKS API that admits no one who runs pulumi: no NAT egress to allow, no authorized
        ranges, not private."""
        problems = []
        used = self.targets()
        gke, aks = self.gke, self.aks
        clusters = (
            (
                "gke",
                "GKE control plane",
                gke is not None and not (gke.private_endpoint or gke.authorized_cidrs),
            ),
            ("aks", "AKS API server", aks is not None and not (aks.private_cluster or aks.authorized_cidrs)),
        )
        for key, api, unlisted in clusters:
            if unlisted and key in used and not self.nat_egress:
                problems.append(
                    (
                        f"{key}.authorizedCidrs",
                        f"the {api} would admit no one: this stack has no NAT egress to allow "
                        "(no EKS or ECS target, or natGateways: none); list the ranges that run pulumi "
                        "and kubectl, e.g. authorizedCidrs: [203.0.113.0/24]",
                    )
                )
        return problems

    def acr_egress_rules(self) -> int:
        """The ACR IP rules this stack's own egress takes (`components/context.py` adds them): one per
        NAT gateway of the AWS network where the program builds one, and AKS's outbound address."""
        nat = 0
        if self.nat_egress and self.network is not None:
            nat = len(self.network.availability_zones) if self.network.nat_gateways == "perAz" else 1
        return nat + (1 if "aks" in self.targets() else 0)

    def _acr_problems(self) -> list[tuple[str, str]]:
        acr = self.registries.acr
        if acr is None:
            return []
        access = self.acr_network_access
        mode = (
            f"networkAccess: {access}"
            if acr.network_access
            else f"networkAccess is {access} by default in {self.environment}"
        )
        problems = []
        if access != "public" and acr.sku != "Premium":
            problems.append(
                (
                    "registries.acr.sku",
                    f"{acr.sku} cannot restrict network access ({mode}): ACR firewall rules and disabled "
                    "public access are Premium features that Azure refuses on Basic and Standard; "
                    "set sku: Premium",
                )
            )
        if acr.allowed_cidrs and access != "selectedNetworks":
            problems.append(
                (
                    "registries.acr.allowedCidrs",
                    f"only applies with networkAccess: selectedNetworks ({mode}); remove it",
                )
            )
        if access == "selectedNetworks" and not acr.allowed_cidrs and not self.nat_egress:
            problems.append(
                (
                    "registries.acr.allowedCidrs",
                    "networkAccess: selectedNetworks admits no one: this stack has no NAT egress to allow "
                    "(no EKS or ECS target, or natGateways: none); list the ranges builds push from here, "
                    "or set networkAccess: privateEndpoints",
                )
            )
        egress = self.acr_egress_rules()
        if access == "selectedNetworks" and len(acr.allowed_cidrs) + egress > ACR_MAX_IP_RULES:
            problems.append(
                (
                    "registries.acr.allowedCidrs",
                    f"lists {len(acr.allowed_cidrs)} ranges, and this stack's own egress takes {egress} more "
                    f"rules (NAT gateways, AKS): ACR allows at most {ACR_MAX_IP_RULES} IP rules; merge "
                    "ranges into wider ones or remove some",
                )
            )
        if access == "privateEndpoints" and "aks" in self.targets():
            problems.append(
                (
                    "registries.acr.networkAccess",
                    "aks nodes pull through the registry's public endpoint from the cluster's NAT "
                    "address, which networkAccess: privateEndpoints refuses; set networkAccess: "
                    "selectedNetworks (the NAT address is admitted) or remove aks from the services",
                )
            )
        return problems

    def secret_references(self) -> list[tuple[str, str]]:
        """(key path, config key) for every setting that names a secret config key."""
        refs = [
            (f"services[{i}].build.secrets.{sid}", key)
            for i, s in enumerate(self.services)
            for sid, key in s.build.secrets.items()
        ]
        if self.registries.ghcr is not None:
            refs.append(("registries.ghcr.tokenKey", self.registries.ghcr.token_key))
        if self.admission.ghcr_token_key is not None:
            refs.append(("admission.ghcrTokenKey", self.admission.ghcr_token_key))
        arc = self.ci_runners.arc if self.ci_runners else None
        if arc is not None:
            refs += [
                ("ciRunners.arc.appIdKey", arc.app_id_key),
                ("ciRunners.arc.installationIdKey", arc.installation_id_key),
                ("ciRunners.arc.privateKeyKey", arc.private_key_key),
            ]
        refs += [
            (f"services[{i}].azureSecureEnvironment.{var}", key)
            for i, s in enumerate(self.services)
            for var, key in s.azure_secure_environment.items()
        ]
        return refs

    def tags(self, service: str = "shared") -> dict[str, str]:
        """The required tags every resource carries; `shared` for what all services use."""
        return {
            "owner": self.owner,
            "environment": self.environment,
            "cost-center": self.cost_center,
            "service": service,
            "managed-by": "pulumi",
        }

    def labels(self, service: str = "shared") -> dict[str, str]:
        """The same tags as GCP labels (lowercase letters, digits, '_' and '-', at most 63)."""
        return {k: re.sub(r"[^a-z0-9_-]", "_", v.lower())[:63] for k, v in self.tags(service).items()}


# Each target's block in the root model: the field whose key is its `settings_key` and whose type is
# its `settings_model` (tests/test_targets.py checks both for every registered target).
TARGET_FIELDS: dict[str, str] = {
    key: next(name for name, f in Settings.model_fields.items() if f.alias == target.settings_key)
    for key, target in TARGETS.items()
}


def load(stack: str | None = None) -> Settings:
    """Parse the current stack's config, or raise `SettingsError` naming every problem.

    Reads every key the engine hands the program (the CLI's PULUMI_CONFIG, or what the mocks set),
    not just `pouw-cicd:*`: a key in a misspelt namespace and a missing `aws:region` are problems too.
    """
    config = _all_config()
    prefix = f"{NAMESPACE}:"
    raw = {_short_key(k): _decode(v) for k, v in config.items() if k.startswith(prefix)}
    other = {k: v for k, v in config.items() if not k.startswith(prefix)}
    stack = stack or pulumi.get_stack()
    try:
        record = load_record(Path(RECORD_FILE))  # the program runs in the project directory
    except RecordError as err:
        raise SettingsError([f"{err} (the release record every stack deploys from)"]) from None
    return parse(raw, stack, secret_keys=_secret_keys(raw), other_config=other, record=record)


def parse(
    raw: Mapping[str, Any],
    stack: str,
    secret_keys: frozenset[str] = frozenset(),
    other_config: Mapping[str, Any] | None = None,
    record: ReleaseRecord | None = None,
) -> Settings:
    """Validate the stack's config.

    `raw`: the `pouw-cicd:*` keys, namespace stripped, objects already decoded; `secret_keys`: which of
    them the stack stores encrypted; `other_config`: every other key by its full name (`aws:region`,
    `pulumi:tags`...), checked for misspelt namespaces and for what the providers need; `record`: the
    release record (releases.yaml), which every version a stack deploys must be in unless the stack
    builds unreleased versions (dev); `load` always passes it, None (a test of other keys) skips that.
    """
    other = dict(other_config or {})
    fields = {f.alias or name for name, f in Settings.model_fields.items()}
    plain = {k: v for k, v in raw.items() if k in fields}
    extra = sorted(k for k in raw if k not in fields)
    # A secret inside structured settings would be read as plain data (see `_secret_setting`).
    secret_fields = sorted(k for k in plain if k in secret_keys)
    secret_locs = {(k,) for k in secret_fields}
    problems = [_secret_setting(k, plain[k], stack) for k in secret_fields]
    problems += [_namespace_problem(k, stack) for k in sorted(other) if _namespace(k) not in KNOWN_NAMESPACES]
    settings: Settings | None = None
    try:
        settings = Settings.model_validate(plain)
    except ValidationError as err:
        # Never quote what a secret setting holds: its problems wait until it is plain again.
        problems.extend(_describe(e, stack) for e in err.errors() if e["loc"][:1] not in secret_locs)

    if settings is not None:
        problems.extend(f"{NAMESPACE}:{path}: {what}" for path, what in settings.cross_key_problems())
        problems.extend(_aws_problems(settings, other, stack))
        if record is not None:
            problems.extend(_release_problems(settings, record, stack))
    references = settings.secret_references() if settings else []
    # While settings are invalid, references are unknown: a key stored as a secret is given the benefit.
    referenced = {key for _, key in references} if settings else set(secret_keys)
    for key in extra:
        if key in referenced:
            continue
        problems.append(
            f"{NAMESPACE}:{key}: unknown key{_did_you_mean(key, fields)}; known keys are "
            f"{', '.join(sorted(fields))} (a secret key must be named by a setting such as "
            f"services[].build.secrets). Fix the spelling or remove it with "
            f"`pulumi config rm {NAMESPACE}:{key} -s {stack}`"
        )
    for where, key in references:
        path = f"{NAMESPACE}:{where}"
        if key not in raw:
            problems.append(
                f"{path}: config key {NAMESPACE}:{key} is not set; run "
                f"`pulumi config set --secret {NAMESPACE}:{key} <value> -s {stack}`"
            )
        elif key not in secret_keys:
            problems.append(
                f"{path}: config key {NAMESPACE}:{key} is stored in plain text; re-set it with "
                f"`pulumi config set --secret {NAMESPACE}:{key} <value> -s {stack}`"
            )
    if problems:
        raise SettingsError(problems)
    assert settings is not None
    settings._record = record or ReleaseRecord()
    return settings


def _release_problems(settings: Settings, record: ReleaseRecord, stack: str) -> list[str]:
    """Every version a stack deploys was released (in the record), unless it builds unreleased ones."""
    if settings.releases.build_unreleased:
        if settings.environment == "dev":
            return []
        return [
            f"{NAMESPACE}:releases.buildUnreleased: only dev may build unreleased versions; "
            f"{settings.environment} deploys what the release recorded: remove the key"
        ]
    problems = []
    for i, service in enumerate(settings.services):
        try:
            slots = service.rollout.plan(service.version, service.replicas.min, service.replicas.max).slots
        except RolloutError:
            slots = ()  # reported with the rollout's own key path
        paths = {service.version: f"services[{i}].version"}
        for slot in slots:
            paths.setdefault(slot.version, f"services[{i}].rollout.slots.{slot.name}.version")
        for version, path in paths.items():
            if record.image(service.name, version) is None:
                problems.append(
                    f"{NAMESPACE}:{path}: {service.name} {version} has no release record in "
                    f"{RECORD_FILE}; release it (push the tag {service.name}/v{version}: release.yml "
                    f"builds it once and records its digest with `python -m delivery.release record`), "
                    f"merge the record's pull request, then deploy it to {stack}"
                )
    return problems


# The packages whose providers this program uses (`import pulumi_<name>`): their config namespaces
# are the only ones besides the project's and the engine's own (`pulumi:tags`,
# `pulumi:disable-default-providers`...). A test keeps this in step with the imports.
PROVIDER_NAMESPACES = ("aws", "azure-native", "docker", "docker-build", "gcp", "kubernetes")
KNOWN_NAMESPACES = (NAMESPACE, "pulumi", *PROVIDER_NAMESPACES)


def _header_route_problems(i: int, service: ServiceSettings) -> list[tuple[str, str]]:
    """A header route's match forms that one of the service's targets cannot route (each target
    declares its own: `Target.header_match_forms`)."""
    route = getattr(service.rollout, "header_route", None)
    problems: list[tuple[str, str]] = []
    if route is None:
        return problems
    for target in service.targets:
        forms = TARGETS[target].header_match_forms
        if not forms:
            problems.append(
                (
                    f"services[{i}].rollout.headerRoute",
                    f"{target} cannot route by header: {TARGETS[target].header_route_instead}; remove "
                    f"headerRoute or {target} from services[{i}].targets",
                )
            )
            continue
        longest = TARGETS[target].header_name_max
        for j, match in enumerate(route.match):
            if match.form not in forms:
                problems.append(
                    (
                        f"services[{i}].rollout.headerRoute.match[{j}]",
                        f"{target} cannot match {match.shown} ({form_names({match.form})}); it matches "
                        f"{form_names(forms)}",
                    )
                )
            elif longest is not None and len(match.name) > longest:
                problems.append(
                    (
                        f"services[{i}].rollout.headerRoute.match[{j}].headerName",
                        f"{match.name!r} has {len(match.name)} characters; {target}'s header condition "
                        f"takes at most {longest}",
                    )
                )
    return problems


def _all_config() -> dict[str, Any]:
    """Every config key the engine passed, by full name (`pouw-cicd:owner`, `aws:region`)."""
    merged: dict[str, Any] = dict(pulumi.runtime.get_config_env())
    merged.update(runtime_config.CONFIG.get())
    return merged


def _namespace(full_key: str) -> str:
    return full_key.split(":", 1)[0]


def _short_key(full_key: str) -> str:
    """`ns:key`, or the CLI's old `ns:config:key` spelling -> `key`."""
    key = full_key.split(":", 1)[1] if ":" in full_key else full_key
    return key.split(":", 1)[1] if key.startswith("config:") else key


def _secret_keys(keys: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(k for k in keys if runtime_config.is_config_secret(f"{NAMESPACE}:{k}"))


def _decode(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _secret_setting(key: str, value: Any, stack: str) -> str:
    """A settings key the stack marks secret. For structured settings that is what
    `pulumi config set --secret --path 'pouw-cicd:services[1].environment.DB'` writes: the CLI decrypts
    the value and marks the whole top-level key secret, but settings are plain data (models, then
    resource inputs), so the value would land in task definitions and container groups in clear."""
    path = f"{NAMESPACE}:{key}"
    if not isinstance(value, (dict, list)):
        return (
            f"{path}: holds a secret value, but it is a plain setting (it names and tags resources); "
            f"re-set it in plain text with `pulumi config set {path} <value> -s {stack}`"
        )
    return (
        f"{path}: holds a secret value (set with `pulumi config set --secret --path`), but settings are "
        "plain data: it would reach task definitions and container environments in clear. Remove the "
        f"`secure:` entry under {path} in Pulumi.{stack}.yaml and name a top-level secret key instead: "
        "services[].azureSecureEnvironment (ACI, AKS), services[].build.secrets (builds), "
        "registries.ghcr.tokenKey; or for ECS services[].runtimeSecrets (Secrets Manager or SSM ARNs), "
        "for Cloud Run services[].gcpSecrets (Secret Manager)"
    )


def _namespace_problem(full_key: str, stack: str) -> str:
    namespace, _, rest = full_key.partition(":")
    close = difflib.get_close_matches(namespace, KNOWN_NAMESPACES, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}:{rest}?)" if close else ""
    return (
        f"{full_key}: unknown namespace `{namespace}`{hint}; this program reads {NAMESPACE}, pulumi and "
        f"its providers' {', '.join(PROVIDER_NAMESPACES)}. Fix the spelling or remove it with "
        f"`pulumi config rm {full_key} -s {stack}`"
    )


def _aws_problems(settings: Settings, other: Mapping[str, Any], stack: str) -> list[str]:
    """`aws:region` where the stack uses AWS: the provider would otherwise take it from whatever
    AWS_REGION the machine running `pulumi up` has, so the stack file must pin it."""
    uses = settings.aws_uses()
    aws = {_short_key(k): v for k, v in other.items() if _namespace(k) == "aws"}
    region = str(aws.get("region") or "")
    zones = settings.network.availability_zones if settings.network else ()
    if uses and not region:
        example = zones[0][:-1] if zones else "eu-west-1"
        close = difflib.get_close_matches("region", [k for k in aws if k != "region"], n=1, cutoff=0.6)
        found = f" (aws:{close[0]} is set: did you mean aws:region?)" if close else ""
        return [
            f"aws:region: is required because this stack uses AWS ({', '.join(uses)}); set it with "
            f"`pulumi config set aws:region {example} -s {stack}`{found}"
        ]
    outside = [z for z in zones if region and not z.startswith(region)]
    if uses and outside:
        return [
            f"{NAMESPACE}:network.availabilityZones: {', '.join(outside)} "
            f"{'is' if len(outside) == 1 else 'are'} not in aws:region {region}; use {region} zones "
            f"({region}a, ...) or set aws:region to their region"
        ]
    return []


def _did_you_mean(word: str, choices: Any, cutoff: float = 0.6) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]}?)" if close else ""


_LIST_KINDS = {"tuple_type", "list_type", "set_type", "iterable_type"}
_MAPPING_KINDS = {"dict_type", "model_type", "model_attributes_type"}
_INT_KINDS = {"int_type", "int_parsing", "int_from_float", "int_parsing_size"}
_FLOAT_KINDS = {"float_type", "float_parsing", "finite_number"}
_BOOL_KINDS = {"bool_type", "bool_parsing"}


def _describe(error: Any, stack: str) -> str:
    """One line per validation error, in the stack file's words (keys, lists, mappings; never the
    Python types behind them): `<key path>: <what is wrong>, got <value>; <how to fix>`."""
    loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "tag_invalid":  # a tagged union's key (a rollout's strategy) names none of its models
        loc, kind = (*loc, ctx["key"]), "literal_error"
        value = value.get(ctx["key"]) if isinstance(value, Mapping) else value
    path = _key_path(_walk(loc)[0])
    got = f", got {_shown(value)}"
    if kind == "missing":
        return f"{path}: is required; add it to Pulumi.{stack}.yaml"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        hint = _did_you_mean(str(loc[-1]), allowed)
        return f"{path}: unknown key{hint}; allowed keys here are {', '.join(allowed)}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        lo, hi = _bounds(loc)
        return f"{path}: must be {lo}..{hi}{got}"
    if kind == "string_type" and isinstance(value, (bool, int, float)):
        return f"{path}: {_quote_it(loc, value)}"
    if kind == "string_type":
        return f"{path}: must be text{got}"
    if kind in _LIST_KINDS:
        return f"{path}: must be a list{got}"
    if kind in _MAPPING_KINDS:
        model, _ = _field_at(loc)
        keys = f" (keys: {', '.join(_allowed_keys(loc))})" if kind != "dict_type" and model else ""
        return f"{path}: must be a mapping of key: value{keys}{got}"
    if kind in _INT_KINDS:
        return f"{path}: must be a whole number{got}"
    if kind in _FLOAT_KINDS:
        return f"{path}: must be a number{got}"
    if kind in _BOOL_KINDS:
        return f"{path}: must be true or false{got}"
    if kind == "literal_error":
        allowed = [a or b for a, b in re.findall(r"'([^']*)'|([-0-9.]+)", str(ctx.get("expected", "")))]
        # A short list of values: a looser match still helps (`production` -> prod).
        hint = _did_you_mean(value, allowed, cutoff=0.5) if isinstance(value, str) else ""
        return f"{path}: must be one of {', '.join(allowed)}{got}{hint}"
    if kind == "string_pattern_mismatch":
        hint = _PATTERN_HINTS.get(str(ctx.get("pattern")), "does not have the expected form")
        return f"{path}: {hint}{got}"
    if kind in ("too_short", "too_long"):
        bound = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        need = "needs at least" if kind == "too_short" else "takes at most"
        entries = "entry" if bound == 1 else "entries"
        return f"{path}: {need} {bound} {entries}, got {ctx.get('actual_length', '?')}"
    message = str(error["msg"])
    if message.startswith("Value error, "):
        below = ctx.get("error")
        # A rollout model checks itself as a whole and names the key below it (`steps[2].setWeight`).
        where = f"{path}.{below.path}" if isinstance(below, RolloutError) else path
        return f"{where}: {message[len('Value error, ') :]}"
    return f"{path}: is not valid here{got}"


def _shown(value: Any) -> str:
    """A value as the stack file would spell it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing (null)"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return repr(value)


def _quote_it(loc: tuple[Any, ...], value: bool | float) -> str:
    """A number or boolean where text belongs. The CLI hands structured config to the program as
    JSON, so YAML has already turned `version: 1.10` into the number 1.1 (trailing zero gone) and
    `1.30` into 1.3: a one-decimal number is probably a version with its zero lost."""
    shown = _shown(value)
    if isinstance(value, bool):
        return f"{shown} is a boolean in YAML; quote it: {_as_yaml(loc, shown)}"
    guess = f"{shown}0" if isinstance(value, float) and re.fullmatch(r"[0-9]+\.[1-9]", shown) else None
    asked = f" (did you write {guess}?)" if guess else ""
    return f"{shown} is a number in YAML{asked}; quote it: {_as_yaml(loc, guess or shown)}"


def _as_yaml(loc: tuple[Any, ...], text: str) -> str:
    last = loc[-1] if loc else None
    return f'{last}: "{text}"' if isinstance(last, str) else f'"{text}"'


def _key_path(loc: tuple[Any, ...]) -> str:
    out = NAMESPACE + ":"
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("" if i == 0 else ".") + str(part)
    return out


def _field_at(loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    _, model, info = _walk(loc)
    return model, info


def _walk(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], type[BaseModel] | None, FieldInfo | None]:
    """Walk the model tree along a pydantic error location (aliases, list indexes, dict keys, union
    tags): the location as the stack file spells it, and the model and field it ends at. A tagged
    union (a rollout's strategies) adds its tag to pydantic's location (`rollout.canary.steps`): the
    tag picks the model and is not a key in the file."""
    model: Any = Settings
    info: FieldInfo | None = None
    tags: dict[Any, Any] = {}
    keys: list[Any] = []
    lost = False
    for part in loc:
        if part in tags:
            model, tags = tags[part], {}
            continue
        keys.append(part)
        if lost or isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue  # a list index, or a key inside a dict[str, X]: the key itself
        by_alias = {(f.alias or n): f for n, f in model.model_fields.items()}
        info = by_alias.get(str(part))
        if info is None:
            lost = True  # the error is about this key: the model is where it is not a field
            continue
        tags = _tags(info.annotation)
        model = _inner_model(info.annotation)
    return tuple(keys), (model if isinstance(model, type) and issubclass(model, BaseModel) else None), info


def _tags(annotation: Any) -> dict[str, Any]:
    """A tagged union's models by tag (`Annotated[CanaryRollout, Tag("canary")] | ...`), else none."""
    members = getattr(annotation, "__args__", ()) or ()
    return {
        meta.tag: member.__origin__
        for member in members
        for meta in getattr(member, "__metadata__", ())
        if isinstance(meta, Tag)
    }


def _inner_model(annotation: Any) -> Any:
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if isinstance(found, type) and issubclass(found, BaseModel):
            return found
    return annotation


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model, _ = _field_at(loc)
    model = model or Settings
    return sorted((f.alias or n) for n, f in model.model_fields.items())


def _bounds(loc: tuple[Any, ...]) -> tuple[Any, Any]:
    _, info = _field_at(loc)
    lo: Any = "-inf"
    hi: Any = "inf"
    for meta in info.metadata if info else ():
        lo = getattr(meta, "ge", getattr(meta, "gt", lo))
        hi = getattr(meta, "le", getattr(meta, "lt", hi))
    return lo, hi
