"""EKS: each strategy's shape, and plan comparisons proving traffic shifts touch only routing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from components.targets import eks
from preflight.cli import main
from preflight.engine import ProgramRun, Registration
from preflight.report import Preflight
from tests.conftest import diff, project_copy, run_config, stack_file

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
CLUSTER = "aws:eks/cluster:Cluster"


def on_eks(run: ProgramRun, type_: str) -> list[Registration]:
    """The EKS services' objects of a type (GKE and AKS make the same kinds, under the same names)."""
    return [r for r in run.by_type(type_) if "pouw:index:EksService" in r.parent]


def names(run: ProgramRun, type_: str) -> set[str]:
    return {r.inputs["metadata"]["name"] for r in on_eks(run, type_)}


def k8s(run: ProgramRun, type_: str, name: str) -> Registration:
    return next(r for r in on_eks(run, type_) if r.inputs["metadata"]["name"] == name)


def selector_slot(run: ProgramRun, service: str) -> str:
    slot: str = k8s(run, SERVICE, service).inputs["spec"]["selector"]["slot"]
    return slot


def weights(run: ProgramRun) -> dict[str, int]:
    annotations = k8s(run, INGRESS, "web").inputs["metadata"]["annotations"]
    action = json.loads(annotations["alb.ingress.kubernetes.io/actions.web-weighted"])
    return {g["serviceName"]: g["weight"] for g in action["forwardConfig"]["targetGroups"]}


def bounds(run: ProgramRun, name: str) -> tuple[int, int]:
    spec = k8s(run, HPA, name).inputs["spec"]
    return int(spec["minReplicas"]), int(spec["maxReplicas"])


