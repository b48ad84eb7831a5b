"""Deserialize a resource once per request, not once per policy (pulumi-policy 1.21.0 internals).

Why: the Python SDK's `_PolicyAnalyzerServicer.Analyze` loops over every policy and, for EACH one,
re-runs `json_format.MessageToDict(request.properties)`, `deserialize_properties`,
`unknown_checking_proxy`, `_get_resource_options` and `_get_provider_resource` before calling the
policy's validate, where our type filter (pack_support) returns at once for most policies. The cost is
resources x policies x a full deserialisation: 56 -> 99 policies took one pack process from 760 to
~300 resources/s. `AnalyzeStack` does the same for every resource of the stack, once per stack policy
(8 of them: 1,000 resources took 0.64 s, three times all the Analyze calls together).

What `install()` changes, without changing any response, diagnostic or GetAnalyzerInfo:

1. Type pre-filter. Each resource policy declared with pack_support's decorators registers its type
   predicate in `pack_support.TYPE_FILTERS`; its validate reports nothing and raises nothing for any
   other type, and for such a policy the rest of the SDK's loop has no effect either (our policies all
   have a validate, so no "not applicable" entry). `Analyze` therefore runs the SDK's own, unmodified
   loop on a per-request shallow copy of the servicer whose policy list holds only the policies that
   can apply to `request.type` (and any policy not in TYPE_FILTERS), in the original order: the same
   diagnostics, in the same order, with the same enforcement levels, messages and unknown-value
   ("can't run policy ... during preview") diagnostics. A copy, not the servicer: gRPC runs up to
   four Analyze calls at once on the one servicer.
2. Memo. Inside one Analyze or AnalyzeStack call (a thread-local, set and cleared around it),
   `MessageToDict`, `deserialize_properties` and `unknown_checking_proxy` run once per properties
   message (each resource's, and its explicit provider's), whichever policy asks first; the others get
   the same objects. An entry holds strong references to the message and what was derived from it and
   is found by `id` (then confirmed with `is`), so an id cannot be reused for another object while the
   entry lives, and a lookup costs the same for 1 resource or 5,000 (AnalyzeStack: no pairwise scan).
   The shared proxy tree is frozen: the SDK's proxies are read-only except `_DictProxy.__setitem__`,
   which on a shared tree would leak one policy's writes into the next policy's view, so on the
   shared tree it raises TypeError instead (no policy of this pack writes to its args; one that did
   would fail loudly, not silently change another policy's verdict).
   In Analyze, options (`PolicyResourceOptions`) and provider wrappers are still built per policy by
   the SDK. Outside these two calls (Configure, Remediate) the SDK's functions run as before.
3. Struct conversion. `MessageToDict` of a `google.protobuf.Struct` (every properties message and
   policy config) is `_struct_to_dict`: the same walk as protobuf's json_format printer for Struct,
   Value and ListValue (null -> None, numbers stay floats, Infinity and NaN raise the same ValueError),
   without the printer's per-value descriptor dispatch: half the time. Any other message, or any
   argument, goes to json_format itself.
4. Runtime settings. Every Analyze and AnalyzeStack call first runs `_configure_runtime_settings`,
   which asks `inspect.signature(pulumi.runtime.Settings)` whether it takes `organization`: a tenth
   of the pack's time. `signature` is what the SDK module sees as `signature`; here it is cached per
   callable (a class's signature is the same each time it is asked; the Settings built and set are
   unchanged).
5. Garbage collection. What the pack has imported when `install()` runs (the SDK, every policy) lives
   as long as the pack, so it is frozen (`gc.freeze`), and AnalyzeStack, whose memo keeps every
   resource's dicts and proxies alive until it answers, pauses the cyclic collector meanwhile
   (5,000 resources: 0.5 s instead of 0.8 s). Neither changes what any call computes.
6. Error parity. A resource no policy matches is still deserialised once (after the SDK's loop),
   whenever the SDK would have deserialised it, so a malformed request fails as it did.
7. Stack resources once. The SDK's AnalyzeStack builds every `PolicyResource` of the stack (options,
   provider, parent, dependency and property-dependency links) again for each stack policy; with 8
   stack policies that loop was half the pack's time at 5,000 resources. `_analyze_stack` is that
   method with the loop run once (on the first enabled stack policy, so nothing is deserialised when
   none is): the same objects, links and responses; each policy gets its own list of them. They are
   read-only (a policy that reassigns an attribute of a resource or of its options, or changes its
   dependency lists, gets a TypeError naming the rule), as the shared property trees are.

Pinned: this leans on private SDK code (the servicer's name-mangled policy list, the module globals
`Analyze` calls through, the proxy classes) and mirrors protobuf's json_format for Struct. `check_sdk()`
runs at install, before the pack serves: if the installed pulumi-policy is not `PINNED_SDK`
(policies/requirements-lock.txt) or the source of any function this relies on differs from what it
was written against, the pack runs on the SDK's own path and says why. After re-reading those
functions for an upgrade, update PINNED_SDK and FINGERPRINTS (print them with `print_fingerprints()`)
and run tests/test_shared_analysis.py, which compares every response with and without this module.

`POUW_POLICY_SHARED_ANALYSIS=off` leaves the SDK as it is; it exists for that test.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import gc
import hashlib
import inspect
import math
import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, cast

import pulumi_policy.deserialize as sdk_deserialize
import pulumi_policy.policy as sdk
import pulumi_policy.proxy as sdk_proxy
from google.protobuf import json_format, struct_pb2
from pulumi.runtime import proto
from pulumi.runtime.proto import analyzer_pb2
from pulumi_policy.version import VERSION

PINNED_SDK = "1.21.0"
DISABLE_ENV = "POUW_POLICY_SHARED_ANALYSIS"  # "off": the SDK's own per-policy path (the equality test)

_SERVICER = sdk._PolicyAnalyzerServicer
_PRINTER: Any = json_format._Printer  # type: ignore[attr-defined]  # private: see FINGERPRINTS
_POLICIES_ATTR = "_PolicyAnalyzerServicer__policies"  # `self.__policies` in the servicer
_STACK_TAGS_ATTR = "_PolicyAnalyzerServicer__stack_tags"
_PACK_NAME_ATTR = "_PolicyAnalyzerServicer__policy_pack_name"
_PACK_VERSION_ATTR = "_PolicyAnalyzerServicer__policy_pack_version"
_DICT_TARGET_ATTR = "_DictProxy__target"
_LIST_TARGET_ATTR = "_ListProxy__target"

# sha256 (first 128 bits) of the source of each SDK function or class this relies on, in PINNED_SDK
# (and of the json_format printer methods `_struct_to_dict` mirrors, in protobuf 5.29.6).
FINGERPRINTS: dict[str, str] = {
    "_PolicyAnalyzerServicer.Analyze": "75db9cf8fc9d158596909b9b3f77bf48",
    "_PolicyAnalyzerServicer.AnalyzeStack": "3917a008482c2387d7da37f65d889970",
    "_PolicyAnalyzerServicer.__init__": "d79091472a8911d62a8b9fa639c1692a",
    "_PolicyAnalyzerServicer._get_provider_resource": "5db736069fc8d3d65e220ee75143faa1",
    "_PolicyAnalyzerServicer._get_resource_options": "986051047b696f0fd99ed8890bc7e644",
    "_PolicyAnalyzerServicer._get_enforcement_level": "e766403ef7ab7cdf0be172e84ebd1b0b",
    "_PolicyAnalyzerServicer._configure_runtime_settings": "da0923ff3a404f3633b701587071091c",
    "_PolicyAnalyzerServicer._create_report_violation": "0be23b1e3ebae61589040c8822e60491",
    "_PolicyAnalyzerServicer._get_policy_config": "bd59507ff3226701dd05699366daa814",
    "_PolicyAnalyzerServicer._map_enforcement_level": "1e5d4aa735645680753b19097ffac831",
    "PolicyResource": "d8421791bf0326533750d2b47c6bdd02",
    "PolicyResourceOptions": "47dc24c70ed161b8e10bd9cb4d0c073e",
    "StackValidationArgs": "afd07d959881bd2299a1f3314e68a67e",
    "StackValidationPolicy.validate": "e035ec7e72df8f35e411a227d801b384",
    "ResourceValidationPolicy.validate": "0505e541a368cc66b0b187cd7305b811",
    "ResourceValidationPolicy.has_validation": "df3874233b40a16c510dcce113acce51",
    "deserialize.deserialize_properties": "2ef45163513f6cc9c65929241e2661bf",
    "proxy.unknown_checking_proxy": "760d27c0d09666ff364c53e298f1704d",
    "proxy._proxy_helper": "c36dd3b6af1196cbab4c2be6408b333b",
    "proxy._DictProxy": "9c45424925aaa8d013af8965cc8b50fa",
    "proxy._ListProxy": "7d39cdb7a0a010d758f1fdf19b65c686",
    "json_format.MessageToDict": "a0eac6c225057afd0406d550e1544dd8",
    "json_format._Printer._MessageToJsonObject": "6b97599187328031268a7731d83764ea",
    "json_format._Printer._ValueMessageToJsonObject": "d5b8fe980fa754431ea61d652ed3c206",
    "json_format._Printer._ListValueMessageToJsonObject": "e71f125d7911ae5cbffc8ed8e1c43391",
    "json_format._Printer._StructMessageToJsonObject": "e6354e1b0b00f7a442eb49fe220e91f6",
    "json_format._Printer._FieldToJsonObject": "2a54cf49e2f1c1dfac530a0f5d30b9de",
}


class SdkMismatchError(RuntimeError):
    """The installed pulumi-policy is not the one shared_analysis was written against."""


def _sources() -> dict[str, object]:
    return {
        "_PolicyAnalyzerServicer.Analyze": _SERVICER.Analyze,
        "_PolicyAnalyzerServicer.AnalyzeStack": _SERVICER.AnalyzeStack,
        "_PolicyAnalyzerServicer.__init__": _SERVICER.__init__,
        "_PolicyAnalyzerServicer._get_provider_resource": _SERVICER._get_provider_resource,
        "_PolicyAnalyzerServicer._get_resource_options": _SERVICER._get_resource_options,
        "_PolicyAnalyzerServicer._get_enforcement_level": _SERVICER._get_enforcement_level,
        "_PolicyAnalyzerServicer._configure_runtime_settings": _SERVICER._configure_runtime_settings,
        "_PolicyAnalyzerServicer._create_report_violation": _SERVICER._create_report_violation,
        "_PolicyAnalyzerServicer._get_policy_config": _SERVICER._get_policy_config,
        "_PolicyAnalyzerServicer._map_enforcement_level": _SERVICER._map_enforcement_level,
        "PolicyResource": sdk.PolicyResource,
        "PolicyResourceOptions": sdk.PolicyResourceOptions,
        "StackValidationArgs": sdk.StackValidationArgs,
        "StackValidationPolicy.validate": sdk.StackValidationPolicy.validate,
        "ResourceValidationPolicy.validate": sdk.ResourceValidationPolicy.validate,
        "ResourceValidationPolicy.has_validation": sdk.ResourceValidationPolicy.has_validation,
        "deserialize.deserialize_properties": sdk_deserialize.deserialize_properties,
        "proxy.unknown_checking_proxy": sdk_proxy.unknown_checking_proxy,
        "proxy._proxy_helper": sdk_proxy._proxy_helper,
        "proxy._DictProxy": sdk_proxy._DictProxy,
        "proxy._ListProxy": sdk_proxy._ListProxy,
        "json_format.MessageToDict": json_format.MessageToDict,
        "json_format._Printer._MessageToJsonObject": _PRINTER._MessageToJsonObject,
        "json_format._Printer._ValueMessageToJsonObject": _PRINTER._ValueMessageToJsonObject,
        "json_format._Printer._ListValueMessageToJsonObject": _PRINTER._ListValueMessageToJsonObject,
        "json_format._Printer._StructMessageToJsonObject": _PRINTER._StructMessageToJsonObject,
        "json_format._Printer._FieldToJsonObject": _PRINTER._FieldToJsonObject,
    }


def fingerprints() -> dict[str, str]:
    """The installed SDK's fingerprints (what FINGERPRINTS must hold)."""
    found = {}
    for name, obj in _sources().items():
        try:
            source = inspect.getsource(cast(Any, obj))
        except (OSError, TypeError) as err:
            raise SdkMismatchError(f"shared_analysis: cannot read pulumi_policy's {name}: {err}") from err
        found[name] = hashlib.sha256(source.encode()).hexdigest()[:32]
    return found


