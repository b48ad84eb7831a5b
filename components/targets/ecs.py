"""The ECS Fargate target: one ECS service and task definition per slot behind a weighted ALB.

Routing (IaC-driven, the default): the HTTPS listener's rule forwards to one target group per slot
with the rollout's weights; a test listener (separate port) forwards to the preview slot (the idle
blue-green colour or the canary). A traffic shift changes only those listener rules and, for a
canary, the slots' autoscaling bounds: no task definition and no service's task definition
reference changes, so no task is replaced. Each ECS service has the deployment circuit breaker
with rollback for the deployments that do replace tasks (a new version in a slot).

Native (`ecs.native`): one ECS service per service whose deployment configuration makes ECS shift
traffic between the two target groups itself (BLUE_GREEN, CANARY or LINEAR with bake time). AWS
then owns the listener rules, so the program ignores changes to their actions.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Literal

import pulumi
import pulumi_aws.appautoscaling as appautoscaling
import pulumi_aws.cloudwatch as cloudwatch
import pulumi_aws.ec2 as ec2
import pulumi_aws.ecs as ecs
import pulumi_aws.elb as elb
import pulumi_aws.iam as iam
import pulumi_aws.kms as kms
import pulumi_aws.lb as lb
import pulumi_aws.s3 as s3
import pulumi_aws.wafv2 as wafv2
from pulumi_aws.get_caller_identity import get_caller_identity_output
from pulumi_aws.get_region import get_region_output
from pydantic import Field

from components.iam import document, service_role
from components.network import AwsNetwork, log_key_policy, web_acl
from components.rollout import Model as _Model
from components.rollout import RolloutPlan, SlotPlan
from components.schema import _ACM_ARN, ServiceSettings
from components.targets.base import (
    ALB_HEADER_MATCH_FORMS,
    ALB_HEADER_NAME_MAX,
    TLS_POLICY,
    ContainerSpec,
    Target,
    TargetEndpoints,
    alb_header_values,
)

if TYPE_CHECKING:
    from components.context import StackContext


class EcsNativeSettings(_Model):
    """Let ECS shift traffic itself (ECS-native blue/green, canary or linear) instead of the IaC split."""

    strategy: Literal["BLUE_GREEN", "CANARY", "LINEAR"]
    bake_time_minutes: Annotated[int, Field(ge=0, le=1440)] = 10
    canary_percent: Annotated[float, Field(ge=0.1, le=100)] = 10.0
    canary_bake_time_minutes: Annotated[int, Field(ge=0, le=1440)] = 5
    step_percent: Annotated[float, Field(ge=3, le=100)] = 10.0
    step_bake_time_minutes: Annotated[int, Field(ge=0, le=1440)] = 5


class EcsSettings(_Model):
    # ACM certificate for the HTTPS listener; without one (dev) the ALB serves plain HTTP.
    certificate_arn: Annotated[str, _ACM_ARN] | None = None
    internal: bool = False
    test_listener_port: Annotated[int, Field(ge=1024, le=65535)] = 8443
    log_retention_days: Literal[1, 3, 5, 7, 14, 30, 60, 90, 180, 365] = 30
    access_log_retention_days: Annotated[int, Field(ge=1, le=3650)] = 90
    native: EcsNativeSettings | None = None
    # A WAFv2 web ACL (AWS managed rule groups, per-IP rate limit) on each service's ALB. Unset: on in prod.
    waf: bool | None = None
    # Requests per client IP in any 5 minutes before the web ACL blocks it.
    waf_rate_limit: Annotated[int, Field(ge=10, le=2_000_000_000)] = 2000
    # Tasks reach the internet on 443 only (AWS APIs, ECR, Secrets Manager, CloudWatch Logs, through the
    # NAT); more TCP ports they may open inside the VPC, e.g. [5432] for a database in the private subnets.
    task_egress_ports: tuple[Annotated[int, Field(ge=1, le=65535)], ...] = ()

    def waf_on(self, prod: bool) -> bool:
        """Explicit, or a WAF on the services' ALBs in prod (`prod`: the stack is prod)."""
        return prod if self.waf is None else self.waf


CONTAINER = "app"
# The production listener's rules: the header route (A/B) is evaluated before the weighted split.
HEADER_RULE_PRIORITY = 90


