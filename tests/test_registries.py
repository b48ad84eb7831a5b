"""Each registry kind: hardened defaults, per-environment switches, and how builds log in."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from components.registry import AcrRegistryArgs, acr_network, acr_refresh_token, ecr_pull_policy
from components.schema import AcrSettings, AzureSettings
from preflight.cli import main
from preflight.engine import SECRET_SIG, SIG_KEY
from preflight.report import Preflight
from tests.conftest import project_copy, run_config, stack_file

ACR = "azure-native:containerregistry:Registry"
AR = "gcp:artifactregistry/repository:Repository"
IMAGE = "docker-build:index:Image"
INDEX = "docker-build:index:Index"
SCANNING = "aws:ecr/registryScanningConfiguration:RegistryScanningConfiguration"
PULL_POLICY = "aws:ecr/repositoryPolicy:RepositoryPolicy"
EIP = "aws:ec2/eip:Eip"
UNKNOWN_STRING = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def test_acr_hardened_prod(stack_runs: dict[str, Preflight]) -> None:
    acr = stack_runs["prod"].run.get(ACR, "acr")
    assert acr.inputs["registryName"] == "pouwcicdprod"
    assert acr.inputs["adminUserEnabled"] is False
    assert acr.inputs["anonymousPullEnabled"] is False
    assert acr.inputs["networkRuleSet"]["defaultAction"] == "Deny"  # see test_acr_admits_only_...
    assert acr.inputs["sku"] == {"name": "Premium"}
    assert acr.inputs["policies"] == {"retentionPolicy": {"days": 14, "status": "enabled"}}
    assert acr.inputs["resourceGroupName"] == "rg-pouw-prod"
    assert acr.inputs["tags"]["service"] == "shared"
    assert acr.protect


@pytest.mark.parametrize(("stack", "nat_gateways"), [("staging", 1), ("prod", 3)])
def test_acr_admits_only_the_stacks_nat_egress(
    stack_runs: dict[str, Preflight], stack: str, nat_gateways: int
) -> None:
    run = stack_runs[stack].run
    acr = run.get(ACR, "acr")
    eips = [r.urn for r in run.by_type(EIP)]
    assert len(eips) == nat_gateways  # staging: natGateways single; prod: perAz
    assert acr.inputs["sku"] == {"name": "Premium"}
    # Public endpoint on (nothing here could reach a private endpoint from AWS), denied by default.
    assert acr.inputs["publicNetworkAccess"] == "Enabled"
    rules = acr.inputs["networkRuleSet"]
    assert rules["defaultAction"] == "Deny"
    assert {r["action"] for r in rules["ipRules"]} == {"Allow"}
    # The NAT gateways' Elastic IPs and AKS's egress address, which only `pulumi up` knows, then the
    # stack's extra ranges.
    extra = stack_file(stack)["config"]["pouw-cicd:registries"]["acr"].get("allowedCidrs", [])
    assert [r["iPAddressOrRange"] for r in rules["ipRules"]] == [UNKNOWN_STRING] * (nat_gateways + 1) + extra
    aks_egress = run.get("azure-native:network:PublicIPAddress", "aks-egress").urn
    assert sorted(acr.property_dependencies["networkRuleSet"]) == sorted([*eips, aks_egress])
    # ACI pulls with its managed identity: a trusted service, let through the network rules.
    assert acr.inputs["networkRuleBypassOptions"] == "AzureServices"


def test_acr_network_access_modes(tmp_path: Path) -> None:
    def registry(name: str, **acr: Any) -> dict[str, Any]:
        config = stack_file("staging")["config"]
        config["pouw-cicd:registries"]["acr"].pop("allowedCidrs", None)
        config["pouw-cicd:registries"]["acr"].update(acr)
        if acr.get("networkAccess") == "privateEndpoints":  # AKS pulls through the public endpoint
            config["pouw-cicd:services"][1]["targets"] = ["ecs", "aci"]
        return run_config(tmp_path / name, "staging", config).get(ACR, "acr").inputs

    vpn = registry("vpn", allowedCidrs=["203.0.113.0/24"])
    assert [r["iPAddressOrRange"] for r in vpn["networkRuleSet"]["ipRules"]] == [
        UNKNOWN_STRING,  # the NAT gateway
        UNKNOWN_STRING,  # AKS's egress
        "203.0.113.0/24",
    ]
    # Private endpoints managed outside the stack: the public endpoint is off, no rules to keep.
    private = registry("private", networkAccess="privateEndpoints")
    assert private["publicNetworkAccess"] == "Disabled" and "networkRuleSet" not in private
    assert private["networkRuleBypassOptions"] == "AzureServices"
    public = registry("public", networkAccess="public")
    assert public["publicNetworkAccess"] == "Enabled" and "networkRuleSet" not in public


def test_acr_without_aci_lets_no_trusted_service_through(tmp_path: Path) -> None:
    config = stack_file("staging")["config"]
    config["pouw-cicd:services"][1]["targets"] = ["ecs"]
    acr = run_config(tmp_path, "staging", config).get(ACR, "acr").inputs
    assert acr["networkRuleSet"]["defaultAction"] == "Deny"
    assert acr["networkRuleBypassOptions"] == "None"


def test_dev_acr_stays_public(tmp_path: Path) -> None:
    config = stack_file("dev")["config"]
    config["pouw-cicd:registries"]["acr"] = {"name": "pouwcicddev"}
    config["pouw-cicd:azure"] = {"location": "westeurope", "resourceGroup": "rg-pouw-dev"}
    acr = run_config(tmp_path, "dev", config).get(ACR, "acr").inputs
    assert acr["sku"] == {"name": "Standard"}  # no Premium needed: nothing is restricted
    assert acr["publicNetworkAccess"] == "Enabled" and "networkRuleSet" not in acr


def test_acr_network_arguments_with_known_addresses() -> None:
    args = AcrRegistryArgs(
        settings=AcrSettings(name="pouwcicdtest", sku="Premium", allowed_cidrs=("203.0.113.0/24",)),
        azure=AzureSettings(location="westeurope", resource_group="rg-test"),
        resource_group_name="rg-test",
        network_access="selectedNetworks",
        egress_ips=["198.51.100.7", "198.51.100.8"],
    )
    network = acr_network(args)
    rules = network["network_rule_set"]
    assert network["public_network_access"] == "Enabled" and rules.default_action == "Deny"
    assert [r.i_p_address_or_range for r in rules.ip_rules] == [
        "198.51.100.7",
        "198.51.100.8",
        "203.0.113.0/24",
    ]
    assert network["network_rule_bypass_options"] == "None"  # trusted services only where ACI pulls


def test_acr_open_to_all_networks_in_prod_is_blocked_by_the_gate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = stack_file("prod")["config"]
    config["pouw-cicd:registries"]["acr"]["networkAccess"] = "public"
    project = project_copy(tmp_path, "prod", config)
    assert main(["--stack", "prod", "--project-dir", str(project)]) == 1
    out = capsys.readouterr().out
    assert "acr-private-network" in out and "for all networks" in out


def test_acr_restricted_without_premium_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = stack_file("prod")["config"]
    config["pouw-cicd:registries"]["acr"].update(sku="Standard")
    config["pouw-cicd:registries"]["acr"].pop("untaggedRetentionDays")
    project = project_copy(tmp_path, "prod", config)
    assert main(["--stack", "prod", "--project-dir", str(project)]) == 2
    out = capsys.readouterr().out
    assert "pouw-cicd:registries.acr.sku: Standard cannot restrict network access" in out
    assert "set sku: Premium" in out and "0 resources were registered" in out


def test_artifact_registry_hardened(stack_runs: dict[str, Preflight]) -> None:
    prod = stack_runs["prod"].run.get(AR, "artifact-registry")
    assert prod.inputs["format"] == "DOCKER"
    assert prod.inputs["repositoryId"] == "containers"
    assert (prod.inputs["project"], prod.inputs["location"]) == ("pouw-prod", "europe-west1")
    assert prod.inputs["dockerConfig"] == {"immutableTags": True}
    assert prod.inputs["cleanupPolicyDryRun"] is False
    delete, keep = prod.inputs["cleanupPolicies"]
    assert delete == {
        "id": "delete-untagged",
        "action": "DELETE",
        "condition": {"tagState": "UNTAGGED", "olderThan": f"{14 * 86400}s"},
    }
    assert keep == {"id": "keep-recent", "action": "KEEP", "mostRecentVersions": {"keepCount": 50}}
    assert prod.inputs["kmsKeyName"].endswith("/cryptoKeys/images")
    assert prod.inputs["labels"]["cost-center"] == "cc-1042"
    staging = stack_runs["staging"].run.get(AR, "artifact-registry")
    assert "kmsKeyName" not in staging.inputs


def test_ecr_enhanced_scanning_and_cross_account_pull(stack_runs: dict[str, Preflight]) -> None:
    prod = stack_runs["prod"].run
    scanning = prod.get(SCANNING, "ecr-enhanced-scanning")
    assert scanning.inputs["scanType"] == "ENHANCED"
    assert scanning.inputs["rules"][0]["scanFrequency"] == "CONTINUOUS_SCAN"
    policy = json.loads(prod.get(PULL_POLICY, "web-ecr-pull").inputs["policy"])
    assert policy == json.loads(ecr_pull_policy(("210987654321",)))
    statement = policy["Statement"][0]
    assert statement["Principal"] == {"AWS": ["arn:aws:iam::210987654321:root"]}
    assert not any(a.endswith("*") or "Put" in a for a in statement["Action"])  # pull only
    assert stack_runs["staging"].run.by_type(SCANNING) == []
    assert stack_runs["staging"].run.by_type(PULL_POLICY) == []


def test_ghcr_has_no_resource_and_a_secret_token(stack_runs: dict[str, Preflight]) -> None:
    dev = stack_runs["dev"].run
    assert not [r for r in dev.resources if "ghcr" in r.type.lower()]
    image = dev.get(IMAGE, "web")
    copy = dev.get(INDEX, "web-copy-ghcr")  # ECR is dev's build registry; GHCR gets a copy
    assert copy.inputs["tag"] == "ghcr.io/pouw/web:1.5.0-rc.1"
    ghcr = copy.inputs["registry"]
    assert ghcr["address"] == "ghcr.io" and ghcr["username"] == "pouw-ci"
    assert ghcr["password"][SIG_KEY] == SECRET_SIG
    # The label that links the GHCR package to its repository.
    assert image.inputs["labels"]["org.opencontainers.image.source"] == "https://github.com/pouw/pouw-cicd"


def test_revision_label_comes_from_the_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567")
    run = run_config(tmp_path, "dev", stack_file("dev")["config"])
    labels = run.get(IMAGE, "web").inputs["labels"]
    assert labels["org.opencontainers.image.revision"] == "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: c.pop("pouw-cicd:azure"),
            "pouw-cicd:registries.acr: needs pouw-cicd:azure (location, resourceGroup); add it",
        ),
        (
            lambda c: c["pouw-cicd:registries"]["acr"].update(sku="Standard"),
            "pouw-cicd:registries.acr: untaggedRetentionDays needs sku: Premium",
        ),
        (
            lambda c: c.update({"pouw-cicd:registries": {"ecr": None}}),
            "pouw-cicd:registries: names no registry",
        ),
        (
            lambda c: c["pouw-cicd:registries"]["ecr"].update(pullAccounts=["12345"]),
            "pouw-cicd:registries.ecr.pullAccounts[0]: must be a 12-digit AWS account id (quote it), "
            "got '12345'",
        ),
        (
            lambda c: c["pouw-cicd:registries"].update(
                acr={"name": "pouwcicdprod", "sku": "Basic", "networkAccess": "privateEndpoints"}
            ),
            "pouw-cicd:registries.acr.sku: Basic cannot restrict network access (networkAccess: "
            "privateEndpoints): ACR firewall rules and disabled public access are Premium features",
        ),
        (
            lambda c: c["pouw-cicd:registries"]["acr"].update(
                networkAccess="public", allowedCidrs=["203.0.113.0/24"]
            ),
            "pouw-cicd:registries.acr.allowedCidrs: only applies with networkAccess: selectedNetworks "
            "(networkAccess: public); remove it",
        ),
        (
            lambda c: c["pouw-cicd:registries"]["acr"].update(allowedCidrs=["203.0.113.7"]),
            "pouw-cicd:registries.acr.allowedCidrs[0]: must be an IPv4 range such as 203.0.113.0/24",
        ),
        (
            lambda c: c["pouw-cicd:network"].update(natGateways="none"),
            "pouw-cicd:registries.acr.allowedCidrs: networkAccess: selectedNetworks admits no one",
        ),
        (
            lambda c: c["pouw-cicd:registries"]["acr"].update(networkAccess="private"),
            "pouw-cicd:registries.acr.networkAccess: must be one of public, selectedNetworks, "
            "privateEndpoints",
        ),
        (
            lambda c: c["pouw-cicd:registries"]["acr"].update(publicNetworkAccess=False),
            "pouw-cicd:registries.acr.publicNetworkAccess: unknown key",
        ),
        (
            lambda c: c["pouw-cicd:registries"]["acr"].update(name="pouw-prod"),
            "pouw-cicd:registries.acr.name: must be 5-50 letters or digits (an ACR name has no '-'), "
            "got 'pouw-prod'",
        ),
    ],
)
def test_bad_registry_settings(tmp_path: Path, mutate: Any, expected: str) -> None:
    config = stack_file("prod")["config"]
    mutate(config)
    run = run_config(tmp_path, "prod", config)
    assert run.resources == []
    assert expected in run.error_text, run.error_text


def test_ghcr_token_must_be_a_secret(tmp_path: Path) -> None:
    config = stack_file("dev")["config"]
    config["pouw-cicd:ghcrToken"] = "plain-text"
    run = run_config(tmp_path, "dev", config)
    assert run.resources == []
    assert "pouw-cicd:registries.ghcr.tokenKey: config key pouw-cicd:ghcrToken is stored in plain text" in (
        run.error_text
    )


class _Exchange(BaseHTTPRequestHandler):
    """Stands in for ACR's /oauth2/exchange endpoint in this test only."""

    seen: dict[str, list[str]] = {}

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        type(self).seen = urllib.parse.parse_qs(body)
        data = json.dumps({"refresh_token": "acr-refresh"}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def exchange_url() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Exchange)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/oauth2/exchange"
    server.shutdown()
    server.server_close()


