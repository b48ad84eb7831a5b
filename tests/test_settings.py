"""Settings: the stack files load, and every kind of bad input names its key path and the fix."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.settings import NAMESPACE, PROVIDER_NAMESPACES, SettingsError, parse
from preflight.stackconfig import SECRET_PLACEHOLDER, load_stack_config
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


def others(stack: str) -> dict[str, str]:
    """The stack's keys outside the project namespace (aws:region, ...), full names."""
    return {
        k: v for k, v in load_stack_config(ROOT, stack).values.items() if not k.startswith(f"{NAMESPACE}:")
    }


@pytest.mark.parametrize("stack", STACKS)
def test_project_stacks_load(stack: str) -> None:
    settings_ = parse(namespace(stack), stack, secret_keys(stack), others(stack))
    assert settings_.environment == stack
    assert settings_.services[0].name == "web"
    assert settings_.is_prod == (stack == "prod")


def bad(mutate: Any, secret: frozenset[str] = frozenset(), other: dict[str, str] | None = None) -> list[str]:
    raw = copy.deepcopy(namespace("prod"))
    mutate(raw)
    with pytest.raises(SettingsError) as err:
        parse(raw, "prod", secret_keys("prod") | secret, others("prod") if other is None else other)
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
            "pouw-cicd:services[0].helthPath: unknown key (did you mean healthPath?); allowed keys here are "
            "azureSecureEnvironment, build,",
        ),
        (
            lambda r: r.update(enviroment="prod"),
            "pouw-cicd:enviroment: unknown key (did you mean environment?); known keys are aci, admission, "
            "aks, azure, ciRunners, cloudRun, costCenter,",
        ),
        (lambda r: r.pop("owner"), "pouw-cicd:owner: is required; add it to Pulumi.prod.yaml"),
        (
            lambda r: r.update(environment="production"),
            "pouw-cicd:environment: must be one of dev, staging, prod, got 'production' (did you mean prod?)",
        ),
        (
            lambda r: r["services"][1].update(name="web"),
            "pouw-cicd:services: service name 'web' is used twice",
        ),
        (lambda r: r.update(services=[]), "pouw-cicd:services: needs at least one service"),
        (
            # Outside dev the ACR is network-restricted by default, which Azure allows on Premium only.
            lambda r: r["registries"]["acr"].update(sku="Standard", untaggedRetentionDays=None),
            "pouw-cicd:registries.acr.sku: Standard cannot restrict network access (networkAccess is "
            "selectedNetworks by default in prod): ACR firewall rules and disabled public access are "
            "Premium features that Azure refuses on Basic and Standard; set sku: Premium",
        ),
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
        parse(raw, "prod", secret_keys=frozenset(), other_config=others("prod"))
    assert err.value.problems == [
        "pouw-cicd:services[0].build.secrets.pip_index_token: config key pouw-cicd:pipIndexToken is "
        "stored in plain text; re-set it with `pulumi config set --secret pouw-cicd:pipIndexToken "
        "<value> -s prod`",
        *(
            f"pouw-cicd:ciRunners.arc.{field}: config key pouw-cicd:{key} is stored in plain text; "
            f"re-set it with `pulumi config set --secret pouw-cicd:{key} <value> -s prod`"
            for field, key in (
                ("appIdKey", "arcAppId"),
                ("installationIdKey", "arcInstallationId"),
                ("privateKeyKey", "arcPrivateKey"),
            )
        ),
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
    parsed = parse(raw, "dev", secret_keys("dev"), others("dev"))
    assert (parsed.services[0].port, parsed.services[0].version) == (port, version)


# --- Messages in the user's words: YAML and config terms, never Python or pydantic ones. ---


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda r: r["services"][0].update(targets="eks"),
            "pouw-cicd:services[0].targets: must be a list, got 'eks'",
        ),
        (
            lambda r: r["services"][0].update(replicas=3),
            "pouw-cicd:services[0].replicas: must be a mapping of key: value (keys: max, min), got 3",
        ),
        (
            lambda r: r["services"][0]["build"].update(args=["PYTHON_VERSION=3.12"]),
            "pouw-cicd:services[0].build.args: must be a mapping of key: value, got a list",
        ),
        (
            lambda r: r["services"][1]["fargate"].update(cpu=300),
            "pouw-cicd:services[1].fargate.cpu: must be one of 256, 512, 1024, 2048, 4096, got 300",
        ),
        (
            lambda r: r["services"][0].update(targets=["eks", "cloudrn"]),
            "pouw-cicd:services[0].targets[1]: must be one of eks, ecs, aci, cloudrun, gke, aks, got "
            "'cloudrn' "
            "(did you mean cloudrun?)",
        ),
        (
            lambda r: r["services"][0].update(version=1.1),
            "pouw-cicd:services[0].version: 1.1 is a number in YAML (did you write 1.10?); "
            'quote it: version: "1.10"',
        ),
        (
            lambda r: r["services"][0].update(version=2),
            'pouw-cicd:services[0].version: 2 is a number in YAML; quote it: version: "2"',
        ),
        (
            lambda r: r["eks"].update(kubernetesVersion=1.3),
            "pouw-cicd:eks.kubernetesVersion: 1.3 is a number in YAML (did you write 1.30?); quote it: "
            'kubernetesVersion: "1.30"',
        ),
        (
            lambda r: r["services"][0]["build"]["args"].update(PYTHON_VERSION=3.1),
            "pouw-cicd:services[0].build.args.PYTHON_VERSION: 3.1 is a number in YAML (did you write 3.10?); "
            'quote it: PYTHON_VERSION: "3.10"',
        ),
        (
            lambda r: r["registries"]["ecr"].update(pullAccounts=[210987654321]),
            "pouw-cicd:registries.ecr.pullAccounts[0]: 210987654321 is a number in YAML; "
            'quote it: "210987654321"',
        ),
        (
            lambda r: r["services"][1]["environment"].update(DEBUG=True),
            'pouw-cicd:services[1].environment.DEBUG: true is a boolean in YAML; quote it: DEBUG: "true"',
        ),
        (
            lambda r: r["services"][0].update(port="http"),
            "pouw-cicd:services[0].port: must be a whole number, got 'http'",
        ),
        (
            lambda r: r["registries"]["ecr"].update(scanOnPush="maybe"),
            "pouw-cicd:registries.ecr.scanOnPush: must be true or false, got 'maybe'",
        ),
        (
            lambda r: r["network"].update(availabilityZones=["eu-west-1a"]),
            "pouw-cicd:network.availabilityZones: needs at least 2 entries, got 1",
        ),
        (
            lambda r: r["services"][0]["resources"].update(cpu="lots"),
            "pouw-cicd:services[0].resources.cpu: must be a CPU quantity such as 250m or 1, got 'lots'",
        ),
        (
            lambda r: r["services"][0]["rollout"]["steps"].__setitem__(2, {"setWeight": 5}),
            "pouw-cicd:services[0].rollout.steps[2].setWeight: 5 goes down from setWeight 10 (steps[0]); "
            "steps only go up (a rollback sets slots.canary.weight, not a step)",
        ),
        (
            lambda r: r["services"][0]["rollout"]["steps"].pop(),
            "pouw-cicd:services[0].rollout.steps[2].setWeight: the steps must end at setWeight: 100 (full "
            "promotion), the last is 50; add `- setWeight: 100`",
        ),
        (
            lambda r: r["services"][0]["rollout"]["steps"].append({"setWeight": 100, "pause": {}}),
            "pouw-cicd:services[0].rollout.steps[5]: a step is either {setWeight: N} or {pause: {...}}",
        ),
        # A key of another strategy: the key path (never the union's tag) and what to do instead.
        (
            lambda r: r["services"][0]["rollout"].update(activeSlot="blue"),
            "pouw-cicd:services[0].rollout.activeSlot: is for blue-green; a canary routes by slot weights",
        ),
        (
            lambda r: r["services"][1]["rollout"].update(steps=[{"setWeight": 100}]),
            "pouw-cicd:services[1].rollout.steps: steps are for canary; blue-green promotes by switching "
            "activeSlot",
        ),
        (
            lambda r: r["services"][0]["rollout"].update(strategy="rolling"),
            "pouw-cicd:services[0].rollout.strategy: rolling runs one slot; remove slots, activeSlot and "
            "steps",
        ),
        (
            lambda r: r["services"][1]["rollout"]["slots"]["green"].update(weight=0),
            "pouw-cicd:services[1].rollout.slots: blue-green slots take no weight: the active slot gets 100; "
            "set activeSlot",
        ),
        (
            lambda r: r["services"][0]["rollout"].update(strategy="blue_green"),
            "pouw-cicd:services[0].rollout.strategy: must be one of rolling, recreate, blue-green, canary, "
            "got 'blue_green' (did you mean blue-green?)",
        ),
        (
            lambda r: r["services"][0]["rollout"]["slots"]["canary"].update(version="latest"),
            "pouw-cicd:services[0].rollout.slots.canary.version: 'latest' is a mutable tag; set the release "
            "version, e.g. 1.4.2",
        ),
        # ...and a typo inside a strategy's model gets that model's keys.
        (
            lambda r: r["services"][0]["rollout"].update(stpes=[]),
            "pouw-cicd:services[0].rollout.stpes: unknown key (did you mean steps?); allowed keys here are "
            "aborted, analysis, headerRoute, slots, steps, strategy",
        ),
        (
            lambda r: r["services"][0]["rollout"]["slots"]["canary"].update(weight="ten"),
            "pouw-cicd:services[0].rollout.slots.canary.weight: must be a whole number, got 'ten'",
        ),
    ],
)
def test_messages_use_the_users_words(mutate: Any, expected: str) -> None:
    problems = bad(mutate)
    assert expected in problems, problems


