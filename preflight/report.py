"""What a preflight shows: a resource tree, the violations, a JSON plan and a Markdown summary.

Secret values never appear: anything marked secret on the wire is printed as `[secret]`. A preflight
that fails before it has a result (settings, a missing policy config, an interrupt) still gets a JSON
and a Markdown summary of the failure (`failure_json`, `failure_markdown`), so CI can report it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from preflight.analyzer import AnalysisResult
from preflight.engine import SECRET_SIG, SIG_KEY, ProgramRun, Registration
from preflight.stackconfig import StackConfig

UNKNOWN_SENTINELS = frozenset(
    {
        "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7",
        "3eeb2bf0-c639-47a8-9e75-3b44932eb421",
        "04da6b54-80e4-46f7-96ec-b56ff0331ba9",
        "6a19a0b0-7e62-4c92-b797-7f8e31da9cc2",
        "dd056dcd-154b-4c76-9bd3-c8f88648b5ff",
    }
)


@dataclass
class Preflight:
    config: StackConfig
    run: ProgramRun
    analysis: AnalysisResult | None
    # The `--policy-pack-config` file the pack was configured from.
    policy_config: str = ""
    # No policy config (`--no-policy-config`): the pack ran on its own defaults. Always shown.
    pack_defaults: bool = False
    # A failure after the program ran (the policy pack could not be configured or asked): exit 2.
    error: str = ""

    @property
    def exit_code(self) -> int:
        if self.run.error is not None or self.error:
            return 2
        if self.analysis is not None and self.analysis.mandatory:
            return 1
        return 0


def masked(value: Any) -> Any:
    """Wire-format inputs with secrets replaced by `[secret]` and unknowns by `[unknown]`."""
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            return "[secret]"
        return {k: masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    if isinstance(value, str) and value in UNKNOWN_SENTINELS:
        return "[unknown]"
    return value


def plan(result: Preflight) -> dict[str, Any]:
    run = result.run
    return {
        "project": run.project,
        "stack": run.stack,
        "secretPlaceholders": result.config.secret_keys,
        "resources": [
            {
                "urn": r.urn,
                "type": r.type,
                "name": r.name,
                "custom": r.custom,
                "parent": r.parent,
                "provider": r.provider,
                "dependencies": r.dependencies,
                "propertyDependencies": r.property_dependencies,
                "protect": r.protect,
                "retainOnDelete": r.retain_on_delete,
                "deleteBeforeReplace": r.delete_before_replace,
                "ignoreChanges": r.ignore_changes,
                "aliases": r.aliases,
                "additionalSecretOutputs": r.additional_secret_outputs,
                "inputs": masked(r.inputs),
            }
            for r in sorted(run.resources, key=lambda x: x.urn)
        ],
        "outputs": run.outputs,
        "diagnostics": [
            {
                "policy": v.policy,
                "level": v.level,
                "severity": v.severity,
                "urn": v.urn,
                "message": v.detail,
            }
            for v in (result.analysis.violations if result.analysis else [])
        ],
        "remediations": [
            {"policy": policy, "urn": urn}
            for policy, urn in (result.analysis.remediations if result.analysis else [])
        ],
        "policyConfig": None if result.pack_defaults else (result.policy_config or None),
        "error": run.error_text or result.error or None,
        "exitCode": result.exit_code,
    }


def plan_json(result: Preflight) -> str:
    return json.dumps(plan(result), indent=2, sort_keys=True) + "\n"


def failure_plan(stack: str, error: str, project: str | None = None) -> dict[str, Any]:
    """The JSON plan's shape for a preflight that failed before the program ran: no resources."""
    return {
        "project": project,
        "stack": stack,
        "secretPlaceholders": [],
        "resources": [],
        "outputs": {},
        "diagnostics": [],
        "remediations": [],
        "policyConfig": None,
        "error": error,
        "exitCode": 2,
    }


def failure_json(stack: str, error: str, project: str | None = None) -> str:
    return json.dumps(failure_plan(stack, error, project), indent=2, sort_keys=True) + "\n"


def failure_markdown(stack: str, error: str) -> str:
    lines = [f"### Preflight `{stack}`: failed", "", *_fenced(error)]
    lines += ["", "_The preflight could not run to a policy verdict; nothing was checked._"]
    return "\n".join(lines) + "\n"


def _fenced(text: str) -> list[str]:
    """A Markdown code block that the text's own backticks cannot close."""
    fence = "```"
    while fence in text:
        fence += "`"
    return [fence, text.strip(), fence]


DEFAULTS_WARNING = "no policy config ({flag}): the pack ran on its own defaults, not this stack's levels"


