"""The rollout model's invariants (hypothesis) and its error paths."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.rollout import RolloutError, RolloutSpec, SlotSpec, Step, scaled

versions = st.from_regex(r"[0-9]\.[0-9]{1,2}\.[0-9]{1,2}", fullmatch=True)
replicas = st.integers(1, 50)


def canary(stable_weight: int, canary_weight: int, stable: str = "1.0.0", new: str = "1.1.0") -> RolloutSpec:
    return RolloutSpec(
        strategy="canary",
        slots=(SlotSpec("stable", stable, stable_weight), SlotSpec("canary", new, canary_weight)),
    )


@given(weight=st.integers(0, 100), lo=replicas, extra=st.integers(0, 50))
def test_canary_weights_sum_to_100_and_capacity_follows_weight(weight: int, lo: int, extra: int) -> None:
    plan = canary(100 - weight, weight).plan("1.1.0", lo, lo + extra)
    assert sum(plan.weights.values()) == 100
    assert plan.weights == {"stable": 100 - weight, "canary": weight}
    for slot in plan.slots:
        assert 1 <= slot.min_replicas <= slot.max_replicas
        assert slot.max_replicas <= lo + extra
    assert plan.preview_slot == "canary" and plan.stable_slot == "stable" and plan.weighted


@given(a=st.integers(0, 100), b=st.integers(0, 100))
def test_capacity_is_monotonic_in_weight(a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    assert scaled(10, lo) <= scaled(10, hi)


@given(stable=st.integers(-50, 150), new=st.integers(-50, 150))
def test_impossible_splits_are_refused(stable: int, new: int) -> None:
    spec = canary(stable, new)
    if 0 <= stable <= 100 and 0 <= new <= 100 and stable + new == 100:
        spec.validate("1.1.0")
        return
    with pytest.raises(RolloutError) as err:
        spec.validate("1.1.0")
    assert err.value.path in ("slots", "slots.stable.weight", "slots.canary.weight")


@given(blue=versions, green=versions, active=st.sampled_from(["blue", "green"]), lo=replicas)
def test_blue_green_switch_changes_only_routing(blue: str, green: str, active: str, lo: int) -> None:
    spec = RolloutSpec(
        strategy="blue-green", slots=(SlotSpec("blue", blue), SlotSpec("green", green)), active_slot=active
    )
    other = "green" if active == "blue" else "blue"
    switched = RolloutSpec(strategy="blue-green", slots=spec.slots, active_slot=other)
    before, after = spec.plan(blue, lo, lo + 2), switched.plan(blue, lo, lo + 2)
    assert before.weights == {active: 100, other: 0}
    assert after.weights == {active: 0, other: 100}
    assert before.preview_slot == other and after.preview_slot == active
    assert before.versions == after.versions
    # Both colours keep full capacity: switching back is instant.
    assert {(s.name, s.min_replicas, s.max_replicas) for s in before.slots} == {
        (s.name, s.min_replicas, s.max_replicas) for s in after.slots
    }


def test_rolling_runs_one_main_slot() -> None:
    plan = RolloutSpec().plan("2.0.0", 2, 6)
    assert [(s.name, s.version, s.weight, s.min_replicas, s.max_replicas) for s in plan.slots] == [
        ("main", "2.0.0", 100, 2, 6)
    ]
    assert plan.preview_slot is None and not plan.weighted


def test_promoted_canary_runs_stable_only() -> None:
    spec = RolloutSpec(strategy="canary", slots=(SlotSpec("stable", "1.1.0", 100),))
    plan = spec.plan("1.1.0", 2, 4)
    assert plan.weights == {"stable": 100} and plan.preview_slot is None and not plan.weighted


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        (canary(70, 40), "slots", "weights 70/40 sum to 110; they must sum to 100"),
        (canary(90, 10, new="1.0.0"), "slots.canary.version", "equals the stable version 1.0.0"),
        (
            RolloutSpec(
                strategy="canary", slots=(SlotSpec("stable", "1.0.0", 90), SlotSpec("purple", "1.1.0", 10))
            ),
            "slots.purple",
            "unknown slot; canary slots are stable, canary",
        ),
        (
            RolloutSpec(strategy="blue-green", slots=(SlotSpec("blue", "1.1.0"),), active_slot="green"),
            "activeSlot",
            "slot 'green' is not defined under slots",
        ),
        (
            RolloutSpec(strategy="blue-green", slots=(SlotSpec("blue", "1.1.0"),), active_slot="purple"),
            "activeSlot",
            "'purple' is not a slot; use one of blue, green",
        ),
        (
            RolloutSpec(strategy="blue-green", slots=(SlotSpec("blue", "1.0.0"),), active_slot="blue"),
            "slots",
            "no slot runs the version this update builds (1.1.0)",
        ),
        (
            RolloutSpec(slots=(SlotSpec("main", "1.1.0"),)),
            "strategy",
            "rolling runs one slot",
        ),
        (
            RolloutSpec(
                strategy="canary",
                slots=(SlotSpec("stable", "1.0.0", 90), SlotSpec("canary", "1.1.0", 10)),
                steps=(Step(set_weight=120),),
            ),
            "steps[0].setWeight",
            "120 is not within 0..100",
        ),
    ],
)
def test_invalid_rollouts(spec: RolloutSpec, path: str, message: str) -> None:
    with pytest.raises(RolloutError) as err:
        spec.validate("1.1.0")
    assert err.value.path == path
    assert message in str(err.value)


# --- Canary steps: the plan a driver walks must only go up, and end at 100. ---

set_weights = st.lists(st.integers(0, 100), min_size=1, max_size=8)


def with_steps(*steps: Step) -> RolloutSpec:
    return RolloutSpec(strategy="canary", slots=canary(90, 10).slots, steps=steps)


def walk(weights: list[int], pauses: list[bool]) -> tuple[Step, ...]:
    """setWeight steps in this order, each followed by a pause where `pauses` says so."""
    steps: list[Step] = []
    for weight, pause in zip(weights, pauses + [False] * len(weights), strict=False):
        steps.append(Step(set_weight=weight))
        if pause:
            steps.append(Step(pause_seconds=600))
    return tuple(steps)


@given(weights=set_weights, pauses=st.lists(st.booleans(), max_size=8))
def test_steps_are_accepted_exactly_when_they_climb_to_100(weights: list[int], pauses: list[bool]) -> None:
    steps = walk(weights, pauses)
    climbs = all(a <= b for a, b in itertools.pairwise(weights)) and weights[-1] == 100
    if climbs:
        with_steps(*steps).validate("1.1.0")
        return
    with pytest.raises(RolloutError) as err:
        with_steps(*steps).validate("1.1.0")
    index = int(err.value.path.split("[")[1].split("]")[0])
    assert err.value.path == f"steps[{index}].setWeight"
    assert steps[index].set_weight is not None
    # The error points at the first step that goes down, else at the last setWeight (below 100).
    earlier = [s.set_weight for s in steps[:index] if s.set_weight is not None]
    if earlier and steps[index].set_weight < max(earlier):
        assert "goes down" in str(err.value)
    else:
        assert index == max(i for i, s in enumerate(steps) if s.set_weight is not None)
        assert "must end at setWeight: 100" in str(err.value)


@given(weights=set_weights.map(sorted), current=st.integers(0, 100))
def test_the_live_weight_need_not_be_a_step(weights: list[int], current: int) -> None:
    """A person may hold or roll back at any weight between steps: only the steps are checked."""
    spec = RolloutSpec(
        strategy="canary",
        slots=canary(100 - current, current).slots,
        steps=walk([*weights, 100], []),
    )
    spec.validate("1.1.0")


@pytest.mark.parametrize(
    ("steps", "path", "message"),
    [
        (
            (Step(set_weight=10), Step(), Step(set_weight=50), Step(set_weight=20), Step(set_weight=100)),
            "steps[3].setWeight",
            "20 goes down from setWeight 50 (steps[2]); steps only go up "
            "(a rollback sets slots.canary.weight, not a step)",
        ),
        (
            (Step(set_weight=10), Step(pause_seconds=3600), Step(set_weight=50), Step()),
            "steps[2].setWeight",
            "the steps must end at setWeight: 100 (full promotion), the last is 50; add `- setWeight: 100`",
        ),
        (
            (Step(pause_seconds=60),),
            "steps",
            "has no setWeight; a canary's steps end with `- setWeight: 100`",
        ),
    ],
)
def test_invalid_steps(steps: tuple[Step, ...], path: str, message: str) -> None:
    with pytest.raises(RolloutError) as err:
        with_steps(*steps).validate("1.1.0")
    assert (err.value.path, str(err.value)) == (path, message)


def test_steps_may_hold_and_pause_after_100() -> None:
    with_steps(Step(set_weight=20), Step(set_weight=20), Step(set_weight=100), Step()).validate("1.1.0")
    with_steps().validate("1.1.0")  # no steps: weights are set by hand
