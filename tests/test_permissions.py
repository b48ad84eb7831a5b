"""Self-deployability, offline: every resource type in every stack's plan has a row in the permission
table (components/permissions.py), the deploy identity's grants cover every row's create, update and
delete (except what the bootstrap identity alone does), the preview identity's cover every read, and
neither grants what the table does not justify."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from components import permissions as table
from components import pipeline_policies
from components.admission import BINAUTHZ_TYPES
from components.runners import AKS_PIPELINE_ROLES, AZURE_ASSIGNED_ROLES, CLUSTER_ACCESS_POLICIES, STACK_ROLES
from components.targets.gke import PROJECT_SCOPED_TYPES
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


def managed_documents(run: ProgramRun, kind: str) -> list[str]:
    """The pipeline role's generated managed policies (pouw-<env>-<kind>-<n>), in order."""
    policies = sorted(
        (p for p in run.by_type("aws:iam/policy:Policy") if re.fullmatch(rf"pipeline-{kind}-\d+", p.name)),
        key=lambda p: int(p.name.rsplit("-", 1)[1]),
    )
    return [p.inputs["policy"] for p in policies]


def aws_context(run: ProgramRun) -> tuple[str, list[Any], dict[str, str]]:
    """The account, the deploy role's policies (its generated managed policies + its inline IAM policy),
    and role names by the outputs the program wires into RolePolicy and RolePolicyAttachment."""
    boundary = run.get("aws:iam/policy:Policy", "permissions-boundary").outputs["arn"]
    inline = run.get("aws:iam/rolePolicy:RolePolicy", "pipeline-deploy-iam").inputs["policy"]
    names = {}
    for role in run.by_type("aws:iam/role:Role"):
        names[role.id] = role.name
        for key in ("name", "arn"):
            if key in role.outputs:
                names[role.outputs[key]] = role.name
    return boundary, [*managed_documents(run, "deploy"), inline], names


def role_arn(account: str, logical: str) -> str:
    return f"arn:aws:iam::{account}:role/{logical}{AUTONAME}"


REGION = "eu-west-1"
EC2_RESOURCE = {  # the Pulumi type's module name -> the EC2 resource type in its ARN
    "vpc": "vpc",
    "subnet": "subnet",
    "internetGateway": "internet-gateway",
    "eip": "elastic-ip",
    "natGateway": "natgateway",
    "routeTable": "route-table",
    "routeTableAssociation": "route-table",
    "securityGroup": "security-group",
    "defaultSecurityGroup": "security-group",
    "flowLog": "vpc-flow-log",
    "launchTemplate": "launch-template",
}


