"""pouw-cicd: deploy each service's released digest (dev: or its build) to each of its targets.

Thin on purpose, and in the order of the architecture: settings (nothing is registered if they are
invalid), the stack context, the targets the stack uses (components/targets: TARGETS is the only list),
then per service: plan, images (the release's copies, or dev's build), deploy to each target, export;
last, the CI infrastructure.
"""

import os

import pulumi

from components import settings as settings_module
from components.ci import ci_infrastructure
from components.context import StackContext
from components.targets import TARGETS

settings = settings_module.load()
used = [key for key in TARGETS if key in settings.targets()]
ctx = StackContext(
    settings,
    pulumi.Config(settings_module.NAMESPACE),
    # The commit being deployed, as GitHub Actions and Jenkins expose it (OCI revision label).
    revision=os.environ.get("GITHUB_SHA") or os.environ.get("GIT_COMMIT"),
    needs_network=any(TARGETS[key].needs_network for key in used),
)
targets = {key: TARGETS[key](ctx) for key in used}

for service in settings.services:
    plan = service.rollout.plan(service.version, service.replicas.min, service.replicas.max)
    image = ctx.images(service, plan)
    outputs: dict[str, object] = {"version": service.version, "digest": image.digest, "images": image.refs}
    for key in service.targets:
        target = targets[key]
        images = ctx.slot_images(service, plan, image, target.registry)
        outputs[key] = target.deploy(service, plan, images).as_outputs()
    pulumi.export(service.name, outputs)

for name, value in ci_infrastructure(ctx, targets).items():
    pulumi.export(name, value)
