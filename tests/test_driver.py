"""The rollout driver's state machine, driven with fakes of its two interfaces and a fake clock; the step
guard with the real plan comparison; the rollout workflow's jobs, approvals and permissions."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.rollout import MetricSettings
from delivery import driver as driver_module
from delivery import notify
from delivery.driver import (
    ABORTED,
    EXIT_APPLY_FAILED,
    EXIT_AWAITING,
    EXIT_DONE,
    EXIT_ERROR,
    EXIT_ROLLED_BACK,
    ApplyError,
    Driver,
    Service,
    State,
    pending,
    state_path,
    waiting,
)
from delivery.metrics import MetricError, Window
from preflight.engine import ProgramRun
from preflight.rollout import StepChanges, compare, edit
from tests.conftest import ROOT, project_copy, released, stack_file

STAGING = (ROOT / "Pulumi.staging.yaml").read_text()
WORKER_CANARY = "          canary: {version: 2.0.1, weight: 20}\n"
START = 1_700_000_000.0


def staging_with(steps: str, weight: int = 0) -> str:
    """The real staging file, its worker canary at `weight` with these steps (YAML lines)."""
    assert WORKER_CANARY in STAGING
    block = f"          canary: {{version: 2.0.1, weight: {weight}}}\n        steps:\n{steps}"
    return STAGING.replace(WORKER_CANARY, block)


WALK = """\
          - setWeight: 20
          - pause: {duration: 5m}
          - setWeight: 50
          - pause: {duration: 3m}
          - setWeight: 100
"""
HELD = """\
          - setWeight: 20
          - pause: {}
          - setWeight: 100
