"""Signature verification at admission: every image a service namespace runs carries the release
workflow's keyless cosign signature, checked by the cluster itself (Kyverno) on EKS, GKE and AKS.

The release (.github/workflows/release.yml, job `sign`) signs `ghcr.io/<owner>/<service>@<digest>` with
cosign keyless: a Fulcio certificate naming the workflow at its tag
(`https://github.com/<owner>/<repo>/.github/workflows/release.yml@refs/tags/<service>/v<version>`),
issued to a GitHub Actions OIDC token, logged in Rekor; the signature is pushed next to the image on
GHCR. Every other registry holds a carbon copy of that digest (components/image.py), without the
signature, so the policy fetches signatures from the GHCR repository (`repository`) and the image
itself, to resolve a tag to a digest, from the registry the cluster pulls from (Kyverno's cloud
credential provider for that registry; the controller's cloud identity holds the registry read the
permission table's ADMISSION_READS lists, components/permissions.py).

Kyverno's `ClusterPolicy` `verifyImages` fields as of Kyverno v1.19 (chart 3.9.0):
https://kyverno.io/docs/policy-types/cluster-policy/verify-images/ and the API types
api/kyverno/v1/image_verification_types.go (`failureAction` per rule replaces the deprecated
`spec.validationFailureAction`; `mutateDigest` must be false for `Audit`; keyless attestors take
`subjectRegExp`, `issuer` and `rekor.url`; `imageRegistryCredentials.providers` is one of
default, google, azure, amazon, github).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pulumi
import pulumi_gcp.binaryauthorization as binaryauthorization
import pulumi_gcp.containeranalysis as containeranalysis
import pulumi_gcp.kms as kms
import pulumi_gcp.projects as projects
import pulumi_gcp.serviceaccount as serviceaccount
import pulumi_kubernetes.core.v1 as core
import pulumi_kubernetes.helm.v3 as helm
import pulumi_kubernetes.networking.v1 as networking
from pulumi_kubernetes.apiextensions import CustomResource

from components.releases import GITHUB_ISSUER, release_repository, signer_identity

if TYPE_CHECKING:
    from components.settings import Settings

KYVERNO_CHART = "kyverno"
KYVERNO_REPO = "https://kyverno.github.io/kyverno/"
KYVERNO_NAMESPACE = "kyverno"
# The admission controller's service account (the chart's `admissionController.rbac.serviceAccount`):
# named here, because the cloud identity that reads the registry is federated with exactly this one.
ADMISSION_SERVICE_ACCOUNT = "kyverno-admission-controller"
# The admission controller's webhook server (chart `admissionController.webhookServer.port`): the API
# server calls it there, which GKE's private control plane can only do through a firewall rule.
WEBHOOK_PORT = 9443
REKOR_URL = "https://rekor.sigstore.dev"
POLICY_NAME = "verify-release-signatures"
# The GHCR login Kyverno reads private release signatures with (`imageRegistryCredentials.secrets`:
# a dockerconfigjson Secret in Kyverno's own namespace).
GHCR_SECRET = "ghcr-signatures"
# Never verified: the cluster's own and its controllers' namespaces (their images are the vendors').
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease", KYVERNO_NAMESPACE)
Credentials = Literal["amazon", "google", "azure"]
# The four Kyverno controllers the chart runs; each gets a restricted pod security context.
CONTROLLERS = ("admissionController", "backgroundController", "cleanupController", "reportsController")


def verify_rule(
    service: str,
    repository: str,
    enforce: bool,
    credentials: Credentials,
    signatures: str | None = None,
    secrets: Sequence[str] = (),
) -> dict[str, Any]:
    """One rule per service namespace: every image of every pod there is signed by the release of
    `repository` (`<owner>/<repo>`), its signatures read from `signatures`: the GHCR repository the
    release recorded (releases.yaml), else the one release.yml pushes to."""
    return {
        "name": f"verify-{service}",
        "match": {"any": [{"resources": {"kinds": ["Pod"], "namespaces": [service]}}]},
        "exclude": {"any": [{"resources": {"namespaces": list(SYSTEM_NAMESPACES)}}]},
        "verifyImages": [
            {
                "type": "Cosign",
                "imageReferences": ["*"],
                "failureAction": "Enforce" if enforce else "Audit",
                "repository": signatures or release_repository(repository, service),
                "required": True,
                # Tags resolve to digests (Kyverno refuses mutateDigest under Audit) and an image
                # without a digest is itself a violation.
                "mutateDigest": enforce,
                "verifyDigest": True,
                "useCache": True,
                "imageRegistryCredentials": {
                    "providers": [credentials],
                    **({"secrets": list(secrets)} if secrets else {}),
                },
                "attestors": [
                    {
                        "count": 1,
                        "entries": [
                            {
                                "keyless": {
                                    "subjectRegExp": signer_identity(repository, service),
                                    "issuer": GITHUB_ISSUER,
                                    "rekor": {"url": REKOR_URL},
                                }
                            }
                        ],
                    }
                ],
            }
        ],
    }


def cluster_policy(
    services: Sequence[str],
    repository: str,
    enforce: bool,
    credentials: Credentials,
    signatures: Mapping[str, str] | None = None,
    secrets: Sequence[str] = (),
) -> dict[str, Any]:
    """The ClusterPolicy's spec: admission only (signatures are checked as pods are made; a background
    scan would re-verify every running pod), failing closed when enforcing."""
    return {
        "background": False,
        "webhookTimeoutSeconds": 30,
        "failurePolicy": "Fail" if enforce else "Ignore",
        "rules": [
            verify_rule(s, repository, enforce, credentials, (signatures or {}).get(s), secrets)
            for s in services
        ],
    }


def chart_values(
    enforce: bool,
    annotations: Mapping[str, pulumi.Input[str]],
    pod_labels: Mapping[str, str],
) -> dict[str, Any]:
    """Kyverno's chart values (charts/kyverno/values.yaml at kyverno-chart-3.9.0): restricted pods for
    every controller (the chart's container contexts already drop every capability, run as 65534 with a
    read-only root; the pod contexts add non-root and RuntimeDefault seccomp), the admission
    controller's service account federated with the cloud identity, three replicas and a PDB when
    enforcing (its webhook fails closed), and the webhooks never called for system namespaces."""
    pod_security = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    values: dict[str, Any] = {name: {"podSecurityContext": pod_security} for name in CONTROLLERS}
    admission = values["admissionController"]
    admission["replicas"] = 3 if enforce else 1
    admission["podDisruptionBudget"] = {"enabled": enforce, "minAvailable": 1}
    admission["webhookServer"] = {"port": WEBHOOK_PORT}
    admission["rbac"] = {
        "serviceAccount": {"name": ADMISSION_SERVICE_ACCOUNT, "annotations": dict(annotations)}
    }
    if pod_labels:
        admission["podLabels"] = dict(pod_labels)
    values["config"] = {
        "webhooks": {
            "namespaceSelector": {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "NotIn",
                        "values": list(SYSTEM_NAMESPACES),
                    }
                ]
            }
        }
    }
    return values


@dataclass(frozen=True)
class Verification:
    """What a target verifies, from the stack's settings: its services' namespaces, the signing
    repository, enforcement and the chart version."""

    services: tuple[str, ...]
    signer: str
    enforce: bool
    chart_version: str
    # service -> the GHCR repository the release recorded for the version the stack deploys.
    signatures: Mapping[str, str] = field(default_factory=dict)
    # A GHCR token (admission.ghcrTokenKey) for private release packages, else anonymous reads.
    ghcr_token: pulumi.Input[str] | None = None

    @classmethod
    def of(
        cls, settings: Settings, target: str, secret: Callable[[str], pulumi.Input[str]] | None = None
    ) -> Verification | None:
        """None when no service runs on `target` (settings validation guarantees a signer otherwise).
        `secret` reads a secure config key (the stack context's)."""
        chosen = [s for s in settings.services if target in s.targets]
        signer = settings.signer_repository
        if not chosen or signer is None:
            return None
        recorded = {s.name: settings.record.image(s.name, s.version) for s in chosen}
        return cls(
            tuple(s.name for s in chosen),
            signer,
            settings.admission_enforced,
            settings.admission.kyverno_chart_version,
            {name: image.repository for name, image in recorded.items() if image is not None},
            secret(key) if secret is not None and (key := settings.admission.ghcr_token_key) else None,
        )


def ghcr_login(token: str) -> str:
    """A dockerconfigjson for ghcr.io with a token (any user name: GHCR checks only the token)."""
    auth = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return json.dumps({"auths": {"ghcr.io": {"auth": auth}}})


@dataclass(frozen=True)
class KyvernoArgs:
    provider: pulumi.ProviderResource
    verification: Verification
    credentials: Credentials  # Kyverno's credential provider for the cluster's registry
    # The admission controller's service account annotations (its cloud identity) and pod labels.
    annotations: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    pod_labels: Mapping[str, str] = field(default_factory=dict)
    depends_on: Sequence[pulumi.Resource] = ()


class Kyverno(pulumi.ComponentResource):
    """Kyverno in its own restricted namespace and the ClusterPolicy that verifies release signatures."""

    policy: CustomResource

    def __init__(self, name: str, args: KyvernoArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("pouw:index:Kyverno", name, None, opts)
        # Here, not at the top: components.targets imports every target, and they import this module.
        from components.targets.kubernetes import RESTRICTED, egress_only_policies, metadata

        v = args.verification
        k8s = pulumi.ResourceOptions(parent=self, provider=args.provider)
        namespace = core.Namespace(
            f"{name}-namespace", metadata={"name": KYVERNO_NAMESPACE, "labels": RESTRICTED}, opts=k8s
        )
        # Kyverno calls out (the API server, registries, Sigstore's Rekor and TUF: HTTPS) and is called
        # by the API server on its webhook port only.
        egress_only_policies(name, namespace.metadata.name, k8s)
        webhook: networking.NetworkPolicySpecArgsDict = {
            "pod_selector": {},
            "policy_types": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": WEBHOOK_PORT}]}],
        }
        networking.NetworkPolicy(
            f"{name}-allow-webhook",
            metadata=metadata("allow-webhook", namespace.metadata.name, {}),
            spec=webhook,
            opts=k8s,
        )
        release = helm.Release(
            name,
            name=KYVERNO_CHART,
            chart=KYVERNO_CHART,
            version=v.chart_version,
            repository_opts=helm.RepositoryOptsArgs(repo=KYVERNO_REPO),
            namespace=namespace.metadata.name,
            values=chart_values(v.enforce, args.annotations, args.pod_labels),
            opts=pulumi.ResourceOptions.merge(k8s, pulumi.ResourceOptions(depends_on=list(args.depends_on))),
        )
        depends: list[pulumi.Resource] = [release]
        secrets: list[str] = []
        if v.ghcr_token is not None:
            depends.append(
                core.Secret(
                    f"{name}-ghcr",
                    metadata={"name": GHCR_SECRET, "namespace": namespace.metadata.name},
                    type="kubernetes.io/dockerconfigjson",
                    string_data={".dockerconfigjson": pulumi.Output.secret(v.ghcr_token).apply(ghcr_login)},
                    opts=k8s,
                )
            )
            secrets.append(GHCR_SECRET)
        # The ClusterPolicy's definition comes with the chart.
        self.policy = CustomResource(
            f"{name}-verify-images",
            api_version="kyverno.io/v1",
            kind="ClusterPolicy",
            metadata={"name": POLICY_NAME, "labels": {"app.kubernetes.io/part-of": "pouw-cicd"}},
            spec=cluster_policy(v.services, v.signer, v.enforce, args.credentials, v.signatures, secrets),
            opts=pulumi.ResourceOptions.merge(k8s, pulumi.ResourceOptions(depends_on=depends)),
        )
        self.register_outputs({"policy": POLICY_NAME})


# Cloud Run cannot check a cosign signature: Binary Authorization admits a revision whose image digest
# carries an attestation by the environment's attestor, which the release creates with this KMS key
# right after cosign signs (release.yml, "Attest for Binary Authorization"). Binary Authorization
# reference: cloud.google.com/binary-authorization/docs/creating-attestors-console and
# cloud.google.com/binary-authorization/docs/run/enabling-binauthz-cloud-run; resource fields from the
# installed pulumi_gcp (binaryauthorization.Attestor/Policy, containeranalysis.Note, kms.CryptoKey).
# The types whose create, update and delete the deploy account's custom role holds (the rest of the
# component is the bootstrap identity's: components/permissions.py).
BINAUTHZ_TYPES = frozenset(
    {
        "gcp:kms/keyRing:KeyRing",
        "gcp:kms/cryptoKey:CryptoKey",
        "gcp:containeranalysis/note:Note",
        "gcp:binaryauthorization/attestor:Attestor",
    }
)
ATTESTOR_ALGORITHM = "EC_SIGN_P256_SHA256"  # KMS; the attestor's public key: ECDSA_P256_SHA256
# What the release's attesting identity holds, each on one resource (a project for occurrences, which
# have no narrower scope): sign with the key, attach occurrences to the note, read the attestor.
ATTESTER_ROLES = {
    "key": "roles/cloudkms.signerVerifier",
    "note": "roles/containeranalysis.notes.attacher",
    "attestor": "roles/binaryauthorization.attestorsViewer",
    "project": "roles/containeranalysis.occurrences.editor",
}


@dataclass(frozen=True)
class BinaryAuthorizationArgs:
    project: str
    region: str
    environment: str
    enforce: bool
    protect: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)


def admission_rule(
    attestor: pulumi.Input[str], enforce: bool
) -> binaryauthorization.PolicyDefaultAdmissionRuleArgsDict:
    """The project's default rule: an attestation by the release attestor, blocking (or, in dry-run,
    only logging) anything else."""
    return {
        "evaluation_mode": "REQUIRE_ATTESTATION",
        "enforcement_mode": "ENFORCED_BLOCK_AND_AUDIT_LOG" if enforce else "DRYRUN_AUDIT_LOG_ONLY",
        "require_attestations_bies": [attestor],
    }


class BinaryAuthorization(pulumi.ComponentResource):
    """The environment's release attestor (a Container Analysis note and a KMS signing key), the
    project's Binary Authorization policy requiring it, and the service account the release attests
    as (`attester`, trusted by the pipeline identities' pool for the `release` environment only)."""

    attester: serviceaccount.Account
    attestor_name: pulumi.Output[str]
    key_version: pulumi.Output[str]

    def __init__(
        self, name: str, args: BinaryAuthorizationArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("pouw:index:BinaryAuthorization", name, None, opts)
        project, env = args.project, args.environment
        child = pulumi.ResourceOptions(parent=self)
        stateful = pulumi.ResourceOptions(parent=self, protect=args.protect)
        ring = kms.KeyRing(
            f"{name}-keys", name=f"pouw-{env}-binauthz", project=project, location=args.region, opts=stateful
        )
        key = kms.CryptoKey(
            f"{name}-signing",
            name="release-attestor",
            key_ring=ring.id,
            purpose="ASYMMETRIC_SIGN",
            version_template={
                "algorithm": ATTESTOR_ALGORITHM,
                "protection_level": "HSM" if args.protect else "SOFTWARE",
            },
            labels=dict(args.labels),
            opts=stateful,
        )
        version = kms.get_kms_crypto_key_version_output(
            crypto_key=key.id, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        note = containeranalysis.Note(
            f"{name}-note",
            name=f"pouw-{env}-release",
            project=project,
            attestation_authority={"hint": {"human_readable_name": f"pouw-cicd release ({env})"}},
            opts=child,
        )
        attestor = binaryauthorization.Attestor(
            f"{name}-attestor",
            name=f"pouw-{env}-release",
            project=project,
            attestation_authority_note={
                "note_reference": note.name,
                "public_keys": [
                    {
                        "id": version.id,
                        "pkix_public_key": {
                            "public_key_pem": version.public_keys.apply(lambda k: k[0].pem if k else ""),
                            "signature_algorithm": "ECDSA_P256_SHA256",
                        },
                    }
                ],
            },
            opts=child,
        )
        binaryauthorization.Policy(
            f"{name}-policy",
            project=project,
            global_policy_evaluation_mode="ENABLE",  # Google's own system images stay admitted
            default_admission_rule=admission_rule(attestor.name, args.enforce),
            opts=child,
        )
        self.attester = serviceaccount.Account(
            f"{name}-attester",
            account_id=f"attest-{env}",
            project=project,
            display_name=f"pouw-cicd release attestations ({env})",
            opts=child,
        )
        member = self.attester.email.apply(lambda email: f"serviceAccount:{email}")
        kms.CryptoKeyIAMMember(
            f"{name}-attester-sign",
            crypto_key_id=key.id,
            role=ATTESTER_ROLES["key"],
            member=member,
            opts=child,
        )
        containeranalysis.NoteIamMember(
            f"{name}-attester-note",
            project=project,
            note=note.name,
            role=ATTESTER_ROLES["note"],
            member=member,
            opts=child,
        )
        binaryauthorization.AttestorIamMember(
            f"{name}-attester-attestor",
            project=project,
            attestor=attestor.name,
            role=ATTESTER_ROLES["attestor"],
            member=member,
            opts=child,
        )
        projects.IAMMember(
            f"{name}-attester-occurrences",
            project=project,
            role=ATTESTER_ROLES["project"],
            member=member,
            opts=child,
        )
        self.attestor_name = pulumi.Output.concat("projects/", project, "/attestors/", attestor.name)
        self.key_version = version.name
        self.register_outputs({"attestor": self.attestor_name, "keyVersion": self.key_version})
