"""Release records: a workload runs only a digest the release built and recorded for its service.

The record is the program's releases.yaml; the pack must not read program files, so the digests come
through the pack's config (`recorded`, service -> version -> digest), which
`python -m delivery.release record` writes into every `config/<stack>.json` together with the record
(tests/test_release_images.py checks they agree). The CLI path (`pulumi preview --policy-pack policies
--policy-pack-config policies/config/<stack>.json`, or the organisation's enabled pack with the same
config) then enforces what preflight enforces.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pulumi_policy import ResourceValidationArgs, Severity

import resource_types as t
from pack_support import IMAGES_REGISTRIES, PROJECT, setting
from workload_security import workload_images

RECORD_SCHEMA: dict[str, dict[str, Any]] = {
    "recorded": {
        "type": "object",
        "additionalProperties": {
            "type": "object",
            "additionalProperties": {"type": "string", "pattern": "^sha256:[0-9a-f]{64}$"},
        },
        "default": {},
        "description": "service -> version -> digest the release recorded (releases.yaml; written by "
        "`python -m delivery.release record`).",
    }
}


@IMAGES_REGISTRIES.resource(
    "image-release-recorded",
    "Workloads run only an image digest the release built and recorded for their service.",
    types=t.IMAGE_WORKLOADS,
    severity=Severity.HIGH,
    controls=[PROJECT("build-once-promote-by-digest")],
    remediation="Deploy a released version: push its tag (release.yml builds it once, signs it and runs "
    "`python -m delivery.release record`), merge the record's pull request, then set the version.",
    config=RECORD_SCHEMA,
)
def _release_recorded(args: ResourceValidationArgs) -> Iterable[str]:
    recorded: dict[str, dict[str, str]] = setting(args, RECORD_SCHEMA, "recorded")
    for name, image in workload_images(args):
        repository, pinned, digest = image.partition("@")
        if not pinned:
            continue  # image-digest-pinned reports a tag
        service = repository.rsplit("/", 1)[-1].split(":", 1)[0]
        versions = recorded.get(service) or {}
        if digest in versions.values():
            continue
        if not versions:
            yield f"container {name} image {image!r}: the release recorded no version of {service}"
        else:
            known = ", ".join(sorted(versions))
            yield (
                f"container {name} image {image!r}: {digest} is not a digest the release recorded for "
                f"{service} (recorded versions: {known})"
            )
