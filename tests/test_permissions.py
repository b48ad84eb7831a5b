"""Self-deployability, offline: every resource type in every stack's plan has a row in the permission
table (components/permissions.py), the deploy identity's grants cover every row's create, update and
delete (except what the bootstrap identity alone does), the preview identity's cover every read, and
neither grants what the table does not justify."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from typing import Any

import pytest

from components import permissions as table
from components.runners import AZURE_ASSIGNED_ROLES, CLUSTER_ACCESS_POLICIES, STACK_ROLES
from preflight.engine import ProgramRun, Registration
from preflight.report import Preflight
from tests.iam_simulator import allowed

STACKS = ["dev", "staging", "prod"]
OPERATIONS: tuple[table.Operation, ...] = ("create", "update", "delete")
AUTONAME = "-1a2b3c4"  # what Pulumi appends to a role the program does not name


def by_urn(run: ProgramRun) -> dict[str, Registration]:
    return {r.urn: r for r in run.resources}


def bootstrap_only(run: ProgramRun, resource: Registration) -> bool:
    """Whether only the bootstrap identity manages this resource (the pipeline identities, the boundary)."""
    parents = by_urn(run)
    parent = parents.get(resource.parent or "")
    return resource.name in table.BOOTSTRAP_NAMES or (
        parent is not None and parent.type in table.BOOTSTRAP_PARENTS
    )


def managed(run: ProgramRun, cloud: str) -> Iterator[tuple[Registration, table.Row]]:
    for resource in run.resources:
        row = table.row(resource.type)
        if row.cloud == cloud:
            yield resource, row


@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_type_has_a_row(stack_runs: dict[str, Preflight], stack: str) -> None:
    missing = sorted({r.type for r in stack_runs[stack].run.resources} - set(table.PERMISSIONS))
    assert not missing, "\n".join(
        f"{t} has no row in components/permissions.py PERMISSIONS: add what its create, update, delete "
        "and read call (cite the cloud's reference)"
        for t in missing
    )
    for resource_type, row in table.PERMISSIONS.items():
        assert row.source.startswith("https://"), f"{resource_type}: cite the page the row comes from"
        if row.cloud != "program":
            assert row.read, f"{resource_type}: what does a preview read?"


def aws_context(run: ProgramRun) -> tuple[str, list[Any], dict[str, str]]:
    """The account, the deploy role's policies (PowerUserAccess + its inline policy), and role names by
    the outputs the program wires into RolePolicy and RolePolicyAttachment."""
    boundary = run.get("aws:iam/policy:Policy", "permissions-boundary").outputs["arn"]
    inline = run.get("aws:iam/rolePolicy:RolePolicy", "pipeline-deploy-iam").inputs["policy"]
    names = {}
    for role in run.by_type("aws:iam/role:Role"):
        names[role.id] = role.name
        for key in ("name", "arn"):
            if key in role.outputs:
                names[role.outputs[key]] = role.name
    return boundary, [table.POWER_USER_ACCESS, inline], names


def role_arn(account: str, logical: str) -> str:
    return f"arn:aws:iam::{account}:role/{logical}{AUTONAME}"


@pytest.mark.parametrize("stack", STACKS)
def test_the_deploy_role_can_deploy_its_aws_resources(stack_runs: dict[str, Preflight], stack: str) -> None:
    run = stack_runs[stack].run
    boundary, policies, roles = aws_context(run)
    account = boundary.split(":")[4]
    bounded = {"iam:PermissionsBoundary": boundary}
    missing = []
    for resource, row in managed(run, "aws"):
        if bootstrap_only(run, resource):
            continue
        target, context = "*", {}
        if resource.type == "aws:iam/role:Role":
            target, context = role_arn(account, resource.name), bounded
        elif resource.type in (
            "aws:iam/rolePolicy:RolePolicy",
            "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
        ):
            target, context = role_arn(account, roles[resource.inputs["role"]]), bounded
        elif resource.type == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
            target = f"arn:aws:iam::{account}:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/0A1B2C3D"
        for operation in OPERATIONS:
            if operation in row.bootstrap:
                continue
            for action in row.actions(operation):
                here = dict(context)
                if action == "iam:PassRole":
                    service = next(
                        s for p, s in STACK_ROLES.items() if fnmatch.fnmatchcase(target.rsplit("/")[1], p)
                    )
                    if service is None:
                        continue  # an IRSA role: assumed by a pod, never passed
                    here["iam:PassedToService"] = service
                if action == "iam:GetPolicy":
                    resource_arn = resource.inputs.get("policyArn", target)
                else:
                    resource_arn = target
                if not allowed(policies, action, resource_arn, here):
                    missing.append(f"{resource.type} {resource.name} {operation}: {action} on {resource_arn}")
    assert not missing, "the deploy role cannot:\n" + "\n".join(missing)


@pytest.mark.parametrize("stack", STACKS)
def test_the_pipeline_roles_reach_the_cluster_as_the_table_needs(
    stack_runs: dict[str, Preflight], stack: str
) -> None:
    """Kubernetes rows: the deploy role's access policy is cluster-admin (every verb), the preview role's
    is view (get and list of everything but Secrets). Rows view cannot read say why (`preview_gap`)."""
    run = stack_runs[stack].run
    policies = {
        a.inputs["policyArn"].rsplit("/", 1)[1]
        for a in run.by_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    }
    assert policies == set(CLUSTER_ACCESS_POLICIES.values())
    for resource, row in managed(run, "kubernetes"):
        for verb_resource in row.read:
            verb, ref = verb_resource.split(" ", 1)
            view = verb in ("get", "list", "watch") and not ref.endswith("secrets")
            assert view or row.preview_gap, f"{resource.type}: preview cannot {verb_resource}; say why"


def gcp_grants(run: ProgramRun, kind: str) -> tuple[set[str], dict[tuple[str, str], set[str]]]:
    """(permissions granted on the project, permissions granted per (resource type, resource key))."""
    email = run.get("gcp:serviceaccount/account:Account", f"pipeline-{kind}").outputs["email"]
    member = f"serviceAccount:{email}"
    project: set[str] = set()
    on: dict[tuple[str, str], set[str]] = {}
    for binding in run.by_type("gcp:projects/iAMMember:IAMMember"):
        if binding.inputs["member"] == member:
            project |= table.GCP_ROLE_PERMISSIONS[binding.inputs["role"]]
    for type_, key in (
        ("gcp:artifactregistry/repositoryIamMember:RepositoryIamMember", "repository"),
        ("gcp:cloudrunv2/serviceIamMember:ServiceIamMember", "name"),
        ("gcp:serviceaccount/iAMMember:IAMMember", "serviceAccountId"),
    ):
        for binding in run.by_type(type_):
            if binding.inputs["member"] == member:
                on.setdefault((type_, binding.inputs[key]), set()).update(
                    table.GCP_ROLE_PERMISSIONS[binding.inputs["role"]]
                )
    return project, on


def gcp_targets(run: ProgramRun, resource: Registration) -> list[tuple[str, str]]:
    """Where a resource-level grant that covers this resource sits."""
    if resource.type == "gcp:artifactregistry/repository:Repository":
        return [
            ("gcp:artifactregistry/repositoryIamMember:RepositoryIamMember", resource.outputs["repositoryId"])
        ]
    if resource.type == "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember":
        return [
            ("gcp:artifactregistry/repositoryIamMember:RepositoryIamMember", resource.inputs["repository"])
        ]
    if resource.type in (
        "gcp:cloudrunv2/service:Service",
        "gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
    ):
        email = (resource.inputs.get("template") or {}).get("serviceAccount", "")
        accounts = [
            a.outputs["name"]
            for a in run.by_type("gcp:serviceaccount/account:Account")
            if a.outputs["email"] == email
        ]
        return [("gcp:cloudrunv2/serviceIamMember:ServiceIamMember", resource.inputs["name"])] + [
            ("gcp:serviceaccount/iAMMember:IAMMember", a) for a in accounts
        ]
    return []


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_the_deploy_account_can_deploy_its_gcp_resources(
    stack_runs: dict[str, Preflight], stack: str
) -> None:
    run = stack_runs[stack].run
    project, on = gcp_grants(run, "deploy")
    preview_project, _ = gcp_grants(run, "preview")
    missing = []
    for resource, row in managed(run, "gcp"):
        granted = set(project)
        for target in gcp_targets(run, resource):
            granted |= on.get(target, set())
        for permission in row.read:
            if permission not in preview_project and not row.preview_gap:
                missing.append(f"preview: {resource.type} {resource.name} read: {permission}")
        if bootstrap_only(run, resource):
            continue
        for operation in OPERATIONS:
            if operation in row.bootstrap:
                continue
            # A new resource's resource-level grant cannot exist before it: create needs project grants,
            # except actAs, which is on the runtime account.
            scope = (
                granted
                if operation != "create"
                else project
                | {
                    p
                    for t in gcp_targets(run, resource)
                    if t[0].startswith("gcp:serviceaccount")
                    for p in on.get(t, set())
                }
            )
            if resource.type.endswith("IamMember") and operation == "create":
                scope = granted  # a binding on an existing resource
            missing += [
                f"deploy: {resource.type} {resource.name} {operation}: {p}"
                for p in row.actions(operation)
                if p not in scope
            ]
    assert not missing, "\n".join(missing)


def azure_allows(action: str, resource: Registration) -> bool:
    """The deploy identity at the resource group: Contributor, plus RBAC Administrator conditioned on
    the role definitions and principal types the stack assigns."""
    if action.startswith("Microsoft.Authorization/roleAssignments/"):
        role = resource.inputs["roleDefinitionId"].rsplit("/", 1)[1]
        return AZURE_ASSIGNED_ROLES.get(role) == resource.inputs.get("principalType")
    return not any(
        fnmatch.fnmatchcase(action.lower(), n.lower()) for n in table.AZURE_CONTRIBUTOR_NOT_ACTIONS
    )


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_the_deploy_identity_can_deploy_its_azure_resources(
    stack_runs: dict[str, Preflight], stack: str
) -> None:
    run = stack_runs[stack].run
    missing = []
    for resource, row in managed(run, "azure"):
        for action in row.read:
            if not any(fnmatch.fnmatchcase(action.lower(), a) for a in table.AZURE_READER_ACTIONS):
                missing.append(f"preview: {resource.type} {resource.name} read: {action}")
        if bootstrap_only(run, resource):
            continue
        for operation in OPERATIONS:
            if operation not in row.bootstrap:
                missing += [
                    f"deploy: {resource.type} {resource.name} {operation}: {a}"
                    for a in row.actions(operation)
                    if not azure_allows(a, resource)
                ]
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("stack", STACKS)
def test_the_preview_role_reads_every_aws_row(stack_runs: dict[str, Preflight], stack: str) -> None:
    run = stack_runs[stack].run
    attached = {
        r.inputs["policyArn"]
        for r in run.by_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if r.name.startswith("pipeline-preview")
    }
    assert attached == {"arn:aws:iam::aws:policy/ReadOnlyAccess"}
    unread = [
        f"{resource.type}: {action}"
        for resource, row in managed(run, "aws")
        for action in row.read
        if not allowed([table.READ_ONLY_ACCESS], action, "*")
    ]
    assert not unread, unread


@pytest.mark.parametrize("stack", STACKS)
def test_no_grant_beyond_the_table(stack_runs: dict[str, Preflight], stack: str) -> None:
    """What the program writes grants only what rows name: the deploy role's inline IAM actions are all
    in the IAM rows (reads included), no program-written Allow has a wildcard action, no GCP grant is a
    basic role or a project-wide admin, and every Azure pipeline grant is at the resource group.

    PowerUserAccess stays the deploy role's grant outside IAM (every service but IAM): narrowing it to the
    AWS rows' actions is the next step this table makes possible."""
    run = stack_runs[stack].run
    iam_rows = {
        a
        for t, row in table.PERMISSIONS.items()
        if t.startswith("aws:iam/")
        for a in (*row.create, *row.update, *row.delete, *row.read)
    } | {"iam:ListPolicyTags", "iam:GetPolicyVersion", "iam:ListPolicyVersions"}
    inline = json.loads(run.get("aws:iam/rolePolicy:RolePolicy", "pipeline-deploy-iam").inputs["policy"])
    granted = {a for s in inline["Statement"] if s["Effect"] == "Allow" for a in s["Action"]}
    assert granted <= iam_rows, sorted(granted - iam_rows)
    for policy in run.by_type("aws:iam/rolePolicy:RolePolicy"):
        document = json.loads(policy.inputs["policy"])
        for statement in document["Statement"]:
            if statement["Effect"] == "Allow":
                actions = statement.get("Action", [])
                actions = [actions] if isinstance(actions, str) else actions
                assert "NotAction" not in statement, policy.name
                assert not [a for a in actions if a == "*" or a.endswith(":*")], policy.name
    for binding in run.by_type("gcp:projects/iAMMember:IAMMember"):
        role = binding.inputs["role"]
        assert role not in ("roles/owner", "roles/editor", "roles/viewer"), binding.name
        assert not role.lower().endswith("admin"), binding.name
        assert role in table.GCP_ROLE_PERMISSIONS, f"{role}: add what it grants to GCP_ROLE_PERMISSIONS"
    groups = {g.outputs["id"] for g in run.by_type("azure-native:resources:ResourceGroup")}
    for assignment in run.by_type("azure-native:authorization:RoleAssignment"):
        if assignment.name.startswith("pipeline-"):
            (group,) = groups
            assert assignment.inputs["scope"] == group, assignment.name  # never the subscription