def print_fingerprints() -> None:
    for name, digest in fingerprints().items():
        print(f'    "{name}": "{digest}",')


def check_sdk() -> None:
    """Raise SdkMismatchError unless the installed SDK is exactly what this module was written against."""
    where = f"{sdk.__file__} (pulumi-policy {VERSION})"
    if VERSION != PINNED_SDK:
        raise SdkMismatchError(
            f"shared_analysis patches pulumi-policy {PINNED_SDK} internals but {where} is installed: "
            f"re-read _PolicyAnalyzerServicer.Analyze, then update PINNED_SDK and FINGERPRINTS in "
            f"{__file__} and run tests/test_shared_analysis.py"
        )
    changed = sorted(name for name, digest in fingerprints().items() if FINGERPRINTS.get(name) != digest)
    if changed:
        raise SdkMismatchError(
            f"shared_analysis: the source of {', '.join(changed)} in {where} differs from what it was "
            f"written against; re-read them, then update FINGERPRINTS in {__file__} and run "
            "tests/test_shared_analysis.py"
        )
    globals_ = vars(sdk)
    expected = {
        "json_format": json_format,
        "deserialize_properties": sdk_deserialize.deserialize_properties,
        "unknown_checking_proxy": sdk_proxy.unknown_checking_proxy,
        "signature": inspect.signature,
    }
    wrong = sorted(k for k, v in expected.items() if globals_.get(k) is not v)
    if wrong:
        raise SdkMismatchError(
            f"shared_analysis: pulumi_policy.policy's {', '.join(wrong)} are not the SDK's own "
            "(patched twice, or by something else)"
        )
    # The memo finds a request's properties by identity: the protobuf runtime must hand back the
    # same submessage object on every access (upb does), or every lookup would miss (slow, not wrong).
    request = analyzer_pb2.AnalyzeRequest(provider=analyzer_pb2.AnalyzerProviderResource())
    stack = analyzer_pb2.AnalyzeStackRequest(resources=[analyzer_pb2.AnalyzerResource()])
    held = stack.resources[0].properties  # AnalyzeStack: each policy's loop reaches it anew
    if (
        request.properties is not request.properties
        or request.provider.properties is not request.provider.properties
        or next(iter(stack.resources)).properties is not held
    ):
        raise SdkMismatchError(
            "shared_analysis: this protobuf runtime returns a new object for each submessage access"
        )


