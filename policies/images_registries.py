"""Images and registries: what a workload pulls must be scanned, immutable and traceable."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity, StackValidationArgs
from pulumi_policy.proxy import UnknownValueError

import resource_types as t
from pack_support import (
    AZURE_POLICY,
    CIS_DOCKER,
    FSBP,
    IMAGES_REGISTRIES,
    PROJECT,
    SECRET_NAME,
    present,
    setting,
)


@IMAGES_REGISTRIES.resource(
    "ecr-scan-on-push",
    "ECR repositories scan every image for vulnerabilities when it is pushed.",
    types=[t.ECR_REPOSITORY],
    severity=Severity.HIGH,
    controls=[FSBP("ECR.1")],
    checkov=["CKV_AWS_163"],
    remediation="Set registries.ecr.scanOnPush: true in the stack file "
    "(image_scanning_configuration.scan_on_push=True).",
)
def _scan_on_push(args: ResourceValidationArgs) -> Iterable[str]:
    scanning = args.props.get("imageScanningConfiguration") or {}
    if scanning.get("scanOnPush") is not True:
        yield "ECR repository does not scan images on push (imageScanningConfiguration.scanOnPush)"


IMMUTABLE_SCHEMA: dict[str, dict[str, Any]] = {
    "allowedMutableTags": {
        "type": "array",
        "items": {"type": "string"},
        "default": ["buildcache"],
        "description": "Tag patterns that may stay mutable (the BuildKit registry cache).",
    }
}


@IMAGES_REGISTRIES.resource(
    "ecr-immutable-tags",
    "ECR release tags are immutable; only the build cache tag may move.",
    types=[t.ECR_REPOSITORY],
    severity=Severity.MEDIUM,
    controls=[FSBP("ECR.2")],
    checkov=["CKV_AWS_51"],
    remediation="Use image_tag_mutability IMMUTABLE (or IMMUTABLE_WITH_EXCLUSION limited to "
    "the allowedMutableTags patterns).",
    config=IMMUTABLE_SCHEMA,
)
def _immutable_tags(args: ResourceValidationArgs) -> Iterable[str]:
    mutability = args.props.get("imageTagMutability") or "MUTABLE"
    if mutability == "IMMUTABLE":
        return
    if mutability != "IMMUTABLE_WITH_EXCLUSION":
        yield f"ECR repository tags are {mutability}; a pushed release tag could be overwritten"
        return
    allowed = setting(args, IMMUTABLE_SCHEMA, "allowedMutableTags")
    for entry in args.props.get("imageTagMutabilityExclusionFilters") or []:
        pattern = entry.get("filter")
        if pattern not in allowed:
            yield (
                f"ECR repository lets tags matching {pattern!r} be overwritten; "
                f"only {', '.join(allowed)} may stay mutable"
            )


CMK_SCHEMA: dict[str, dict[str, Any]] = {
    "requireCustomerManagedKey": {
        "type": "boolean",
        "default": False,
        "description": "Require a customer-managed KMS key (prod), not the AWS-managed one.",
    }
}


@IMAGES_REGISTRIES.resource(
    "ecr-kms-encryption",
    "ECR repositories are encrypted with KMS; with a customer-managed key where required.",
    types=[t.ECR_REPOSITORY],
    severity=Severity.MEDIUM,
    controls=[PROJECT("encryption-at-rest")],
    checkov=["CKV_AWS_136"],
    remediation="Set registries.ecr.customerManagedKey: true in the stack file.",
    config=CMK_SCHEMA,
)
def _kms_encryption(args: ResourceValidationArgs) -> Iterable[str]:
    configs = args.props.get("encryptionConfigurations") or []
    encryption = configs[0] if configs else {}
    if encryption.get("encryptionType") != "KMS":
        yield "ECR repository is not encrypted with KMS (encryptionConfigurations[0].encryptionType)"
    elif setting(args, CMK_SCHEMA, "requireCustomerManagedKey") and not present(encryption, "kmsKey"):
        yield "ECR repository uses the AWS-managed key; this environment requires a customer-managed KMS key"


@IMAGES_REGISTRIES.resource(
    "image-no-latest-tag",
    "Images and their copies are tagged with a release version, never 'latest' or untagged.",
    types=[t.IMAGE, t.INDEX],
    severity=Severity.HIGH,
    controls=[PROJECT("immutable-image-references")],
    remediation="Set services[].version to the release version (e.g. 1.4.2).",
)
def _no_latest(args: ResourceValidationArgs) -> Iterable[str]:
    if args.resource_type == t.INDEX:  # one tag, pushed unless push is false
        tag = args.props.get("tag")
        tags, pushed = [tag] if tag else [], args.props.get("push") is not False
    else:
        tags, pushed = list(args.props.get("tags") or []), bool(args.props.get("push"))
    if pushed and not tags:
        yield "image is pushed without a tag; tag it with the release version"
    for tag in tags:
        name = tag.rsplit("/", 1)[-1]
        if ":" not in name:
            yield f"image tag {tag!r} has no version, so registries read it as 'latest'"
        elif name.rsplit(":", 1)[1] == "latest":
            yield f"image tag {tag!r} is 'latest', which moves; tag with the release version"


@IMAGES_REGISTRIES.resource(
    "image-no-secret-build-args",
    "Secrets reach image builds as BuildKit secrets, never as build args.",
    types=[t.IMAGE],
    severity=Severity.CRITICAL,
    controls=[CIS_DOCKER("4.10")],
    remediation="Move the value to services[].build.secrets (a secure config key) and read it "
    "with RUN --mount=type=secret in the Dockerfile.",
)
def _no_secret_build_args(args: ResourceValidationArgs) -> Iterable[str]:
    for key in args.props.get("buildArgs") or {}:
        if SECRET_NAME.search(key):
            yield (
                f"build arg {key!r} looks like a secret; build args are stored in the image "
                "history, pass it as a BuildKit secret instead"
            )


@IMAGES_REGISTRIES.stack(
    "ecr-lifecycle-policy",
    "Every ECR repository has a lifecycle policy.",
    severity=Severity.LOW,
    controls=[FSBP("ECR.3")],
    remediation="Create the repository through components.registry.EcrRepository, which "
    "adds the lifecycle policy (registries.ecr.keepTaggedImages, expireUntaggedAfterDays).",
)
def _lifecycle_policies(args: StackValidationArgs) -> Iterable[tuple[str, str | None]]:
    covered = set()
    for resource in args.resources:
        if resource.resource_type == t.ECR_LIFECYCLE:
            covered.add(resource.props.get("repository"))
    for resource in args.resources:
        if resource.resource_type == t.ECR_REPOSITORY and resource.props.get("name") not in covered:
            yield (
                f"ECR repository {resource.props.get('name')!r} has no lifecycle policy; "
                "old images and untagged manifests pile up",
                resource.urn,
            )


PRIVATE_SCHEMA: dict[str, dict[str, Any]] = {
    "requirePrivate": {
        "type": "boolean",
        "default": True,
        "description": "Require a network-restricted registry: publicNetworkAccess Disabled (private "
        "endpoints), or networkRuleSet.defaultAction Deny with no IP rule open to every address.",
    }
}
# IP rules that admit every address. ACR takes IPv4 only.
OPEN_RANGES = frozenset({"*", "any", "internet"})


@IMAGES_REGISTRIES.resource(
    "acr-admin-user-disabled",
    "Azure Container Registries have the admin user disabled.",
    types=[t.ACR_REGISTRY],
    severity=Severity.HIGH,
    controls=[AZURE_POLICY("Container registries should have local admin account disabled")],
    checkov=["CKV_AZURE_137"],
    remediation="Set admin_user_enabled=False; builds push with an Entra ID token exchanged for an "
    "ACR refresh token (components.registry.AcrRegistry).",
)
def _acr_admin_disabled(args: ResourceValidationArgs) -> Iterable[str]:
    if args.props.get("adminUserEnabled") is True:
        yield "ACR admin user is enabled; its shared password bypasses Entra ID and audit"


@IMAGES_REGISTRIES.resource(
    "acr-anonymous-pull-disabled",
    "Azure Container Registries do not allow anonymous pull.",
    types=[t.ACR_REGISTRY],
    severity=Severity.HIGH,
    controls=[AZURE_POLICY("Container registries should have anonymous authentication disabled")],
    checkov=["CKV_AZURE_138"],
    remediation="Set anonymous_pull_enabled=False; workloads pull with a managed identity (AcrPull).",
)
def _acr_anonymous_pull_disabled(args: ResourceValidationArgs) -> Iterable[str]:
    if args.props.get("anonymousPullEnabled") is True:
        yield "ACR allows anonymous pull; anyone on the network can read every image"


def _open_to_all(rule: Any) -> str | None:
    """The rule's range when it admits every address (`*`, any /0), else None.

    A range unknown during preview is one a provider computes (a NAT gateway's Elastic IP): a single
    address, never a wildcard. `pulumi up` checks it again, known.
    """
    try:
        value = str(rule.get("iPAddressOrRange") or "").strip()
    except UnknownValueError:
        return None
    if value.lower() in OPEN_RANGES:
        return value
    try:
        return value if ipaddress.ip_network(value, strict=False).prefixlen == 0 else None
    except ValueError:
        return None


@IMAGES_REGISTRIES.resource(
    "acr-private-network",
    "Azure Container Registries are network-restricted where required: public access "
    "disabled, or denied except to selected networks.",
    types=[t.ACR_REGISTRY],
    severity=Severity.MEDIUM,
    controls=[AZURE_POLICY("Container registries should not allow unrestricted network access")],
    checkov=["CKV_AZURE_139"],
    remediation="Leave registries.acr.networkAccess unset outside dev (selectedNetworks: the stack's NAT "
    "egress plus registries.acr.allowedCidrs) or set it to privateEndpoints; both need sku: Premium.",
    config=PRIVATE_SCHEMA,
)
def _acr_private(args: ResourceValidationArgs) -> Iterable[str]:
    if not setting(args, PRIVATE_SCHEMA, "requirePrivate"):
        return
    access = args.props.get("publicNetworkAccess") or "Enabled"
    if access == "Disabled":
        return
    rules = args.props.get("networkRuleSet") or {}
    action = rules.get("defaultAction") or "Allow"
    if action != "Deny":
        yield (
            f"ACR public network access is {access} for all networks (networkRuleSet.defaultAction "
            f"{action}); this environment requires it Disabled, or defaultAction Deny with IP rules "
            "for the networks that push and pull"
        )
        return
    for rule in rules.get("ipRules") or []:
        wide = _open_to_all(rule)
        if wide is not None:
            yield f"ACR network rule {wide!r} admits every address; allow only the networks that use it"


@IMAGES_REGISTRIES.resource(
    "artifact-registry-immutable-tags",
    "Artifact Registry Docker repositories have immutable tags.",
    types=[t.ARTIFACT_REPOSITORY],
    severity=Severity.MEDIUM,
    controls=[PROJECT("immutable-image-references")],
    remediation="Set docker_config.immutable_tags=True (components.registry.ArtifactRegistry does).",
)
def _artifact_immutable(args: ResourceValidationArgs) -> Iterable[str]:
    if args.props.get("format") != "DOCKER":
        return
    docker = args.props.get("dockerConfig") or {}
    if docker.get("immutableTags") is not True:
        yield "Artifact Registry tags are mutable (dockerConfig.immutableTags); a release tag could move"


@IMAGES_REGISTRIES.resource(
    "artifact-registry-cleanup",
    "Artifact Registry repositories run cleanup policies (not dry-run).",
    types=[t.ARTIFACT_REPOSITORY],
    severity=Severity.LOW,
    controls=[PROJECT("registry-cleanup")],
    remediation="Set registries.artifactRegistry.keepTaggedImages and deleteUntaggedAfterDays.",
)
def _artifact_cleanup(args: ResourceValidationArgs) -> Iterable[str]:
    if not present(args.props, "cleanupPolicies"):
        yield "Artifact Registry repository has no cleanup policies; old and untagged images pile up"
    elif args.props.get("cleanupPolicyDryRun") is True:
        yield "Artifact Registry cleanup policies only run dry (cleanupPolicyDryRun: true)"