WEB = "pouw-cicd:services[0].rollout.analysis"
WORKER = "pouw-cicd:services[1].rollout.analysis"


def analysis(**changes: Any) -> dict[str, Any]:
    """A valid analysis block (Argo's vocabulary, typed metrics), with `changes`."""
    return {
        "interval": "1m",
        "failureLimit": 2,
        "metrics": [{"name": "errors", "errorRate": {"max": 0.01}}],
        **changes,
    }


def with_analysis(service: int, **changes: Any) -> Any:
    return lambda r: r["services"][service]["rollout"].update(analysis=analysis(**changes))


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            with_analysis(0, metrics=[]),
            WEB + ".metrics: needs at least one metric, e.g. - {name: errors, errorRate: {max: 0.01}}",
        ),
        (
            with_analysis(0, metrics=[{"name": "errors", "errorRate": {"max": 1.5}}]),
            WEB + ".metrics[0].errorRate.max: must be 0..1, got 1.5",
        ),
        (
            with_analysis(
                0, metrics=[{"name": "errors", "errorRate": {"max": 0.01}, "latencyP99": {"maxMs": 500}}]
            ),
            WEB + ".metrics[0]: a metric measures one thing (this one sets "
            "errorRate and latencyP99): set one of errorRate: {max: 0.01}, successRate: {min: 0.99}, "
            "latencyP99: {maxMs: 500} or prometheus: {address, query, max}",
        ),
        (
            with_analysis(0, interval="5 minutes"),
            WEB + ".interval: must be a duration like 30s, 1m or 5m",
        ),
        (
            with_analysis(0, failureLimit=-1),
            WEB + ".failureLimit: must be 0..10000, got -1",
        ),
        (
            with_analysis(
                0,
                metrics=[
                    {"name": "errors", "errorRate": {"max": 0.01}},
                    {"name": "errors", "successRate": {"min": 0.9}},
                ],
            ),
            WEB + ".metrics[1].name: 'errors' is also metrics[0]'s name; give each metric its own",
        ),
        (
            lambda r: r["services"][0]["rollout"].update(analysis={**analysis(), "failureLimt": 2}),
            WEB + ".failureLimt: unknown key (did you mean failureLimit?); allowed keys here are "
            "consecutiveErrorLimit, count, failureLimit, inconclusiveLimit, interval, metrics",
        ),
        (
            with_analysis(
                0,
                metrics=[
                    {
                        "name": "p",
                        "prometheus": {"address": "http://p:9090", "query": "x{{args.s}}", "max": 1},
                    }
                ],
            ),
            WEB + ".metrics[0].prometheus.query: names {{args.s}}, which nothing "
            "fills in; a query may name {{service}}, {{version}}, {{interval}}",
        ),
        (
            with_analysis(
                0, metrics=[{"name": "p", "prometheus": {"address": "http://p:9090", "query": "up"}}]
            ),
            WEB + ".metrics[0].prometheus: needs max or min (or both): the bound the query's value must keep",
        ),
        (
            with_analysis(0, metrics=[{"name": "latency", "latencyP99": {"maxMs": "fast"}}]),
            WEB + ".metrics[0].latencyP99.maxMs: must be a number, got 'fast'",
        ),
        (
            with_analysis(1),  # prod's worker is blue-green: measured after the switch, `count` times
            WORKER + ".count: is required for blue-green: how many intervals the "
            "new active slot is measured after the switch, e.g. count: 5",
        ),
    ],
)
def test_analysis_errors_name_the_key_and_the_fix(mutate: Any, expected: str) -> None:
    problems = bad(mutate)
    assert problems == [expected]


