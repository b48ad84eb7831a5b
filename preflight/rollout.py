"""`python -m preflight rollout promote|rollback|set-weight`: a rollout step as a reviewed one-line edit.

The helper edits the service's `rollout` block in `Pulumi.<stack>.yaml` (comments, order and flow
style kept, through ruamel.yaml's round-trip mode), prints the text diff, then runs the program under
mocks with the old and the new config and prints what the step changes: routing (listener rules,
selectors, Ingress weights, `traffics`, origins, scaling bounds) versus workloads (pod templates,
task definitions, container groups, Cloud Run templates). A pure traffic step changes no workload.

    python -m preflight rollout set-weight --stack prod --service web --weight 50
    python -m preflight rollout promote --stack prod --service web
    python -m preflight rollout rollback --stack staging --service web
"""

from __future__ import annotations

import argparse
import difflib
import io
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from preflight.engine import PlanDiff, plan_diff, run_program
from preflight.stackconfig import StackConfigError, load_stack_config

NAMESPACE = "pouw-cicd"
# A change to one of these (or to a Cloud Run service's template) starts new pods, tasks or revisions.
WORKLOAD_TYPES = frozenset(
    {
        "kubernetes:apps/v1:Deployment",
        "aws:ecs/taskDefinition:TaskDefinition",
        "aws:ecs/service:Service",
        "azure-native:containerinstance:ContainerGroup",
        "docker-build:index:Image",
    }
)
CLOUD_RUN = "gcp:cloudrunv2/service:Service"


class RolloutEditError(Exception):
    """The step does not apply to this service's rollout; the message says why and what would."""


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long lines: the diff must show only what the step changed
    yaml.indent(mapping=2, sequence=4, offset=2)  # the stack files' own layout
    return yaml


def edit(text: str, service: str, action: str, weight: int | None = None) -> str:
    """The stack file's text with one rollout step applied."""
    yaml = _yaml()
    data = yaml.load(text)
    services = (data.get("config") or {}).get(f"{NAMESPACE}:services") or []
    found = next((s for s in services if s.get("name") == service), None)
    if found is None:
        names = ", ".join(str(s.get("name")) for s in services)
        raise RolloutEditError(f"no service {service!r} in {NAMESPACE}:services; services are {names}")
    rollout = found.get("rollout")
    strategy = rollout.get("strategy") if rollout else "rolling"
    if strategy == "canary":
        _canary(rollout, found["version"], action, weight)
    elif strategy == "blue-green":
        if action == "set-weight":
            raise RolloutEditError("blue-green has no weights: use promote (switch) or rollback")
        _blue_green(rollout, found["version"], action)
    else:
        raise RolloutEditError(f"{service} rolls out with {strategy}: nothing to promote or shift")
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _canary(rollout: Any, version: str, action: str, weight: int | None) -> None:
    slots = rollout["slots"]
    stable = slots["stable"]
    canary = slots.get("canary")
    if canary is None:
        raise RolloutEditError("there is no canary slot: the last canary was promoted or removed")
    if action == "set-weight":
        if weight is None or not 0 <= weight <= 100:
            raise RolloutEditError("--weight must be an integer 0..100")
        new = weight
    elif action == "rollback":
        new = 0  # all traffic back to stable; the canary's pods stay for inspection
    else:  # promote: the canary's version becomes stable, the canary slot goes
        stable["version"] = canary["version"]
        del slots["canary"]
        if "weight" in stable:
            stable["weight"] = 100
        return
    canary["weight"] = new
    if "weight" in stable:
        stable["weight"] = 100 - new


def _blue_green(rollout: Any, version: str, action: str) -> None:
    slots = rollout["slots"]
    new = [name for name, slot in slots.items() if str(slot["version"]) == str(version)]
    old = [name for name, slot in slots.items() if str(slot["version"]) != str(version)]
    target = new if action == "promote" else old
    if not target:
        raise RolloutEditError(f"no slot to {action} to: slots are {dict(slots)}")
    if rollout["activeSlot"] == target[0]:
        raise RolloutEditError(f"activeSlot is already {target[0]}")
    rollout["activeSlot"] = target[0]


def classify(change: PlanDiff) -> tuple[list[str], list[str]]:
    """(routing changes, workload changes), each as `type name (fields)` lines."""
    routing: list[str] = []
    workloads: list[str] = []
    for key in sorted(change.changed | change.added | change.removed):
        type_, name = key
        fields = sorted(change.fields.get(key, {"(added)" if key in change.added else "(removed)"}))
        line = f"{type_} {name} ({', '.join(fields)})"
        is_workload = type_ in WORKLOAD_TYPES or (type_ == CLOUD_RUN and "template" in fields)
        is_workload = is_workload or key in change.added or key in change.removed
        (workloads if is_workload else routing).append(line)
    return routing, workloads


def main(argv: list[str], project_dir: Path) -> int:
    parser = argparse.ArgumentParser(prog="python -m preflight rollout", description=__doc__)
    parser.add_argument("action", choices=["promote", "rollback", "set-weight"])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--weight", type=int, help="the canary's new weight (set-weight)")
    parser.add_argument("--dry-run", action="store_true", help="print, do not write the stack file")
    args = parser.parse_args(argv)
    path = project_dir / f"Pulumi.{args.stack}.yaml"
    try:
        old_text = path.read_text()
        new_text = edit(old_text, args.service, args.action, args.weight)
        before = run_program(project_dir, load_stack_config(project_dir, args.stack))
        after = run_program(project_dir, load_stack_config(project_dir, args.stack, text=new_text))
    except (OSError, RolloutEditError, StackConfigError) as err:
        print(f"error: {err}")
        return 2
    for run, label in ((before, "current"), (after, "edited")):
        if run.error is not None:
            print(f"error: the {label} config does not run:\n{run.error_text}")
            return 2
    print(
        "".join(
            difflib.unified_diff(old_text.splitlines(True), new_text.splitlines(True), str(path), str(path))
        )
    )
    routing, workloads = classify(plan_diff(before, after))
    print(f"routing changes ({len(routing)}):")
    print("".join(f"  ~ {line}\n" for line in routing) or "  none\n", end="")
    print(f"workload changes ({len(workloads)}):")
    print(
        "".join(f"  ~ {line}\n" for line in workloads) or "  none: no pod, task or revision restarts\n",
        end="",
    )
    if not args.dry_run:
        path.write_text(new_text)
        print(f"wrote {path}; review it, commit it, and `pulumi up` applies the step")
    return 0
