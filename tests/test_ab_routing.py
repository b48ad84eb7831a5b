"""A/B routing: a canary's `headerRoute` sends matching requests to the canary whatever its weight.

Settings refuse what a target cannot route (naming the key and the target); each target's routing
gains one rule ahead of the weighted split (inputs asserted per target); adding a header route, and
the rollback that points it at stable, change routing only (plan comparisons through the program);
the driver's rollback writes `aborted: true` (its fakes), and set-weight takes it away again.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from components.rollout import CanaryRollout, HeaderMatch, parse_rollout, re2_lacks
from components.settings import SettingsError, parse
from components.targets import TARGETS
from components.targets.aci import front_door_condition, rule_set_name
from components.targets.base import alb_header_values
from components.targets.kubernetes import header_match
from delivery.driver import ABORTED, EXIT_APPLY_FAILED, EXIT_ROLLED_BACK, ApplyError
from preflight.analyzer import PolicyPackProcess, analyze, load_policy_config
from preflight.diff import BUILD_TYPES, restarts, workload_restart_inputs
from preflight.engine import PlanDiff, ProgramRun, Registration, plan_diff, run_program
from preflight.report import Preflight
from preflight.rollout import compare, edit
from preflight.stackconfig import load_stack_config
from tests.conftest import project_copy, stack_file
from tests.test_driver import (
    WALK,
    FakeApplier,
    FakeClock,
    FakeReader,
    Run,
    healthy,
    staging_with,
)
from tests.test_settings import namespace, others, secret_keys

X_CANARY = {"headerName": "x-canary", "headerValue": {"exact": "always"}}
CANARY = {
    "strategy": "canary",
    "slots": {"stable": {"version": "1.0.0"}, "canary": {"version": "1.1.0", "weight": 10}},
}
AB = {**CANARY, "headerRoute": {"match": [X_CANARY]}}
ALL_HEADER_TARGETS = ["eks", "ecs", "aci", "gke", "aks"]


# --- settings ----------------------------------------------------------------------------------------


def problems(mutate: Any) -> list[str]:
    raw = copy.deepcopy(namespace("prod"))
    mutate(raw)
    with pytest.raises(SettingsError) as err:
        parse(raw, "prod", secret_keys("prod"), others("prod"))
    return err.value.problems


def web(raw: dict[str, Any], targets: list[str], *matches: dict[str, Any]) -> None:
    """prod's web (a canary) on `targets` with a header route of `matches`."""
    service = raw["services"][0]
    service["targets"] = targets
    service["rollout"]["headerRoute"] = {"match": list(matches)}