"""


class FakeClock:
    def __init__(self, now: float = START, die_after: int | None = None) -> None:
        self.time = now
        self.sleeps: list[float] = []
        self.die_after = die_after  # a killed process: the n-th sleep never returns

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        if self.die_after is not None and len(self.sleeps) >= self.die_after:
            raise KeyboardInterrupt("killed")
        self.sleeps.append(seconds)
        self.time += seconds


class FakeApplier:
    """Records what each apply deployed (the canary weight, or the active slot, the text says); fails
    when told to."""

    def __init__(
        self, fail: Callable[[Any], BaseException | None] = lambda weight: None, service: str = "worker"
    ) -> None:
        self.weights: list[Any] = []
        self.targets: list[tuple[str, ...]] = []
        self.fail = fail
        self.service = service

    def apply(self, stack_text: str, targets: Sequence[str]) -> None:
        weight = Service(stack_text, self.service, "test").position
        problem = self.fail(weight)
        if problem is not None:
            raise problem
        self.weights.append(weight)
        self.targets.append(tuple(targets))


class FakeReader:
    """Each metric on ecs and aci; `value(metric, target, n)` answers the n-th read of that pair."""

    targets = ("ecs", "aci")

    def __init__(self, value: Callable[[MetricSettings, str, int], float | None] | None = None) -> None:
        self.value = value or healthy
        self.reads: list[tuple[str, str, Window]] = []

    def problem(self, metric: MetricSettings, target: str) -> str | None:
        return None

    def read(self, metric: MetricSettings, target: str, window: Window) -> float | None:
        n = sum(1 for m, t, _ in self.reads if (m, t) == (metric.name, target))
        self.reads.append((metric.name, target, window))
        return self.value(metric, target, n)


def healthy(metric: MetricSettings, target: str, n: int) -> float | None:
    return 0.001 if metric.error_rate is not None else 0.999


def fake_compare(old: str, new: str) -> StepChanges:
    """What the real comparison says of a weight step: routing only (tests/test_rollout_helper.py)."""
    empty = ProgramRun("staging", "pouw-cicd", [], {}, [])
    return StepChanges(
        ("aws:lb/listenerRule:ListenerRule worker-ecs-traffic (actions)",), (), ("urn:rule",), empty
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "Pulumi.staging.yaml").write_text(staging_with(WALK))
    return tmp_path


class Run:
    """A driver over the project, rebuilt for each call (as a new process would be)."""

    def __init__(
        self,
        project: Path,
        applier: FakeApplier,
        reader: FakeReader,
        clock: FakeClock,
        service: str = "worker",
    ) -> None:
        self.project, self.applier, self.reader, self.clock = project, applier, reader, clock
        self.service = service
        self.notified: list[list[str]] = []
        self.summaries: list[str] = []
        self.out: list[str] = []
        self.driver: Driver | None = None

    def __call__(self, **flags: bool) -> int:
        self.driver = Driver(
            self.project,
            "staging",
            self.service,
            self.applier,
            self.reader,
            self.clock,
            fake_compare,
            notify=self._notify,
            run_url="https://github.com/pouw/pouw-cicd/actions/runs/1",
            out=self.out.append,
        )
        return self.driver.run(**flags)

    def _notify(self, argv: list[str]) -> int:
        """What delivery/notify.py is called with, and the summary file it would read (then deleted)."""
        self.notified.append(argv)
        self.summaries.append(Path(argv[argv.index("--summary-file") + 1]).read_text())
        return 0

    @property
    def state(self) -> State:
        return State.from_json(state_path(self.project, "staging", self.service).read_text())

    @property
    def file_weight(self) -> int | str | None:
        return Service((self.project / "Pulumi.staging.yaml").read_text(), self.service, "test").position


def payload(argv: list[str]) -> dict[str, Any]:
    """The Slack message delivery/notify.py would post for these arguments."""
    note = notify.notification(notify.build_parser().parse_args(argv))
    return notify.slack_payload(note)


def test_a_healthy_run_walks_every_step_to_100(project: Path) -> None:
    run = Run(project, FakeApplier(), FakeReader(), FakeClock())
    assert run() == EXIT_DONE
    assert run.applier.weights == [20, 50, 100]
    assert run.applier.targets == [("urn:rule",)] * 3  # only what the step changes
    assert run.file_weight == 100
    assert "canary: {version: 2.0.1, weight: 100}" in (project / "Pulumi.staging.yaml").read_text()
    assert "# What the rollout driver" in (project / "Pulumi.staging.yaml").read_text()  # comments kept
    # 5m and 3m of pauses, measured every 1m: 8 measurements of 2 metrics on 2 targets.
    assert run.clock.time - START == 8 * 60 and len(run.reader.reads) == 8 * 2 * 2
    assert all(w.seconds == 60 for _, _, w in run.reader.reads)
    state = run.state
    assert (state.status, state.step, state.file, state.applied) == ("done", 5, 100, 100)
    assert state.tallies["errors@ecs"].successful == 8
    assert state.commit == "rollout(staging/worker): set-weight to 100%"
    [argv] = run.notified
    assert payload(argv)["text"].startswith("staging: deploy succeeded — worker 2.0.1: rollout steps done")
    assert any("promote it" in line for line in run.out)
    assert run() == EXIT_DONE and run.applier.weights == [20, 50, 100]  # a rerun does nothing more


def test_a_failing_analysis_rolls_back_stops_and_reports(project: Path) -> None:
    # From the first minute at 50%, ACI's canary answers 5% 5xx: failureLimit 2, so the third fails it.
    def errors_at_50(metric: MetricSettings, target: str, n: int) -> float | None:
        if metric.error_rate is not None and target == "aci" and n >= 5:
            return 0.05
        return healthy(metric, target, n)

    run = Run(project, FakeApplier(), FakeReader(errors_at_50), FakeClock())
    assert run() == EXIT_ROLLED_BACK
    # Weight 0 applied like any step, never 100 (staging's worker has a header route: also aborted).
    assert run.applier.weights == [20, 50, ABORTED]
    assert run.file_weight == ABORTED
    state = run.state
    assert state.status == "rolled-back" and state.tallies["errors@aci"].failed == 3
    reason = "errors@aci failed 3 times (limit 2), last 5.00%, wants <= 1.00%"
    assert state.reason == f"analysis failed: {reason}"
    assert state.commit == "rollout(staging/worker): rollback"
    assert run.driver is not None and f"- why: analysis failed: {reason}" in run.driver.summary()
    [argv] = run.notified
    message = payload(argv)
    headline = f"ROLLBACK staging: rollback succeeded — worker 2.0.1: analysis failed: {reason}"
    assert message["text"].startswith(notify.slack_escape(headline))
    assert "| errors@aci | 5 | 3 | 0 | 0 | 5.00%, wants <= 1.00% |" in run.summaries[-1]  # sent along
    # A rerun does not walk again while the file still holds the rollback.
    assert run() == EXIT_ROLLED_BACK and run.applier.weights == [20, 50, ABORTED]
    assert any("was rolled back" in line for line in run.out)


def test_unreadable_metrics_roll_back_after_the_consecutive_error_limit(project: Path) -> None:
    def broken(metric: MetricSettings, target: str, n: int) -> float | None:
        raise MetricError("CloudWatch: AccessDenied")

    run = Run(project, FakeApplier(), FakeReader(broken), FakeClock())
    assert run() == EXIT_ROLLED_BACK
    # 5 reads in a row errored (limit 4), within the first pause.
    assert run.applier.weights == [20, ABORTED]
    assert "could not be read 5 times in a row (limit 4): CloudWatch: AccessDenied" in run.state.reason


def test_no_data_stops_for_a_person_and_approve_goes_on(project: Path) -> None:
    run = Run(
        project,
        FakeApplier(),
        FakeReader(lambda m, t, n: None if t == "aci" else healthy(m, t, n)),
        FakeClock(),
    )
    assert run() == EXIT_AWAITING  # inconclusiveLimit 3: the fourth minute without ACI traffic
    assert run.state.status == "inconclusive" and run.applier.weights == [20]
    assert payload(run.notified[-1])["text"].startswith("staging: approval needed to deploy — worker 2.0.1: ")
    run.reader.value = healthy
    assert run(approve=True) == EXIT_DONE
    assert run.applier.weights == [20, 50, 100]
    assert run.clock.time - START == 8 * 60  # the pause went on where it stopped, not from its start


def test_a_manual_pause_waits_for_approval(project: Path) -> None:
    (project / "Pulumi.staging.yaml").write_text(staging_with(HELD))
    run = Run(project, FakeApplier(), FakeReader(), FakeClock())
    assert run() == EXIT_AWAITING
    assert run.applier.weights == [20] and run.state.status == "awaiting-approval" and run.state.step == 1
    assert run() == EXIT_AWAITING and run.applier.weights == [20]  # not without --approve
    assert run(approve=True) == EXIT_DONE
    assert run.applier.weights == [20, 100] and run.file_weight == 100
    assert [h["event"] for h in run.state.history].count("awaiting-approval") == 2


def test_approval_carries_across_runs_without_a_state_file(project: Path) -> None:
    """A new runner has no state: the stack file's weight says where the steps are."""
    (project / "Pulumi.staging.yaml").write_text(staging_with(HELD, weight=20))
    run = Run(project, FakeApplier(), FakeReader(), FakeClock())
    assert run(approve=True) == EXIT_DONE
    assert run.applier.weights == [100]