def test_acr_refresh_token_exchange(exchange_url: str) -> None:
    token = acr_refresh_token("pouwcicdprod.azurecr.io", "tenant-1", "entra-token", endpoint=exchange_url)
    assert token == "acr-refresh"
    assert _Exchange.seen == {
        "grant_type": ["access_token"],
        "service": ["pouwcicdprod.azurecr.io"],
        "tenant": ["tenant-1"],
        "access_token": ["entra-token"],
    }


def test_a_service_without_targets_logs_in_to_every_registry(tmp_path: Path) -> None:
    config = stack_file("prod")["config"]
    config["pouw-cicd:services"][1]["targets"] = []
    config["pouw-cicd:services"][1]["rollout"] = {"strategy": "rolling"}
    run = run_config(tmp_path, "prod", config)
    # The release is copied to each registry (GHCR, where it lives, excepted), each with its own login.
    ecr_login = run.get(INDEX, "worker-2.0.1-release-copy-ecr").inputs["registry"]
    acr_login = run.get(INDEX, "worker-2.0.1-release-copy-acr").inputs["registry"]
    ar_login = run.get(INDEX, "worker-2.0.1-release-copy-artifact-registry").inputs["registry"]
    assert ecr_login["username"] == "AWS"
    assert acr_login["address"] == "pouwcicdprod.azurecr.io"
    assert acr_login["username"] == "00000000-0000-0000-0000-000000000000"  # Entra token, no admin
    assert ar_login == {
        "address": "europe-west1-docker.pkg.dev",
        "username": "oauth2accesstoken",
        "password": {SIG_KEY: SECRET_SIG, "value": "preflight-placeholder-token"},
    }
    # ACR's token exchange needs the real registry: unknown (and still secret) in a preview.
    assert acr_login["password"] == {SIG_KEY: SECRET_SIG, "value": UNKNOWN_STRING}


