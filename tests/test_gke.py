"""GKE built directly (no __main__): the hardened cluster, the pull identity, the Gateway API route, and
plan comparisons proving that a traffic shift touches only routing."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from components.settings import SettingsError, parse
from components.targets import gke
from preflight.engine import ProgramRun, Registration
from tests.test_settings import namespace, others, secret_keys
from tests.test_targets import build

CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
GATEWAY = "kubernetes:gateway.networking.k8s.io/v1:Gateway"
ROUTE = "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"


def gke_only(
    tmp_path: Path, stack: str, mutate: Callable[[dict[str, Any]], None] = lambda c: None
) -> ProgramRun:
    return build(tmp_path, stack, ["gke"], mutate)


def one(run: ProgramRun, type_: str) -> Registration:
    (found,) = run.by_type(type_)
    return found


def k8s(run: ProgramRun, type_: str, name: str) -> Registration:
    return next(r for r in run.by_type(type_) if r.inputs["metadata"]["name"] == name)


def route_weights(run: ProgramRun) -> dict[str, int]:
    (rule,) = k8s(run, ROUTE, "web").inputs["spec"]["rules"]
    return {b["name"]: int(b.get("weight", 1)) for b in rule["backendRefs"]}


def test_the_cluster_is_private_and_hardened(tmp_path: Path) -> None:
    run = gke_only(tmp_path, "staging")
    cluster = one(run, CLUSTER).inputs
    assert cluster["location"] == "europe-west1"  # regional
    assert cluster["privateClusterConfig"]["enablePrivateNodes"] is True
    authorized = cluster["masterAuthorizedNetworksConfig"]
    assert [b["cidrBlock"] for b in authorized["cidrBlocks"]] == ["203.0.113.0/24"]
    assert authorized["gcpPublicCidrsAccessEnabled"] is False
    assert cluster["workloadIdentityConfig"] == {"workloadPool": "pouw-staging.svc.id.goog"}
    assert cluster["enableShieldedNodes"] is True and cluster["enableLegacyAbac"] is False
    assert cluster["releaseChannel"] == {"channel": "REGULAR"}
    assert cluster["datapathProvider"] == "ADVANCED_DATAPATH"  # Dataplane V2 enforces NetworkPolicy
    assert cluster["masterAuth"]["clientCertificateConfig"]["issueClientCertificate"] is False
    assert cluster["gatewayApiConfig"] == {"channel": "CHANNEL_STANDARD"}
    assert cluster["removeDefaultNodePool"] is True
    nodes = one(run, NODE_POOL).inputs["nodeConfig"]
    assert nodes["workloadMetadataConfig"] == {"mode": "GKE_METADATA"}
    assert nodes["shieldedInstanceConfig"] == {"enableSecureBoot": True, "enableIntegrityMonitoring": True}
    assert nodes["serviceAccount"] == "pouw-staging-nodes@pouw-staging.iam.gserviceaccount.com"
    assert nodes["metadata"] == {"disable-legacy-endpoints": "true"}


def test_prod_defaults(tmp_path: Path) -> None:
    run = gke_only(tmp_path, "prod")
    cluster = one(run, CLUSTER)
    assert cluster.inputs["releaseChannel"] == {"channel": "STABLE"}
    assert cluster.protect and cluster.inputs["deletionProtection"] is True
    assert one(run, "gcp:compute/network:Network").protect


def test_the_api_admits_the_nat_egress_of_the_runners(tmp_path: Path) -> None:
    """Built with the stack's AWS network (as __main__ does when EKS or ECS is used): its NAT addresses."""
    run = build(tmp_path, "prod", ["eks", "gke"], lambda config: None)
    blocks = one(run, CLUSTER).inputs["masterAuthorizedNetworksConfig"]["cidrBlocks"]
    assert len(blocks) == 3  # natGateways: perAz in three zones (addresses unknown until created)


