"""The traffic model: strategies, slots, weights, steps. Pure Python, no cloud calls.

One rollout spec per service drives every platform. A service runs in named slots (`blue`/`green`
or `stable`/`canary`, or one `main` slot for rolling and recreate), each with its own release
version and workload. Weights are integers 0..100 that sum to 100. Targets translate a `RolloutPlan`
into their native routing; a weight change or a blue-green switch changes routing (and, for canary,
scaling bounds), never a workload's template.

Vocabulary follows Argo Rollouts: `setWeight`, `pause`, preview, stable/canary, active/preview.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

Strategy = Literal["rolling", "recreate", "blue-green", "canary"]
SLOT_NAMES: dict[str, tuple[str, ...]] = {
    "rolling": ("main",),
    "recreate": ("main",),
    "blue-green": ("blue", "green"),
    "canary": ("stable", "canary"),
}


class RolloutError(ValueError):
    """An impossible rollout. `path` is relative to the service's `rollout` key."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(message)


@dataclass(frozen=True)
class Step:
    """One canary step for a driver (a person or a pipeline) to walk: set a weight, or pause."""

    set_weight: int | None = None
    pause_seconds: int | None = None  # None with set_weight None: pause until promoted


@dataclass(frozen=True)
class SlotSpec:
    name: str
    version: str
    weight: int | None = None  # canary only; blue-green derives weights from the active slot
    # The workload (Deployment, ECS service, container group) the slot runs in; default its name.
    # A strategy switch names the live workload here so it carries on untouched (no restart).
    workload: str | None = None

    @property
    def workload_name(self) -> str:
        return self.workload or self.name


@dataclass(frozen=True)
class RolloutSpec:
    """What the stack file says. `validate()` checks it against the service's built version."""

    strategy: Strategy = "rolling"
    slots: tuple[SlotSpec, ...] = ()
    active_slot: str | None = None  # blue-green
    steps: tuple[Step, ...] = ()  # canary
    # rolling/recreate: the workload the one slot runs in (default `main`); see SlotSpec.workload.
    workload: str | None = None

    def validate(self, built_version: str) -> None:
        names = SLOT_NAMES[self.strategy]
        if self.strategy in ("rolling", "recreate"):
            if self.slots or self.active_slot or self.steps:
                raise RolloutError(
                    "strategy", f"{self.strategy} runs one slot; remove slots, activeSlot and steps"
                )
            return
        if self.workload is not None:
            raise RolloutError(
                "workload",
                f"is for rolling and recreate; {self.strategy} names a workload per slot "
                "(slots.<slot>.workload)",
            )
        seen: set[str] = set()
        for slot in self.slots:
            if slot.name not in names:
                raise RolloutError(
                    f"slots.{slot.name}", f"unknown slot; {self.strategy} slots are {', '.join(names)}"
                )
            if slot.name in seen:
                raise RolloutError(f"slots.{slot.name}", "is defined twice")
            seen.add(slot.name)
        workloads = [s.workload_name for s in self.slots]
        for slot in self.slots:
            if workloads.count(slot.workload_name) > 1:
                raise RolloutError(
                    f"slots.{slot.name}.workload",
                    f"{slot.workload_name!r} runs two slots; each slot needs its own workload",
                )
        if self.strategy == "blue-green":
            self._validate_blue_green(names, built_version)
        else:
            self._validate_canary(built_version)

    def _validate_blue_green(self, names: tuple[str, ...], built_version: str) -> None:
        if self.steps:
            raise RolloutError("steps", "steps are for canary; blue-green promotes by switching activeSlot")
        if any(s.weight is not None for s in self.slots):
            raise RolloutError(
                "slots", "blue-green slots take no weight: the active slot gets 100; set activeSlot"
            )
        if self.active_slot is None:
            raise RolloutError("activeSlot", f"is required for blue-green; one of {', '.join(names)}")
        if self.active_slot not in names:
            raise RolloutError(
                "activeSlot", f"{self.active_slot!r} is not a slot; use one of {', '.join(names)}"
            )
        if self.active_slot not in {s.name for s in self.slots}:
            raise RolloutError(
                "activeSlot",
                f"slot {self.active_slot!r} is not defined under slots; define it or switch back",
            )
        _require_built(self.slots, built_version)

    def _validate_canary(self, built_version: str) -> None:
        if self.active_slot is not None:
            raise RolloutError("activeSlot", "is for blue-green; a canary routes by slot weights")
        by_name = {s.name: s for s in self.slots}
        if "stable" not in by_name:
            raise RolloutError("slots.stable", "is required for canary (the version serving today)")
        for slot in self.slots:
            if slot.weight is not None and not 0 <= slot.weight <= 100:
                raise RolloutError(f"slots.{slot.name}.weight", f"{slot.weight} is not within 0..100")
        if "canary" in by_name and by_name["canary"].weight is None:
            raise RolloutError(
                "slots.canary.weight", "is required for canary (its setWeight): an integer 0..100"
            )
        weights = self.canary_weights()
        total = sum(weights.values())
        if total != 100:
            shown = "/".join(str(weights[name]) for name in SLOT_NAMES["canary"] if name in weights)
            raise RolloutError("slots", f"weights {shown} sum to {total}; they must sum to 100")
        canary = by_name.get("canary")
        if canary is not None and canary.version == by_name["stable"].version:
            raise RolloutError(
                "slots.canary.version",
                f"equals the stable version {canary.version}; a canary needs a different version "
                "(to promote, set slots.stable.version and remove slots.canary)",
            )
        self._validate_steps()
        _require_built(self.slots, built_version)

    def _validate_steps(self) -> None:
        """The steps are the plan a driver walks from the stable version to the new one: each
        setWeight within 0..100, never below an earlier one, the last at 100 (full promotion).
        Pauses go anywhere. No steps at all is fine: weights are then set by hand.

        The live weight (`slots.canary.weight`) need not be one of the step weights: a person may
        hold the canary anywhere between steps (`set-weight 30`) or roll it back to 0, and that is a
        routing edit, not a change of plan. Only the plan itself is checked here."""
        weights = [(i, s.set_weight) for i, s in enumerate(self.steps) if s.set_weight is not None]
        for i, weight in weights:
            if not 0 <= weight <= 100:
                raise RolloutError(f"steps[{i}].setWeight", f"{weight} is not within 0..100")
        for (before, previous), (i, weight) in itertools.pairwise(weights):
            if weight < previous:
                raise RolloutError(
                    f"steps[{i}].setWeight",
                    f"{weight} goes down from setWeight {previous} (steps[{before}]); steps only go up "
                    "(a rollback sets slots.canary.weight, not a step)",
                )
        if self.steps and not weights:
            raise RolloutError("steps", "has no setWeight; a canary's steps end with `- setWeight: 100`")
        if weights and weights[-1][1] != 100:
            last, weight = weights[-1]
            raise RolloutError(
                f"steps[{last}].setWeight",
                f"the steps must end at setWeight: 100 (full promotion), the last is {weight}; "
                "add `- setWeight: 100`",
            )

    def canary_weights(self) -> dict[str, int]:
        """Each canary slot's weight; stable's may be left out and is then the remainder."""
        by_name = {s.name: s for s in self.slots}
        weights = {name: s.weight for name, s in by_name.items() if s.weight is not None}
        if "stable" in by_name and by_name["stable"].weight is None:
            weights["stable"] = 100 - sum(w for name, w in weights.items() if name != "stable")
        return weights

    def plan(self, built_version: str, min_replicas: int, max_replicas: int) -> RolloutPlan:
        """Which slots run, with which version, at which weight and capacity; which is previewed."""
        self.validate(built_version)
        if self.strategy in ("rolling", "recreate"):
            slots: tuple[SlotPlan, ...] = (
                SlotPlan(
                    "main", built_version, 100, False, min_replicas, max_replicas, self.workload or "main"
                ),
            )
            return RolloutPlan(self.strategy, slots, stable_slot="main", preview_slot=None)
        if self.strategy == "blue-green":
            # Both colours keep full capacity: the switch (and a switch back) must be instant.
            ordered = sorted(self.slots, key=lambda s: s.name)
            slots = tuple(
                SlotPlan(
                    s.name,
                    s.version,
                    100 if s.name == self.active_slot else 0,
                    s.name != self.active_slot,
                    min_replicas,
                    max_replicas,
                    s.workload_name,
                )
                for s in ordered
            )
            idle = next((s.name for s in slots if s.preview), None)
            assert self.active_slot is not None
            return RolloutPlan(self.strategy, slots, stable_slot=self.active_slot, preview_slot=idle)
        # Canary: capacity follows weight, with a floor of one replica per running slot.
        ordered = sorted(self.slots, key=lambda s: ("stable", "canary").index(s.name))
        weights = self.canary_weights()
        slots = tuple(
            SlotPlan(
                s.name,
                s.version,
                weights[s.name],
                s.name == "canary",
                scaled(min_replicas, weights[s.name]),
                max(scaled(max_replicas, weights[s.name]), scaled(min_replicas, weights[s.name])),
                s.workload_name,
            )
            for s in ordered
        )
        has_canary = any(s.name == "canary" for s in slots)
        return RolloutPlan(
            self.strategy, slots, stable_slot="stable", preview_slot="canary" if has_canary else None
        )


