"""Launch a policy pack the way the Pulumi CLI does and drive it over `pulumirpc.Analyzer`.

The CLI starts a Python pack as `python -u -m pulumi.policy <engine-address> <pack-dir>`, reads
the port from the first line of its stdout, and talks gRPC. This module does the same: it serves
a real `pulumirpc.Engine` (so the pack's log calls land somewhere), turns a
`--policy-pack-config` JSON file into `Configure` requests with the CLI's rules (`all` sets the
default level, schema defaults are applied, properties are validated against the schema), and
sends the captured resources to `Analyze` and `AnalyzeStack`. The pack process is always stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import yaml
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import (
    analyzer_pb2,
    analyzer_pb2_grpc,
    engine_pb2,
    engine_pb2_grpc,
)

from preflight.engine import RESOURCE_SIG, SIG_KEY, Registration

LEVELS = {
    "advisory": analyzer_pb2.ADVISORY,
    "mandatory": analyzer_pb2.MANDATORY,
    "remediate": analyzer_pb2.REMEDIATE,
    "disabled": analyzer_pb2.DISABLED,
}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}
SEVERITY_NAMES = {
    analyzer_pb2.POLICY_SEVERITY_UNSPECIFIED: "",
    analyzer_pb2.POLICY_SEVERITY_LOW: "low",
    analyzer_pb2.POLICY_SEVERITY_MEDIUM: "medium",
    analyzer_pb2.POLICY_SEVERITY_HIGH: "high",
    analyzer_pb2.POLICY_SEVERITY_CRITICAL: "critical",
}
STARTUP_SECONDS = 30.0


class PolicyPackError(Exception):
    """The pack could not be started, configured or asked; the message says which and why."""


@dataclass(frozen=True)
class Violation:
    policy: str
    level: str  # advisory | mandatory
    message: str
    urn: str
    severity: str
    description: str

    @property
    def detail(self) -> str:
        """The violation without the policy description the SDK puts in front of it."""
        prefix = self.description + "\n"
        return self.message[len(prefix) :] if self.message.startswith(prefix) else self.message

    @property
    def resource_name(self) -> str:
        return self.urn.rsplit("::", 1)[-1] if self.urn else "(stack)"


@dataclass
class PolicyInfo:
    name: str
    description: str
    level: str
    severity: str
    framework: str
    remediation: str
    config_schema: dict[str, Any]


@dataclass
class AnalysisResult:
    pack: str
    version: str
    policies: list[PolicyInfo]
    violations: list[Violation] = field(default_factory=list)
    not_applicable: list[tuple[str, str]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    remediations: list[tuple[str, str]] = field(default_factory=list)  # (policy, urn)
    # The resources as analysed: remediated inputs where a `remediate` policy rewrote them.
    resources: list[Registration] = field(default_factory=list)

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.level == "mandatory"]


class _Engine(engine_pb2_grpc.EngineServicer):
    """The engine endpoint a pack logs to."""

    def __init__(self) -> None:
        self.logs: list[str] = []

    def Log(self, request: Any, context: Any) -> empty_pb2.Empty:  # noqa: N802
        self.logs.append(request.message)
        return empty_pb2.Empty()

    def GetRootResource(self, request: Any, context: Any) -> Any:  # noqa: N802
        return engine_pb2.GetRootResourceResponse(urn="")

    def SetRootResource(self, request: Any, context: Any) -> Any:  # noqa: N802
        return engine_pb2.SetRootResourceResponse()


class PolicyPackProcess:
    """`with PolicyPackProcess(pack_dir, ...) as pack:` a started pack; `pack.stub` to call it."""

    def __init__(self, pack_dir: Path, project: str, stack: str, python: str | None = None) -> None:
        self.pack_dir = pack_dir.resolve()
        self.project = project
        self.stack = stack
        self.python = python or sys.executable
        self.engine = _Engine()
        self._server: grpc.Server | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._channel: grpc.Channel | None = None
        self._stub: analyzer_pb2_grpc.AnalyzerStub | None = None
        self.engine_address = ""
        # Python packs report 0.0.1; the CLI takes the version from PulumiPolicy.yaml, as we do.
        manifest = yaml.safe_load((self.pack_dir / "PulumiPolicy.yaml").read_text()) or {}
        self.version = str(manifest.get("version", "0.0.1"))

    def __enter__(self) -> PolicyPackProcess:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        engine_pb2_grpc.add_EngineServicer_to_server(self.engine, self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.engine_address = f"127.0.0.1:{port}"
        env = dict(os.environ)
        env.update(
            PULUMI_PROJECT=self.project,
            PULUMI_STACK=self.stack,
            PULUMI_DRY_RUN="true",
            PULUMI_CONFIG="{}",
        )
        self._process = subprocess.Popen(
            [self.python, "-u", "-m", "pulumi.policy", self.engine_address, str(self.pack_dir)],
            cwd=self.pack_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    @property
    def stub(self) -> analyzer_pb2_grpc.AnalyzerStub:
        """The Analyzer client. Connecting waits for the pack's port, so a caller can start the pack,
        do other work (run the program) while it boots, and connect only when it needs it."""
        if self._stub is None:
            pack_port = self._read_port()
            self._channel = grpc.insecure_channel(f"127.0.0.1:{pack_port}")
            grpc.channel_ready_future(self._channel).result(timeout=STARTUP_SECONDS)
            self._stub = analyzer_pb2_grpc.AnalyzerStub(self._channel)
        return self._stub

    def _read_port(self) -> int:
        assert self._process is not None and self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], STARTUP_SECONDS)
        line = self._process.stdout.readline().decode().strip() if ready else ""
        if not line.isdigit():
            self._process.kill()
            _, err = self._process.communicate(timeout=10)
            detail = err.decode(errors="replace").strip() or f"first stdout line was {line!r}"
            raise PolicyPackError(f"policy pack {self.pack_dir} did not start: {detail}")
        return int(line)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._process is not None:
            if self._process.poll() is None:
                # The SDK's server loop stops cleanly on KeyboardInterrupt (SIGINT).
                self._process.send_signal(signal.SIGINT)
                try:
                    self._process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            for stream in (self._process.stdout, self._process.stderr):
                if stream is not None:
                    stream.close()
            self._process = None
        if self._server is not None:
            self._server.stop(None)
            self._server = None


def load_policy_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise PolicyPackError(f"{path}: policy config file not found") from err
    except json.JSONDecodeError as err:
        raise PolicyPackError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise PolicyPackError(f"{path}: must be a JSON object of policy name -> level or settings")
    return data


def build_configure_request(
    info: analyzer_pb2.AnalyzerInfo, config: dict[str, Any], source: str = "policy config"
) -> analyzer_pb2.ConfigureAnalyzerRequest:
    """The CLI's reconciliation of `--policy-pack-config` with the pack's declared schemas."""
    policies = {p.name: p for p in info.policies}
    unknown = sorted(k for k in config if k != "all" and k not in policies)
    if unknown:
        raise PolicyPackError(
            f"{source}: unknown policies {', '.join(unknown)}; the pack has {', '.join(sorted(policies))}"
        )
    default_level = _level(config.get("all"), f"{source}: all") if "all" in config else None
    request = analyzer_pb2.ConfigureAnalyzerRequest()
    for name, policy in policies.items():
        entry = config.get(name)
        level = default_level if default_level is not None else policy.enforcementLevel
        props: dict[str, Any] = {}
        if isinstance(entry, str):
            level = _level(entry, f"{source}: {name}")
        elif isinstance(entry, dict):
            props = {k: v for k, v in entry.items() if k != "enforcementLevel"}
            if "enforcementLevel" in entry:
                level = _level(entry["enforcementLevel"], f"{source}: {name}.enforcementLevel")
        elif entry is not None:
            raise PolicyPackError(f"{source}: {name} must be a level or an object")
        schema = _schema(policy)
        for key, prop_schema in schema["properties"].items():
            if key not in props and "default" in prop_schema:
                props[key] = prop_schema["default"]
        try:
            jsonschema.validate(props, schema)
        except jsonschema.ValidationError as err:
            where = ".".join(str(p) for p in err.absolute_path)
            raise PolicyPackError(f"{source}: {name}.{where}: {err.message}") from err
        struct = struct_pb2.Struct()
        struct.update(props)
        request.policyConfig[name].CopyFrom(
            analyzer_pb2.PolicyConfig(enforcementLevel=level, properties=struct)
        )
    return request


def _schema(policy: analyzer_pb2.PolicyInfo) -> dict[str, Any]:
    properties = json_format.MessageToDict(policy.configSchema.properties)
    return {
        "type": "object",
        "properties": properties,
        "required": list(policy.configSchema.required),
        "additionalProperties": False,
    }


def _level(value: Any, where: str) -> analyzer_pb2.EnforcementLevel.ValueType:
    if value not in LEVELS:
        raise PolicyPackError(f"{where}: {value!r} is not one of {', '.join(LEVELS)}")
    return LEVELS[value]


def to_wire(value: Any) -> Any:
    """Inputs as the engine sends them to analyzers: resource references become their id/URN."""
    if isinstance(value, dict):
        if value.get(SIG_KEY) == RESOURCE_SIG:
            return value.get("id") or value.get("urn", "")
        return {k: to_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_wire(v) for v in value]
    return value


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(to_wire(value))
    return struct


def _options(r: Registration) -> analyzer_pb2.AnalyzerResourceOptions:
    return analyzer_pb2.AnalyzerResourceOptions(
        protect=r.protect,
        ignoreChanges=r.ignore_changes,
        deleteBeforeReplace=r.delete_before_replace,
        deleteBeforeReplaceDefined=r.delete_before_replace,
        additionalSecretOutputs=r.additional_secret_outputs,
        aliases=[a for a in r.aliases if a.startswith("urn:")],
        parent=r.parent,
    )


def _provider(
    r: Registration, by_urn: dict[str, Registration]
) -> analyzer_pb2.AnalyzerProviderResource | None:
    """An explicit provider (a reference is `<urn>::<id>`); default providers are the engine's."""
    found = by_urn.get(r.provider.rsplit("::", 1)[0]) if r.provider else None
    if found is None:
        return None
    return analyzer_pb2.AnalyzerProviderResource(
        type=found.type, urn=found.urn, name=found.name, properties=_struct(found.inputs)
    )