class _Entry:
    """One properties message of the request being analysed, and what the SDK derives from it."""

    __slots__ = ("as_dict", "deserialized", "message", "proxy")

    def __init__(self, message: object, as_dict: dict[str, Any]) -> None:
        self.message = message  # strong references: their ids cannot be reused while this lives
        self.as_dict = as_dict
        self.deserialized: dict[str, Any] | None = None
        self.proxy: Any = None


class _Memo:
    """The entries of one request, found by the id of the message, of its dict, of its deserialisation."""

    __slots__ = ("by_deserialized", "by_dict", "by_message")

    def __init__(self) -> None:
        self.by_message: dict[int, _Entry] = {}
        self.by_dict: dict[int, _Entry] = {}
        self.by_deserialized: dict[int, _Entry] = {}


class _Request(threading.local):
    memo: _Memo | None = None


_REQUEST = _Request()
_message_to_dict = json_format.MessageToDict
_deserialize_properties = sdk_deserialize.deserialize_properties
_unknown_checking_proxy = sdk_proxy.unknown_checking_proxy
_STRUCT = struct_pb2.Struct.DESCRIPTOR


def _value_to_python(value: Any) -> Any:
    """`json_format._Printer._ValueMessageToJsonObject` for a `google.protobuf.Value`."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "struct_value":
        return _struct_to_dict(value.struct_value)
    if kind == "bool_value":
        return value.bool_value
    if kind == "number_value":
        number = value.number_value
        if math.isinf(number) or math.isnan(number):
            which = "Infinity" if math.isinf(number) else "NaN"
            raise ValueError(
                f"Fail to serialize {which} for Value.number_value, which would parse as string_value"
            )
        return number
    if kind == "list_value":
        return [_value_to_python(v) for v in value.list_value.values]
    return None  # null_value, or no kind set


def _struct_to_dict(struct: Any) -> dict[str, Any]:
    """`json_format.MessageToDict(struct)` for a `google.protobuf.Struct`: same keys, order and values."""
    fields = struct.fields
    return {key: _value_to_python(fields[key]) for key in fields}


def _to_dict(message: Any) -> Any:
    return _struct_to_dict(message) if message.DESCRIPTOR is _STRUCT else _message_to_dict(message)


class _JsonFormat:
    """`json_format` as pulumi_policy.policy sees it: MessageToDict shared within one request."""

    def __getattr__(self, name: str) -> Any:
        return getattr(json_format, name)

    @staticmethod
    def MessageToDict(message: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 (the SDK's name)
        if args or kwargs:
            return _message_to_dict(message, *args, **kwargs)
        memo = _REQUEST.memo
        if memo is None:
            return _to_dict(message)
        entry = memo.by_message.get(id(message))
        if entry is not None and entry.message is message:
            return entry.as_dict
        entry = _Entry(message, _to_dict(message))
        memo.by_message[id(message)] = entry
        memo.by_dict[id(entry.as_dict)] = entry
        return entry.as_dict


_JSON_FORMAT = _JsonFormat()


def _shared_deserialize_properties(props: dict[str, Any], proxy_secrets: bool = False) -> dict[str, Any]:
    memo = _REQUEST.memo
    if memo is not None and not proxy_secrets:
        entry = memo.by_dict.get(id(props))
        if entry is not None and entry.as_dict is props:
            if entry.deserialized is None:
                entry.deserialized = _deserialize_properties(props)
                memo.by_deserialized[id(entry.deserialized)] = entry
            return entry.deserialized
    return _deserialize_properties(props, proxy_secrets)


def _shared_unknown_checking_proxy(props: dict[str, Any]) -> Any:
    memo = _REQUEST.memo
    if memo is not None:
        entry = memo.by_deserialized.get(id(props))
        if entry is not None and entry.deserialized is props:
            if entry.proxy is None:
                entry.proxy = _freeze(_unknown_checking_proxy(props))
            return entry.proxy
    return _unknown_checking_proxy(props)


class _SharedDictProxy(sdk_proxy._DictProxy):
    """A `_DictProxy` every policy of the request sees: writing to it would leak into the next one."""

    def __setitem__(self, key: Any, value: Any) -> None:
        raise TypeError(
            f"a policy assigned resource property {key!r}: policies must not modify their args "
            "(the deserialised properties are shared by every policy analysing this resource)"
        )


def _freeze(value: Any) -> Any:
    kind = type(value)
    if kind is sdk_proxy._DictProxy:
        for child in vars(value)[_DICT_TARGET_ATTR].values():
            _freeze(child)
        value.__class__ = _SharedDictProxy
    elif kind is sdk_proxy._ListProxy:
        for child in vars(value)[_LIST_TARGET_ATTR]:
            _freeze(child)
    return value


_SHARED_STACK_MESSAGE = (
    "a stack policy modified a resource of its args: policies must not modify their args (the "
    "stack's PolicyResources are shared by every stack policy of the request)"
)


def _refuse_shared(*_: Any, **__: Any) -> None:
    """Every mutator of the shared stack objects below: one policy's change would be the next one's view."""
    raise TypeError(_SHARED_STACK_MESSAGE)


class _SharedList(list):  # type: ignore[type-arg]
    """A dependency list every stack policy sees."""

    append = extend = insert = remove = pop = clear = sort = reverse = _refuse_shared
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse_shared  # type: ignore[assignment]


class _SharedDict(dict):  # type: ignore[type-arg]
    """`property_dependencies`, shared by every stack policy."""

    __setitem__ = __delitem__ = __ior__ = _refuse_shared  # type: ignore[assignment]
    pop = popitem = clear = update = setdefault = _refuse_shared  # type: ignore[assignment]


class _SharedPolicyResource(sdk.PolicyResource):
    """A `PolicyResource` every stack policy of the request sees: its attributes cannot be reassigned."""

    __setattr__ = _refuse_shared


class _SharedPolicyResourceOptions(sdk.PolicyResourceOptions):
    """A resource's options, shared like the resource."""

    __setattr__ = _refuse_shared


