"""What every target reports, whatever its platform: the shape of the stack outputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi


@dataclass(frozen=True)
class TargetEndpoints:
    url: pulumi.Input[str]  # the stable endpoint users reach
    preview_url: pulumi.Input[str] | None  # the idle blue-green slot or the canary, on its own
    weights: Mapping[str, int]  # live traffic share per slot
    images: Mapping[str, pulumi.Input[str]]  # digest-pinned image per slot

    def as_outputs(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "previewUrl": self.preview_url,
            "weights": dict(self.weights),
            "images": dict(self.images),
        }
