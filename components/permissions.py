"""What this program's `pulumi up` and `pulumi preview` need, per resource type and cloud: the table the
self-deployability test (tests/test_permissions.py) checks every stack's plan against.

Each row names the calls a provider makes to create, update and delete a resource of that type and to
read it in a preview, from the cloud's own reference (the `source` of the row). A row's `bootstrap`
lists the operations only the bootstrap identity performs (the deploy identity is denied them on
purpose, `note` says why); `preview_gap` says when a preview identity cannot read a type live and what
happens instead. Adding a resource type to the program without a row here fails the test, naming the
type and this file.

Who runs what (README, "Bootstrap"): the bootstrap identity runs the first `pulumi up` of an
environment and any change to the pipeline identities (everything under `PipelineIdentities` and the
permissions boundary); the deploy identity every later `pulumi up`; the preview identity `pulumi
preview` of pull requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Cloud = Literal["aws", "gcp", "azure", "kubernetes", "program"]
Operation = Literal["create", "update", "delete"]

AWS_SAR = "https://docs.aws.amazon.com/service-authorization/latest/reference/list_{}.html"
GCP_ROLES = "https://cloud.google.com/iam/docs/roles-permissions/{}"
AZURE_PERMISSIONS = "https://learn.microsoft.com/azure/role-based-access-control/permissions/{}"
K8S_RBAC = "https://kubernetes.io/docs/reference/access-authn-authz/rbac/"
EKS_ACCESS = "https://docs.aws.amazon.com/eks/latest/userguide/access-policy-permissions.html"
PULUMI_COMPONENTS = "https://www.pulumi.com/docs/iac/concepts/resources/components/"

# Resources the bootstrap identity alone manages, whatever their type: the pipeline identities and
# the boundary that caps every other role (the deploy identity's own grants are never its to change).
BOOTSTRAP_PARENTS = frozenset({"pouw:index:PipelineIdentities"})
BOOTSTRAP_NAMES = frozenset({"permissions-boundary"})


@dataclass(frozen=True)
class Row:
    cloud: Cloud
    source: str
    create: tuple[str, ...] = ()
    update: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()
    read: tuple[str, ...] = ()
    bootstrap: tuple[Operation, ...] = ()
    note: str = ""
    preview_gap: str = ""

    def actions(self, operation: Operation) -> tuple[str, ...]:
        return {"create": self.create, "update": self.update, "delete": self.delete}[operation]


def _aws(service: str, create: str, update: str, delete: str, read: str, **extra: object) -> Row:
    """An AWS row: space-separated actions, each `service:Action`."""
    return Row(
        "aws",
        AWS_SAR.format(service),
        tuple(create.split()),
        tuple(update.split()),
        tuple(delete.split()),
        tuple(read.split()),
        **extra,  # type: ignore[arg-type]
    )


def _k8s(resource: str, group: str = "") -> Row:
    """A Kubernetes row: RBAC verbs on `group/resource` (the EKS access policies map to RBAC)."""
    ref = f"{group}/{resource}" if group else resource
    return Row(
        "kubernetes",
        K8S_RBAC,
        (f"create {ref}",),
        (f"patch {ref}",),
        (f"delete {ref}",),
        (f"get {ref}", f"list {ref}"),
    )


def _program(note: str) -> Row:
    return Row("program", PULUMI_COMPONENTS, note=note)


PERMISSIONS: dict[str, Row] = {
    # --- AWS: networking (AwsNetwork)
    "aws:ec2/vpc:Vpc": _aws(
        "amazonec2",
        "ec2:CreateVpc ec2:ModifyVpcAttribute ec2:CreateTags",
        "ec2:ModifyVpcAttribute ec2:CreateTags ec2:DeleteTags",
        "ec2:DeleteVpc",
        "ec2:DescribeVpcs ec2:DescribeVpcAttribute",
    ),
    "aws:ec2/subnet:Subnet": _aws(
        "amazonec2",
        "ec2:CreateSubnet ec2:ModifySubnetAttribute ec2:CreateTags",
        "ec2:ModifySubnetAttribute ec2:CreateTags ec2:DeleteTags",
        "ec2:DeleteSubnet",
        "ec2:DescribeSubnets",
    ),
    "aws:ec2/internetGateway:InternetGateway": _aws(
        "amazonec2",
        "ec2:CreateInternetGateway ec2:AttachInternetGateway ec2:CreateTags",
        "ec2:CreateTags ec2:DeleteTags",
        "ec2:DetachInternetGateway ec2:DeleteInternetGateway",
        "ec2:DescribeInternetGateways",
    ),
    "aws:ec2/eip:Eip": _aws(
        "amazonec2",
        "ec2:AllocateAddress ec2:CreateTags",
        "ec2:CreateTags ec2:DeleteTags",
        "ec2:ReleaseAddress",
        "ec2:DescribeAddresses",
    ),
    "aws:ec2/natGateway:NatGateway": _aws(
        "amazonec2",
        "ec2:CreateNatGateway ec2:CreateTags",
        "ec2:CreateTags ec2:DeleteTags",
        "ec2:DeleteNatGateway",
        "ec2:DescribeNatGateways",
    ),
    "aws:ec2/routeTable:RouteTable": _aws(
        "amazonec2",
        "ec2:CreateRouteTable ec2:CreateRoute ec2:CreateTags",
        "ec2:CreateRoute ec2:ReplaceRoute ec2:DeleteRoute ec2:CreateTags",
        "ec2:DeleteRouteTable",
        "ec2:DescribeRouteTables",
    ),
    "aws:ec2/routeTableAssociation:RouteTableAssociation": _aws(
        "amazonec2",
        "ec2:AssociateRouteTable",
        "ec2:ReplaceRouteTableAssociation",
        "ec2:DisassociateRouteTable",
        "ec2:DescribeRouteTables",
    ),
    "aws:ec2/securityGroup:SecurityGroup": _aws(
        "amazonec2",
        "ec2:CreateSecurityGroup ec2:AuthorizeSecurityGroupIngress ec2:AuthorizeSecurityGroupEgress "
        "ec2:RevokeSecurityGroupEgress ec2:CreateTags",
        "ec2:AuthorizeSecurityGroupIngress ec2:RevokeSecurityGroupIngress ec2:AuthorizeSecurityGroupEgress "
        "ec2:RevokeSecurityGroupEgress ec2:CreateTags ec2:DeleteTags",
        "ec2:DeleteSecurityGroup",
        "ec2:DescribeSecurityGroups ec2:DescribeSecurityGroupRules",
    ),
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": _aws(
        "amazonec2",
        "ec2:RevokeSecurityGroupIngress ec2:RevokeSecurityGroupEgress ec2:CreateTags",
        "ec2:AuthorizeSecurityGroupIngress ec2:RevokeSecurityGroupIngress ec2:CreateTags",
        "",  # the default group outlives the resource: delete only forgets it
        "ec2:DescribeSecurityGroups",
    ),
    "aws:ec2/flowLog:FlowLog": _aws(
        "amazonec2",
        "ec2:CreateFlowLogs ec2:CreateTags logs:CreateLogDelivery",
        "ec2:CreateTags ec2:DeleteTags",
        "ec2:DeleteFlowLogs logs:DeleteLogDelivery",
        "ec2:DescribeFlowLogs",
        note="also iam:PassRole of the flow-log role to vpc-flow-logs.amazonaws.com (the role row)",
    ),
    "aws:ec2/launchTemplate:LaunchTemplate": _aws(
        "amazonec2",
        "ec2:CreateLaunchTemplate ec2:CreateTags",
        "ec2:CreateLaunchTemplateVersion ec2:ModifyLaunchTemplate ec2:CreateTags",
        "ec2:DeleteLaunchTemplate",
        "ec2:DescribeLaunchTemplates ec2:DescribeLaunchTemplateVersions",
    ),
    "aws:cloudwatch/logGroup:LogGroup": _aws(
        "amazoncloudwatchlogs",
        "logs:CreateLogGroup logs:PutRetentionPolicy logs:TagResource logs:AssociateKmsKey",
        "logs:PutRetentionPolicy logs:TagResource logs:UntagResource logs:AssociateKmsKey",
        "logs:DeleteLogGroup",
        "logs:DescribeLogGroups logs:ListTagsForResource",
    ),
    "aws:kms/key:Key": _aws(
        "awskeymanagementservice",
        "kms:CreateKey kms:EnableKeyRotation kms:TagResource kms:PutKeyPolicy",
        "kms:PutKeyPolicy kms:EnableKeyRotation kms:UpdateKeyDescription kms:TagResource kms:UntagResource",
        "kms:ScheduleKeyDeletion",
        "kms:DescribeKey kms:GetKeyPolicy kms:GetKeyRotationStatus kms:ListResourceTags",
    ),
    # --- AWS: registries (EcrRepository)
    "aws:ecr/repository:Repository": _aws(
        "amazonelasticcontainerregistry",
        "ecr:CreateRepository ecr:TagResource kms:DescribeKey kms:CreateGrant",
        "ecr:PutImageScanningConfiguration ecr:PutImageTagMutability ecr:TagResource ecr:UntagResource",
        "ecr:DeleteRepository",
        "ecr:DescribeRepositories ecr:ListTagsForResource",
        note="a repository encrypted with the stack's KMS key: ECR calls DescribeKey and CreateGrant on the "
        "key as the caller (docs.aws.amazon.com/AmazonECR/latest/userguide/encryption-at-rest.html); the "
        "grant only for an AWS resource (components/pipeline_policies.py, `conditions`)",
    ),
    "aws:ecr/lifecyclePolicy:LifecyclePolicy": _aws(
        "amazonelasticcontainerregistry",
        "ecr:PutLifecyclePolicy",
        "ecr:PutLifecyclePolicy",
        "ecr:DeleteLifecyclePolicy",
        "ecr:GetLifecyclePolicy",
    ),
    "aws:ecr/repositoryPolicy:RepositoryPolicy": _aws(
        "amazonelasticcontainerregistry",
        "ecr:SetRepositoryPolicy",
        "ecr:SetRepositoryPolicy",
        "ecr:DeleteRepositoryPolicy",
        "ecr:GetRepositoryPolicy",
    ),
    "aws:ecr/registryScanningConfiguration:RegistryScanningConfiguration": _aws(
        "amazonelasticcontainerregistry",
        "ecr:PutRegistryScanningConfiguration inspector2:Enable",
        "ecr:PutRegistryScanningConfiguration",
        "ecr:PutRegistryScanningConfiguration",
        "ecr:GetRegistryScanningConfiguration",
    ),
    "docker-build:index:Image": _aws(
        "amazonelasticcontainerregistry",
        "ecr:GetAuthorizationToken ecr:BatchCheckLayerAvailability ecr:InitiateLayerUpload "
        "ecr:UploadLayerPart ecr:CompleteLayerUpload ecr:PutImage ecr:BatchGetImage",
        "ecr:GetAuthorizationToken ecr:InitiateLayerUpload ecr:UploadLayerPart ecr:CompleteLayerUpload "
        "ecr:PutImage",
        "",  # retainOnDelete: images are never deleted by the program
        "ecr:GetAuthorizationToken ecr:BatchGetImage ecr:DescribeImages",
        note="the build pushes to the environment's build registry (ECR in every stack)",
    ),
    "docker-build:index:Index": Row(
        "program",
        "https://www.pulumi.com/registry/packages/docker-build/api-docs/index_/",
        note="copies an index between registries with the same credentials as the Image rows (ECR, ACR "
        "with Contributor's push, Artifact Registry with the repository's admin binding, GHCR token)",
    ),
    # --- AWS: EKS (EksCluster)
    "aws:eks/cluster:Cluster": _aws(
        "amazonelastickubernetesservice",
        "eks:CreateCluster eks:TagResource eks:DescribeCluster",
        "eks:UpdateClusterConfig eks:UpdateClusterVersion eks:TagResource eks:UntagResource",
        "eks:DeleteCluster",
        "eks:DescribeCluster eks:ListTagsForResource",
        note="also iam:PassRole of the cluster role to eks.amazonaws.com (the role row)",
    ),
    "aws:eks/nodeGroup:NodeGroup": _aws(
        "amazonelastickubernetesservice",
        "eks:CreateNodegroup eks:TagResource ec2:RunInstances ec2:CreateLaunchTemplateVersion",
        "eks:UpdateNodegroupConfig eks:UpdateNodegroupVersion eks:TagResource",
        "eks:DeleteNodegroup",
        "eks:DescribeNodegroup",
        note="also iam:PassRole of the node role to eks.amazonaws.com (the role row)",
    ),
    "aws:eks/accessEntry:AccessEntry": _aws(
        "amazonelastickubernetesservice",
        "eks:CreateAccessEntry eks:TagResource",
        "eks:UpdateAccessEntry eks:TagResource",
        "eks:DeleteAccessEntry",
        "eks:DescribeAccessEntry",
    ),
    "aws:eks/accessPolicyAssociation:AccessPolicyAssociation": _aws(
        "amazonelastickubernetesservice",
        "eks:AssociateAccessPolicy",
        "eks:AssociateAccessPolicy",
        "eks:DisassociateAccessPolicy",
        "eks:ListAssociatedAccessPolicies",
    ),
    # --- AWS: IAM. Checked per resource against the deploy role's inline policy (role ARNs, boundary).
    "aws:iam/role:Role": _aws(
        "awsidentityandaccessmanagementiam",
        "iam:CreateRole iam:TagRole iam:PutRolePermissionsBoundary iam:PassRole",
        "iam:UpdateAssumeRolePolicy iam:UpdateRole iam:UpdateRoleDescription iam:TagRole iam:UntagRole "
        "iam:PutRolePermissionsBoundary iam:PassRole",
        "iam:DeleteRole iam:ListInstanceProfilesForRole iam:ListAttachedRolePolicies iam:ListRolePolicies",
        "iam:GetRole iam:ListRoleTags",
        note="iam:PassRole only to the service STACK_ROLES names for the role (components/runners.py)",
    ),
    "aws:iam/rolePolicy:RolePolicy": _aws(
        "awsidentityandaccessmanagementiam",
        "iam:PutRolePolicy",
        "iam:PutRolePolicy",
        "iam:DeleteRolePolicy",
        "iam:GetRolePolicy",
    ),
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": _aws(
        "awsidentityandaccessmanagementiam",
        "iam:AttachRolePolicy iam:GetPolicy",
        "iam:AttachRolePolicy",
        "iam:DetachRolePolicy",
        "iam:ListAttachedRolePolicies",
    ),
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider": _aws(
        "awsidentityandaccessmanagementiam",
        "iam:CreateOpenIDConnectProvider iam:TagOpenIDConnectProvider",
        "iam:UpdateOpenIDConnectProviderThumbprint iam:AddClientIDToOpenIDConnectProvider "
        "iam:RemoveClientIDFromOpenIDConnectProvider iam:TagOpenIDConnectProvider "
        "iam:UntagOpenIDConnectProvider",
        "iam:DeleteOpenIDConnectProvider",
        "iam:GetOpenIDConnectProvider",
        note="the EKS cluster's provider; the GitHub provider belongs to the bootstrap identity",
    ),
    "aws:iam/policy:Policy": _aws(
        "awsidentityandaccessmanagementiam",
        "iam:CreatePolicy iam:TagPolicy",
        "iam:CreatePolicyVersion iam:DeletePolicyVersion iam:TagPolicy iam:UntagPolicy",
        "iam:DeletePolicy",
        "iam:GetPolicy iam:GetPolicyVersion iam:ListPolicyVersions iam:ListPolicyTags",
        bootstrap=("create", "update", "delete"),
        note="the managed policies are the permissions boundary and the pipeline roles' policies "
        "(pouw-<env>-deploy-<n>, pouw-<env>-preview-<n>): the deploy role may change none of them",
    ),
    # --- AWS: ECS (EcsCluster, EcsService)
    "aws:ecs/cluster:Cluster": _aws(
        "amazonelasticcontainerservice",
        "ecs:CreateCluster ecs:TagResource",
        "ecs:UpdateCluster ecs:PutClusterCapacityProviders ecs:TagResource ecs:UntagResource",
        "ecs:DeleteCluster",
        "ecs:DescribeClusters",
    ),
    "aws:ecs/taskDefinition:TaskDefinition": _aws(
        "amazonelasticcontainerservice",
        "ecs:RegisterTaskDefinition ecs:TagResource",
        "ecs:RegisterTaskDefinition ecs:DeregisterTaskDefinition",
        "ecs:DeregisterTaskDefinition",
        "ecs:DescribeTaskDefinition",
        note="also iam:PassRole of the execution and task roles to ecs-tasks.amazonaws.com (the role row)",
    ),
    "aws:ecs/service:Service": _aws(
        "amazonelasticcontainerservice",
        "ecs:CreateService ecs:TagResource",
        "ecs:UpdateService ecs:TagResource ecs:UntagResource",
        "ecs:DeleteService ecs:UpdateService",
        "ecs:DescribeServices",
    ),
    "aws:appautoscaling/target:Target": _aws(
        "applicationautoscaling",
        "application-autoscaling:RegisterScalableTarget application-autoscaling:TagResource",
        "application-autoscaling:RegisterScalableTarget",
        "application-autoscaling:DeregisterScalableTarget",
        "application-autoscaling:DescribeScalableTargets",
    ),
    "aws:appautoscaling/policy:Policy": _aws(
        "applicationautoscaling",
        "application-autoscaling:PutScalingPolicy",
        "application-autoscaling:PutScalingPolicy",
        "application-autoscaling:DeleteScalingPolicy",
        "application-autoscaling:DescribeScalingPolicies",
    ),
    "aws:lb/loadBalancer:LoadBalancer": _aws(
        "awselasticloadbalancingv2",
        "elasticloadbalancing:CreateLoadBalancer elasticloadbalancing:ModifyLoadBalancerAttributes "
        "elasticloadbalancing:AddTags",
        "elasticloadbalancing:ModifyLoadBalancerAttributes elasticloadbalancing:SetSecurityGroups "
        "elasticloadbalancing:SetSubnets elasticloadbalancing:AddTags elasticloadbalancing:RemoveTags",
        "elasticloadbalancing:DeleteLoadBalancer",
        "elasticloadbalancing:DescribeLoadBalancers elasticloadbalancing:DescribeLoadBalancerAttributes "
        "elasticloadbalancing:DescribeTags",
    ),
    "aws:lb/targetGroup:TargetGroup": _aws(
        "awselasticloadbalancingv2",
        "elasticloadbalancing:CreateTargetGroup elasticloadbalancing:ModifyTargetGroupAttributes "
        "elasticloadbalancing:AddTags",
        "elasticloadbalancing:ModifyTargetGroup elasticloadbalancing:ModifyTargetGroupAttributes "
        "elasticloadbalancing:AddTags",
        "elasticloadbalancing:DeleteTargetGroup",
        "elasticloadbalancing:DescribeTargetGroups elasticloadbalancing:DescribeTargetGroupAttributes",
    ),
    "aws:lb/listener:Listener": _aws(
        "awselasticloadbalancingv2",
        "elasticloadbalancing:CreateListener elasticloadbalancing:AddTags",
        "elasticloadbalancing:ModifyListener elasticloadbalancing:AddTags",
        "elasticloadbalancing:DeleteListener",
        "elasticloadbalancing:DescribeListeners",
    ),
    "aws:lb/listenerRule:ListenerRule": _aws(
        "awselasticloadbalancingv2",
        "elasticloadbalancing:CreateRule elasticloadbalancing:AddTags",
        "elasticloadbalancing:ModifyRule elasticloadbalancing:SetRulePriorities",
        "elasticloadbalancing:DeleteRule",
        "elasticloadbalancing:DescribeRules",
    ),
    # --- AWS: the ALB access-log bucket (EcsCluster)
    "aws:s3/bucket:Bucket": _aws(
        "amazons3",
        "s3:CreateBucket s3:PutBucketTagging",
        "s3:PutBucketTagging",
        "s3:DeleteBucket",
        "s3:ListBucket s3:GetBucketTagging s3:GetBucketLocation",
    ),
    "aws:s3/bucketPolicy:BucketPolicy": _aws(
        "amazons3", "s3:PutBucketPolicy", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy", "s3:GetBucketPolicy"
    ),
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": _aws(
        "amazons3",
        "s3:PutBucketPublicAccessBlock",
        "s3:PutBucketPublicAccessBlock",
        "s3:PutBucketPublicAccessBlock",
        "s3:GetBucketPublicAccessBlock",
    ),
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": _aws(
        "amazons3",
        "s3:PutBucketOwnershipControls",
        "s3:PutBucketOwnershipControls",
        "s3:PutBucketOwnershipControls",
        "s3:GetBucketOwnershipControls",
    ),
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": _aws(
        "amazons3",
        "s3:PutLifecycleConfiguration",
        "s3:PutLifecycleConfiguration",
        "s3:PutLifecycleConfiguration",
        "s3:GetLifecycleConfiguration",
    ),
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": _aws(
        "amazons3",
        "s3:PutEncryptionConfiguration",
        "s3:PutEncryptionConfiguration",
        "s3:PutEncryptionConfiguration",
        "s3:GetEncryptionConfiguration",
    ),
    # --- GCP: permissions, granted by the roles GCP_ROLE_PERMISSIONS lists (tests/test_permissions.py).
    "gcp:artifactregistry/repository:Repository": Row(
        "gcp",
        GCP_ROLES.format("artifactregistry"),
        ("artifactregistry.repositories.create",),
        ("artifactregistry.repositories.update",),
        ("artifactregistry.repositories.delete",),
        ("artifactregistry.repositories.get",),
        bootstrap=("create", "delete"),
        note="the deploy account's admin binding is on the repository itself: it cannot create or delete it",
    ),
    "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember": Row(
        "gcp",
        GCP_ROLES.format("artifactregistry"),
        ("artifactregistry.repositories.setIamPolicy", "artifactregistry.repositories.getIamPolicy"),
        ("artifactregistry.repositories.setIamPolicy",),
        ("artifactregistry.repositories.setIamPolicy",),
        ("artifactregistry.repositories.get",),
        preview_gap="reading a binding needs getIamPolicy; preview diffs it from state (no refresh)",
    ),
    "gcp:cloudrunv2/service:Service": Row(
        "gcp",
        GCP_ROLES.format("run"),
        ("run.services.create", "run.operations.get", "iam.serviceAccounts.actAs"),
        ("run.services.update", "run.operations.get", "iam.serviceAccounts.actAs"),
        ("run.services.delete",),
        ("run.services.get",),
    ),
    "gcp:cloudrunv2/serviceIamMember:ServiceIamMember": Row(
        "gcp",
        GCP_ROLES.format("run"),
        ("run.services.setIamPolicy", "run.services.getIamPolicy"),
        ("run.services.setIamPolicy",),
        ("run.services.setIamPolicy",),
        ("run.services.getIamPolicy",),
        note="the deploy account's run.admin is granted on each service: a new service's first "
        "binding is the bootstrap identity's (it adds the grant in the same update)",
    ),
    "gcp:serviceaccount/account:Account": Row(
        "gcp",
        GCP_ROLES.format("iam"),
        ("iam.serviceAccounts.create",),
        ("iam.serviceAccounts.update",),
        ("iam.serviceAccounts.delete",),
        ("iam.serviceAccounts.get",),
        bootstrap=("create", "update", "delete"),
        note="runtime accounts come with their service (bootstrap identity); never project-wide SA admin",
    ),
    "gcp:serviceaccount/iAMMember:IAMMember": Row(
        "gcp",
        GCP_ROLES.format("iam"),
        ("iam.serviceAccounts.setIamPolicy",),
        ("iam.serviceAccounts.setIamPolicy",),
        ("iam.serviceAccounts.setIamPolicy",),
        ("iam.serviceAccounts.getIamPolicy",),
        bootstrap=("create", "update", "delete"),
        preview_gap="getIamPolicy is not granted; preview diffs the binding from state",
    ),
    "gcp:projects/iAMMember:IAMMember": Row(
        "gcp",
        GCP_ROLES.format("resourcemanager"),
        ("resourcemanager.projects.setIamPolicy",),
        ("resourcemanager.projects.setIamPolicy",),
        ("resourcemanager.projects.setIamPolicy",),
        ("resourcemanager.projects.getIamPolicy",),
        bootstrap=("create", "update", "delete"),
        note="only the pipeline identities' own grants: project IAM admin would be an escalation",
        preview_gap="getIamPolicy is not granted; preview diffs the binding from state",
    ),
    "gcp:projects/iAMCustomRole:IAMCustomRole": Row(
        "gcp",
        GCP_ROLES.format("iam"),
        ("iam.roles.create",),
        ("iam.roles.update",),
        ("iam.roles.delete",),
        ("iam.roles.get",),
        bootstrap=("create", "update", "delete"),
        note="only the pipeline identities' own roles (generated from this table): defining roles is the "
        "bootstrap identity's",
        preview_gap="iam.roles.get is not granted; preview diffs the role from state",
    ),
    "gcp:projects/service:Service": Row(
        "gcp",
        GCP_ROLES.format("serviceusage"),
        ("serviceusage.services.enable",),
        ("serviceusage.services.enable",),
        (),  # disableOnDestroy false: never disabled
        ("serviceusage.services.get",),
        bootstrap=("create", "update"),
    ),
    "gcp:iam/workloadIdentityPool:WorkloadIdentityPool": Row(
        "gcp",
        GCP_ROLES.format("iam"),
        ("iam.workloadIdentityPools.create",),
        ("iam.workloadIdentityPools.update",),
        ("iam.workloadIdentityPools.delete",),
        ("iam.workloadIdentityPools.get",),
        bootstrap=("create", "update", "delete"),
    ),
    "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider": Row(
        "gcp",
        GCP_ROLES.format("iam"),
        ("iam.workloadIdentityPoolProviders.create",),
        ("iam.workloadIdentityPoolProviders.update",),
        ("iam.workloadIdentityPoolProviders.delete",),
        ("iam.workloadIdentityPoolProviders.get",),
        bootstrap=("create", "update", "delete"),
    ),
    # --- Azure: operations at the resource group's scope (Contributor, Reader, RBAC Administrator).
    "azure-native:resources:ResourceGroup": Row(
        "azure",
        AZURE_PERMISSIONS.format("management-and-governance"),
        ("Microsoft.Resources/subscriptions/resourceGroups/write",),
        ("Microsoft.Resources/subscriptions/resourceGroups/write",),
        ("Microsoft.Resources/subscriptions/resourceGroups/delete",),
        ("Microsoft.Resources/subscriptions/resourceGroups/read",),
        bootstrap=("create", "delete"),
        note="the deploy identity's grants are scoped to the group: it cannot create or delete it",
    ),
    "azure-native:containerregistry:Registry": Row(
        "azure",
        AZURE_PERMISSIONS.format("containers"),
        ("Microsoft.ContainerRegistry/registries/write",),
        ("Microsoft.ContainerRegistry/registries/write", "Microsoft.ContainerRegistry/registries/push/write"),
        ("Microsoft.ContainerRegistry/registries/delete",),
        ("Microsoft.ContainerRegistry/registries/read",),
    ),
    "azure-native:containerinstance:ContainerGroup": Row(
        "azure",
        AZURE_PERMISSIONS.format("containers"),
        (
            "Microsoft.ContainerInstance/containerGroups/write",
            "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
        ),
        ("Microsoft.ContainerInstance/containerGroups/write",),
        ("Microsoft.ContainerInstance/containerGroups/delete",),
        ("Microsoft.ContainerInstance/containerGroups/read",),
    ),
    "azure-native:managedidentity:UserAssignedIdentity": Row(
        "azure",
        AZURE_PERMISSIONS.format("identity"),
        ("Microsoft.ManagedIdentity/userAssignedIdentities/write",),
        ("Microsoft.ManagedIdentity/userAssignedIdentities/write",),
        ("Microsoft.ManagedIdentity/userAssignedIdentities/delete",),
        ("Microsoft.ManagedIdentity/userAssignedIdentities/read",),
    ),
    "azure-native:managedidentity:FederatedIdentityCredential": Row(
        "azure",
        AZURE_PERMISSIONS.format("identity"),
        ("Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",),
        ("Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",),
        ("Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/delete",),
        ("Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/read",),
        note="the pipeline identities' credentials are the bootstrap identity's (their parent); the deploy "
        "identity manages the ALB Controller's (AksCluster)",
    ),
    "azure-native:authorization:RoleAssignment": Row(
        "azure",
        AZURE_PERMISSIONS.format("privileged"),
        ("Microsoft.Authorization/roleAssignments/write",),
        ("Microsoft.Authorization/roleAssignments/write",),
        ("Microsoft.Authorization/roleAssignments/delete",),
        ("Microsoft.Authorization/roleAssignments/read",),
        note="RBAC Administrator, conditioned on AZURE_ASSIGNED_ROLES (components/runners.py)",
    ),
    **{
        f"azure-native:cdn:{kind}": Row(
            "azure",
            AZURE_PERMISSIONS.format("networking"),
            (f"Microsoft.Cdn/profiles/{path}write",),
            (f"Microsoft.Cdn/profiles/{path}write",),
            (f"Microsoft.Cdn/profiles/{path}delete",),
            (f"Microsoft.Cdn/profiles/{path}read",),
        )
        for kind, path in (
            ("Profile", ""),
            ("AFDEndpoint", "afdEndpoints/"),
            ("AFDOriginGroup", "originGroups/"),
            ("AFDOrigin", "originGroups/origins/"),
            ("Route", "afdEndpoints/routes/"),
            # ACI's header route (A/B): a rule set and its rule.
            ("RuleSet", "rulesets/"),
            ("Rule", "rulesets/rules/"),
        )
    },
    # --- Kubernetes: RBAC verbs; the deploy role's AmazonEKSClusterAdminPolicy is cluster-admin, the
    # preview role's AmazonEKSViewPolicy is `view` (no Secrets) (EKS access policy permissions).
    "kubernetes:core/v1:Namespace": _k8s("namespaces"),
    "kubernetes:core/v1:ServiceAccount": _k8s("serviceaccounts"),
    "kubernetes:core/v1:Service": _k8s("services"),
    "kubernetes:core/v1:ConfigMap": _k8s("configmaps"),
    "kubernetes:core/v1:Secret": Row(
        "kubernetes",
        EKS_ACCESS,
        ("create secrets",),
        ("patch secrets",),
        ("delete secrets",),
        ("get secrets",),
        preview_gap="view excludes Secrets on purpose (the GitHub App key); pulumi-kubernetes falls back "
        "to a client-side diff when the server-side dry run is forbidden (pulumi-kubernetes#2419)",
    ),
    "kubernetes:apps/v1:Deployment": _k8s("deployments", "apps"),
    "kubernetes:autoscaling/v2:HorizontalPodAutoscaler": _k8s("horizontalpodautoscalers", "autoscaling"),
    "kubernetes:policy/v1:PodDisruptionBudget": _k8s("poddisruptionbudgets", "policy"),
    "kubernetes:networking.k8s.io/v1:Ingress": _k8s("ingresses", "networking.k8s.io"),
    "kubernetes:rbac.authorization.k8s.io/v1:Role": Row(
        "kubernetes",
        K8S_RBAC,
        ("create rbac.authorization.k8s.io/roles", "escalate rbac.authorization.k8s.io/roles"),
        ("patch rbac.authorization.k8s.io/roles", "escalate rbac.authorization.k8s.io/roles"),
        ("delete rbac.authorization.k8s.io/roles",),
        ("get rbac.authorization.k8s.io/roles",),
    ),
    "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding": Row(
        "kubernetes",
        K8S_RBAC,
        ("create rbac.authorization.k8s.io/rolebindings", "bind rbac.authorization.k8s.io/roles"),
        ("patch rbac.authorization.k8s.io/rolebindings", "bind rbac.authorization.k8s.io/roles"),
        ("delete rbac.authorization.k8s.io/rolebindings",),
        ("get rbac.authorization.k8s.io/rolebindings",),
    ),
    "kubernetes:helm.sh/v3:Release": Row(
        "kubernetes",
        "https://helm.sh/docs/topics/rbac/",
        ("* */*",),  # CRDs, ClusterRoles, webhooks: what the charts install
        ("* */*",),
        ("* */*",),
        ("get secrets", "list secrets"),  # Helm keeps each release's record in a Secret
        note="the AWS Load Balancer Controller, ALB Controller and ARC charts install cluster-scoped "
        "objects: cluster-admin",
        preview_gap="the release record is a Secret, which view cannot read: a preview shows the chart "
        "change from state and does not see drift made outside Pulumi",
    ),
    # --- Pulumi itself: components and providers call no cloud API.
    **{
        f"pouw:index:{component}": _program("a ComponentResource: a grouping in state, no cloud call")
        for component in (
            "AciService",
            "AcrRegistry",
            "ArtifactRegistry",
            "AwsNetwork",
            "CiRunners",
            "CloudRunService",
            "EcrRepository",
            "EcsCluster",
            "EcsService",
            "EksCluster",
            "EksService",
            "FrontDoor",
            "ImageBuild",
            "PipelineIdentities",
            "ReleaseImage",
        )
    },
    "pulumi:providers:kubernetes": _program(
        "a provider instance (kubeconfig with `aws eks get-token`, gke-gcloud-auth-plugin or kubelogin)"
    ),
    "pulumi:providers:docker": _program("a provider instance (registry credentials of the rows above)"),
    "pulumi:providers:docker-build": _program("a provider instance (registry credentials of the rows above)"),
}

# GKE, the shared Kubernetes layer (NetworkPolicy, Gateway API) and the WAF in front of public ALBs.
_GKE_AND_KUBERNETES_ROWS: list[tuple[str, Row]] = [
    ("pouw:index:GkeCluster", _program("a component: its children have their rows")),
    ("pouw:index:GkeService", _program("a component: its children have their rows")),
    # --- Kubernetes (the shared layer on EKS and GKE; RBAC verbs, as the other Kubernetes rows).
    ("kubernetes:networking.k8s.io/v1:NetworkPolicy", _k8s("networkpolicies", "networking.k8s.io")),
    ("kubernetes:gateway.networking.k8s.io/v1:Gateway", _k8s("gateways", "gateway.networking.k8s.io")),
    ("kubernetes:gateway.networking.k8s.io/v1:HTTPRoute", _k8s("httproutes", "gateway.networking.k8s.io")),
    ("kubernetes:networking.gke.io/v1:HealthCheckPolicy", _k8s("healthcheckpolicies", "networking.gke.io")),
    # --- GCP: GKE (https://cloud.google.com/iam/docs/roles-permissions/container) and its VPC
    # (https://cloud.google.com/iam/docs/roles-permissions/compute).
    (
        "gcp:container/cluster:Cluster",
        Row(
            "gcp",
            GCP_ROLES.format("container"),
            ("container.clusters.create", "container.operations.get", "iam.serviceAccounts.actAs"),
            ("container.clusters.update", "container.operations.get"),
            ("container.clusters.delete", "container.operations.get"),
            ("container.clusters.get",),
            note="actAs on the node service account only (the cluster's initial default pool runs as it)",
        ),
    ),
    (
        "gcp:container/nodePool:NodePool",
        Row(
            "gcp",
            GCP_ROLES.format("container"),
            # Node pools have no permissions of their own: they are parts of the cluster.
            ("container.clusters.update", "container.operations.get", "iam.serviceAccounts.actAs"),
            ("container.clusters.update", "container.operations.get", "iam.serviceAccounts.actAs"),
            ("container.clusters.update", "container.operations.get"),
            ("container.clusters.get",),
        ),
    ),
    (
        "gcp:compute/network:Network",
        Row(
            "gcp",
            GCP_ROLES.format("compute"),
            ("compute.networks.create",),
            ("compute.networks.update",),
            ("compute.networks.delete",),
            ("compute.networks.get",),
        ),
    ),
    (
        "gcp:compute/subnetwork:Subnetwork",
        Row(
            "gcp",
            GCP_ROLES.format("compute"),
            ("compute.subnetworks.create", "compute.networks.updatePolicy"),
            ("compute.subnetworks.update", "compute.subnetworks.setPrivateIpGoogleAccess"),
            ("compute.subnetworks.delete", "compute.networks.updatePolicy"),
            ("compute.subnetworks.get",),
        ),
    ),
]

_WAF_ROWS: list[tuple[str, Row]] = [
    (
        "aws:wafv2/webAcl:WebAcl",
        _aws(
            "awswafv2",
            "wafv2:CreateWebACL wafv2:TagResource wafv2:GetWebACL wafv2:ListTagsForResource",
            "wafv2:UpdateWebACL wafv2:GetWebACL wafv2:TagResource wafv2:UntagResource",
            "wafv2:DeleteWebACL wafv2:GetWebACL",
            "wafv2:GetWebACL wafv2:ListTagsForResource",
            note="managed rule groups need no extra grant to reference (AWS WAF Developer Guide, "
            "docs.aws.amazon.com/waf/latest/developerguide/aws-managed-rule-groups-list.html)",
        ),
    ),
    (
        "aws:wafv2/webAclAssociation:WebAclAssociation",
        _aws(
            "awswafv2",
            "wafv2:AssociateWebACL wafv2:GetWebACLForResource elasticloadbalancing:SetWebACL",
            "",  # every input forces a new association
            "wafv2:DisassociateWebACL wafv2:GetWebACLForResource",
            "wafv2:GetWebACLForResource",
            note="associating with an ALB also calls elasticloadbalancing:SetWebACL on the load balancer "
            "(docs.aws.amazon.com/waf/latest/APIReference/API_AssociateWebACL.html)",
        ),
    ),
]


def _azure(page: str, prefix: str, create: str = "", read: str = "", **extra: object) -> Row:
    """An Azure row for `prefix` (`Microsoft.Network/natGateways`): write creates and updates, delete
    deletes, read reads; `create` names the further actions a create or update calls (a `join` on what
    the resource attaches to), `read` the further actions a preview calls."""
    also = tuple(create.split())
    return Row(
        "azure",
        AZURE_PERMISSIONS.format(page),
        (f"{prefix}/write", *also),
        (f"{prefix}/write", *also),
        (f"{prefix}/delete",),
        (f"{prefix}/read", *read.split()),
        **extra,  # type: ignore[arg-type]
    )


# AKS (components/targets/aks.py): the cluster, its VNet and NAT egress, Application Gateway for Containers.
# Every action is Contributor's at the resource group; reads are Reader's, except the user kubeconfig the
# Kubernetes provider's kubeconfig is built from, which the preview identity reads with the Azure
# Kubernetes Service Cluster User Role (AZURE_AKS_CLUSTER_USER_ACTIONS).
_AKS_ROWS: list[tuple[str, Row]] = [
    ("pouw:index:AksCluster", _program("a component: its children have their rows")),
    ("pouw:index:AksService", _program("a component: its children have their rows")),
    (
        "azure-native:containerservice:ManagedCluster",
        _azure(
            "containers",
            "Microsoft.ContainerService/managedClusters",
            create="Microsoft.Network/virtualNetworks/subnets/join/action",  # the node pools' subnet
            read="Microsoft.ContainerService/managedClusters/listClusterUserCredential/action",
            note="the deploy identity's Kubernetes rights are Azure RBAC data actions (AKS_PIPELINE_ROLES)",
        ),
    ),
    ("azure-native:network:PublicIPAddress", _azure("networking", "Microsoft.Network/publicIPAddresses")),
    (
        "azure-native:network:NatGateway",
        _azure(
            "networking",
            "Microsoft.Network/natGateways",
            create="Microsoft.Network/publicIPAddresses/join/action",
        ),
    ),
    (
        "azure-native:network:VirtualNetwork",
        _azure(
            "networking",
            "Microsoft.Network/virtualNetworks",
            # inline subnets, the node subnet's NAT gateway
            create="Microsoft.Network/virtualNetworks/subnets/write "
            "Microsoft.Network/natGateways/join/action",
        ),
    ),
    (
        "azure-native:servicenetworking:TrafficControllerInterface",
        _azure("networking", "Microsoft.ServiceNetworking/trafficControllers"),
    ),
    (
        "azure-native:servicenetworking:FrontendsInterface",
        _azure("networking", "Microsoft.ServiceNetworking/trafficControllers/frontends"),
    ),
    (
        "azure-native:servicenetworking:AssociationsInterface",
        _azure(
            "networking",
            "Microsoft.ServiceNetworking/trafficControllers/associations",
            create="Microsoft.Network/virtualNetworks/subnets/join/action",
        ),
    ),
]

# Signature verification at admission (components/admission.py): Kyverno's component and its policy
# (a Kyverno CRD; RBAC verbs as the other Kubernetes rows), the GKE control plane's webhook firewall.
_ADMISSION_ROWS: list[tuple[str, Row]] = [
    ("pouw:index:Kyverno", _program("a component: its children have their rows")),
    ("kubernetes:kyverno.io/v1:ClusterPolicy", _k8s("clusterpolicies", "kyverno.io")),
    ("pouw:index:BinaryAuthorization", _program("a component: its children have their rows")),
    # Cloud Run's Binary Authorization: the release attestor and its KMS key (GCP_ROLES pages cloudkms,
    # containeranalysis, binaryauthorization). Its IAM grants and the project's admission policy are the
    # bootstrap identity's: a deploy identity that could rewrite them could admit anything.
    (
        "gcp:kms/keyRing:KeyRing",
        Row(
            "gcp",
            GCP_ROLES.format("cloudkms"),
            ("cloudkms.keyRings.create",),
            (),  # immutable
            (),  # key rings cannot be deleted: the provider only forgets them
            ("cloudkms.keyRings.get",),
        ),
    ),
    (
        "gcp:kms/cryptoKey:CryptoKey",
        Row(
            "gcp",
            GCP_ROLES.format("cloudkms"),
            ("cloudkms.cryptoKeys.create",),
            ("cloudkms.cryptoKeys.update",),
            ("cloudkms.cryptoKeyVersions.list", "cloudkms.cryptoKeyVersions.destroy"),
            (
                "cloudkms.cryptoKeys.get",
                "cloudkms.cryptoKeyVersions.list",
                "cloudkms.cryptoKeyVersions.viewPublicKey",
            ),
            note="a delete destroys the key's versions (keys themselves cannot be deleted); the read "
            "includes the attestor's public key (kms.get_kms_crypto_key_version)",
        ),
    ),
    (
        "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember",
        Row(
            "gcp",
            GCP_ROLES.format("cloudkms"),
            ("cloudkms.cryptoKeys.setIamPolicy", "cloudkms.cryptoKeys.getIamPolicy"),
            ("cloudkms.cryptoKeys.setIamPolicy",),
            ("cloudkms.cryptoKeys.setIamPolicy",),
            ("cloudkms.cryptoKeys.getIamPolicy",),
            bootstrap=("create", "update", "delete"),
            note="who may sign attestations",
            preview_gap="getIamPolicy is not granted; preview diffs the binding from state",
        ),
    ),
    (
        "gcp:containeranalysis/note:Note",
        Row(
            "gcp",
            GCP_ROLES.format("containeranalysis"),
            ("containeranalysis.notes.create",),
            ("containeranalysis.notes.update",),
            ("containeranalysis.notes.delete",),
            ("containeranalysis.notes.get",),
        ),
    ),
    (
        "gcp:containeranalysis/noteIamMember:NoteIamMember",
        Row(
            "gcp",
            GCP_ROLES.format("containeranalysis"),
            ("containeranalysis.notes.setIamPolicy", "containeranalysis.notes.getIamPolicy"),
            ("containeranalysis.notes.setIamPolicy",),
            ("containeranalysis.notes.setIamPolicy",),
            ("containeranalysis.notes.getIamPolicy",),
            bootstrap=("create", "update", "delete"),
            preview_gap="getIamPolicy is not granted; preview diffs the binding from state",
        ),
    ),
    (
        "gcp:binaryauthorization/attestor:Attestor",
        Row(
            "gcp",
            GCP_ROLES.format("binaryauthorization"),
            ("binaryauthorization.attestors.create", "containeranalysis.notes.get"),
            ("binaryauthorization.attestors.update", "containeranalysis.notes.get"),
            ("binaryauthorization.attestors.delete",),
            ("binaryauthorization.attestors.get",),
        ),
    ),
    (
        "gcp:binaryauthorization/attestorIamMember:AttestorIamMember",
        Row(
            "gcp",
            GCP_ROLES.format("binaryauthorization"),
            ("binaryauthorization.attestors.setIamPolicy", "binaryauthorization.attestors.getIamPolicy"),
            ("binaryauthorization.attestors.setIamPolicy",),
            ("binaryauthorization.attestors.setIamPolicy",),
            ("binaryauthorization.attestors.getIamPolicy",),
            bootstrap=("create", "update", "delete"),
            preview_gap="getIamPolicy is not granted; preview diffs the binding from state",
        ),
    ),
    (
        "gcp:binaryauthorization/policy:Policy",
        Row(
            "gcp",
            GCP_ROLES.format("binaryauthorization"),
            ("binaryauthorization.policy.update",),
            ("binaryauthorization.policy.update",),
            ("binaryauthorization.policy.update",),  # a delete resets the project's policy
            ("binaryauthorization.policy.get",),
            bootstrap=("create", "update", "delete"),
            note="the project's admission policy: a deploy identity that could change it could admit any "
            "image",
            preview_gap="binaryauthorization.policy.get is not granted; preview diffs the policy from state",
        ),
    ),
    (
        "gcp:compute/firewall:Firewall",
        Row(
            "gcp",
            GCP_ROLES.format("compute"),
            ("compute.firewalls.create", "compute.networks.updatePolicy"),
            ("compute.firewalls.update", "compute.networks.updatePolicy"),
            ("compute.firewalls.delete", "compute.networks.updatePolicy"),
            ("compute.firewalls.get",),
        ),
    ),
]

PERMISSIONS.update(_GKE_AND_KUBERNETES_ROWS)
PERMISSIONS.update(_WAF_ROWS)
PERMISSIONS.update(_AKS_ROWS)
PERMISSIONS.update(_ADMISSION_ROWS)


# What the deploy identity calls outside any resource's lifecycle: the rollout driver's metric reads
# (delivery/metrics.py), because rollout.yml runs the driver with the deploy identity (the GitHub
# environment `<stack>`). The preview identity reads no metric. Per cloud, every call metrics.py makes:
DRIVER_READS: dict[Cloud, Row] = {
    # GetMetricData (the ALB target-group counts and latency, EKS and ECS) and GetResources (the EKS
    # controller's target group, found by its tags): neither has a resource type, so both are granted on
    # `*` (Service Authorization Reference: list_amazoncloudwatch.html, GetMetricData; and
    # list_amazonresourcegrouptaggingapi.html, GetResources). API: docs.aws.amazon.com/AmazonCloudWatch/
    # latest/APIReference/API_GetMetricData.html, docs.aws.amazon.com/resourcegroupstagging/latest/
    # APIReference/API_GetResources.html. Granted by PipelineIdentities (components/runners.py).
    "aws": Row(
        "aws",
        AWS_SAR.format("amazoncloudwatch"),
        read=("cloudwatch:GetMetricData", "tag:GetResources"),
        note="tag:GetResources: " + AWS_SAR.format("amazonresourcegrouptaggingapi"),
    ),
    # projects.timeSeries.list (Cloud Run's request metrics, the GKE Gateway's load balancer), which needs
    # monitoring.timeSeries.list on the project (cloud.google.com/monitoring/api/ref_v3/rest/v3/
    # projects.timeSeries/list); metrics have no narrower scope. roles/monitoring.viewer would add every
    # dashboard, alert policy and uptime check read: the deploy account's custom project role holds this
    # one permission instead (gcp_project_permissions).
    "gcp": Row("gcp", GCP_ROLES.format("monitoring"), read=("monitoring.timeSeries.list",)),
    # Metrics - List (Front Door origins for ACI, AGC backends for AKS; learn.microsoft.com/rest/api/
    # monitor/metrics/list): Microsoft.Insights/metrics/read on the resource, which the deploy identity's
    # Contributor at the resource group already grants (Contributor's actions are `*` but its NotActions).
    "azure": Row("azure", AZURE_PERMISSIONS.format("monitor"), read=("Microsoft.Insights/metrics/read",)),
}


# What a cluster's Kyverno admission controller reads with its own cloud identity (components/admission.py):
# the image manifests of the registry the cluster pulls from, to resolve a tag to its digest and check
# it (the signatures themselves are read from GHCR, where the release pushed them). Granted on the
# stack's repositories only, by components/targets/{eks,gke,aks}.py; ADMISSION_ROLES names the
# built-in role holding exactly these reads where the cloud grants by role.
ADMISSION_READS: dict[Cloud, Row] = {
    # Log in (GetAuthorizationToken has no resource type: `*`) and read manifests and layers of the
    # stack's repositories (list_amazonelasticcontainerregistry.html).
    "aws": Row(
        "aws",
        AWS_SAR.format("amazonelasticcontainerregistry"),
        read=("ecr:GetAuthorizationToken", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"),
    ),
    # Artifact Registry Reader on the environment's repository (roles-permissions/artifactregistry).
    "gcp": Row(
        "gcp",
        GCP_ROLES.format("artifactregistry"),
        read=("artifactregistry.repositories.downloadArtifacts", "artifactregistry.dockerimages.get"),
    ),
    # AcrPull on the registry (permissions/containers: Microsoft.ContainerRegistry/registries/pull/read).
    "azure": Row(
        "azure",
        AZURE_PERMISSIONS.format("containers"),
        read=("Microsoft.ContainerRegistry/registries/pull/read",),
    ),
}
ADMISSION_ROLES: dict[Cloud, str] = {
    "gcp": "roles/artifactregistry.reader",
    "azure": "7f951dda-4ed3-4680-a7ca-43fe172d538d",  # AcrPull
}


def row(resource_type: str) -> Row:
    """The row for a type, or an error that says where to add it."""
    try:
        return PERMISSIONS[resource_type]
    except KeyError:
        raise KeyError(
            f"{resource_type} has no row in components/permissions.py PERMISSIONS: add the actions its "
            "create, update, delete and read call (cite the cloud's reference), then make sure the deploy "
            "and preview identities grant them"
        ) from None


# What the grants the identities hold contain, as far as the rows need (each from its reference page):
# the test evaluates the rows against these, so a grant that stops covering a row fails offline. The
# AWS pipeline roles hold no AWS managed policy: their policies are generated from the AWS rows above
# (components/pipeline_policies.py), so the test evaluates those documents themselves.


def _perms(text: str) -> frozenset[str]:
    return frozenset(text.split())


GCP_ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "roles/run.developer": _perms(
        "run.services.create run.services.update run.services.delete run.services.get run.services.list "
        "run.services.getIamPolicy run.operations.get run.operations.list run.revisions.get "
        "run.revisions.list run.revisions.delete run.configurations.get run.routes.get run.locations.list"
    ),
    "roles/run.viewer": _perms(
        "run.services.get run.services.list run.services.getIamPolicy run.operations.get "
        "run.revisions.get run.revisions.list run.configurations.get run.routes.get run.locations.list"
    ),
    "roles/artifactregistry.reader": _perms(
        "artifactregistry.repositories.get artifactregistry.repositories.list "
        "artifactregistry.repositories.downloadArtifacts artifactregistry.dockerimages.get"
    ),
    "roles/iam.serviceAccountUser": _perms(
        "iam.serviceAccounts.actAs iam.serviceAccounts.get iam.serviceAccounts.list"
    ),
    "roles/iam.serviceAccountViewer": _perms("iam.serviceAccounts.get iam.serviceAccounts.list"),
    "roles/iam.workloadIdentityPoolViewer": _perms(
        "iam.workloadIdentityPools.get iam.workloadIdentityPools.list "
        "iam.workloadIdentityPoolProviders.get iam.workloadIdentityPoolProviders.list"
    ),
    "roles/serviceusage.serviceUsageConsumer": _perms(
        "serviceusage.services.get serviceusage.services.list serviceusage.services.use"
    ),
    "roles/serviceusage.serviceUsageViewer": _perms("serviceusage.services.get serviceusage.services.list"),
}
# The GKE node service account's one project role (components/targets/gke.py), per
# https://cloud.google.com/iam/docs/roles-permissions/container
GCP_ROLE_PERMISSIONS |= {
    "roles/container.defaultNodeServiceAccount": frozenset(
        [
            "autoscaling.sites.writeMetrics",
            "logging.logEntries.create",
            "logging.logEntries.route",
            "monitoring.metricDescriptors.create",
            "monitoring.metricDescriptors.list",
            "monitoring.timeSeries.create",
            "monitoring.timeSeries.list",
        ]
    )
}
# Binary Authorization's attesting account (components/admission.py ATTESTER_ROLES), per the roles pages
# cloudkms, containeranalysis and binaryauthorization.
GCP_ROLE_PERMISSIONS |= {
    "roles/cloudkms.signerVerifier": _perms(
        "cloudkms.cryptoKeyVersions.useToSign cloudkms.cryptoKeyVersions.useToVerify "
        "cloudkms.cryptoKeyVersions.viewPublicKey cloudkms.locations.get cloudkms.locations.list "
        "resourcemanager.projects.get"
    ),
    "roles/containeranalysis.notes.attacher": _perms("containeranalysis.notes.attachOccurrence"),
    "roles/binaryauthorization.attestorsViewer": _perms(
        "binaryauthorization.attestors.get binaryauthorization.attestors.list"
    ),
    "roles/containeranalysis.occurrences.editor": _perms(
        "containeranalysis.occurrences.create containeranalysis.occurrences.delete "
        "containeranalysis.occurrences.get containeranalysis.occurrences.list "
        "containeranalysis.occurrences.update"
    ),
}
GCP_ROLE_PERMISSIONS["roles/run.admin"] = GCP_ROLE_PERMISSIONS["roles/run.developer"] | {
    "run.services.setIamPolicy"
}
GCP_ROLE_PERMISSIONS["roles/artifactregistry.admin"] = GCP_ROLE_PERMISSIONS[
    "roles/artifactregistry.reader"
] | {
    "artifactregistry.repositories.create",
    "artifactregistry.repositories.update",
    "artifactregistry.repositories.delete",
    "artifactregistry.repositories.getIamPolicy",
    "artifactregistry.repositories.setIamPolicy",
    "artifactregistry.repositories.uploadArtifacts",
}
# Azure built-in roles (AZURE_PERMISSIONS "privileged" and "general"): Contributor's NotActions,
# Reader's Actions; Role Based Access Control Administrator writes and deletes role assignments.
AZURE_CONTRIBUTOR_NOT_ACTIONS = (
    "Microsoft.Authorization/*/Delete",
    "Microsoft.Authorization/*/Write",
    "Microsoft.Authorization/elevateAccess/Action",
    "Microsoft.Blueprint/blueprintAssignments/write",
    "Microsoft.Blueprint/blueprintAssignments/delete",
    "Microsoft.Compute/galleries/share/action",
    "Microsoft.Purview/consents/write",
    "Microsoft.Purview/consents/delete",
    "Microsoft.Resources/deploymentStacks/manageDenySetting/action",
)
AZURE_READER_ACTIONS = ("*/read",)
# Azure Kubernetes Service Cluster User Role (AZURE_PERMISSIONS "containers"; built-in roles, Containers):
# the preview identity holds it where the stack runs AKS (components/runners.py AKS_PIPELINE_ROLES).
AZURE_AKS_CLUSTER_USER_ACTIONS = (
    "Microsoft.ContainerService/managedClusters/listClusterUserCredential/action",
    "Microsoft.ContainerService/managedClusters/read",
)
AZURE_RBAC_ADMIN_ACTIONS = (
    "*/read",
    "Microsoft.Authorization/roleAssignments/write",
    "Microsoft.Authorization/roleAssignments/delete",
)


def gcp_project_permissions(types: frozenset[str], kind: str) -> tuple[str, ...]:
    """The permissions a custom project role must hold for `types` (GCP rows): deploy every create,
    update, delete and read action except `iam.serviceAccounts.actAs` (granted on the account it acts
    as, never project-wide), and the rollout driver's metric reads (DRIVER_READS), preview the reads.
    Sorted, so the role changes only with the table."""
    wanted: set[str] = set(DRIVER_READS["gcp"].read) if kind == "deploy" else set()
    for type_ in sorted(types):
        row = PERMISSIONS[type_]
        wanted.update(row.read)
        if kind == "deploy":
            wanted.update((*row.create, *row.update, *row.delete))
    wanted.discard("iam.serviceAccounts.actAs")
    return tuple(sorted(wanted))