def aws_arn(run: ProgramRun, resource: Registration, account: str) -> str:
    """The ARN AWS would authorise a call on this resource against, as the resource would be named in
    the cloud (the mocks' ARNs are not): autonamed resources get Pulumi's `-<7 hex>` suffix, ids stand
    in for what AWS assigns. `*` for a resource without one (its actions have no resource type)."""
    inputs, base = resource.inputs, f"{REGION}:{account}"
    if resource.type == "docker-build:index:Image":
        repository = inputs["tags"][0].split("/", 1)[1].rsplit(":", 1)[0]
        return f"arn:aws:ecr:{base}:repository/{repository}"
    module, kind = resource.type.split(":")[1].split("/")
    if module == "ec2":
        return f"arn:aws:ec2:{base}:{EC2_RESOURCE[kind]}/{kind.lower()}-0a1b2c3d4e5f60718"
    if module == "cloudwatch":
        return f"arn:aws:logs:{base}:log-group:{inputs['name']}:*"
    if module == "kms":
        return f"arn:aws:kms:{base}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    if module == "ecr":
        repository = inputs.get("name") or inputs.get("repository")
        return f"arn:aws:ecr:{base}:repository/{repository}" if repository else "*"
    if module == "eks":
        cluster = inputs.get("name") or inputs["clusterName"]
        if kind == "cluster":
            return f"arn:aws:eks:{base}:cluster/{cluster}"
        if kind == "nodeGroup":
            return f"arn:aws:eks:{base}:nodegroup/{cluster}/{resource.name}{AUTONAME}/0a1b-2c3d"
        return f"arn:aws:eks:{base}:access-entry/{cluster}/role/{account}/{resource.name}/0a1b-2c3d"
    if module == "ecs":
        if kind == "cluster":
            return f"arn:aws:ecs:{base}:cluster/{inputs['name']}"
        if kind == "service":
            clusters = {c.outputs["arn"]: c.inputs["name"] for c in run.by_type("aws:ecs/cluster:Cluster")}
            return f"arn:aws:ecs:{base}:service/{clusters[inputs['cluster']]}/{inputs['name']}"
        return f"arn:aws:ecs:{base}:task-definition/{inputs['family']}:1"
    if module == "wafv2":
        if kind == "webAcl":
            return f"arn:aws:wafv2:{base}:regional/webacl/{resource.name}{AUTONAME}/a1b2c3d4-5678-90ab"
        return f"arn:aws:elasticloadbalancing:{base}:loadbalancer/app/lb{AUTONAME}/50dc6c495c0c9188"
    if module == "appautoscaling":
        return f"arn:aws:application-autoscaling:{base}:scalable-target/0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    if module == "lb":
        elb, lb = f"arn:aws:elasticloadbalancing:{base}", f"app/lb{AUTONAME}/50dc6c495c0c9188"
        return {
            "loadBalancer": f"{elb}:loadbalancer/{lb}",
            "targetGroup": f"{elb}:targetgroup/{resource.name}{AUTONAME}/73e2d6bc24d8a067",
            "listener": f"{elb}:listener/{lb}/f2f7dc8efc522ab2",
            "listenerRule": f"{elb}:listener-rule/{lb}/f2f7dc8efc522ab2/9683b2d02a6cabee",
        }[kind]
    if module == "s3":
        buckets = {
            b.id: b.inputs.get("bucket", f"{b.name}{AUTONAME}") for b in run.by_type("aws:s3/bucket:Bucket")
        }
        bucket = buckets[resource.id] if kind == "bucket" else buckets[inputs["bucket"]]
        return f"arn:aws:s3:::{bucket}"
    raise AssertionError(f"{resource.type}: how is it named in AWS? (tests/test_permissions.py aws_arn)")


# A row's action on another service's resource: the key ECR encrypts with, the launch template and
# instances EKS starts nodes from.
OTHER_SERVICE = {
    "kms": "arn:aws:kms:{region}:{account}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "ec2": "arn:aws:ec2:{region}:{account}:launch-template/lt-0a1b2c3d4e5f60718",
    # An association is authorised on the web ACL it associates (and the load balancer, its own ARN).
    "wafv2": "arn:aws:wafv2:{region}:{account}:regional/webacl/ecs-waf-a1b2c3d/a1b2c3d4-5678-90ab",
}


def authorised(action: str, arn: str) -> str:
    """The resource a request for `action` is authorised on: `*` where the action has no resource type;
    the other service's resource when a row's action is not on the row's own."""
    if pipeline_policies.unscoped(action):
        return "*"
    service, (_, _, arn_service, region, account, *_) = action.split(":", 1)[0], arn.split(":")
    if service != arn_service:
        return OTHER_SERVICE[service].format(region=region, account=account)
    return arn