WEB = "pouw-cicd:services[0].rollout.headerRoute"
LONG_NAME = "x-" + "a" * 39


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda r: web(
                r, ["eks"], {"headerName": "x-canary", "headerValue": {"exact": "a", "prefix": "b"}}
            ),
            f"{WEB}.match[0].headerValue: give exactly one of exact, prefix, regex",
        ),
        (
            lambda r: web(r, ["eks"], {"headerName": "x-canary", "headerValue": {}}),
            f"{WEB}.match[0].headerValue: give exactly one of exact, prefix, regex",
        ),
        (
            lambda r: web(r, ["gke"], {"headerName": "x-v", "headerValue": {"regex": "(v2"}}),
            f"{WEB}.match[0].headerValue: regex '(v2' is not a regular expression",
        ),
        (
            lambda r: web(r, ["gke"], {"headerName": "x-v", "headerValue": {"regex": "^v2(?!-rc)"}}),
            f"{WEB}.match[0].headerValue: regex '^v2(?!-rc)' uses lookahead (?!...), which RE2 (the "
            "syntax GKE's load balancer matches with) does not support; write it without",
        ),
        (
            lambda r: web(r, ["eks"], {"headerName": "x-canary", "headerValue": {"exact": "a*"}}),
            f"{WEB}.match[0].headerValue: exact 'a*' holds '*' or '?'; match it with regex instead",
        ),
        (
            lambda r: web(r, ["eks"], {"headerName": "Cookie", "headerValue": {"exact": "a"}}),
            f"{WEB}.match[0]: headerName 'Cookie': use cookieName",
        ),
        (
            lambda r: web(
                r, ["eks"], {"headerName": "x-a", "cookieName": "b", "cookieValue": {"exact": "c"}}
            ),
            f"{WEB}.match[0]: a match is either {{headerName, headerValue: {{exact: ...}}}} or "
            "{cookieName, cookieValue: {exact: ...}}",
        ),
        (
            lambda r: web(r, ["eks"], {"cookieName": "beta"}),
            f"{WEB}.match[0]: needs both cookieName and cookieValue",
        ),
        (
            # ALB's header condition takes names of at most 40 characters; Gateway API's, 256.
            lambda r: web(r, ["gke", "ecs"], {"headerName": LONG_NAME, "headerValue": {"exact": "1"}}),
            f"{WEB}.match[0].headerName: '{LONG_NAME}' has 41 characters; ecs's header condition takes "
            "at most 40",
        ),
        (lambda r: web(r, ["eks"]), f"{WEB}.match: needs at least one match"),
        (
            lambda r: web(r, ["eks"], *[X_CANARY] * 5),
            f"{WEB}.match: takes at most 4 matches (an ALB rule's limit)",
        ),
        (
            lambda r: web(r, ["eks", "cloudrun"], X_CANARY),
            f"{WEB}: cloudrun cannot route by header: it routes by tag URL; the canary's tag URL (its "
            "previewUrl, https://canary---<service host>) is its A/B entry point; remove headerRoute or "
            "cloudrun from services[0].targets",
        ),
        (
            lambda r: web(r, ["gke", "eks"], {"headerName": "x-v", "headerValue": {"regex": "^v2"}}),
            f"{WEB}.match[0]: eks cannot match header x-v ~ ^v2 (headerValue.regex); it matches "
            "headerValue.exact, headerValue.prefix",
        ),
        (
            lambda r: web(r, ["eks"], {"cookieName": "beta", "cookieValue": {"exact": "yes"}}),
            f"{WEB}.match[0]: eks cannot match cookie beta = yes (cookieValue.exact); it matches "
            "headerValue.exact, headerValue.prefix",
        ),
        (
            lambda r: web(r, ["aks"], {"headerName": "x-canary", "headerValue": {"prefix": "al"}}),
            f"{WEB}.match[0]: aks cannot match header x-canary ^= al (headerValue.prefix); it matches "
            "headerValue.exact",
        ),
        (
            # prod's worker is blue-green: its idle slot has a preview endpoint instead.
            lambda r: r["services"][1]["rollout"].update(headerRoute={"match": [X_CANARY]}),
            "pouw-cicd:services[1].rollout.headerRoute: is for canary; a blue-green service's idle slot "
            "has its own preview endpoint (previewUrl) to test it before the switch",
        ),
    ],
)
def test_header_route_errors_name_the_key_and_the_target(mutate: Any, expected: str) -> None:
    found = problems(mutate)
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    ("pattern", "lacks"),
    [
        ("v2(?=-beta)", "lookahead (?=...)"),
        ("(?<!x)v2", "lookbehind (?<!...)"),
        (r"(v\d)-\1", r"a backreference \1"),
        ("(?P<v>a)(?P=v)", "a backreference (?P=name)"),
        ("(?>v2|v3)", "an atomic group (?>...)"),
        ("v2.*+", "a possessive quantifier (*+)"),
        ("(?x) v 2", "the flags (?x) (RE2 takes i, m, s and U)"),
        (r"v2\Z", r"\Z (RE2 spells the end of text \z)"),
        # What RE2 has, or a literal that only looks like a construct:
        (r"^v[23]\..*", None),
        ("(?i)beta|(?:rc)+?", None),
        (r"\(?=x\++", None),
        (r"[(?=\]]+", None),
        (r"a\\1", None),
    ],
)
def test_a_header_regex_is_refused_where_re2_lacks_the_construct(pattern: str, lacks: str | None) -> None:
    """GKE's load balancer matches with RE2: what Python's `re` compiles and RE2 lacks fails only when
    the Gateway controller programs it, so settings refuse it first."""
    assert re.compile(pattern) and re2_lacks(pattern) == lacks


