"""`python -m preflight agree --preflight plan.json --cli analyze.json`: the two gates' verdicts, compared.

Preflight's gate (`python -m preflight --json plan.json --export state.json`) drives the pack itself;
`pulumi policy analyze --file state.json --policy-pack policies --policy-pack-config
policies/config/<stack>.json --json > analyze.json` has the real engine start it from PulumiPolicy.yaml
and analyse the same plan. This command says whether they found the same things: every policy
violation by (policy, resource URN, enforcement level), counted (a policy may report a resource twice),
and every remediation by (policy, URN). A stack-level violation is the same whether it names no URN
(preflight; the CLI before 3.252.0) or the root stack's (the CLI since 3.252.0, pulumi/pulumi#23692).
`remediate` counts as `mandatory`, as the engine reports a violation that remediation did not fix.

What the CLI writes with `--json` (pkg/cmd/pulumi/policy/policy_analyze.go, `analyzeEvents.writeEvent`):
one `apitype.EngineEvent` JSON object per line (sdk/go/common/apitype/events.go): a `policyEvent`
(`resourceUrn`, `policyName`, `policyPackName`, `enforcementLevel`, `message`, ...) per violation, a
`policyRemediationEvent` per remediation it would make, then one `summaryEvent` whose `result` is
`succeeded`, or `failed` on a mandatory violation or an error. Its exit status is 1 for a mandatory
violation and for any other error alike (`ExitCodeFor` maps neither to its own code), so the events
decide, and `--cli-exit-code` (the status the step captured) is checked against them.

Exit codes: 0 they agree, 1 they disagree (both sides' differing findings listed), 2 an input that is
not a verdict: unreadable, not the expected shape, a preflight that failed (its exit 2), a CLI run
that did not finish (no `summaryEvent`, or `failed` with no mandatory violation: its stderr says why).
`--markdown PATH` writes the result (also a failure) for a CI job summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLI = "pulumi policy analyze"
STACK_TYPE = "pulumi:pulumi:Stack"


class AgreeError(Exception):
    """An input that holds no verdict to compare; the message says which and why."""


@dataclass(frozen=True)
class Finding:
    kind: str  # violation | remediation
    policy: str
    urn: str  # "" for the stack
    level: str  # mandatory | advisory ("" for a remediation)
    message: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.kind, self.policy, self.urn, self.level

    @property
    def resource(self) -> str:
        return self.urn.rsplit("::", 1)[-1] if self.urn else "(stack)"


@dataclass(frozen=True)
class Verdict:
    source: str  # what to call this side: `preflight (plan.json)`
    blocked: bool
    findings: list[Finding]

    @property
    def summary(self) -> str:
        mandatory = sum(f.level == "mandatory" for f in self.findings)
        advisory = sum(f.level == "advisory" for f in self.findings)
        verdict = "blocked" if self.blocked else "passed"
        return f"{verdict} ({mandatory} mandatory, {advisory} advisory)"


def root_urn(project: str, stack: str) -> str:
    return f"urn:pulumi:{stack}::{project}::{STACK_TYPE}::{project}-{stack}"


def _level(value: Any, where: str) -> str:
    if value == "remediate":  # a violation a remediation did not fix: the engine reports it mandatory
        return "mandatory"
    if value not in ("mandatory", "advisory"):
        raise AgreeError(f"{where}: enforcement level {value!r} is not mandatory, advisory or remediate")
    return str(value)


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except FileNotFoundError as err:
        raise AgreeError(f"{what} {path}: not found") from err
    except IsADirectoryError as err:
        raise AgreeError(f"{what} {path}: is a directory") from err
    except UnicodeDecodeError as err:
        raise AgreeError(f"{what} {path}: not UTF-8 text") from err
    except OSError as err:
        raise AgreeError(f"{what} {path}: cannot be read: {err.strerror}") from err


def _str(entry: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = entry.get(key, default)
    if not isinstance(value, str):
        raise AgreeError(f"{where}: `{key}` must be a string, got {value!r}")
    return value


def read_plan(path: Path) -> tuple[Verdict, str, str]:
    """Preflight's verdict from its `--json` plan (`preflight.report.plan`), and its project and stack."""
    where = f"--preflight {path}"
    try:
        plan = json.loads(_read(path, "--preflight"))
    except json.JSONDecodeError as err:
        raise AgreeError(f"{where}: not valid JSON: {err}") from err
    shape = isinstance(plan, dict) and all(
        isinstance(plan.get(k), t)
        for k, t in (("stack", str), ("diagnostics", list), ("remediations", list), ("exitCode", int))
    )
    if not shape:
        raise AgreeError(f"{where}: not a preflight plan (what `python -m preflight --json` writes)")
    if plan["exitCode"] not in (0, 1):
        error = plan.get("error") or "no error recorded"
        raise AgreeError(f"{where}: preflight reached no verdict (exit {plan['exitCode']}): {error}")
    project, stack = str(plan.get("project")), plan["stack"]
    root = root_urn(project, stack)
    findings = []
    for i, d in enumerate(plan["diagnostics"]):
        at = f"{where}: diagnostics[{i}]"
        if not isinstance(d, dict):
            raise AgreeError(f"{at}: not an object")
        urn = _str(d, "urn", at)
        findings.append(
            Finding(
                "violation",
                _str(d, "policy", at),
                "" if urn == root else urn,
                _level(d.get("level"), at),
                _str(d, "message", at, ""),
            )
        )
    for i, r in enumerate(plan["remediations"]):
        at = f"{where}: remediations[{i}]"
        if not isinstance(r, dict):
            raise AgreeError(f"{at}: not an object")
        findings.append(Finding("remediation", _str(r, "policy", at), _str(r, "urn", at), ""))
    return Verdict(f"preflight ({path})", plan["exitCode"] == 1, findings), project, stack


