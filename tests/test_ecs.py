"""ECS Fargate: each strategy's shape, and plan comparisons proving traffic shifts touch only routing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from preflight.engine import ProgramRun
from preflight.report import Preflight
from tests.conftest import diff, run_config, stack_file

TASK = "aws:ecs/taskDefinition:TaskDefinition"
SERVICE = "aws:ecs/service:Service"
RULE = "aws:lb/listenerRule:ListenerRule"
LISTENER = "aws:lb/listener:Listener"
TARGET = "aws:appautoscaling/target:Target"
GROUP = "aws:lb/targetGroup:TargetGroup"
ALB = "aws:lb/loadBalancer:LoadBalancer"


def names(run: ProgramRun, type_: str) -> set[str]:
    return {r.name for r in run.by_type(type_) if r.name.startswith("worker-ecs")}


def rule_weights(run: ProgramRun, rule: str) -> dict[str, int]:
    (action,) = run.get(RULE, rule).inputs["actions"]
    return {g["arn"].rsplit("worker-ecs-", 1)[1]: int(g["weight"]) for g in action["forward"]["targetGroups"]}


def bounds(run: ProgramRun, slot: str) -> tuple[int, int]:
    target = run.get(TARGET, f"worker-ecs-{slot}").inputs
    return int(target["minCapacity"]), int(target["maxCapacity"])


def container(run: ProgramRun, slot: str) -> dict[str, Any]:
    (definition,) = json.loads(run.get(TASK, f"worker-ecs-{slot}").inputs["containerDefinitions"])
    return dict(definition)


def test_rolling_shape(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["dev"].run
    assert names(run, TASK) == {"worker-ecs-main"}
    assert names(run, SERVICE) == {"worker-ecs-main"}
    assert rule_weights(run, "worker-ecs-traffic") == {"main": 100}
    # The test listener's rule attaches the one workload's group (ECS needs a load balancer on it);
    # with nothing to preview, no preview URL is published.
    assert names(run, RULE) == {"worker-ecs-traffic", "worker-ecs-preview"}
    assert rule_weights(run, "worker-ecs-preview") == {"main": 100}
    # No certificate in dev: plain HTTP, which the policy pack lists as an advisory.
    assert {(r.name, r.inputs["protocol"]) for r in run.by_type(LISTENER)} == {
        ("worker-ecs-http", "HTTP"),
        ("worker-ecs-test", "HTTP"),
    }
    assert run.outputs["worker"]["ecs"]["previewUrl"] is None
    assert run.outputs["worker"]["ecs"]["url"].startswith("http://worker-ecs-alb-")


def test_canary_shape(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["staging"].run
    assert names(run, TASK) == names(run, SERVICE) == {"worker-ecs-stable", "worker-ecs-canary"}
    assert names(run, GROUP) == {"worker-ecs-stable", "worker-ecs-canary"}
    assert rule_weights(run, "worker-ecs-traffic") == {"stable": 80, "canary": 20}
    assert rule_weights(run, "worker-ecs-preview") == {"stable": 0, "canary": 100}
    assert bounds(run, "stable") == (2, 4)
    assert bounds(run, "canary") == (1, 1)
    assert container(run, "stable")["image"] != container(run, "canary")["image"]
    assert container(run, "canary")["image"] == run.outputs["worker"]["images"]["ecr"]
    out = run.outputs["worker"]["ecs"]
    assert out["weights"] == {"stable": 80, "canary": 20}
    assert out["previewUrl"].endswith(":8443") and out["url"].startswith("https://")


def test_blue_green_shape(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["prod"].run
    assert names(run, TASK) == {"worker-ecs-blue", "worker-ecs-green"}
    assert rule_weights(run, "worker-ecs-traffic") == {"blue": 100, "green": 0}
    assert rule_weights(run, "worker-ecs-preview") == {"blue": 0, "green": 100}
    assert bounds(run, "blue") == bounds(run, "green") == (2, 8)


def config_with(stack: str, mutate: Any) -> dict[str, Any]:
    config = stack_file(stack)["config"]
    mutate(config["pouw-cicd:services"][1]["rollout"])
    return config


def test_weight_change_alters_only_the_listener_rule_and_scaling_bounds(tmp_path: Path) -> None:
    before = run_config(tmp_path / "a", "staging", stack_file("staging")["config"])

    def half(rollout: dict[str, Any]) -> None:
        rollout["slots"]["stable"]["weight"] = rollout["slots"]["canary"]["weight"] = 50

    after = run_config(tmp_path / "b", "staging", config_with("staging", half))
    change = diff(before, after)
    assert change["added"] == change["removed"] == set()
    # The same rollout drives ACI and AKS: the Front Door origins' weights, the HTTPRoute's backend
    # weights and the AKS slots' autoscaling bounds change too (test_serverless.py, test_aks.py).
    assert change["changed"] == {
        (RULE, "worker-ecs-traffic"),
        (TARGET, "worker-ecs-stable"),
        (TARGET, "worker-ecs-canary"),
        ("azure-native:cdn:AFDOrigin", "worker-aci-stable"),
        ("azure-native:cdn:AFDOrigin", "worker-aci-canary"),
        ("kubernetes:gateway.networking.k8s.io/v1:HTTPRoute", "worker-aks-route"),
        ("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "worker-aks-stable"),
        ("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "worker-aks-canary"),
    }
    for slot in ("stable", "canary"):  # no task definition, no service's task definition reference
        assert before.get(TASK, f"worker-ecs-{slot}").inputs == after.get(TASK, f"worker-ecs-{slot}").inputs
        assert (
            before.get(SERVICE, f"worker-ecs-{slot}").inputs
            == after.get(SERVICE, f"worker-ecs-{slot}").inputs
        )
    assert rule_weights(after, "worker-ecs-traffic") == {"stable": 50, "canary": 50}


def test_blue_green_switch_alters_only_listener_rules(tmp_path: Path) -> None:
    before = run_config(tmp_path / "a", "prod", stack_file("prod")["config"])
    after = run_config(tmp_path / "b", "prod", config_with("prod", lambda r: r.update(activeSlot="green")))
    assert diff(before, after) == {
        "added": set(),
        "removed": set(),
        "changed": {
            (RULE, "worker-ecs-traffic"),
            (RULE, "worker-ecs-preview"),
            ("azure-native:cdn:AFDOrigin", "worker-aci-blue"),
            ("azure-native:cdn:AFDOrigin", "worker-aci-green"),
            # prod's worker is on AKS too: the same selector switch there (test_aks.py)
            ("kubernetes:core/v1:Service", "worker-aks-svc-worker"),
            ("kubernetes:core/v1:Service", "worker-aks-svc-worker-preview"),
        },
    }
    assert rule_weights(after, "worker-ecs-traffic") == {"blue": 0, "green": 100}


def test_task_and_service_hardening(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["prod"].run
    task = run.get(TASK, "worker-ecs-green").inputs
    assert task["requiresCompatibilities"] == ["FARGATE"] and task["networkMode"] == "awsvpc"
    assert (task["cpu"], task["memory"]) == ("1024", "2048")
    assert task["executionRoleArn"] != task["taskRoleArn"]
    c = container(run, "green")
    assert c["readonlyRootFilesystem"] is True and c["privileged"] is False and c["user"] == "10001:10001"
    assert c["image"].split("@")[1].startswith("sha256:")
    assert c["secrets"] == [
        {
            "name": "DATABASE_URL",
            "valueFrom": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/worker/database-url",
        }
    ]
    assert "DATABASE_URL" not in {e["name"] for e in c["environment"]}
    assert c["healthCheck"]["command"][-1].endswith("urlopen('http://127.0.0.1:9090/health', timeout=2)")
    assert c["logConfiguration"]["options"]["awslogs-group"] == "/pouw/ecs/worker"
    service = run.get(SERVICE, "worker-ecs-green")
    assert service.inputs["networkConfiguration"]["assignPublicIp"] is False
    assert service.inputs["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert service.ignore_changes == ["desiredCount"]
    secrets = json.loads(
        run.get("aws:iam/rolePolicy:RolePolicy", "worker-ecs-execution-secrets").inputs["policy"]
    )
    assert secrets["Statement"][0]["Resource"] == [c["secrets"][0]["valueFrom"]]
    assert (
        run.get("aws:cloudwatch/logGroup:LogGroup", "worker-ecs-logs")
        .inputs["kmsKeyId"]
        .endswith(":ecs-logs")
    )


def test_alb_hardening(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["prod"].run
    alb = run.get(ALB, "worker-ecs-alb").inputs
    assert alb["dropInvalidHeaderFields"] is True and alb["enableDeletionProtection"] is True
    assert alb["accessLogs"]["enabled"] is True and alb["internal"] is False
    https = run.get(LISTENER, "worker-ecs-https").inputs
    assert https["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06" and https["port"] == 443
    (redirect,) = run.get(LISTENER, "worker-ecs-http").inputs["defaultActions"]
    assert redirect["type"] == "redirect" and redirect["redirect"]["protocol"] == "HTTPS"
    assert run.get(LISTENER, "worker-ecs-test").inputs["protocol"] == "HTTPS"
    assert stack_runs["staging"].run.get(ALB, "worker-ecs-alb").inputs["enableDeletionProtection"] is False


def native(strategy: str) -> dict[str, Any]:
    config = stack_file("prod")["config"]
    config["pouw-cicd:ecs"]["native"] = {"strategy": strategy, "bakeTimeMinutes": 15, "canaryPercent": 5}
    config["pouw-cicd:services"][1]["rollout"] = {"strategy": "rolling"}
    return config


def test_native_ecs_canary(tmp_path: Path) -> None:
    run = run_config(tmp_path, "prod", native("CANARY"))
    assert names(run, SERVICE) == {"worker-ecs-main"}
    assert names(run, GROUP) == {"worker-ecs-blue", "worker-ecs-green"}
    service = run.get(SERVICE, "worker-ecs-main").inputs
    assert service["deploymentConfiguration"] == {
        "strategy": "CANARY",
        "bakeTimeInMinutes": "15",
        "canaryConfiguration": {"canaryPercent": 5, "canaryBakeTimeInMinutes": "5"},
    }
    (lb,) = service["loadBalancers"]
    advanced = lb["advancedConfiguration"]
    assert lb["targetGroupArn"].endswith("worker-ecs-blue") and advanced["alternateTargetGroupArn"].endswith(
        "worker-ecs-green"
    )
    assert advanced["roleArn"].endswith(":ecs-infrastructure")
    # AWS owns the shift: the program ignores drift on the rules' actions.
    assert run.get(RULE, "worker-ecs-traffic").ignore_changes == ["actions"]
    assert run.outputs["worker"]["ecs"]["weights"] == {"ecs-native": 100}


def test_native_ecs_needs_a_rolling_rollout(tmp_path: Path) -> None:
    config = native("BLUE_GREEN")
    config["pouw-cicd:services"][1]["rollout"] = stack_file("prod")["config"]["pouw-cicd:services"][1][
        "rollout"
    ]
    run = run_config(tmp_path, "prod", config)
    assert run.resources == []
    assert (
        "pouw-cicd:services[1].rollout.strategy: ecs.native lets ECS shift traffic itself" in run.error_text
    )


@pytest.mark.parametrize(
    ("fargate", "expected"),
    [
        ({"cpu": 256, "memory": 4096}, "memory 4096 is not valid with cpu 256; Fargate takes 512..2048 MiB"),
        (
            {"cpu": 300, "memory": 512},
            "pouw-cicd:services[1].fargate.cpu: must be one of 256, 512, 1024, 2048, 4096, got 300",
        ),
    ],
)
def test_bad_fargate_sizes(tmp_path: Path, fargate: dict[str, int], expected: str) -> None:
    config = stack_file("prod")["config"]
    config["pouw-cicd:services"][1]["fargate"] = fargate
    run = run_config(tmp_path, "prod", config)
    assert run.resources == [] and expected in run.error_text, run.error_text


WEB_ACL = "aws:wafv2/webAcl:WebAcl"
WAF_ASSOCIATION = "aws:wafv2/webAclAssociation:WebAclAssociation"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
MANAGED_GROUPS = {
    "AWSManagedRulesCommonRuleSet",
    "AWSManagedRulesKnownBadInputsRuleSet",
    "AWSManagedRulesAmazonIpReputationList",
}


def test_prod_alb_sits_behind_a_regional_web_acl_with_managed_rules(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["prod"].run
    acl = run.get(WEB_ACL, "ecs-waf").inputs
    assert acl["scope"] == "REGIONAL"
    assert "allow" in acl["defaultAction"]
    managed = {
        r["statement"]["managedRuleGroupStatement"]["name"]
        for r in acl["rules"]
        if "managedRuleGroupStatement" in r["statement"]
    }
    assert managed == MANAGED_GROUPS
    for rule in acl["rules"]:
        if "managedRuleGroupStatement" in rule["statement"]:
            assert rule["statement"]["managedRuleGroupStatement"]["vendorName"] == "AWS"
            assert "none" in rule["overrideAction"]  # the groups' own block actions apply
    (rate,) = [r for r in acl["rules"] if "rateBasedStatement" in r["statement"]]
    assert rate["statement"]["rateBasedStatement"] == {"aggregateKeyType": "IP", "limit": 2000}
    assert "block" in rate["action"]
    assert len({r["priority"] for r in acl["rules"]}) == len(acl["rules"])
    association = run.get(WAF_ASSOCIATION, "worker-ecs-waf")
    alb = run.get(ALB, "worker-ecs-alb")
    assert alb.urn in association.dependencies
    assert association.inputs["resourceArn"] == alb.outputs["arn"]
    assert association.inputs["webAclArn"] == run.get(WEB_ACL, "ecs-waf").outputs["arn"]


@pytest.mark.parametrize("stack", ["dev", "staging"])
def test_no_web_acl_outside_prod_by_default(stack_runs: dict[str, Preflight], stack: str) -> None:
    run = stack_runs[stack].run
    assert not run.by_type(WEB_ACL) and not run.by_type(WAF_ASSOCIATION)


def test_ecs_waf_setting_turns_it_off_in_prod(tmp_path: Path) -> None:
    config = stack_file("prod")["config"]
    config["pouw-cicd:ecs"] = {**config["pouw-cicd:ecs"], "waf": False}
    run = run_config(tmp_path, "prod", config)
    assert not run.by_type(WAF_ASSOCIATION)
    assert {r.name for r in run.by_type(WEB_ACL)} == {"eks-waf"}


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_security_group_rule_says_what_it_is_for(stack_runs: dict[str, Preflight], stack: str) -> None:
    run = stack_runs[stack].run
    for group in run.by_type(SECURITY_GROUP):
        for rule in [*group.inputs.get("ingress", []), *group.inputs.get("egress", [])]:
            assert rule.get("description"), f"{group.name}: {rule}"


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_tasks_reach_out_on_https_only(stack_runs: dict[str, Preflight], stack: str) -> None:
    """HTTPS anywhere; any other port only where the stack declares it (prod: its database), in the VPC."""
    egress, *declared = stack_runs[stack].run.get(SECURITY_GROUP, "worker-ecs-tasks").inputs["egress"]
    assert (egress["protocol"], egress["fromPort"], egress["toPort"]) == ("tcp", 443, 443)
    assert egress["cidrBlocks"] == ["0.0.0.0/0"]
    config = stack_file(stack)["config"]
    ports = config["pouw-cicd:ecs"].get("taskEgressPorts", [])
    assert [(e["fromPort"], e["toPort"]) for e in declared] == [(p, p) for p in ports]
    assert all(e["cidrBlocks"] == [config["pouw-cicd:network"].get("cidr", "10.40.0.0/16")] for e in declared)


def test_task_egress_ports_open_only_inside_the_vpc(tmp_path: Path) -> None:
    config = stack_file("staging")["config"]
    config["pouw-cicd:ecs"] = {**config["pouw-cicd:ecs"], "taskEgressPorts": [5432]}
    run = run_config(tmp_path, "staging", config)
    egress = run.get(SECURITY_GROUP, "worker-ecs-tasks").inputs["egress"]
    assert [(e["fromPort"], e["cidrBlocks"]) for e in egress] == [
        (443, ["0.0.0.0/0"]),
        (5432, [config["pouw-cicd:network"].get("cidr", "10.40.0.0/16")]),
    ]


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_alb_log_bucket_aborts_incomplete_uploads(stack_runs: dict[str, Preflight], stack: str) -> None:
    (rule,) = stack_runs[stack].run.get(LIFECYCLE, "ecs-alb-logs").inputs["rules"]
    assert rule["abortIncompleteMultipartUpload"] == {"daysAfterInitiation": 7}
    assert rule["expiration"]["days"] == stack_file(stack)["config"]["pouw-cicd:ecs"].get(
        "accessLogRetentionDays", 90
    )
