"""The policy pack, launched as the CLI launches it and driven over the real Analyzer protocol."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import empty_pb2

from preflight.analyzer import PolicyPackError, PolicyPackProcess, analyze
from preflight.cli import main
from preflight.engine import Registration
from preflight.report import Preflight
from tests.conftest import ROOT, STACKS, project_copy, stack_file
from tests.fixtures import workloads

FIXTURES: dict[str, Any] = {
    **yaml.safe_load((Path(__file__).parent / "fixtures" / "policies.yaml").read_text()),
    **workloads.fixtures(),
}
UNKNOWN_STRING = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
UNKNOWN_BOOL = "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7"


def resource(type_: str, name: str, props: dict[str, Any], protect: bool = False) -> Registration:
    return Registration(
        urn=f"urn:pulumi:test::pouw-cicd::{type_}::{name}",
        type=type_,
        name=name,
        inputs=props,
        protect=protect,
    )


def build(specs: list[dict[str, Any]]) -> list[Registration]:
    """Fixture resources; `deps` names the fixture resources one depends on (stack policies join on them)."""
    built = [resource(s["type"], s["name"], s.get("props", {}), s.get("protect", False)) for s in specs]
    urns = {r.name: r.urn for r in built}
    for r, s in zip(built, specs, strict=True):
        r.dependencies = [urns[d] for d in s.get("deps", [])]
    return built


def verdicts(pack: PolicyPackProcess, policy: str, resources: list[Registration]) -> list[str]:
    config = {"all": "mandatory", policy: FIXTURES[policy].get("config", {})}
    result = analyze(pack, resources, config)
    assert all(v.level == "mandatory" for v in result.violations if v.policy == policy)
    return [v.detail for v in result.violations if v.policy == policy]


def test_every_policy_has_both_fixtures(pack: PolicyPackProcess) -> None:
    names = {p.name for p in pack.stub.GetAnalyzerInfo(empty_pb2.Empty()).policies}
    assert names == set(FIXTURES)
    for name, fixture in FIXTURES.items():
        assert fixture["pass"] and fixture["fail"]["resources"] and fixture["fail"]["message"], name


@pytest.mark.parametrize("policy", sorted(FIXTURES))
def test_passing_fixture(pack: PolicyPackProcess, policy: str) -> None:
    assert verdicts(pack, policy, build(FIXTURES[policy]["pass"])) == []


@pytest.mark.parametrize("policy", sorted(FIXTURES))
def test_failing_fixture(pack: PolicyPackProcess, policy: str) -> None:
    fail = FIXTURES[policy]["fail"]
    found = verdicts(pack, policy, build(fail["resources"]))
    assert len(found) == 1 and fail["message"] in found[0], found


def test_policy_metadata(pack: PolicyPackProcess) -> None:
    for p in pack.stub.GetAnalyzerInfo(empty_pb2.Empty()).policies:
        assert p.description and p.remediation_steps and p.framework.name and p.framework.reference, p.name
        assert p.severity != 0, p.name


def test_unknown_values_neither_crash_nor_pass_silently(pack: PolicyPackProcess) -> None:
    repo = resource(
        "aws:ecr/repository:Repository",
        "repo",
        {"name": "web", "imageScanningConfiguration": {"scanOnPush": UNKNOWN_BOOL}},
    )
    image = resource("docker-build:index:Image", "web", {"push": True, "tags": UNKNOWN_STRING})
    result = analyze(pack, [repo, image], {"all": "mandatory"})
    cannot_run = {v.policy: v for v in result.violations if "can't run policy" in v.message}
    assert set(cannot_run) == {"ecr-scan-on-push", "image-no-latest-tag"}
    assert all(v.level == "advisory" for v in cannot_run.values())
    scan = cannot_run["ecr-scan-on-push"].message
    assert "value at .imageScanningConfiguration.scanOnPush can't be known" in scan


def test_unknown_customer_key_counts_as_set(pack: PolicyPackProcess) -> None:
    repo = resource(
        "aws:ecr/repository:Repository",
        "repo",
        {"name": "web", "encryptionConfigurations": [{"encryptionType": "KMS", "kmsKey": UNKNOWN_STRING}]},
    )
    config = {"all": "mandatory", "ecr-kms-encryption": {"requireCustomerManagedKey": True}}
    result = analyze(pack, [repo], config)
    assert [v for v in result.violations if v.policy == "ecr-kms-encryption"] == []


ACR_TYPE = "azure-native:containerregistry:Registry"


def acr_rules(default_action: str, *ranges: str) -> dict[str, Any]:
    rules = [{"iPAddressOrRange": r, "action": "Allow"} for r in ranges]
    return {
        "publicNetworkAccess": "Enabled",
        "networkRuleSet": {"defaultAction": default_action, "ipRules": rules},
    }


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        ({"publicNetworkAccess": "Disabled"}, []),  # private endpoints only
        (acr_rules("Deny", "198.51.100.7", "203.0.113.0/24"), []),  # NAT egress + a VPN range
        (acr_rules("Deny"), []),  # no rule: only trusted services (ACI's managed identity) get in
        # A NAT gateway's Elastic IP is unknown until `pulumi up`: an address, never a wildcard.
        (acr_rules("Deny", UNKNOWN_STRING, "203.0.113.0/24"), []),
        (
            {"publicNetworkAccess": "Enabled"},
            ["ACR public network access is Enabled for all networks (networkRuleSet.defaultAction Allow)"],
        ),
        (
            acr_rules("Allow", "198.51.100.7"),
            ["ACR public network access is Enabled for all networks (networkRuleSet.defaultAction Allow)"],
        ),
        (
            acr_rules("Deny", "198.51.100.7", "0.0.0.0/0"),
            ["ACR network rule '0.0.0.0/0' admits every address"],
        ),
        (acr_rules("Deny", "*"), ["ACR network rule '*' admits every address"]),
        (acr_rules("Deny", "10.0.0.0/0"), ["ACR network rule '10.0.0.0/0' admits every address"]),
    ],
)
def test_acr_network_verdicts(pack: PolicyPackProcess, props: dict[str, Any], expected: list[str]) -> None:
    registry = resource(ACR_TYPE, "acr", {"registryName": "pouwprod", **props})
    found = verdicts(pack, "acr-private-network", [registry])
    assert len(found) == len(expected) and all(
        f.startswith(e) for f, e in zip(found, expected, strict=True)
    ), found
    result = analyze(pack, [registry], {"all": "mandatory"})
    assert not [v for v in result.violations if "can't run policy" in v.message]


def test_acr_public_registry_passes_where_privacy_is_not_required(pack: PolicyPackProcess) -> None:
    registry = resource(ACR_TYPE, "acr", {"registryName": "pouwdev", "publicNetworkAccess": "Enabled"})
    config = {"all": "mandatory", "acr-private-network": {"requirePrivate": False}}
    assert [
        v for v in analyze(pack, [registry], config).violations if v.policy == "acr-private-network"
    ] == []


def test_levels_from_config(pack: PolicyPackProcess) -> None:
    repo = build(FIXTURES["ecr-scan-on-push"]["fail"]["resources"])
    advisory = analyze(pack, repo, {"all": "advisory"})
    assert {v.level for v in advisory.violations} == {"advisory"}
    disabled = analyze(pack, repo, {"all": "mandatory", "ecr-scan-on-push": "disabled"})
    assert "ecr-scan-on-push" not in {v.policy for v in disabled.violations}
    assert {v.policy for v in disabled.violations} >= {"protect-stateful-resources"}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"ecr-scan-on-pushh": "mandatory"}, "unknown policies ecr-scan-on-pushh"),
        ({"all": "blocking"}, "all: 'blocking' is not one of advisory, mandatory, remediate, disabled"),
        (
            {"ecr-kms-encryption": {"requireCustomerManagedKey": "yes"}},
            "ecr-kms-encryption.requireCustomerManagedKey",
        ),
        ({"required-tags": {"requiredTag": ["owner"]}}, "Additional properties are not allowed"),
    ],
)
def test_bad_policy_config_is_refused(pack: PolicyPackProcess, config: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyPackError, match=message.replace(".", r"\.")):
        analyze(pack, [], config)


def test_pack_process_is_stopped() -> None:
    with PolicyPackProcess(ROOT / "policies", project="pouw-cicd", stack="t") as running:
        assert running.stub.GetAnalyzerInfo(empty_pb2.Empty()).name == "pouw-cicd"
        process = running._process
        assert process is not None and process.poll() is None
    assert process.poll() is not None


def test_broken_pack_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "PulumiPolicy.yaml").write_text(
        f"runtime: {{name: python, options: {{virtualenv: {sys.prefix}}}}}\nversion: 0.0.1\n"
    )
    (tmp_path / "__main__.py").write_text("raise SystemExit('pack exploded')\n")
    with pytest.raises(PolicyPackError, match="pack exploded"), PolicyPackProcess(tmp_path, "p", "s") as pack:
        pack.stub.GetAnalyzerInfo(empty_pb2.Empty())


@pytest.mark.parametrize("stack", STACKS)
def test_project_stacks_pass_their_own_gates(stack_runs: dict[str, Preflight], stack: str) -> None:
    result = stack_runs[stack]
    assert result.analysis is not None
    assert result.analysis.mandatory == []
    assert result.exit_code == 0
    assert {p.name for p in result.analysis.policies} == set(FIXTURES)


def test_mandatory_violation_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = stack_file("prod")["config"]
    config["pouw-cicd:registries"]["ecr"]["scanOnPush"] = False
    project = project_copy(tmp_path, "prod", config)
    markdown = tmp_path / "summary.md"
    assert main(["--stack", "prod", "--project-dir", str(project), "--markdown", str(markdown)]) == 1
    out = capsys.readouterr().out
    assert "mandatory" in out and "ecr-scan-on-push" in out
    # The advisories: prod's dind runners (arc-dind-advisory) and the issue 16 gaps its config lists.
    assert "2 mandatory, " in out
    assert "blocked by mandatory policies" in markdown.read_text()


def test_dev_violation_is_advisory_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = stack_file("dev")["config"]
    config["pouw-cicd:registries"]["ecr"]["scanOnPush"] = False
    project = project_copy(tmp_path, "dev", config)
    assert main(["--stack", "dev", "--project-dir", str(project), "--json", str(tmp_path / "plan.json")]) == 0
    assert "0 mandatory, " in capsys.readouterr().out
    diagnostics = json.loads((tmp_path / "plan.json").read_text())["diagnostics"]
    assert {d["level"] for d in diagnostics} == {"advisory"}
    assert {(d["policy"], d["level"]) for d in diagnostics} >= {
        ("ecr-scan-on-push", "advisory"),
        ("eks-private-endpoint", "advisory"),  # dev's API endpoint is public to all: listed, not blocking
        ("alb-https-only", "advisory"),  # dev's ALB has no certificate: plain HTTP, listed
        ("ec2-security-group-public-ingress", "advisory"),  # so its group takes port 80 for traffic
    }


def test_two_pack_processes_give_the_same_verdicts(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["staging"].run
    config = json.loads((ROOT / "policies" / "config" / "staging.json").read_text())
    with (
        PolicyPackProcess(ROOT / "policies", "pouw-cicd", "a") as one,
        PolicyPackProcess(ROOT / "policies", "pouw-cicd", "b") as two,
    ):
        single = analyze(one, run.resources, config)
        pooled = analyze([one, two], run.resources, config)
    assert [(v.policy, v.urn, v.level) for v in single.violations] == [
        (v.policy, v.urn, v.level) for v in pooled.violations
    ]
    assert single.violations  # staging has advisories to compare


def test_remediation_is_off_by_default_and_fills_missing_tags_when_enabled(pack: PolicyPackProcess) -> None:
    key = resource(
        "aws:kms/key:Key", "key", {"tags": {"owner": "a", "environment": "prod", "service": "web"}}
    )
    default = analyze(pack, [key], {"all": "mandatory"})
    assert [v.detail for v in default.violations if v.policy == "required-tags"] == [
        "missing required tags: cost-center"
    ]
    assert default.remediations == []
    config = {
        "all": "mandatory",
        "required-tags": {"enforcementLevel": "remediate", "defaults": {"cost-center": "cc-0000"}},
    }
    fixed = analyze(pack, [key], config)
    assert fixed.remediations == [("required-tags", key.urn)]
    assert [v for v in fixed.violations if v.policy == "required-tags"] == []
    assert fixed.resources[0].inputs["tags"]["cost-center"] == "cc-0000"
    assert key.inputs["tags"].get("cost-center") is None  # the captured registration is untouched


@pytest.mark.parametrize(
    ("type_", "props"),
    [
        (
            "aws:ecs/taskDefinition:TaskDefinition",
            {"containerDefinitions": '[{"name": "app", "image": "r/web:1.0"}]'},
        ),
        (
            "azure-native:containerinstance:ContainerGroup",
            {"containers": [{"name": "app", "image": "r/web:1.0"}]},
        ),
        (
            "gcp:cloudrunv2/service:Service",
            {"template": {"containers": [{"name": "app", "image": "r/web:1.0"}]}},
        ),
    ],
)
def test_digest_pinning_covers_every_platform(
    pack: PolicyPackProcess, type_: str, props: dict[str, Any]
) -> None:
    result = analyze(pack, [resource(type_, "w", props)], {"all": "mandatory"})
    assert [v.detail for v in result.violations if v.policy == "image-digest-pinned"] == [
        "container app image 'r/web:1.0' is not pinned by digest (repo@sha256:...)"
    ]


@pytest.mark.parametrize(
    ("weights", "expected"),
    [((90, 10), []), ((70, 40), ["traffic split (rules[0].backendRefs) sums to 110, not 100"])],
)
def test_http_route_weights_sum_to_100(
    pack: PolicyPackProcess, weights: tuple[int, int], expected: list[str]
) -> None:
    """The Gateway API route GKE and AKS split canary traffic with is a traffic split like the others."""
    backends = [{"name": "web-stable", "weight": weights[0]}, {"name": "web-canary", "weight": weights[1]}]
    route = resource(
        "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute",
        "route",
        {"spec": {"rules": [{"backendRefs": backends}]}},
    )
    result = analyze(pack, [route], {"all": "mandatory"})
    assert [v.detail for v in result.violations if v.policy == "rollout-weights-sum-100"] == expected


def test_gke_authorized_network_unknown_during_preview_is_an_address(pack: PolicyPackProcess) -> None:
    """A NAT gateway's address is unknown until it exists: a single address, never a wildcard."""
    networks = {"cidrBlocks": [{"cidrBlock": UNKNOWN_STRING}], "gcpPublicCidrsAccessEnabled": False}
    cluster = resource("gcp:container/cluster:Cluster", "gke", {"masterAuthorizedNetworksConfig": networks})
    result = analyze(pack, [cluster], {"all": "mandatory"})
    assert [v for v in result.violations if v.policy == "gke-control-plane-access"] == []


def test_aks_authorized_range_unknown_during_preview_is_an_address(pack: PolicyPackProcess) -> None:
    """AKS's own egress address and the runners' NAT addresses are unknown until they exist: single
    addresses, never a wildcard; a known open range still fails next to them."""
    access = {"authorizedIPRanges": [UNKNOWN_STRING, "203.0.113.0/24"]}
    cluster = resource(
        "azure-native:containerservice:ManagedCluster", "aks", {"apiServerAccessProfile": access}
    )
    result = analyze(pack, [cluster], {"all": "mandatory"})
    assert [v for v in result.violations if v.policy == "aks-api-access"] == []
    access = {"authorizedIPRanges": [UNKNOWN_STRING, "0.0.0.0/0"]}
    cluster = resource(
        "azure-native:containerservice:ManagedCluster", "aks", {"apiServerAccessProfile": access}
    )
    result = analyze(pack, [cluster], {"all": "mandatory"})
    assert [v.detail for v in result.violations if v.policy == "aks-api-access"] == [
        "AKS authorized IP ranges admit 0.0.0.0/0: the whole internet"
    ]
