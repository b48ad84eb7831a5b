"""`python -m delivery.release record`: the release record and the pack configs, edited together.

The pack's `image-release-recorded` reads the digests from its config, never from releases.yaml (the
pack imports no program file): these tests prove the two agree, that `record` keeps them agreeing, and
that the gate refuses a digest the pack config does not carry (what the CLI path enforces too).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from components.releases import RECORD_FILE, parse_record
from delivery.release import PACK_CONFIGS, RECORD_POLICY, main
from preflight.cli import main as preflight_main
from tests.conftest import ROOT, STACKS, project_copy, released, stack_file

DIGEST = "sha256:" + "c" * 64


def recorded_in_pack(config_dir: Path, stack: str) -> dict[str, dict[str, str]]:
    data = json.loads((config_dir / f"{stack}.json").read_text())
    found: dict[str, dict[str, str]] = data[RECORD_POLICY]["recorded"]
    return found


def record_digests(path: Path) -> dict[str, dict[str, str]]:
    record = parse_record(path.read_text(), RECORD_FILE)
    return {s: {v: i.digest for v, i in vs.items()} for s, vs in record.services.items()}


@pytest.mark.parametrize("stack", STACKS)
def test_every_pack_config_carries_the_record(stack: str) -> None:
    assert recorded_in_pack(ROOT / PACK_CONFIGS, stack) == record_digests(ROOT / RECORD_FILE)


def test_staging_and_prod_enforce_it() -> None:
    for stack in ("staging", "prod"):
        config = json.loads((ROOT / PACK_CONFIGS / f"{stack}.json").read_text())
        assert config["all"] == "mandatory"
        assert "enforcementLevel" not in config[RECORD_POLICY]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "policies").mkdir()
    shutil.copytree(ROOT / PACK_CONFIGS, tmp_path / PACK_CONFIGS)
    shutil.copy(ROOT / RECORD_FILE, tmp_path / RECORD_FILE)
    return tmp_path


def record(project: Path, *extra: str, version: str = "1.5.0", digest: str = DIGEST) -> int:
    argv = ["record", "--service", "web", "--version", version, "--digest", digest]
    return main([*argv, "--repository", "ghcr.io/pouw/web", *extra], project)


def test_record_adds_one_entry_round_trip_and_updates_every_pack_config(project: Path) -> None:
    before = (project / RECORD_FILE).read_text()
    assert record(project) == 0
    after = (project / RECORD_FILE).read_text()
    added = [line for line in after.splitlines() if line not in before.splitlines()]
    assert added == [f'    "1.5.0": {{repository: ghcr.io/pouw/web, digest: "{DIGEST}"}}']
    assert [line for line in before.splitlines() if line not in after.splitlines()] == []  # comments kept
    digests = record_digests(project / RECORD_FILE)
    assert digests["web"]["1.5.0"] == DIGEST
    for stack in STACKS:
        assert recorded_in_pack(project / PACK_CONFIGS, stack) == digests
        config = json.loads((project / PACK_CONFIGS / f"{stack}.json").read_text())
        original = json.loads((ROOT / PACK_CONFIGS / f"{stack}.json").read_text())
        assert {k: v for k, v in config.items() if k != RECORD_POLICY} == {
            k: v for k, v in original.items() if k != RECORD_POLICY
        }


def test_record_is_idempotent_and_never_rewrites_a_version(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert record(project) == 0
    text = (project / RECORD_FILE).read_text()
    assert record(project) == 0  # the same digest again (a re-run release): nothing to do
    assert (project / RECORD_FILE).read_text() == text
    capsys.readouterr()
    assert record(project, digest="sha256:" + "d" * 64) == 2
    err = capsys.readouterr().err
    assert "web 1.5.0 is already recorded as ghcr.io/pouw/web@sha256:ccc" in err and "never rebuilt" in err
    assert (project / RECORD_FILE).read_text() == text


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"digest": "sha256:abc"}, "--digest 'sha256:abc' is not sha256:<64 lowercase hex>"),
        ({"version": "latest"}, "'latest' is not a semantic version"),
    ],
)
def test_record_refuses_bad_input(
    project: Path, capsys: pytest.CaptureFixture[str], args: dict[str, str], problem: str
) -> None:
    text = (project / RECORD_FILE).read_text()
    assert record(project, **args) == 2
    assert problem in capsys.readouterr().err
    assert (project / RECORD_FILE).read_text() == text


def test_dry_run_writes_nothing(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (project / RECORD_FILE).read_text()
    assert record(project, "--dry-run") == 0
    assert (project / RECORD_FILE).read_text() == text
    assert f'+    "1.5.0": {{repository: ghcr.io/pouw/web, digest: "{DIGEST}"}}' in capsys.readouterr().out


def test_the_gate_refuses_a_digest_the_pack_config_does_not_carry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record the pack config was not updated with (a hand edit of releases.yaml): prod's gate fails."""
    config = stack_file("prod")["config"]
    changed = released(config)
    changed["services"]["web"]["1.4.2"]["digest"] = DIGEST
    project = project_copy(tmp_path, "prod", config, changed)
    code = preflight_main(["--stack", "prod", "--project-dir", str(project)])
    out = capsys.readouterr().out
    assert code == 1
    assert "image-release-recorded" in out and "mandatory" in out