def _events(text: str, where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """The JSON values one after another (Go's json.Encoder writes one per line), with their line."""
    decoder = json.JSONDecoder()
    at = 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return
        line = text.count("\n", 0, at) + 1
        try:
            event, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError as err:
            raise AgreeError(
                f"{where} line {line}: not an engine event (JSON): {err.msg}; "
                f"pass the stdout of `{CLI} --json` only, not its stderr"
            ) from err
        if not isinstance(event, dict):
            raise AgreeError(f"{where} line {line}: an engine event is a JSON object, got {event!r}")
        yield line, event


def read_cli(path: Path, root_urn: str, exit_code: int | None = None) -> Verdict:
    """The CLI's verdict from what `pulumi policy analyze --json` printed."""
    where = f"--cli {path}"
    findings: list[Finding] = []
    summary: dict[str, Any] | None = None
    for line, event in _events(_read(path, "--cli"), where):
        at = f"{where} line {line}"
        for kind in ("errorEvent", "cancelEvent"):
            if isinstance(event.get(kind), dict):
                raise AgreeError(f"{at}: {CLI} reported {kind} {json.dumps(event[kind])}")
        if isinstance(event.get("summaryEvent"), dict):
            summary = event["summaryEvent"]
        for kind, payload in (
            ("violation", event.get("policyEvent")),
            ("remediation", event.get("policyRemediationEvent")),
        ):
            if payload is None:
                continue
            if not isinstance(payload, dict):
                raise AgreeError(f"{at}: `{kind}` payload is not an object")
            urn = _str(payload, "resourceUrn", at, "")
            findings.append(
                Finding(
                    kind,
                    _str(payload, "policyName", at),
                    "" if urn == root_urn else urn,
                    _level(payload.get("enforcementLevel"), at) if kind == "violation" else "",
                    _str(payload, "message", at, ""),
                )
            )
    status = f" (exit {exit_code})" if exit_code is not None else ""
    if summary is None:
        raise AgreeError(
            f"{where}: {CLI}{status} did not finish an analysis (no summaryEvent); its stderr says why"
        )
    result = summary.get("result")
    mandatory = any(f.level == "mandatory" for f in findings)
    if result not in ("succeeded", "failed"):
        raise AgreeError(f"{where}: {CLI}{status} ended with result {result!r}, not a verdict")
    if result == "failed" and not mandatory:
        raise AgreeError(
            f"{where}: {CLI}{status} failed with no mandatory violation: an error (see its stderr)"
        )
    if result == "succeeded" and mandatory:
        raise AgreeError(f"{where}: {CLI} reported a mandatory violation but result `succeeded`")
    if exit_code is not None and (exit_code == 0) != (result == "succeeded"):
        raise AgreeError(f"{where}: {CLI} exited {exit_code} but its summaryEvent says `{result}`")
    return Verdict(f"{CLI} ({path})", mandatory, findings)


@dataclass(frozen=True)
class Comparison:
    stack: str
    preflight: Verdict
    cli: Verdict
    only_preflight: list[Finding]
    only_cli: list[Finding]

    @property
    def agree(self) -> bool:
        return not self.only_preflight and not self.only_cli and self.preflight.blocked == self.cli.blocked


def _only(findings: list[Finding], missing: Counter[tuple[str, str, str, str]]) -> list[Finding]:
    """The findings whose keys are in `missing`, as many of each as are missing."""
    left = Counter(missing)
    out = []
    for f in findings:
        if left[f.key] > 0:
            left[f.key] -= 1
            out.append(f)
    return sorted(out, key=lambda f: (f.level != "mandatory", f.kind, f.policy, f.urn))


def compare(stack: str, preflight: Verdict, cli: Verdict) -> Comparison:
    a = Counter(f.key for f in preflight.findings)
    b = Counter(f.key for f in cli.findings)
    return Comparison(stack, preflight, cli, _only(preflight.findings, a - b), _only(cli.findings, b - a))


def _detail(f: Finding) -> str:
    """One line of a finding's message (the CLI's starts with the policy description, on its own line)."""
    lines = [line.strip() for line in f.message.splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    return text if len(text) <= 200 else text[:197] + "..."


def _line(f: Finding) -> str:
    what = f.level if f.kind == "violation" else "remediation"
    return f"    {what:<11} {f.policy}  {f.urn or '(stack)'}" + (f"  {_detail(f)}" if _detail(f) else "")


def text_report(c: Comparison) -> str:
    if c.agree:
        return (
            f"agree: preflight and {CLI} on stack {c.stack}: {c.cli.summary}, "
            f"{len(c.cli.findings)} finding(s) compared"
        )
    lines = [
        f"error: preflight and {CLI} disagree on stack {c.stack}:",
        f"  {c.preflight.source}: {c.preflight.summary}",
        f"  {c.cli.source}: {c.cli.summary}",
    ]
    for side, only in ((c.preflight.source, c.only_preflight), (c.cli.source, c.only_cli)):
        if only:
            lines.append(f"  only {side} found:")
            lines += [_line(f) for f in only]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def markdown_report(c: Comparison) -> str:
    if c.agree:
        return (
            f"### Policy verdicts `{c.stack}`: preflight and `{CLI}` agree\n\n"
            f"Both {c.cli.summary}; {len(c.cli.findings)} finding(s) compared.\n"
        )
    lines = [
        f"### Policy verdicts `{c.stack}`: preflight and `{CLI}` disagree",
        "",
        f"- {_cell(c.preflight.source)}: **{c.preflight.summary}**",
        f"- {_cell(c.cli.source)}: **{c.cli.summary}**",
        "",
        "| found only by | level | policy | resource | message |",
        "| --- | --- | --- | --- | --- |",
    ]
    for side, only in (("preflight", c.only_preflight), (f"`{CLI}`", c.only_cli)):
        lines += [
            f"| {side} | {f.level or 'remediation'} | `{f.policy}` | `{f.resource}` | {_cell(_detail(f))} |"
            for f in only
        ]
    if not c.only_preflight and not c.only_cli:
        lines.append("| (none) | | | | the findings match; the verdicts do not |")
    return "\n".join(lines) + "\n"


def failure_markdown(message: str) -> str:
    return f"### Policy verdicts: not compared\n\n```\n{message}\n```\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m preflight agree", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--preflight", type=Path, required=True, help="the plan `python -m preflight --json` wrote"
    )
    parser.add_argument("--cli", type=Path, required=True, help=f"the stdout of `{CLI} --file ... --json`")
    parser.add_argument("--cli-exit-code", type=int, metavar="N", help=f"the exit status of `{CLI}`")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="write the result for a job summary")
    args = parser.parse_args(argv)
    try:
        preflight, project, stack = read_plan(args.preflight)
        cli = read_cli(args.cli, root_urn(project, stack), args.cli_exit_code)
        comparison = compare(stack, preflight, cli)
    except AgreeError as err:
        print(f"error: {err}")
        _write(args.markdown, failure_markdown(str(err)))
        return 2
    print(text_report(comparison))
    if not _write(args.markdown, markdown_report(comparison)):
        return 2
    return 0 if comparison.agree else 1


def _write(path: Path | None, text: str) -> bool:
    if path is None:
        return True
    try:
        path.write_text(text)
    except OSError as err:
        print(f"error: --markdown {path}: cannot write: {err.strerror or err}", file=sys.stderr)
        return False
    return True