def request_context(action: str, operation: str, resource: Registration) -> dict[str, str]:
    """What the request carries: an existing resource's tags; a KMS grant ECR creates for a repository."""
    context = {}
    tags = resource.inputs.get("tags")
    if operation in ("update", "delete", "read") and isinstance(tags, dict):  # an Image's are image tags
        context = {f"aws:ResourceTag/{k}": v for k, v in tags.items()}
    if action == "kms:CreateGrant":
        context["kms:GrantIsForAWSResource"] = "true"
    return context


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
        iam = resource.type.startswith("aws:iam/")
        target, context = ("*", {}) if iam else (aws_arn(run, resource, account), {})
        if resource.type == "aws:iam/role:Role":
            target, context = role_arn(account, resource.name), bounded
        elif resource.type in (
            "aws:iam/rolePolicy:RolePolicy",
            "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
        ):
            target, context = role_arn(account, roles[resource.inputs["role"]]), bounded
        elif resource.type == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
            target = f"arn:aws:iam::{account}:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/0A1B2C3D"
        for operation in (*OPERATIONS, "read"):
            if operation in row.bootstrap:
                continue
            for action in row.read if operation == "read" else row.actions(operation):
                here = dict(context)
                if action == "iam:PassRole":
                    service = next(
                        s for p, s in STACK_ROLES.items() if fnmatch.fnmatchcase(target.rsplit("/")[1], p)
                    )
                    if service is None:
                        continue  # an IRSA role: assumed by a pod, never passed
                    here["iam:PassedToService"] = service
                if iam:
                    if operation == "read":
                        continue  # the deploy role's IAM reads: tests/test_runners.py
                    resource_arn = (
                        resource.inputs.get("policyArn", target) if action == "iam:GetPolicy" else target
                    )
                else:
                    here |= request_context(action, operation, resource)
                    resource_arn = authorised(action, target)
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


@pytest.mark.parametrize("stack", STACKS)
def test_the_azure_identities_reach_the_aks_api_as_the_table_needs(
    stack_runs: dict[str, Preflight], stack: str
) -> None:
    """Where the stack runs AKS, the deploy identity holds AKS RBAC Cluster Admin (every verb: the ALB
    Controller chart's cluster-scoped objects) and the preview identity RBAC Reader (no Secrets) and the
    Cluster User Role (the user kubeconfig), at the resource group; a stack without AKS grants neither."""
    run = stack_runs[stack].run
    uses_aks = bool(run.by_type("azure-native:containerservice:ManagedCluster"))
    for kind in ("deploy", "preview"):
        held = azure_pipeline_roles(run, kind) & {
            r for roles in AKS_PIPELINE_ROLES.values() for r in roles.values()
        }
        assert held == (set(AKS_PIPELINE_ROLES[kind].values()) if uses_aks else set()), (stack, kind)
    assert uses_aks == (stack != "dev")


def role_permissions(run: ProgramRun, role: str) -> frozenset[str]:
    """A predefined role's permissions (the table's copy of its page), or a custom role's own list."""
    custom = {
        f"projects/{r.inputs['project']}/roles/{r.inputs['roleId']}": r
        for r in run.by_type("gcp:projects/iAMCustomRole:IAMCustomRole")
    }
    if role in custom:
        return frozenset(custom[role].inputs["permissions"])
    return table.GCP_ROLE_PERMISSIONS[role]


def gcp_grants(run: ProgramRun, kind: str) -> tuple[set[str], dict[tuple[str, str], set[str]]]:
    """(permissions granted on the project, permissions granted per (resource type, resource key))."""
    email = run.get("gcp:serviceaccount/account:Account", f"pipeline-{kind}").outputs["email"]
    member = f"serviceAccount:{email}"
    project: set[str] = set()
    on: dict[tuple[str, str], set[str]] = {}
    for binding in run.by_type("gcp:projects/iAMMember:IAMMember"):
        if binding.inputs["member"] == member:
            project |= role_permissions(run, binding.inputs["role"])
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
    if resource.type in PROJECT_SCOPED_TYPES:  # GKE's node pools run as the node account (actAs there)
        accounts = [a.outputs["name"] for a in run.by_type("gcp:serviceaccount/account:Account")]
        return [("gcp:serviceaccount/iAMMember:IAMMember", a) for a in accounts if a.endswith("-nodes")]
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


def azure_pipeline_roles(run: ProgramRun, kind: str) -> set[str]:
    """The role definitions the pipeline identity of `kind` holds (its assignments in the plan)."""
    return {
        r.inputs["roleDefinitionId"].rsplit("/", 1)[1]
        for r in run.by_type("azure-native:authorization:RoleAssignment")
        if r.name.startswith(f"pipeline-{kind}-")
    }


