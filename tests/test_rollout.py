"""The rollout model's invariants (hypothesis) and its error paths."""

from __future__ import annotations

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
