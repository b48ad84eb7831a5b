"""Signature verification at admission: Kyverno's ClusterPolicy rendered on every cluster (EKS, GKE, AKS),
its chart values, the registry identity it reads with on each cloud, GKE's webhook firewall, and the
settings that choose the signer and the enforcement."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import admission
from components.permissions import ADMISSION_READS, ADMISSION_ROLES, GCP_ROLE_PERMISSIONS
from components.releases import RECORD_FILE, ReleaseRecord, release_repository
from components.settings import SettingsError, parse
from components.targets.aci import ACR_PULL_ROLE
from preflight.cli import main
from preflight.engine import SECRET_SIG, SIG_KEY, ProgramRun, Registration
from preflight.report import Preflight
from tests.conftest import ROOT, project_copy, stack_file
from tests.test_pipelines import workflow
from tests.test_settings import namespace, others, secret_keys
from tests.test_targets import build

POLICY = "kubernetes:kyverno.io/v1:ClusterPolicy"
RELEASE = "kubernetes:helm.sh/v3:Release"
NAMESPACE = "kubernetes:core/v1:Namespace"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
SIGNER = "https://github.com/pouw/pouw-cicd/.github/workflows/release.yml@refs/tags/"
CLUSTERS = {"eks": ("amazon", "web"), "gke": ("google", "web"), "aks": ("azure", "worker")}


def kyverno(run: ProgramRun, cluster: str) -> dict[str, Registration]:
    """The Kyverno component's children on one cluster, by type."""
    component = run.get("pouw:index:Kyverno", f"{cluster}-kyverno")
    return {r.type: r for r in run.resources if r.parent == component.urn and r.type != NETWORK_POLICY}


def policy_spec(run: ProgramRun, cluster: str) -> dict[str, Any]:
    found = run.get(POLICY, f"{cluster}-kyverno-verify-images").inputs
    assert found["apiVersion"] == "kyverno.io/v1" and found["kind"] == "ClusterPolicy"
    spec: dict[str, Any] = found["spec"]
    return spec


@pytest.mark.parametrize("cluster", sorted(CLUSTERS))
def test_every_cluster_verifies_its_services_release_signatures(tmp_path: Path, cluster: str) -> None:
    credentials, service = CLUSTERS[cluster]
    run = build(tmp_path, "staging", [cluster], lambda c: None)
    spec = policy_spec(run, cluster)
    assert spec["background"] is False and spec["failurePolicy"] == "Fail"
    (rule,) = spec["rules"]  # one service of the stack runs on this cluster
    assert rule["match"] == {"any": [{"resources": {"kinds": ["Pod"], "namespaces": [service]}}]}
    assert set(rule["exclude"]["any"][0]["resources"]["namespaces"]) >= {"kube-system", "kyverno"}
    (verify,) = rule["verifyImages"]
    assert verify["imageReferences"] == ["*"] and verify["type"] == "Cosign"
    assert verify["failureAction"] == "Enforce" and verify["required"] is True
    assert verify["mutateDigest"] is True and verify["verifyDigest"] is True
    # Signatures live where release.yml pushed the image: GHCR, under the repository's owner.
    assert verify["repository"] == f"ghcr.io/pouw/{service}"
    assert verify["imageRegistryCredentials"] == {"providers": [credentials]}
    (attestor,) = verify["attestors"]
    (entry,) = attestor["entries"]
    keyless = entry["keyless"]
    assert keyless["issuer"] == "https://token.actions.githubusercontent.com"
    assert keyless["rekor"] == {"url": "https://rekor.sigstore.dev"}
    subject = re.compile(keyless["subjectRegExp"])
    # The identity `cosign verify` in release.yml checks, at the service's own tags only.
    assert subject.match(f"{SIGNER}{service}/v1.5.0")
    assert not subject.match(f"{SIGNER}other/v1.5.0")
    assert not subject.match(f"{SIGNER.replace('release.yml', 'deploy.yml')}{service}/v1.5.0")
    assert not subject.match(
        f"https://github.com/evil/pouw-cicd/.github/workflows/release.yml@refs/tags/{service}/v1"
    )
    # The policy waits for the chart that defines its kind.
    children = kyverno(run, cluster)
    policy = run.get(POLICY, f"{cluster}-kyverno-verify-images")
    assert children[RELEASE].urn in policy.dependencies