def analyze(
    packs: PolicyPackProcess | Sequence[PolicyPackProcess],
    resources: list[Registration],
    policy_config: dict[str, Any],
    organization: str = "organization",
    config_source: str = "policy config",
) -> AnalysisResult:
    """One full round: Handshake, ConfigureStack, GetAnalyzerInfo, Configure, Analyze*, AnalyzeStack.

    With several pack processes (the same pack, one per core), `Analyze` calls are spread over them
    and run in flight together; each resource is still analysed exactly once, and the stack once.
    The Python SDK re-reads a resource's properties for every policy, so one pack process is
    CPU-bound; more processes are the way to use more cores.
    """
    pool = [packs] if isinstance(packs, PolicyPackProcess) else list(packs)
    try:
        for pack in pool:
            _open(pack, organization)
        info = pool[0].stub.GetAnalyzerInfo(empty_pb2.Empty())
        configure = build_configure_request(info, policy_config, config_source)
        for pack in pool:
            pack.stub.Configure(configure)
        result = AnalysisResult(
            pack=info.name,
            version=pool[0].version,
            policies=[_policy_info(p) for p in info.policies],
        )
        if any(c.enforcementLevel == analyzer_pb2.REMEDIATE for c in configure.policyConfig.values()):
            resources = [_remediate(pool[0], r, result) for r in resources]
        by_urn = {r.urn: r for r in resources}
        in_flight = [
            pool[i % len(pool)].stub.Analyze.future(
                analyzer_pb2.AnalyzeRequest(
                    type=r.type,
                    properties=_struct(r.inputs),
                    urn=r.urn,
                    name=r.name,
                    options=_options(r),
                    provider=_provider(r, by_urn),
                )
            )
            for i, r in enumerate(resources)
        ]
        for r, call in zip(resources, in_flight, strict=True):
            _collect(result, call.result(), default_urn=r.urn)
        stack_response = pool[0].stub.AnalyzeStack(
            analyzer_pb2.AnalyzeStackRequest(
                resources=[
                    analyzer_pb2.AnalyzerResource(
                        type=r.type,
                        properties=_struct(r.inputs),
                        urn=r.urn,
                        name=r.name,
                        options=_options(r),
                        provider=_provider(r, by_urn),
                        parent=r.parent,
                        dependencies=r.dependencies,
                        propertyDependencies={
                            k: analyzer_pb2.AnalyzerPropertyDependencies(urns=v)
                            for k, v in r.property_dependencies.items()
                        },
                    )
                    for r in resources
                ]
            )
        )
        _collect(result, stack_response, default_urn="")
    except grpc.RpcError as err:
        raise PolicyPackError(f"policy pack call failed: {err.code().name}: {err.details()}") from err
    result.violations.sort(key=lambda v: (v.level != "mandatory", v.policy, v.urn))
    result.logs += [line for pack in pool for line in pack.engine.logs]
    result.resources = resources
    return result


