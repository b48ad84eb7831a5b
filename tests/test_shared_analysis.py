"""policies/shared_analysis.py: the pack answers exactly as the plain SDK does, only faster.

The pack is started twice, as the CLI starts it: once as shipped and once with
POUW_POLICY_SHARED_ANALYSIS=off (the SDK's own per-policy deserialisation). Every request the three
stacks' plans, the policy fixtures, their unknown-valued variants and the bench's generated stack
produce is sent to both, under each stack's policy config and under `all: mandatory`, and the full
responses (GetAnalyzerInfo, every AnalyzeResponse, AnalyzeStack) must be byte-identical. In-process:
one deserialisation per resource and request (Analyze and AnalyzeStack), shared trees no policy can
write to, and the Struct conversion equal to json_format's for any Struct (hypothesis).
"""

from __future__ import annotations

import copy
import importlib.util
import math
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import empty_pb2, json_format, struct_pb2
from hypothesis import given
from hypothesis import strategies as st
from pulumi.runtime.proto import analyzer_pb2

from preflight.analyzer import (
    PolicyPackProcess,
    _described,
    _open,
    build_configure_request,
    load_policy_config,
)
from preflight.engine import Registration
from preflight.report import Preflight
from tests.conftest import ROOT, STACKS
from tests.test_policies import FIXTURES, UNKNOWN_BOOL, UNKNOWN_STRING, build

sys.path.insert(0, str(ROOT / "policies"))
import shared_analysis


