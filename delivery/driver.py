"""`python -m delivery.driver run --stack S --service X`: walk a service's rollout steps, with analysis.

    python -m delivery.driver run --stack staging --service worker [--approve] [--dry-run]
        [--summary summary.md] [--run-url URL] [--pulumi-stack org/pouw-cicd/staging]
    python -m delivery.driver pending --stack staging     # services with a release under way (JSON)
    python -m delivery.driver waiting --stack staging     # services a run left awaiting approval (JSON)

A state machine over the service's `steps` (components/rollout.py), what Argo Rollouts does for a
Rollout, for every target at once:
- `setWeight: N`: the stack file is edited by the rollout helper (`preflight.rollout.edit`), the edit is
  checked with the helper's plan comparison (`preflight.rollout.compare`: a step that would restart a
  workload is refused, exit 2, nothing written), written (`stack_lock`, `write_stack_file`) and applied
  (`Applier`: `pulumi up` through the Automation API, limited to the routing resources the step changes).
- `pause: {duration}`: waits, measuring the `analysis` every `interval` (`MetricReader`).
- `pause: {}`: stops, exit 3, until run again with `--approve` (in GitHub, a job behind the
  `<stack>-rollout` environment's approval).
- An analysis that fails (more than `failureLimit` failed measurements of a metric on a target, or more
  than `consecutiveErrorLimit` reads in a row that error) rolls back: the canary's weight to 0 (a
  blue-green service switches back) through the model's `rollback`, plan-compared and applied the same
  way, then exit 1 with the reason in the summary and the notification. With a header route the
  rollback also writes `aborted: true` (header traffic to stable too); that is its own position
  (`ABORTED`), distinct from weight 0 (an A/B phase), so an abort written but not applied is applied by
  the rerun, and a file that says it is not walked again until a set-weight. More than `inconclusiveLimit`
  measurements without data stop the run for a person (exit 3), as an inconclusive AnalysisRun pauses
  a Rollout.
- Blue-green: the switch to the slot running the service's version is the one step, then the new active
  slot is measured `count` times (Argo's postPromotionAnalysis); a failure switches back.
- The steps end at the canary taking 100%. Promotion (the canary's version becomes stable's, its slot
  goes) replaces the stable workload, so it stays a reviewed edit: `python -m preflight rollout promote`.

Resumable: `.pouw/rollouts/<stack>.<service>.json` (gitignored) records the release under test, the
next step, what the stack file says and what was last applied, the pause's start and the analysis
counts, after every change. A run that crashed resumes at its step (a step whose file edit was written
but not applied is applied again); a state file for another release is ignored, with a message; without
a state file the run starts after the last setWeight the stack file's weight has reached.

An apply that fails never leaves the file and the deployed weights disagreeing silently: the state
records both, and the run exits 4 with one line saying both and how to resolve (run again: it retries
the apply; a rollback whose apply failed is finished first). Exit codes: 0 done (or nothing to do),
1 rolled back, 2 an error before anything changed (bad config, a refused step), 3 awaiting approval
(a manual pause or an inconclusive analysis), 4 an apply failed (a step's or a rollback's).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from components.rollout import (
    AnalysisSettings,
    BlueGreenRollout,
    CanaryRollout,
    MetricSettings,
    RolloutSettings,
    parse_rollout,
    seconds,
)
from delivery import notify
from delivery.metrics import MetricError, Window
from preflight.rollout import (
    ProgramRunError,
    RolloutEditError,
    StackFileError,
    StepChanges,
    _EditError,
    _find_service,
    _parse,
    _plain,
    check_writable,
    commit_subject,
    compare,
    edit,
    read_stack_file,
    stack_lock,
    stack_path,
    write_stack_file,
)
from preflight.stackconfig import StackConfigError

if TYPE_CHECKING:
    from delivery.release import Git

EXIT_DONE = 0
EXIT_ROLLED_BACK = 1
EXIT_ERROR = 2
EXIT_AWAITING = 3
EXIT_APPLY_FAILED = 4

STATE_DIR = Path(".pouw") / "rollouts"
# A canary's position after a rollback that aborted its header route (`aborted: true`, weight 0). Weight 0
# alone is also how an A/B phase runs (header traffic to the canary), so the two positions differ: a
# rollback written but not applied is then seen as such on the rerun, and applied.
ABORTED = "aborted"
PROJECT_DIR = Path(__file__).resolve().parent.parent


# -- the two interfaces, and the clock ---------------------------------------------------------------


class ApplyError(Exception):
    """`pulumi up` failed; the message is the engine's, in one line."""


class Applier(Protocol):
    """Apply this stack file text: `pulumi up` of the stack, limited to `targets` (URNs; all if empty)."""

    def apply(self, stack_text: str, targets: Sequence[str]) -> None: ...


