"""Google Cloud IAM: no public members anywhere, no basic roles for service accounts, no project-wide
impersonation, no user-managed service-account keys."""

from __future__ import annotations

import json
from collections.abc import Iterable

from pulumi_policy import ResourceValidationArgs, Severity

import resource_types as t
from pack_support import CIS_GCP, GCP

PUBLIC_MEMBERS = frozenset({"allUsers", "allAuthenticatedUsers"})
BASIC_ROLES = frozenset({"roles/owner", "roles/editor", "roles/viewer"})
IMPERSONATION_ROLES = frozenset({"roles/iam.serviceAccountUser", "roles/iam.serviceAccountTokenCreator"})


def grants(args: ResourceValidationArgs) -> Iterable[tuple[str, str]]:
    """(role, member) of an IAM member, binding or policy resource."""
    props = args.props
    data = props.get("policyData")
    if data:
        policy = json.loads(data) if isinstance(data, str) else data
        for binding in (policy or {}).get("bindings") or []:
            for member in binding.get("members") or []:
                yield str(binding.get("role")), str(member)
        return
    role = str(props.get("role") or "")
    members = [props.get("member")] if props.get("member") else list(props.get("members") or [])
    for member in members:
        yield role, str(member)


def _not_cloud_run(resource_type: str) -> bool:
    return t.is_gcp_iam(resource_type) and resource_type not in t.RUN_INVOKERS


@GCP.resource(
    "gcp-iam-no-public-members",
    "No GCP IAM member, binding or policy grants allUsers or allAuthenticatedUsers (Cloud Run "
    "invokers: cloudrun-no-public-invoker).",
    types=_not_cloud_run,
    severity=Severity.CRITICAL,
    controls=[CIS_GCP("5.1")],
    checkov=["CKV_GCP_28", "CKV_GCP_99", "CKV_GCP_100", "CKV_GCP_101", "CKV_GCP_107", "CKV_GCP_112"],
    remediation="Grant the role to named service accounts or groups.",
)
def _public_members(args: ResourceValidationArgs) -> Iterable[str]:
    for role, member in grants(args):
        if member in PUBLIC_MEMBERS:
            yield f"grants {role} to {member}: anyone on the internet"


@GCP.resource(
    "gcp-no-basic-roles-for-service-accounts",
    "Service accounts never get a basic role (owner, editor, viewer) on a project, folder or organisation.",
    types=t.GCP_HIERARCHY_IAM,
    severity=Severity.HIGH,
    controls=[CIS_GCP("1.5")],
    checkov=["CKV_GCP_42", "CKV_GCP_117"],
    remediation="Grant the predefined roles the account needs (roles/run.developer, ...).",
)
def _basic_roles(args: ResourceValidationArgs) -> Iterable[str]:
    for role, member in grants(args):
        if role in BASIC_ROLES and member.startswith("serviceAccount:"):
            yield f"grants the basic role {role} to {member}"


@GCP.resource(
    "gcp-no-hierarchy-sa-impersonation",
    "Nobody gets Service Account User or Token Creator on a whole project, folder or organisation.",
    types=t.GCP_HIERARCHY_IAM,
    severity=Severity.HIGH,
    controls=[CIS_GCP("1.6")],
    checkov=["CKV_GCP_41", "CKV_GCP_49", "CKV_GCP_44", "CKV_GCP_45"],
    remediation="Grant the role on the one service account that is impersonated "
    "(gcp.serviceaccount.IAMMember).",
)
def _impersonation(args: ResourceValidationArgs) -> Iterable[str]:
    for role, member in grants(args):
        if role in IMPERSONATION_ROLES:
            yield f"grants {role} to {member} on every service account in scope"


@GCP.resource(
    "gcp-no-user-managed-sa-keys",
    "No user-managed service-account keys: identities are keyless (workload identity federation).",
    types=[t.GCP_SA_KEY],
    severity=Severity.HIGH,
    controls=[CIS_GCP("1.4")],
    checkov=["CKV2_GCP_3"],
    remediation="Use workload identity federation (pipelineIdentities) or the runtime's attached account.",
)
def _sa_keys(args: ResourceValidationArgs) -> Iterable[str]:
    account = args.props.get("serviceAccountId")
    yield f"creates a user-managed key for {account}: a long-lived credential to leak"