def _require_built(slots: tuple[SlotSpec, ...], built_version: str) -> None:
    if built_version not in {s.version for s in slots}:
        raise RolloutError(
            "slots",
            f"no slot runs the version this update builds ({built_version}); "
            "set the new slot's version to it",
        )


def scaled(replicas: int, weight: int) -> int:
    """A slot's share of the service's replicas, never below one."""
    return max(1, math.ceil(replicas * weight / 100))


@dataclass(frozen=True)
class SlotPlan:
    name: str
    version: str
    weight: int
    preview: bool  # the idle blue-green slot, or the canary: reachable on its own preview endpoint
    min_replicas: int
    max_replicas: int
    # What every target names the slot's physical workload by (Deployment, ECS service and target
    # group, container group and origin): the slot's name unless the stack file says otherwise, so a
    # strategy switch that keeps the live workload changes only routing.
    workload: str = ""

    def __post_init__(self) -> None:
        if not self.workload:
            object.__setattr__(self, "workload", self.name)


@dataclass(frozen=True)
class RolloutPlan:
    strategy: Strategy
    slots: tuple[SlotPlan, ...]
    stable_slot: str  # what the stable endpoint routes to (blue-green: the active slot)
    preview_slot: str | None

    @property
    def weights(self) -> dict[str, int]:
        return {s.name: s.weight for s in self.slots}

    @property
    def versions(self) -> dict[str, str]:
        return {s.name: s.version for s in self.slots}

    @property
    def weighted(self) -> bool:
        """Whether routing must split by weight (a canary with both slots present)."""
        return self.strategy == "canary" and len(self.slots) > 1

    def slot(self, name: str) -> SlotPlan:
        return next(s for s in self.slots if s.name == name)

    def workload(self, slot: str) -> str:
        """The workload a slot (by its role name) runs in."""
        return self.slot(slot).workload
