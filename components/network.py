"""The AWS network that EKS and ECS run in: a VPC with public and private subnets per zone.

Workloads and nodes live in private subnets; only load balancers and NAT gateways are public. The
subnets carry the tags the AWS Load Balancer Controller uses to find them. VPC flow logs go to
CloudWatch (kept a year and encrypted with their own key in prod), and the default security group
allows nothing. The log-key policy and the regional web ACL that ECS and EKS put in front of their
public load balancers live here too, next to the network they protect.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pulumi
import pulumi_aws.cloudwatch as cloudwatch
import pulumi_aws.ec2 as ec2
import pulumi_aws.iam as iam
import pulumi_aws.kms as kms
import pulumi_aws.wafv2 as wafv2
from pulumi_aws.get_caller_identity import get_caller_identity_output
from pulumi_aws.get_region import get_region_output

from components.iam import document, service_role
from components.schema import NetworkSettings


@dataclass(frozen=True)
class AwsNetworkArgs:
    settings: NetworkSettings
    cluster_name: str | None = None  # tags subnets for EKS load balancer discovery
    tags: dict[str, str] = field(default_factory=dict)
    # prod: the VPC, its subnets and the flow-log group (deleting them takes every workload down or
    # loses the network's audit trail) are protected.
    protect: bool = False
    flow_log_retention_days: int = 30
    encrypt_logs: bool = False  # the flow logs under a customer-managed key (prod)
    # The stack's permissions boundary (components/iam.py): every role made here carries it.
    permissions_boundary: pulumi.Input[str] | None = None


# The AWS managed rule groups every public entry point gets: OWASP-style common rules, known bad
# inputs (Log4j, exploit paths), and Amazon's IP reputation list (AWS WAF Developer Guide, "AWS Managed
# Rules rule groups list": docs.aws.amazon.com/waf/latest/developerguide/aws-managed-rule-groups-list.html).
MANAGED_RULE_GROUPS = (
    "AWSManagedRulesCommonRuleSet",
    "AWSManagedRulesKnownBadInputsRuleSet",
    "AWSManagedRulesAmazonIpReputationList",
)


def log_key_policy(account: str, region: str, log_groups: str) -> str:
    """A log key's policy: the account administers it; CloudWatch Logs in this region may use it, only
    for the log groups `log_groups` (an ARN pattern) names, as the CloudWatch Logs User Guide's key
    policy says (docs.aws.amazon.com/AmazonCloudWatch/latest/logs/encrypt-log-data-kms.html)."""
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
                "Sid": "CloudWatchLogsEncrypt",
                "Effect": "Allow",
                "Principal": {"Service": f"logs.{region}.amazonaws.com"},
                "Action": [
                    "kms:Encrypt",
                    "kms:Decrypt",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                "Resource": "*",
                "Condition": {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": log_groups}},
            },
        ]
    )


def log_key(
    name: str, description: str, log_group: str, tags: dict[str, str], parent: pulumi.Resource, protect: bool
) -> kms.Key:
    """A customer-managed key for the log group named `log_group` (protected with it: without the key
    its logs cannot be read)."""
    invoke = pulumi.InvokeOutputOptions(parent=parent)
    account = get_caller_identity_output(opts=invoke).account_id
    region = get_region_output(opts=invoke).region
    return kms.Key(
        name,
        description=description,
        enable_key_rotation=True,
        deletion_window_in_days=30,
        policy=pulumi.Output.all(account, region).apply(
            lambda a: log_key_policy(a[0], a[1], f"arn:aws:logs:{a[1]}:{a[0]}:log-group:{log_group}")
        ),
        tags=tags,
        opts=pulumi.ResourceOptions(parent=parent, protect=protect),
    )


def _rule_metrics(metric: str) -> wafv2.WebAclRuleVisibilityConfigArgs:
    return wafv2.WebAclRuleVisibilityConfigArgs(
        cloudwatch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=True
    )


def web_acl(name: str, rate_limit: int, tags: dict[str, str], parent: pulumi.Resource) -> wafv2.WebAcl:
    """A regional WAFv2 web ACL for public Application Load Balancers: allow by default, block what
    the AWS managed rule groups match and any client IP above `rate_limit` requests per 5 minutes."""
    rules: list[wafv2.WebAclRuleArgs] = [
        wafv2.WebAclRuleArgs(
            name=group,
            priority=10 * (i + 1),
            # none: the rule groups' own actions (block) apply, not count.
            override_action=wafv2.WebAclRuleOverrideActionArgs(
                none=wafv2.WebAclRuleOverrideActionNoneArgs()  # type: ignore[no-untyped-call]
            ),
            statement=wafv2.WebAclRuleStatementArgs(
                managed_rule_group_statement=wafv2.WebAclRuleStatementManagedRuleGroupStatementArgs(
                    name=group, vendor_name="AWS"
                )
            ),
            visibility_config=_rule_metrics(f"{name}-{group}"),
        )
        for i, group in enumerate(MANAGED_RULE_GROUPS)
    ]
    rules.append(
        wafv2.WebAclRuleArgs(
            name="rate-limit-per-ip",
            priority=10 * (len(MANAGED_RULE_GROUPS) + 1),
            action=wafv2.WebAclRuleActionArgs(block=wafv2.WebAclRuleActionBlockArgs()),
            statement=wafv2.WebAclRuleStatementArgs(
                rate_based_statement=wafv2.WebAclRuleStatementRateBasedStatementArgs(
                    aggregate_key_type="IP", limit=rate_limit
                )
            ),
            visibility_config=_rule_metrics(f"{name}-rate-limit"),
        )
    )
    return wafv2.WebAcl(
        name,
        scope="REGIONAL",
        description=f"Public load balancers of {name}",
        default_action=wafv2.WebAclDefaultActionArgs(allow=wafv2.WebAclDefaultActionAllowArgs()),
        rules=rules,
        visibility_config=wafv2.WebAclVisibilityConfigArgs(
            cloudwatch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=True
        ),
        tags=tags,
        opts=pulumi.ResourceOptions(parent=parent),
    )


def subnet_cidrs(vpc_cidr: str, zones: int) -> tuple[list[str], list[str]]:
    """/20 private subnets from the bottom of the VPC range, /20 public ones from its middle."""
    blocks = [str(b) for b in ipaddress.ip_network(vpc_cidr).subnets(new_prefix=20)]
    return blocks[:zones], blocks[8 : 8 + zones]


class AwsNetwork(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    private_subnet_ids: list[pulumi.Output[str]]
    public_subnet_ids: list[pulumi.Output[str]]
    # The public addresses of the NAT gateways: everything in the private subnets (nodes, pods, the
    # in-network CI runners) reaches the internet from these, so other clouds can allow-list them.
    nat_public_ips: list[pulumi.Output[str]]

    def __init__(self, name: str, args: AwsNetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pouw:index:AwsNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        stateful = pulumi.ResourceOptions(parent=self, protect=args.protect)
        s = args.settings
        tags = dict(args.tags)

        self.vpc = ec2.Vpc(
            name,
            cidr_block=s.cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={**tags, "Name": name},
            opts=stateful,
        )
        ec2.DefaultSecurityGroup(f"{name}-default-sg", vpc_id=self.vpc.id, tags=tags, opts=child)
        self._flow_logs(name, args, child)

        gateway = ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id, tags=tags, opts=child)
        public_table = ec2.RouteTable(
            f"{name}-public",
            vpc_id=self.vpc.id,
            routes=[ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=gateway.id)],
            tags=tags,
            opts=child,
        )
        private_cidrs, public_cidrs = subnet_cidrs(s.cidr, len(s.availability_zones))
        elb_tags = {f"kubernetes.io/cluster/{args.cluster_name}": "shared"} if args.cluster_name else {}
        public = []
        private = []
        for i, zone in enumerate(s.availability_zones):
            public.append(
                ec2.Subnet(
                    f"{name}-public-{zone}",
                    vpc_id=self.vpc.id,
                    cidr_block=public_cidrs[i],
                    availability_zone=zone,
                    map_public_ip_on_launch=False,
                    tags={**tags, **elb_tags, "Name": f"{name}-public-{zone}", "kubernetes.io/role/elb": "1"},
                    opts=stateful,
                )
            )
            ec2.RouteTableAssociation(
                f"{name}-public-{zone}", subnet_id=public[i].id, route_table_id=public_table.id, opts=child
            )
            private.append(
                ec2.Subnet(
                    f"{name}-private-{zone}",
                    vpc_id=self.vpc.id,
                    cidr_block=private_cidrs[i],
                    availability_zone=zone,
                    map_public_ip_on_launch=False,
                    tags={
                        **tags,
                        **elb_tags,
                        "Name": f"{name}-private-{zone}",
                        "kubernetes.io/role/internal-elb": "1",
                    },
                    opts=stateful,
                )
            )

        nats = []
        self.nat_public_ips = []
        nat_zones = {"none": 0, "single": 1, "perAz": len(s.availability_zones)}[s.nat_gateways]
        for i in range(nat_zones):
            zone = s.availability_zones[i]
            eip = ec2.Eip(f"{name}-nat-{zone}", domain="vpc", tags=tags, opts=child)
            self.nat_public_ips.append(eip.public_ip)
            nats.append(
                ec2.NatGateway(
                    f"{name}-nat-{zone}", allocation_id=eip.id, subnet_id=public[i].id, tags=tags, opts=child
                )
            )
        for i, zone in enumerate(s.availability_zones):
            routes = (
                [ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nats[i % len(nats)].id)]
                if nats
                else []
            )
            table = ec2.RouteTable(
                f"{name}-private-{zone}", vpc_id=self.vpc.id, routes=routes, tags=tags, opts=child
            )
            ec2.RouteTableAssociation(
                f"{name}-private-{zone}", subnet_id=private[i].id, route_table_id=table.id, opts=child
            )

        self.vpc_id = self.vpc.id
        self.private_subnet_ids = [sn.id for sn in private]
        self.public_subnet_ids = [sn.id for sn in public]
        self.register_outputs({"vpcId": self.vpc_id})

    def _flow_logs(self, name: str, args: AwsNetworkArgs, child: pulumi.ResourceOptions) -> None:
        group_name = f"/pouw/{name}/flow-logs"
        key = (
            log_key(f"{name}-logs", f"VPC flow logs of {name}", group_name, args.tags, self, args.protect)
            if args.encrypt_logs
            else None
        )
        retention = args.flow_log_retention_days
        group = cloudwatch.LogGroup(
            f"{name}-flow-logs",
            name=group_name,
            retention_in_days=retention,
            kms_key_id=key.arn if key is not None else None,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        role, _ = service_role(
            f"{name}-flow-logs", "vpc-flow-logs.amazonaws.com", [], args.tags, self, args.permissions_boundary
        )
        iam.RolePolicy(
            f"{name}-flow-logs",
            role=role.id,
            policy=group.arn.apply(
                lambda arn: document(
                    [
                        {
                            "Effect": "Allow",
                            "Action": [
                                "logs:CreateLogStream",
                                "logs:PutLogEvents",
                                "logs:DescribeLogStreams",
                            ],
                            "Resource": [arn, f"{arn}:*"],
                        }
                    ]
                )
            ),
            opts=child,
        )
        ec2.FlowLog(
            f"{name}-flow-logs",
            vpc_id=self.vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=group.arn,
            iam_role_arn=role.arn,
            tags=args.tags,
            opts=child,
        )
