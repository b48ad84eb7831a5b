"""What would lose data or take traffic down if deleted is protected in prod, and only there."""

from __future__ import annotations

import pytest

from preflight.report import Preflight
from tests.conftest import STACKS

LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
# Per type, the logical names that hold data or serve traffic (every stack that has the type).
STATEFUL = {
    "aws:ec2/vpc:Vpc": None,  # all of them
    "aws:ec2/subnet:Subnet": None,
    "aws:lb/loadBalancer:LoadBalancer": None,
    "azure-native:cdn:Profile": None,
    "azure-native:cdn:AFDEndpoint": None,
    "aws:s3/bucket:Bucket": None,
    "aws:eks/cluster:Cluster": None,
    "aws:ecs/cluster:Cluster": None,
    # The EKS control plane's audit log, the VPC flow logs, the services' own logs.
    LOG_GROUP: {"eks-control-plane", "network-flow-logs", "worker-ecs-logs"},
}


@pytest.mark.parametrize("stack", STACKS)
def test_stateful_resources_are_protected_in_prod(stack_runs: dict[str, Preflight], stack: str) -> None:
    run = stack_runs[stack].run
    seen = set()
    for type_, names in STATEFUL.items():
        for r in run.by_type(type_):
            if names is not None and r.name not in names:
                continue
            seen.add(type_)
            assert r.protect is (stack == "prod"), r.urn
    if stack == "prod":
        assert seen == set(STATEFUL), set(STATEFUL) - seen
