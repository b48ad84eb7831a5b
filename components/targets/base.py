"""What every target shares: the Target interface, the one container contract and the output shape.

A target is one platform behind one interface (`Target`): the config key services name it by, the
registry it pulls from, the resource types that are its workloads and its routing (the policy pack and
preflight's plan diff must know them: tests/test_targets.py checks), its shared infrastructure (made once
per stack, in its constructor) and `deploy(service, plan, images)`. `components/targets/__init__.py`
holds the only list (`TARGETS`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pulumi
from pydantic import BaseModel

from components.rollout import HeaderMatch, RolloutPlan, SlotPlan
from components.schema import ResourceSettings, ServiceSettings

if TYPE_CHECKING:
    from components.context import StackContext

# The one uid/gid every container runs as, on every platform (the image's user: app/Dockerfile).
RUN_AS_UID = 10001
RUN_AS_GID = 10001
# TLS 1.3 and 1.2 only, on every AWS load balancer listener the targets make.
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"


# What an ALB http-header condition matches (EKS and ECS): a value with `*` and `?` wildcards, compared
# case-insensitively; so exact is the value, prefix the value and `*`. ALB has no cookie condition.
ALB_HEADER_MATCH_FORMS = frozenset({"header-exact", "header-prefix"})
# "The name of the HTTP header field. The maximum size is 40 characters." (Elastic Load Balancing API
# reference, HttpHeaderConditionConfig.HttpHeaderName); the header route model allows 64.
ALB_HEADER_NAME_MAX = 40


def alb_header_values(match: HeaderMatch) -> list[str]:
    """An ALB http-header condition's values for one match (rollout.py refuses `*` and `?` in them)."""
    value = match.match
    return [value.value + ("*" if value.kind == "prefix" else "")]


@dataclass(frozen=True)
class ContainerSpec:
    """The container contract, built once per service and slot and only translated per target.

    `environment` is what the application reads: the service's own `environment` settings, then
    PORT, APP_VERSION and APP_SLOT (the platform's values win over a user's of the same name).
    """

    port: int
    health_path: str
    version: str
    slot: str
    service_environment: Mapping[str, str]
    resources: ResourceSettings
    uid: int = RUN_AS_UID
    gid: int = RUN_AS_GID

    @classmethod
    def of(cls, service: ServiceSettings, slot: SlotPlan) -> ContainerSpec:
        return cls(
            port=service.port,
            health_path=service.health_path,
            version=slot.version,
            slot=slot.workload,
            service_environment=dict(service.environment),
            resources=service.resources,
        )

    @property
    def platform_environment(self) -> dict[str, str]:
        """What the platform sets, in this order: PORT, APP_VERSION, APP_SLOT."""
        return {"PORT": str(self.port), "APP_VERSION": self.version, "APP_SLOT": self.slot}

    @property
    def environment(self) -> dict[str, str]:
        return {**self.service_environment, **self.platform_environment}

    def sorted_environment(self) -> list[tuple[str, str]]:
        return sorted(self.environment.items())

    def ordered_environment(self) -> list[tuple[str, str]]:
        """The service's own variables (sorted), then the platform's in their fixed order."""
        platform = self.platform_environment
        own = sorted((k, v) for k, v in self.service_environment.items() if k not in platform)
        return own + list(platform.items())

    @property
    def user(self) -> str:
        """`uid:gid`, the form ECS task definitions take."""
        return f"{self.uid}:{self.gid}"


@dataclass(frozen=True)
class TargetEndpoints:
    url: pulumi.Input[str]  # the stable endpoint users reach
    preview_url: pulumi.Input[str] | None  # the idle blue-green slot or the canary, on its own
    weights: Mapping[str, int]  # live traffic share per slot
    images: Mapping[str, pulumi.Input[str]]  # digest-pinned image per slot

    def as_outputs(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "previewUrl": self.preview_url,
            "weights": dict(self.weights),
            "images": dict(self.images),
        }


class Target(ABC):
    """One deployment platform. Constructed once per stack when a service uses it."""

    key: ClassVar[str]  # the name in services[].targets (and the settings block, see settings_key)
    settings_key: ClassVar[str]  # pouw-cicd:<settings_key>
    settings_model: ClassVar[type[BaseModel]]  # that block's schema, defined in the target's module
    registry: ClassVar[str]  # the registry kind its workloads pull from (components/registry.py)
    needs_network: ClassVar[bool] = False  # runs in the stack's AWS VPC
    # The resource types that run the containers, each with the input paths whose change starts new
    # pods, tasks, revisions or containers (None: any input does). Everything else they have (replica
    # counts, scaling bounds, tags) changes capacity or metadata. Preflight's plan diff and rollout
    # helper classify changes from this (preflight/diff.py `workload_restart_inputs`).
    workload_types: ClassVar[Mapping[str, tuple[str, ...] | None]]
    routing_types: ClassVar[frozenset[str]]  # resource types that split traffic between slots
    # The A/B match forms (components/rollout.py `HEADER_MATCH_FORMS`) its routing can send to one
    # slot ahead of the weighted split; settings refuse a service's header route using another.
    header_match_forms: ClassVar[frozenset[str]] = frozenset()
    # The longest header name its header condition takes (None: the model's own limit).
    header_name_max: ClassVar[int | None] = None
    # What the target offers instead when it routes no header (the README says it too).
    header_route_instead: ClassVar[str] = ""

    def __init__(self, ctx: StackContext) -> None:
        self.ctx = ctx

    @abstractmethod
    def deploy(
        self, service: ServiceSettings, plan: RolloutPlan, images: Mapping[str, pulumi.Input[str]]
    ) -> TargetEndpoints:
        """The service on this platform: one workload per slot, routing by the plan's weights."""


def cpu_cores(quantity: str) -> float:
    """A Kubernetes CPU quantity ("500m", "1") in cores."""
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def memory_gib(quantity: str) -> float:
    """A Kubernetes memory quantity ("512Mi", "2Gi") in GiB."""
    units = {"Ki": 1 / 1024**2, "Mi": 1 / 1024, "Gi": 1.0}
    return round(float(quantity[:-2]) * units[quantity[-2:]], 3)
