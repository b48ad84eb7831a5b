"""Reading stack files the way the CLI does: what it rejects, preflight rejects, naming file, line and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ruamel.yaml.constructor import DuplicateKeyError

from preflight.cli import main
from preflight.rollout import RolloutEditError, edit
from preflight.stackconfig import SECRET_PLACEHOLDER, StackConfigError, load_stack_config
from tests.conftest import PROJECT_ENTRIES, ROOT

PROD = (ROOT / "Pulumi.prod.yaml").read_text()


def line_of(text: str, needle: str, start: int = 1) -> int:
    """1-based number of the first line at or after `start` that contains `needle`."""
    lines = text.splitlines()
    return next(i for i, line in enumerate(lines[start - 1 :], start) if needle in line)


def problems(text: str, stack: str = "prod") -> list[str]:
    with pytest.raises(StackConfigError) as err:
        load_stack_config(ROOT, stack, text=text)
    return str(err.value).splitlines()


def project_with(tmp_path: Path, stack: str, text: str) -> Path:
    """A project dir sharing the real code, with a stack file of exactly this text (comments and all)."""
    for entry in PROJECT_ENTRIES:
        (tmp_path / entry).symlink_to(ROOT / entry)
    (tmp_path / f"Pulumi.{stack}.yaml").write_text(text)
    return tmp_path


def test_duplicate_key_in_a_service_names_file_line_and_path() -> None:
    text = PROD.replace(
        "      version: 1.4.2\n",
        "      version: 1.4.2\n      # released on Friday\n      version: 1.4.3\n",
        1,
    )
    line = line_of(text, "version: 1.4.3")
    assert problems(text) == [
        f"Pulumi.prod.yaml line {line}: duplicate key `version` under pouw-cicd:services[0] "
        f"(first at line {line - 2}); keep one"
    ]


def test_every_duplicate_is_reported_once_each() -> None:
    text = PROD.replace("  pouw-cicd:owner: platform-team\n", "  pouw-cicd:owner: a\n  pouw-cicd:owner: b\n")
    text = text.replace("pause: {duration: 1h}", "pause: {duration: 1h, duration: 2h}")
    text = text.replace("      replicas: {min: 4, max: 12}", "      replicas: {min: 4, max: 12, min: 3}")
    lines = problems(text)
    assert len(lines) == 3, lines
    assert lines[0].startswith(
        f"Pulumi.prod.yaml line {line_of(text, 'pouw-cicd:owner: b')}: duplicate key `pouw-cicd:owner` "
        "under config"
    )
    assert "duplicate key `min` under pouw-cicd:services[0].replicas (twice on this line)" in lines[1]
    assert "duplicate key `duration` under pouw-cicd:services[0].rollout.steps[1].pause" in lines[2]


def test_duplicate_top_level_key() -> None:
    text = PROD + "config:\n  aws:region: us-east-1\n"
    assert problems(text) == [
        f"Pulumi.prod.yaml line {line_of(text, 'config:', 3)}: duplicate key `config` at the top level "
        "(first at line 2); keep one"
    ]


# The line of the first service's `version:` in Pulumi.prod.yaml (1-based), wherever the file puts it.
WEB_VERSION_LINE = PROD.splitlines().index("      version: 1.4.2") + 1


def test_the_rollout_helper_rejects_the_same_duplicates() -> None:
    """ruamel (the helper) and preflight agree, as both agree with the CLI (yaml.v3)."""
    text = PROD.replace("      version: 1.4.2\n", "      version: 1.4.2\n      version: 1.4.3\n", 1)
    with pytest.raises((DuplicateKeyError, RolloutEditError), match=r"(?i)duplicate"):
        edit(text, "web", "set-weight", 50)
    with pytest.raises(StackConfigError):
        load_stack_config(ROOT, "prod", text=text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            PROD.replace("      version: 1.4.2\n", "      version: 1.4.2\n      version: 1.4.3\n", 1),
            f"Pulumi.prod.yaml line {WEB_VERSION_LINE + 1}: duplicate key `version` under "
            f"pouw-cicd:services[0] (first at line {WEB_VERSION_LINE}); keep one",
        ),
        (
            PROD.replace("config:\n", "confg:\n", 1),
            "Pulumi.prod.yaml line 2: unknown top-level key `confg` (did you mean `config`?)",
        ),
    ],
)
def test_stack_file_errors_exit_2_in_preflight(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    project = project_with(tmp_path, "prod", text)
    assert main(["--stack", "prod", "--project-dir", str(project)]) == 2
    assert expected in capsys.readouterr().out


def test_same_key_in_different_mappings_is_fine() -> None:
    config = load_stack_config(ROOT, "prod")
    assert json.loads(config.values["pouw-cicd:services"])[1]["version"] == "2.0.1"


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("confg", "config"),
        ("Config", "config"),
        ("secretprovider", "secretsprovider"),
        ("enviroment", "environment"),
    ],
)
def test_unknown_top_level_key_is_named_with_a_suggestion(typo: str, suggestion: str) -> None:
    text = PROD.replace("config:\n", f"{typo}:\n", 1) if typo.lower() == "config" else f"{typo}: x\n{PROD}"
    found = problems(text)
    assert len(found) == 1
    assert found[0].startswith(
        f"Pulumi.prod.yaml line {line_of(text, f'{typo}:')}: unknown top-level key `{typo}` "
        f"(did you mean `{suggestion}`?)"
    ), found


def test_known_top_level_keys_are_accepted() -> None:
    text = (
        "secretsprovider: passphrase\nencryptionsalt: v1:abc\nencryptedkey: ''\n"
        "environment: [pouw/prod]\n" + PROD
    )
    assert load_stack_config(ROOT, "prod", text=text).values["pouw-cicd:environment"] == "prod"


def test_nested_secure_value_marks_the_whole_key_secret_like_the_cli() -> None:
    """`pulumi config set --secret --path 'pouw-cicd:services[1].environment.DB'` writes a nested
    `secure:`; the CLI then lists the whole top-level key in PULUMI_CONFIG_SECRET_KEYS."""
    text = PROD.replace(
        "      environment: {LOG_LEVEL: info}", "      environment: {LOG_LEVEL: info, DB: {secure: v1:abc}}"
    )
    config = load_stack_config(ROOT, "prod", text=text)
    assert "pouw-cicd:services" in config.secret_keys
    services = json.loads(config.values["pouw-cicd:services"])
    assert services[1]["environment"]["DB"] == SECRET_PLACEHOLDER
    assert "v1:abc" not in config.values["pouw-cicd:services"]


def test_top_level_scalars_reach_the_program_as_written() -> None:
    """The CLI decodes a top-level config value into a string (yaml.v3 keeps the scalar's text):
    `1.10` stays "1.10" and `yes` stays "yes"; only values inside objects go through JSON."""
    text = PROD.replace(
        "  pouw-cicd:owner: platform-team\n", "  pouw-cicd:owner: 1.10\n  pouw-cicd:costCenter: yes\n"
    )
    text = text.replace("  pouw-cicd:costCenter: cc-1042\n", "")
    values = load_stack_config(ROOT, "prod", text=text).values
    assert (values["pouw-cicd:owner"], values["pouw-cicd:costCenter"]) == ("1.10", "yes")
