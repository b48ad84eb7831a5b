"""pouw-cicd: build every service's image once and copy it to each hardened registry its targets use.

Thin on purpose: read the settings once (nothing is registered if they are invalid), build the
platform from components, export what pipelines and people need.
"""

import os

import pulumi
import pulumi_azure_native.resources as azure_resources

from components import settings as settings_module
from components.iam import permissions_boundary
from components.image import ImageBuild, ImageBuildArgs, slot_images
from components.network import AwsNetwork, AwsNetworkArgs
from components.registry import (
    AcrRegistry,
    AcrRegistryArgs,
    ArtifactRegistry,
    ArtifactRegistryArgs,
    EcrRepository,
    EcrRepositoryArgs,
    PushTarget,
    build_registry,
    ecr_enhanced_scanning,
    ghcr_target,
)
from components.runners import (
    JENKINS_AGENT,
    JENKINS_DEPLOY,
    CiRunners,
    CiRunnersArgs,
    GcpDeployScope,
    KubernetesTrust,
    PipelineIdentities,
    PipelineIdentitiesArgs,
)
from components.targets.aci import AciService, AciServiceArgs, FrontDoor, FrontDoorArgs
from components.targets.cloudrun import CloudRunService, CloudRunServiceArgs
from components.targets.ecs import EcsCluster, EcsClusterArgs, EcsService, EcsServiceArgs
from components.targets.eks import EksCluster, EksClusterArgs, EksService, EksServiceArgs

settings = settings_module.load()
config = pulumi.Config(settings_module.NAMESPACE)
registries = settings.registries
# The commit being deployed, as GitHub Actions and Jenkins expose it (OCI revision label).
revision = os.environ.get("GITHUB_SHA") or os.environ.get("GIT_COMMIT")

if registries.ecr is not None and registries.ecr.enhanced_scanning:
    ecr_enhanced_scanning("ecr-enhanced-scanning")

resource_group = None
if settings.azure is not None:
    resource_group = azure_resources.ResourceGroup(
        "resource-group",
        resource_group_name=settings.azure.resource_group,
        location=settings.azure.location,
        tags=settings.tags(),
        opts=pulumi.ResourceOptions(protect=settings.is_prod),
    )
artifact_registry = None
if registries.artifact_registry is not None and settings.gcp is not None:
    artifact_registry = ArtifactRegistry(
        "artifact-registry",
        ArtifactRegistryArgs(
            settings=registries.artifact_registry,
            gcp=settings.gcp,
            labels=settings.labels(),
            protect=settings.is_prod,
        ),
    )

ghcr_token = config.require_secret(registries.ghcr.token_key) if registries.ghcr else None

# Every role the stack makes carries this boundary; the deploy role may manage no other (components/iam.py).
boundary = None
if settings.pipeline_identities is not None and settings.pipeline_identities.aws:
    boundary = permissions_boundary("permissions-boundary", settings.environment, settings.tags("ci")).arn

# EKS and ECS share one VPC per environment.
cluster_name = f"pouw-{settings.environment}"
network = None
if settings.targets() & {"eks", "ecs"} and settings.network is not None:
    network = AwsNetwork(
        "network",
        AwsNetworkArgs(
            settings=settings.network,
            cluster_name=cluster_name if "eks" in settings.targets() else None,
            tags=settings.tags(),
            protect=settings.is_prod,
            permissions_boundary=boundary,
        ),
    )
# The ACR admits this stack's NAT egress (the in-network runners that push) and ACI's managed identity.
acr_registry = None
if registries.acr is not None and resource_group is not None:
    acr_registry = AcrRegistry(
        "acr",
        AcrRegistryArgs(
            settings=registries.acr,
            azure=settings.azure,
            resource_group_name=resource_group.name,
            network_access=settings.acr_network_access,
            egress_ips=network.nat_public_ips if network is not None else [],
            trusted_services="aci" in settings.targets(),
            tags=settings.tags(),
            protect=settings.is_prod,
        ),
    )
cluster = None
if "eks" in settings.targets() and network is not None and settings.eks is not None:
    cluster = EksCluster(
        "eks",
        EksClusterArgs(
            settings=settings.eks,
            network=network,
            cluster_name=cluster_name,
            public_endpoint=settings.eks_public_endpoint,
            tags=settings.tags(),
            protect=settings.is_prod,
            permissions_boundary=boundary,
        ),
    )
