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


def cpu_cores(quantity: str) -> float:
    """A Kubernetes CPU quantity ("500m", "1") in cores."""
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def memory_gib(quantity: str) -> float:
    """A Kubernetes memory quantity ("512Mi", "2Gi") in GiB."""
    units = {"Ki": 1 / 1024**2, "Mi": 1 / 1024, "Gi": 1.0}
    return round(float(quantity[:-2]) * units[quantity[-2:]], 3)