def azure_preview_actions(run: ProgramRun) -> tuple[str, ...]:
    """Reader's actions, and the AKS Cluster User Role's where the preview identity holds it."""
    cluster_user = AKS_PIPELINE_ROLES["preview"]["aks-user"]
    extra = (
        table.AZURE_AKS_CLUSTER_USER_ACTIONS if cluster_user in azure_pipeline_roles(run, "preview") else ()
    )
    return (*table.AZURE_READER_ACTIONS, *extra)


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_the_deploy_identity_can_deploy_its_azure_resources(
    stack_runs: dict[str, Preflight], stack: str
) -> None:
    run = stack_runs[stack].run
    missing = []
    preview = azure_preview_actions(run)
    for resource, row in managed(run, "azure"):
        for action in row.read:
            if not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in preview):
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


def iam_arn(run: ProgramRun, resource: Registration, account: str, roles: dict[str, str]) -> str:
    """An IAM resource's ARN as AWS names it (roles the program names keep their name)."""

    def role(logical: str) -> str:
        named = run.get("aws:iam/role:Role", logical).inputs.get("name")
        return f"arn:aws:iam::{account}:role/{named}" if named else role_arn(account, logical)

    if resource.type == "aws:iam/role:Role":
        return role(resource.name)
    if resource.type == "aws:iam/policy:Policy":
        return f"arn:aws:iam::{account}:policy/{resource.inputs['name']}"
    if resource.type == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
        return str(resource.outputs["arn"])
    return role(roles[resource.inputs["role"]])


@pytest.mark.parametrize("stack", STACKS)
def test_the_preview_role_reads_every_aws_row(stack_runs: dict[str, Preflight], stack: str) -> None:
    """The preview role holds its generated read policies and nothing else, and they read every AWS
    resource of the plan on its own ARN."""
    run = stack_runs[stack].run
    boundary, _, roles = aws_context(run)
    account = boundary.split(":")[4]
    policies = {p.outputs["arn"]: p.name for p in run.by_type("aws:iam/policy:Policy")}
    attached = {
        policies.get(r.inputs["policyArn"], r.inputs["policyArn"])
        for r in run.by_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if r.name.startswith("pipeline-preview")
    }
    documents = managed_documents(run, "preview")
    assert attached == {f"pipeline-preview-{n}" for n in range(1, len(documents) + 1)}
    assert not [
        p for p in run.by_type("aws:iam/rolePolicy:RolePolicy") if p.name.startswith("pipeline-preview")
    ]
    unread = []
    for resource, row in managed(run, "aws"):
        if resource.type.startswith("aws:iam/"):
            arn = iam_arn(run, resource, account, roles)
        else:
            arn = aws_arn(run, resource, account)
        for action in row.read:
            target = arn
            if action == "iam:GetPolicy" and "policyArn" in resource.inputs:
                target = policies.get(resource.inputs["policyArn"], resource.inputs["policyArn"])
                if not target.startswith("arn:"):  # one of the stack's: by its name
                    target = f"arn:aws:iam::{account}:policy/pouw-{stack}-{target.removeprefix('pipeline-')}"
            elif not resource.type.startswith("aws:iam/"):
                target = authorised(action, arn)
            if not allowed(documents, action, target, request_context(action, "read", resource)):
                unread.append(f"{resource.type} {resource.name}: {action} on {target}")
    assert not unread, "the preview role cannot read:\n" + "\n".join(unread)
    for action in ("ec2:DeleteVpc", "s3:PutBucketPolicy", "ecr:PutImage", "iam:PassRole", "kms:CreateGrant"):
        assert not allowed(documents, action, "*"), action


def allow_statements(document: str) -> list[dict[str, Any]]:
    return [s for s in json.loads(document)["Statement"] if s["Effect"] == "Allow"]


def actions_of(statement: dict[str, Any]) -> list[str]:
    actions = statement.get("Action", [])
    return [actions] if isinstance(actions, str) else list(actions)