ecs_cluster = None
if "ecs" in settings.targets() and network is not None and settings.ecs is not None:
    ecs_cluster = EcsCluster(
        "ecs",
        EcsClusterArgs(
            settings=settings.ecs,
            network=network,
            cluster_name=cluster_name,
            tags=settings.tags(),
            protect=settings.is_prod,
            encrypt_logs=settings.is_prod,
            permissions_boundary=boundary,
        ),
    )

front_door = None
if "aci" in settings.targets() and resource_group is not None and settings.aci is not None:
    front_door = FrontDoor(
        "front-door",
        FrontDoorArgs(
            settings=settings.aci,
            resource_group_name=resource_group.name,
            environment=settings.environment,
            tags=settings.tags(),
            protect=settings.is_prod,
        ),
    )

ecr_repositories: list[EcrRepository] = []
cloud_run_services: dict[str, CloudRunService] = {}
# Every build goes to the environment's build registry; each other registry a service needs gets a copy.
build_kind = build_registry(registries)
for service in settings.services:
    targets: dict[str, PushTarget] = {}
    repository = None
    pushes = [build_kind, *(k for k in settings.registries_for(service) if k != build_kind)]
    if registries.ecr is not None and "ecr" in pushes:
        repository = EcrRepository(
            f"{service.name}-ecr",
            EcrRepositoryArgs(
                service=service.name,
                settings=registries.ecr,
                tags=settings.tags(service.name),
                protect=settings.is_prod,
            ),
        )
        targets["ecr"] = repository.target()
        ecr_repositories.append(repository)
    if acr_registry is not None and "acr" in pushes:
        targets["acr"] = acr_registry.target(service.name)
    if artifact_registry is not None and "artifactRegistry" in pushes:
        targets["artifactRegistry"] = artifact_registry.target(service.name)
    if registries.ghcr is not None and ghcr_token is not None and "ghcr" in pushes:
        targets["ghcr"] = ghcr_target(registries.ghcr, service.name, ghcr_token)

    image = ImageBuild(
        service.name,
        ImageBuildArgs(
            service=service,
            registry=targets[build_kind],
            copies=[targets[k] for k in pushes[1:] if k in targets],
            source_repository=settings.source_repository,
            revision=revision,
            secrets={sid: config.require_secret(key) for sid, key in service.build.secrets.items()},
        ),
    )
    plan = service.rollout.spec().plan(service.version, service.replicas.min, service.replicas.max)
    outputs: dict[str, object] = {"version": service.version, "digest": image.digest, "images": image.refs}
    # The slot running this update's version gets the fresh build; older slots keep their
    # already-pushed image, resolved once from its immutable tag to its digest (EKS and ECS share it).
    ecr_images = (
        slot_images(plan, service.version, image.refs["ecr"], repository.pinned)
        if repository is not None and {"eks", "ecs"} & set(service.targets)
        else {}
    )
    on_eks = "eks" in service.targets
    if on_eks and cluster is not None and ecr_images and settings.eks is not None:
        eks_service = EksService(
            f"{service.name}-eks",
            EksServiceArgs(
                service=service,
                plan=plan,
                images=ecr_images,
                provider=cluster.provider,
                settings=settings.eks,
                environment=settings.environment,
            ),
        )
        outputs["eks"] = eks_service.endpoints.as_outputs()
    on_ecs = "ecs" in service.targets
    if on_ecs and ecs_cluster is not None and network is not None and settings.ecs is not None and ecr_images:
        assert settings.network is not None
        ecs_service = EcsService(
            f"{service.name}-ecs",
            EcsServiceArgs(
                service=service,
                plan=plan,
                images=ecr_images,
                cluster=ecs_cluster,
                network=network,
                settings=settings.ecs,
                vpc_cidr=settings.network.cidr,
                tags=settings.tags(service.name),
                protect=settings.is_prod,
                permissions_boundary=boundary,
            ),
        )
        outputs["ecs"] = ecs_service.endpoints.as_outputs()
    if (
        "cloudrun" in service.targets
        and artifact_registry is not None
        and settings.gcp
        and settings.cloud_run
    ):
        run_service = CloudRunService(
            f"{service.name}-cloudrun",
            CloudRunServiceArgs(
                service=service,
                plan=plan,
                images=slot_images(
                    plan,
                    service.version,
                    image.refs["artifactRegistry"],
                    artifact_registry.pinned(service.name),
                ),
                settings=settings.cloud_run,
                gcp=settings.gcp,
                registry=artifact_registry,
                ingress=settings.cloud_run_ingress,
                labels=settings.labels(service.name),
                protect=settings.is_prod,
            ),
        )
        outputs["cloudrun"] = run_service.endpoints.as_outputs()
        cloud_run_services[service.name] = run_service
    if (
        "aci" in service.targets
        and acr_registry
        and front_door
        and resource_group
        and settings.aci
        and settings.azure
    ):
        aci_service = AciService(
            f"{service.name}-aci",
            AciServiceArgs(
                service=service,
                plan=plan,
                images=slot_images(
                    plan, service.version, image.refs["acr"], acr_registry.pinned(service.name)
                ),
                settings=settings.aci,
                registry=acr_registry,
                front_door=front_door,
                resource_group_name=resource_group.name,
                location=settings.azure.location,
                environment=settings.environment,
                secure_environment={
                    var: config.require_secret(key) for var, key in service.azure_secure_environment.items()
                },
                tags=settings.tags(service.name),
                protect=settings.is_prod,
            ),
        )
        outputs["aci"] = aci_service.endpoints.as_outputs()
    pulumi.export(service.name, outputs)