def test_each_target_declares_its_forms() -> None:
    forms = {key: set(target.header_match_forms) for key, target in TARGETS.items()}
    assert forms["cloudrun"] == set() and "tag URL" in TARGETS["cloudrun"].header_route_instead
    assert forms["eks"] == forms["ecs"] == {"header-exact", "header-prefix"}  # ALB: no cookie, no regex
    assert forms["aks"] == {"header-exact"}  # AGC: no RegularExpression header match
    assert forms["aci"] == {"header-exact", "header-prefix", "cookie-exact", "cookie-prefix"}
    assert {"header-regex", "cookie-exact"} <= forms["gke"]


def test_settings_refusal_registers_nothing(tmp_path: Path) -> None:
    config = copy.deepcopy(stack_file("prod")["config"])
    config["pouw-cicd:services"][0]["rollout"]["headerRoute"] = {"match": [X_CANARY]}  # web is on cloudrun
    project = project_copy(tmp_path, "prod", config)
    result = run_program(project, load_stack_config(project, "prod"))
    assert result.error is not None and "cloudrun cannot route by header" in result.error_text
    assert not [r for r in result.resources if not r.type.startswith("pulumi:")]


# --- the model ---------------------------------------------------------------------------------------


def canary(**changes: Any) -> CanaryRollout:
    model = parse_rollout({**AB, **changes})
    assert isinstance(model, CanaryRollout)
    return model


def test_the_plan_routes_matching_requests_to_the_canary_until_a_rollback() -> None:
    plan = canary().plan("1.1.0", 2, 4)
    assert plan.header_route is not None and plan.header_route.slot == "canary"
    assert [m.shown for m in plan.header_route.matches] == ["header x-canary = always"]
    rolled_back = canary().rollback()
    assert rolled_back.aborted and rolled_back.weights["canary"] == 0
    assert rolled_back.plan("1.1.0", 2, 4).header_route.slot == "stable"  # type: ignore[union-attr]
    again = rolled_back.set_weight(10)
    assert not again.aborted and "aborted" not in again.model_dump(by_alias=True, exclude_unset=True)
    # At weight 0 before any rollback, header traffic is how an A/B test starts: still the canary.
    start = canary(slots={"stable": {"version": "1.0.0"}, "canary": {"version": "1.1.0", "weight": 0}})
    assert start.plan("1.1.0", 2, 4).header_route.slot == "canary"  # type: ignore[union-attr]
    # Promoted (no canary slot): nothing to route to.
    assert canary(slots={"stable": {"version": "1.1.0"}}).plan("1.1.0", 2, 4).header_route is None
    # Without a header route a rollback writes nothing more than the weight.
    assert not parse_rollout(CANARY).rollback().aborted  # type: ignore[union-attr]