class MetricReader(Protocol):
    """Read this metric on this target over this window (delivery/metrics.py: CloudMetricReader)."""

    @property
    def targets(self) -> Sequence[str]: ...

    def problem(self, metric: MetricSettings, target: str) -> str | None: ...

    def read(self, metric: MetricSettings, target: str, window: Window) -> float | None: ...


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


# -- the run's record ---------------------------------------------------------------------------------


@dataclass
class Tally:
    """One (metric, target)'s counts, as an Argo AnalysisRun keeps per metric."""

    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    consecutive_errors: int = 0
    last: str = ""


@dataclass
class State:
    """What a run has done, saved after every change so a later run resumes exactly there.

    `file` is what the stack file says (the canary's weight, or the active blue-green slot), `applied`
    what the last successful apply deployed; they differ only between a write and its apply."""

    stack: str
    service: str
    strategy: str
    version: str  # the release under test
    step: int = 0  # the next step to run
    status: str = "running"  # running | awaiting-approval | inconclusive | rolled-back | done | apply-failed
    file: int | str | None = None
    applied: int | str | None = None
    pause_started: float | None = None
    measurements: int = 0
    tallies: dict[str, Tally] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    rolling_back: str = ""  # why a rollback started (a rerun finishes it before anything else)
    commit: str = ""  # the commit subject of the last stack file edit (the workflow commits with it)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> State:
        data = json.loads(text)
        data["tallies"] = {k: Tally(**v) for k, v in data.get("tallies", {}).items()}
        return cls(**data)


def state_path(project_dir: Path, stack: str, service: str) -> Path:
    return project_dir / STATE_DIR / f"{stack}.{service}.json"


def save_state(path: Path, state: State) -> None:
    """Atomically: a crash while saving leaves the previous state, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(state.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- the steps ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One step the driver takes: route (to a canary weight or a blue-green slot) or pause."""

    kind: str  # route | pause
    to: int | str | None = None  # route: the canary's weight, or the slot to make active
    duration: int | None = None  # pause: seconds; None waits for approval

    def describe(self) -> str:
        if self.kind == "route":
            return f"setWeight {self.to}" if isinstance(self.to, int) else f"switch to {self.to}"
        return f"pause {self.duration}s" if self.duration is not None else "pause until approved"


class RefusedError(Exception):
    """A step the driver will not take; nothing was written or applied. Exit 2."""


class Service:
    """The service's rollout as the stack file has it now: the model, the release under test, the steps."""

    def __init__(self, text: str, name: str, source: str) -> None:
        try:
            root = _parse(text)
            found = _find_service(root, name)
        except _EditError as err:
            raise RefusedError(f"{source}: {err}") from None
        data = _plain(found.data)
        try:
            self.model: RolloutSettings = parse_rollout(data.get("rollout") or {})
        except ValidationError as err:
            first = err.errors()[0]
            raise RefusedError(
                f"{source}: {found.path}.rollout is invalid ({first['msg']}); run `python -m preflight "
                "--stack <stack>` for the key path and the fix"
            ) from None
        self.name = name
        self.version = str(data.get("version", ""))
        self.targets: tuple[str, ...] = tuple(data.get("targets") or ())

    @property
    def analysis(self) -> AnalysisSettings | None:
        return getattr(self.model, "analysis", None)

    @property
    def under_test(self) -> str | None:
        """The release being rolled out (None: nothing to do)."""
        model = self.model
        if isinstance(model, CanaryRollout):
            return model.canary.version if model.canary is not None else None
        if isinstance(model, BlueGreenRollout):
            return self.version if self.version in {s.version for s in model.slots.values()} else None
        return None

    @property
    def position(self) -> int | str | None:
        """Where routing is, as the file says: the canary's weight, or the active blue-green slot."""
        model = self.model
        if isinstance(model, CanaryRollout):
            if model.canary is None:
                return None
            return ABORTED if model.aborted else model.canary.weight
        if isinstance(model, BlueGreenRollout):
            return model.active_slot
        return None

    @property
    def slot(self) -> tuple[str, str]:
        """(role name, workload) of the slot under test: the canary, or the new blue-green colour."""
        model = self.model
        if isinstance(model, CanaryRollout) and model.canary is not None:
            return "canary", model.canary.workload or "canary"
        assert isinstance(model, BlueGreenRollout)
        name = self.new_slot
        return name, model.slots[name].workload or name

    @property
    def new_slot(self) -> str:
        assert isinstance(self.model, BlueGreenRollout)
        return next(n for n, s in self.model.slots.items() if s.version == self.version)

    def steps(self) -> list[Step]:
        model = self.model
        if isinstance(model, CanaryRollout):
            if not model.steps:
                raise RefusedError(
                    f"{self.name}: the canary has no steps to walk; add steps to its rollout block, e.g. "
                    "`steps: [{setWeight: 10}, {pause: {duration: 10m}}, {setWeight: 100}]`"
                )
            return [
                Step("route", to=s.set_weight)
                if s.set_weight is not None
                else Step(
                    "pause", duration=seconds(s.pause.duration) if s.pause and s.pause.duration else None
                )
                for s in model.steps
            ]
        if isinstance(model, BlueGreenRollout):
            watch = model.analysis.interval_seconds * (model.analysis.count or 1) if model.analysis else None
            return [Step("route", to=self.new_slot)] + ([Step("pause", duration=watch)] if watch else [])
        raise RefusedError(
            f"{self.name}: rolls out with {model.strategy}; the driver walks canary and blue-green"
        )

    def resume_at(self, steps: Sequence[Step]) -> int:
        """Without a record, where the stack file says the rollout is: after the last setWeight its
        weight has reached (so the pause after it is run again); blue-green: the switch, unless done."""
        position = self.position
        if isinstance(self.model, BlueGreenRollout):
            return len(steps) if position == self.new_slot else 0
        reached = [
            i
            for i, s in enumerate(steps)
            if isinstance(s.to, int) and isinstance(position, int) and s.to <= position
        ]
        return reached[-1] + 1 if reached else 0