def _stack_resources(servicer: Any, request: Any) -> list[sdk.PolicyResource]:
    """What the SDK's AnalyzeStack builds for each stack policy, built once: the same
    `PolicyResource`s, in the same order, with the same parent, dependency and property-dependency
    links (a URN listed twice: the last resource of that URN, as the SDK's map keeps it), then made
    read-only, since every stack policy gets these same objects."""
    built: list[tuple[sdk.PolicyResource, str, list[str], dict[str, list[str]]]] = []
    for r in request.resources:
        props = _shared_unknown_checking_proxy(
            _shared_deserialize_properties(_JSON_FORMAT.MessageToDict(r.properties))
        )
        opts = servicer._get_resource_options(r)
        opts.__class__ = _SharedPolicyResourceOptions
        provider = servicer._get_provider_resource(r)
        resource = sdk.PolicyResource(r.type, props, r.urn, r.name, opts, provider, None, [], {})
        property_dependencies = {k: list(v.urns) for k, v in r.propertyDependencies.items()}
        built.append((resource, r.parent, list(r.dependencies), property_dependencies))
    by_urn = {resource.urn: resource for resource, _, _, _ in built}
    for resource, parent, dependencies, property_dependencies in built:
        if parent in by_urn:  # "" (no parent) is no URN
            resource.parent = by_urn[parent]
        resource.dependencies = _SharedList(by_urn[d] for d in dependencies if d in by_urn)
        resource.property_dependencies = _SharedDict(
            (k, _SharedList(by_urn[d] for d in v if d in by_urn)) for k, v in property_dependencies.items()
        )
        resource.__class__ = _SharedPolicyResource  # last: its own attributes are set
    return [resource for resource, _, _, _ in built]


