"""Hardened container registries that image builds push to and workloads pull from.

Today: one Amazon ECR repository per service. Every registry exposes the same small shape
(`address`, `repository_url`, `credentials()`) so `ImageBuild` does not care which cloud it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws.ecr as ecr
import pulumi_aws.kms as kms
import pulumi_docker_build as docker_build

from components.settings import EcrSettings

# The BuildKit registry cache is the one tag that is rewritten on every build; only it may move.
CACHE_TAG = "buildcache"


def lifecycle_policy(settings: EcrSettings) -> str:
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
    address: pulumi.Output[str]
    registry_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: EcrRepositoryArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("pouw:index:EcrRepository", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, protect=args.protect)

        encryption: dict[str, pulumi.Input[str]] = {"encryption_type": "KMS"}
        self.key: kms.Key | None = None
        if args.settings.customer_managed_key:
            self.key = kms.Key(
                f"{name}-key",
                description=f"ECR images of {args.service}",
                enable_key_rotation=True,
                deletion_window_in_days=30,
                tags=args.tags,
                opts=child,
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
            opts=child,
        )
        ecr.LifecyclePolicy(
            f"{name}-lifecycle",
            repository=self.repository.name,
            policy=lifecycle_policy(args.settings),
            opts=pulumi.ResourceOptions(parent=self),
        )

        self.repository_url = self.repository.repository_url
        self.registry_id = self.repository.registry_id
        self.address = self.repository_url.apply(lambda url: url.split("/", 1)[0])
        self.register_outputs({"repositoryUrl": self.repository_url})

    def credentials(self) -> docker_build.RegistryArgs:
        """Short-lived push credentials from ECR itself; the password stays a secret."""
        token = ecr.get_authorization_token_output(
            registry_id=self.registry_id, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        return docker_build.RegistryArgs(
            address=self.address,
            username=token.user_name,
            password=pulumi.Output.secret(token.password),
        )
