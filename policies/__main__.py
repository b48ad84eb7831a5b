"""The pouw-cicd policy pack: security and quality gates, enforced per environment.

Stands alone: it imports nothing from the program. Enforcement levels and allow-lists come from
`config/<stack>.json` (`pulumi preview --policy-pack policies --policy-pack-config ...`).
"""

from pulumi_policy import EnforcementLevel, PolicyPack

import cluster_network
import identity
import images_registries
import quality
import serverless
import workload_security

PolicyPack(
    name="pouw-cicd",
    description="Security and quality gates for pouw-cicd stacks.",
    enforcement_level=EnforcementLevel.ADVISORY,
    policies=[
        *images_registries.POLICIES,
        *workload_security.POLICIES,
        *cluster_network.POLICIES,
        *serverless.POLICIES,
        *identity.POLICIES,
        *quality.POLICIES,
    ],
)
