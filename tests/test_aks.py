"""AKS built directly (no __main__): the hardened cluster, its egress and pull identity, Application
Gateway for Containers with the Gateway API route, and plan comparisons proving that a traffic shift
touches only routing."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from components.runners import AZURE_ASSIGNED_ROLES
from components.settings import SettingsError, parse
from components.targets import aks
from components.targets.aci import ACR_PULL_ROLE
from preflight.engine import SECRET_SIG, SIG_KEY, ProgramRun, Registration
from tests.test_settings import namespace, others, secret_keys
from tests.test_targets import build

CLUSTER = "azure-native:containerservice:ManagedCluster"
ROLE_ASSIGNMENT = "azure-native:authorization:RoleAssignment"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
GATEWAY = "kubernetes:gateway.networking.k8s.io/v1:Gateway"
ROUTE = "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # a value only `pulumi up` knows (the mocks' preview)


def aks_only(
    tmp_path: Path, stack: str, mutate: Callable[[dict[str, Any]], None] = lambda c: None
) -> ProgramRun:
    return build(tmp_path, stack, ["aks"], mutate)


def one(run: ProgramRun, type_: str) -> Registration:
    (found,) = run.by_type(type_)
    return found


def k8s(run: ProgramRun, type_: str, name: str) -> Registration:
    return next(r for r in run.by_type(type_) if r.inputs["metadata"]["name"] == name)


def route_weights(run: ProgramRun) -> dict[str, int]:
    # The weighted rule is the last (staging's worker has a header route's rule first).
    rule = k8s(run, ROUTE, "worker").inputs["spec"]["rules"][-1]
    return {b["name"]: int(b.get("weight", 1)) for b in rule["backendRefs"]}


def pools(cluster: Registration) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in cluster.inputs["agentPoolProfiles"]}


def test_the_cluster_is_hardened(tmp_path: Path) -> None:
    run = aks_only(tmp_path, "staging")
    cluster = one(run, CLUSTER).inputs
    assert cluster["resourceGroupName"] == "rg-pouw-staging" and cluster["location"] == "westeurope"
    # Entra ID only: no local accounts, Azure RBAC authorizes Kubernetes calls.
    assert cluster["disableLocalAccounts"] is True and cluster["enableRBAC"] is True
    assert cluster["aadProfile"] == {"managed": True, "enableAzureRBAC": True}
    # The API admits the cluster's own egress (unknown until it exists) and the VPN; not private.
    assert cluster["apiServerAccessProfile"] == {"authorizedIPRanges": [UNKNOWN, "203.0.113.0/24"]}
    assert cluster["oidcIssuerProfile"] == {"enabled": True}
    assert cluster["securityProfile"]["workloadIdentity"] == {"enabled": True}
    network = cluster["networkProfile"]
    assert (network["networkPlugin"], network["networkPluginMode"]) == ("azure", "overlay")
    assert network["networkDataplane"] == "cilium" and network["networkPolicy"] == "cilium"
    assert network["outboundType"] == "userAssignedNATGateway"
    assert network["dnsServiceIP"] == "10.72.0.10"
    assert cluster["autoUpgradeProfile"] == {"upgradeChannel": "patch", "nodeOSUpgradeChannel": "NodeImage"}
    assert cluster["sku"] == {"name": "Base", "tier": "Free"} and cluster["kubernetesVersion"] == "1.33"
    assert cluster["addonProfiles"] == {"azurepolicy": {"enabled": True}}
    system, apps = pools(one(run, CLUSTER))["system"], pools(one(run, CLUSTER))["apps"]
    assert system["mode"] == "System" and system["nodeTaints"] == ["CriticalAddonsOnly=true:NoSchedule"]
    assert apps["mode"] == "User" and "nodeTaints" not in apps
    for pool in (system, apps):
        assert pool["enableNodePublicIP"] is False and pool["availabilityZones"] == ["1", "2", "3"]
        assert pool["enableAutoScaling"] is True and pool["osDiskType"] == "Ephemeral"
        assert pool["vnetSubnetID"].endswith("/aks-vnet/subnets/nodes")
    assert (apps["vmSize"], apps["minCount"], apps["maxCount"]) == ("Standard_D4ds_v5", 2, 4)
    # The VNet: nodes behind the NAT gateway, a subnet delegated to Application Gateway for Containers.
    nodes, gateway = one(run, "azure-native:network:VirtualNetwork").inputs["subnets"]
    nat = one(run, "azure-native:network:NatGateway")
    assert nodes["natGateway"] == {"id": nat.outputs["id"]} and nodes["defaultOutboundAccess"] is False
    assert gateway["addressPrefix"] == "10.70.8.0/24"
    assert gateway["delegations"] == [
        {"name": "agc", "serviceName": "Microsoft.ServiceNetworking/trafficControllers"}
    ]
    egress = one(run, "azure-native:network:PublicIPAddress")
    assert nat.inputs["publicIpAddresses"] == [{"id": egress.outputs["id"]}]
    assert (
        egress.inputs["publicIPAllocationMethod"] == "Static" and egress.inputs["sku"]["name"] == "Standard"
    )


def test_prod_defaults(tmp_path: Path) -> None:
    run = aks_only(tmp_path, "prod")
    cluster = one(run, CLUSTER)
    assert cluster.inputs["autoUpgradeProfile"]["upgradeChannel"] == "stable"
    assert cluster.inputs["sku"]["tier"] == "Standard"
    system = pools(cluster)["system"]
    assert (system["minCount"], system["maxCount"]) == (3, 5)
    protected = {
        r.type
        for r in run.resources
        if r.protect and r.type.split(":")[1] in ("containerservice", "network", "servicenetworking")
    }
    assert protected == {
        CLUSTER,
        "azure-native:network:VirtualNetwork",
        "azure-native:network:PublicIPAddress",  # the egress address others allow-list
        "azure-native:servicenetworking:TrafficControllerInterface",
        "azure-native:servicenetworking:FrontendsInterface",  # its FQDN is what users resolve
    }


def test_the_api_and_the_registry_admit_the_egress(tmp_path: Path) -> None:
    """Built with the stack's AWS network (as __main__ does when EKS or ECS is used): the API server
    admits the runners' NAT addresses and the cluster's own; the ACR admits both too."""
    run = build(tmp_path, "prod", ["eks", "aks"], lambda config: None)
    ranges = one(run, CLUSTER).inputs["apiServerAccessProfile"]["authorizedIPRanges"]
    assert ranges == [UNKNOWN] * 4  # natGateways: perAz in three zones, plus the AKS egress address
    rules = one(run, "azure-native:containerregistry:Registry").inputs["networkRuleSet"]
    assert rules["defaultAction"] == "Deny"
    assert [r["iPAddressOrRange"] for r in rules["ipRules"]] == [UNKNOWN] * 4


def test_the_kubelet_pulls_with_acr_pull_on_the_registry_only(tmp_path: Path) -> None:
    run = aks_only(tmp_path, "staging")
    registry = one(run, "azure-native:containerregistry:Registry")
    assignments = {r.name: r for r in run.by_type(ROLE_ASSIGNMENT)}
    pull = assignments["aks-kubelet-pull"].inputs
    assert pull["roleDefinitionId"].endswith(f"/roleDefinitions/{ACR_PULL_ROLE}")
    assert pull["scope"] == registry.outputs["id"] and pull["principalType"] == "ServicePrincipal"
    # The kubelet identity AKS makes, known once the cluster exists.
    assert pull["principalId"] == UNKNOWN
    # Nothing else pulls, and every role the stack assigns is one the deploy identity may assign.
    pulls = [n for n, r in assignments.items() if r.inputs["roleDefinitionId"].endswith(ACR_PULL_ROLE)]
    assert sorted(pulls) == ["aks-kubelet-pull", "aks-kyverno-pull"]  # and Kyverno (test_admission.py)
    for assignment in assignments.values():
        role = assignment.inputs["roleDefinitionId"].rsplit("/", 1)[1]
        assert AZURE_ASSIGNED_ROLES.get(role) == assignment.inputs["principalType"], assignment.name
    # Workloads wait for the pull grant: the Kubernetes provider depends on it.
    provider = run.get("pulumi:providers:kubernetes", "aks-k8s")
    assert assignments["aks-kubelet-pull"].urn in provider.dependencies


def test_the_alb_controller_configures_only_its_gateway(tmp_path: Path) -> None:
    run = aks_only(tmp_path, "staging")
    assignments = {r.name: r.inputs for r in run.by_type(ROLE_ASSIGNMENT)}
    traffic_controller = one(run, "azure-native:servicenetworking:TrafficControllerInterface")
    assert assignments["aks-alb-controller-agc"]["scope"] == traffic_controller.outputs["id"]
    assert assignments["aks-alb-controller-agc"]["roleDefinitionId"].endswith(aks.AGC_CONFIGURATION_MANAGER)
    assert assignments["aks-alb-controller-subnet"]["scope"].endswith("/aks-vnet/subnets/gateway")
    assert assignments["aks-alb-controller-subnet"]["roleDefinitionId"].endswith(aks.NETWORK_CONTRIBUTOR)
    association = one(run, "azure-native:servicenetworking:AssociationsInterface").inputs
    assert association["associationType"] == "subnets"
    assert association["subnet"]["id"].endswith("/aks-vnet/subnets/gateway")
    credential = run.get("azure-native:managedidentity:FederatedIdentityCredential", "aks-alb-controller")
    assert credential.inputs["subject"] == "system:serviceaccount:azure-alb-system:alb-controller-sa"
    assert credential.inputs["audiences"] == ["api://AzureADTokenExchange"]
    identity = run.get("azure-native:managedidentity:UserAssignedIdentity", "aks-alb-controller")
    release = run.get("kubernetes:helm.sh/v3:Release", "aks-alb-controller").inputs
    assert release["chart"] == "oci://mcr.microsoft.com/application-lb/charts/alb-controller"
    assert release["version"] == "1.13.0" and release["namespace"] == "azure-alb-system"
    assert release["values"] == {
        "albController": {
            "namespace": "azure-alb-system",
            "podIdentity": {"clientID": identity.outputs["clientId"]},
        }
    }


def test_canary_weights_are_the_plans(tmp_path: Path) -> None:
    run = aks_only(tmp_path, "staging")
    assert route_weights(run) == {"worker-stable": 80, "worker-canary": 20}
    gateway = k8s(run, GATEWAY, "worker").inputs
    assert gateway["spec"]["gatewayClassName"] == aks.EXTERNAL_GATEWAY_CLASS
    # HTTPS only, with the worker's TLS Secret (gateway-https-only).
    assert gateway["spec"]["listeners"] == [
        {
            "name": "https",
            "protocol": "HTTPS",
            "port": 443,
            "tls": {
                "mode": "Terminate",
                "certificateRefs": [{"kind": "Secret", "group": "", "name": "worker-tls"}],
            },
            "allowedRoutes": {"namespaces": {"from": "Same"}},
        }
    ]
    traffic_controller = one(run, "azure-native:servicenetworking:TrafficControllerInterface")
    assert gateway["metadata"]["annotations"] == {
        "alb.networking.azure.io/alb-id": traffic_controller.outputs["id"],
        "alb.networking.azure.io/alb-frontend": "worker",
    }
    assert one(run, "azure-native:servicenetworking:FrontendsInterface").inputs["frontendName"] == "worker"
    assert k8s(run, ROUTE, "worker").inputs["spec"]["parentRefs"] == [{"name": "worker"}]


def test_https_with_a_certificate_secret(tmp_path: Path) -> None:
    run = aks_only(tmp_path, "staging", lambda c: c["pouw-cicd:aks"].update(certificateSecret="worker-tls"))
    (listener,) = k8s(run, GATEWAY, "worker").inputs["spec"]["listeners"]
    assert (listener["protocol"], listener["port"]) == ("HTTPS", 443)
    assert listener["tls"] == {
        "mode": "Terminate",
        "certificateRefs": [{"kind": "Secret", "group": "", "name": "worker-tls"}],
    }


def test_the_namespaces_deny_by_default_and_allow_the_gateway(tmp_path: Path) -> None:
    run = aks_only(tmp_path, "staging")
    policies = {
        (r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"]): r.inputs["spec"]
        for r in run.by_type(NETWORK_POLICY)
    }
    deny = {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    assert policies["worker", "default-deny"] == deny
    (rule,) = policies["worker", "worker-allow-ingress"]["ingress"]
    assert [p["ipBlock"]["cidr"] for p in rule["from"]] == ["10.70.8.0/24"]  # AGC's subnet only
    assert rule["ports"] == [{"protocol": "TCP", "port": 9090}]
    dns, https = policies["worker", "worker-allow-egress"]["egress"]
    assert dns["to"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
    }
    assert https["ports"] == [{"protocol": "TCP", "port": 443}]
    # The ALB Controller's namespace: nothing may connect in, it calls out on HTTPS.
    assert policies["azure-alb-system", "default-deny"] == deny
    _, out = policies["azure-alb-system", "allow-egress"]["egress"]
    assert out["ports"] == [{"protocol": "TCP", "port": 443}]


def test_the_kubeconfig_signs_in_with_kubelogin(tmp_path: Path) -> None:
    """Server and CA from the cluster's user credentials (no secret on an Entra-only cluster); the user
    is kubelogin for the AKS server application, with no token or certificate of its own."""
    user = (
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: Q0EtREFUQQ==\n"
        "    server: https://pouw-staging-abc.hcp.westeurope.azmk8s.io:443\n  name: pouw-staging\n"
        "users:\n- name: clusterUser\n  user:\n    exec:\n      command: kubelogin\n"
    )
    config = json.loads(aks.kubeconfig(base64.b64encode(user.encode()).decode(), "ignored", "pouw-staging"))
    (cluster,) = config["clusters"]
    assert cluster["cluster"] == {
        "server": "https://pouw-staging-abc.hcp.westeurope.azmk8s.io:443",
        "certificate-authority-data": "Q0EtREFUQQ==",
    }
    (user_entry,) = config["users"]
    assert set(user_entry["user"]) == {"exec"}
    exec_ = user_entry["user"]["exec"]
    assert exec_["command"] == "kubelogin" and exec_["interactiveMode"] == "Never"
    assert exec_["args"] == [
        "get-token",
        "--environment",
        "AzurePublicCloud",
        "--server-id",
        aks.AKS_SERVER_APP,
    ]
    # A new cluster (no credentials yet): its FQDN.
    fallback = json.loads(aks.kubeconfig(None, "pouw-staging-abc.hcp.westeurope.azmk8s.io", "pouw-staging"))
    assert fallback["clusters"][0]["cluster"] == {
        "server": "https://pouw-staging-abc.hcp.westeurope.azmk8s.io:443"
    }
    # The provider's kubeconfig stays a secret in the plan.
    provider = aks_only(tmp_path, "staging").get("pulumi:providers:kubernetes", "aks-k8s")
    assert provider.inputs["kubeconfig"][SIG_KEY] == SECRET_SIG


def problems(mutate: Callable[[dict[str, Any]], None], stack: str = "staging") -> list[str]:
    raw = copy.deepcopy(namespace(stack))
    mutate(raw)
    with pytest.raises(SettingsError) as err:
        parse(raw, stack, secret_keys(stack), others(stack))
    return err.value.problems


def test_settings_name_the_key_and_the_fix() -> None:
    def no_azure(raw: dict[str, Any]) -> None:
        del raw["azure"]

    assert "pouw-cicd:aks: needs pouw-cicd:azure (location, resourceGroup); add it" in problems(no_azure)

    def no_aks(raw: dict[str, Any]) -> None:
        del raw["aks"]

    assert "pouw-cicd:services[1].targets: aks needs pouw-cicd:aks; add it" in problems(no_aks)

    def no_acr(raw: dict[str, Any]) -> None:
        del raw["registries"]["acr"]

    assert (
        "pouw-cicd:services[1].targets: aks pulls from acr, but registries.acr is not configured; "
        "add it or remove aks" in problems(no_acr)
    )

    def nobody(raw: dict[str, Any]) -> None:
        raw["aks"]["authorizedCidrs"] = []
        raw["network"]["natGateways"] = "none"

    (found,) = [p for p in problems(nobody) if p.startswith("pouw-cicd:aks.")]
    assert found.startswith("pouw-cicd:aks.authorizedCidrs: the AKS API server would admit no one")
    assert "authorizedCidrs: [203.0.113.0/24]" in found

    def bad_vm(raw: dict[str, Any]) -> None:
        raw["aks"]["nodes"] = {"vmSize": "D4ds v5"}

    assert problems(bad_vm) == [
        "pouw-cicd:aks.nodes.vmSize: must be an Azure VM size such as Standard_D4ds_v5, got 'D4ds v5'"
    ]

    def unordered(raw: dict[str, Any]) -> None:
        raw["aks"]["systemNodes"] = {"minCount": 3, "maxCount": 2}

    assert problems(unordered) == [
        "pouw-cicd:aks.systemNodes: maxCount (2) is below minCount (3); raise maxCount"
    ]

    def private_registry(raw: dict[str, Any]) -> None:
        raw["registries"]["acr"]["networkAccess"] = "privateEndpoints"
        del raw["registries"]["acr"]["allowedCidrs"]

    (found,) = [
        p for p in problems(private_registry) if p.startswith("pouw-cicd:registries.acr.networkAccess")
    ]
    assert "set networkAccess: selectedNetworks" in found and "or remove aks" in found


def test_the_acr_rule_count_includes_the_stacks_own_egress() -> None:
    raw = copy.deepcopy(namespace("prod"))
    raw["registries"]["acr"]["networkAccess"] = "selectedNetworks"
    raw["registries"]["acr"]["allowedCidrs"] = [f"198.51.{i}.0/24" for i in range(97)]
    found = [p for p in problems(lambda r: r.update(raw), "prod") if "IP rules" in p]
    assert found == [
        "pouw-cicd:registries.acr.allowedCidrs: lists 97 ranges, and this stack's own egress takes 4 more "
        "rules (NAT gateways, AKS): ACR allows at most 100 IP rules; merge ranges into wider ones or "
        "remove some"
    ]
    raw["registries"]["acr"]["allowedCidrs"] = raw["registries"]["acr"]["allowedCidrs"][:96]
    settings = parse(raw, "prod", secret_keys("prod"), others("prod"))
    assert (
        settings.acr_egress_rules() == 4
        and settings.aks is not None
        and settings.aks.channel(settings.is_prod) == "stable"
    )


def test_secure_environment_reaches_the_pods_by_reference(tmp_path: Path) -> None:
    """prod's worker reads DATABASE_URL (azureSecureEnvironment) on AKS as on ACI: from a Secret in its
    namespace whose value stays secret in the state; the pod template names the Secret, never the value."""
    run = aks_only(tmp_path, "prod")
    secret = k8s(run, "kubernetes:core/v1:Secret", "worker-secure-environment")
    assert secret.inputs["metadata"]["namespace"] == "worker" and secret.inputs["type"] == "Opaque"
    data = secret.inputs["stringData"]  # the whole map is a secret (the Kubernetes SDK marks it)
    assert data[SIG_KEY] == SECRET_SIG and set(data["value"]) == {"DATABASE_URL"}
    deployments = [d for d in run.by_type(DEPLOYMENT) if d.inputs["metadata"]["namespace"] == "worker"]
    assert deployments
    for deployment in deployments:
        (container,) = deployment.inputs["spec"]["template"]["spec"]["containers"]
        (entry,) = [e for e in container["env"] if e["name"] == "DATABASE_URL"]
        assert entry == {
            "name": "DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": "worker-secure-environment", "key": "DATABASE_URL"}},
        }
    assert "postgres" not in json.dumps([d.inputs for d in deployments])