def test_an_analysis_block_parses() -> None:
    raw = copy.deepcopy(namespace("prod"))
    raw["services"][0]["rollout"]["analysis"] = analysis(
        metrics=[
            {"name": "errors", "errorRate": {"max": 0.01}},
            {"name": "latency", "latencyP99": {"maxMs": 500}},
            {"name": "success", "successRate": {"min": 0.99}},
        ]
    )
    raw["services"][1]["rollout"]["analysis"] = analysis(count=5)
    parsed = parse(raw, "prod", secret_keys("prod"), others("prod"))
    web = parsed.services[0].rollout.analysis  # type: ignore[union-attr]
    assert web is not None and [m.kind for m in web.metrics] == ["errorRate", "latencyP99", "successRate"]
    assert (web.interval_seconds, web.failure_limit, web.inconclusive_limit, web.consecutive_error_limit) == (
        60,
        2,
        0,
        4,
    )  # Argo's defaults: no inconclusive measurement tolerated, 4 errors in a row


JARGON = re.compile(
    r"tuple|dictionary|instance of|[Ii]nput should|Settings\\b|[A-Z][a-z]+Settings|pydantic|validation error|"
    r"Value error|type=|NoneType|\\bdict\\b|\\bstr\\b|\\bint\\b"
)


def leaf_paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [at] + [p for k, v in value.items() for p in leaf_paths(v, (*at, k))]
    if isinstance(value, list):
        return [at] + [p for i, v in enumerate(value) for p in leaf_paths(v, (*at, i))]
    return [at]