def resource_tree(run: ProgramRun) -> Tree:
    """Resources nested under their parents, siblings sorted so the output is stable."""
    children: dict[str, list[Registration]] = {}
    for r in run.resources:
        children.setdefault(r.parent, []).append(r)

    def add(node: Tree, parent_urn: str) -> None:
        for r in sorted(children.get(parent_urn, []), key=lambda x: (x.name, x.type)):
            label = f"{escape(r.type)} [bold]{escape(r.name)}[/]"
            flags = [f for f, on in (("protect", r.protect), ("retainOnDelete", r.retain_on_delete)) if on]
            if flags:
                label += f" [dim]({', '.join(flags)})[/]"
            add(node.add(label), r.urn)

    root = Tree(f"[bold]pulumi:pulumi:Stack[/] {run.project}-{run.stack}")
    stack_urn = f"urn:pulumi:{run.stack}::{run.project}::pulumi:pulumi:Stack::{run.project}-{run.stack}"
    add(root, stack_urn)
    add(root, "")
    return root


def print_report(result: Preflight, console: Console) -> None:
    run = result.run
    console.print(f"[bold]Preflight[/] of stack [cyan]{run.stack}[/] ({result.config.path.name})")
    if result.config.secret_keys:
        console.print(
            f"[dim]{len(result.config.secret_keys)} encrypted config value(s) replaced by "
            f"placeholders, still secret: {', '.join(result.config.secret_keys)}[/]"
        )
    if run.error is not None:
        console.print("[red bold]error:[/]", end=" ")
        console.print(run.error_text, markup=False)
        console.print(f"{len(run.resources)} resources were registered before the error.")
        return
    console.print(resource_tree(run))
    console.print(f"{len(run.resources)} resources")
    if result.pack_defaults:
        warning = DEFAULTS_WARNING.format(flag="--no-policy-config")
        console.print(f"[yellow bold]warning:[/] [yellow]{warning}[/]")
    if result.error:
        console.print("[red bold]error:[/]", end=" ")
        console.print(result.error, markup=False)
        return
    if result.analysis is None:
        return
    analysis = result.analysis
    if analysis.violations:
        table = Table(title=f"Policy pack {analysis.pack}@{analysis.version}")
        for column in ("level", "policy", "resource"):
            table.add_column(column, no_wrap=True)
        table.add_column("message", overflow="fold")
        for v in analysis.violations:
            color = "red" if v.level == "mandatory" else "yellow"
            table.add_row(
                f"[{color}]{v.level}[/]",
                escape(v.policy),
                escape(v.resource_name),
                escape(v.detail),
            )
        console.print(table)
    for policy, urn in analysis.remediations:
        console.print(f"[cyan]remediated[/] {escape(urn.rsplit('::', 1)[-1])} by {escape(policy)}")
    summary = (
        f"{len(analysis.mandatory)} mandatory, "
        f"{len(analysis.violations) - len(analysis.mandatory)} advisory violation(s) "
        f"from {len(analysis.policies)} policies"
    )
    if result.pack_defaults:
        summary += " on the pack's defaults (no policy config)"
    console.print(("[red]" if analysis.mandatory else "[green]") + summary + "[/]")


def markdown(result: Preflight) -> str:
    run = result.run
    status = {0: "passed", 1: "blocked by mandatory policies", 2: "failed"}[result.exit_code]
    lines = [f"### Preflight `{run.stack}`: {status}", ""]
    if run.error is not None:
        lines += _fenced(run.error_text)
        return "\n".join(lines) + "\n"
    if result.pack_defaults:
        lines += [f"> **Warning:** {DEFAULTS_WARNING.format(flag='`--no-policy-config`')}.", ""]
    if result.error:
        lines += _fenced(result.error)
        lines += ["", f"_The program registered {len(run.resources)} resources; the policies did not run._"]
        return "\n".join(lines) + "\n"
    counts: dict[str, int] = {}
    for r in run.resources:
        counts[r.type] = counts.get(r.type, 0) + 1
    lines += ["| resource type | count |", "| --- | --- |"]
    lines += [f"| `{t}` | {n} |" for t, n in sorted(counts.items())]
    if result.analysis is not None:
        lines += ["", f"**Policies** ({result.analysis.pack}@{result.analysis.version}):"]
        if result.analysis.violations:
            lines += ["", "| level | policy | resource | message |", "| --- | --- | --- | --- |"]
            lines += [
                f"| {v.level} | `{v.policy}` | `{v.resource_name}` | {v.detail.replace('|', '/')} |"
                for v in result.analysis.violations
            ]
        else:
            lines += ["", "No violations."]
    if result.config.secret_keys:
        lines += [
            "",
            f"_Encrypted config replaced by placeholders: {len(result.config.secret_keys)}._",
        ]
    return "\n".join(lines) + "\n"