def test_dev_audits_without_mutating(tmp_path: Path) -> None:
    """Kyverno refuses `mutateDigest` with `Audit` (ImageVerification.Validate); dev reports only."""
    run = build(tmp_path, "dev", ["eks"], lambda c: None)
    spec = policy_spec(run, "eks")
    assert spec["failurePolicy"] == "Ignore"
    (verify,) = spec["rules"][0]["verifyImages"]
    assert verify["failureAction"] == "Audit"
    assert verify["mutateDigest"] is False and verify["verifyDigest"] is True
    values = run.get(RELEASE, "eks-kyverno").inputs["values"]
    assert values["admissionController"]["replicas"] == 1


def test_enforcement_and_signer_come_from_settings(tmp_path: Path) -> None:
    def configure(config: dict[str, Any]) -> None:
        config["pouw-cicd:admission"] = {"signer": "acme/releases", "enforce": True}

    run = build(tmp_path, "dev", ["eks"], configure)
    (verify,) = policy_spec(run, "eks")["rules"][0]["verifyImages"]
    assert verify["failureAction"] == "Enforce" and verify["mutateDigest"] is True
    assert verify["repository"] == "ghcr.io/acme/web"
    subject = verify["attestors"][0]["entries"][0]["keyless"]["subjectRegExp"]
    assert re.match(
        subject, "https://github.com/acme/releases/.github/workflows/release.yml@refs/tags/web/v2.0.0"
    )


@pytest.mark.parametrize("cluster", sorted(CLUSTERS))
def test_private_release_packages_are_read_with_a_ghcr_login(tmp_path: Path, cluster: str) -> None:
    """The signatures live on GHCR, which the clusters' cloud credential providers cannot read: a
    private package needs a GHCR token, from secure config into a dockerconfigjson Secret in Kyverno's
    namespace that every rule names (`imageRegistryCredentials.secrets`), kept secret in the state."""

    def configure(config: dict[str, Any]) -> None:
        config["pouw-cicd:admission"] = {"ghcrTokenKey": "ghcrSignaturesToken"}
        config["pouw-cicd:ghcrSignaturesToken"] = {"secure": "v1:c2lnbmF0dXJlcw=="}

    run = build(tmp_path, "staging", [cluster], configure)
    secret = run.get("kubernetes:core/v1:Secret", f"{cluster}-kyverno-ghcr")
    assert secret.inputs["metadata"]["name"] == admission.GHCR_SECRET
    assert secret.inputs["metadata"]["namespace"] == "kyverno"
    assert secret.inputs["type"] == "kubernetes.io/dockerconfigjson"
    assert secret.inputs["stringData"][SIG_KEY] == SECRET_SIG
    login = json.loads(secret.inputs["stringData"]["value"][".dockerconfigjson"])
    assert set(login["auths"]) == {"ghcr.io"}
    for rule in policy_spec(run, cluster)["rules"]:
        (verify,) = rule["verifyImages"]
        assert verify["imageRegistryCredentials"]["secrets"] == [admission.GHCR_SECRET]
    assert secret.urn in run.get(POLICY, f"{cluster}-kyverno-verify-images").dependencies
    without = build(tmp_path / "public", "staging", [cluster], lambda c: None)
    assert not [
        r for r in without.by_type("kubernetes:core/v1:Secret") if r.name == f"{cluster}-kyverno-ghcr"
    ]