def test_a_dev_service_without_targets_builds_into_ecr_and_copies_to_ghcr(tmp_path: Path) -> None:
    config = stack_file("dev")["config"]
    config["pouw-cicd:services"][1]["targets"] = []
    run = run_config(tmp_path, "dev", config)
    (ecr_login,) = run.get(IMAGE, "worker").inputs["registries"]  # the build registry
    assert ecr_login["username"] == "AWS"
    assert run.get(INDEX, "worker-copy-ghcr").inputs["registry"]["address"] == "ghcr.io"


KMS_KEY = "aws:kms/key:Key"


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_ecr_keys_have_an_explicit_policy_for_ecr_use(stack_runs: dict[str, Preflight], stack: str) -> None:
    run = stack_runs[stack].run
    for service in ("web", "worker"):
        policy = json.loads(run.get(KMS_KEY, f"{service}-ecr-key").inputs["policy"])
        admin, use = policy["Statement"]
        assert admin["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"} and admin["Action"] == "kms:*"
        assert use["Condition"]["StringEquals"] == {
            "kms:ViaService": "ecr.eu-west-1.amazonaws.com",
            "kms:CallerAccount": "123456789012",
        }
        assert {"kms:Decrypt", "kms:GenerateDataKey*", "kms:CreateGrant"} <= set(use["Action"])


def test_prod_registry_is_zone_redundant_and_never_replaced_for_it(stack_runs: dict[str, Preflight]) -> None:
    prod = stack_runs["prod"].run.get(ACR, "acr")
    assert prod.inputs["zoneRedundancy"] == "Enabled"
    assert "zoneRedundancy" in prod.ignore_changes  # create-time only: an existing registry is kept
    assert stack_runs["staging"].run.get(ACR, "acr").inputs["zoneRedundancy"] == "Disabled"


def test_zone_redundancy_needs_premium() -> None:
    with pytest.raises(ValueError, match="zoneRedundant needs sku: Premium"):
        AcrSettings(name="pouwcicdtest", sku="Standard", zone_redundant=True)
    assert AcrSettings(name="pouwcicdtest", sku="Premium", zone_redundant=False).zone_redundant is False