@dataclass(frozen=True)
class EcsClusterArgs:
    settings: EcsSettings
    network: AwsNetwork
    cluster_name: str
    tags: dict[str, str] = field(default_factory=dict)
    protect: bool = False
    encrypt_logs: bool = False  # a customer-managed key for log groups (prod)
    waf: bool = False  # a WAFv2 web ACL for the services' ALBs (prod unless `ecs.waf` says otherwise)
    # The stack's permissions boundary (components/iam.py): every role made here carries it.
    permissions_boundary: pulumi.Input[str] | None = None


class EcsCluster(pulumi.ComponentResource):
    """The ECS cluster (Container Insights), the ALB access-log bucket, the log key in prod, and the web
    ACL every service's ALB is associated with where `waf` is on."""

    cluster_arn: pulumi.Output[str]
    cluster_name: pulumi.Output[str]
    log_bucket: pulumi.Output[str]
    log_key_arn: pulumi.Output[str] | None
    web_acl_arn: pulumi.Output[str] | None

    def __init__(self, name: str, args: EcsClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pouw:index:EcsCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.args = args
        self.cluster = ecs.Cluster(
            name,
            name=args.cluster_name,
            settings=[ecs.ClusterSettingArgs(name="containerInsights", value="enhanced")],
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        self.cluster_arn = self.cluster.arn
        self.cluster_name = self.cluster.name
        invoke = pulumi.InvokeOutputOptions(parent=self)
        account = get_caller_identity_output(opts=invoke).account_id
        region = get_region_output(opts=invoke).region

        self.log_key_arn = None
        if args.encrypt_logs:
            key = kms.Key(
                f"{name}-logs",
                description=f"CloudWatch logs of {args.cluster_name}",
                enable_key_rotation=True,
                deletion_window_in_days=30,
                policy=pulumi.Output.all(account, region).apply(
                    lambda a: log_key_policy(a[0], a[1], f"arn:aws:logs:{a[1]}:{a[0]}:*")
                ),
                tags=args.tags,
                opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
            )
            self.log_key_arn = key.arn
        self.web_acl_arn = (
            web_acl(f"{name}-waf", args.settings.waf_rate_limit, args.tags, self).arn if args.waf else None
        )

        bucket = s3.Bucket(
            f"{name}-alb-logs",
            force_destroy=not args.protect,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        s3.BucketPublicAccessBlock(
            f"{name}-alb-logs",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        s3.BucketOwnershipControls(
            f"{name}-alb-logs",
            bucket=bucket.id,
            rule=s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        # ALB access logs support SSE-S3 only.
        s3.BucketServerSideEncryptionConfiguration(
            f"{name}-alb-logs",
            bucket=bucket.id,
            rules=[
                s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="AES256"
                    )
                )
            ],
            opts=child,
        )
        s3.BucketLifecycleConfiguration(
            f"{name}-alb-logs",
            bucket=bucket.id,
            rules=[
                s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-access-logs",
                    status="Enabled",
                    filter=s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    expiration=s3.BucketLifecycleConfigurationRuleExpirationArgs(
                        days=args.settings.access_log_retention_days
                    ),
                    # ALB log delivery writes whole objects; anything left half-uploaded is garbage.
                    abort_incomplete_multipart_upload=s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=7
                    ),
                )
            ],
            opts=child,
        )
        elb_account = elb.get_service_account_output(opts=invoke).arn
        s3.BucketPolicy(
            f"{name}-alb-logs",
            bucket=bucket.id,
            policy=pulumi.Output.all(bucket.arn, elb_account, account).apply(
                lambda a: _access_log_policy(a[0], a[1], a[2])
            ),
            opts=child,
        )
        self.log_bucket = bucket.id

        self.infrastructure_role_arn: pulumi.Output[str] | None = None
        if args.settings.native is not None:
            role, _ = service_role(
                f"{name}-infrastructure",
                "ecs.amazonaws.com",
                ["service-role/AmazonECSInfrastructureRolePolicyForLoadBalancers"],
                args.tags,
                self,
                args.permissions_boundary,
            )
            self.infrastructure_role_arn = role.arn
        self.register_outputs({"clusterName": self.cluster_name})


def _access_log_policy(bucket_arn: str, elb_account_arn: str, account: str) -> str:
    target = f"{bucket_arn}/alb/AWSLogs/{account}/*"
    return document(
        [
            {
                "Effect": "Allow",
                "Principal": {"AWS": elb_account_arn},
                "Action": "s3:PutObject",
                "Resource": target,
            },
            {
                "Effect": "Allow",
                "Principal": {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"},
                "Action": "s3:PutObject",
                "Resource": target,
            },
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ]
    )


@dataclass(frozen=True)
class EcsServiceArgs:
    service: ServiceSettings
    plan: RolloutPlan
    images: Mapping[str, pulumi.Input[str]]  # slot name -> digest-pinned image ref
    cluster: EcsCluster
    network: AwsNetwork
    settings: EcsSettings
    vpc_cidr: str
    tags: dict[str, str] = field(default_factory=dict)
    protect: bool = False
    # The stack's permissions boundary (components/iam.py): every role made here carries it.
    permissions_boundary: pulumi.Input[str] | None = None


def container_definition(
    service: ServiceSettings, slot: SlotPlan, image: str, log_group: str, region: str
) -> str:
    """One container: non-root, read-only root, not privileged, secrets only through `secrets`."""
    command = list(service.health_command or ())
    if not command:
        url = f"http://127.0.0.1:{service.port}{service.health_path}"
        command = [
            "CMD",
            "python",
            "-c",
            f"import urllib.request; urllib.request.urlopen('{url}', timeout=2)",
        ]
    spec = ContainerSpec.of(service, slot)
    return json.dumps(
        [
            {
                "name": CONTAINER,
                "image": image,
                "essential": True,
                "user": spec.user,
                "privileged": False,
                "readonlyRootFilesystem": True,
                "portMappings": [{"containerPort": service.port, "protocol": "tcp"}],
                "environment": [{"name": k, "value": v} for k, v in spec.sorted_environment()],
                "secrets": [{"name": k, "valueFrom": v} for k, v in sorted(service.runtime_secrets.items())],
                "mountPoints": [{"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False}],
                "linuxParameters": {"initProcessEnabled": True, "capabilities": {"drop": ["ALL"]}},
                "healthCheck": {
                    "command": command,
                    "interval": 15,
                    "timeout": 5,
                    "retries": 3,
                    "startPeriod": 10,
                },
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": log_group,
                        "awslogs-region": region,
                        "awslogs-stream-prefix": slot.workload,
                    },
                },
            }
        ],
        sort_keys=True,
    )


def _definition(service: ServiceSettings, slot: SlotPlan, values: list[str]) -> str:
    image, log_group, region = values
    return container_definition(service, slot, image, log_group, region)


def forward(groups: Mapping[str, pulumi.Input[str]], weights: Mapping[str, int]) -> lb.ListenerRuleActionArgs:
    """A weighted forward over the slots' target groups."""
    return lb.ListenerRuleActionArgs(
        type="forward",
        forward=lb.ListenerRuleActionForwardArgs(
            target_groups=[
                lb.ListenerRuleActionForwardTargetGroupArgs(arn=groups[slot], weight=weight)
                for slot, weight in weights.items()
            ]
        ),
    )


class EcsService(pulumi.ComponentResource):
    """One service on ECS Fargate: logs, roles, security groups, ALB, and per slot a task definition,
    an ECS service with circuit-breaker rollback and CPU autoscaling within the slot's bounds."""

    endpoints: TargetEndpoints

    def __init__(self, name: str, args: EcsServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pouw:index:EcsService", name, None, opts)
        svc = args.service
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        tags = args.tags
        region = get_region_output(opts=pulumi.InvokeOutputOptions(parent=self)).region

        log_group = cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/pouw/ecs/{svc.name}",
            retention_in_days=s.log_retention_days,
            kms_key_id=args.cluster.log_key_arn,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        execution_role, task_role = self._roles(name, svc, tags, args.permissions_boundary)

        # Security groups: the ALB takes HTTP(S) (and the test port) in; tasks take only the ALB. Every
        # rule says what it is for (CKV_AWS_23).
        sources = [args.vpc_cidr] if s.internal else ["0.0.0.0/0"]
        public_ports = [443, 80] if s.certificate_arn else [80]
        purpose = {
            443: "HTTPS: the service's listener",
            80: "HTTP: redirects to HTTPS"
            if s.certificate_arn
            else "HTTP: the service's listener (no certificate)",
        }
        alb_sg = ec2.SecurityGroup(
            f"{name}-alb",
            vpc_id=args.network.vpc_id,
            description=f"ALB of {svc.name}",
            ingress=[
                ec2.SecurityGroupIngressArgs(
                    protocol="tcp", from_port=p, to_port=p, cidr_blocks=sources, description=purpose[p]
                )
                for p in public_ports
            ]
            + [
                ec2.SecurityGroupIngressArgs(
                    protocol="tcp",
                    from_port=s.test_listener_port,
                    to_port=s.test_listener_port,
                    cidr_blocks=[args.vpc_cidr],
                    description="preview listener: inside the VPC only",
                )
            ],
            egress=[
                ec2.SecurityGroupEgressArgs(
                    protocol="tcp",
                    from_port=svc.port,
                    to_port=svc.port,
                    cidr_blocks=[args.vpc_cidr],
                    description="to the tasks' container port",
                )
            ],
            tags=tags,
            opts=child,
        )
        # Task egress (CKV_AWS_382): HTTPS to anywhere is the floor, since Fargate pulls the image from ECR,
        # reads Secrets Manager and writes CloudWatch Logs over the task's own interface through the
        # NAT (no VPC endpoints here); other ports only inside the VPC, and only those settings name.
        # DNS to the VPC resolver is not subject to security groups.
        task_sg = ec2.SecurityGroup(
            f"{name}-tasks",
            vpc_id=args.network.vpc_id,
            description=f"Tasks of {svc.name}",
            ingress=[
                ec2.SecurityGroupIngressArgs(
                    protocol="tcp",
                    from_port=svc.port,
                    to_port=svc.port,
                    security_groups=[alb_sg.id],
                    description="from the ALB only",
                )
            ],
            egress=[
                ec2.SecurityGroupEgressArgs(
                    protocol="tcp",
                    from_port=443,
                    to_port=443,
                    cidr_blocks=["0.0.0.0/0"],
                    description="HTTPS: ECR, Secrets Manager, CloudWatch Logs and other AWS APIs",
                )
            ]
            + [
                ec2.SecurityGroupEgressArgs(
                    protocol="tcp",
                    from_port=p,
                    to_port=p,
                    cidr_blocks=[args.vpc_cidr],
                    description=f"tcp/{p} inside the VPC (ecs.taskEgressPorts)",
                )
                for p in s.task_egress_ports
            ],
            tags=tags,
            opts=child,
        )
        alb = lb.LoadBalancer(
            f"{name}-alb",
            load_balancer_type="application",
            internal=s.internal,
            security_groups=[alb_sg.id],
            subnets=args.network.private_subnet_ids if s.internal else args.network.public_subnet_ids,
            drop_invalid_header_fields=True,
            enable_deletion_protection=args.protect,
            access_logs=lb.LoadBalancerAccessLogsArgs(
                bucket=args.cluster.log_bucket, prefix="alb", enabled=True
            ),
            tags=tags,
            # prod: deletion protection in AWS, and in Pulumi so a rename shows up as a refused delete.
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        if args.cluster.web_acl_arn is not None:
            wafv2.WebAclAssociation(
                f"{name}-waf", resource_arn=alb.arn, web_acl_arn=args.cluster.web_acl_arn, opts=child
            )
        native = s.native is not None
        # Native ECS blue/green shifts between two target groups whatever the rollout says. Otherwise
        # one target group per workload: a strategy switch that keeps the live workload keeps its group.
        group_slots = ["blue", "green"] if native else [slot.workload for slot in args.plan.slots]
        groups = {
            slot: lb.TargetGroup(
                f"{name}-{slot}",
                port=svc.port,
                protocol="HTTP",
                target_type="ip",
                vpc_id=args.network.vpc_id,
                deregistration_delay=30,
                health_check=lb.TargetGroupHealthCheckArgs(
                    path=svc.health_path,
                    matcher="200",
                    interval=15,
                    healthy_threshold=2,
                    unhealthy_threshold=3,
                ),
                tags={**tags, "slot": slot},
                opts=child,
            ).arn
            for slot in group_slots
        }
        main, test = self._listeners(name, alb, s, tags)
        everywhere = [
            lb.ListenerRuleConditionArgs(path_pattern=lb.ListenerRuleConditionPathPatternArgs(values=["/*"]))
        ]
        plan = args.plan
        if native:
            # ECS rewrites these rules' actions during a deployment; IaC must not fight it. The one
            # service names both rules, so they exist before it.
            native_opts = pulumi.ResourceOptions(parent=self, ignore_changes=["actions"])
            main_rule = lb.ListenerRule(
                f"{name}-traffic",
                listener_arn=main.arn,
                priority=100,
                actions=[forward(groups, {"blue": 100, "green": 0})],
                conditions=everywhere,
                tags=tags,
                opts=native_opts,
            )
            test_rule = lb.ListenerRule(
                f"{name}-preview",
                listener_arn=test.arn,
                priority=100,
                actions=[forward(groups, {"green": 100})],
                conditions=everywhere,
                tags=tags,
                opts=native_opts,
            )
            preview_slot: str | None = "green"
            running = [SlotPlan("main", svc.version, 100, False, svc.replicas.min, svc.replicas.max)]
        else:
            # The test listener's rule attaches every workload's target group to the ALB (ECS refuses a
            # service whose group has no load balancer) and sends preview traffic to the idle slot or
            # the canary; the production rule shifts traffic only after every service is steady, so a
            # new slot's tasks are healthy in their group before any user request reaches them.
            preview_slot = plan.preview_slot
            attach = {
                slot.workload: 100 if slot.name == (preview_slot or plan.stable_slot) else 0
                for slot in plan.slots
            }
            test_rule = lb.ListenerRule(
                f"{name}-preview",
                listener_arn=test.arn,
                priority=100,
                actions=[forward(groups, attach)],
                conditions=everywhere,
                tags=tags,
                opts=child,
            )
            running = list(plan.slots)
        services: list[ecs.Service] = []
        for slot in running:
            task = ecs.TaskDefinition(
                f"{name}-{slot.workload}",
                family=f"{svc.name}-{slot.workload}",
                requires_compatibilities=["FARGATE"],
                network_mode="awsvpc",
                cpu=str(svc.fargate.cpu),
                memory=str(svc.fargate.memory),
                runtime_platform=ecs.TaskDefinitionRuntimePlatformArgs(
                    operating_system_family="LINUX", cpu_architecture="X86_64"
                ),
                execution_role_arn=execution_role.arn,
                task_role_arn=task_role.arn,
                volumes=[ecs.TaskDefinitionVolumeArgs(name="tmp")],
                container_definitions=pulumi.Output.all(
                    args.images["main" if native else slot.name], log_group.name, region
                ).apply(functools.partial(_definition, svc, slot)),
                tags={**tags, "slot": slot.workload},
                opts=child,
            )
            load_balancer = ecs.ServiceLoadBalancerArgs(
                container_name=CONTAINER,
                container_port=svc.port,
                target_group_arn=groups["blue" if native else slot.workload],
                advanced_configuration=(
                    ecs.ServiceLoadBalancerAdvancedConfigurationArgs(
                        alternate_target_group_arn=groups["green"],
                        production_listener_rule=main_rule.arn,
                        test_listener_rule=test_rule.arn,
                        role_arn=args.cluster.infrastructure_role_arn or "",
                    )
                    if native
                    else None
                ),
            )
            service = ecs.Service(
                f"{name}-{slot.workload}",
                name=f"{svc.name}-{slot.workload}",
                cluster=args.cluster.cluster_arn,
                task_definition=task.arn,
                launch_type="FARGATE",
                platform_version="LATEST",
                # Autoscaling owns the count from here on; a constant keeps weight changes off this resource.
                desired_count=1,
                network_configuration=ecs.ServiceNetworkConfigurationArgs(
                    subnets=args.network.private_subnet_ids,
                    security_groups=[task_sg.id],
                    assign_public_ip=False,
                ),
                load_balancers=[load_balancer],
                health_check_grace_period_seconds=30,
                deployment_circuit_breaker=ecs.ServiceDeploymentCircuitBreakerArgs(
                    enable=True, rollback=True
                ),
                deployment_configuration=self._native_deployment(s) if native else None,
                deployment_minimum_healthy_percent=100,
                deployment_maximum_percent=200,
                enable_execute_command=False,
                propagate_tags="SERVICE",
                # `pulumi up` returns only once the tasks are running and healthy (native deployments
                # bake on their own schedule, so they are not waited for).
                wait_for_steady_state=None if native else True,
                tags={**tags, "slot": slot.workload},
                opts=pulumi.ResourceOptions(
                    parent=self,
                    ignore_changes=["desiredCount"],
                    depends_on=[main_rule if native else test_rule],
                ),
            )
            services.append(service)
            target = appautoscaling.Target(
                f"{name}-{slot.workload}",
                service_namespace="ecs",
                scalable_dimension="ecs:service:DesiredCount",
                resource_id=pulumi.Output.concat("service/", args.cluster.cluster_name, "/", service.name),
                min_capacity=slot.min_replicas,
                max_capacity=slot.max_replicas,
                opts=child,
            )
            appautoscaling.Policy(
                f"{name}-{slot.workload}-cpu",
                policy_type="TargetTrackingScaling",
                service_namespace=target.service_namespace,
                scalable_dimension=target.scalable_dimension,
                resource_id=target.resource_id,
                target_tracking_scaling_policy_configuration=appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationArgs(
                    target_value=70,
                    predefined_metric_specification=appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationPredefinedMetricSpecificationArgs(
                        predefined_metric_type="ECSServiceAverageCPUUtilization"
                    ),
                    scale_in_cooldown=120,
                    scale_out_cooldown=30,
                ),
                opts=child,
            )

        if not native and plan.header_route is not None:
            # The A/B rule: ahead of the weighted one (a lower number is evaluated first), every match
            # an http-header condition (ANDed), forwarding to the one slot's target group only.
            header = plan.header_route
            lb.ListenerRule(
                f"{name}-header",
                listener_arn=main.arn,
                priority=HEADER_RULE_PRIORITY,
                actions=[forward(groups, {plan.workload(header.slot): 100})],
                conditions=[
                    *everywhere,
                    *(
                        lb.ListenerRuleConditionArgs(
                            http_header=lb.ListenerRuleConditionHttpHeaderArgs(
                                http_header_name=m.name, values=alb_header_values(m)
                            )
                        )
                        for m in header.matches
                    ),
                ],
                tags=tags,
                opts=pulumi.ResourceOptions(parent=self, depends_on=services),
            )
        if not native:
            lb.ListenerRule(
                f"{name}-traffic",
                listener_arn=main.arn,
                priority=100,
                actions=[forward(groups, {slot.workload: slot.weight for slot in plan.slots})],
                conditions=everywhere,
                tags=tags,
                opts=pulumi.ResourceOptions(parent=self, depends_on=services),
            )

        scheme = "https" if s.certificate_arn else "http"
        self.endpoints = TargetEndpoints(
            url=pulumi.Output.concat(scheme, "://", alb.dns_name),
            preview_url=(
                pulumi.Output.concat(scheme, "://", alb.dns_name, f":{s.test_listener_port}")
                if preview_slot is not None
                else None
            ),
            weights={"ecs-native": 100} if native else args.plan.weights,
            images=dict(args.images),
        )
        self.register_outputs(self.endpoints.as_outputs())

    def _roles(
        self, name: str, svc: ServiceSettings, tags: dict[str, str], boundary: pulumi.Input[str] | None
    ) -> tuple[iam.Role, iam.Role]:
        """Execution role: pull from ECR (read-only), write logs, read this service's secrets. Task
        role: what the application itself may call (nothing yet)."""
        child = pulumi.ResourceOptions(parent=self)
        execution, _ = service_role(
            f"{name}-execution",
            "ecs-tasks.amazonaws.com",
            ["service-role/AmazonECSTaskExecutionRolePolicy"],
            tags,
            self,
            boundary,
        )
        if svc.runtime_secrets:
            arns = sorted(set(svc.runtime_secrets.values()))
            iam.RolePolicy(
                f"{name}-execution-secrets",
                role=execution.id,
                policy=document(
                    [
                        {
                            "Effect": "Allow",
                            "Action": ["secretsmanager:GetSecretValue", "ssm:GetParameters"],
                            "Resource": arns,
                        }
                    ]
                ),
                opts=child,
            )
        task, _ = service_role(f"{name}-task", "ecs-tasks.amazonaws.com", [], tags, self, boundary)
        return execution, task

    def _listeners(
        self, name: str, alb: lb.LoadBalancer, s: EcsSettings, tags: dict[str, str]
    ) -> tuple[lb.Listener, lb.Listener]:
        """The production listener (HTTPS, with HTTP redirecting to it) and the test listener."""
        child = pulumi.ResourceOptions(parent=self)
        not_found = lb.ListenerDefaultActionArgs(
            type="fixed-response",
            fixed_response=lb.ListenerDefaultActionFixedResponseArgs(
                content_type="text/plain", status_code="404", message_body="not found"
            ),
        )
        secure = s.certificate_arn is not None

        def listener(
            suffix: str, port: int, actions: list[lb.ListenerDefaultActionArgs], tls: bool
        ) -> lb.Listener:
            return lb.Listener(
                f"{name}-{suffix}",
                load_balancer_arn=alb.arn,
                port=port,
                protocol="HTTPS" if tls else "HTTP",
                ssl_policy=TLS_POLICY if tls else None,
                certificate_arn=s.certificate_arn if tls else None,
                default_actions=actions,
                tags=tags,
                opts=child,
            )

        main = listener("https" if secure else "http", 443 if secure else 80, [not_found], secure)
        if secure:
            redirect = lb.ListenerDefaultActionArgs(
                type="redirect",
                redirect=lb.ListenerDefaultActionRedirectArgs(
                    port="443", protocol="HTTPS", status_code="HTTP_301"
                ),
            )
            listener("http", 80, [redirect], tls=False)
        test = listener("test", s.test_listener_port, [not_found], secure)
        return main, test

    @staticmethod
    def _native_deployment(s: EcsSettings) -> ecs.ServiceDeploymentConfigurationArgs:
        native = s.native
        assert native is not None
        return ecs.ServiceDeploymentConfigurationArgs(
            strategy=native.strategy,
            bake_time_in_minutes=str(native.bake_time_minutes),
            canary_configuration=(
                ecs.ServiceDeploymentConfigurationCanaryConfigurationArgs(
                    canary_percent=native.canary_percent,
                    canary_bake_time_in_minutes=str(native.canary_bake_time_minutes),
                )
                if native.strategy == "CANARY"
                else None
            ),
            linear_configuration=(
                ecs.ServiceDeploymentConfigurationLinearConfigurationArgs(
                    step_percent=native.step_percent,
                    step_bake_time_in_minutes=str(native.step_bake_time_minutes),
                )
                if native.strategy == "LINEAR"
                else None
            ),
        )


class EcsTarget(Target):
    """ECS Fargate: the environment's cluster (in the shared VPC), a service and target group per slot
    behind a weighted ALB listener rule (or ECS-native deployments)."""

    key = "ecs"
    settings_key = "ecs"
    settings_model = EcsSettings
    registry = "ecr"
    needs_network = True
    workload_types = {
        # Immutable: every change registers a new revision, and the service rolls its tasks onto it.
        "aws:ecs/taskDefinition:TaskDefinition": None,
        "aws:ecs/service:Service": (
            "taskDefinition",
            "networkConfiguration",
            "loadBalancers",
            "platformVersion",
            "capacityProviderStrategies",
            "forceNewDeployment",
        ),
    }
    routing_types = frozenset({"aws:lb/listenerRule:ListenerRule"})
    header_match_forms = ALB_HEADER_MATCH_FORMS
    header_name_max = ALB_HEADER_NAME_MAX

    def __init__(self, ctx: StackContext) -> None:
        super().__init__(ctx)
        s = ctx.settings
        assert s.ecs is not None and ctx.network is not None and s.network is not None
        self.settings = s.ecs
        self.network = ctx.network
        self.vpc_cidr = s.network.cidr
        self.cluster = EcsCluster(
            "ecs",
            EcsClusterArgs(
                settings=s.ecs,
                network=ctx.network,
                cluster_name=ctx.cluster_name,
                tags=s.tags(),
                protect=ctx.protect,
                encrypt_logs=s.is_prod,
                waf=s.ecs.waf_on(s.is_prod),
                permissions_boundary=ctx.boundary,
            ),
        )

    def deploy(
        self, service: ServiceSettings, plan: RolloutPlan, images: Mapping[str, pulumi.Input[str]]
    ) -> TargetEndpoints:
        return EcsService(
            f"{service.name}-ecs",
            EcsServiceArgs(
                service=service,
                plan=plan,
                images=images,
                cluster=self.cluster,
                network=self.network,
                settings=self.settings,
                vpc_cidr=self.vpc_cidr,
                tags=self.ctx.settings.tags(service.name),
                protect=self.ctx.protect,
                permissions_boundary=self.ctx.boundary,
            ),
        ).endpoints
