"""`python -m preflight agree`: preflight's verdict against `pulumi policy analyze --json`'s.

The CLI side is `tests/data/policy-analyze/blocked.jsonl`, in the exact shape the CLI writes (see
tests/data/README.md for the Pulumi source it follows); the preflight side is a plan in the shape of
`preflight.report.plan`.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from preflight import agree
from preflight.report import failure_plan
from tests.conftest import ROOT

DATA = Path(__file__).parent / "data" / "policy-analyze"
BLOCKED = DATA / "blocked.jsonl"
URN = "urn:pulumi:dev::pouw-cicd::"
SCAN = ("ecr-scan-on-push", URN + "pouw:index:EcrRepository$aws:ecr/repository:Repository::web-ecr")
HTTPS = ("alb-https-only", URN + "pouw:index:EcsService$aws:lb/listener:Listener::worker-ecs-http")
WEIGHTS = ("rollout-weights-sum-100", "")  # stack-level: preflight names no URN


def plan(*diagnostics: tuple[str, str, str], exit_code: int | None = None) -> dict[str, Any]:
    """A preflight `--json` plan of the dev stack with these (policy, urn, level) diagnostics."""
    data = failure_plan("dev", "", "pouw-cicd")
    data["diagnostics"] = [
        {"policy": p, "urn": u, "level": lvl, "severity": "", "message": f"{p} says no"}
        for p, u, lvl in diagnostics
    ]
    mandatory = any(lvl == "mandatory" for _, _, lvl in diagnostics)
    data.update(error=None, exitCode=int(mandatory) if exit_code is None else exit_code)
    return data


MATCHING = ((*SCAN, "mandatory"), (*HTTPS, "advisory"), (*WEIGHTS, "advisory"))


def run(
    tmp_path: Path,
    preflight: dict[str, Any] | str,
    cli: str | None = None,
    exit_code: int | None = 1,
    capsys: pytest.CaptureFixture[str] | None = None,
) -> tuple[int, str, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    plan_path, cli_path, md = tmp_path / "plan.json", tmp_path / "analyze.json", tmp_path / "agree.md"
    plan_path.write_text(preflight if isinstance(preflight, str) else json.dumps(preflight))
    cli_path.write_text(BLOCKED.read_text() if cli is None else cli)
    argv = ["--preflight", str(plan_path), "--cli", str(cli_path), "--markdown", str(md)]
    if exit_code is not None:
        argv += ["--cli-exit-code", str(exit_code)]
    code = agree.main(argv)
    out = capsys.readouterr().out if capsys is not None else ""
    return code, out, md.read_text()


def events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def lines(evts: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in evts)


def test_fixture_is_the_clis_json_shape() -> None:
    """Field names from sdk/go/common/apitype/events.go (EngineEvent, PolicyEvent, SummaryEvent)."""
    evts = events(BLOCKED.read_text())
    for i, event in enumerate(evts):
        payloads = set(event) - {"sequence", "timestamp"}
        assert event["sequence"] == i and isinstance(event["timestamp"], int) and len(payloads) == 1
    policy_fields = {"resourceUrn", "message", "color", "policyName", "policyPackName", "policyPackVersion"}
    policy_fields |= {"policyPackVersionTag", "enforcementLevel", "severity"}
    assert all(set(e["policyEvent"]) == policy_fields for e in evts[:-1])
    summary = evts[-1]["summaryEvent"]
    assert set(summary) == {
        "maybeCorrupt",
        "durationSeconds",
        "resourceChanges",
        "PolicyPacks",
        "isPreview",
    } | {"result"}
    assert "\\u003c" in BLOCKED.read_text()  # Go's json.Encoder escapes <, > and &


def test_same_findings_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, md = run(tmp_path, plan(*MATCHING), capsys=capsys)
    assert code == 0, out
    assert "agree" in out and "blocked (1 mandatory, 2 advisory)" in out
    assert "agree" in md.splitlines()[0]


def test_stack_violation_without_urn_before_3_252_agrees(tmp_path: Path) -> None:
    """Before v3.252.0 (pulumi/pulumi#23692) a stack-level violation had no resourceUrn (omitempty)."""
    evts = events(BLOCKED.read_text())
    del evts[2]["policyEvent"]["resourceUrn"]
    assert run(tmp_path, plan(*MATCHING), lines(evts))[0] == 0


def test_a_violation_only_the_cli_found_disagrees(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, md = run(tmp_path, plan(*MATCHING[1:]), capsys=capsys)
    assert code == 1
    assert out.startswith("error: preflight and pulumi policy analyze disagree on stack dev")
    assert "preflight (" in out and "blocked" not in out.split("\n")[1]  # preflight passed
    only_cli = out.split("only pulumi policy analyze")[1]
    assert "mandatory" in only_cli and SCAN[0] in only_cli and SCAN[1] in only_cli
    assert "scan on push is off" in only_cli  # the message, without the policy description line
    assert "disagree" in md.splitlines()[0] and f"| `pulumi policy analyze` | mandatory | `{SCAN[0]}` |" in md


def test_a_different_level_lists_both_sides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preflight = plan((*SCAN, "advisory"), *MATCHING[1:])
    code, out, _ = run(tmp_path, preflight, capsys=capsys)
    assert code == 1
    only_preflight, only_cli = out.split("only pulumi policy analyze")
    assert "advisory" in only_preflight.split("only preflight")[1] and SCAN[0] in only_preflight
    assert "mandatory" in only_cli and SCAN[0] in only_cli


def test_counts_matter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(tmp_path, plan(*MATCHING, (*HTTPS, "advisory")), capsys=capsys)
    assert code == 1 and out.count(HTTPS[1]) == 1  # the one extra, only on preflight's side


def test_remediations_are_compared(tmp_path: Path) -> None:
    evts = events(BLOCKED.read_text())
    remediation = {
        "resourceUrn": SCAN[1],
        "color": "",
        "policyName": "required-tags",
        "policyPackName": "pouw-cicd",
        "policyPackVersion": "0.1.0",
        "policyPackVersionTag": "0.1.0",
    }
    evts.insert(0, {"sequence": 0, "timestamp": 1, "policyRemediationEvent": remediation})
    preflight = plan(*MATCHING)
    assert run(tmp_path / "a", preflight, lines(evts))[0] == 1
    preflight["remediations"] = [{"policy": "required-tags", "urn": SCAN[1]}]
    assert run(tmp_path / "b", preflight, lines(evts))[0] == 0


def test_remediate_level_counts_as_mandatory(tmp_path: Path) -> None:
    evts = events(BLOCKED.read_text())
    evts[0]["policyEvent"]["enforcementLevel"] = "remediate"
    assert run(tmp_path, plan(*MATCHING), lines(evts))[0] == 0


def test_passed_on_both_sides_agrees(tmp_path: Path) -> None:
    evts = events(BLOCKED.read_text())[1:]
    evts[-1]["summaryEvent"]["result"] = "succeeded"
    assert run(tmp_path, plan(*MATCHING[1:]), lines(evts), exit_code=0)[0] == 0


def _summary_only(result: str) -> str:
    evts = events(BLOCKED.read_text())[-1:]
    evts[0]["summaryEvent"]["result"] = result
    return lines(evts)


@pytest.mark.parametrize(
    ("preflight", "cli", "exit_code", "says"),
    [
        (None, "", 1, "did not finish an analysis (no summaryEvent)"),  # nothing on stdout
        (None, "".join(BLOCKED.read_text().splitlines(True)[:2]), 1, "no summaryEvent"),  # cut short
        (None, "error: could not open file\n", 1, "not an engine event"),  # stderr captured too
        (None, "[1, 2]\n", 1, "is a JSON object"),
        (None, _summary_only("failed"), 1, "failed with no mandatory violation"),
        (None, _summary_only("canceled"), 1, "not a verdict"),
        (None, None, 0, "exited 0 but its summaryEvent says `failed`"),
        ("{not json", None, 1, "not valid JSON"),
        ('{"stack": "dev"}', None, 1, "not a preflight plan"),
        ("failed", None, 1, "preflight reached no verdict (exit 2): the stack file is broken"),
    ],
)
def test_bad_input_exits_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    preflight: str | None,
    cli: str | None,
    exit_code: int,
    says: str,
) -> None:
    data: dict[str, Any] | str = plan(*MATCHING)
    if preflight == "failed":
        data = failure_plan("dev", "the stack file is broken", "pouw-cicd")
    elif preflight is not None:
        data = preflight
    code, out, md = run(tmp_path, data, cli, exit_code, capsys)
    assert code == 2
    assert out.startswith("error: ") and says in out and len(out.strip().splitlines()) == 1
    assert md.startswith("### Policy verdicts: not compared") and says in md


def test_unknown_level_is_bad_input(tmp_path: Path) -> None:
    evts = events(BLOCKED.read_text())
    evts[1]["policyEvent"]["enforcementLevel"] = "warning"
    assert run(tmp_path, plan(*MATCHING), lines(evts))[0] == 2


def test_missing_file_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = agree.main(["--preflight", str(tmp_path / "nope.json"), "--cli", str(BLOCKED)])
    assert code == 2 and "--preflight" in capsys.readouterr().out


def test_dispatched_by_python_m_preflight(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan(*copy.deepcopy(MATCHING))))
    done = subprocess.run(
        [sys.executable, "-m", "preflight", "agree", "--preflight", str(path), "--cli", str(BLOCKED)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("agree:")