if settings.ci_runners is not None and cluster is not None:
    arc = settings.ci_runners.arc
    credentials = (
        {
            "github_app_id": config.require_secret(arc.app_id_key),
            "github_app_installation_id": config.require_secret(arc.installation_id_key),
            "github_app_private_key": config.require_secret(arc.private_key_key),
        }
        if arc is not None
        else {}
    )
    runners = CiRunners(
        "ci-runners",
        CiRunnersArgs(
            settings=settings.ci_runners,
            cluster=cluster,
            repository_arns=[r.repository.arn for r in ecr_repositories],
            app_credentials=credentials,
            tags=settings.tags("ci"),
            permissions_boundary=boundary,
        ),
    )
    pulumi.export("ciRunnerPushRoles", runners.push_roles)
    if runners.jenkins_clouds:
        # The Jenkinsfile's clouds: `pouw-<env>` for every build, `pouw-<env>-deploy` for the deploy job only.
        clouds = runners.jenkins_clouds
        pulumi.export(
            "jenkinsClouds", {cluster_name: clouds["agents"], f"{cluster_name}-deploy": clouds["deploy"]}
        )
    # What other stacks put under pipelineIdentities.jenkinsTrust so these agents can deploy them.
    pulumi.export(
        "ciRunnerTrust", {"oidcProviderArn": cluster.oidc_provider_arn, "issuer": cluster.oidc_issuer}
    )

if settings.pipeline_identities is not None:
    jenkins_trust = None
    if settings.pipeline_identities.jenkins_trust is not None:
        trust = settings.pipeline_identities.jenkins_trust
        jenkins_trust = KubernetesTrust(
            trust.oidc_provider_arn,
            trust.issuer,
            trust.namespace,
            trust.service_account,
            trust.deploy_namespace,
            trust.deploy_service_account,
        )
    elif settings.ci_runners is not None and settings.ci_runners.jenkins is not None and cluster is not None:
        jenkins_trust = KubernetesTrust(
            cluster.oidc_provider_arn,
            cluster.oidc_issuer,
            settings.ci_runners.jenkins.namespace,
            JENKINS_AGENT,
            settings.ci_runners.jenkins.deploy_namespace,
            JENKINS_DEPLOY,
        )
    identities = PipelineIdentities(
        "pipeline",
        PipelineIdentitiesArgs(
            settings=settings.pipeline_identities,
            environment=settings.environment,
            gcp_project=settings.gcp.project if settings.gcp else None,
            azure_resource_group=resource_group.name if resource_group else None,
            azure_resource_group_id=resource_group.id if resource_group else None,
            azure_location=settings.azure.location if settings.azure else None,
            jenkins=jenkins_trust,
            cluster=cluster,
            permissions_boundary=boundary,
            # The deploy account's grants on the GCP resources it manages, each on the resource itself.
            gcp_scope=GcpDeployScope(
                repositories={registries.artifact_registry.repository: artifact_registry.repository}
                if artifact_registry and registries.artifact_registry
                else {},
                services={k: s.service for k, s in cloud_run_services.items()},
                runtime_accounts={k: s.account for k, s in cloud_run_services.items()},
            ),
            tags=settings.tags("ci"),
        ),
    )
    pulumi.export("pipelineIdentities", identities.outputs)
