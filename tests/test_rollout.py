"""The rollout model's invariants (hypothesis), its error paths, and the steps a person takes."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from components.rollout import (
    BlueGreenRollout,
    CanaryRollout,
    RecreateRollout,
    RollingRollout,
    RolloutError,
    RolloutSettings,
    parse_rollout,
    scaled,
    seconds,
)

versions = st.from_regex(r"[0-9]\.[0-9]{1,2}\.[0-9]{1,2}", fullmatch=True)
replicas = st.integers(1, 50)


def refusal(block: dict[str, Any]) -> RolloutError:
    """Why the block is refused (the model's own check, as the settings formatter receives it)."""
    with pytest.raises(ValidationError) as err:
        parse_rollout(block)
    [error] = err.value.errors()
    found = (error.get("ctx") or {}).get("error")
    assert isinstance(found, RolloutError), error
    return found


def canary_block(
    stable_weight: int | None, canary_weight: int, stable: str = "1.0.0", new: str = "1.1.0"
) -> dict[str, Any]:
    slots: dict[str, Any] = {
        "stable": {"version": stable},
        "canary": {"version": new, "weight": canary_weight},
    }
    if stable_weight is not None:
        slots["stable"]["weight"] = stable_weight
    return {"strategy": "canary", "slots": slots}


def canary(stable_weight: int | None, canary_weight: int, **versions_: str) -> CanaryRollout:
    model = parse_rollout(canary_block(stable_weight, canary_weight, **versions_))
    assert isinstance(model, CanaryRollout)
    return model


def blue_green(active: str, blue: str = "1.0.0", green: str = "1.1.0") -> BlueGreenRollout:
    model = parse_rollout(
        {
            "strategy": "blue-green",
            "activeSlot": active,
            "slots": {"blue": {"version": blue}, "green": {"version": green}},
        }
    )
    assert isinstance(model, BlueGreenRollout)
    return model


def revalidated(model: RolloutSettings) -> RolloutSettings:
    """The model written out as a stack file would hold it and read back: the same model."""
    assert parse_rollout(model.model_dump(by_alias=True)) == model
    return model


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
    block = canary_block(stable, new)
    if 0 <= stable <= 100 and 0 <= new <= 100 and stable + new == 100:
        parse_rollout(block)
        return
    assert refusal(block).path in ("slots", "slots.stable.weight", "slots.canary.weight")


@given(blue=versions, green=versions, active=st.sampled_from(["blue", "green"]), lo=replicas)
def test_blue_green_switch_changes_only_routing(blue: str, green: str, active: str, lo: int) -> None:
    other = "green" if active == "blue" else "blue"
    before = blue_green(active, blue, green).plan(blue, lo, lo + 2)
    after = blue_green(other, blue, green).plan(blue, lo, lo + 2)
    assert before.weights == {active: 100, other: 0}
    assert after.weights == {active: 0, other: 100}
    assert before.preview_slot == other and after.preview_slot == active
    assert before.versions == after.versions
    # Both colours keep full capacity: switching back is instant.
    assert {(s.name, s.min_replicas, s.max_replicas) for s in before.slots} == {
        (s.name, s.min_replicas, s.max_replicas) for s in after.slots
    }


@pytest.mark.parametrize(
    "block", [{}, {"strategy": "rolling"}, {"strategy": "recreate", "workload": "stable"}]
)
def test_rolling_and_recreate_run_one_main_slot(block: dict[str, Any]) -> None:
    model = parse_rollout(block)
    assert isinstance(model, (RollingRollout, RecreateRollout))
    plan = model.plan("2.0.0", 2, 6)
    assert [(s.name, s.version, s.weight, s.min_replicas, s.max_replicas) for s in plan.slots] == [
        ("main", "2.0.0", 100, 2, 6)
    ]
    assert plan.workload("main") == block.get("workload", "main")
    assert plan.strategy == block.get("strategy", "rolling")
    assert plan.preview_slot is None and not plan.weighted


def test_promoted_canary_runs_stable_only() -> None:
    model = parse_rollout({"strategy": "canary", "slots": {"stable": {"version": "1.1.0", "weight": 100}}})
    plan = model.plan("1.1.0", 2, 4)
    assert plan.weights == {"stable": 100} and plan.preview_slot is None and not plan.weighted


BG = {"strategy": "blue-green", "activeSlot": "blue", "slots": {"blue": {"version": "1.1.0"}}}


@pytest.mark.parametrize(
    ("block", "path", "message"),
    [
        (canary_block(70, 40), "slots", "weights 70/40 sum to 110; they must sum to 100"),
        (canary_block(90, 10, new="1.0.0"), "slots.canary.version", "equals the stable version 1.0.0"),
        (
            {"strategy": "canary", "slots": {"stable": {"version": "1.0.0"}, "purple": {"version": "1.1.0"}}},
            "slots.purple",
            "unknown slot; canary slots are stable, canary",
        ),
        ({**BG, "activeSlot": "green"}, "activeSlot", "slot 'green' is not defined under slots"),
        ({**BG, "activeSlot": "purple"}, "activeSlot", "'purple' is not a slot; use one of blue, green"),
        (
            {"strategy": "rolling", "slots": {"main": {"version": "1.1.0"}}},
            "strategy",
            "rolling runs one slot",
        ),
        (
            {**canary_block(90, 10), "steps": [{"setWeight": 120}]},
            "steps[0].setWeight",
            "120 is not within 0..100",
        ),
        # A key of another strategy names the key and what to do instead, not just "unknown key".
        ({**canary_block(90, 10), "activeSlot": "blue"}, "activeSlot", "is for blue-green; a canary routes"),
        ({**canary_block(90, 10), "workload": "main"}, "workload", "canary names a workload per slot"),
        (
            {**BG, "steps": [{"setWeight": 100}]},
            "steps",
            "steps are for canary; blue-green promotes by switching",
        ),
        (
            {**BG, "slots": {"blue": {"version": "1.1.0", "weight": 100}}},
            "slots",
            "blue-green slots take no weight",
        ),
        ({"strategy": "blue-green", "slots": BG["slots"]}, "activeSlot", "is required for blue-green"),
        (
            {"strategy": "blue-green", "active_slot": "green", "slots": BG["slots"]},
            "activeSlot",
            "slot 'green' is not defined",
        ),  # snake_case too
        (
            {"strategy": "recreate", "steps": []},
            "strategy",
            "recreate runs one slot; remove slots, activeSlot",
        ),
        (
            {"strategy": "canary", "slots": {"stable": {"version": "1.0.0"}, "canary": {"version": "1.1.0"}}},
            "slots.canary.weight",
            "is required for canary (its setWeight)",
        ),
    ],
)
def test_invalid_rollouts(block: dict[str, Any], path: str, message: str) -> None:
    err = refusal(block)
    assert err.path == path
    assert message in str(err)


def test_no_slot_running_the_build_is_refused_against_the_service_version() -> None:
    model = parse_rollout(BG)
    model.check("1.1.0")
    with pytest.raises(RolloutError) as err:
        model.plan("1.2.0", 2, 4)
    assert err.value.path == "slots"
    assert str(err.value) == (
        "no slot runs the version this update builds (1.2.0); set the new slot's version to it"
    )


# --- Canary steps: the plan a driver walks must only go up, and end at 100. ---

set_weights = st.lists(st.integers(0, 100), min_size=1, max_size=8)
HOLD: dict[str, Any] = {"pause": {}}


def with_steps(*steps: dict[str, Any]) -> dict[str, Any]:
    return {**canary_block(90, 10), "steps": list(steps)}


def walk(weights: list[int], pauses: list[bool]) -> list[dict[str, Any]]:
    """setWeight steps in this order, each followed by a pause where `pauses` says so."""
    steps: list[dict[str, Any]] = []
    for weight, pause in zip(weights, pauses + [False] * len(weights), strict=False):
        steps.append({"setWeight": weight})
        if pause:
            steps.append({"pause": {"duration": "10m"}})
    return steps


@given(weights=set_weights, pauses=st.lists(st.booleans(), max_size=8))
def test_steps_are_accepted_exactly_when_they_climb_to_100(weights: list[int], pauses: list[bool]) -> None:
    steps = walk(weights, pauses)
    climbs = all(a <= b for a, b in itertools.pairwise(weights)) and weights[-1] == 100
    if climbs:
        parse_rollout(with_steps(*steps))
        return
    err = refusal(with_steps(*steps))
    index = int(err.path.split("[")[1].split("]")[0])
    assert err.path == f"steps[{index}].setWeight"
    assert "setWeight" in steps[index]
    # The error points at the first step that goes down, else at the last setWeight (below 100).
    earlier = [s["setWeight"] for s in steps[:index] if "setWeight" in s]
    if earlier and steps[index]["setWeight"] < max(earlier):
        assert "goes down" in str(err)
    else:
        assert index == max(i for i, s in enumerate(steps) if "setWeight" in s)
        assert "must end at setWeight: 100" in str(err)


@given(weights=set_weights.map(sorted), current=st.integers(0, 100))
def test_the_live_weight_need_not_be_a_step(weights: list[int], current: int) -> None:
    """A person may hold or roll back at any weight between steps: only the steps are checked."""
    parse_rollout({**canary_block(100 - current, current), "steps": walk([*weights, 100], [])})


@pytest.mark.parametrize(
    ("steps", "path", "message"),
    [
        (
            ({"setWeight": 10}, HOLD, {"setWeight": 50}, {"setWeight": 20}, {"setWeight": 100}),
            "steps[3].setWeight",
            "20 goes down from setWeight 50 (steps[2]); steps only go up "
            "(a rollback sets slots.canary.weight, not a step)",
        ),
        (
            ({"setWeight": 10}, {"pause": {"duration": "1h"}}, {"setWeight": 50}, HOLD),
            "steps[2].setWeight",
            "the steps must end at setWeight: 100 (full promotion), the last is 50; add `- setWeight: 100`",
        ),
        (
            ({"pause": {"duration": "60s"}},),
            "steps",
            "has no setWeight; a canary's steps end with `- setWeight: 100`",
        ),
    ],
)
def test_invalid_steps(steps: tuple[dict[str, Any], ...], path: str, message: str) -> None:
    err = refusal(with_steps(*steps))
    assert (err.path, str(err)) == (path, message)


def test_steps_may_hold_and_pause_after_100() -> None:
    parse_rollout(with_steps({"setWeight": 20}, {"setWeight": 20}, {"setWeight": 100}, HOLD))
    parse_rollout(with_steps())  # no steps: weights are set by hand


# --- The steps a person takes: promote, rollback, set-weight. ---

explicit = st.booleans()  # whether the stack file writes stable's weight or leaves it the remainder
weights = st.integers(0, 100)


@given(start=weights, weight=weights, written=explicit)
def test_set_weight_then_rollback_sends_everything_to_stable(start: int, weight: int, written: bool) -> None:
    model = canary(100 - start if written else None, start)
    shifted = revalidated(model.set_weight(weight))
    assert shifted.weights == {"stable": 100 - weight, "canary": weight}
    rolled_back = revalidated(shifted.rollback())
    assert rolled_back.weights == {"stable": 100, "canary": 0}
    assert rolled_back.slots["canary"].version == model.slots["canary"].version  # its pods stay
    # The stable weight moves only where the file writes it: the step adds no key.
    assert (rolled_back.slots["stable"].weight is not None) == written


@given(start=weights, moves=st.lists(weights, max_size=6), written=explicit)
def test_weights_always_sum_to_100(start: int, moves: list[int], written: bool) -> None:
    model = canary(100 - start if written else None, start)
    for weight in moves:
        model = model.set_weight(weight)
        assert sum(model.weights.values()) == 100
    assert sum(model.rollback().weights.values()) == 100


@given(weight=st.integers(1, 100), written=explicit, stable=versions, new=versions, lo=replicas)
def test_promote_leaves_one_stable_slot_on_the_canarys_version(
    weight: int, written: bool, stable: str, new: str, lo: int
) -> None:
    if stable == new:
        return
    promoted = revalidated(
        canary(100 - weight if written else None, weight, stable=stable, new=new).promote()
    )
    assert isinstance(promoted, CanaryRollout)
    assert list(promoted.slots) == ["stable"] and promoted.slots["stable"].version == new
    assert promoted.weights == {"stable": 100}
    plan = promoted.plan(new, lo, lo + 2)
    assert plan.weights == {"stable": 100} and plan.preview_slot is None and not plan.weighted


@given(active=st.sampled_from(["blue", "green"]), old=versions, new=versions)
def test_blue_green_promote_then_rollback_returns_to_the_same_slot(active: str, old: str, new: str) -> None:
    if old == new:
        return
    idle = "green" if active == "blue" else "blue"
    model = blue_green(active, **{active: old, idle: new})  # the idle slot runs the new build
    promoted = revalidated(model.promote(new))
    assert promoted.active_slot == idle and promoted.slots == model.slots
    assert revalidated(promoted.rollback(new)) == model
    with pytest.raises(RolloutError, match=f"activeSlot is already {idle}"):
        promoted.promote(new)
    with pytest.raises(RolloutError, match=f"activeSlot is already {active}"):
        model.rollback(new)


def test_promote_after_a_rollback_is_refused() -> None:
    """From weight 0 promote would jump to 100%, skipping the steps: set a weight to re-enter them."""
    rolled_back = parse_rollout({**canary_block(None, 0), "steps": walk([25, 50, 100], [True])})
    assert isinstance(rolled_back, CanaryRollout)
    with pytest.raises(RolloutError) as err:
        rolled_back.promote()
    assert (err.value.path, str(err.value)) == (
        "slots.canary.weight",
        "the canary 1.1.0 was rolled back (weight 0); promote would send it to 100%. Set a weight first "
        "(`rollout set-weight --weight 25`) to re-enter the steps, or remove the canary slot",
    )
    assert rolled_back.set_weight(25).promote().slots["stable"].version == "1.1.0"
    assert canary(None, 0).reentry_weight == 10  # no steps: the usual first step


@pytest.mark.parametrize("step", ["promote", "rollback", "set_weight"])
def test_a_promoted_canary_has_nothing_to_step(step: str) -> None:
    promoted = canary(None, 10).promote()
    with pytest.raises(
        RolloutError, match="there is no canary slot: the last canary was promoted or removed"
    ):
        getattr(promoted, step)(*([50] if step == "set_weight" else []))


@pytest.mark.parametrize("weight", [-1, 101, True])
def test_set_weight_takes_0_to_100(weight: int) -> None:
    with pytest.raises(RolloutError, match=r"--weight must be an integer 0\.\.100"):
        canary(None, 10).set_weight(weight)


@pytest.mark.parametrize("model", [RollingRollout(), RecreateRollout()], ids=["rolling", "recreate"])
def test_one_slot_rollouts_have_no_steps(model: RollingRollout | RecreateRollout) -> None:
    for step in (model.promote, model.rollback, lambda: model.set_weight(50)):
        with pytest.raises(
            RolloutError, match=f"rolls out with {model.strategy}: nothing to promote or shift"
        ):
            step()


def test_blue_green_has_no_weights_and_needs_a_slot_to_switch_to() -> None:
    model = blue_green("blue")
    with pytest.raises(RolloutError, match="blue-green has no weights: use promote"):
        model.set_weight(50)
    with pytest.raises(
        RolloutError, match=r"no slot to promote to: no slot runs 9.9.9 \(blue 1.0.0, green 1.1.0\)"
    ):
        model.promote("9.9.9")
    same = blue_green("blue", green="1.0.0")
    with pytest.raises(RolloutError, match=r"no slot to roll back to: every slot runs 1.0.0"):
        same.rollback("1.0.0")


# --- Analysis: typed metrics with Argo's limits, checked with the rest of the block. ---

ANALYSIS: dict[str, Any] = {
    "interval": "2m",
    "failureLimit": 1,
    "metrics": [
        {"name": "errors", "errorRate": {"max": 0.01}},
        {"name": "latency", "latencyP99": {"maxMs": 500}},
        {"name": "success", "successRate": {"min": 0.99}},
        {
            "name": "queue",
            "prometheus": {"address": "http://prom:9090/", "query": "max(q)", "min": 1, "max": 9},
        },
    ],
}


def test_analysis_metrics_judge_their_thresholds() -> None:
    model = parse_rollout({**canary_block(90, 10), "analysis": ANALYSIS})
    assert isinstance(model, CanaryRollout) and model.analysis is not None
    errors, latency, success, queue = model.analysis.metrics
    assert (errors.verdict(0.01), errors.verdict(0.0101)) == (True, False)
    assert (latency.verdict(500), latency.verdict(501)) == (True, False)
    assert (success.verdict(0.99), success.verdict(0.98)) == (True, False)
    assert (queue.verdict(1), queue.verdict(9), queue.verdict(0.5), queue.verdict(10)) == (
        True,
        True,
        False,
        False,
    )
    assert [m.threshold for m in model.analysis.metrics] == [
        "<= 1.00%",
        "<= 500 ms",
        ">= 99.00%",
        ">= 1 and <= 9",
    ]
    assert model.analysis.interval_seconds == 120
    assert queue.prometheus is not None and queue.prometheus.address == "http://prom:9090"
    assert revalidated(model.set_weight(50)).analysis == model.analysis  # a step keeps the block


def test_a_blue_green_analysis_counts_its_measurements() -> None:
    block = {"strategy": "blue-green", "activeSlot": "blue", "slots": {"blue": {"version": "1.0.0"}}}
    assert refusal({**block, "analysis": ANALYSIS}).path == "analysis.count"
    model = parse_rollout({**block, "analysis": {**ANALYSIS, "count": 5}})
    assert isinstance(model, BlueGreenRollout) and model.analysis is not None and model.analysis.count == 5


def test_metric_names_are_unique() -> None:
    twice = {**ANALYSIS, "metrics": [ANALYSIS["metrics"][0], ANALYSIS["metrics"][0]]}
    err = refusal({**canary_block(90, 10), "analysis": twice})
    assert (err.path, str(err)) == (
        "analysis.metrics[1].name",
        "'errors' is also metrics[0]'s name; give each metric its own",
    )


@pytest.mark.parametrize("duration", ["30s", "10m", "2h"])
def test_durations_are_seconds(duration: str) -> None:
    assert seconds(duration) == int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]