def test_a_crash_after_the_file_write_resumes_with_the_apply(project: Path) -> None:
    crash = {"armed": True}

    def crash_once_at_50(weight: int) -> BaseException | None:
        if weight == 50 and crash.pop("armed", False):
            return RuntimeError("the runner went away")
        return None

    run = Run(project, FakeApplier(crash_once_at_50), FakeReader(), FakeClock())
    with pytest.raises(RuntimeError):
        run()
    assert run.file_weight == 50 and (run.state.file, run.state.applied, run.state.step) == (50, 20, 2)
    assert run() == EXIT_DONE  # a new driver from the state file: applies 50 once, then goes on
    assert run.applier.weights == [20, 50, 100]
    assert run.clock.time - START == 8 * 60


def test_a_killed_run_resumes_in_its_pause(project: Path) -> None:
    run = Run(project, FakeApplier(), FakeReader(), FakeClock(die_after=3))
    with pytest.raises(KeyboardInterrupt):
        run()
    assert (run.state.step, run.state.measurements) == (1, 3)  # three minutes into the 5m pause
    run.clock.die_after = None
    assert run() == EXIT_DONE
    assert run.applier.weights == [20, 50, 100] and run.state.measurements == 8
    assert run.clock.time - START == 8 * 60  # the pause's remaining two minutes only


def test_an_apply_failure_says_what_the_file_and_the_stack_hold(project: Path) -> None:
    conflict = ApplyError("error: [409] Conflict: Another update is currently in progress.")
    failing = {"on": True}
    run = Run(
        project,
        FakeApplier(lambda w: conflict if w == 50 and failing["on"] else None),
        FakeReader(),
        FakeClock(),
    )
    assert run() == EXIT_APPLY_FAILED
    line = next(line for line in run.out if line.startswith("error: apply failed"))
    assert "Pulumi.staging.yaml says canary 50%, the stack last applied canary 20%" in line
    assert "[409] Conflict" in line and "run again to retry the apply" in line
    assert (run.state.status, run.state.file, run.state.applied) == ("apply-failed", 50, 20)
    assert run.file_weight == 50
    assert payload(run.notified[-1])["text"].startswith("staging: deploy failed — apply failed: ")
    failing["on"] = False
    assert run() == EXIT_DONE  # the rerun retries the apply
    assert run.applier.weights == [20, 50, 100]