def test_the_ghcr_token_key_must_be_a_secret() -> None:
    raw = copy.deepcopy(namespace("staging"))
    raw["admission"] = {"ghcrTokenKey": "ghcrSignaturesToken"}
    with pytest.raises(SettingsError) as caught:
        parse(raw, "staging", secret_keys("staging"), others("staging"))
    assert "pouw-cicd:admission.ghcrTokenKey: config key pouw-cicd:ghcrSignaturesToken is not set" in str(
        caught.value
    )


def test_the_chart_is_pinned_in_a_restricted_namespace(tmp_path: Path) -> None:
    run = build(tmp_path, "prod", ["eks"], lambda c: None)
    children = kyverno(run, "eks")
    release = children[RELEASE].inputs
    assert release["chart"] == "kyverno" and release["version"] == "3.9.0"
    assert release["repositoryOpts"] == {"repo": "https://kyverno.github.io/kyverno/"}
    assert release["namespace"] == "kyverno"
    labels = children[NAMESPACE].inputs["metadata"]["labels"]
    assert {labels[f"pod-security.kubernetes.io/{m}"] for m in ("enforce", "audit", "warn")} == {"restricted"}
    values = release["values"]
    for controller in admission.CONTROLLERS:
        assert values[controller]["podSecurityContext"] == {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
    controller = values["admissionController"]
    # Its webhook fails closed when enforcing: three replicas and a PDB keep admissions answered.
    assert controller["replicas"] == 3 and controller["podDisruptionBudget"]["enabled"] is True
    assert controller["webhookServer"] == {"port": 9443}
    assert controller["rbac"]["serviceAccount"]["name"] == "kyverno-admission-controller"
    (excluded,) = values["config"]["webhooks"]["namespaceSelector"]["matchExpressions"]
    assert excluded["operator"] == "NotIn" and "kube-system" in excluded["values"]
    # Nothing reaches Kyverno but the API server on the webhook port; it calls out on HTTPS and DNS.
    policies = {
        r.inputs["metadata"]["name"]: r.inputs["spec"]
        for r in run.by_type(NETWORK_POLICY)
        if r.inputs["metadata"]["namespace"] == "kyverno"
    }
    assert set(policies) == {"default-deny", "allow-egress", "allow-webhook"}
    assert policies["allow-webhook"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 9443}]}]


def test_eks_kyverno_reads_the_stacks_repositories_through_irsa(tmp_path: Path) -> None:
    run = build(tmp_path, "staging", ["eks"], lambda c: None)
    role = run.get("aws:iam/role:Role", "eks-kyverno").inputs
    trust = json.loads(role["assumeRolePolicy"])
    (statement,) = trust["Statement"]
    conditions = json.dumps(statement["Condition"])
    assert "system:serviceaccount:kyverno:kyverno-admission-controller" in conditions
    assert role["permissionsBoundary"]  # the stack's boundary, as every role it makes
    policy = json.loads(run.get("aws:iam/rolePolicy:RolePolicy", "eks-kyverno").inputs["policy"])
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert actions == set(ADMISSION_READS["aws"].read)
    login, reads = policy["Statement"]
    assert login["Resource"] == "*" and login["Action"] == ["ecr:GetAuthorizationToken"]
    repositories = run.by_type("aws:ecr/repository:Repository")
    assert reads["Resource"] == sorted(
        r.outputs["arn"] for r in repositories if r.inputs["name"].endswith("web")
    )
    values = run.get(RELEASE, "eks-kyverno").inputs["values"]
    annotations = values["admissionController"]["rbac"]["serviceAccount"]["annotations"]
    assert annotations == {
        "eks.amazonaws.com/role-arn": run.get("aws:iam/role:Role", "eks-kyverno").outputs["arn"]
    }