def test_translations() -> None:
    exact = HeaderMatch.model_validate(X_CANARY)
    prefix = HeaderMatch.model_validate({"headerName": "x-v", "headerValue": {"prefix": "v2."}})
    regex = HeaderMatch.model_validate({"headerName": "x-v", "headerValue": {"regex": "^v[23]$"}})
    cookie = HeaderMatch.model_validate({"cookieName": "beta", "cookieValue": {"exact": "yes"}})
    cookie_prefix = HeaderMatch.model_validate({"cookieName": "beta", "cookieValue": {"prefix": "y"}})
    # ALB: wildcards.
    assert alb_header_values(exact) == ["always"] and alb_header_values(prefix) == ["v2.*"]
    # Gateway API: Exact, else RegularExpression; a cookie on the Cookie header.
    assert header_match(exact) == {"type": "Exact", "name": "x-canary", "value": "always"}
    assert header_match(prefix) == {"type": "RegularExpression", "name": "x-v", "value": r"^v2\..*"}
    assert header_match(regex)["value"] == "^v[23]$"
    cookie_re = header_match(cookie)
    assert cookie_re["name"] == "Cookie"
    # Envoy (GKE's load balancers) matches the whole header value; a router that searches finds it too.
    for header, matches in {
        "beta=yes": True,
        "a=1; beta=yes": True,
        "a=1; beta=yes; c=2": True,
        "beta=yes;c=2": True,
        "beta=yesno": False,
        "xbeta=yes": False,
        "a=beta=yes": False,
    }.items():
        assert bool(re.fullmatch(cookie_re["value"], header)) is matches, header
        assert bool(re.search(cookie_re["value"], header)) is matches, header
    assert re.fullmatch(header_match(cookie_prefix)["value"], "a=1; beta=yes; c=2")
    assert not re.fullmatch(header_match(cookie_prefix)["value"], "a=1; beta=no; c=2")
    assert re.fullmatch(header_match(prefix)["value"], "v2.1") and not re.fullmatch(r"^v2\..*", "xv2.1")
    # Front Door: RequestHeader / Cookies conditions, Equal or BeginsWith on the named selector.
    condition = front_door_condition(cookie_prefix)
    assert condition.name == "Cookies"  # type: ignore[attr-defined]
    parameters = condition.parameters  # type: ignore[attr-defined]
    assert (parameters.operator, parameters.selector, parameters.match_values) == (
        "BeginsWith",
        "beta",
        ["y"],
    )


# --- per target --------------------------------------------------------------------------------------


def config(rollout: dict[str, Any]) -> dict[str, Any]:
    """prod's stack with one service `app` on every target that routes by header."""
    base = copy.deepcopy(stack_file("prod")["config"])
    service = base["pouw-cicd:services"][0]
    service.update(name="app", version="1.1.0", targets=ALL_HEADER_TARGETS, rollout=rollout)
    base["pouw-cicd:services"] = [service]
    base.pop("pouw-cicd:workerDatabaseUrl")
    return base


def text(rollout: dict[str, Any]) -> str:
    return yaml.safe_dump({"config": config(rollout)}, sort_keys=False)


@pytest.fixture(scope="module")
def ab_run(tmp_path_factory: pytest.TempPathFactory) -> ProgramRun:
    project = project_copy(tmp_path_factory.mktemp("ab"), "prod", config(AB))
    result = run_program(project, load_stack_config(project, "prod"))
    assert result.error is None, result.error_text
    return result


def test_eks_ingress_has_a_header_rule_first(ab_run: ProgramRun) -> None:
    ingress = ab_run.get("kubernetes:networking.k8s.io/v1:Ingress", "app-eks-ingress").inputs
    annotations = ingress["metadata"]["annotations"]
    conditions = json.loads(annotations["alb.ingress.kubernetes.io/conditions.app-header"])
    assert conditions == [
        {"field": "http-header", "httpHeaderConfig": {"httpHeaderName": "x-canary", "values": ["always"]}}
    ]
    action = json.loads(annotations["alb.ingress.kubernetes.io/actions.app-header"])
    assert action["forwardConfig"]["targetGroups"] == [
        {"serviceName": "app-canary", "servicePort": "80", "weight": 100}
    ]
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    assert [p["backend"]["service"]["name"] for p in paths] == ["app-header", "app-weighted"]
    # The controller sorts paths (Exact, then Prefix longest first, then ImplementationSpecific) with a
    # stable sort: only two paths of one type and length keep the header rule's priority ahead.
    assert {(p["path"], p["pathType"]) for p in paths} == {("/", "Prefix")}
    assert all(p["backend"]["service"]["port"] == {"name": "use-annotation"} for p in paths)