@pytest.mark.parametrize("stack", STACKS)
def test_no_grant_beyond_the_table(stack_runs: dict[str, Preflight], stack: str) -> None:
    """What the program writes grants only what rows name: the deploy role's generated policies hold
    the AWS rows' actions (IAM aside) and its inline IAM policy the IAM rows' (reads included), the
    preview role's the rows' reads; no program-written Allow has a wildcard action or NotAction; `*`
    is the Resource only of actions without a resource type; no GCP grant is a basic role or a
    project-wide admin, and every Azure pipeline grant is at the resource group."""
    run = stack_runs[stack].run
    aws_rows = [row for row in table.PERMISSIONS.values() if row.cloud == "aws"]
    iam_rows = {
        a
        for t, row in table.PERMISSIONS.items()
        if t.startswith("aws:iam/")
        for a in (*row.create, *row.update, *row.delete, *row.read)
    }
    inline = run.get("aws:iam/rolePolicy:RolePolicy", "pipeline-deploy-iam").inputs["policy"]
    granted = {a for s in allow_statements(inline) for a in actions_of(s)}
    assert granted <= iam_rows, sorted(granted - iam_rows)
    deploy = {a for d in managed_documents(run, "deploy") for s in allow_statements(d) for a in actions_of(s)}
    justified = {
        a
        for row in aws_rows
        for operation in OPERATIONS
        if operation not in row.bootstrap
        for a in row.actions(operation)
    } | {a for row in aws_rows for a in row.read}
    assert deploy <= justified, sorted(deploy - justified)
    assert not {a for a in deploy if a.startswith("iam:")}  # the inline policy's, scoped to the stack
    assert deploy | granted >= justified, sorted(justified - deploy - granted)  # and all of them
    preview = {
        a for d in managed_documents(run, "preview") for s in allow_statements(d) for a in actions_of(s)
    }
    assert preview == {a for row in aws_rows for a in row.read}
    written = [p.inputs["policy"] for p in run.by_type("aws:iam/rolePolicy:RolePolicy")] + [
        p.inputs["policy"] for p in run.by_type("aws:iam/policy:Policy") if p.name != "permissions-boundary"
    ]  # the boundary caps (NotAction), it grants nothing: components/iam.py
    for document in written:
        for statement in allow_statements(document):
            assert "NotAction" not in statement, statement
            assert not [a for a in actions_of(statement) if a == "*" or a.endswith(":*")], statement
    for document in (*managed_documents(run, "deploy"), *managed_documents(run, "preview")):
        for statement in allow_statements(document):
            if statement["Resource"] == "*":
                unjustified = [a for a in actions_of(statement) if not pipeline_policies.unscoped(a)]
                assert not unjustified, f"{unjustified} on '*': scope them (components/pipeline_policies.py)"
            else:
                assert "*" not in statement["Resource"], statement["Sid"]
    for binding in run.by_type("gcp:projects/iAMMember:IAMMember"):
        role = binding.inputs["role"]
        assert role not in ("roles/owner", "roles/editor", "roles/viewer"), binding.name
        assert not role.lower().endswith("admin"), binding.name
        assert role in table.GCP_ROLE_PERMISSIONS or role_permissions(run, role), (
            f"{role}: add what it grants to GCP_ROLE_PERMISSIONS"
        )
    for custom in run.by_type("gcp:projects/iAMCustomRole:IAMCustomRole"):
        # Generated from the table: exactly the GKE and VPC rows' permissions and Cloud Run's release
        # attestor's (no actAs project-wide).
        kind = custom.inputs["roleId"].rsplit("_", 1)[1]
        scoped = PROJECT_SCOPED_TYPES | BINAUTHZ_TYPES
        assert custom.inputs["permissions"] == list(table.gcp_project_permissions(scoped, kind))
        assert "iam.serviceAccounts.actAs" not in custom.inputs["permissions"]
    groups = {g.outputs["id"] for g in run.by_type("azure-native:resources:ResourceGroup")}
    for assignment in run.by_type("azure-native:authorization:RoleAssignment"):
        if assignment.name.startswith("pipeline-"):
            (group,) = groups
            assert assignment.inputs["scope"] == group, assignment.name  # never the subscription