def test_gke_kyverno_reads_the_repository_with_workload_identity(tmp_path: Path) -> None:
    run = build(tmp_path, "staging", ["gke"], lambda c: None)
    account = run.get("gcp:serviceaccount/account:Account", "gke-kyverno")
    read = run.get("gcp:artifactregistry/repositoryIamMember:RepositoryIamMember", "gke-kyverno-read").inputs
    assert read["role"] == ADMISSION_ROLES["gcp"] and read["repository"] == "containers"
    assert read["member"] == f"serviceAccount:{account.outputs['email']}"
    # The role holds the reads the table names, no more is asked.
    assert set(ADMISSION_READS["gcp"].read) <= GCP_ROLE_PERMISSIONS[ADMISSION_ROLES["gcp"]]
    federated = run.get("gcp:serviceaccount/iAMMember:IAMMember", "gke-kyverno-workload-identity").inputs
    assert federated["role"] == "roles/iam.workloadIdentityUser"
    assert (
        federated["member"] == "serviceAccount:pouw-staging.svc.id.goog[kyverno/kyverno-admission-controller]"
    )
    values = run.get(RELEASE, "gke-kyverno").inputs["values"]
    annotations = values["admissionController"]["rbac"]["serviceAccount"]["annotations"]
    assert annotations == {"iam.gke.io/gcp-service-account": account.outputs["email"]}


def test_gke_control_plane_reaches_the_webhook(tmp_path: Path) -> None:
    """A private GKE control plane reaches nodes on 443 and 10250 only: without this rule every pod
    admission in a service namespace times out."""
    run = build(tmp_path, "staging", ["gke"], lambda c: None)
    rule = run.get("gcp:compute/firewall:Firewall", "gke-kyverno-webhook")
    cluster = run.get("gcp:container/cluster:Cluster", "gke").inputs
    master = cluster["privateClusterConfig"]["masterIpv4CidrBlock"]
    assert rule.inputs["direction"] == "INGRESS" and rule.inputs["sourceRanges"] == [master]
    assert rule.inputs["allows"] == [{"protocol": "tcp", "ports": ["9443"]}]
    nodes = run.get("gcp:serviceaccount/account:Account", "gke-nodes").outputs["email"]
    assert rule.inputs["targetServiceAccounts"] == [nodes]
    assert rule.inputs["network"] == cluster["network"]  # the cluster's own VPC
    # The chart's webhook listens where the rule opens.
    values = run.get(RELEASE, "gke-kyverno").inputs["values"]
    assert values["admissionController"]["webhookServer"]["port"] == 9443
    kyverno_release = run.get(RELEASE, "gke-kyverno")
    assert rule.urn in kyverno_release.dependencies


def test_aks_kyverno_pulls_with_its_own_workload_identity(tmp_path: Path) -> None:
    run = build(tmp_path, "staging", ["aks"], lambda c: None)
    identity = run.get("azure-native:managedidentity:UserAssignedIdentity", "aks-kyverno")
    credential = run.get("azure-native:managedidentity:FederatedIdentityCredential", "aks-kyverno").inputs
    assert credential["subject"] == "system:serviceaccount:kyverno:kyverno-admission-controller"
    pull = run.get("azure-native:authorization:RoleAssignment", "aks-kyverno-pull").inputs
    assert ADMISSION_ROLES["azure"] == ACR_PULL_ROLE
    assert pull["roleDefinitionId"].endswith(f"/roleDefinitions/{ACR_PULL_ROLE}")
    (acr,) = run.by_type("azure-native:containerregistry:Registry")
    assert pull["scope"] == acr.outputs["id"]
    values = run.get(RELEASE, "aks-kyverno").inputs["values"]["admissionController"]
    assert values["rbac"]["serviceAccount"]["annotations"] == {
        "azure.workload.identity/client-id": identity.outputs["clientId"]
    }
    assert values["podLabels"] == {"azure.workload.identity/use": "true"}


def test_a_cluster_without_services_has_no_kyverno(tmp_path: Path) -> None:
    def elsewhere(config: dict[str, Any]) -> None:
        for service in config["pouw-cicd:services"]:
            service["targets"] = [t for t in service["targets"] if t != "gke"]

    run = build(tmp_path, "staging", ["gke"], elsewhere)
    assert run.by_type("pouw:index:Kyverno") == [] and run.by_type(POLICY) == []