def test_ecs_listener_rule_ahead_of_the_weighted_one(ab_run: ProgramRun) -> None:
    rule = ab_run.get("aws:lb/listenerRule:ListenerRule", "app-ecs-header").inputs
    weighted = ab_run.get("aws:lb/listenerRule:ListenerRule", "app-ecs-traffic").inputs
    assert rule["priority"] < weighted["priority"] and rule["listenerArn"] == weighted["listenerArn"]
    assert {"httpHeader": {"httpHeaderName": "x-canary", "values": ["always"]}} in rule["conditions"]
    [group] = rule["actions"][0]["forward"]["targetGroups"]
    canary_group = next(g for g in weighted["actions"][0]["forward"]["targetGroups"] if g["weight"] == 10)
    assert group == {"arn": canary_group["arn"], "weight": 100}


def test_ecs_header_rules_of_two_services_sit_on_their_own_listeners(tmp_path: Path) -> None:
    """Listener rule priorities are unique per listener: each ECS service has its own ALB and listeners,
    so two services with header routes both use priority 90 without a clash."""
    base = config(AB)
    first = base["pouw-cicd:services"][0]
    first["targets"] = ["ecs"]
    base["pouw-cicd:services"].append({**copy.deepcopy(first), "name": "api"})
    project = project_copy(tmp_path, "prod", base)
    result = run_program(project, load_stack_config(project, "prod"))
    assert result.error is None, result.error_text
    rules = [result.get("aws:lb/listenerRule:ListenerRule", f"{s}-ecs-header").inputs for s in ("app", "api")]
    assert [r["priority"] for r in rules] == [90, 90]
    assert rules[0]["listenerArn"] != rules[1]["listenerArn"]
    listeners = {
        r.inputs.get("loadBalancerArn") for r in result.resources if r.type == "aws:lb/listener:Listener"
    }
    assert len(listeners) == 2  # one ALB per service, each with its production and preview listeners


def test_aci_front_door_rule_overrides_to_a_canary_origin_group(ab_run: ProgramRun) -> None:
    rule = ab_run.get("azure-native:cdn:Rule", "app-aci-header").inputs
    [condition] = rule["conditions"]
    assert condition["name"] == "RequestHeader"
    assert condition["parameters"]["operator"] == "Equal"
    assert (condition["parameters"]["selector"], condition["parameters"]["matchValues"]) == (
        "x-canary",
        ["always"],
    )
    [action] = rule["actions"]
    assert action["name"] == "RouteConfigurationOverride"
    group = ab_run.get("azure-native:cdn:AFDOriginGroup", "app-aci-header-origins")
    assert group.inputs["originGroupName"] == "app-header"
    origin = ab_run.get("azure-native:cdn:AFDOrigin", "app-aci-header-origin").inputs
    canary = ab_run.get("azure-native:cdn:AFDOrigin", "app-aci-canary").inputs
    assert origin["hostName"] == canary["hostName"] and origin["enabledState"] == "Enabled"
    route = ab_run.get("azure-native:cdn:Route", "app-aci-route").inputs
    assert len(route["ruleSets"]) == 1


def test_front_door_rule_set_names_are_unique_per_service() -> None:
    """Letters and digits only, from a letter, at most 60, and one per service in the profile: dropping
    the dashes alone made `web-api` and `webapi` one name. Dash-free names keep theirs (no diff)."""
    names = ["worker", "web-api", "webapi", "we-bapi", "a-b", "ab", "x" * 20 + "-" + "y" * 19]
    made = [rule_set_name(n) for n in names]
    assert len(set(made)) == len(names) and made[:1] == ["workerab"]
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9]{0,59}", m) for m in made), made


