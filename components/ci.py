"""The stack's CI infrastructure: runners on its EKS cluster and its keyless pipeline identities.

Made after the targets, because both refer to what they made (the cluster, the ECR repositories, the
Cloud Run services and their runtime accounts). Returns the stack outputs the pipelines read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from components.admission import BINAUTHZ_TYPES
from components.context import StackContext
from components.permissions import gcp_project_permissions
from components.registry import ArtifactRegistry, EcrRegistry
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
from components.targets.base import Target
from components.targets.cloudrun import CloudRunTarget
from components.targets.eks import EksCluster, EksTarget
from components.targets.gke import PROJECT_SCOPED_TYPES, GkeTarget


def ci_infrastructure(ctx: StackContext, targets: Mapping[str, Target]) -> dict[str, Any]:
    """CI runners (when configured, on the EKS cluster) and pipeline identities; their outputs."""
    settings = ctx.settings
    eks = targets.get(EksTarget.key)
    cluster = eks.cluster if isinstance(eks, EksTarget) else None
    outputs: dict[str, Any] = {}
    if settings.ci_runners is not None and cluster is not None:
        outputs |= _runners(ctx, cluster)
    if settings.pipeline_identities is not None:
        outputs["pipelineIdentities"] = _identities(ctx, targets, cluster).outputs
    return outputs


def _runners(ctx: StackContext, cluster: EksCluster) -> dict[str, Any]:
    settings = ctx.settings
    assert settings.ci_runners is not None
    arc = settings.ci_runners.arc
    credentials: dict[str, pulumi.Input[str]] = (
        {
            "github_app_id": ctx.secret(arc.app_id_key),
            "github_app_installation_id": ctx.secret(arc.installation_id_key),
            "github_app_private_key": ctx.secret(arc.private_key_key),
        }
        if arc is not None
        else {}
    )
    ecr = ctx.registries.get("ecr")
    repositories = list(ecr.repositories.values()) if isinstance(ecr, EcrRegistry) else []
    runners = CiRunners(
        "ci-runners",
        CiRunnersArgs(
            settings=settings.ci_runners,
            cluster=cluster,
            repository_arns=[r.repository.arn for r in repositories],
            app_credentials=credentials,
            tags=settings.tags("ci"),
            permissions_boundary=ctx.boundary,
        ),
    )
    outputs: dict[str, Any] = {"ciRunnerPushRoles": runners.push_roles}
    if runners.jenkins_clouds:
        # The Jenkinsfile's clouds: `pouw-<env>` for every build, `pouw-<env>-deploy` for the deploy job only.
        clouds = runners.jenkins_clouds
        outputs["jenkinsClouds"] = {
            ctx.cluster_name: clouds["agents"],
            f"{ctx.cluster_name}-deploy": clouds["deploy"],
        }
    # What other stacks put under pipelineIdentities.jenkinsTrust so these agents can deploy them.
    outputs["ciRunnerTrust"] = {"oidcProviderArn": cluster.oidc_provider_arn, "issuer": cluster.oidc_issuer}
    return outputs


def _identities(
    ctx: StackContext, targets: Mapping[str, Target], cluster: EksCluster | None
) -> PipelineIdentities:
    settings = ctx.settings
    identities = settings.pipeline_identities
    assert identities is not None
    jenkins_trust = None
    if identities.jenkins_trust is not None:
        trust = identities.jenkins_trust
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
    run = targets.get(CloudRunTarget.key)
    cloud_run = run.services if isinstance(run, CloudRunTarget) else {}
    gke = targets.get(GkeTarget.key)
    runtime_accounts = {k: s.account for k, s in cloud_run.items()}
    project_permissions: dict[str, tuple[str, ...]] = {}
    scoped: frozenset[str] = frozenset()
    if isinstance(gke, GkeTarget):
        runtime_accounts["gke-nodes"] = gke.cluster.node_account  # the cluster's node pools run as it
        scoped |= PROJECT_SCOPED_TYPES
    if isinstance(run, CloudRunTarget) and run.binary_authorization is not None:
        scoped |= BINAUTHZ_TYPES  # the release attestor and its key (components/admission.py)
    if scoped:
        project_permissions = {kind: gcp_project_permissions(scoped, kind) for kind in ("deploy", "preview")}
    registry = ctx.registries.get("artifactRegistry")
    repositories = (
        {settings.registries.artifact_registry.repository: registry.repository}
        if isinstance(registry, ArtifactRegistry) and settings.registries.artifact_registry
        else {}
    )
    group = ctx.resource_group
    return PipelineIdentities(
        "pipeline",
        PipelineIdentitiesArgs(
            settings=identities,
            environment=settings.environment,
            gcp_project=settings.gcp.project if settings.gcp else None,
            azure_resource_group=group.name if group else None,
            azure_resource_group_id=group.id if group else None,
            azure_location=settings.azure.location if settings.azure else None,
            aks="aks" in targets,  # the Azure identities reach the AKS API (components/targets/aks.py)
            jenkins=jenkins_trust,
            cluster=cluster,
            permissions_boundary=ctx.boundary,
            # The deploy account's grants on the GCP resources it manages, each on the resource itself.
            gcp_scope=GcpDeployScope(
                repositories=repositories,
                services={k: s.service for k, s in cloud_run.items()},
                runtime_accounts=runtime_accounts,
                project_permissions=project_permissions,
                attester=run.binary_authorization.attester
                if isinstance(run, CloudRunTarget) and run.binary_authorization is not None
                else None,
            ),
            tags=settings.tags("ci"),
        ),
    )