def problems(stack: str, mutate: Callable[[dict[str, Any]], None]) -> list[str]:
    raw = copy.deepcopy(namespace(stack))
    mutate(raw)
    with pytest.raises(SettingsError) as err:
        parse(raw, stack, secret_keys(stack), others(stack))
    return err.value.problems


def test_settings_errors_name_the_key_and_the_fix() -> None:
    def gitlab(raw: dict[str, Any]) -> None:
        raw["sourceRepository"] = "https://gitlab.com/pouw/pouw-cicd"

    (problem,) = problems("staging", gitlab)
    assert problem.startswith(
        "pouw-cicd:admission.signer: sourceRepository https://gitlab.com/pouw/pouw-cicd"
    )
    assert "set admission.signer to the <owner>/<repo> whose release.yml signs the images" in problem

    def bad_signer(raw: dict[str, Any]) -> None:
        raw["admission"] = {"signer": "not a repo"}

    (problem,) = problems("staging", bad_signer)
    assert problem.startswith("pouw-cicd:admission.signer:") and "<owner>/<repo> on GitHub" in problem

    def bad_chart(raw: dict[str, Any]) -> None:
        raw["admission"] = {"kyvernoChartVersion": "latest"}

    (problem,) = problems("staging", bad_chart)
    assert problem.startswith("pouw-cicd:admission.kyvernoChartVersion:") and "chart version" in problem


def test_signer_defaults_to_the_source_repository() -> None:
    raw = copy.deepcopy(namespace("staging"))
    raw["sourceRepository"] = "https://github.com/Acme/Shop.git"
    settings = parse(raw, "staging", secret_keys("staging"), others("staging"))
    assert settings.signer_repository == "Acme/Shop"
    assert settings.admission_enforced is True
    assert release_repository("Acme/Shop", "web") == "ghcr.io/acme/web"


def test_kyverno_reads_the_signatures_where_the_release_recorded_them(tmp_path: Path) -> None:
    """One GHCR repository per service: release.yml's image name, registry.py's GHCR target and
    Kyverno's signature repository are `release_repository`; a version the record puts elsewhere is
    read there (the record is what the stack deploys a copy of)."""
    out = tmp_path / "out"
    (step,) = [s for s in workflow("release.yml")["jobs"]["build"]["steps"] if s.get("name") == "Image name"]
    env = {"PATH": "/usr/bin:/bin", "OWNER": "Pouw", "COMPONENT": "web", "GITHUB_OUTPUT": str(out)}
    subprocess.run(["bash", "-c", step["run"]], env=env, check=True)
    assert out.read_text() == f"image={release_repository('Pouw', 'web')}\n" == "image=ghcr.io/pouw/web\n"
    raw = namespace("staging")
    version = raw["services"][0]["version"]
    data = yaml.safe_load((ROOT / RECORD_FILE).read_text())
    data["services"]["web"][version]["repository"] = "ghcr.io/pouw-archive/web"
    record = ReleaseRecord.model_validate(data)
    settings = parse(raw, "staging", secret_keys("staging"), others("staging"), record)
    verification = admission.Verification.of(settings, "eks")
    assert verification is not None and verification.signatures == {"web": "ghcr.io/pouw-archive/web"}
    spec = admission.cluster_policy(
        verification.services, verification.signer, True, "amazon", verification.signatures
    )
    (verify,) = spec["rules"][0]["verifyImages"]
    assert verify["repository"] == "ghcr.io/pouw-archive/web"