@pytest.mark.parametrize("target", ["gke", "aks"])
def test_gateway_route_has_a_header_rule(ab_run: ProgramRun, target: str) -> None:
    route = ab_run.get("kubernetes:gateway.networking.k8s.io/v1:HTTPRoute", f"app-{target}-route").inputs
    header, weighted = route["spec"]["rules"]
    assert header["matches"][0]["headers"] == [{"type": "Exact", "name": "x-canary", "value": "always"}]
    assert header["backendRefs"] == [{"name": "app-canary", "port": 80}]
    assert {b["name"]: b["weight"] for b in weighted["backendRefs"]} == {"app-stable": 90, "app-canary": 10}


# --- plan comparisons: routing only ------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return project_copy(tmp_path_factory.mktemp("ab-compare"), "prod", config(CANARY))


def routing_only(before: ProgramRun, after: ProgramRun) -> PlanDiff:
    """The plan diff, asserted to touch no workload: nothing added or removed is a workload (or an
    image build), and no changed input restarts containers (preflight/diff.py's classification; the
    rollout helper is stricter and counts every added resource as a workload change)."""
    change = plan_diff(before, after)
    workload_types = workload_restart_inputs()
    for type_, name in change.added | change.removed:
        assert type_ not in workload_types and type_ not in BUILD_TYPES, (type_, name)
    for key in change.changed:
        assert key[0] not in BUILD_TYPES and not restarts(key[0], change.fields[key]), key
    return change


def short(keys: Any) -> set[str]:
    """(type, name) keys as `Kind name`."""
    return {f"{type_.rsplit(':', 1)[1]} {name}" for type_, name in keys}


def test_adding_a_header_route_changes_routing_only(project: Path, ab_run: ProgramRun) -> None:
    before = run_program(project, load_stack_config(project, "prod"))
    assert before.error is None, before.error_text
    change = routing_only(before, ab_run)
    assert short(change.added) == {
        "ListenerRule app-ecs-header",
        "AFDOriginGroup app-aci-header-origins",
        "AFDOrigin app-aci-header-origin",
        "RuleSet app-aci-rules",
        "Rule app-aci-header",
    }
    assert short(change.changed) == {
        "Ingress app-eks-ingress",
        "Route app-aci-route",
        "HTTPRoute app-gke-route",
        "HTTPRoute app-aks-route",
    }
    assert not change.removed
    # And taking it away again.
    assert not routing_only(ab_run, before).added


def test_a_rollback_points_the_header_route_at_stable_changing_routing_only(project: Path) -> None:
    """The driver's own check: the helper's comparison (stricter than routing_only) finds no workload."""
    before = text(AB)
    after = edit(before, "app", "rollback")
    assert "aborted: true" in after
    changes = compare(project, "prod", before, after)
    assert changes.workloads == () and changes.routing
    run = changes.after
    route = run.get("kubernetes:gateway.networking.k8s.io/v1:HTTPRoute", "app-gke-route").inputs
    assert route["spec"]["rules"][0]["backendRefs"] == [{"name": "app-stable", "port": 80}]
    annotations = run.get("kubernetes:networking.k8s.io/v1:Ingress", "app-eks-ingress").inputs["metadata"][
        "annotations"
    ]
    action = json.loads(annotations["alb.ingress.kubernetes.io/actions.app-header"])
    assert action["forwardConfig"]["targetGroups"][0]["serviceName"] == "app-stable"
    stable_origin = run.get("azure-native:cdn:AFDOrigin", "app-aci-stable").inputs
    assert (
        run.get("azure-native:cdn:AFDOrigin", "app-aci-header-origin").inputs["hostName"]
        == stable_origin["hostName"]
    )


# --- the driver's rollback ---------------------------------------------------------------------------


