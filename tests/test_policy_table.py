"""The README's policy table is what the pack declares: regenerate it from GetAnalyzerInfo and compare."""

from __future__ import annotations

from google.protobuf import empty_pb2

from preflight.analyzer import PolicyPackProcess
from preflight.policy_table import END, START, exceptions, levels_of, render, splice
from tests.conftest import ROOT


def test_readme_policy_table_is_current(pack: PolicyPackProcess) -> None:
    info = pack.stub.GetAnalyzerInfo(empty_pb2.Empty())
    readme = (ROOT / "README.md").read_text()
    assert splice(readme, render(info, ROOT / "policies")) == readme, (
        "README.md's policy table is stale: run `python -m preflight policy-table --write`"
    )


def test_every_policy_declares_a_family_and_a_control(pack: PolicyPackProcess) -> None:
    for p in pack.stub.GetAnalyzerInfo(empty_pb2.Empty()).policies:
        tags = list(p.tags)
        assert sum(t.startswith("family:") for t in tags) == 1, p.name
        assert any(t.startswith("control:") for t in tags), p.name
        assert all(t.split(":", 1)[1].startswith(("CKV_", "CKV2_")) for t in tags if t.startswith("checkov:"))


def test_markers_are_required() -> None:
    try:
        splice("no markers here", "table")
    except Exception as err:  # noqa: BLE001
        assert START in str(err) and END in str(err)
    else:
        raise AssertionError("splice accepted a README without markers")


def test_every_exception_in_an_enforced_stack_says_why(pack: PolicyPackProcess) -> None:
    """A policy below mandatory in staging or prod carries its reason (`note`), shown once in the README."""
    info = pack.stub.GetAnalyzerInfo(empty_pb2.Empty())
    policies_dir = ROOT / "policies"
    found = exceptions(levels_of(info, policies_dir), policies_dir)
    assert found, "staging and prod set no policy below mandatory: drop this section"
    unexplained = {
        name: stacks for name, reasons in found.items() for note, stacks in reasons.items() if not note
    }
    assert not unexplained, f"no note says why these are below mandatory: {unexplained}"
    assert "ci-runner-image-digest" not in found  # runner and agent images are pinned by digest