def _analyze_stack(servicer: Any, request: Any) -> Any:
    """The SDK's `_PolicyAnalyzerServicer.AnalyzeStack` (PINNED_SDK), line for line, except that the
    stack's resources are built once for all stack policies (`_stack_resources`) instead of once per
    policy: with 8 stack policies, that loop was half the pack's time at 5,000 resources. Each policy
    gets its own list of them; the same diagnostics, in the same order, with the same enforcement
    levels, messages, "can't run ... during preview" and not-applicable entries. As in the SDK,
    nothing is deserialised when no stack policy is enabled."""
    servicer._configure_runtime_settings()
    response = proto.AnalyzeResponse()
    attrs = vars(servicer)
    resources: list[sdk.PolicyResource] | None = None
    for policy in attrs[_POLICIES_ATTR]:
        enforcement_level = servicer._get_enforcement_level(policy)
        if enforcement_level == sdk.EnforcementLevel.DISABLED or not isinstance(
            policy, sdk.StackValidationPolicy
        ):
            continue
        if enforcement_level == sdk.EnforcementLevel.REMEDIATE:
            enforcement_level = sdk.EnforcementLevel.MANDATORY
        report_violation = servicer._create_report_violation(
            response, policy.name, policy.description, enforcement_level, policy.severity
        )
        if resources is None:
            resources = _stack_resources(servicer, request)
        config = servicer._get_policy_config(policy.name)
        args = sdk.StackValidationArgs(list(resources), config, attrs[_STACK_TAGS_ATTR])
        try:
            result = policy.validate(args, report_violation)
            if inspect.isawaitable(result):
                loop = asyncio.new_event_loop()
                task: asyncio.Task[Any] = asyncio.Task(cast(Any, result), loop=loop)
                loop.run_until_complete(task)
                loop.close()
        except sdk_proxy.UnknownValueError as e:
            response.diagnostics.append(
                proto.AnalyzeDiagnostic(
                    policyName=policy.name,
                    policyPackName=attrs[_PACK_NAME_ATTR],
                    policyPackVersion=attrs[_PACK_VERSION_ATTR],
                    message=(
                        f"can't run policy '{policy.name}' from policy pack "
                        f"'{attrs[_PACK_NAME_ATTR]}@v{attrs[_PACK_VERSION_ATTR]}' during preview: "
                        f"{e.message}"
                    ),
                    urn="",
                    description=policy.description,
                    enforcementLevel=servicer._map_enforcement_level(sdk.EnforcementLevel.ADVISORY),
                )
            )
        except sdk._NotApplicableError as e:
            response.not_applicable.append(
                proto.PolicyNotApplicable(policy_name=policy.name, reason=e.reason or "")
            )
    return response