@pytest.mark.parametrize("stack", STACKS)
def test_the_pipeline_policies_fit_iam_quotas(stack_runs: dict[str, Preflight], stack: str) -> None:
    """Each generated policy is at most 6,144 characters without whitespace, is named
    pouw-<env>-<kind>-<n> (n from 1, no gap), and no pipeline role has more than 10 managed policies."""
    run = stack_runs[stack].run
    arns = {p.outputs["arn"]: p for p in run.by_type("aws:iam/policy:Policy")}
    for kind in ("deploy", "preview"):
        documents = managed_documents(run, kind)
        assert documents, kind
        for n, document in enumerate(documents, 1):
            policy = run.get("aws:iam/policy:Policy", f"pipeline-{kind}-{n}")
            assert policy.inputs["name"] == f"pouw-{stack}-{kind}-{n}"
            assert pipeline_policies.size(document) <= pipeline_policies.MAX_POLICY_CHARS, (kind, n)
        attached = [
            a
            for a in run.by_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
            if a.name.startswith(f"pipeline-{kind}-")
        ]
        assert len(attached) == len(documents) <= pipeline_policies.MAX_MANAGED_POLICIES
        assert {arns[a.inputs["policyArn"]].name for a in attached} == {
            f"pipeline-{kind}-{n}" for n in range(1, len(documents) + 1)
        }
        # What the program wrote is what the table gives for this account (no drift, no hand edit).
        account = run.get("aws:iam/policy:Policy", "permissions-boundary").outputs["arn"].split(":")[4]
        from components.runners import pipeline_documents

        assert documents == pipeline_documents(kind, stack, account)


def test_policies_split_deterministically_and_never_beyond_the_limit() -> None:
    """More statements than one policy holds are packed in order into several, each under the limit;
    one too large is halved by its actions; the same input gives the same documents."""
    statements = pipeline_policies.statements(
        pipeline_policies.deploy_actions(),
        "prod",
        "123456789012",
        conditioned=pipeline_policies.conditions("prod"),
    )
    for limit in (6144, 3000, 1500):
        documents = pipeline_policies.pack(statements, limit)
        assert documents == pipeline_policies.pack(statements, limit)
        assert all(pipeline_policies.size(d) <= limit for d in documents)
        packed = sorted(a for d in documents for s in json.loads(d)["Statement"] for a in s["Action"])
        assert packed == sorted(a for s in statements for a in s["Action"])
        sids = [s["Sid"] for d in documents for s in json.loads(d)["Statement"]]
        assert len(sids) == len(set(sids))
    assert len(pipeline_policies.pack(statements, 1500)) > len(pipeline_policies.pack(statements, 6144))
    with pytest.raises(ValueError, match="10 per role"):
        pipeline_policies.pack(statements, 1000)  # more than a role may attach: fail, never drop
    with pytest.raises(ValueError, match="does not fit"):
        pipeline_policies.pack(statements, 400)


def test_a_row_change_changes_the_policies() -> None:
    """The documents are the table's data: a new action in a row is granted, scoped by its service;
    a service without a scope fails naming the file; an action that lost its row is gone."""
    rows = dict(table.PERMISSIONS)
    vpc = rows["aws:ec2/vpc:Vpc"]
    rows["aws:ec2/vpc:Vpc"] = dataclasses.replace(vpc, update=(*vpc.update, "ec2:ModifyVpcTenancy"))
    del rows["aws:lb/listenerRule:ListenerRule"]
    actions = pipeline_policies.deploy_actions(rows)
    assert "ec2:ModifyVpcTenancy" in actions and "elasticloadbalancing:CreateRule" not in actions
    documents = pipeline_policies.pack(pipeline_policies.statements(actions, "dev", "123456789012"))
    assert allowed(documents, "ec2:ModifyVpcTenancy", "arn:aws:ec2:eu-west-1:123456789012:vpc/vpc-1")
    assert not allowed(documents, "ec2:ModifyVpcTenancy", "arn:aws:ec2:eu-west-1:999999999999:vpc/vpc-1")
    assert not allowed(documents, "elasticloadbalancing:CreateRule", "*")
    rows["aws:sqs/queue:Queue"] = table.Row("aws", table.AWS_SAR.format("amazonsqs"), ("sqs:CreateQueue",))
    with pytest.raises(KeyError, match=r"components/pipeline_policies\.py"):
        pipeline_policies.statements(pipeline_policies.deploy_actions(rows), "dev", "123456789012")