def test_a_staging_cluster_that_only_audits_is_blocked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The gate (cluster-image-verification, mandatory in staging) over the whole program: audit-only
    admission on staging's clusters is a mandatory violation per cluster namespace."""
    config = stack_file("staging")["config"]
    config["pouw-cicd:admission"] = {"enforce": False}
    project = project_copy(tmp_path, "staging", config)
    assert (
        main(["--stack", "staging", "--project-dir", str(project), "--json", str(tmp_path / "plan.json")])
        == 1
    )
    diagnostics = json.loads((tmp_path / "plan.json").read_text())["diagnostics"]
    found = sorted(
        d["message"].split(" runs ")[0] for d in diagnostics if d["policy"] == "cluster-image-verification"
    )
    # web on EKS and GKE, worker on AKS: one violation per cluster, never satisfied by another's policy.
    assert found == ["namespace web", "namespace web", "namespace worker"]
    assert {d["level"] for d in diagnostics if d["policy"] == "cluster-image-verification"} == {"mandatory"}


BINAUTHZ = "pouw:index:BinaryAuthorization"


def test_cloud_run_requires_the_release_attestation(tmp_path: Path) -> None:
    run = build(tmp_path, "prod", ["cloudrun"], lambda c: None)
    service = run.get("gcp:cloudrunv2/service:Service", "web-cloudrun").inputs
    assert service["binaryAuthorization"] == {"useDefault": True}
    attestor = run.get("gcp:binaryauthorization/attestor:Attestor", "binauthz-attestor")
    note = run.get("gcp:containeranalysis/note:Note", "binauthz-note")
    authority = attestor.inputs["attestationAuthorityNote"]
    assert authority["noteReference"] == note.outputs["name"] == "pouw-prod-release"
    (key,) = authority["publicKeys"]
    assert key["pkixPublicKey"]["signatureAlgorithm"] == "ECDSA_P256_SHA256"
    policy = run.get("gcp:binaryauthorization/policy:Policy", "binauthz-policy").inputs
    assert policy["globalPolicyEvaluationMode"] == "ENABLE"
    assert policy["defaultAdmissionRule"] == {
        "evaluationMode": "REQUIRE_ATTESTATION",
        "enforcementMode": "ENFORCED_BLOCK_AND_AUDIT_LOG",
        "requireAttestationsBies": ["pouw-prod-release"],
    }
    signing = run.get("gcp:kms/cryptoKey:CryptoKey", "binauthz-signing")
    assert signing.inputs["purpose"] == "ASYMMETRIC_SIGN"
    assert signing.inputs["versionTemplate"] == {"algorithm": "EC_SIGN_P256_SHA256", "protectionLevel": "HSM"}
    assert signing.protect and run.get("gcp:kms/keyRing:KeyRing", "binauthz-keys").protect  # prod
    assert run.get("gcp:kms/keyRing:KeyRing", "binauthz-keys").inputs["name"] == "pouw-prod-binauthz"
    assert signing.inputs["name"] == "release-attestor"  # the names release.yml's step signs with


def test_the_attester_holds_just_what_sign_and_create_needs(tmp_path: Path) -> None:
    run = build(tmp_path, "staging", ["cloudrun"], lambda c: None)
    attester = run.get("gcp:serviceaccount/account:Account", "binauthz-attester")
    assert attester.inputs["accountId"] == "attest-staging"
    member = f"serviceAccount:{attester.outputs['email']}"
    grants = {
        r.type.split("/")[-1].split(":")[0]: (r.inputs["role"], r.inputs["member"])
        for r in run.resources
        if r.parent == run.get(BINAUTHZ, "binauthz").urn and "role" in r.inputs
    }
    assert grants == {
        "cryptoKeyIAMMember": ("roles/cloudkms.signerVerifier", member),
        "noteIamMember": ("roles/containeranalysis.notes.attacher", member),
        "attestorIamMember": ("roles/binaryauthorization.attestorsViewer", member),
        "iAMMember": ("roles/containeranalysis.occurrences.editor", member),
    }
    # Staging enforces too; dev has no Cloud Run.
    policy = run.get("gcp:binaryauthorization/policy:Policy", "binauthz-policy").inputs
    assert policy["defaultAdmissionRule"]["enforcementMode"] == "ENFORCED_BLOCK_AND_AUDIT_LOG"