def install(type_filters: Mapping[str, Callable[[str], bool]]) -> bool:
    """Patch the SDK (after check_sdk); call before PolicyPack(). False when disabled by DISABLE_ENV,
    or when the SDK is not the one this was written against: then the pack runs on the SDK's own path,
    slower but with the same verdicts, and says so on stderr. (Refusing to start would block every
    update of every stack the organisation enforces the pack on, for a speed-up.)

    `type_filters` maps a policy name to the predicate its validate checks first (pack_support)."""
    try:
        check_sdk()
    except SdkMismatchError as err:
        print(f"warning: {err}; the pack runs on the SDK's own (slower) path", file=sys.stderr)
        return False
    if os.environ.get(DISABLE_ENV, "").strip().lower() in ("off", "0", "false"):
        return False

    sdk_analyze = cast(Callable[[Any, Any, Any], Any], _SERVICER.Analyze)
    by_type: dict[str, list[sdk.Policy]] = {}

    def applicable(policies: list[sdk.Policy], resource_type: str) -> list[sdk.Policy]:
        found = by_type.get(resource_type)
        if found is None:
            found = [p for p in policies if p.name not in type_filters or type_filters[p.name](resource_type)]
            by_type[resource_type] = found
        return found

    def reaches_deserialization(servicer: Any, policies: list[sdk.Policy]) -> bool:
        """Whether the SDK's loop would deserialise the request for at least one policy."""
        return any(
            isinstance(p, sdk.ResourceValidationPolicy)
            and servicer._get_enforcement_level(p) != sdk.EnforcementLevel.DISABLED
            and p.has_validation()
            for p in policies
        )

    def analyze(self: Any, request: Any, context: Any) -> Any:
        policies: list[sdk.Policy] = vars(self)[_POLICIES_ATTR]
        view = copy.copy(self)
        vars(view)[_POLICIES_ATTR] = applicable(policies, request.type)
        _REQUEST.memo = _Memo()
        try:
            response = sdk_analyze(view, request, context)
            if reaches_deserialization(self, policies):
                # What the SDK's loop does first for a policy: a no-op (shared) unless no policy
                # matched, and then it fails where the SDK would have failed.
                _shared_unknown_checking_proxy(
                    _shared_deserialize_properties(_JSON_FORMAT.MessageToDict(request.properties))
                )
                self._get_resource_options(request)
                self._get_provider_resource(request)
            return response
        finally:
            _REQUEST.memo = None

    def analyze_stack(self: Any, request: Any, context: Any) -> Any:
        # The memo keeps every resource's dicts and proxies alive until the call ends: the collector
        # would only re-examine them (5,000 resources: 0.8 s instead of 0.5 s), so it pauses.
        enabled = gc.isenabled()
        gc.disable()
        _REQUEST.memo = _Memo()
        try:
            return _analyze_stack(self, request)
        finally:
            _REQUEST.memo = None
            if enabled:
                gc.enable()

    globals_ = vars(sdk)
    globals_["json_format"] = _JSON_FORMAT
    globals_["deserialize_properties"] = _shared_deserialize_properties
    globals_["unknown_checking_proxy"] = _shared_unknown_checking_proxy
    globals_["signature"] = functools.lru_cache(maxsize=16)(inspect.signature)
    cast(Any, _SERVICER).Analyze = analyze
    cast(Any, _SERVICER).AnalyzeStack = analyze_stack
    # Installed after the policy modules are imported, before the pack serves: what exists now lives as
    # long as the pack, so the collector need never traverse it again.
    gc.freeze()
    return True