@pytest.mark.parametrize("stack", STACKS)
def test_ec2_deletions_need_the_environment_tag(stack_runs: dict[str, Preflight], stack: str) -> None:
    """The deploy role deletes a VPC, subnet, gateway... only while it carries this environment's tag:
    never another environment's in a shared account."""
    documents = managed_documents(stack_runs[stack].run, "deploy")
    vpc = "arn:aws:ec2:eu-west-1:123456789012:vpc/vpc-0a1b2c3d"
    assert allowed(documents, "ec2:DeleteVpc", vpc, {"aws:ResourceTag/environment": stack})
    assert not allowed(documents, "ec2:DeleteVpc", vpc, {"aws:ResourceTag/environment": "other"})
    assert not allowed(documents, "ec2:DeleteVpc", vpc)
    key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert allowed(documents, "kms:CreateGrant", key, {"kms:GrantIsForAWSResource": "true"})
    assert not allowed(documents, "kms:CreateGrant", key)


# --- the rollout driver's metric reads (delivery/metrics.py), as the deploy identity ----------------------

METRIC_NEIGHBOURS = (  # what a metric read must not bring along: writes, alarms, other reads, tagging
    "cloudwatch:PutMetricData",
    "cloudwatch:GetMetricStatistics",
    "cloudwatch:ListMetrics",
    "cloudwatch:PutMetricAlarm",
    "cloudwatch:DeleteAlarms",
    "cloudwatch:GetDashboard",
    "tag:TagResources",
    "tag:UntagResources",
    "tag:GetTagKeys",
)


def aws_documents(run: ProgramRun, kind: str) -> list[str]:
    """Every policy the pipeline role of `kind` holds: its managed documents and its inline policies."""
    inline = [
        p.inputs["policy"]
        for p in run.by_type("aws:iam/rolePolicy:RolePolicy")
        if p.name.startswith(f"pipeline-{kind}-")
    ]
    return [*managed_documents(run, kind), *inline]


@pytest.mark.parametrize("stack", STACKS)
def test_the_deploy_role_reads_the_rollout_metrics_and_nothing_more(
    stack_runs: dict[str, Preflight], stack: str
) -> None:
    """GetMetricData and GetResources (no resource type: on `*`), for the deploy role only; no other
    CloudWatch or tagging action in anything either pipeline role holds."""
    run = stack_runs[stack].run
    deploy, preview = aws_documents(run, "deploy"), aws_documents(run, "preview")
    reads = table.DRIVER_READS["aws"].read
    assert set(reads) == {"cloudwatch:GetMetricData", "tag:GetResources"}  # delivery/metrics.py's calls
    for action in reads:
        assert allowed(deploy, action, "*"), action
        assert not allowed(preview, action, "*"), action
    for action in METRIC_NEIGHBOURS:
        assert not allowed(deploy, action, "*") and not allowed(preview, action, "*"), action
    metrics = {
        a
        for document in deploy
        for statement in allow_statements(document)
        for a in actions_of(statement)
        if a.split(":", 1)[0] in ("cloudwatch", "tag")
    }
    assert metrics == set(reads)
    (statement,) = allow_statements(
        run.get("aws:iam/rolePolicy:RolePolicy", "pipeline-deploy-metrics").inputs["policy"]
    )
    assert statement == {
        "Sid": "RolloutDriverMetricReads",
        "Effect": "Allow",
        "Action": sorted(reads),
        "Resource": "*",
    }


