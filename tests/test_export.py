"""`python -m preflight --export`: the plan as a `pulumi stack export` document for `--file` analysis.

The document is validated against the deployment schema Pulumi publishes, vendored byte for byte in
tests/data/pulumi-deployment-schema/ from pulumi/pulumi `sdk/go/common/apitype/{deployments,resources,
property-values}.json` at tag v3.249.0, commit 825b24b636370373f66f398b4ddda61bf0d11efe (see
tests/data/README.md). With no Pulumi CLI here, `tests/fixtures/policy_analyze.py` plays
`pulumi policy analyze --file --json` from its Go source, on the real pack, so the last tests check that
the CLI would reach preflight's verdict on the export (what CI then checks with the real CLI).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from preflight import agree
from preflight.cli import main, run_preflight
from preflight.engine import SECRET_SIG, SIG_KEY, UNKNOWN_OUTPUT, ProgramRun, Registration
from preflight.export import (
    COMPUTED,
    REDACTED_CIPHERTEXT,
    SECRETS_PROVIDER,
    export_deployment,
    export_preflight,
)
from preflight.report import UNKNOWN_SENTINELS, Preflight, plan_json
from preflight.stackconfig import SECRET_PLACEHOLDER
from tests.conftest import ROOT, STACKS, project_copy, stack_file
from tests.fixtures.policy_analyze import policy_analyze_json

SCHEMAS = Path(__file__).parent / "data" / "pulumi-deployment-schema"
TIME = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
IMAGE = "docker-build:index:Image"
# Values that are secret in the stack files or the program (secure config, the ECR login token).
SECRET_VALUES = (SECRET_PLACEHOLDER, "preflight-placeholder-token")


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schemas = [
        json.loads((SCHEMAS / f"{name}.json").read_text())
        for name in ("deployments", "resources", "property-values")
    ]
    registry: Registry[Any] = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in schemas
    )
    return Draft202012Validator(schemas[0], registry=registry, format_checker=FormatChecker())


@pytest.fixture(scope="module")
def exports(stack_runs: dict[str, Preflight]) -> dict[str, dict[str, Any]]:
    return {stack: export_preflight(stack_runs[stack], TIME).document for stack in STACKS}


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk(v, f"{path}[{i}]")


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


def resources(document: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = document["deployment"]["resources"]
    return found


@pytest.mark.parametrize("stack", STACKS)
def test_export_is_a_valid_deployment(
    validator: Draft202012Validator, exports: dict[str, dict[str, Any]], stack: str
) -> None:
    document = exports[stack]
    errors = [f"{list(e.absolute_path)}: {e.message[:300]}" for e in validator.iter_errors(document)]
    assert errors == []
    assert document["version"] == 3 and "features" not in document  # v3: no feature the CLI must know


def test_the_schema_check_catches_what_the_cli_would_not_read(
    validator: Draft202012Validator, exports: dict[str, dict[str, Any]]
) -> None:
    """The vendored schemas resolve each other: a broken resource or property value is rejected."""
    good = exports["dev"]
    mutations = {
        "an unknown resource field": lambda d: resources(d)[1].update(ignoreChanges=["x"]),
        "a secret with plaintext and ciphertext": lambda d: resources(d)[1].update(
            inputs={"x": {SIG_KEY: SECRET_SIG, "ciphertext": "c", "plaintext": '"p"'}}
        ),
        "a resource without its URN": lambda d: resources(d)[1].pop("urn"),
        "no manifest": lambda d: d["deployment"].pop("manifest"),
    }
    for what, mutate in mutations.items():
        bad = json.loads(json.dumps(good))
        mutate(bad)
        assert not validator.is_valid(bad), what


@pytest.mark.parametrize("stack", STACKS)
def test_secrets_are_only_in_secret_form(
    stack_runs: dict[str, Preflight], exports: dict[str, dict[str, Any]], stack: str
) -> None:
    document = exports[stack]
    text = json.dumps(document)
    config = stack_runs[stack].config
    assert config.secret_keys, "every stack has secure config values"
    for key in config.secret_keys:
        assert config.values[key] not in text, key
    for value in SECRET_VALUES:
        assert value not in text
    assert '"plaintext"' not in text
    secrets = [v for _, v in walk(document) if is_secret(v)]
    assert secrets and all(s == {SIG_KEY: SECRET_SIG, "ciphertext": REDACTED_CIPHERTEXT} for s in secrets)
    # A provider type the CLI does not know: it redacts the secrets to "[secret]" instead of asking for
    # a passphrase or a login (pkg/backend/secrets/providers.go).
    assert document["deployment"]["secrets_providers"]["type"] == SECRETS_PROVIDER
    assert SECRETS_PROVIDER not in ("passphrase", "service", "cloud")
    # Every value the program sent as a secret is a secret in the export, at the same place.
    exported = {r["urn"]: r for r in resources(document)}
    for r in stack_runs[stack].run.resources:
        inputs = dict(walk(exported[r.urn].get("inputs", {})))
        for path, value in walk(r.inputs):
            if is_secret(value):
                assert is_secret(inputs[path]), (r.urn, path)


def test_known_secrets_of_the_prod_plan(exports: dict[str, dict[str, Any]]) -> None:
    by_name = {(r["type"], r["urn"].rsplit("::", 1)[-1]): r for r in resources(exports["prod"])}
    copy = by_name[("docker-build:index:Index", "web-1.4.2-release-copy-ecr")]
    assert is_secret(copy["inputs"]["registry"]["password"])  # the ECR login of the release's copy
    assert not is_secret(copy["inputs"]["registry"]["address"])
    by_name = {(r["type"], r["urn"].rsplit("::", 1)[-1]): r for r in resources(exports["dev"])}
    web = by_name[(IMAGE, "web")]  # dev builds its unreleased version
    assert is_secret(web["inputs"]["secrets"])  # BuildKit secrets: the pip index token
    assert is_secret(web["inputs"]["registries"][0]["password"])  # the ECR login
    assert not is_secret(web["inputs"]["registries"][0]["address"])


@pytest.mark.parametrize("stack", STACKS)
def test_references_name_resources_in_the_document(exports: dict[str, dict[str, Any]], stack: str) -> None:
    found = resources(exports[stack])
    by_urn = {r["urn"]: r for r in found}
    assert len(by_urn) == len(found)
    root = found[0]
    assert root["type"] == "pulumi:pulumi:Stack" and "parent" not in root
    assert root["urn"] == f"urn:pulumi:{stack}::pouw-cicd::pulumi:pulumi:Stack::pouw-cicd-{stack}"
    providers = 0
    for r in found[1:]:
        assert r["parent"] in by_urn, r["urn"]
        assert all(d in by_urn for d in r.get("dependencies", [])), r["urn"]
        assert all(u in by_urn for us in r.get("propertyDependencies", {}).values() for u in us), r["urn"]
        assert all(a.startswith("urn:pulumi:") for a in r.get("aliases", [])), r["urn"]
        if "provider" in r:  # `<provider urn>::<provider id>`, as the engine writes a reference
            urn, id_ = r["provider"].rsplit("::", 1)
            assert by_urn[urn]["type"].startswith("pulumi:providers:") and by_urn[urn]["id"] == id_
            providers += 1
    assert providers, "the Kubernetes resources use the cluster's explicit provider"


@pytest.mark.parametrize("stack", STACKS)
def test_resources_mirror_the_plan(
    stack_runs: dict[str, Preflight], exports: dict[str, dict[str, Any]], stack: str
) -> None:
    run = stack_runs[stack].run
    found = resources(exports[stack])
    assert [r["urn"] for r in found[1:]] == [r.urn for r in run.resources]  # registration order
    for r, e in zip(run.resources, found[1:], strict=True):
        assert (e["type"], e["custom"], e.get("protect", False)) == (r.type, r.custom, r.protect)
        assert ("id" in e) == r.custom
        assert e.get("dependencies", []) == sorted(set(r.dependencies))
    assert any(e.get("protect") for e in found) == (stack == "prod")


@pytest.mark.parametrize("stack", STACKS)
def test_unknowns_are_the_state_files_placeholder(exports: dict[str, dict[str, Any]], stack: str) -> None:
    text = json.dumps(exports[stack])
    assert all(s not in text for s in UNKNOWN_SENTINELS - {COMPUTED}) and UNKNOWN_OUTPUT not in text
    if stack == "dev":  # the EKS service's URL is known only once the load balancer exists
        assert resources(exports[stack])[0]["outputs"]["web"]["eks"]["url"] == COMPUTED


def test_a_secret_let_out_in_clear_is_still_written_as_a_secret() -> None:
    token = "hunter2-long-enough"
    secret = {SIG_KEY: SECRET_SIG, "value": token}
    run = ProgramRun(
        stack="s",
        project="p",
        resources=[
            Registration(
                urn="urn:pulumi:s::p::t:index:R::r",
                type="t:index:R",
                name="r",
                inputs={"password": secret, "url": f"https://ci:{token}@example.com", "user": "ci"},
                outputs={"password": secret, "key": "k-" + SECRET_PLACEHOLDER, "arn": "arn:x"},
                additional_secret_outputs=["arn"],
                id="r-id",
            )
        ],
        outputs={"db": {"url": "[secret]", "host": "db"}, "pending": UNKNOWN_OUTPUT},
        secret_outputs=["db.url"],
    )
    export = export_deployment(run, [SECRET_PLACEHOLDER], TIME)
    text = export.json()
    assert token not in text and SECRET_PLACEHOLDER not in text
    r = resources(export.document)[1]
    assert is_secret(r["inputs"]["url"]) and r["inputs"]["user"] == "ci"
    assert is_secret(r["outputs"]["key"]) and is_secret(r["outputs"]["arn"])
    assert export.redacted == [
        "urn:pulumi:s::p::t:index:R::r inputs.url",
        "urn:pulumi:s::p::t:index:R::r outputs.key",
    ]
    root = resources(export.document)[0]["outputs"]
    assert is_secret(root["db"]["url"]) and root["db"]["host"] == "db" and root["pending"] == COMPUTED


def test_cli_writes_the_export_when_the_program_ran(
    tmp_path: Path, validator: Draft202012Validator, exports: dict[str, dict[str, Any]]
) -> None:
    path = tmp_path / "state.json"
    assert main(["--stack", "dev", "--export", str(path)]) == 0
    written = json.loads(path.read_text())
    assert validator.is_valid(written)
    # The same resources; their order is the registration order, which can vary between two runs.
    assert sorted(resources(written), key=lambda r: r["urn"]) == sorted(
        resources(exports["dev"]), key=lambda r: r["urn"]
    )


def test_cli_removes_a_stale_export_when_the_program_did_not_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = stack_file("dev")["config"]
    broken = project_copy(tmp_path / "settings", "dev", config)
    (broken / "Pulumi.dev.yaml").write_text("config: [unclosed\n")  # fails before the program runs
    failing = project_copy(tmp_path / "program", "dev", config)
    (failing / "__main__.py").unlink()
    (failing / "__main__.py").write_text("raise RuntimeError('boom in program')\n")  # runs, fails
    for project in (broken, failing):
        path, plan = project / "state.json", project / "plan.json"
        path.write_text("an earlier run's export")
        argv = ["--stack", "dev", "--project-dir", str(project), "--export", str(path), "--json", str(plan)]
        assert main(argv) == 2
        assert not path.exists() and json.loads(plan.read_text())["exitCode"] == 2
    assert main(["--stack", "dev", "--export", str(tmp_path / "no" / "state.json")]) == 2
    assert "--export" in capsys.readouterr().out.splitlines()[-1]


def _agree(tmp_path: Path, result: Preflight, config: Path) -> tuple[int, int, str]:
    """Preflight's verdict and the CLI's (played from its source) on the export, compared."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    plan, state, cli = tmp_path / "plan.json", tmp_path / "state.json", tmp_path / "analyze.json"
    plan.write_text(plan_json(result))
    state.write_text(export_preflight(result).json())
    out, status = policy_analyze_json(state, ROOT / "policies", config)
    cli.write_text(out)
    code = agree.main(["--preflight", str(plan), "--cli", str(cli), "--cli-exit-code", str(status)])
    return code, status, out


@pytest.mark.parametrize("stack", STACKS)
def test_the_cli_reaches_preflights_verdict_on_the_export(
    tmp_path: Path, stack_runs: dict[str, Preflight], stack: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = stack_runs[stack]
    code, status, _ = _agree(tmp_path, result, ROOT / "policies" / "config" / f"{stack}.json")
    assert code == 0, capsys.readouterr().out
    assert status == result.exit_code


def test_blocked_verdicts_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every policy mandatory on dev: preflight blocks, and so would the CLI, on the same findings."""
    config = tmp_path / "all-mandatory.json"
    config.write_text(json.dumps({"all": "mandatory"}))
    result = run_preflight("dev", policy_config=config)
    assert result.exit_code == 1 and result.analysis is not None and len(result.analysis.mandatory) >= 3
    code, status, out = _agree(tmp_path / "run", result, config)
    assert code == 0, capsys.readouterr().out
    assert status == 1 and '"result":"failed"' in out