def test_a_state_file_for_another_release_is_ignored(project: Path) -> None:
    path = state_path(project, "staging", "worker")
    path.parent.mkdir(parents=True)
    path.write_text(State("staging", "worker", "canary", "1.9.9", step=4, file=100, applied=100).to_json())
    run = Run(project, FakeApplier(), FakeReader(), FakeClock())
    assert run() == EXIT_DONE
    assert (
        "ignoring staging.worker.json: it records 1.9.9 (canary), the release under test is 2.0.1" in run.out
    )
    assert run.applier.weights == [20, 50, 100]


WEB_SLOTS = "          green: {version: 1.4.2}\n"


@pytest.mark.parametrize("healthy_green", [True, False])
def test_blue_green_switches_then_measures_and_switches_back_on_failure(
    tmp_path: Path, healthy_green: bool
) -> None:
    """staging's web: blue 1.4.1 serves, green runs the built 1.4.2. The switch is the step; the new
    active slot is measured `count` times after it (Argo's postPromotionAnalysis)."""
    watch = "        analysis: {interval: 1m, count: 3, metrics: [{name: errors, errorRate: {max: 0.01}}]}\n"
    assert WEB_SLOTS in STAGING
    (tmp_path / "Pulumi.staging.yaml").write_text(STAGING.replace(WEB_SLOTS, WEB_SLOTS + watch))
    failing = FakeReader(lambda m, t, n: 0.2 if n == 2 and t == "ecs" else 0.0)
    run = Run(
        tmp_path, FakeApplier(service="web"), FakeReader() if healthy_green else failing, FakeClock(), "web"
    )
    if healthy_green:
        assert run() == EXIT_DONE
        assert run.applier.weights == ["green"] and run.file_weight == "green"
        assert run.clock.time - START == 3 * 60 and run.state.measurements == 3
    else:
        assert run() == EXIT_ROLLED_BACK  # failureLimit 0 (Argo's default): the first failure
        assert run.applier.weights == ["green", "blue"] and run.file_weight == "blue"
        assert (
            run.state.reason
            == "analysis failed: errors@ecs failed once (limit 0), last 20.00%, wants <= 1.00%"
        )


