"""The Azure Container Instances target: one container group per slot behind Azure Front Door.

ACI has no traffic splitter, so a Front Door (Standard/Premium) origin group stands in front: one
origin per slot with the rollout's weight. Blue-green keeps the idle origin disabled and exposes the
idle container group's own FQDN as the preview URL. A weight change or a switch changes only origins
(weight, enabled state), never a container group.

Front Door only spreads traffic by weight among origins whose probe latency falls within
`additional_latency_in_milliseconds` of the fastest one, so the origin group sets it wide
(`aci.additionalLatencyMs`, 1000 by default): otherwise a slightly faster slot would take it all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Literal

import pulumi
import pulumi_azure_native.authorization as authorization
import pulumi_azure_native.cdn as cdn
import pulumi_azure_native.containerinstance as containerinstance
import pulumi_azure_native.managedidentity as managedidentity
from pydantic import Field

from components.registry import AcrRegistry
from components.rollout import HeaderMatch, RolloutPlan, SlotPlan
from components.rollout import Model as _Model
from components.schema import _SUBNET_ID, ServiceSettings
from components.targets.base import ContainerSpec, Target, TargetEndpoints, cpu_cores, memory_gib

if TYPE_CHECKING:
    from components.context import StackContext


class AciSettings(_Model):
    front_door_sku: Literal["Standard_AzureFrontDoor", "Premium_AzureFrontDoor"] = "Standard_AzureFrontDoor"
    # Front Door only weights origins within this latency band of the fastest one: keep it wide so the
    # rollout's weights, not probe latency, decide the split.
    additional_latency_ms: Annotated[int, Field(ge=0, le=1000)] = 1000
    # A delegated subnet: container groups get private IPs (Front Door Premium + Private Link in front).
    subnet_id: Annotated[str, _SUBNET_ID] | None = None


ACR_PULL_ROLE = "7f951dda-4ed3-4680-a7ca-43fe172d538d"  # built-in AcrPull
MAX_ORIGIN_WEIGHT = 1000


@dataclass(frozen=True)
class FrontDoorArgs:
    settings: AciSettings
    resource_group_name: pulumi.Input[str]
    environment: str
    tags: dict[str, str] = field(default_factory=dict)
    protect: bool = False  # prod: deleting the profile takes every ACI service's traffic down


class FrontDoor(pulumi.ComponentResource):
    """The environment's Azure Front Door profile; each ACI service adds an endpoint to it."""

    profile_name: pulumi.Output[str]

    def __init__(self, name: str, args: FrontDoorArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pouw:index:FrontDoor", name, None, opts)
        self.profile = cdn.Profile(
            name,
            profile_name=f"pouw-{args.environment}",
            resource_group_name=args.resource_group_name,
            location="Global",
            sku=cdn.SkuArgs(name=args.settings.front_door_sku),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        self.profile_name = self.profile.name
        self.register_outputs({"profileName": self.profile_name})


def origin_weight(slot: SlotPlan) -> tuple[int, str]:
    """Front Door weights are 1..1000 and cannot be 0: a 0% slot is a disabled origin."""
    if slot.weight == 0:
        return 1, "Disabled"
    return max(1, slot.weight * MAX_ORIGIN_WEIGHT // 100), "Enabled"


# Front Door rule conditions (RequestHeader, Cookies) by match kind: Equal and BeginsWith. Its RegEx
# operator is left out: the rules engine documents regular expressions only for some conditions.
FRONT_DOOR_OPERATORS = {"exact": "Equal", "prefix": "BeginsWith"}


# The rule condition and its parameters' class per match source (header or cookie), by their names in
# pulumi_azure_native.cdn: looked up when a rule is built, so that importing this module (every stack's
# program does) does not load the CDN service's input types (66 ms) for a stack without ACI.
FRONT_DOOR_CONDITIONS: dict[str, tuple[str, str]] = {
    "RequestHeader": ("DeliveryRuleRequestHeaderConditionArgs", "RequestHeaderMatchConditionParametersArgs"),
    "Cookies": ("DeliveryRuleCookiesConditionArgs", "CookiesMatchConditionParametersArgs"),
}


def rule_set_name(service: str) -> str:
    """A rule set's name takes letters and digits only (and starts with a letter), unique in the
    profile. Dropping the dashes alone would give `web-api` and `webapi` one name (the second service's
    rule set then fails to create), so a name that had dashes also ends with six digits of its hash:
    it cannot equal a dash-free name's (those end with `ab`)."""
    if "-" not in service:
        return service + "ab"
    digits = int(hashlib.sha256(service.encode()).hexdigest(), 16) % 10**6
    return f"{service.replace('-', '')}ab{digits:06d}"


def front_door_condition(
    match: HeaderMatch,
) -> cdn.DeliveryRuleRequestHeaderConditionArgs | cdn.DeliveryRuleCookiesConditionArgs:
    """One match as a Front Door rule condition: the header (or cookie) named by `selector`."""
    kind = "RequestHeader" if match.header_name is not None else "Cookies"
    condition, parameters = (getattr(cdn, name) for name in FRONT_DOOR_CONDITIONS[kind])
    made: cdn.DeliveryRuleRequestHeaderConditionArgs | cdn.DeliveryRuleCookiesConditionArgs = condition(
        name=kind,
        parameters=parameters(
            type_name=f"DeliveryRule{kind}ConditionParameters",
            operator=FRONT_DOOR_OPERATORS[match.match.kind],
            selector=match.name,
            match_values=[match.match.value],
            negate_condition=False,
        ),
    )
    return made


@dataclass(frozen=True)
class AciServiceArgs:
    service: ServiceSettings
    plan: RolloutPlan
    images: Mapping[str, pulumi.Input[str]]  # slot name -> digest-pinned image ref
    settings: AciSettings
    registry: AcrRegistry
    front_door: FrontDoor
    resource_group_name: pulumi.Input[str]
    location: str
    environment: str
    # Secure environment values (already Outputs marked secret), by variable name.
    secure_environment: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    protect: bool = False  # prod: the service's public endpoint (its host name) survives a rename


class AciService(pulumi.ComponentResource):
    """A managed identity that may only pull (AcrPull), a container group per slot, and routing."""

    endpoints: TargetEndpoints

    def __init__(self, name: str, args: AciServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pouw:index:AciService", name, None, opts)
        svc = args.service
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        rg = args.resource_group_name

        identity = managedidentity.UserAssignedIdentity(
            f"{name}-identity",
            resource_name_=f"{svc.name}-aci-{args.environment}",
            resource_group_name=rg,
            location=args.location,
            tags=args.tags,
            opts=child,
        )
        subscription = authorization.get_client_config_output(
            opts=pulumi.InvokeOutputOptions(parent=self)
        ).subscription_id
        authorization.RoleAssignment(
            f"{name}-acr-pull",
            scope=args.registry.registry_id,
            principal_id=identity.principal_id,
            principal_type="ServicePrincipal",
            role_definition_id=subscription.apply(
                lambda sub: (
                    f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{ACR_PULL_ROLE}"
                )
            ),
            opts=child,
        )

        # Container groups and origins are keyed by workload (a strategy switch that names the live
        # workload keeps both); weights and preview come from the slot's role.
        groups = {slot.name: self._container_group(name, args, slot, identity) for slot in args.plan.slots}

        endpoint = cdn.AFDEndpoint(
            f"{name}-endpoint",
            endpoint_name=f"{svc.name}-{args.environment}",
            profile_name=args.front_door.profile_name,
            resource_group_name=rg,
            location="Global",
            enabled_state="Enabled",
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        origin_group = self._origin_group(f"{name}-origins", svc.name, args, s.additional_latency_ms)
        origins = []
        fqdns = {
            slot.name: groups[slot.name].ip_address.apply(lambda ip: (ip.fqdn or ip.ip or "") if ip else "")
            for slot in args.plan.slots
        }
        for slot in args.plan.slots:
            weight, state = origin_weight(slot)
            origins.append(
                self._origin(
                    f"{name}-{slot.workload}",
                    slot.workload,
                    origin_group,
                    args,
                    fqdns[slot.name],
                    weight,
                    state,
                )
            )
        rule_sets = self._header_route(name, args, fqdns, origins)
        cdn.Route(
            f"{name}-route",
            route_name=svc.name,
            endpoint_name=endpoint.name,
            profile_name=args.front_door.profile_name,
            resource_group_name=rg,
            origin_group=cdn.ResourceReferenceArgs(id=origin_group.id),
            supported_protocols=["Http", "Https"],
            https_redirect="Enabled",
            forwarding_protocol="HttpOnly",
            link_to_default_domain="Enabled",
            patterns_to_match=["/*"],
            enabled_state="Enabled",
            rule_sets=rule_sets,
            opts=pulumi.ResourceOptions(parent=self, depends_on=origins),
        )
        preview = args.plan.preview_slot
        preview_url = (
            groups[preview].ip_address.apply(
                lambda ip: f"http://{ip.fqdn}:{svc.port}" if ip and ip.fqdn else ""
            )
            if preview
            else None
        )
        self.endpoints = TargetEndpoints(
            url=endpoint.host_name.apply(lambda host: f"https://{host}"),
            preview_url=preview_url,
            weights=args.plan.weights,
            images=dict(args.images),
        )
        self.register_outputs(self.endpoints.as_outputs())

    def _origin_group(
        self, name: str, group_name: str, args: AciServiceArgs, latency_ms: int
    ) -> cdn.AFDOriginGroup:
        """An origin group probing the service's health path (`latency_ms`: the band within which
        origins share by weight)."""
        return cdn.AFDOriginGroup(
            name,
            origin_group_name=group_name,
            profile_name=args.front_door.profile_name,
            resource_group_name=args.resource_group_name,
            load_balancing_settings=cdn.LoadBalancingSettingsParametersArgs(
                sample_size=4, successful_samples_required=3, additional_latency_in_milliseconds=latency_ms
            ),
            health_probe_settings=cdn.HealthProbeParametersArgs(
                probe_path=args.service.health_path,
                probe_protocol=cdn.ProbeProtocol.HTTP,
                probe_request_type=cdn.HealthProbeRequestType.GET,
                probe_interval_in_seconds=30,
            ),
            session_affinity_state="Disabled",
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _origin(
        self,
        name: str,
        origin_name: str,
        group: cdn.AFDOriginGroup,
        args: AciServiceArgs,
        fqdn: pulumi.Input[str],
        weight: int,
        state: str,
    ) -> cdn.AFDOrigin:
        """A container group (by its FQDN) as an origin of `group`, at `weight` and `state`."""
        return cdn.AFDOrigin(
            name,
            origin_name=origin_name,
            origin_group_name=group.name,
            profile_name=args.front_door.profile_name,
            resource_group_name=args.resource_group_name,
            host_name=fqdn,
            origin_host_header=fqdn,
            http_port=args.service.port,
            https_port=443,
            priority=1,
            weight=weight,
            enabled_state=state,
            enforce_certificate_name_check=True,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _header_route(
        self,
        name: str,
        args: AciServiceArgs,
        fqdns: Mapping[str, pulumi.Input[str]],
        origins: list[cdn.AFDOrigin],
    ) -> list[cdn.ResourceReferenceArgs] | None:
        """The header route (A/B): an origin group of the one slot (the canary; stable after a
        rollback), and a rule set whose rule sends requests meeting every match to it (a route
        configuration override), ahead of the route's weighted origin group. The rule set joins the
        route's `rule_sets`; without a header route the route has none."""
        header = args.plan.header_route
        if header is None:
            return None
        svc, rg, profile = args.service, args.resource_group_name, args.front_door.profile_name
        child = pulumi.ResourceOptions(parent=self)
        group = self._origin_group(f"{name}-header-origins", f"{svc.name}-header", args, 0)
        origin = self._origin(
            f"{name}-header-origin", "header", group, args, fqdns[header.slot], MAX_ORIGIN_WEIGHT, "Enabled"
        )
        origins.append(origin)
        rule_set = cdn.RuleSet(
            f"{name}-rules",
            rule_set_name=rule_set_name(svc.name),
            profile_name=profile,
            resource_group_name=rg,
            opts=child,
        )
        cdn.Rule(
            f"{name}-header",
            rule_name="header",
            rule_set_name=rule_set.name,
            profile_name=profile,
            resource_group_name=rg,
            order=1,
            conditions=[front_door_condition(m) for m in header.matches],
            actions=[
                cdn.DeliveryRuleRouteConfigurationOverrideActionArgs(
                    name="RouteConfigurationOverride",
                    parameters=cdn.RouteConfigurationOverrideActionParametersArgs(
                        type_name="DeliveryRuleRouteConfigurationOverrideActionParameters",
                        origin_group_override=cdn.OriginGroupOverrideArgs(
                            origin_group=cdn.ResourceReferenceArgs(id=group.id),
                            forwarding_protocol="HttpOnly",
                        ),
                    ),
                )
            ],
            match_processing_behavior="Stop",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[origin]),
        )
        return [cdn.ResourceReferenceArgs(id=rule_set.id)]

    def _container_group(
        self,
        name: str,
        args: AciServiceArgs,
        slot: SlotPlan,
        identity: managedidentity.UserAssignedIdentity,
    ) -> containerinstance.ContainerGroup:
        svc = args.service
        probe = containerinstance.ContainerProbeArgs(
            http_get=containerinstance.ContainerHttpGetArgs(
                path=svc.health_path, port=svc.port, scheme="http"
            ),
            period_seconds=10,
            failure_threshold=3,
        )
        environment = [
            containerinstance.EnvironmentVariableArgs(name=k, value=v)
            for k, v in ContainerSpec.of(svc, slot).sorted_environment()
        ]
        environment += [
            containerinstance.EnvironmentVariableArgs(name=k, secure_value=v)
            for k, v in sorted(args.secure_environment.items())
        ]
        subnet = args.settings.subnet_id
        private = subnet is not None
        port = containerinstance.PortArgs(port=svc.port, protocol="TCP")
        return containerinstance.ContainerGroup(
            f"{name}-{slot.workload}",
            container_group_name=f"{svc.name}-{slot.workload}",
            resource_group_name=args.resource_group_name,
            location=args.location,
            os_type="Linux",
            sku="Standard",
            restart_policy="Always",
            identity=containerinstance.ContainerGroupIdentityArgs(
                type=containerinstance.ResourceIdentityType.USER_ASSIGNED,
                user_assigned_identities=[identity.id],
            ),
            image_registry_credentials=[
                containerinstance.ImageRegistryCredentialArgs(
                    server=args.registry.login_server, identity=identity.id
                )
            ],
            containers=[
                containerinstance.ContainerArgs(
                    name="app",
                    image=args.images[slot.name],
                    ports=[containerinstance.ContainerPortArgs(port=svc.port, protocol="TCP")],
                    environment_variables=environment,
                    resources=containerinstance.ResourceRequirementsArgs(
                        requests=containerinstance.ResourceRequestsArgs(
                            cpu=cpu_cores(svc.resources.cpu_limit),
                            memory_in_gb=memory_gib(svc.resources.memory_limit),
                        )
                    ),
                    liveness_probe=probe,
                    readiness_probe=probe,
                )
            ],
            ip_address=containerinstance.IpAddressArgs(
                type="Private" if private else "Public",
                ports=[port],
                dns_name_label=None if private else f"{svc.name}-{slot.workload}-{args.environment}",
            ),
            subnet_ids=[containerinstance.ContainerGroupSubnetIdArgs(id=subnet)]
            if subnet is not None
            else None,
            tags={**args.tags, "slot": slot.workload},
            opts=pulumi.ResourceOptions(parent=self),
        )


class AciTarget(Target):
    """ACI: a container group per slot behind the environment's Azure Front Door, origin weights."""

    key = "aci"
    settings_key = "aci"
    settings_model = AciSettings
    registry = "acr"
    # Azure restarts every container of a group on any update of the group.
    workload_types = {"azure-native:containerinstance:ContainerGroup": None}
    routing_types = frozenset({"azure-native:cdn:AFDOrigin"})
    header_match_forms = frozenset({"header-exact", "header-prefix", "cookie-exact", "cookie-prefix"})

    def __init__(self, ctx: StackContext) -> None:
        super().__init__(ctx)
        s = ctx.settings
        assert s.aci is not None and s.azure is not None and ctx.resource_group is not None
        registry = ctx.registries["acr"]
        assert isinstance(registry, AcrRegistry)
        self.registry_ = registry
        self.resource_group_name = ctx.resource_group.name
        self.front_door = FrontDoor(
            "front-door",
            FrontDoorArgs(
                settings=s.aci,
                resource_group_name=ctx.resource_group.name,
                environment=s.environment,
                tags=s.tags(),
                protect=ctx.protect,
            ),
        )

    def deploy(
        self, service: ServiceSettings, plan: RolloutPlan, images: Mapping[str, pulumi.Input[str]]
    ) -> TargetEndpoints:
        s = self.ctx.settings
        assert s.aci is not None and s.azure is not None
        return AciService(
            f"{service.name}-aci",
            AciServiceArgs(
                service=service,
                plan=plan,
                images=images,
                settings=s.aci,
                registry=self.registry_,
                front_door=self.front_door,
                resource_group_name=self.resource_group_name,
                location=s.azure.location,
                environment=s.environment,
                secure_environment=self.ctx.secrets(service.azure_secure_environment),
                tags=s.tags(service.name),
                protect=self.ctx.protect,
            ),
        ).endpoints
