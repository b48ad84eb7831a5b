"""Deployment targets: one module per platform, all driven by the same rollout plan.

`TARGETS` is the only list of targets: services name them in `targets:`, `__main__` constructs the
ones a stack uses, and the tests check every one against the policy pack and preflight's plan diff.
"""

from __future__ import annotations

from components.targets.aci import AciTarget
from components.targets.aks import AksTarget
from components.targets.base import Target
from components.targets.cloudrun import CloudRunTarget
from components.targets.ecs import EcsTarget
from components.targets.eks import EksTarget
from components.targets.gke import GkeTarget

TARGETS: dict[str, type[Target]] = {
    t.key: t for t in (EksTarget, EcsTarget, AciTarget, CloudRunTarget, GkeTarget, AksTarget)
}

__all__ = ["TARGETS", "Target"]