def test_the_pull_identity_reads_the_repository_only(tmp_path: Path) -> None:
    run = gke_only(tmp_path, "staging")
    member = "serviceAccount:pouw-staging-nodes@pouw-staging.iam.gserviceaccount.com"
    pull = run.get("gcp:artifactregistry/repositoryIamMember:RepositoryIamMember", "gke-nodes-pull")
    assert pull.inputs["role"] == "roles/artifactregistry.reader" and pull.inputs["member"] == member
    assert pull.inputs["repository"] == "containers" and pull.inputs["location"] == "europe-west1"
    grants = [r.inputs for r in run.by_type("gcp:projects/iAMMember:IAMMember")]
    assert grants == [{"project": "pouw-staging", "role": gke.NODE_ROLE, "member": member}]


def test_canary_weights_are_the_plans(tmp_path: Path) -> None:
    run = gke_only(tmp_path, "prod")
    assert route_weights(run) == {"web-stable": 90, "web-canary": 10}
    gateway = k8s(run, GATEWAY, "web").inputs["spec"]
    assert gateway["gatewayClassName"] == gke.EXTERNAL_GATEWAY_CLASS
    # HTTPS only, with the stack's Certificate Manager certificate (gateway-https-only).
    assert gateway["listeners"] == [
        {
            "name": "https",
            "protocol": "HTTPS",
            "port": 443,
            "tls": {"mode": "Terminate", "options": {"networking.gke.io/cert-manager-certs": "web-prod"}},
            "allowedRoutes": {"namespaces": {"from": "Same"}},
        }
    ]
    route = k8s(run, ROUTE, "web").inputs["spec"]
    assert route["parentRefs"] == [{"name": "web"}]
    health = {
        r.inputs["metadata"]["name"]: r.inputs["spec"]
        for r in run.by_type("kubernetes:networking.gke.io/v1:HealthCheckPolicy")
    }
    assert set(health) == {"web-stable", "web-canary"}
    assert health["web-canary"]["default"]["config"]["httpHealthCheck"]["requestPath"] == "/health"


def test_the_namespace_denies_by_default_and_allows_the_gateway(tmp_path: Path) -> None:
    run = gke_only(tmp_path, "staging")
    policies = {r.inputs["metadata"]["name"]: r.inputs["spec"] for r in run.by_type(NETWORK_POLICY)}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    (rule,) = policies["web-allow-ingress"]["ingress"]
    assert [p["ipBlock"]["cidr"] for p in rule["from"]] == ["10.50.16.0/23", *gke.HEALTH_CHECK_RANGES]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    dns, https = policies["web-allow-egress"]["egress"]
    assert dns["to"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
    }
    assert https["ports"] == [{"protocol": "TCP", "port": 443}]


def problems(mutate: Callable[[dict[str, Any]], None]) -> list[str]:
    raw = copy.deepcopy(namespace("staging"))
    mutate(raw)
    with pytest.raises(SettingsError) as err:
        parse(raw, "staging", secret_keys("staging"), others("staging"))
    return err.value.problems


def test_settings_name_the_key_and_the_fix() -> None:
    def no_gcp(raw: dict[str, Any]) -> None:
        del raw["gcp"]

    assert "pouw-cicd:gke: needs pouw-cicd:gcp (project, region); add it" in problems(no_gcp)

    def no_gke(raw: dict[str, Any]) -> None:
        del raw["gke"]

    assert "pouw-cicd:services[0].targets: gke needs pouw-cicd:gke; add it" in problems(no_gke)

    def nobody(raw: dict[str, Any]) -> None:
        raw["gke"]["authorizedCidrs"] = []
        raw["network"]["natGateways"] = "none"
        raw["registries"]["acr"]["allowedCidrs"] = ["203.0.113.0/24"]

    (found,) = [p for p in problems(nobody) if p.startswith("pouw-cicd:gke.")]
    assert found.startswith("pouw-cicd:gke.authorizedCidrs: the GKE control plane would admit no one")
    assert "authorizedCidrs: [203.0.113.0/24]" in found

    def bad_machine(raw: dict[str, Any]) -> None:
        raw["gke"]["nodes"] = {"machineType": "E2 STANDARD"}

    assert problems(bad_machine) == [
        "pouw-cicd:gke.nodes.machineType: must be a Compute Engine machine type such as e2-standard-4, "
        "got 'E2 STANDARD'"
    ]
