"""Settings: the stack files load, and every kind of bad input names its key path and the fix."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.settings import NAMESPACE, SettingsError, parse
from preflight.stackconfig import load_stack_config
from tests.conftest import ROOT, STACKS, run_config, stack_file


def namespace(stack: str) -> dict[str, Any]:
    """The `pouw-cicd:*` keys of a stack file, as the program sees them after decoding."""
    config = load_stack_config(ROOT, stack)
    out: dict[str, Any] = {}
    for key, value in config.values.items():
        if key.startswith(f"{NAMESPACE}:"):
            short = key.split(":", 1)[1]
            out[short] = json.loads(value) if value[:1] in "[{" else value
    return out


def secret_keys(stack: str) -> frozenset[str]:
    return frozenset(k.split(":", 1)[1] for k in load_stack_config(ROOT, stack).secret_keys)


@pytest.mark.parametrize("stack", STACKS)
def test_project_stacks_load(stack: str) -> None:
    settings_ = parse(namespace(stack), stack, secret_keys(stack))
    assert settings_.environment == stack
    assert settings_.services[0].name == "web"
    assert settings_.is_prod == (stack == "prod")


def bad(mutate: Any) -> list[str]:
    raw = copy.deepcopy(namespace("prod"))
    mutate(raw)
    with pytest.raises(SettingsError) as err:
        parse(raw, "prod", secret_keys("prod"))
    return err.value.problems


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda r: r["services"][0].update(port=70000),
            "pouw-cicd:services[0].port: must be 1..65535, got 70000",
        ),
        (
            lambda r: r["services"][1].update(version="latest"),
            "pouw-cicd:services[1].version: 'latest' is a mutable tag; set the release version",
        ),
        (
            lambda r: r["services"][0]["build"].update(platforms=["linux/amd65"]),
            "pouw-cicd:services[0].build.platforms: unknown platform 'linux/amd65'",
        ),
        (
            lambda r: r["services"][0].update(helthPath="/h"),
            "pouw-cicd:services[0].helthPath: unknown key; allowed keys here are azureSecureEnvironment, "
            "build,",
        ),
        (
            lambda r: r.update(enviroment="prod"),
            "pouw-cicd:enviroment: unknown key; known keys are aci, azure, ciRunners, cloudRun, costCenter,",
        ),
        (lambda r: r.pop("owner"), "pouw-cicd:owner: is required; add it to Pulumi.prod.yaml"),
        (
            lambda r: r.update(environment="production"),
            "pouw-cicd:environment: input should be 'dev', 'staging' or 'prod', got 'production'",
        ),
        (
            lambda r: r["services"][1].update(name="web"),
            "pouw-cicd:services: service name 'web' is used twice",
        ),
        (lambda r: r.update(services=[]), "pouw-cicd:services: needs at least one service"),
        (
            lambda r: r["registries"]["ecr"].update(keepTaggedImages=0),
            "pouw-cicd:registries.ecr.keepTaggedImages: must be 1..1000, got 0",
        ),
        (
            lambda r: r["services"][0]["build"]["secrets"].update(npm="npmToken"),
            "pouw-cicd:services[0].build.secrets.npm: config key pouw-cicd:npmToken is not set; "
            "run `pulumi config set --secret pouw-cicd:npmToken <value> -s prod`",
        ),
        (
            lambda r: r["services"][0].update(healthPath="health"),
            "pouw-cicd:services[0].healthPath: must be an absolute HTTP path",
        ),
    ],
)
def test_bad_input_names_key_and_fix(mutate: Any, expected: str) -> None:
    problems = bad(mutate)
    assert any(p.startswith(expected) for p in problems), problems


def test_secret_in_plain_text_is_refused() -> None:
    raw = namespace("prod")
    with pytest.raises(SettingsError) as err:
        parse(raw, "prod", secret_keys=frozenset())
    assert err.value.problems == [
        "pouw-cicd:services[0].build.secrets.pip_index_token: config key pouw-cicd:pipIndexToken is "
        "stored in plain text; re-set it with `pulumi config set --secret pouw-cicd:pipIndexToken "
        "<value> -s prod`",
        "pouw-cicd:services[1].azureSecureEnvironment.DATABASE_URL: config key "
        "pouw-cicd:workerDatabaseUrl is stored in plain text; re-set it with `pulumi config set "
        "--secret pouw-cicd:workerDatabaseUrl <value> -s prod`",
    ]


def test_all_problems_are_reported_at_once() -> None:
    def mutate(r: dict[str, Any]) -> None:
        r["services"][0]["port"] = 0
        r["services"][1]["version"] = "latest"
        r["costCentre"] = "x"

    assert len(bad(mutate)) == 3


# Values that are wrong for the key they land in; each must stop the program before any resource.
BAD_VALUES: dict[tuple[str, ...], st.SearchStrategy[Any]] = {
    ("services", "0", "port"): st.one_of(st.integers(max_value=0), st.integers(min_value=65536)),
    ("services", "0", "version"): st.sampled_from(["latest", "LATEST", "", "1.0 beta", "-x", "a/b"]),
    ("services", "0", "name"): st.from_regex(r"[A-Z_][A-Za-z_ ]{0,5}", fullmatch=True),
    ("services", "0", "build", "platforms"): st.lists(
        st.text(min_size=1, max_size=12).filter(lambda s: "/" not in s), min_size=1, max_size=2
    ),
    ("environment",): st.text(max_size=8).filter(lambda s: s.strip() not in ("dev", "staging", "prod")),
    ("registries", "ecr", "expireUntaggedAfterDays"): st.integers().filter(lambda n: not 1 <= n <= 365),
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_bad_configs_register_nothing(tmp_path_factory: Any, data: Any) -> None:
    path = data.draw(st.sampled_from(sorted(BAD_VALUES)))
    value = data.draw(BAD_VALUES[path])
    config = stack_file("dev")["config"]
    target: Any = config
    keys = [f"{NAMESPACE}:{path[0]}", *path[1:]]
    for key in keys[:-1]:
        target = target[int(key)] if isinstance(target, list) else target[key]
    target[keys[-1]] = value
    tmp: Path = tmp_path_factory.mktemp("bad")
    run = run_config(tmp, "dev", config)
    assert isinstance(run.error, SettingsError), run.error_text
    assert run.resources == []
    dotted = ".".join(path).replace(".0.", "[0].")
    assert f"{NAMESPACE}:{dotted}" in run.error_text


@settings(max_examples=30, deadline=None)
@given(
    port=st.integers(1, 65535),
    version=st.from_regex(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True),
)
def test_generated_good_values_parse(port: int, version: str) -> None:
    raw = namespace("dev")
    raw["services"][0].update(port=port, version=version)
    parsed = parse(raw, "dev", secret_keys("dev"))
    assert (parsed.services[0].port, parsed.services[0].version) == (port, version)
