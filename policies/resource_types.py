"""Resource-type tokens every policy module shares: one spelling of each, so a typo cannot hide a policy.

Grouped by platform. Sets name what a family of policies looks at (every Kubernetes pod template, every
resource policy document), so widening a policy to a new kind is one edit here.
"""

from __future__ import annotations

import re
from functools import lru_cache

# --- Images and registries -------------------------------------------------------------------------
IMAGE = "docker-build:index:Image"
INDEX = "docker-build:index:Index"  # a copy of a build into another registry (imagetools create)
ECR_REPOSITORY = "aws:ecr/repository:Repository"
ECR_LIFECYCLE = "aws:ecr/lifecyclePolicy:LifecyclePolicy"
ECR_REPOSITORY_POLICY = "aws:ecr/repositoryPolicy:RepositoryPolicy"
ECR_REGISTRY_POLICY = "aws:ecr/registryPolicy:RegistryPolicy"
ACR_REGISTRY = "azure-native:containerregistry:Registry"
ARTIFACT_REPOSITORY = "gcp:artifactregistry/repository:Repository"

# --- Kubernetes --------------------------------------------------------------------------------------
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
STATEFUL_SET = "kubernetes:apps/v1:StatefulSet"
DAEMON_SET = "kubernetes:apps/v1:DaemonSet"
REPLICA_SET = "kubernetes:apps/v1:ReplicaSet"
JOB = "kubernetes:batch/v1:Job"
CRON_JOB = "kubernetes:batch/v1:CronJob"
CRON_JOB_V1BETA1 = "kubernetes:batch/v1beta1:CronJob"
POD = "kubernetes:core/v1:Pod"
POD_TEMPLATE = "kubernetes:core/v1:PodTemplate"
REPLICATION_CONTROLLER = "kubernetes:core/v1:ReplicationController"
# Every kind that carries a pod spec: where it sits differs (pod_spec in workload_security).
WORKLOADS = frozenset(
    {
        DEPLOYMENT,
        STATEFUL_SET,
        DAEMON_SET,
        REPLICA_SET,
        JOB,
        CRON_JOB,
        CRON_JOB_V1BETA1,
        POD,
        POD_TEMPLATE,
        REPLICATION_CONTROLLER,
    }
)
CRON_JOBS = frozenset({CRON_JOB, CRON_JOB_V1BETA1})
NAMESPACE = "kubernetes:core/v1:Namespace"
SERVICE = "kubernetes:core/v1:Service"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
CLUSTER_ROLE = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole"
ROLES = frozenset({ROLE, CLUSTER_ROLE})
ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
CLUSTER_ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding"
BINDINGS = frozenset({ROLE_BINDING, CLUSTER_ROLE_BINDING})
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
KYVERNO_CLUSTER_POLICY = "kubernetes:kyverno.io/v1:ClusterPolicy"
HTTP_ROUTE = "kubernetes:gateway.networking.k8s.io/v1:HTTPRoute"  # Gateway API (GKE, AKS)
GATEWAY = "kubernetes:gateway.networking.k8s.io/v1:Gateway"

# --- AWS ---------------------------------------------------------------------------------------------
EKS_CLUSTER = "aws:eks/cluster:Cluster"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
INSTANCE = "aws:ec2/instance:Instance"
ECS_TASK = "aws:ecs/taskDefinition:TaskDefinition"
ECS_SERVICE = "aws:ecs/service:Service"
LISTENER = "aws:lb/listener:Listener"
LOAD_BALANCER = "aws:lb/loadBalancer:LoadBalancer"
ALB_LOAD_BALANCER = "aws:alb/loadBalancer:LoadBalancer"  # the aws.alb alias of the same resource
LOAD_BALANCERS = frozenset({LOAD_BALANCER, ALB_LOAD_BALANCER})
LISTENER_RULE = "aws:lb/listenerRule:ListenerRule"
WAF_ASSOCIATION = "aws:wafv2/webAclAssociation:WebAclAssociation"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
SECURITY_GROUP_INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
FLOW_LOG = "aws:ec2/flowLog:FlowLog"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
KMS_KEY = "aws:kms/key:Key"
KMS_KEY_POLICY = "aws:kms/keyPolicy:KeyPolicy"
S3_BUCKET = "aws:s3/bucket:Bucket"
S3_BUCKET_V2 = "aws:s3/bucketV2:BucketV2"
S3_BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
S3_PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
S3_ACCOUNT_PUBLIC_ACCESS_BLOCK = "aws:s3/accountPublicAccessBlock:AccountPublicAccessBlock"
SQS_QUEUE_POLICY = "aws:sqs/queuePolicy:QueuePolicy"
SNS_TOPIC_POLICY = "aws:sns/topicPolicy:TopicPolicy"
SECRET_POLICY = "aws:secretsmanager/secretPolicy:SecretPolicy"
# Resource-based policies: a `policy` JSON document that names its principals.
RESOURCE_POLICIES = frozenset(
    {
        ECR_REPOSITORY_POLICY,
        ECR_REGISTRY_POLICY,
        S3_BUCKET_POLICY,
        KMS_KEY,
        KMS_KEY_POLICY,
        SQS_QUEUE_POLICY,
        SNS_TOPIC_POLICY,
        SECRET_POLICY,
    }
)
IAM_ROLE = "aws:iam/role:Role"
IAM_ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
IAM_USER_POLICY = "aws:iam/userPolicy:UserPolicy"
IAM_GROUP_POLICY = "aws:iam/groupPolicy:GroupPolicy"
IAM_POLICY = "aws:iam/policy:Policy"
# Identity-based policy documents (`policy` JSON) the stack attaches.
IAM_POLICIES = frozenset({IAM_ROLE_POLICY, IAM_USER_POLICY, IAM_GROUP_POLICY, IAM_POLICY})
IAM_ATTACHMENTS = frozenset(
    {
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
        "aws:iam/userPolicyAttachment:UserPolicyAttachment",
        "aws:iam/groupPolicyAttachment:GroupPolicyAttachment",
        "aws:iam/policyAttachment:PolicyAttachment",
    }
)
SCALING_TARGET = "aws:appautoscaling/target:Target"