def test_a_canary_without_steps_is_refused(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.staging.yaml").write_text(STAGING)
    run = Run(tmp_path, FakeApplier(), FakeReader(), FakeClock())
    assert run() == EXIT_ERROR
    assert run.out[-1].startswith("error: worker: the canary has no steps to walk; add steps")
    assert run.applier.weights == []


def git(project: Path, *args: str) -> str:
    command = ["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def committed(project: Path, text: str, subject: str) -> None:
    (project / "Pulumi.staging.yaml").write_text(text)
    git(project, "add", "Pulumi.staging.yaml")
    git(project, "commit", "-q", "--allow-empty", "-m", subject)


@pytest.fixture
def repo(project: Path) -> Path:
    git(project, "init", "-q")
    committed(project, staging_with(WALK, weight=20), "deploy")
    return project


def listed(project: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """What `python -m delivery.driver pending` prints: the JSON list a workflow matrix reads."""
    assert driver_module.main(["pending", "--stack", "staging"], project_dir=project) == EXIT_DONE
    found: list[str] = json.loads(capsys.readouterr().out)
    assert found == pending(project, "staging")
    return found


@pytest.mark.parametrize(("weight", "walking"), [(0, False), (20, True), (50, True), (100, False)])
def test_pending_lists_a_canary_between_0_and_100(
    repo: Path, capsys: pytest.CaptureFixture[str], weight: int, walking: bool
) -> None:
    """0 is a rollback (or a canary nobody started), 100 waits for the reviewed promote; staging's
    blue-green web has green 1.4.2 built and blue active, so its switch is under way."""
    committed(repo, staging_with(WALK, weight=weight), "canary")
    assert listed(repo, capsys) == (["web", "worker"] if walking else ["web"])


A_B_FIRST = """\
          - setWeight: 0
          - pause: {duration: 5m}
          - setWeight: 100
"""


def test_pending_lists_a_canary_in_the_ab_phase_its_steps_start_with(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Staging's worker has a header route: at weight 0 with steps that start at setWeight 0 it takes
    header traffic and its first pause measures it, so it is under way; its rollback (aborted: true) and
    a plan that starts above 0 are not."""
    committed(repo, staging_with(A_B_FIRST, weight=0), "canary")
    assert listed(repo, capsys) == ["web", "worker"]
    committed(repo, edit(staging_with(A_B_FIRST, weight=0), "worker", "rollback"), "rollback")
    assert listed(repo, capsys) == ["web"]
    committed(repo, staging_with(WALK, weight=0), "canary")
    assert listed(repo, capsys) == ["web"]


def test_pending_leaves_out_a_canary_without_steps_and_a_switched_blue_green(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    switched = STAGING.replace("        activeSlot: blue\n", "        activeSlot: green\n")
    assert switched != STAGING
    committed(repo, switched, "rollout(staging/web): promote")
    assert listed(repo, capsys) == []  # worker's canary has no steps (the real staging file)


def test_pending_leaves_out_a_blue_green_service_its_rollback_switched_back(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After the driver's (or the helper's) rollback, blue active next to green 1.4.2 looks like a switch
    not taken yet; the last `rollout(staging/web): rollback` commit tells them apart, until the service
    changes again (a new green release re-enters the switch)."""
    text = staging_with(WALK, weight=20)
    green = text.replace("        activeSlot: blue\n", "        activeSlot: green\n")
    committed(repo, green, "rollout(staging/web): promote")
    committed(repo, text, "rollout(staging/web): rollback")
    committed(repo, text.replace("weight: 20}", "weight: 50}"), "rollout(staging/worker): set-weight to 50%")
    assert listed(repo, capsys) == ["worker"]
    release = text.replace("green: {version: 1.4.2}", "green: {version: 1.4.3}").replace(
        "      version: 1.4.2\n", "      version: 1.4.3\n"
    )
    assert release.count("1.4.3") == 2
    committed(repo, release, "chore(release): web 1.4.3")
    assert listed(repo, capsys) == ["web", "worker"]


def test_pending_refuses_a_shallow_clone_it_cannot_see_rollbacks_in(
    repo: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    committed(repo, staging_with(WALK, weight=20), "second")
    clone = tmp_path_factory.mktemp("shallow") / "clone"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(clone)], check=True)
    assert driver_module.main(["pending", "--stack", "staging"], project_dir=clone) == EXIT_ERROR
    out = capsys.readouterr().out
    assert out.startswith(f"error: {clone} is a shallow clone: the rollback commits of staging's")
    assert out.rstrip().endswith("fetch the history (actions/checkout with fetch-depth: 0) and run again")


def test_pending_outside_a_git_clone_says_so(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A blue-green switch needs git history to tell it from a rollback: no repository is exit 2, one line."""
    (project / "Pulumi.staging.yaml").write_text(staging_with(WALK, weight=20))
    assert driver_module.main(["pending", "--stack", "staging"], project_dir=project) == EXIT_ERROR
    out = capsys.readouterr().out
    assert out.startswith(f"error: git rev-parse in {project}: ") and out.count("\n") == 1
    assert out.rstrip().endswith("run the release in a git clone")


def test_waiting_lists_the_services_a_run_left_at_a_manual_pause(project: Path) -> None:
    (project / "Pulumi.staging.yaml").write_text(staging_with(HELD))
    assert waiting(project, "staging") == []
    Run(project, FakeApplier(), FakeReader(), FakeClock())()
    assert waiting(project, "staging") == ["worker"]


def test_a_step_that_would_restart_a_workload_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real plan comparison on a real stack file: an edit that also moved the canary's version (a
    helper bug, or a racing hand edit) restarts the canary's task definition and container group."""
    config = stack_file("staging")["config"]
    record = released(config)  # 2.0.2 was released (the edit must be refused for its restart alone)
    record["services"]["worker"]["2.0.2"] = {
        "repository": "ghcr.io/pouw/worker",
        "digest": "sha256:" + "2" * 64,
    }
    project = project_copy(tmp_path / "project", "staging", config, record)
    (project / "Pulumi.staging.yaml").unlink()
    (project / "Pulumi.staging.yaml").write_text(staging_with(WALK))
    real_edit = driver_module.edit

    def edit_that_moves_the_version(text: str, *args: Any, **kwargs: Any) -> str:
        edited = real_edit(text, *args, **kwargs)
        return edited.replace("version: 2.0.1, weight: 20", "version: 2.0.2, weight: 20").replace(
            "      version: 2.0.1\n", "      version: 2.0.2\n"
        )

    monkeypatch.setattr(driver_module, "edit", edit_that_moves_the_version)
    before = (project / "Pulumi.staging.yaml").read_text()
    applier = FakeApplier()
    out: list[str] = []
    driver = Driver(
        project,
        "staging",
        "worker",
        applier,
        FakeReader(),
        FakeClock(),
        lambda old, new: compare(project, "staging", old, new),
        out=out.append,
    )
    assert driver.run() == EXIT_ERROR
    assert out[-1].startswith("error: set-weight would restart workloads (")
    assert "aws:ecs/taskDefinition:TaskDefinition worker-ecs-canary" in out[-1]
    assert out[-1].endswith("a traffic step must change routing only; nothing was written or applied")
    assert (project / "Pulumi.staging.yaml").read_text() == before and applier.weights == []


def test_the_staging_analysis_block_changes_no_resource(tmp_path: Path) -> None:
    """The analysis block is read by the driver only: the program's plan is the same without it."""
    project = project_copy(tmp_path / "project", "staging", stack_file("staging")["config"])
    start = STAGING.index("        # What the rollout driver")
    end = STAGING.index("        # A/B: a request")  # the header route that follows does route
    without = STAGING[:start] + STAGING[end:]
    assert "analysis:" not in without and "analysis:" in STAGING
    changes = compare(project, "staging", without, STAGING)
    assert (changes.routing, changes.workloads) == ((), ())


# --- the workflow -------------------------------------------------------------------------------------

WORKFLOW = ROOT / ".github" / "workflows" / "rollout.yml"


def rollout_workflow() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True, data.get("on"))
    return data


def runs(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in job["steps"])


def test_the_workflow_runs_the_driver_behind_approvals_with_least_privilege() -> None:
    flow = rollout_workflow()
    assert set(flow["on"]) == {"workflow_dispatch", "workflow_call"}
    for trigger in ("workflow_dispatch", "workflow_call"):
        assert {"stack", "service", "approve"} <= set(flow["on"][trigger]["inputs"])
    assert flow["permissions"] == {"contents": "read"}
    jobs = flow["jobs"]
    assert list(jobs) == ["services", "drive", "waiting", "approval", "approve"]
    # Only the jobs that push the driver's stack file edits may write; only they hold cloud tokens.
    for name in ("drive", "approve"):
        job = jobs[name]
        # packages: read only, for the release signatures the driver verifies first (test_release_record).
        assert job["permissions"] == {"contents": "write", "id-token": "write", "packages": "read"}, name
        assert job["environment"] == "${{ inputs.stack }}", name  # the deploy identity's OIDC subject
        assert "python -m delivery.driver run" in runs(job) and "GITHUB_STEP_SUMMARY" in runs(job)
        assert "requirements-delivery.txt" in runs(job)
        assert job["concurrency"]["cancel-in-progress"] is False
    assert "--approve" not in runs(jobs["drive"]) and "--approve" in runs(jobs["approve"])
    gate = jobs["approval"]
    assert gate["environment"] == "${{ inputs.stack }}-rollout"  # the manual pause's reviewers
    assert gate["permissions"] == {} and "uses" not in json.dumps(gate["steps"])
    assert jobs["approve"]["needs"] == ["approval", "waiting"]
    assert gate["needs"] == "waiting"
    assert jobs["services"]["permissions"] == {"contents": "read"}
    assert jobs["waiting"]["permissions"] == {"contents": "read"}


def test_the_workflow_passes_the_schema_and_the_audit() -> None:
    from tests.test_pipelines import audit, validate

    assert validate(WORKFLOW).returncode == 0
    result = audit(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_delivery_requirements_stay_out_of_the_program_locks() -> None:
    delivery = (ROOT / "requirements-delivery.txt").read_text()
    for name in ("boto3", "google-auth", "azure-identity"):
        assert name in delivery
        for lock in ("requirements.txt", "requirements-dev.txt", "requirements-lock.txt"):
            assert f"\n{name}" not in "\n" + (ROOT / lock).read_text(), (name, lock)
    assert "/.pouw/" in (ROOT / ".gitignore").read_text().splitlines()