PROD_PATHS = [p for p in leaf_paths(namespace("prod")) if p]
WRONG = st.one_of(
    st.integers(-5, 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
    st.none(),
    st.text(alphabet="abcxyz-_./", max_size=6),
    st.lists(st.integers(0, 9), max_size=2),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 3), max_size=2),
)


@settings(max_examples=150, deadline=None)
@given(path=st.sampled_from(PROD_PATHS), value=WRONG)
def test_no_message_speaks_python(path: tuple[Any, ...], value: Any) -> None:
    raw = copy.deepcopy(namespace("prod"))
    target: Any = raw
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    try:
        parse(raw, "prod", secret_keys("prod"), others("prod"))
    except SettingsError as err:
        for problem in err.problems:
            assert "\n" not in problem
            assert problem.startswith(("pouw-cicd:", "aws:region:")), problem
            assert not JARGON.search(problem), problem


# --- Namespaces: a key in a namespace nobody reads is a typo, not a no-op. ---


def test_misspelt_namespace_stops_the_program(tmp_path: Path) -> None:
    config = stack_file("dev")["config"]
    config["pouw-cicdd:owner"] = "someone-else"
    run = run_config(tmp_path, "dev", config)
    assert isinstance(run.error, SettingsError), run.error_text
    assert run.resources == []
    assert run.error.problems == [
        "pouw-cicdd:owner: unknown namespace `pouw-cicdd` (did you mean pouw-cicd:owner?); this program "
        "reads pouw-cicd, pulumi and its providers' aws, azure-native, docker, docker-build, gcp, "
        "kubernetes. Fix the spelling or remove it with `pulumi config rm pouw-cicdd:owner -s dev`"
    ]


@pytest.mark.parametrize(
    "key",
    [
        "aws:profile",
        "aws:config:skipCredentialsValidation",
        "azure-native:location",
        "gcp:project",
        "kubernetes:enableServerSideApply",
        "docker:host",
        "docker-build:registries",
        "pulumi:disable-default-providers",
        "pulumi:tags",
    ],
)
def test_namespaces_the_program_uses_are_accepted(key: str) -> None:
    parse(namespace("prod"), "prod", secret_keys("prod"), {**others("prod"), key: "x"})


def test_provider_namespaces_are_the_packages_the_program_imports() -> None:
    sources = [ROOT / "__main__.py", *sorted((ROOT / "components").rglob("*.py"))]
    imported = {
        m.replace("_", "-")
        for path in sources
        for m in re.findall(r"^\s*(?:import|from) pulumi_(\w+)", path.read_text(), re.M)
    }
    assert set(PROVIDER_NAMESPACES) == imported


def test_misspelt_namespace_of_a_provider_key() -> None:
    problems = bad(lambda r: None, other={"aws:region": "eu-west-1", "awz:profile": "prod"})
    assert problems[0].startswith("awz:profile: unknown namespace `awz` (did you mean aws:profile?)")


# --- aws:region: required where the stack uses AWS, and it must hold the network's zones. ---