def test_the_drivers_rollback_sends_header_traffic_to_stable(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.staging.yaml").write_text(staging_with(WALK))

    def errors_at_50(metric: Any, target: str, n: int) -> float | None:
        if metric.error_rate is not None and target == "aci" and n >= 5:
            return 0.05
        return healthy(metric, target, n)

    run = Run(tmp_path, FakeApplier(), FakeReader(errors_at_50), FakeClock())
    assert run() == 1  # rolled back
    written = (tmp_path / "Pulumi.staging.yaml").read_text()
    rollout = yaml.safe_load(written)["config"]["pouw-cicd:services"][1]["rollout"]
    assert rollout["aborted"] is True and rollout["slots"]["canary"]["weight"] == 0
    model = parse_rollout(rollout)
    assert model.plan("2.0.1", 2, 4).header_route.slot == "stable"  # type: ignore[union-attr]
    # Re-entering the steps (a set-weight) routes header traffic to the canary again.
    again = yaml.safe_load(edit(written, "worker", "set-weight", 20))["config"]["pouw-cicd:services"][1]
    assert "aborted" not in again["rollout"]


A_B_FIRST = """\
          - setWeight: 0
          - pause: {duration: 5m}
          - setWeight: 50
          - setWeight: 100
"""


def test_a_rollback_in_the_header_only_phase_still_aborts_the_header_route(tmp_path: Path) -> None:
    """Steps that start at setWeight 0 measure the canary on header traffic alone; failing there, the
    weight is already 0, but the header route must still stop reaching the canary."""
    (tmp_path / "Pulumi.staging.yaml").write_text(staging_with(A_B_FIRST))

    def failing(metric: Any, target: str, n: int) -> float | None:
        return 0.05 if metric.error_rate is not None else healthy(metric, target, n)

    run = Run(tmp_path, FakeApplier(), FakeReader(failing), FakeClock())
    assert run() == 1
    rollout = yaml.safe_load((tmp_path / "Pulumi.staging.yaml").read_text())["config"]["pouw-cicd:services"][
        1
    ]["rollout"]
    assert rollout["aborted"] is True and rollout["slots"]["canary"]["weight"] == 0
    # The file already held weight 0 (the run resumed at the pause): the one apply is the rollback's.
    assert run.applier.weights == [ABORTED] and run.state.commit == "rollout(staging/worker): rollback"
    assert [e["event"] for e in run.state.history][-3:] == ["write", "apply", "rolled-back"]


@pytest.mark.parametrize("failure", [ApplyError("the API said no"), RuntimeError("the runner went away")])
def test_an_abort_written_but_not_applied_is_applied_by_the_rerun(
    tmp_path: Path, failure: BaseException
) -> None:
    """Weight 0 before and after the abort: were the position the weight alone, the rerun would find the
    file "applied" (0 == 0) and report the rollback done while header traffic still reached the canary."""
    (tmp_path / "Pulumi.staging.yaml").write_text(staging_with(A_B_FIRST))

    def failing(metric: Any, target: str, n: int) -> float | None:
        return 0.05 if metric.error_rate is not None else healthy(metric, target, n)

    once = [failure]
    applier = FakeApplier(lambda position: once.pop() if once and position == ABORTED else None)
    run = Run(tmp_path, applier, FakeReader(failing), FakeClock())
    if isinstance(failure, ApplyError):
        assert run() == EXIT_APPLY_FAILED
        assert (
            "says canary 0% (aborted: header route to stable), the stack last applied canary 0%"
            in (run.out[-1])
        )
    else:
        with pytest.raises(RuntimeError):
            run()
    assert (run.state.file, run.state.applied) == (ABORTED, 0) and applier.weights == []
    assert run() == EXIT_ROLLED_BACK
    assert applier.weights == [ABORTED] and run.state.applied == ABORTED
    assert run.state.status == "rolled-back"


def test_an_aborted_canary_is_not_walked_again_without_a_record(tmp_path: Path) -> None:
    """A fresh checkout (no run record) of a file a rollback left `aborted: true`: weight 0 alone could
    be a canary nobody started, but aborted says a rollback, so the driver walks nothing until a
    set-weight re-enters the steps."""
    aborted = edit(staging_with(WALK, weight=20), "worker", "rollback")
    (tmp_path / "Pulumi.staging.yaml").write_text(aborted)
    run = Run(tmp_path, FakeApplier(), FakeReader(), FakeClock())
    assert run() == EXIT_ROLLED_BACK and run.applier.weights == []
    assert "was rolled back (aborted: true in Pulumi.staging.yaml)" in run.out[-1]
    assert "set-weight --stack staging --service worker --weight N" in run.out[-1]
    (tmp_path / "Pulumi.staging.yaml").write_text(edit(aborted, "worker", "set-weight", 20))
    assert run() == 0 and run.applier.weights == [50, 100]  # re-entered at 20: the walk goes on


TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'+.^_`|~-",
    min_size=1,
    max_size=12,
)