def test_cloud_run_dry_runs_where_admission_audits(tmp_path: Path) -> None:
    def audit(config: dict[str, Any]) -> None:
        config["pouw-cicd:admission"] = {"enforce": False}

    run = build(tmp_path, "staging", ["cloudrun"], audit)
    policy = run.get("gcp:binaryauthorization/policy:Policy", "binauthz-policy").inputs
    assert policy["defaultAdmissionRule"]["enforcementMode"] == "DRYRUN_AUDIT_LOG_ONLY"


def test_only_the_release_environment_may_attest(stack_runs: dict[str, Preflight]) -> None:
    run = stack_runs["staging"].run
    binding = run.get("gcp:serviceaccount/iAMMember:IAMMember", "pipeline-attester-wif").inputs
    assert binding["role"] == "roles/iam.workloadIdentityUser"
    assert binding["member"].endswith("/subject/repo:pouw/pouw-cicd:environment:release")
    assert (
        binding["serviceAccountId"]
        == run.get("gcp:serviceaccount/account:Account", "binauthz-attester").outputs["name"]
    )
    assert stack_runs["dev"].run.by_type(BINAUTHZ) == []  # dev runs no Cloud Run


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_the_attestation_names_the_image_cloud_run_runs(
    stack_runs: dict[str, Preflight], stack: str, tmp_path: Path
) -> None:
    """The artifact URL the release attests, from the stack's `binauthzEnvironment` output (the
    variable's line), is exactly the image each Cloud Run service deploys: Binary Authorization matches
    it as is."""
    config = stack_file(stack)["config"]
    gcp, repository = (
        config["pouw-cicd:gcp"],
        config["pouw-cicd:registries"]["artifactRegistry"]["repository"],
    )
    record = yaml.safe_load((ROOT / RECORD_FILE).read_text())["services"]
    run = stack_runs[stack].run
    services = run.by_type("gcp:cloudrunv2/service:Service")
    assert services
    step = next(s for s in release_sign_job()["steps"] if s.get("name") == "Attest for Binary Authorization")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("curl", "jq", "gcloud"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\n')
        (bin_dir / tool).chmod(0o755)
    for service in services:
        (image,) = [c["image"] for c in service.inputs["template"]["containers"]]
        name, _, digest = image.rpartition("/")[2].partition("@")
        assert digest in {entry["digest"] for entry in record[name].values()}
        # The stack's own output is the variable's line for this environment.
        line = run.outputs["pipelineIdentities"]["binauthzEnvironment"] + "\n"
        assert line.startswith(f"{stack} {gcp['project']} {gcp['region']} {repository} projects/")
        env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "ENVIRONMENTS": line,
            "COMPONENT": name,
            "DIGEST": digest,
            "RUNNER_TEMP": str(tmp_path),
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "t",
            "ACTIONS_ID_TOKEN_REQUEST_URL": "https://token.example/?x=1",
        }
        subprocess.run(["bash", "-c", step["run"]], env=env, check=True)
        (create,) = [c for c in log.read_text().splitlines() if "sign-and-create" in c]
        log.unlink()
        assert f"--artifact-url={image} " in create


def release_sign_job() -> dict[str, Any]:
    jobs: dict[str, Any] = workflow("release.yml")["jobs"]
    return jobs["sign"]


def test_release_attests_after_signing_and_before_the_release() -> None:
    sign = release_sign_job()
    names = [s.get("name") or s.get("uses", "") for s in sign["steps"]]
    attest = names.index("Attest for Binary Authorization")
    signing = names.index("Sign the digest (keyless)")
    verify = names.index("Verify the signature as a deploy will")
    assert signing < verify < attest  # attested only once the signature verifies
    assert sign["environment"] == "release" and sign["permissions"]["id-token"] == "write"
    # The GitHub Release needs the sign job, so it waits for the attestation too.
    assert "sign" in workflow("release.yml")["jobs"]["release"]["needs"]