def _bench_stack(size: int) -> list[Registration]:
    spec = importlib.util.spec_from_file_location("bench_policies", ROOT / "bench" / "policies.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    resources: list[Registration] = module.stack(size)
    return resources


def _unknown(value: Any, flip: list[int]) -> Any:
    """Every other leaf unknown (strings as unknown strings, booleans as unknown booleans)."""
    if isinstance(value, dict):
        return {k: _unknown(v, flip) for k, v in value.items()}
    if isinstance(value, list):
        return [_unknown(v, flip) for v in value]
    flip[0] += 1
    if flip[0] % 2:
        return value
    if isinstance(value, bool):
        return UNKNOWN_BOOL
    return UNKNOWN_STRING if isinstance(value, str) else value


def _fixture_resources() -> list[Registration]:
    out: list[Registration] = []
    for name, fixture in sorted(FIXTURES.items()):
        for i, group in enumerate([fixture["pass"], fixture["fail"]["resources"]]):
            for r in build(group):
                r.urn, r.name = f"{r.urn}-{name}-{i}", f"{r.name}-{name}-{i}"
                out.append(r)
                unknown = copy.deepcopy(r)
                unknown.urn, unknown.name = f"{r.urn}-unknown", f"{r.name}-unknown"
                unknown.inputs = _unknown(r.inputs, [0])
                out.append(unknown)
    return out


@pytest.fixture(scope="module")
def packs() -> Iterator[tuple[PolicyPackProcess, PolicyPackProcess]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(shared_analysis.DISABLE_ENV, "off")
        plain = PolicyPackProcess(ROOT / "policies", project="pouw-cicd", stack="plain")
        plain.__enter__()
    try:
        with PolicyPackProcess(ROOT / "policies", project="pouw-cicd", stack="shared") as shared:
            yield plain, shared
    finally:
        plain.close()


def _round(
    pack: PolicyPackProcess, resources: list[Registration], config: dict[str, Any]
) -> tuple[bytes, list[bytes], bytes]:
    """GetAnalyzerInfo, each Analyze and AnalyzeStack, serialised (what the engine would receive)."""
    _open(pack, "organization")
    info = pack.call("GetAnalyzerInfo", empty_pb2.Empty())
    pack.call("Configure", build_configure_request(info, config))
    by_urn = {r.urn: r for r in resources}
    described = [_described(r, by_urn) for r in resources]
    calls = [pack.stub.Analyze.future(analyzer_pb2.AnalyzeRequest(**f), timeout=120) for f in described]
    analyzed = [c.result().SerializeToString(deterministic=True) for c in calls]
    stack = pack.stub.AnalyzeStack(
        analyzer_pb2.AnalyzeStackRequest(
            resources=[
                analyzer_pb2.AnalyzerResource(**f, parent=r.parent, dependencies=r.dependencies)
                for r, f in zip(resources, described, strict=True)
            ]
        ),
        timeout=120,
    )
    return (
        info.SerializeToString(deterministic=True),
        analyzed,
        stack.SerializeToString(deterministic=True),
    )


def _diagnostics(responses: list[bytes]) -> list[analyzer_pb2.AnalyzeDiagnostic]:
    found = []
    for raw in responses:
        response = analyzer_pb2.AnalyzeResponse()
        response.ParseFromString(raw)
        found += list(response.diagnostics)
    return found


@pytest.mark.parametrize("stack", STACKS)
def test_stack_plans_get_identical_responses(
    packs: tuple[PolicyPackProcess, PolicyPackProcess], stack_runs: dict[str, Preflight], stack: str
) -> None:
    plain, shared = packs
    run = stack_runs[stack].run
    assert any(r.provider for r in run.resources)  # explicit providers: their properties are shared too
    for config in (load_policy_config(ROOT / "policies" / "config" / f"{stack}.json"), {"all": "mandatory"}):
        expected = _round(plain, run.resources, config)
        assert _round(shared, run.resources, config) == expected
        assert _diagnostics(expected[1])  # the plans do produce verdicts to compare


def test_fixtures_and_unknowns_get_identical_responses(
    packs: tuple[PolicyPackProcess, PolicyPackProcess],
) -> None:
    plain, shared = packs
    resources = _fixture_resources()
    config = {"all": "mandatory", **{p: f["config"] for p, f in FIXTURES.items() if "config" in f}}
    expected = _round(plain, resources, config)
    assert _round(shared, resources, config) == expected
    messages = [d.message for d in _diagnostics(expected[1])]
    assert sum("during preview" in m for m in messages) > 20  # the unknown-value diagnostics
    assert sum("during preview" not in m for m in messages) > 80  # and real violations


def test_bench_stack_gets_identical_responses(packs: tuple[PolicyPackProcess, PolicyPackProcess]) -> None:
    plain, shared = packs
    resources = _bench_stack(1000)
    config = load_policy_config(ROOT / "policies" / "config" / "prod.json")
    expected = _round(plain, resources, config)
    assert _round(shared, resources, config) == expected
    assert len(_diagnostics(expected[1])) >= 500  # (the rest of the bench's 1,001 are AnalyzeStack's)


def test_pinned_to_the_locked_sdk() -> None:
    lock = (ROOT / "policies" / "requirements-lock.txt").read_text()
    locked = re.search(r"^pulumi-policy==(\S+)", lock, re.M)
    assert locked is not None and locked.group(1) == shared_analysis.PINNED_SDK
    assert shared_analysis.fingerprints() == shared_analysis.FINGERPRINTS
    shared_analysis.check_sdk()


def test_another_sdk_falls_back_to_the_sdks_own_path(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Never a wrong verdict and never a pack that will not start: another SDK runs unpatched, and says so."""
    monkeypatch.setattr(shared_analysis, "VERSION", "1.22.0")
    with pytest.raises(shared_analysis.SdkMismatchError, match=r"1\.21\.0 internals but .*1\.22\.0"):
        shared_analysis.check_sdk()
    assert shared_analysis.install({}) is False
    assert "the pack runs on the SDK's own (slower) path" in capsys.readouterr().err


def test_changed_sdk_source_falls_back(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    changed = {**shared_analysis.FINGERPRINTS, "_PolicyAnalyzerServicer.Analyze": "0" * 32}
    monkeypatch.setattr(shared_analysis, "FINGERPRINTS", changed)
    with pytest.raises(shared_analysis.SdkMismatchError, match=r"_PolicyAnalyzerServicer\.Analyze .*differs"):
        shared_analysis.check_sdk()
    assert shared_analysis.install({}) is False
    assert "_PolicyAnalyzerServicer.Analyze" in capsys.readouterr().err


# In-process: the SDK's servicer, patched for the test only (monkeypatch restores it).
@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch) -> Any:
    import pulumi_policy.policy as sdk

    servicer = sdk._PolicyAnalyzerServicer
    monkeypatch.setattr(servicer, "Analyze", servicer.Analyze)
    monkeypatch.setattr(servicer, "AnalyzeStack", servicer.AnalyzeStack)
    for name in ("json_format", "deserialize_properties", "unknown_checking_proxy", "signature"):
        monkeypatch.setattr(sdk, name, getattr(sdk, name))
    monkeypatch.delenv(shared_analysis.DISABLE_ENV, raising=False)
    return sdk


def _request(type_: str, props: dict[str, Any]) -> analyzer_pb2.AnalyzeRequest:
    struct = struct_pb2.Struct()
    struct.update(props)
    return analyzer_pb2.AnalyzeRequest(type=type_, properties=struct, urn=f"urn:x::{type_}::r", name="r")


def test_one_deserialisation_per_request(sdk: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    def validate(args: Any, report: Any) -> None:
        seen.append(args.props)
        report(f"image {args.props['image']}", None)

    rvp = sdk.ResourceValidationPolicy
    policies = [rvp(name=f"p{i}", description="d", validate=validate) for i in range(5)]
    servicer = sdk._PolicyAnalyzerServicer("pack", "0.0.1", policies, sdk.EnforcementLevel.ADVISORY)
    assert shared_analysis.install({"p4": lambda t: t == "other"})
    calls: list[Any] = []
    real = shared_analysis._deserialize_properties
    monkeypatch.setattr(shared_analysis, "_deserialize_properties", lambda *a: calls.append(a) or real(*a))
    for _ in range(2):
        response = servicer.Analyze(_request("t", {"image": "web"}), None)
        assert [d.policyName for d in response.diagnostics] == ["p0", "p1", "p2", "p3"]
    assert len(calls) == 2  # once per request, not once per policy
    assert all(p is seen[0] for p in seen[:4]) and seen[4] is not seen[0]  # cleared between requests
    assert shared_analysis._REQUEST.memo is None


def test_a_policy_cannot_change_what_the_next_one_sees(sdk: Any) -> None:
    def mutate(args: Any, report: Any) -> None:
        args.props["spec"]["image"] = "evil"

    policies = [sdk.ResourceValidationPolicy(name="writer", description="d", validate=mutate)]
    servicer = sdk._PolicyAnalyzerServicer("pack", "0.0.1", policies, sdk.EnforcementLevel.ADVISORY)
    assert shared_analysis.install({})
    with pytest.raises(TypeError, match="policies must not modify their args"):
        servicer.Analyze(_request("t", {"spec": {"image": "web"}}), None)


# The Struct conversion: json_format's own result for every shape a Struct can hold.
_LEAVES = st.none() | st.booleans() | st.text() | st.floats(allow_nan=False, allow_infinity=False)
_JSON = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


@given(st.dictionaries(st.text(max_size=8), _JSON, max_size=6))
def test_struct_conversion_is_json_formats(value: dict[str, Any]) -> None:
    struct = struct_pb2.Struct()
    struct.update(value)
    converted = shared_analysis._struct_to_dict(struct)
    expected = json_format.MessageToDict(struct)
    assert converted == expected
    assert list(converted) == list(expected)  # the same key order
    assert repr(converted) == repr(expected)  # the same types (floats stay floats, -0.0 stays -0.0)


@pytest.mark.parametrize("number", [math.inf, -math.inf, math.nan])
def test_struct_conversion_refuses_what_json_format_refuses(number: float) -> None:
    struct = struct_pb2.Struct()
    struct.update({"spec": {"replicas": [number]}})
    with pytest.raises(ValueError) as expected:
        json_format.MessageToDict(struct)
    with pytest.raises(ValueError) as converted:
        shared_analysis._struct_to_dict(struct)
    assert str(converted.value) == str(expected.value)


def _stack_request(count: int) -> analyzer_pb2.AnalyzeStackRequest:
    requests = [_request("t", {"spec": {"image": f"web:{i}"}}) for i in range(count)]
    return analyzer_pb2.AnalyzeStackRequest(
        resources=[
            analyzer_pb2.AnalyzerResource(type="t", urn=f"{r.urn}{i}", name=r.name, properties=r.properties)
            for i, r in enumerate(requests)
        ]
    )


def test_one_deserialisation_per_resource_of_a_stack(sdk: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """AnalyzeStack: each resource deserialised once per request, whatever the number of stack policies."""
    seen: list[list[Any]] = []

    def validate(args: Any, report: Any) -> None:
        seen.append([r.props for r in args.resources])
        report(f"{len(args.resources)} resources, first {args.resources[0].props['spec']['image']}", None)

    policies = [sdk.StackValidationPolicy(name=f"s{i}", description="d", validate=validate) for i in range(4)]
    servicer = sdk._PolicyAnalyzerServicer("pack", "0.0.1", policies, sdk.EnforcementLevel.ADVISORY)
    assert shared_analysis.install({})
    calls: list[Any] = []
    real = shared_analysis._deserialize_properties
    monkeypatch.setattr(shared_analysis, "_deserialize_properties", lambda *a: calls.append(a) or real(*a))
    response = servicer.AnalyzeStack(_stack_request(50), None)
    assert [d.message for d in response.diagnostics] == ["d\n50 resources, first web:0"] * 4
    assert len(calls) == 50  # once per resource, not once per resource and stack policy
    assert all(props is first for views in seen for props, first in zip(views, seen[0], strict=True))
    assert shared_analysis._REQUEST.memo is None


def test_a_stack_policy_cannot_change_what_the_next_one_sees(sdk: Any) -> None:
    def mutate(args: Any, report: Any) -> None:
        args.resources[0].props["spec"]["image"] = "evil"

    policies = [sdk.StackValidationPolicy(name="writer", description="d", validate=mutate)]
    servicer = sdk._PolicyAnalyzerServicer("pack", "0.0.1", policies, sdk.EnforcementLevel.ADVISORY)
    assert shared_analysis.install({})
    with pytest.raises(TypeError, match="policies must not modify their args"):
        servicer.AnalyzeStack(_stack_request(2), None)


def _linked_stack_request() -> analyzer_pb2.AnalyzeStackRequest:
    """Parents, dependencies and property dependencies, including ones the SDK cannot resolve (a URN
    not in the stack) and a URN listed twice (the SDK's map keeps the last)."""

    def resource(name: str, **links: Any) -> analyzer_pb2.AnalyzerResource:
        struct = struct_pb2.Struct()
        struct.update({"spec": {"image": f"{name}:1"}})
        return analyzer_pb2.AnalyzerResource(
            type="t", urn=f"urn:x::t::{name}", name=name, properties=struct, **links
        )

    deps = analyzer_pb2.AnalyzerPropertyDependencies
    return analyzer_pb2.AnalyzeStackRequest(
        resources=[
            resource("root"),
            resource("a", parent="urn:x::t::root", dependencies=["urn:x::t::root", "urn:x::t::gone"]),
            resource(
                "b",
                parent="urn:x::t::gone",
                dependencies=["urn:x::t::a", "urn:x::t::a"],
                propertyDependencies={
                    "spec": deps(urns=["urn:x::t::a", "urn:x::t::gone"]),
                    "none": deps(urns=[]),
                },
            ),
            resource("root", dependencies=["urn:x::t::b"]),
        ]
    )


def _describe_stack(args: Any) -> str:
    def name(r: Any) -> str:
        return r.name if r is not None else "-"

    return "; ".join(
        f"{name(r)}<{name(r.parent)} deps={[name(d) for d in r.dependencies]} "
        f"props={ {k: [name(d) for d in v] for k, v in r.property_dependencies.items()} } "
        f"protect={r.opts.protect} image={r.props['spec']['image']}"
        for r in args.resources
    )


def test_stack_analysis_answers_as_the_sdk_does(sdk: Any) -> None:
    """Every outcome a stack policy can have (violations, an unknown value, not applicable, an async
    validate, remediate treated as mandatory, disabled), the same response byte for byte."""
    from pulumi_policy.proxy import UnknownValueError

    def describe(args: Any, report: Any) -> None:
        report(_describe_stack(args), args.resources[1].urn)

    def unknown(args: Any, report: Any) -> None:
        raise UnknownValueError("04da6b54-80e4-46f7-96ec-b56ff0331ba9", ["spec", "image"])

    def not_applicable(args: Any, report: Any) -> None:
        raise sdk._NotApplicableError("no such resources")

    async def later(args: Any, report: Any) -> None:
        report(f"{len(args.resources)} later", None)

    svp = sdk.StackValidationPolicy
    policies = [
        svp(name="describe", description="d", validate=describe),
        svp(name="unknown", description="u", validate=unknown),
        svp(name="not-applicable", description="n", validate=not_applicable),
        svp(name="async", description="a", validate=later, enforcement_level=sdk.EnforcementLevel.REMEDIATE),
        svp(name="off", description="o", validate=describe, enforcement_level=sdk.EnforcementLevel.DISABLED),
        sdk.ResourceValidationPolicy(name="resource", description="r", validate=describe),
    ]
    servicer = sdk._PolicyAnalyzerServicer("pack", "0.0.1", policies, sdk.EnforcementLevel.ADVISORY)
    request = _linked_stack_request()
    plain = servicer.AnalyzeStack(request, None).SerializeToString(deterministic=True)
    assert shared_analysis.install({})
    shared = servicer.AnalyzeStack(request, None)
    assert shared.SerializeToString(deterministic=True) == plain
    assert [d.policyName for d in shared.diagnostics] == ["describe", "unknown", "async"]
    assert shared.diagnostics[0].message == (
        "d\nroot<- deps=[] props={} protect=False image=root:1; "
        "a<root deps=['root'] props={} protect=False image=a:1; "
        "b<- deps=['a', 'a'] props={'none': [], 'spec': ['a']} protect=False image=b:1; "
        "root<- deps=['b'] props={} protect=False image=root:1"
    )
    assert [n.policy_name for n in shared.not_applicable] == ["not-applicable"]


def test_stack_resources_are_built_once_for_every_stack_policy(
    sdk: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[Any]] = []

    def validate(args: Any, report: Any) -> None:
        seen.append(args.resources)

    policies = [sdk.StackValidationPolicy(name=f"s{i}", description="d", validate=validate) for i in range(3)]
    servicer = sdk._PolicyAnalyzerServicer("pack", "0.0.1", policies, sdk.EnforcementLevel.ADVISORY)
    assert shared_analysis.install({})
    options: list[Any] = []
    real = servicer._get_resource_options
    monkeypatch.setattr(servicer, "_get_resource_options", lambda r: options.append(r) or real(r))
    servicer.AnalyzeStack(_linked_stack_request(), None)
    assert len(options) == 4  # once per resource, not once per resource and stack policy
    assert all(r is first for views in seen for r, first in zip(views, seen[0], strict=True))
    assert seen[0] is not seen[1]  # each policy its own list of the shared resources
    assert seen[0][1].parent is seen[0][3]  # linked as the SDK links them: the last `root`


@pytest.mark.parametrize(
    "mutation",
    [
        lambda r: setattr(r, "name", "evil"),
        lambda r: r.dependencies.append(r),
        lambda r: r.dependencies.clear(),
        lambda r: r.property_dependencies.__setitem__("spec", []),
        lambda r: r.property_dependencies["spec"].append(r),
        lambda r: setattr(r.opts, "protect", True),
    ],
    ids=["attribute", "append-dependency", "clear-dependencies", "property-dependency", "append", "options"],
)
def test_a_stack_policy_cannot_change_the_shared_resources(sdk: Any, mutation: Any) -> None:
    def mutate(args: Any, report: Any) -> None:
        mutation(args.resources[2])

    policies = [sdk.StackValidationPolicy(name="writer", description="d", validate=mutate)]
    servicer = sdk._PolicyAnalyzerServicer("pack", "0.0.1", policies, sdk.EnforcementLevel.ADVISORY)
    assert shared_analysis.install({})
    with pytest.raises(TypeError, match="policies must not modify their args"):
        servicer.AnalyzeStack(_linked_stack_request(), None)
