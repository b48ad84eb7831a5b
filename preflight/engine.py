"""Run the Pulumi program under the SDK's official mocks and capture every registration.

`pulumi.runtime.set_mocks` stands in for the engine's resource monitor; `CapturingMonitor`
subclasses the SDK's `MockMonitor` to record each `RegisterResource` request exactly as the
program sent it (type, parent, dependencies, provider, options, inputs on the wire with secret
markers and unknowns). The mocks answer with deterministic placeholder outputs (ids, ARNs, image
digests), so the graph is concrete; they are not a cloud provider and check nothing a provider
would.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import hashlib
import json
import os
import runpy
import sys
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi.runtime
import pulumi.runtime.resource as sdk_resource
from google.protobuf import json_format
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs, Mocks
from pulumi.runtime.proto import source_pb2
from pulumi.runtime.stack import run_pulumi_func

from preflight.stackconfig import StackConfig

# Wire-format signatures (sdk/go/common/resource/sig).
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
PLACEHOLDER_ACCOUNT = "123456789012"
AZURE_SUBSCRIPTION = "/subscriptions/00000000-0000-0000-0000-000000000000"
UNKNOWN_OUTPUT = "[unknown until pulumi up]"  # a stack output not known during a preview


@dataclass
class Registration:
    """One `RegisterResource` request as the monitor received it (defaults: a plain custom resource)."""

    urn: str
    type: str
    name: str
    inputs: dict[str, Any]  # wire format: secrets stay `{SIG_KEY: SECRET_SIG, "value": ...}`
    custom: bool = True
    parent: str = ""
    dependencies: list[str] = field(default_factory=list)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    provider: str = ""
    protect: bool = False
    retain_on_delete: bool = False
    delete_before_replace: bool = False
    ignore_changes: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    additional_secret_outputs: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    id: str = ""  # the id the mocks answered (a placeholder); what `<urn>::<id>` provider references name


@dataclass
class ProgramRun:
    stack: str
    project: str
    resources: list[Registration]
    outputs: dict[str, Any]
    secret_outputs: list[str]
    error: BaseException | None = None
    error_text: str = ""
    # What the run's builds and copies pushed (`<repository>:<tag>` -> digest), for a next run.
    pushed: dict[str, str] = field(default_factory=dict)

    def by_type(self, type_: str) -> list[Registration]:
        return [r for r in self.resources if r.type == type_]

    def get(self, type_: str, name: str) -> Registration:
        for r in self.resources:
            if r.type == type_ and r.name == name:
                return r
        raise KeyError(f"no {type_} named {name!r}")


class CapturingMonitor(MockMonitor):
    """The SDK's MockMonitor, plus a record of every registration with its options.

    `on_register`, when given, is called with each Registration as soon as it is recorded, from the
    thread that registered it (see `registrations_to`)."""

    def __init__(self, mocks: Mocks, on_register: Callable[[Registration], None] | None = None) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []
        self.on_register = on_register

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type == "pulumi:pulumi:Stack":
            return response
        registration = Registration(
            urn=response.urn,
            type=request.type,
            name=request.name,
            custom=bool(request.custom),
            parent=request.parent,
            dependencies=list(request.dependencies),
            property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
            provider=request.provider,
            protect=bool(request.protect),
            retain_on_delete=bool(request.retainOnDelete),
            delete_before_replace=bool(request.deleteBeforeReplace),
            ignore_changes=list(request.ignoreChanges),
            aliases=[json_format.MessageToJson(a, indent=None) for a in request.aliases]
            + list(request.aliasURNs),
            additional_secret_outputs=list(request.additionalSecretOutputs),
            inputs=json_format.MessageToDict(request.object),
            outputs=json_format.MessageToDict(response.object),
            id=response.id,
        )
        self.registrations.append(registration)
        if self.on_register is not None:
            self.on_register(registration)
        return response


def _digest(seed: Any) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(seed, sort_keys=True, default=str).encode()).hexdigest()


class PlaceholderMocks(Mocks):
    """Deterministic outputs for what a provider would compute; inputs are echoed back."""

    def __init__(self, region: str, registry: dict[str, str] | None = None) -> None:
        self.region = region
        # What builds and copies pushed, `<repository>:<tag>` -> digest. Older slots resolve their tag
        # here first, as a real registry returns what an earlier update pushed; pass the same dict to
        # two runs to stand for two successive updates (plan comparisons across versions).
        self.registry = {} if registry is None else registry
        self._computed: dict[str, Callable[[MockResourceArgs], dict[str, Any]]] = {
            "aws:ecr/repository:Repository": self._ecr_repository,
            "aws:kms/key:Key": lambda a: {"keyId": f"{a.name}-key-id"},
            "docker-build:index:Image": self._image,
            "docker-build:index:Index": self._index,
            "aws:eks/cluster:Cluster": self._eks_cluster,
            "aws:ec2/launchTemplate:LaunchTemplate": lambda a: {"latestVersion": 1},
            "gcp:cloudrunv2/service:Service": lambda a: {
                "uri": f"https://{a.inputs['name']}-x7q2ab3c4d-ew.a.run.app"
            },
            "gcp:serviceaccount/account:Account": lambda a: {
                "email": f"{a.inputs['accountId']}@{a.inputs['project']}.iam.gserviceaccount.com"
            },
            "azure-native:containerinstance:ContainerGroup": self._container_group,
            "azure-native:cdn:AFDEndpoint": lambda a: {
                "hostName": f"{a.inputs['endpointName']}-abc123.z01.azurefd.net"
            },
            "aws:iam/openIdConnectProvider:OpenIdConnectProvider": lambda a: {
                "arn": f"arn:aws:iam::{PLACEHOLDER_ACCOUNT}:oidc-provider/{str(a.inputs['url']).split('://')[1]}"
            },
            "gcp:iam/workloadIdentityPool:WorkloadIdentityPool": lambda a: {
                "name": f"projects/123456789/locations/global/workloadIdentityPools/"
                f"{a.inputs['workloadIdentityPoolId']}"
            },
            "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider": lambda a: {
                "name": f"projects/123456789/locations/global/workloadIdentityPools/"
                f"{a.inputs['workloadIdentityPoolId']}/providers/{a.inputs['workloadIdentityPoolProviderId']}"
            },
            "azure-native:managedidentity:UserAssignedIdentity": lambda a: {
                "principalId": hashlib.sha256(a.name.encode()).hexdigest()[:32],
                "clientId": hashlib.sha256(a.name.encode()).hexdigest()[32:],
            },
            "aws:lb/loadBalancer:LoadBalancer": lambda a: {
                "dnsName": f"{a.name}-123456.{self.region}.elb.amazonaws.com"
            },
            "azure-native:resources:ResourceGroup": lambda a: {"name": a.inputs["resourceGroupName"]},
            "azure-native:containerregistry:Registry": lambda a: {
                "name": a.inputs["registryName"],
                "loginServer": f"{a.inputs['registryName'].lower()}.azurecr.io",
            },
        }

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        state = dict(args.inputs)
        state.setdefault("name", args.name)  # what auto-naming would compute
        if args.typ == "azure-native:resources:ResourceGroup":
            state["id"] = f"{AZURE_SUBSCRIPTION}/resourceGroups/{args.inputs['resourceGroupName']}"
        elif args.typ.startswith("azure-native:"):
            state.setdefault("id", f"{AZURE_SUBSCRIPTION}/providers/{args.typ.split(':')[1]}/{args.name}")
        if args.typ.startswith("aws:"):
            service = args.typ.split(":")[1].split("/")[0]
            region = "" if service == "iam" else self.region  # IAM ARNs carry no region
            state.setdefault("arn", f"arn:aws:{service}:{region}:{PLACEHOLDER_ACCOUNT}:{args.name}")
        computed = self._computed.get(args.typ)
        if computed is not None:
            state.update(computed(args))
        return str(state["id"]) if args.typ.startswith("azure-native:") else f"{args.name}-id", state

    def call(self, args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if args.token == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            registry = args.args.get("registryId") or PLACEHOLDER_ACCOUNT
            return {
                "userName": "AWS",
                "password": "preflight-placeholder-token",
                "authorizationToken": "preflight-placeholder-token",
                "proxyEndpoint": f"https://{registry}.dkr.ecr.{self.region}.amazonaws.com",
                "expiresAt": "2099-01-01T00:00:00Z",
                "id": self.region,
            }, []
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": PLACEHOLDER_ACCOUNT,
                "arn": f"arn:aws:iam::{PLACEHOLDER_ACCOUNT}:user/preflight",
                "userId": "AIDAPREFLIGHT",
                "id": PLACEHOLDER_ACCOUNT,
            }, []
        if args.token == "aws:index/getRegion:getRegion":
            return {"region": self.region, "name": self.region, "id": self.region}, []
        if args.token == "aws:elb/getServiceAccount:getServiceAccount":
            return {"arn": "arn:aws:iam::156460612806:root", "id": "156460612806"}, []
        if args.token == "docker:index/getRegistryImage:getRegistryImage":
            name = str(args.args.get("name"))
            return {"sha256Digest": self.registry.get(name) or _digest(name), "name": name}, []
        if args.token == "azure-native:authorization:getClientConfig":
            return {
                "subscriptionId": "00000000-0000-0000-0000-000000000000",
                "tenantId": "00000000-0000-0000-0000-000000000001",
                "clientId": "00000000-0000-0000-0000-000000000002",
                "objectId": "00000000-0000-0000-0000-000000000003",
            }, []
        if args.token == "aws:ecr/getImage:getImage":
            seed = [args.args.get("repositoryName"), args.args.get("imageTag")]
            account = args.args.get("registryId") or PLACEHOLDER_ACCOUNT
            pushed = f"{account}.dkr.ecr.{self.region}.amazonaws.com/{seed[0]}:{seed[1]}"
            return {"imageDigest": self.registry.get(pushed) or _digest(seed), "id": "image"}, []
        if args.token == "gcp:cloudrunv2/getService:getService":
            # A live service that routes no traffic: older slots get the names the program's rule gives.
            return {"name": args.args.get("name"), "trafficStatuses": [], "traffics": []}, []
        if args.token == "gcp:organizations/getClientConfig:getClientConfig":
            return {"accessToken": "preflight-placeholder-token", "id": "client-config"}, []
        return {}, []

    def _ecr_repository(self, args: MockResourceArgs) -> dict[str, Any]:
        name = args.inputs.get("name") or args.name
        return {
            "repositoryUrl": f"{PLACEHOLDER_ACCOUNT}.dkr.ecr.{self.region}.amazonaws.com/{name}",
            "registryId": PLACEHOLDER_ACCOUNT,
        }

    def _container_group(self, args: MockResourceArgs) -> dict[str, Any]:
        ip = dict(args.inputs.get("ipAddress") or {})
        label = ip.get("dnsNameLabel")
        if label:
            ip["fqdn"] = f"{label}.{args.inputs.get('location', 'westeurope')}.azurecontainer.io"
        else:
            ip["ip"] = "10.60.0.4"
        state: dict[str, Any] = {"ipAddress": ip}
        identity = dict(args.inputs.get("identity") or {})
        if isinstance(identity.get("userAssignedIdentities"), list):
            # azure-native takes a list of identity ids and reports a map keyed by id.
            identity["userAssignedIdentities"] = {i: {} for i in identity["userAssignedIdentities"]}
            state["identity"] = identity
        return state

    def _eks_cluster(self, args: MockResourceArgs) -> dict[str, Any]:
        cluster_id = hashlib.sha256(args.name.encode()).hexdigest()[:32].upper()
        return {
            "endpoint": f"https://{cluster_id}.gr7.{self.region}.eks.amazonaws.com",
            "certificateAuthority": {"data": "cHJlZmxpZ2h0LXBsYWNlaG9sZGVyLWNh"},
            "identities": [
                {"oidcs": [{"issuer": f"https://oidc.eks.{self.region}.amazonaws.com/id/{cluster_id}"}]}
            ],
        }

    def _image(self, args: MockResourceArgs) -> dict[str, Any]:
        # The same inputs give the same digest, like a reproducible build would.
        seed = {k: v for k, v in args.inputs.items() if k not in ("registries", "secrets")}
        digest = _digest(seed)
        tags = [str(t) for t in args.inputs.get("tags") or []]
        self.registry.update(dict.fromkeys(tags, digest))
        ref = f"{tags[0].rsplit(':', 1)[0]}@{digest}" if tags else ""
        return {"digest": digest, "ref": ref}

    def _index(self, args: MockResourceArgs) -> dict[str, Any]:
        # `imagetools create` with one source that is an index is a carbon copy: the source's digest.
        # Several sources make a new index (its own digest). The provider reports `<tag>@<digest>`.
        sources = [str(s) for s in args.inputs.get("sources") or []]
        single = len(sources) == 1 and "@" in sources[0]
        digest = sources[0].split("@", 1)[1] if single else _digest(sources)
        self.registry[str(args.inputs.get("tag"))] = digest
        return {"ref": f"{args.inputs.get('tag')}@{digest}"}


@contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    old_cwd = os.getcwd()
    old_path = list(sys.path)
    os.chdir(path)
    sys.path.insert(0, str(path))
    try:
        yield
    finally:
        os.chdir(old_cwd)
        sys.path[:] = old_path


_ON_REGISTER: contextvars.ContextVar[Callable[[Registration], None] | None] = contextvars.ContextVar(
    "preflight_on_register", default=None
)


@contextmanager
def registrations_to(on_register: Callable[[Registration], None]) -> Iterator[None]:
    """Inside this block (this thread), `run_program`/`run_function` also pass each resource to
    `on_register` as the monitor captures it, from the registering thread: the CLI streams them to the
    policy pack while the program still runs. A block, not an argument, so that the CLI calls
    `run_program` as everyone else does (tests stand in for it with that signature). It must not block.
    """
    token = _ON_REGISTER.set(on_register)
    try:
        yield
    finally:
        _ON_REGISTER.reset(token)


def run_program(
    project_dir: Path, config: StackConfig, preview: bool = True, registry: dict[str, str] | None = None
) -> ProgramRun:
    """Run `<project_dir>/__main__.py` once, in a fresh context and event loop.

    `registry` (see `PlaceholderMocks`) carries what one run pushed into the next; see also
    `registrations_to`.
    """
    main = str(project_dir.resolve() / "__main__.py")

    def program() -> None:
        runpy.run_path(main, run_name="__main__")

    return run_function(program, project_dir, config, preview, registry)


def run_function(
    program: Callable[[], None],
    project_dir: Path,
    config: StackConfig,
    preview: bool = True,
    registry: dict[str, str] | None = None,
) -> ProgramRun:
    """Run `program` under the same mocks as a whole program: what tests use to build components
    directly (with the stack's config set, from `project_dir`), as pulumi-awsx's tests do."""
    on_register = _ON_REGISTER.get()
    with collector_paused():
        # A fresh context: fresh Pulumi settings, config and root stack. Not kept in a variable: it
        # holds the run's SDK objects, which must be garbage before collector_paused collects.
        return contextvars.Context().run(
            _run_program, program, project_dir.resolve(), config, preview, registry, on_register
        )


_RUNS_FINISHED = [0]  # program runs this process has finished (see collector_paused)


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a program imports its providers and registers resources.

    Why: a run allocates hundreds of thousands of GC-tracked objects (the provider modules, then per
    resource its Outputs, futures and asyncio tasks) and frees few of them, so the collector's passes
    keep re-examining a growing heap for nothing: with it running, the SDK alone registering N
    trivial resources costs 1.0 ms each at 500 and 2.6 ms at 2,000; without it, 0.8 ms, flat (see
    bench/scaling.py for the program). So what is alive before the run (earlier imports and runs) is
    frozen (`gc.freeze`: never traversed again), and the collector is off during the run and restored
    after it, even when the program fails.

    Then the run's cyclic garbage: from the second run of a process on, one full pass frees it (a
    fifth of a second for the prod stack: what a process that runs many programs, like a test worker,
    needs) before what survives is frozen too. The first run's is frozen with the rest instead: that
    pass would have to traverse the provider modules the run just imported (0.7 s), and most
    processes (`python -m preflight`, each program of `preflight diff`) exit after one run; the cost
    is one run's garbage kept for the life of the process. Frozen, neither a later pass nor the
    interpreter's final one at exit traverses it (that alone was 1.8 s of a prod preflight).
    Reference counting frees acyclic objects either way.
    """
    enabled = gc.isenabled()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        try:
            if _RUNS_FINISHED[0]:
                gc.collect()
            gc.freeze()
        finally:
            _RUNS_FINISHED[0] += 1
            if enabled:
                gc.enable()


@contextmanager
def _no_source_positions() -> Iterator[None]:
    """The SDK walks the Python stack for every resource (`traceback.extract_stack`, then a file URI
    per frame) to send the engine a source position for its diagnostics; the mock monitor records
    none of it, and it was a tenth of the registration time. So, during a run, the SDK's
    `_get_stack_trace` (pulumi.runtime.resource) answers an empty trace, as it does when it finds no
    user frame; an SDK without that function is left alone."""
    real = getattr(sdk_resource, "_get_stack_trace", None)
    if real is None:
        yield
        return
    sdk_resource._get_stack_trace = source_pb2.StackTrace
    try:
        yield
    finally:
        sdk_resource._get_stack_trace = real


def _run_program(
    program: Callable[[], None],
    project_dir: Path,
    config: StackConfig,
    preview: bool,
    registry: dict[str, str] | None,
    on_register: Callable[[Registration], None] | None,
) -> ProgramRun:
    region = config.values.get("aws:region", "us-east-1")
    mocks = PlaceholderMocks(region, registry)
    monitor = CapturingMonitor(mocks, on_register)
    loop = asyncio.new_event_loop()
    # The SDK calls the monitor in the loop's default thread pool: this one, so that its threads end
    # with the run rather than some time after it, holding the run's last objects (which
    # collector_paused would then freeze instead of freeing).
    monitor_threads = ThreadPoolExecutor(thread_name_prefix="preflight-monitor")
    loop.set_default_executor(monitor_threads)
    asyncio.set_event_loop(loop)
    finished = False
    error: BaseException | None = None
    error_text = ""
    outputs: dict[str, Any] = {}
    secret_outputs: list[str] = []
    try:
        pulumi.runtime.set_mocks(
            monitor.mocks,
            project=config.project,
            stack=config.stack,
            preview=preview,
            monitor=monitor,
        )
        pulumi.runtime.set_all_config(dict(config.values), list(config.secret_keys))
        with _working_directory(project_dir), _no_source_positions():
            try:
                loop.run_until_complete(run_pulumi_func(program))
                outputs, secret_outputs = loop.run_until_complete(_stack_outputs())
            except pulumi.RunError as err:
                error, error_text = err, str(err)
            except Exception as err:  # noqa: BLE001 - any program failure is reported, not raised
                error, error_text = err, "".join(traceback.format_exception(err))
        finished = True
    finally:
        loop.close()
        asyncio.set_event_loop(None)
        monitor_threads.shutdown(wait=finished)  # interrupted: the process reports and exits
    return ProgramRun(
        stack=config.stack,
        project=config.project,
        resources=monitor.registrations,
        outputs=outputs,
        secret_outputs=secret_outputs,
        error=error,
        error_text=error_text,
        pushed=dict(mocks.registry),
    )


async def _stack_outputs() -> tuple[dict[str, Any], list[str]]:
    """Resolve `pulumi.export`ed values, key by key, so one unknown does not hide its siblings.

    Secret values are reported by their path, never by value.
    """
    root = pulumi.runtime.get_root_resource()
    exported: dict[str, Any] = getattr(root, "outputs", {}) or {}
    secrets: list[str] = []
    values = {name: await _resolve(value, name, secrets) for name, value in exported.items()}
    return values, secrets


async def _resolve(value: Any, path: str, secrets: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: await _resolve(v, f"{path}.{k}", secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [await _resolve(v, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    if not isinstance(value, pulumi.Output):
        return value
    if await value.is_secret():
        secrets.append(path)
        return "[secret]"
    if not await value.is_known():
        return UNKNOWN_OUTPUT
    return await _resolve(await value.future(), path, secrets)


@dataclass(frozen=True)
class PlanDiff:
    """What a config change does to the graph, by (type, name): resources added, removed, changed."""

    added: frozenset[tuple[str, str]]
    removed: frozenset[tuple[str, str]]
    changed: frozenset[tuple[str, str]]
    # For changed resources: which top-level inputs differ.
    fields: dict[tuple[str, str], frozenset[str]]


def plan_diff(before: ProgramRun, after: ProgramRun) -> PlanDiff:
    a = {r.urn: r for r in before.resources}
    b = {r.urn: r for r in after.resources}

    def key(r: Registration) -> tuple[str, str]:
        return r.type, r.name

    def options(r: Registration) -> tuple[Any, ...]:
        return (r.protect, r.parent, r.provider, r.ignore_changes, r.aliases, r.retain_on_delete)

    fields: dict[tuple[str, str], frozenset[str]] = {}
    for urn in a.keys() & b.keys():
        old, new = a[urn], b[urn]
        changed = {k for k in old.inputs.keys() | new.inputs.keys() if old.inputs.get(k) != new.inputs.get(k)}
        if options(old) != options(new):
            changed.add("(options)")
        if changed:
            fields[key(old)] = frozenset(changed)
    return PlanDiff(
        added=frozenset(key(b[u]) for u in b.keys() - a.keys()),
        removed=frozenset(key(a[u]) for u in a.keys() - b.keys()),
        changed=frozenset(fields),
        fields=fields,
    )