def test_release_signs_in_the_format_kyverno_reads(tmp_path: Path) -> None:
    """Kyverno's Cosign verifier reads the `sha256-<digest>.sig` tag in the rule's `repository` (GHCR),
    and cosign 3 signs as a referrers-API bundle unless told otherwise (which `cosign verify` accepts, so
    only the clusters would notice): the release signs in the tag format and refuses a release whose
    tag is missing, before the signature is verified."""
    (rule,) = admission.verify_rule("web", "pouw/pouw-cicd", True, "amazon")["verifyImages"]
    assert rule["type"] == "Cosign" and rule["repository"] == "ghcr.io/pouw/web"
    steps = release_sign_job()["steps"]
    names = [s.get("name") or s.get("uses", "") for s in steps]
    signing = steps[names.index("Sign the digest (keyless)")]["run"]
    assert "--new-bundle-format=false" in signing and "--use-signing-config=false" in signing
    check = names.index("The signature is where admission reads it")
    assert (
        names.index("Sign the digest (keyless)")
        < check
        < names.index("Verify the signature as a deploy will")
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    digest = "sha256:" + "a" * 64
    (bin_dir / "cosign").write_text('#!/bin/sh\necho "ghcr.io/pouw/web:sha256-aaaa.sig"\n')
    for exists in (True, False):
        (bin_dir / "docker").write_text(
            f'#!/bin/sh\necho "docker $*" >> "{tmp_path}/calls"\nexit {0 if exists else 1}\n'
        )
        for tool in ("cosign", "docker"):
            (bin_dir / tool).chmod(0o755)
        done = subprocess.run(
            ["bash", "-c", steps[check]["run"]],
            env={"PATH": f"{bin_dir}:/usr/bin:/bin", "IMAGE": "ghcr.io/pouw/web", "DIGEST": digest},
            capture_output=True,
            text=True,
            check=False,
        )
        assert (done.returncode == 0) is exists, done.stdout
    assert (tmp_path / "calls").read_text().splitlines()[0] == (
        "docker buildx imagetools inspect ghcr.io/pouw/web:sha256-aaaa.sig"
    )
    assert "Kyverno would refuse" in done.stdout


def test_the_attestation_step_signs_each_environments_registry_copy(tmp_path: Path) -> None:
    """The step's shell, run with stand-ins for curl, jq and gcloud that log their arguments."""
    step = next(s for s in release_sign_job()["steps"] if s.get("name") == "Attest for Binary Authorization")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("curl", "jq", "gcloud"):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\n')
        script.chmod(0o755)
    environments = (
        "staging pouw-staging europe-west1 containers projects/1/locations/global/workloadIdentityPools/"
        "github-staging/providers/github\n"
        "prod pouw-prod europe-west1 containers projects/2/locations/global/workloadIdentityPools/"
        "github-prod/providers/github\n"
    )
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "ENVIRONMENTS": environments,
        "COMPONENT": "web",
        "DIGEST": "sha256:" + "a" * 64,
        "RUNNER_TEMP": str(tmp_path),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "t",
        "ACTIONS_ID_TOKEN_REQUEST_URL": "https://token.example/?x=1",
    }
    done = subprocess.run(["bash", "-c", step["run"]], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    creates = [c for c in calls if c.startswith("gcloud container binauthz attestations sign-and-create")]
    assert len(creates) == 2
    digest = "sha256:" + "a" * 64
    assert f"--artifact-url=europe-west1-docker.pkg.dev/pouw-staging/containers/web@{digest}" in creates[0]
    assert (
        "--attestor=pouw-staging-release" in creates[0]
        and "--keyversion-keyring=pouw-staging-binauthz" in creates[0]
    )
    assert f"--artifact-url=europe-west1-docker.pkg.dev/pouw-prod/containers/web@{digest}" in creates[1]
    logins = [c for c in calls if c.startswith("gcloud iam workload-identity-pools create-cred-config")]
    assert "--service-account=attest-staging@pouw-staging.iam.gserviceaccount.com" in logins[0]
    assert "audience=https://iam.googleapis.com/projects/2/" in [c for c in calls if c.startswith("curl")][1]
