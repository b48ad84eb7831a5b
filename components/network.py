"""The AWS network that EKS and ECS run in: a VPC with public and private subnets per zone.

Workloads and nodes live in private subnets; only load balancers and NAT gateways are public. The
subnets carry the tags the AWS Load Balancer Controller uses to find them. VPC flow logs go to
CloudWatch, and the default security group allows nothing.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pulumi
import pulumi_aws.cloudwatch as cloudwatch
import pulumi_aws.ec2 as ec2
import pulumi_aws.iam as iam

from components.iam import document, service_role
from components.settings import NetworkSettings


@dataclass(frozen=True)
class AwsNetworkArgs:
    settings: NetworkSettings
    cluster_name: str | None = None  # tags subnets for EKS load balancer discovery
    flow_log_retention_days: int = 30
    tags: dict[str, str] = field(default_factory=dict)
    # prod: the VPC, its subnets and the flow-log group (deleting them takes every workload down or
    # loses the network's audit trail) are protected.
    protect: bool = False
    # The stack's permissions boundary (components/iam.py): every role made here carries it.
    permissions_boundary: pulumi.Input[str] | None = None


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
        group = cloudwatch.LogGroup(
            f"{name}-flow-logs",
            name=f"/pouw/{name}/flow-logs",
            retention_in_days=args.flow_log_retention_days,
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