@given(name=TOKEN, value=TOKEN, other=TOKEN)
@settings(max_examples=60, deadline=None)
def test_the_cookie_regex_matches_that_cookie_only(name: str, value: str, other: str) -> None:
    """Gateway API has no cookie match: the Cookie-header regex must match the whole header (Envoy's
    semantics) with the cookie among others, and neither a longer value nor a longer name (`xbeta=yes`
    is not `beta=yes`)."""
    pattern = header_match(HeaderMatch.model_validate({"cookieName": name, "cookieValue": {"exact": value}}))[
        "value"
    ]
    for matches in (re.fullmatch, re.search):  # Envoy's whole-value match, and a search
        assert matches(pattern, f"{name}={value}")
        assert matches(pattern, f"{other}=1; {name}={value}; z=2")
        assert not matches(pattern, f"{name}={value}{other}")
        assert not matches(pattern, f"{other}{name}={value}")


# --- the policy, on staging's real header rules ------------------------------------------------------


def test_the_policy_passes_stagings_header_rules_and_catches_a_split(
    stack_runs: dict[str, Preflight], pack: PolicyPackProcess
) -> None:
    """Through the Analyzer protocol, on the resources staging's program declares: its three header
    rules (ECS listener rule, Front Door rule, AKS HTTPRoute rule) pass; the ECS one split over both
    target groups, or the AKS one backed by a Service nobody declares, fail."""
    run = stack_runs["staging"]
    resources = run.run.resources
    config = load_policy_config(Path(run.policy_config))

    def verdicts(changed: list[Registration]) -> set[str]:
        result = analyze(pack, changed, config)
        return {f"{v.urn.rsplit('::', 1)[1]}: {v.detail}" for v in result.violations if v.policy == POLICY}

    assert verdicts(resources) == set()
    rule = next(r for r in resources if r.name == "worker-ecs-header")
    traffic = next(r for r in resources if r.name == "worker-ecs-traffic")
    split = copy.deepcopy(rule.inputs)
    split["actions"] = copy.deepcopy(traffic.inputs["actions"])
    assert verdicts(replaced(resources, rule, split)) == {
        "worker-ecs-header: header route (forward) forwards to 2 backends; an A/B rule sends matching "
        "requests to one slot"
    }
    route = next(r for r in resources if r.name == "worker-aks-route")
    renamed = copy.deepcopy(route.inputs)
    renamed["spec"]["rules"][0]["backendRefs"] = [{"name": "worker-canry", "port": 80}]
    assert verdicts(replaced(resources, route, renamed)) == {
        "worker-aks-route: header route (rules[0]) forwards to Service worker-canry, which this stack "
        "does not declare"
    }


POLICY = "header-route-single-slot"


def replaced(resources: list[Registration], target: Registration, inputs: Any) -> list[Registration]:
    changed = copy.copy(target)
    changed.inputs = inputs
    return [changed if r.urn == target.urn else r for r in resources]
