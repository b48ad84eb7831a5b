"""Policy round-trip throughput: resources analysed per second over the real Analyzer gRPC protocol.

    .venv/bin/python bench/policies.py [--resources 1000] [--runs 3]

A generated stack (a realistic mix: Deployments, ECR repositories, task definitions, listeners,
load balancers, Cloud Run services, container groups, log groups) goes through Configure,
Analyze per resource and AnalyzeStack, as preflight sends it. The last line is the protocol floor
(bench/floors.py): the same Analyze requests answered by an analyzer that does nothing, on the same
gRPC stack, so the share of the pack's time that is the round trip itself is visible. Prints figures only.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pulumi.runtime.proto import analyzer_pb2  # noqa: E402

from bench.floors import protocol_floor  # noqa: E402
from preflight.analyzer import PolicyPackProcess, _described, analyze, load_policy_config  # noqa: E402
from preflight.engine import Registration  # noqa: E402
from tests.fixtures import workloads  # noqa: E402

TEMPLATES: list[tuple[str, dict[str, Any]]] = [
    (workloads.DEPLOYMENT, workloads.good()),
    (
        "aws:ecr/repository:Repository",
        {
            "name": "web",
            "imageScanningConfiguration": {"scanOnPush": True},
            "imageTagMutability": "IMMUTABLE",
            "encryptionConfigurations": [{"encryptionType": "KMS", "kmsKey": "arn:aws:kms:k"}],
            "tags": {"owner": "o", "environment": "prod", "service": "web", "cost-center": "c"},
        },
    ),
    (
        "aws:ecs/taskDefinition:TaskDefinition",
        {"containerDefinitions": '[{"name": "app", "readonlyRootFilesystem": true, "user": "10001"}]'},
    ),
    (
        "aws:lb/listener:Listener",
        {"protocol": "HTTPS", "port": 443, "sslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06"},
    ),
    (
        "aws:lb/loadBalancer:LoadBalancer",
        {"dropInvalidHeaderFields": True, "accessLogs": {"bucket": "b", "enabled": True}},
    ),
    (
        "gcp:cloudrunv2/service:Service",
        {"ingress": "INGRESS_TRAFFIC_ALL", "template": {"serviceAccount": "run@p.iam"}},
    ),
    (
        "azure-native:containerinstance:ContainerGroup",
        {"containers": [{"name": "app", "environmentVariables": []}]},
    ),
    ("aws:cloudwatch/logGroup:LogGroup", {"retentionInDays": 30}),
    ("aws:iam/role:Role", {"assumeRolePolicy": "{}"}),
    ("aws:ec2/subnet:Subnet", {"cidrBlock": "10.0.0.0/20"}),
]


def stack(size: int) -> list[Registration]:
    resources = []
    for i in range(size):
        type_, props = TEMPLATES[i % len(TEMPLATES)]
        name = f"r{i}"
        resources.append(
            Registration(
                urn=f"urn:pulumi:bench::pouw-cicd::{type_}::{name}",
                type=type_,
                name=name,
                inputs=copy.deepcopy(props),
                protect=True,
            )
        )
    return resources


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="*", default=[1, 2, 3])
    args = parser.parse_args()
    resources = stack(args.resources)
    config = load_policy_config(ROOT / "policies" / "config" / "prod.json")
    for count in args.processes:
        packs = [PolicyPackProcess(ROOT / "policies", "pouw-cicd", "bench") for _ in range(count)]
        with contextlib.ExitStack() as stack_:
            pool = [stack_.enter_context(p) for p in packs]
            analyze(pool, resources[:10], config)  # warm up: connect, first calls
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                result = analyze(pool, resources, config)
                times.append(time.perf_counter() - t0)
        median = statistics.median(times)
        print(
            f"{args.resources} resources, {len(result.policies)} policies, prod config, {count} pack "
            f"process(es): median {median:.3f}s per round = {args.resources / median:.0f} resources/s "
            f"({len(result.violations)} violations; runs {', '.join(f'{t:.3f}s' for t in times)})"
        )
    by_urn = {r.urn: r for r in resources}
    requests = [analyzer_pb2.AnalyzeRequest(**_described(r, by_urn)) for r in resources]
    floor = protocol_floor(requests, args.runs)
    print(
        f"protocol floor: the same {args.resources} Analyze calls to an analyzer that does nothing: "
        f"median {floor:.3f}s = {args.resources / floor:.0f} resources/s"
    )


if __name__ == "__main__":
    main()