def _remediate(pack: PolicyPackProcess, r: Registration, result: AnalysisResult) -> Registration:
    """What the engine does before analysing a resource: let `remediate` policies rewrite its inputs."""
    response = pack.stub.Remediate(
        analyzer_pb2.AnalyzeRequest(
            type=r.type, properties=_struct(r.inputs), urn=r.urn, name=r.name, options=_options(r)
        )
    )
    inputs = r.inputs
    for remediation in response.remediations:
        if remediation.diagnostic:
            result.logs.append(f"{remediation.policyName}: {remediation.diagnostic}")
        if remediation.HasField("properties"):
            inputs = json_format.MessageToDict(remediation.properties)
            result.remediations.append((remediation.policyName, r.urn))
    return dataclasses.replace(r, inputs=inputs) if inputs is not r.inputs else r


def _open(pack: PolicyPackProcess, organization: str) -> None:
    """Handshake (tolerated as unimplemented by older packs) and ConfigureStack."""
    try:
        pack.stub.Handshake(
            analyzer_pb2.AnalyzerHandshakeRequest(
                engine_address=pack.engine_address,
                root_directory=str(pack.pack_dir),
                program_directory=str(pack.pack_dir),
            )
        )
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.UNIMPLEMENTED:  # older packs predate Handshake
            raise PolicyPackError(f"Handshake failed: {err.details()}") from err
    pack.stub.ConfigureStack(
        analyzer_pb2.AnalyzerStackConfigureRequest(
            stack=pack.stack, project=pack.project, organization=organization, dry_run=True
        )
    )


def _policy_info(p: analyzer_pb2.PolicyInfo) -> PolicyInfo:
    framework = " ".join(x for x in (p.framework.name, p.framework.reference) if x)
    return PolicyInfo(
        name=p.name,
        description=p.description,
        level=LEVEL_NAMES.get(p.enforcementLevel, "advisory"),
        severity=SEVERITY_NAMES.get(p.severity, ""),
        framework=framework,
        remediation=p.remediation_steps,
        config_schema=_schema(p)["properties"],
    )


def _collect(result: AnalysisResult, response: analyzer_pb2.AnalyzeResponse, default_urn: str) -> None:
    for d in response.diagnostics:
        result.violations.append(
            Violation(
                policy=d.policyName,
                level=LEVEL_NAMES.get(d.enforcementLevel, "advisory"),
                message=d.message,
                urn=d.urn or default_urn,
                severity=SEVERITY_NAMES.get(d.severity, ""),
                description=d.description,
            )
        )
    for n in response.not_applicable:
        result.not_applicable.append((n.policy_name, n.reason))
