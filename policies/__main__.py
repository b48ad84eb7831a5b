"""The pouw-cicd policy pack: security and quality gates, enforced per environment.

Stands alone: it imports nothing from the program. Each module declares its policies with the
`pack_support` decorators, which register them in declaration order; importing a module is what adds
its policies. Enforcement levels and allow-lists come from `config/<stack>.json`
(`pulumi preview --policy-pack policies --policy-pack-config ...`).
"""

import shared_analysis
import supply_chain  # noqa: F401
from pulumi_policy import EnforcementLevel, PolicyPack

import aws_network_data  # noqa: F401
import azure_platform  # noqa: F401
import ci_runners  # noqa: F401
import cluster_network  # noqa: F401
import gcp_iam  # noqa: F401
import identity  # noqa: F401
import images_registries  # noqa: F401
import kubernetes_access  # noqa: F401
import kubernetes_baseline  # noqa: F401
import managed_clusters  # noqa: F401
import quality  # noqa: F401
import release_records  # noqa: F401
import serverless  # noqa: F401
import workload_security  # noqa: F401
from pack_support import TYPE_FILTERS, ordered

# Before PolicyPack(), which builds the servicer and serves: the SDK otherwise deserialises every
# resource once per policy (see shared_analysis; it refuses to start on an SDK it was not written for).
shared_analysis.install(TYPE_FILTERS)

PolicyPack(
    name="pouw-cicd",
    description="Security and quality gates for pouw-cicd stacks.",
    enforcement_level=EnforcementLevel.ADVISORY,
    policies=ordered(),
)