def test_rolling_shape(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["dev"].run
    assert names(run, DEPLOYMENT) == {"web-main"}
    assert names(run, SERVICE) == {"web"}
    assert selector_slot(run, "web") == "main"
    assert bounds(run, "web-main") == (1, 2)
    strategy = k8s(run, DEPLOYMENT, "web-main").inputs["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
    backend = k8s(run, INGRESS, "web").inputs["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend == {"service": {"name": "web", "port": {"number": 80}}}
    assert run.outputs["web"]["eks"]["previewUrl"] is None


def test_blue_green_shape(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["staging"].run
    assert names(run, DEPLOYMENT) == {"web-blue", "web-green"}
    assert names(run, SERVICE) == {"web", "web-preview"}
    assert (selector_slot(run, "web"), selector_slot(run, "web-preview")) == ("blue", "green")
    # Both colours keep full capacity.
    assert bounds(run, "web-blue") == bounds(run, "web-green") == (2, 4)
    out = run.outputs["web"]
    assert out["eks"]["weights"] == {"blue": 100, "green": 0}
    # green runs this update's build; blue keeps 1.4.1, resolved by tag to its own digest.
    assert out["eks"]["images"]["green"] == out["images"]["ecr"]
    assert out["eks"]["images"]["blue"] != out["images"]["ecr"]
    assert out["eks"]["images"]["blue"].split("@")[1].startswith("sha256:")
    assert out["eks"]["previewUrl"] == "http://web-preview.web.svc.cluster.local"
    labels = k8s(run, DEPLOYMENT, "web-blue").inputs["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/version"] == "1.4.1" and labels["slot"] == "blue"


def test_canary_shape(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["prod"].run
    assert names(run, DEPLOYMENT) == {"web-stable", "web-canary"}
    assert names(run, SERVICE) == {"web", "web-preview", "web-stable", "web-canary"}
    assert weights(run) == {"web-stable": 90, "web-canary": 10}
    # Capacity follows weight: 90% of 4..12 and 10% of 4..12, never below one.
    assert bounds(run, "web-stable") == (4, 11)
    assert bounds(run, "web-canary") == (1, 2)
    backend = k8s(run, INGRESS, "web").inputs["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert backend == {"service": {"name": "web-weighted", "port": {"name": "use-annotation"}}}
    assert run.outputs["web"]["eks"]["weights"] == {"stable": 90, "canary": 10}


def canary_config(stable: int, canary: int) -> dict[str, Any]:
    config = stack_file("prod")["config"]
    slots = config["pouw-cicd:services"][0]["rollout"]["slots"]
    slots["stable"]["weight"], slots["canary"]["weight"] = stable, canary
    return config


def test_weight_change_alters_only_routing_and_scaling_bounds(tmp_path: Path) -> None:
    before = run_config(tmp_path / "a", "prod", canary_config(90, 10))
    after = run_config(tmp_path / "b", "prod", canary_config(50, 50))
    change = diff(before, after)
    assert change["added"] == set() and change["removed"] == set()
    # The same rollout drives Cloud Run: its service changes too, in `traffics` only (test_cloudrun.py).
    assert change["changed"] == {
        (INGRESS, "web-eks-ingress"),
        (HPA, "web-eks-stable"),
        (HPA, "web-eks-canary"),
        ("gcp:cloudrunv2/service:Service", "web-cloudrun"),
        # And GKE (prod's web is on it too): its HTTPRoute weights and the HPA bounds (test_gke.py).
        ("kubernetes:gateway.networking.k8s.io/v1:HTTPRoute", "web-gke-route"),
        (HPA, "web-gke-stable"),
        (HPA, "web-gke-canary"),
    }
    for name in ("web-stable", "web-canary"):
        assert k8s(before, DEPLOYMENT, name).inputs == k8s(after, DEPLOYMENT, name).inputs
    assert weights(after) == {"web-stable": 50, "web-canary": 50}


def test_blue_green_switch_alters_only_selectors_and_keeps_the_idle_slot(tmp_path: Path) -> None:
    before = run_config(tmp_path / "a", "staging", stack_file("staging")["config"])
    config = stack_file("staging")["config"]
    config["pouw-cicd:services"][0]["rollout"]["activeSlot"] = "green"
    after = run_config(tmp_path / "b", "staging", config)
    change = diff(before, after)
    assert change == {
        "added": set(),
        "removed": set(),
        "changed": {
            (SERVICE, "web-eks-svc-web"),
            (SERVICE, "web-eks-svc-web-preview"),
            ("gcp:cloudrunv2/service:Service", "web-cloudrun"),  # traffics only, see test_cloudrun.py
            (SERVICE, "web-gke-svc-web"),  # staging's web is on GKE too: the same selector switch
            (SERVICE, "web-gke-svc-web-preview"),
        },
    }
    assert (selector_slot(after, "web"), selector_slot(after, "web-preview")) == ("green", "blue")
    assert names(after, DEPLOYMENT) == {"web-blue", "web-green"}  # blue stays for an instant rollback


def test_recreate_strategy(tmp_path: Path) -> None:
    config = stack_file("dev")["config"]
    config["pouw-cicd:services"][0]["rollout"]["strategy"] = "recreate"
    run = run_config(tmp_path, "dev", config)
    assert k8s(run, DEPLOYMENT, "web-main").inputs["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda r: r["slots"].update(
                stable={"version": "1.4.1", "weight": 70}, canary={"version": "1.4.2", "weight": 40}
            ),
            "pouw-cicd:services[0].rollout.slots: weights 70/40 sum to 110; they must sum to 100",
        ),
        (
            lambda r: r["slots"].update(purple=r["slots"].pop("canary")),
            "pouw-cicd:services[0].rollout.slots.purple: unknown slot; canary slots are stable, canary",
        ),
        (
            lambda r: r["slots"]["canary"].update(version="1.4.1"),
            "pouw-cicd:services[0].rollout.slots.canary.version: equals the stable version 1.4.1",
        ),
        (
            lambda r: r["slots"]["canary"].update(weight=120),
            "pouw-cicd:services[0].rollout.slots.canary.weight: 120 is not within 0..100",
        ),
        (
            lambda r: r.update(strategy="a/b"),
            "pouw-cicd:services[0].rollout.strategy: must be one of rolling, recreate, blue-green, "
            "canary, got 'a/b'",
        ),
    ],
)
def test_invalid_rollout_exits_2_with_key_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mutate: Any, expected: str
) -> None:
    config = stack_file("prod")["config"]
    mutate(config["pouw-cicd:services"][0]["rollout"])
    project = project_copy(tmp_path, "prod", config)
    assert main(["--stack", "prod", "--project-dir", str(project)]) == 2
    out = capsys.readouterr().out
    assert expected in out
    assert "0 resources were registered" in out


def test_unknown_target_and_missing_registry(tmp_path: Path) -> None:
    config = stack_file("dev")["config"]
    config["pouw-cicd:services"][0]["targets"] = ["nomad"]
    run = run_config(tmp_path / "a", "dev", config)
    assert (
        "pouw-cicd:services[0].targets[0]: must be one of eks, ecs, aci, cloudrun, gke, aks, got 'nomad'"
        in (run.error_text)
    )
    config = stack_file("dev")["config"]
    config["pouw-cicd:registries"]["ecr"] = None
    run = run_config(tmp_path / "b", "dev", config)
    assert "pouw-cicd:services[0].targets: eks pulls from ecr, but registries.ecr is not configured" in (
        run.error_text
    )
    assert run.resources == []


def test_pods_meet_pod_security_restricted(stack_runs: dict[str, Preflight]) -> None:
    for stack, run in ((s, r.run) for s, r in stack_runs.items()):
        for deployment in run.by_type(DEPLOYMENT):
            pod = deployment.inputs["spec"]["template"]["spec"]
            assert pod["automountServiceAccountToken"] is False
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            (container,) = pod["containers"]
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert container["image"].split("@")[1].startswith("sha256:"), stack
            assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container)
            assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
            assert set(container["resources"]) == {"requests", "limits"}
            assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
            assert "replicas" not in deployment.inputs["spec"]  # the HPA owns the count


def test_every_kubernetes_resource_uses_the_cluster_provider(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["prod"].run
    provider = run.get("pulumi:providers:kubernetes", "eks-k8s")
    # GKE's and AKS's own clusters (test_gke.py, test_aks.py).
    gke = run.get("pulumi:providers:kubernetes", "gke-k8s")
    aks = run.get("pulumi:providers:kubernetes", "aks-k8s")
    kube = [r for r in run.resources if r.type.startswith("kubernetes:")]
    assert kube
    for r in kube:
        on_aks = "pouw:index:AksService" in r.parent or "pouw:index:AksCluster" in r.parent
        on_gke = "pouw:index:GkeService" in r.parent or "pouw:index:GkeCluster" in r.parent
        expected = gke if on_gke else aks if on_aks else provider
        assert r.provider.rsplit("::", 1)[0] == expected.urn, r.urn
    assert (
        provider.inputs["kubeconfig"]["4dabf18193072939515e22adb298388d"]
        == "1b47061264138c4ac30d75fd1eb44270"
    )


def test_cluster_hardening(stack_runs: dict[str, Preflight]) -> None:
    prod = stack_runs["prod"].run
    cluster = prod.get(CLUSTER, "eks")
    assert cluster.protect
    assert cluster.inputs["version"] == "1.33"
    assert cluster.inputs["vpcConfig"]["endpointPrivateAccess"] is True
    assert cluster.inputs["vpcConfig"]["endpointPublicAccess"] is False
    assert cluster.inputs["encryptionConfig"]["resources"] == ["secrets"]
    assert set(cluster.inputs["enabledClusterLogTypes"]) == {
        "api",
        "audit",
        "authenticator",
        "controllerManager",
        "scheduler",
    }
    assert len(cluster.inputs["vpcConfig"]["subnetIds"]) == 3
    assert stack_runs["dev"].run.get(CLUSTER, "eks").inputs["vpcConfig"]["endpointPublicAccess"] is True
    template = prod.get("aws:ec2/launchTemplate:LaunchTemplate", "eks-nodes")
    assert template.inputs["metadataOptions"]["httpTokens"] == "required"
    assert template.inputs["metadataOptions"]["httpPutResponseHopLimit"] == 1
    nodes = prod.get("aws:eks/nodeGroup:NodeGroup", "eks-nodes")
    assert nodes.inputs["scalingConfig"] == {"minSize": 3, "maxSize": 9, "desiredSize": 3}
    assert len(prod.by_type("aws:ec2/natGateway:NatGateway")) == 3
    assert len(stack_runs["dev"].run.by_type("aws:ec2/natGateway:NatGateway")) == 1


def test_load_balancer_controller_identity(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["prod"].run
    release = run.get("kubernetes:helm.sh/v3:Release", "eks-lb-controller")
    assert release.inputs["chart"] == "aws-load-balancer-controller"
    assert release.inputs["version"] == "1.13.4"
    assert release.inputs["repositoryOpts"] == {"repo": "https://aws.github.io/eks-charts"}
    trust = json.loads(run.get("aws:iam/role:Role", "eks-lb-controller").inputs["assumeRolePolicy"])
    condition = trust["Statement"][0]["Condition"]["StringEquals"]
    assert any(
        v == "system:serviceaccount:kube-system:aws-load-balancer-controller" for v in condition.values()
    )
    policy = json.loads(run.get("aws:iam/rolePolicy:RolePolicy", "eks-lb-controller").inputs["policy"])
    assert not any("*" in action for action in policy["Statement"][0]["Action"])


def test_load_balancer_controller_policy_is_the_published_document(stack_runs: dict[str, Preflight]) -> None:
    """The document as the controller's maintainers publish it for the installed version, conditions
    included: tag-scoped writes (`elbv2.k8s.aws/cluster`), not a flattened list of actions."""
    data = eks.LB_CONTROLLER_POLICY_FILE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == eks.LB_CONTROLLER_POLICY_SHA256  # unedited since download
    assert eks.LB_CONTROLLER_APP_VERSION in eks.LB_CONTROLLER_POLICY_SOURCE
    # The chart the stacks install is the one the document was published for (chart 1.13.x = app v2.13.x).
    chart = stack_runs["prod"].run.get("kubernetes:helm.sh/v3:Release", "eks-lb-controller").inputs["version"]
    assert "v2." + chart.split(".", 1)[1] == eks.LB_CONTROLLER_APP_VERSION
    for stack in ("dev", "prod"):
        policy = (
            stack_runs[stack].run.get("aws:iam/rolePolicy:RolePolicy", "eks-lb-controller").inputs["policy"]
        )
        assert json.loads(policy) == json.loads(data)
    conditioned = [s for s in json.loads(data)["Statement"] if "Condition" in s]
    assert any("aws:ResourceTag/elbv2.k8s.aws/cluster" in json.dumps(s) for s in conditioned)


KMS_KEY = "aws:kms/key:Key"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
WEB_ACL = "aws:wafv2/webAcl:WebAcl"
WAF_ANNOTATION = "alb.ingress.kubernetes.io/wafv2-acl-arn"


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_secrets_key_policy_names_the_account_and_the_cluster_role(
    stack_runs: dict[str, Preflight], stack: str
) -> None:
    run = stack_runs[stack].run
    key = run.get(KMS_KEY, "eks-secrets")
    admin, cluster = json.loads(key.inputs["policy"])["Statement"]
    assert admin["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"} and admin["Action"] == "kms:*"
    assert cluster["Principal"] == {"AWS": run.get("aws:iam/role:Role", "eks-cluster").outputs["arn"]}
    assert {"kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"} <= set(cluster["Action"])


def test_prod_control_plane_logs_are_kept_a_year_with_their_own_key(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["prod"].run
    group = run.get(LOG_GROUP, "eks-control-plane")
    key = run.get(KMS_KEY, "eks-logs")
    assert group.inputs["retentionInDays"] == 365
    assert group.inputs["kmsKeyId"] == key.outputs["arn"]
    assert key.protect and key.inputs["enableKeyRotation"]
    _, logs = json.loads(key.inputs["policy"])["Statement"]
    assert logs["Principal"] == {"Service": "logs.eu-west-1.amazonaws.com"}
    assert logs["Condition"] == {
        "ArnLike": {
            "kms:EncryptionContext:aws:logs:arn": "arn:aws:logs:eu-west-1:123456789012:log-group:"
            "/aws/eks/pouw-prod/cluster"
        }
    }


@pytest.mark.parametrize("stack", ["dev", "staging"])
def test_control_plane_logs_use_no_cmk_outside_prod(stack_runs: dict[str, Preflight], stack: str) -> None:
    run = stack_runs[stack].run
    assert "kmsKeyId" not in run.get(LOG_GROUP, "eks-control-plane").inputs
    assert "eks-logs" not in {k.name for k in run.by_type(KMS_KEY)}


def test_prod_ingress_alb_gets_the_cluster_web_acl(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["prod"].run
    annotations = run.get(INGRESS, "web-eks-ingress").inputs["metadata"]["annotations"]
    assert annotations[WAF_ANNOTATION] == run.get(WEB_ACL, "eks-waf").outputs["arn"]
    assert run.get(WEB_ACL, "eks-waf").inputs["scope"] == "REGIONAL"
    # The controller may associate it: its published policy grants the WAFv2 calls.
    policy = json.loads(eks.lb_controller_policy())
    granted = {
        a
        for s in policy["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert {"wafv2:AssociateWebACL", "wafv2:GetWebACL", "wafv2:GetWebACLForResource"} <= granted
    for stack in ("dev", "staging"):
        other = stack_runs[stack].run.get(INGRESS, "web-eks-ingress").inputs["metadata"]["annotations"]
        assert WAF_ANNOTATION not in other