def monitoring(permissions: set[str]) -> set[str]:
    return {p for p in permissions if p.startswith("monitoring.")}


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_the_deploy_account_lists_time_series_and_nothing_more(
    stack_runs: dict[str, Preflight], stack: str
) -> None:
    """monitoring.timeSeries.list on the project (metrics have no narrower scope), in the deploy
    account's generated custom role, not monitoring.viewer; the preview account reads no metric."""
    run = stack_runs[stack].run
    deploy, on = gcp_grants(run, "deploy")
    preview, _ = gcp_grants(run, "preview")
    assert monitoring(deploy) == set(table.DRIVER_READS["gcp"].read) == {"monitoring.timeSeries.list"}
    assert not monitoring({p for grants in on.values() for p in grants})
    assert not monitoring(preview)
    roles = {b.inputs["role"] for b in run.by_type("gcp:projects/iAMMember:IAMMember")}
    assert "roles/monitoring.viewer" not in roles


def test_a_gcp_stack_without_gke_still_gets_the_metric_read(tmp_path: Any) -> None:
    """Without GKE rows the deploy account's custom role is the driver's read alone (Cloud Run metrics)."""
    from tests.conftest import run_config, stack_file

    config = stack_file("staging")["config"]
    config.pop("pouw-cicd:gke")
    for service in config["pouw-cicd:services"]:
        service["targets"] = [t for t in service["targets"] if t != "gke"]
    run = run_config(tmp_path, "staging", config)
    (custom,) = [
        r
        for r in run.by_type("gcp:projects/iAMCustomRole:IAMCustomRole")
        if r.inputs["roleId"].endswith("_deploy")
    ]
    # The driver's read and Cloud Run's release attestor and key (components/admission.py).
    assert custom.inputs["permissions"] == list(table.gcp_project_permissions(BINAUTHZ_TYPES, "deploy"))
    assert "monitoring.timeSeries.list" in custom.inputs["permissions"]
    (preview,) = [
        r
        for r in run.by_type("gcp:projects/iAMCustomRole:IAMCustomRole")
        if r.inputs["roleId"].endswith("_preview")
    ]  # the attestor's and key's reads
    assert preview.inputs["permissions"] == list(table.gcp_project_permissions(BINAUTHZ_TYPES, "preview"))
    deploy, _ = gcp_grants(run, "deploy")
    assert monitoring(deploy) == {"monitoring.timeSeries.list"}


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_the_azure_deploy_identity_reads_metrics_in_its_resource_group_only(
    stack_runs: dict[str, Preflight], stack: str
) -> None:
    """Microsoft.Insights/metrics/read is within Contributor (not a NotAction), held at the resource
    group where the Front Door profile and the AGC resource are; nothing is assigned wider."""
    run = stack_runs[stack].run
    (action,) = table.DRIVER_READS["azure"].read
    assert not any(
        fnmatch.fnmatchcase(action.lower(), n.lower()) for n in table.AZURE_CONTRIBUTOR_NOT_ACTIONS
    )
    (group,) = run.by_type("azure-native:resources:ResourceGroup")
    (role,) = [
        r
        for r in run.by_type("azure-native:authorization:RoleAssignment")
        if r.name == "pipeline-deploy-role"
    ]
    assert role.inputs["roleDefinitionId"].endswith("/b24988ac-6180-42a0-ab88-20f7382dd24c")  # Contributor
    assert role.inputs["scope"] == group.outputs["id"]
    sources = {r.type for r in run.resources} & {
        "azure-native:cdn:Profile",
        "azure-native:servicenetworking:TrafficControllerInterface",
    }
    assert sources == {
        "azure-native:cdn:Profile",
        "azure-native:servicenetworking:TrafficControllerInterface",
    }
    for resource in run.resources:
        if resource.type in sources:
            assert resource.inputs["resourceGroupName"] == group.outputs["name"], resource.name