# --- GCP ---------------------------------------------------------------------------------------------
CLOUD_RUN = "gcp:cloudrunv2/service:Service"
RUN_INVOKERS = frozenset(
    {
        "gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
        "gcp:cloudrunv2/serviceIamBinding:ServiceIamBinding",
        "gcp:cloudrunv2/serviceIamPolicy:ServiceIamPolicy",
        "gcp:cloudrun/iamMember:IamMember",
        "gcp:cloudrun/iamBinding:IamBinding",
        "gcp:cloudrun/iamPolicy:IamPolicy",
    }
)
GKE_CLUSTER = "gcp:container/cluster:Cluster"
GKE_NODE_POOL = "gcp:container/nodePool:NodePool"
GCP_WIF_PROVIDER = "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider"
GCP_SA_KEY = "gcp:serviceaccount/key:Key"
# Project, folder and organisation level grants (a role there reaches every resource below).
GCP_HIERARCHY_IAM = frozenset(
    {
        f"gcp:{level}/iAM{kind}:IAM{kind}"
        for level in ("projects", "folder", "organizations")
        for kind in ("Member", "Binding", "Policy")
    }
)
_GCP_IAM = re.compile(r"^gcp:[^:]+:\w*I[Aa][Mm](Member|Binding|Policy)$")


@lru_cache(maxsize=512)
def is_gcp_iam(resource_type: str) -> bool:
    """Any GCP IAM member, binding or policy resource (`...IamMember`, `...IAMBinding`, ...).

    The provider has one per resource kind (well over a hundred), so this matches the token's shape.
    """
    return bool(_GCP_IAM.match(resource_type))


# --- Azure -------------------------------------------------------------------------------------------
CONTAINER_GROUP = "azure-native:containerinstance:ContainerGroup"
AKS_CLUSTER = "azure-native:containerservice:ManagedCluster"
AKS_AGENT_POOL = "azure-native:containerservice:AgentPool"
FRONT_DOOR_ROUTE = "azure-native:cdn:Route"
AFD_ORIGIN = "azure-native:cdn:AFDOrigin"
AFD_RULE = "azure-native:cdn:Rule"  # a Front Door rule set's rule (ACI's header route)
ROLE_ASSIGNMENT = "azure-native:authorization:RoleAssignment"
ROLE_ASSIGNMENT_CLASSIC = "azure:authorization/assignment:Assignment"
ROLE_ASSIGNMENTS = frozenset({ROLE_ASSIGNMENT, ROLE_ASSIGNMENT_CLASSIC})
STORAGE_ACCOUNT = "azure-native:storage:StorageAccount"
STORAGE_ACCOUNT_CLASSIC = "azure:storage/account:Account"
STORAGE_ACCOUNTS = frozenset({STORAGE_ACCOUNT, STORAGE_ACCOUNT_CLASSIC})
RESOURCE_GROUP = "azure-native:resources:ResourceGroup"
FEDERATED_CREDENTIAL = "azure-native:managedidentity:FederatedIdentityCredential"

# --- Workloads on every platform ---------------------------------------------------------------------
IMAGE_WORKLOADS = WORKLOADS | {ECS_TASK, CONTAINER_GROUP, CLOUD_RUN}