def test_missing_aws_region_is_named_with_what_needs_it(tmp_path: Path) -> None:
    config = stack_file("prod")["config"]
    del config["aws:region"]
    run = run_config(tmp_path, "prod", config)
    assert isinstance(run.error, SettingsError), run.error_text
    assert run.resources == []
    assert run.error.problems == [
        "aws:region: is required because this stack uses AWS (ecr, eks, ecs, pipelineIdentities.aws); set it "
        "with `pulumi config set aws:region eu-west-1 -s prod`"
    ]


def test_misspelt_aws_region_is_named() -> None:
    problems = bad(lambda r: None, other={"aws:regoin": "eu-west-1"})
    assert problems == [
        "aws:region: is required because this stack uses AWS (ecr, eks, ecs, pipelineIdentities.aws); set it "
        "with `pulumi config set aws:region eu-west-1 -s prod` (aws:regoin is set: did you mean aws:region?)"
    ]


def test_stack_without_aws_needs_no_region() -> None:
    raw = namespace("prod")
    raw["registries"]["ecr"] = None
    raw["pipelineIdentities"]["aws"] = False
    for key in ("network", "eks", "ecs", "ciRunners"):
        del raw[key]
    raw["services"][0]["targets"] = ["cloudrun"]
    raw["services"][1]["targets"] = ["aci"]
    raw["services"][1].pop("runtimeSecrets")
    raw["services"][1].pop("fargate")
    raw["services"][1]["rollout"] = {"strategy": "rolling"}
    # No AWS network, so no NAT egress for the ACR to admit: the ranges builds push from.
    raw["registries"]["acr"]["allowedCidrs"] = ["203.0.113.0/24"]
    arc_keys = {"arcAppId", "arcInstallationId", "arcPrivateKey"}  # no runners without EKS
    for key in arc_keys:
        del raw[key]
    parse(raw, "prod", secret_keys("prod") - arc_keys, {})


def test_zones_outside_the_region_are_refused() -> None:
    problems = bad(lambda r: None, other={"aws:region": "us-east-1"})
    assert problems == [
        "pouw-cicd:network.availabilityZones: eu-west-1a, eu-west-1b, eu-west-1c are not in aws:region "
        "us-east-1; use us-east-1 zones (us-east-1a, ...) or set aws:region to their region"
    ]


# --- A secret nested in structured settings would be read as plain data: refuse it. ---


def test_secret_inside_structured_settings_stops_before_any_registration(tmp_path: Path) -> None:
    """What `pulumi config set --secret --path 'pouw-cicd:services[1].environment.DB' ...` writes.

    The CLI decrypts it and marks all of pouw-cicd:services secret; read as plain settings, the
    value reached the ECS task definition and the ACI container group in clear."""
    config = stack_file("prod")["config"]
    config["pouw-cicd:services"][1]["environment"]["DB"] = {"secure": "v1:Zm9vYmFy:c2VjcmV0"}
    run = run_config(tmp_path, "prod", config)
    assert isinstance(run.error, SettingsError), run.error_text
    assert run.resources == []
    assert SECRET_PLACEHOLDER not in json.dumps([r.inputs for r in run.resources])
    assert SECRET_PLACEHOLDER not in run.error_text
    assert run.error.problems == [
        "pouw-cicd:services: holds a secret value (set with `pulumi config set --secret --path`), but "
        "settings are plain data: it would reach task definitions and container environments in clear. "
        "Remove the `secure:` entry under pouw-cicd:services in Pulumi.prod.yaml and name a top-level "
        "secret key instead: services[].azureSecureEnvironment (ACI, AKS), services[].build.secrets "
        "(builds), "
        "registries.ghcr.tokenKey; or for ECS services[].runtimeSecrets (Secrets Manager or SSM ARNs), for "
        "Cloud Run services[].gcpSecrets (Secret Manager)"
    ]


def test_secret_settings_values_are_never_echoed() -> None:
    def mutate(r: dict[str, Any]) -> None:
        r["services"][1]["environment"]["DB"] = 424242  # a wrong type, so it would be quoted back

    problems = bad(mutate, secret=frozenset({"services"}))
    assert len(problems) == 1 and problems[0].startswith("pouw-cicd:services: holds a secret value")
    assert "424242" not in " ".join(problems)


def test_secret_plain_setting_is_refused() -> None:
    problems = bad(lambda r: None, secret=frozenset({"owner"}))
    assert problems == [
        "pouw-cicd:owner: holds a secret value, but it is a plain setting (it names and tags resources); "
        "re-set it in plain text with `pulumi config set pouw-cicd:owner <value> -s prod`"
    ]