# -- the driver ---------------------------------------------------------------------------------------


Compare = Callable[[str, str], StepChanges]
Notify = Callable[[list[str]], int]


@dataclass
class Driver:
    """One run for one stack and service. Everything it talks to is passed in, so tests drive the
    whole state machine with fakes and a fake clock."""

    project_dir: Path
    stack: str
    service: str
    applier: Applier
    reader: MetricReader | None
    clock: Clock
    compare: Compare
    notify: Notify = notify.main
    run_url: str | None = None
    commit: str | None = None
    out: Callable[[str], None] = print
    path: Path = field(init=False)
    state_file: Path = field(init=False)
    state: State = field(init=False)

    def __post_init__(self) -> None:
        self.path = stack_path(self.project_dir, self.stack)
        self.state_file = state_path(self.project_dir, self.stack, self.service)

    # -- entry points

    def run(self, approve: bool = False, dry_run: bool = False) -> int:
        """Walk the steps from where the last run stopped; the exit code (see the module doc)."""
        try:
            return self._run(approve, dry_run)
        except RefusedError as refused:
            self.out(f"error: {refused}")
            if hasattr(self, "state") and not dry_run:
                self._record("refused", reason=str(refused))
            return EXIT_ERROR
        except (RolloutEditError, StackFileError, StackConfigError) as err:
            self.out(f"error: {err}")
            return EXIT_ERROR

    def summary(self) -> str:
        """The run summary (Markdown): what happened, why, where the file and the deployment are."""
        state = self.state
        headline = {
            "done": "all steps done",
            "rolled-back": "ROLLED BACK",
            "awaiting-approval": "awaiting approval",
            "inconclusive": "analysis inconclusive: awaiting a decision",
            "apply-failed": "apply FAILED",
            "refused": "step refused",
        }.get(state.status, state.status)
        lines = [
            f"### Rollout {state.stack}/{state.service} {state.version}: {headline}",
            "",
            f"- stack file: {self._shown(state.file)}; deployed: {self._shown(state.applied)}",
        ]
        if state.reason:
            lines.append(f"- why: {state.reason}")
        if state.tallies:
            lines += [
                "",
                "| metric@target | ok | failed | inconclusive | errors in a row | last |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            for key, t in sorted(state.tallies.items()):
                lines.append(
                    f"| {key} | {t.successful} | {t.failed} | {t.inconclusive} | "
                    f"{t.consecutive_errors} | {t.last} |"
                )
        events = [h for h in state.history if h["event"] != "measure"]
        if events:
            lines += ["", "| when (UTC) | step | event |", "| --- | --- | --- |"]
            for h in events[-20:]:
                lines.append(f"| {h['at']} | {h.get('step', '')} | {h['event']}: {h.get('detail', '')} |")
        return "\n".join(lines) + "\n"

    # -- the walk

    def _run(self, approve: bool, dry_run: bool) -> int:
        text, _ = read_stack_file(self.path)
        svc = Service(text, self.service, str(self.path))
        version = svc.under_test
        if version is None:
            self.out(f"{self.service}: no release under test in {self.path.name}; nothing to do")
            return EXIT_DONE
        steps = svc.steps()
        self.state = self._load(svc, steps)
        if self.state.status == "rolled-back":
            self.out(self.summary())
            self.out(
                f"{self.service} {version} was rolled back ({self.state.reason}); to try it again, re-enter "
                f"the steps (python -m preflight rollout set-weight --stack {self.stack} --service "
                f"{self.service} --weight N) and run again"
            )
            return EXIT_ROLLED_BACK
        if svc.position == ABORTED and not self.state.rolling_back and self.state.file == self.state.applied:
            # `aborted: true` says a rollback, whatever record there is (none, or an older one): the
            # steps are not walked again until a person re-enters them, as after Argo's abort.
            self.out(
                f"{self.service} {version} was rolled back (aborted: true in {self.path.name}); to try it "
                f"again, re-enter the steps (python -m preflight rollout set-weight --stack {self.stack} "
                f"--service {self.service} --weight N) and run again"
            )
            return EXIT_ROLLED_BACK
        if self.state.status == "done" and self.state.step >= len(steps):
            self.out(f"{self.service} {version}: every step is done")
            return EXIT_DONE
        self._check_analysis(svc)
        if dry_run:
            return self._dry_run(svc, steps)
        check_writable(self.path)
        if self.state.rolling_back:
            return self._roll_back(svc, self.state.rolling_back)
        if self.state.file != self.state.applied:
            # A step written but not applied (a crash, or an apply that failed): apply it first.
            code = self._route(svc, self.state.file, rollback=False)
            if code is not None:
                return code
        if self.state.status in ("awaiting-approval", "inconclusive") and approve:
            self._approve(steps)
            approve = False
        self.state.status = "running"
        self._save()
        while self.state.step < len(steps):
            step = steps[self.state.step]
            if step.kind == "route":
                code = self._route(svc, step.to, rollback=False)
                if code is not None:
                    return code
                self._advance(f"{step.describe()} applied")
                continue
            if step.duration is None:
                if approve:
                    approve = False
                    self._advance("approved")
                    continue
                return self._stop("awaiting-approval", "waiting at a manual pause (`pause: {}`)")
            code = self._pause(svc, step.duration)
            if code is not None:
                return code
            self._advance(f"{step.describe()} done")
        return self._done(svc)

    def _load(self, svc: Service, steps: Sequence[Step]) -> State:
        """The record of this release's last run, or a new one from what the stack file says."""
        version = svc.under_test
        assert version is not None
        position = svc.position
        # Without a record of this release, the deploy pipeline applied the file as it is: what it says
        # is what runs. With one, what was last applied is known, and a difference is applied first.
        applied = position
        if self.state_file.is_file():
            state = State.from_json(self.state_file.read_text(encoding="utf-8"))
            if (state.version, state.strategy) != (version, svc.model.strategy):
                self.out(
                    f"ignoring {self.state_file.name}: it records {state.version} ({state.strategy}), the "
                    f"release under test is {version}"
                )
            elif state.file == position:
                return state
            elif state.status == "rolled-back":
                self.out(
                    f"the stack file moved on from the rollback ({self._shown(position)}): a new attempt"
                )
            else:  # edited by hand since, or a crash before a write: the file is the source of truth
                self.out(
                    f"the stack file says {self._shown(position)}, the last run recorded "
                    f"{self._shown(state.file)}: starting from the file"
                )
                applied = state.applied
        state = State(self.stack, self.service, svc.model.strategy, version, step=svc.resume_at(steps))
        state.file, state.applied = position, applied
        self._event(state, "start", f"at {self._shown(position)}, step {state.step}")
        return state

    def _check_analysis(self, svc: Service) -> None:
        analysis = svc.analysis
        if analysis is None:
            return
        if self.reader is None:
            raise RefusedError(
                f"{self.service}: the rollout has an analysis but no metric reader is configured"
            )
        for metric in analysis.metrics:
            for target in self._targets(metric):
                problem = self.reader.problem(metric, target)
                if problem:
                    raise RefusedError(f"{self.service}: analysis metric {metric.name}: {problem}")

    def _targets(self, metric: MetricSettings) -> Sequence[str]:
        assert self.reader is not None
        return ("prometheus",) if metric.prometheus is not None else self.reader.targets

    # -- routing: edit, compare, write, apply

    def _route(self, svc: Service, to: int | str | None, rollback: bool) -> int | None:
        """Make the stack file say `to` and apply it. None when done; an exit code when the run stops."""
        rollback = rollback or to == ABORTED
        with stack_lock(self.path):
            text, digest = read_stack_file(self.path)
            current = Service(text, self.service, str(self.path))
            action, weight = self._action(current, to, rollback)
            if current.position != to:
                new_text = edit(text, self.service, action, weight, source=str(self.path))
                changes = self._checked(text, new_text, action)
                # Recorded before the write: a crash between the two is seen on resume as a file that
                # does not say what the record does, and the record's `applied` is still true.
                self.state.file = Service(new_text, self.service, str(self.path)).position
                self.state.commit = commit_subject(self.stack, self.service, action, weight)
                self._event(self.state, "write", f"{self.path.name}: {self._shown(self.state.file)}")
                self._save()
                try:
                    write_stack_file(self.path, new_text, digest)
                except StackFileError:
                    self.state.file = current.position
                    self._save()
                    raise
                text = new_text
            elif self.state.applied == to:
                return None
            else:
                changes = self._checked(self._text_at(text, self.state.applied), text, action)
        return self._apply(text, changes, rollback)

    def _action(self, svc: Service, to: int | str | None, rollback: bool) -> tuple[str, int | None]:
        if rollback:
            return "rollback", None
        if isinstance(to, int):
            return "set-weight", to
        return "promote", None

    def _text_at(self, text: str, position: int | str | None) -> str:
        """The stack file as it was when `position` was applied (for the plan comparison of a retried
        apply): the step's own edit, undone."""
        if isinstance(position, int):
            return edit(text, self.service, "set-weight", position, source=str(self.path))
        if isinstance(position, str):
            return edit(text, self.service, "rollback", source=str(self.path))
        raise RefusedError(
            f"{self.path.name} says {self._shown(Service(text, self.service, '').position)} for "
            f"{self.service} but no run recorded what is deployed; apply the stack file (the deploy "
            "pipeline) and run again"
        )

    def _checked(self, old: str, new: str, action: str) -> StepChanges:
        """The helper's plan comparison; a step that would restart a workload is refused."""
        try:
            changes = self.compare(old, new)
        except ProgramRunError as err:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            raise RefusedError(f"{lines[0]} {lines[-1]}; nothing was written or applied") from None
        if changes.restarts:
            raise RefusedError(
                f"{action} would restart workloads ({'; '.join(changes.workloads)}): a traffic step must "
                "change routing only; nothing was written or applied"
            )
        return changes

    def _apply(self, text: str, changes: StepChanges, rollback: bool) -> int | None:
        targets = changes.routing_urns
        try:
            self.applier.apply(text, targets)
        except ApplyError as err:
            self.state.reason = " ".join(str(err).split())[:400]
            line = (
                f"apply failed: {self.path.name} says {self._shown(self.state.file)}, the stack last applied "
                f"{self._shown(self.state.applied)} ({self.state.reason}); run again to retry the apply, or "
                f"set the file back to {self._shown(self.state.applied)} to abandon the step"
            )
            self._record("apply-failed", reason=line)
            self.out(f"error: {line}")
            self._notify("rollback" if rollback else "deploy", "failed", line)
            return EXIT_APPLY_FAILED
        self.state.applied = self.state.file
        self._event(self.state, "apply", f"{self._shown(self.state.applied)} ({len(targets)} resources)")
        self._save()
        return None

    # -- pauses and analysis

    def _pause(self, svc: Service, duration: int) -> int | None:
        if self.state.pause_started is None:
            self.state.pause_started = self.clock.now()
            self._save()
        end = self.state.pause_started + duration
        analysis = svc.analysis
        while True:
            now = self.clock.now()
            if now >= end:
                return None
            wait = min(end - now, analysis.interval_seconds) if analysis else end - now
            self.clock.sleep(wait)
            if analysis is not None and (analysis.count is None or self.state.measurements < analysis.count):
                code = self._measure(svc, analysis, wait)
                if code is not None:
                    return code

    def _measure(self, svc: Service, analysis: AnalysisSettings, span: float) -> int | None:
        assert self.reader is not None
        end = datetime.fromtimestamp(self.clock.now(), UTC)
        window = Window(datetime.fromtimestamp(end.timestamp() - span, UTC), end)
        failed: list[str] = []
        inconclusive: list[str] = []
        for metric in analysis.metrics:
            for target in self._targets(metric):
                key = f"{metric.name}@{target}"
                tally = self.state.tallies.setdefault(key, Tally())
                try:
                    value = self.reader.read(metric, target, window)
                except MetricError as err:
                    tally.consecutive_errors += 1
                    tally.last = f"error: {err}"
                    if tally.consecutive_errors > analysis.consecutive_error_limit:
                        failed.append(
                            f"{key} could not be read {_times(tally.consecutive_errors)} in a row (limit "
                            f"{analysis.consecutive_error_limit}): {err}"
                        )
                    continue
                tally.consecutive_errors = 0
                if value is None:
                    tally.inconclusive += 1
                    tally.last = "no data"
                    if tally.inconclusive > analysis.inconclusive_limit:
                        inconclusive.append(
                            f"{key} had no data {_times(tally.inconclusive)} "
                            f"(limit {analysis.inconclusive_limit})"
                        )
                elif metric.verdict(value):
                    tally.successful += 1
                    tally.last = f"{self._value(metric, value)} ok"
                else:
                    tally.failed += 1
                    tally.last = f"{self._value(metric, value)}, wants {metric.threshold}"
                    if tally.failed > analysis.failure_limit:
                        failed.append(
                            f"{key} failed {_times(tally.failed)} (limit {analysis.failure_limit}), last "
                            f"{self._value(metric, value)}, wants {metric.threshold}"
                        )
        self.state.measurements += 1
        detail = "; ".join(f"{k}: {t.last}" for k, t in sorted(self.state.tallies.items()))
        self._event(self.state, "measure", detail)
        self._save()
        if failed:
            return self._roll_back(svc, "; ".join(failed))
        if inconclusive:
            return self._stop("inconclusive", "; ".join(inconclusive) + ": rerun with --approve to go on")
        return None

    @staticmethod
    def _value(metric: MetricSettings, value: float) -> str:
        if metric.latency_p99 is not None:
            return f"{value:g} ms"
        if metric.prometheus is not None:
            return f"{value:g}"
        return f"{value:.2%}"

    def _roll_back(self, svc: Service, reason: str) -> int:
        """All traffic back to the stable slot (blue-green: the previous colour), plan-compared and
        applied like any step; then exit 1 with the reason (4 when the rollback's apply failed)."""
        self.state.reason = f"analysis failed: {reason}"
        self.state.rolling_back = reason
        self._event(self.state, "rollback", self.state.reason)
        self._save()
        model = svc.model
        to: int | str | None = (
            (ABORTED if model.header_route is not None else 0)
            if isinstance(model, CanaryRollout)
            else self._previous_slot(svc)
        )
        try:
            code = self._route(svc, to, rollback=True)
        except RefusedError as refused:
            line = f"the rollback was refused ({refused}); {self.state.reason}"
            self._record("apply-failed", reason=line)
            self.out(f"error: {line}")
            self._notify("rollback", "failed", line)
            return EXIT_ROLLED_BACK
        if code is not None:
            return code  # the apply line and its notification are out; a rerun retries the rollback
        self.state.rolling_back = ""
        self._record("rolled-back", reason=f"analysis failed: {reason}")
        self.out(self.summary())
        self._notify("rollback", "succeeded", f"{self.service} {self.state.version}: {self.state.reason}")
        return EXIT_ROLLED_BACK

    def _previous_slot(self, svc: Service) -> str:
        assert isinstance(svc.model, BlueGreenRollout)
        return next(n for n, s in svc.model.slots.items() if s.version != svc.version)

    # -- bookkeeping

    def _advance(self, detail: str) -> None:
        self._event(self.state, "step", detail)
        self.state.step += 1
        self.state.pause_started = None
        self._save()

    def _approve(self, steps: Sequence[Step]) -> None:
        step = steps[self.state.step] if self.state.step < len(steps) else None
        if self.state.status == "inconclusive":
            for tally in self.state.tallies.values():
                tally.inconclusive = 0
            self._event(self.state, "approve", "inconclusive analysis accepted")
        elif step is not None and step.kind == "pause" and step.duration is None:
            self._advance("approved")

    def _stop(self, status: str, reason: str) -> int:
        self._record(status, reason=reason)
        self.out(self.summary())
        self._notify("approval", None, f"{self.service} {self.state.version}: {reason}")
        return EXIT_AWAITING

    def _done(self, svc: Service) -> int:
        self._record("done", reason="")
        self.out(self.summary())
        if isinstance(svc.model, CanaryRollout):
            self.out(
                f"the canary {self.state.version} takes 100%; promote it (a reviewed edit: the stable "
                f"workload moves to it) with `python -m preflight rollout promote --stack {self.stack} "
                f"--service {self.service}`"
            )
        self._notify("deploy", "succeeded", f"{self.service} {self.state.version}: rollout steps done")
        return EXIT_DONE

    def _dry_run(self, svc: Service, steps: Sequence[Step]) -> int:
        """The next step, shown and compared; nothing written, applied or recorded."""
        if self.state.step >= len(steps):
            self.out(f"{self.service}: every step is done")
            return EXIT_DONE
        step = steps[self.state.step]
        self.out(f"next: steps[{self.state.step}] {step.describe()}")
        if step.kind == "route":
            text, _ = read_stack_file(self.path)
            action, weight = self._action(svc, step.to, rollback=False)
            changes = self._checked(
                text, edit(text, self.service, action, weight, source=str(self.path)), action
            )
            self.out(f"routing changes ({len(changes.routing)}):")
            for line in changes.routing:
                self.out(f"  ~ {line}")
            self.out("workload changes (0): none")
        return EXIT_DONE

    def _record(self, status: str, reason: str) -> None:
        self.state.status = status
        self.state.reason = reason
        self._event(self.state, status, reason)
        self._save()

    def _event(self, state: State, event: str, detail: str) -> None:
        at = datetime.fromtimestamp(self.clock.now(), UTC).strftime("%Y-%m-%d %H:%M:%S")
        state.history.append({"at": at, "step": state.step, "event": event, "detail": detail})

    def _save(self) -> None:
        save_state(self.state_file, self.state)

    def _shown(self, position: int | str | None) -> str:
        if position == ABORTED:
            return "canary 0% (aborted: header route to stable)"
        if isinstance(position, int):
            return f"canary {position}%"
        if isinstance(position, str):
            return f"active slot {position}"
        return "unknown"

    def _notify(self, event: str, status: str | None, detail: str) -> None:
        if not self.run_url:
            self.out("notification skipped (no --run-url)")
            return
        with tempfile.NamedTemporaryFile("w", suffix=".md", delete=False, encoding="utf-8") as handle:
            handle.write(self.summary())
        argv = ["--event", event, "--stack", self.stack, "--run-url", self.run_url, "--detail", detail]
        argv += ["--summary-file", handle.name] + (["--status", status] if status else [])
        argv += ["--commit", self.commit] if self.commit else []
        try:
            self.notify(argv)  # never fails the run (delivery/notify.py)
        finally:
            os.unlink(handle.name)


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


# -- production wiring: the Automation API and the clouds' metrics ------------------------------------


class AutomationApplier:
    """`pulumi up` through the Automation API (pulumi.automation): the project's own program and stack
    file (`LocalWorkspace`), the policy pack enforced with the stack's config as the deploy pipeline
    does, no refresh, and only the URNs the step changes (`--target`), so nothing else the program
    would change (a rebuilt image, drifted tags) rides along with a traffic step."""

    def __init__(self, project_dir: Path, stack: str, pulumi_stack: str) -> None:
        self.project_dir = project_dir
        self.stack = stack
        self.pulumi_stack = pulumi_stack

    def _stack(self) -> Any:
        from pulumi import automation

        return automation.select_stack(stack_name=self.pulumi_stack, work_dir=str(self.project_dir))

    def apply(self, stack_text: str, targets: Sequence[str]) -> None:
        from pulumi.automation import errors

        on_disk, _ = read_stack_file(stack_path(self.project_dir, self.stack))
        if on_disk != stack_text:
            raise ApplyError(f"Pulumi.{self.stack}.yaml changed under the run; nothing applied")
        try:
            self._stack().up(
                target=list(targets) or None,
                policy_packs=[str(self.project_dir / "policies")],
                policy_pack_configs=[str(self.project_dir / "policies" / "config" / f"{self.stack}.json")],
                refresh=False,
                message=f"rollout driver: {self.stack}",
                on_output=print,
            )
        except errors.CommandError as err:
            raise ApplyError(" ".join(str(err).split())[-400:]) from None

    def deployment(self) -> Mapping[str, Any]:
        """The stack's state (`pulumi stack export`): where the metric sources are found."""
        exported = self._stack().export_stack()
        return exported.deployment or {}


def cloud_reader(project_dir: Path, stack: str, service: str, applier: AutomationApplier) -> MetricReader:
    """The metric sources of the slot under test, located in the deployed stack's resources."""
    from delivery.metrics import CloudMetricReader, Slot, deployed_resources, sources
    from preflight.stackconfig import load_stack_config

    text, _ = read_stack_file(stack_path(project_dir, stack))
    svc = Service(text, service, stack)
    name, workload = svc.slot
    region = load_stack_config(project_dir, stack).values.get("aws:region", "us-east-1")
    found = sources(
        deployed_resources(applier.deployment()), Slot(service, name, workload), svc.targets, region
    )
    return CloudMetricReader(found, {"service": service, "version": svc.under_test or ""})


# -- the command ---------------------------------------------------------------------------------------


def pending(project_dir: Path, stack: str) -> list[str]:
    """The services of the stack whose release is under way, what a workflow after a deploy runs the
    driver for: a canary with steps between 0 and 100% (0 is a rollback, or a canary nobody started:
    dispatch the driver for it by hand; 100 waits for the reviewed promote), or at 0 in the A/B phase
    its steps start with (`_in_ab_phase`), or a blue-green service
    whose new version is not active yet and was not switched back by a rollback (the last
    `rollout(<stack>/<service>): rollback` commit left the service as it is now)."""
    text, _ = read_stack_file(stack_path(project_dir, stack))
    data = _plain(_parse(text).data) or {}
    names = [
        s.get("name") for s in data.get("config", {}).get("pouw-cicd:services", []) if isinstance(s, dict)
    ]
    found = []
    for name in names:
        try:
            svc = Service(text, str(name), stack)
        except RefusedError:
            continue
        model = svc.model
        if svc.under_test is None:
            continue
        position = svc.position
        walks = isinstance(model, CanaryRollout) and bool(model.steps)
        walks = walks and isinstance(position, int) and (0 < position < 100 or _in_ab_phase(model))
        switches = isinstance(model, BlueGreenRollout) and model.active_slot != svc.new_slot
        if walks or (switches and not _switched_back(project_dir, stack, svc)):
            found.append(str(name))
    return found


def _in_ab_phase(model: RolloutSettings) -> bool:
    """A canary at weight 0 whose plan starts there with a header route (`- setWeight: 0` first, not
    aborted): it takes header traffic, and its first pause measures it, so its release is under way (a
    rollback of it says `aborted: true`, and a canary nobody started has a plan that starts above 0)."""
    if not isinstance(model, CanaryRollout) or model.header_route is None or model.aborted:
        return False
    first = next((s.set_weight for s in model.steps if s.set_weight is not None), None)
    return model.canary is not None and model.canary.weight == 0 and first == 0


def _switched_back(project_dir: Path, stack: str, svc: Service) -> bool:
    """Whether the last rollback commit of the service left it as the stack file has it now (a
    blue-green rollback looks like a switch not taken yet; only git tells them apart)."""
    # The release tool's few git reads, imported here: only `pending` needs them, and the release
    # module (commitizen) is half of the driver's start-up otherwise.
    from delivery.release import Git, ReleaseError

    try:
        return _rolled_back_to(Git(project_dir), project_dir, stack, svc)
    except ReleaseError as err:  # names the fix (not a git repository, git missing)
        raise RefusedError(str(err)) from err


def _rolled_back_to(git: Git, project_dir: Path, stack: str, svc: Service) -> bool:
    if git.run("rev-parse", "--is-shallow-repository").strip() == "true":
        raise RefusedError(
            f"{git.top} is a shallow clone: the rollback commits of {stack}'s blue-green services are not "
            "in it; fetch the history (actions/checkout with fetch-depth: 0) and run again"
        )
    name = stack_path(project_dir, stack).name
    subject = commit_subject(stack, svc.name, "rollback")
    for line in git.run("log", "--format=%H %s", "--", name).splitlines():
        rev, _, title = line.partition(" ")
        if title.strip() == subject:
            then = Service(git.run("show", f"{rev}:{git.prefix}{name}"), svc.name, f"{name}@{rev[:12]}")
            return (then.version, then.position, then.model) == (svc.version, svc.position, svc.model)
    return False


def waiting(project_dir: Path, stack: str) -> list[str]:
    """The services whose last run stopped for a person (a manual pause or an inconclusive analysis)."""
    found = []
    for path in sorted((project_dir / STATE_DIR).glob(f"{stack}.*.json")):
        state = State.from_json(path.read_text(encoding="utf-8"))
        if state.stack == stack and state.status in ("awaiting-approval", "inconclusive"):
            found.append(state.service)
    return found


def main(argv: Sequence[str] | None = None, project_dir: Path = PROJECT_DIR) -> int:
    parser = argparse.ArgumentParser(prog="python -m delivery.driver", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="walk the service's steps from where the last run stopped")
    run.add_argument("--stack", required=True)
    run.add_argument("--service", required=True)
    run.add_argument(
        "--approve", action="store_true", help="go past the manual pause the last run stopped at"
    )
    run.add_argument("--dry-run", action="store_true", help="show the next step; change nothing")
    run.add_argument("--summary", type=Path, help="append the run summary (Markdown) to this file")
    run.add_argument("--run-url", help="the CI run (notifications are sent only with it)")
    run.add_argument("--commit", help="the commit the run started from (in notifications)")
    run.add_argument("--pulumi-stack", help="the stack's full name (org/project/stack); default: --stack")
    for name in ("pending", "waiting"):
        listing = sub.add_parser(name)
        listing.add_argument("--stack", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "pending":
            print(json.dumps(pending(project_dir, args.stack)))
            return EXIT_DONE
        if args.command == "waiting":
            print(json.dumps(waiting(project_dir, args.stack)))
            return EXIT_DONE
        applier = AutomationApplier(project_dir, args.stack, args.pulumi_stack or args.stack)
        text, _ = read_stack_file(stack_path(project_dir, args.stack))
        needs_metrics = Service(text, args.service, args.stack).analysis is not None
        reader = cloud_reader(project_dir, args.stack, args.service, applier) if needs_metrics else None
    except (StackFileError, RefusedError, MetricError, StackConfigError) as err:
        print(f"error: {err}")
        return EXIT_ERROR
    driver = Driver(
        project_dir,
        args.stack,
        args.service,
        applier,
        reader,
        SystemClock(),
        lambda old, new: compare(project_dir, args.stack, old, new),
        run_url=args.run_url,
        commit=args.commit,
    )
    code = driver.run(approve=args.approve, dry_run=args.dry_run)
    if args.summary is not None and hasattr(driver, "state") and not args.dry_run:
        with args.summary.open("a", encoding="utf-8") as handle:
            handle.write(driver.summary())
    return code


if __name__ == "__main__":
    sys.exit(main())
