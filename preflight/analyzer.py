"""Launch a policy pack the way the Pulumi CLI does and drive it over `pulumirpc.Analyzer`.

The CLI starts a Python pack as `python -u -m pulumi.policy <engine-address> <pack-dir>`, reads
the port from the first line of its stdout, and talks gRPC. This module does the same: it serves
a real `pulumirpc.Engine` (so the pack's log calls land somewhere), turns a
`--policy-pack-config` JSON file into `Configure` requests with the CLI's rules (`all` sets the
default level, schema defaults are applied, properties are validated against the schema), and
sends the captured resources to `Analyze` and `AnalyzeStack`.

Every wait on the pack has a deadline (`Deadlines`; `PREFLIGHT_PACK_TIMEOUT=<seconds>` raises them all
for slow machines), and a pack that exits, hangs or answers garbage is a `PolicyPackError` that says
which. The pack runs in its own process group, and the whole group is always stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import math
import os
import queue
import select
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
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
# Deadlines, with a wide margin (over 100x) over `python -m preflight --stack prod` (about 160 resources)
# on a 2-core machine: the pack announces its port and accepts connections in 0.2 s (1.3 s with no
# bytecode cache), the small calls answer in under 10 ms, and all the Analyze calls, sent at once, were
# answered within 0.25 s of being sent (0.5 s cold or with both cores busy). An Analyze deadline counts
# from when the call is sent; with at most ANALYZE_WINDOW in flight it covers that many, not the batch.
STARTUP_SECONDS = 30.0  # from launch to the port on stdout, then to the pack accepting connections
CALL_SECONDS = 20.0  # Handshake, ConfigureStack, GetAnalyzerInfo, Configure
ANALYZE_SECONDS = 60.0  # each Analyze, Remediate and AnalyzeStack
TIMEOUT_ENV = "PREFLIGHT_PACK_TIMEOUT"  # seconds: replaces every deadline above
STOP_SECONDS = 5.0  # from SIGTERM to SIGKILL, for a pack that handles SIGTERM itself
# Analyze calls in flight per pack process. Enough to keep its four gRPC workers busy (1,000 calls: the
# same time as all of them at once); never thousands at once, which gRPC answered CANCELLED at 2,600
# resources and more, and each call's deadline then runs from when the pack can take it up.
ANALYZE_WINDOW = 64


class PolicyPackError(Exception):
    """The pack could not be started, configured or asked; the message says which and why."""


# Started and not yet closed: what kill_running_packs() stops.
_RUNNING: set[PolicyPackProcess] = set()


def kill_running_packs() -> None:
    """SIGKILL every started pack's process group, now, from any thread. For an interrupt: preflight
    is about to exit and must not leave a pack behind, even if it never unwinds to close() (which
    still reaps the process; until then its id, the group's id, cannot be reused)."""
    for pack in list(_RUNNING):
        if pack.pid is not None:
            _killpg(pack.pid, signal.SIGKILL)


@dataclass(frozen=True)
class Deadlines:
    """How long preflight waits on the pack, in seconds."""

    startup: float = STARTUP_SECONDS
    call: float = CALL_SECONDS
    analyze: float = ANALYZE_SECONDS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Deadlines:
        """The module's deadlines, or `PREFLIGHT_PACK_TIMEOUT` seconds for each of them."""
        raw = environ.get(TIMEOUT_ENV, "").strip()
        if not raw:
            return cls(STARTUP_SECONDS, CALL_SECONDS, ANALYZE_SECONDS)
        try:
            seconds = float(raw)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds > 0):
            raise PolicyPackError(f"{TIMEOUT_ENV}={raw!r}: must be a positive number of seconds")
        return cls(seconds, seconds, seconds)


def read_manifest(pack_dir: Path) -> dict[str, Any]:
    """`PulumiPolicy.yaml`, which the CLI requires in every pack directory."""
    if not pack_dir.is_dir():
        what = "is not a directory" if pack_dir.exists() else "does not exist"
        raise PolicyPackError(f"policy pack directory {pack_dir} {what}")
    path = pack_dir / "PulumiPolicy.yaml"
    try:
        manifest = yaml.safe_load(path.read_text())
    except FileNotFoundError as err:
        raise PolicyPackError(
            f"{path}: not found; a policy pack directory needs a PulumiPolicy.yaml"
        ) from err
    except OSError as err:
        raise PolicyPackError(f"{path}: cannot be read: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise PolicyPackError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from err
    if manifest is None:
        return {}
    if not isinstance(manifest, dict):
        raise PolicyPackError(f"{path}: must be a mapping (description, version, runtime)")
    return manifest


def pack_python(pack_dir: Path, manifest: Mapping[str, Any]) -> str:
    """The interpreter the Pulumi CLI runs this pack with, from PulumiPolicy.yaml's runtime options.

    With `options.virtualenv` the CLI runs `<virtualenv>/bin/python` (relative to the pack) and, for a
    local `--policy-pack` directory, installs nothing; without it, `python3` from PATH (or
    PULUMI_PYTHON_CMD). Preflight launches exactly that, so it fails where the CLI would fail: a
    missing virtualenv is an error here too, not a silent fallback to preflight's own interpreter.
    """
    path = pack_dir / "PulumiPolicy.yaml"
    runtime = manifest.get("runtime")
    name = runtime.get("name") if isinstance(runtime, Mapping) else runtime
    if name is None:
        raise PolicyPackError(
            f"{path}: `runtime` is missing; declare runtime: {{name: python, options: {{virtualenv: venv}}}}"
        )
    if name != "python":
        raise PolicyPackError(f"{path}: runtime {name!r}: preflight runs Python packs only")
    options = (runtime.get("options") or {}) if isinstance(runtime, Mapping) else {}
    toolchain = options.get("toolchain", "pip")
    if toolchain != "pip":
        raise PolicyPackError(
            f"{path}: runtime.options.toolchain {toolchain!r}: preflight launches pip virtualenvs only; "
            "use toolchain: pip with a virtualenv"
        )
    venv = options.get("virtualenv")
    if venv:
        root = Path(str(venv)) if Path(str(venv)).is_absolute() else pack_dir / str(venv)
        python = root / "bin" / "python"
        if not python.exists():
            raise PolicyPackError(
                f"{root}: the pack's virtualenv (runtime.options.virtualenv in {path}) does not exist, so "
                f"`pulumi preview --policy-pack {pack_dir.name}` could not start the pack either; create it "
                "with `make policy-venv`"
            )
        return str(python)
    found = os.environ.get("PULUMI_PYTHON_CMD") or shutil.which("python3") or shutil.which("python")
    if not found:
        raise PolicyPackError(f"{path}: no virtualenv declared and no python3 on PATH to run the pack with")
    return found


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

    def __init__(
        self,
        pack_dir: Path,
        project: str,
        stack: str,
        python: str | None = None,
        deadlines: Deadlines | None = None,
    ) -> None:
        self.pack_dir = pack_dir.resolve()
        self.project = project
        self.stack = stack
        manifest = read_manifest(self.pack_dir)
        # What the CLI would run; an explicit `python` is for packs made up by tests and benches.
        self.python = python or pack_python(self.pack_dir, manifest)
        self.deadlines = deadlines or Deadlines.from_env()
        self.engine = _Engine()
        self._server: grpc.Server | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._channel: grpc.Channel | None = None
        self._stub: analyzer_pb2_grpc.AnalyzerStub | None = None
        self._stderr: deque[str] = deque(maxlen=200)
        self._readers: list[threading.Thread] = []
        self.engine_address = ""
        # Python packs report 0.0.1; the CLI takes the version from PulumiPolicy.yaml, as we do.
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

    @property
    def pid(self) -> int | None:
        """The pack's process id, also its process group's id (None before start and after close)."""
        return self._process.pid if self._process is not None else None

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
        command = [self.python, "-u", "-m", "pulumi.policy", self.engine_address, str(self.pack_dir)]
        try:
            self._process = subprocess.Popen(
                command,
                cwd=self.pack_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                # Its own process group: a terminal's Ctrl-C reaches preflight only, and close() stops
                # the pack and anything it started with one killpg.
                start_new_session=True,
            )
        except OSError as err:
            raise PolicyPackError(f"policy pack {self.pack_dir} did not start: {command[0]}: {err}") from err
        _RUNNING.add(self)
        # Read stderr all along: a full pipe would block the pack, and its tail explains a crash.
        self._read_in_background(self._process.stderr, self._stderr)

    def _read_in_background(self, stream: Any, into: deque[str] | None) -> None:
        def read() -> None:
            try:
                for raw in iter(stream.readline, b""):
                    if into is not None:
                        into.append(raw.decode(errors="replace").rstrip())
            except (OSError, ValueError):  # closed by close()
                pass

        thread = threading.Thread(target=read, name=f"policy-pack-{self.pid}", daemon=True)
        thread.start()
        self._readers.append(thread)

    @property
    def stub(self) -> analyzer_pb2_grpc.AnalyzerStub:
        """The Analyzer client. Connecting waits for the pack's port, so a caller can start the pack,
        do other work (run the program) while it boots, and connect only when it needs it."""
        if self._stub is None:
            self._stub = analyzer_pb2_grpc.AnalyzerStub(self._connect(self._read_port()))
        return self._stub

    def _read_port(self) -> int:
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        startup = self.deadlines.startup
        ready, _, _ = select.select([stdout], [], [], startup)
        line = stdout.readline().decode(errors="replace").strip() if ready else ""
        if line.isdigit():
            self._read_in_background(stdout, None)  # what the pack prints later must not fill the pipe
            return int(line)
        if not ready:
            reason = f"no port on stdout within {startup:g} s"
        else:
            code = self._exit_status(wait=STOP_SECONDS) if not line else None
            reason = _exited(code) if code is not None else f"its first stdout line was {line!r}, not a port"
        self._stop_group()
        tail = self.stderr_tail()
        detail = f"{reason}: {tail}" if tail else reason
        raise PolicyPackError(f"policy pack {self.pack_dir} did not start: {detail}")

    def _connect(self, port: int) -> grpc.Channel:
        """Wait for the pack to accept connections, noticing at once if it exits instead."""
        self._channel = channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        ready = grpc.channel_ready_future(channel)
        give_up = time.monotonic() + self.deadlines.startup
        try:
            while True:
                try:
                    ready.result(timeout=0.1)
                    return channel
                except grpc.FutureTimeoutError:
                    pass
                code = self._exit_status()
                if code is not None:
                    raise self.exited_error(code)
                if time.monotonic() >= give_up:
                    raise PolicyPackError(
                        f"policy pack announced port {port} but did not accept connections "
                        f"within {self.deadlines.startup:g} s"
                    )
        finally:
            ready.cancel()

    def _exit_status(self, wait: float = 0.0) -> int | None:
        """The pack's exit code (negative: the signal that killed it) once it has exited, else None.

        The process is not reaped here (WNOWAIT): until close() reaps it, its id, which is also its
        process group's id, cannot be reused, so close() can still signal the group safely.
        """
        process = self._process
        if process is None:
            return None
        if process.returncode is not None:
            return process.returncode
        give_up = time.monotonic() + wait
        while True:
            try:
                info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:  # reaped by someone else's poll()
                return process.poll()
            if info is not None:
                return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
            if time.monotonic() >= give_up:
                return None
            time.sleep(0.02)

    def stderr_tail(self) -> str:
        """The last non-blank line the pack wrote to stderr ("" if none)."""
        if self._exit_status() is not None:
            for thread in self._readers:
                thread.join(timeout=1.0)  # let the reader catch up with a dead pack's last words
        lines = [line.strip() for line in list(self._stderr) if line.strip()]
        return lines[-1][:500] if lines else ""

    def exited_error(self, code: int) -> PolicyPackError:
        return PolicyPackError(f"policy pack {_exited(code)}: {self.stderr_tail() or 'nothing on stderr'}")

    def call_failed(self, method: str, err: grpc.RpcError, timeout: float) -> PolicyPackError:
        """A failed call as one line: the pack exited, did not answer in time, or answered an error."""
        status = err.code()
        # A dead pack's calls fail UNAVAILABLE at once, maybe before the exit is visible: wait for it.
        code = self._exit_status(wait=0.0 if status == grpc.StatusCode.DEADLINE_EXCEEDED else 2.0)
        if code is not None:
            return self.exited_error(code)
        if status == grpc.StatusCode.DEADLINE_EXCEEDED:
            return PolicyPackError(f"policy pack did not answer {method} within {timeout:g} s")
        return PolicyPackError(f"policy pack call {method} failed: {status.name}: {err.details()}")

    def call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        """`stub.<method>(request)` with a deadline (default: the small calls' deadline)."""
        timeout = self.deadlines.call if timeout is None else timeout
        try:
            return getattr(self.stub, method)(request, timeout=timeout)
        except grpc.RpcError as err:
            raise self.call_failed(method, err, timeout) from err

    def _stop_group(self) -> None:
        """Stop the pack and everything in its process group; the pack is reaped by close()."""
        process = self._process
        if process is None:
            return
        try:
            if self._exit_status() is None:
                # Not SIGINT: the SDK's loop stops on KeyboardInterrupt only if the signal lands on the
                # main thread, and with gRPC threads busy it often does not. SIGTERM's default action
                # ends the whole process, whichever thread receives it.
                _killpg(process.pid, signal.SIGTERM)
                _killpg(process.pid, signal.SIGCONT)  # a stopped (SIGSTOP) pack must run to act on it
                self._exit_status(wait=STOP_SECONDS)
        finally:
            # Whatever is left of the group: a pack that ignored SIGTERM, or processes it started.
            _killpg(process.pid, signal.SIGKILL)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        process = self._process
        if process is not None:
            _RUNNING.discard(self)  # closing it: kill_running_packs must not signal it once reaped
            try:
                self._stop_group()
            finally:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=STOP_SECONDS)
                for thread in self._readers:
                    thread.join(timeout=1.0)
                for stream in (process.stdout, process.stderr):
                    if stream is not None:
                        stream.close()
                self._readers = []
                self._process = None
        if self._server is not None:
            self._server.stop(None)
            self._server = None


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
        os.killpg(pgid, sig)


def _exited(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


def load_policy_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise PolicyPackError(f"{path}: policy config file not found") from err
    except IsADirectoryError as err:
        raise PolicyPackError(f"{path}: is a directory; the policy config is a JSON file") from err
    except OSError as err:
        raise PolicyPackError(f"{path}: cannot read the policy config: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise PolicyPackError(f"{path}: not valid JSON: not UTF-8 text") from err
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
        error = jsonschema.exceptions.best_match(
            _validator(json.dumps(schema, sort_keys=True)).iter_errors(props)
        )
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path)
            raise PolicyPackError(f"{source}: {name}.{where}: {error.message}") from error
        struct = struct_pb2.Struct()
        struct.update(props)
        request.policyConfig[name].CopyFrom(
            analyzer_pb2.PolicyConfig(enforcementLevel=level, properties=struct)
        )
    return request


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    """What `jsonschema.validate` builds for a schema (after checking it), once per distinct schema:
    the pack's policies mostly share one, and checking it 100 times took 0.1 s of every preflight."""
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


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
    """One full round over resources already captured: `Analysis`, fed them all, then finished."""
    analysis = Analysis(packs, policy_config, organization, config_source, known=resources)
    for r in resources:
        analysis.feed(r)
    return analysis.finish()


_END = object()  # what finish() and close() put after the last resource


def _release(window: threading.BoundedSemaphore, _call: object) -> None:
    window.release()


class Analysis:
    """One full round: Handshake, ConfigureStack, GetAnalyzerInfo, Configure, Analyze*, AnalyzeStack,
    fed one resource at a time, so that the pack analyses while the program still registers (as the
    CLI's engine does during `pulumi preview`) and a preflight waits only for what is left at the end.

    Created before the program runs: a worker thread opens and configures the packs as soon as they
    answer, then takes each fed resource in feeding order, remediates it where a policy's level is
    `remediate`, and sends its Analyze, at most ANALYZE_WINDOW in flight per pack process. `feed` may be
    called from any thread and never blocks (the engine calls it from the monitor, as each resource
    registers). A resource's explicit provider must be fed before it (the engine registers providers
    first; `known` resolves providers for a list given at once). `finish()` waits for every answer, in
    feeding order, sends AnalyzeStack and returns the result, or raises the first failure on the way
    (`PolicyPackError`); `close()` abandons the round (the program failed) and cancels what is in
    flight. Each call's deadline runs from when it is sent.

    With several pack processes (the same pack, one per core), `Analyze` calls are spread over them;
    each resource is still analysed exactly once, and the stack once. One pack process is CPU-bound
    (the pack reads each resource once per request and runs only the policies of its type:
    policies/shared_analysis.py); more processes are the way to use more cores.
    """

    def __init__(
        self,
        packs: PolicyPackProcess | Sequence[PolicyPackProcess],
        policy_config: dict[str, Any],
        organization: str = "organization",
        config_source: str = "policy config",
        known: Iterable[Registration] = (),
    ) -> None:
        self.pool = [packs] if isinstance(packs, PolicyPackProcess) else list(packs)
        self._policy_config = policy_config
        self._organization = organization
        self._config_source = config_source
        self._by_urn = {r.urn: r for r in known}
        # What the packs logged before this round (a pack serves several rounds) is not this round's.
        self._logged = [len(pack.engine.logs) for pack in self.pool]
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Per fed resource, in order: as analysed (remediated), its request fields, its pack, its call.
        self._sent: list[tuple[Registration, dict[str, Any], PolicyPackProcess, Any]] = []
        self._result: AnalysisResult | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="preflight-analysis", daemon=True)
        self._worker.start()

    def feed(self, r: Registration) -> None:
        self._queue.put(r)

    def _work(self) -> None:
        try:
            result, remediate = self._configure()
            windows = {id(pack): threading.BoundedSemaphore(ANALYZE_WINDOW) for pack in self.pool}
            turns = itertools.cycle(self.pool)
            while (r := self._queue.get()) is not _END:
                if remediate:
                    r = _remediate(self.pool[0], r, result)
                self._by_urn[r.urn] = r
                fields = _described(r, self._by_urn)
                pack = next(turns)
                window = windows[id(pack)]
                window.acquire()  # released when a call of this pack is answered, fails or times out
                call = pack.stub.Analyze.future(
                    analyzer_pb2.AnalyzeRequest(**fields), timeout=pack.deadlines.analyze
                )
                call.add_done_callback(functools.partial(_release, window))
                self._sent.append((r, fields, pack, call))
                if self._closed:  # close() may have cancelled the others before this one was listed
                    call.cancel()
                    return
        except BaseException as err:  # noqa: BLE001 - raised again by finish(), in the caller's thread
            self._error = err

    def _configure(self) -> tuple[AnalysisResult, bool]:
        for pack in self.pool:
            _open(pack, self._organization)
        info = self.pool[0].call("GetAnalyzerInfo", empty_pb2.Empty())
        configure = build_configure_request(info, self._policy_config, self._config_source)
        for pack in self.pool:
            pack.call("Configure", configure)
        self._result = AnalysisResult(
            pack=info.name,
            version=self.pool[0].version,
            policies=[_policy_info(p) for p in info.policies],
        )
        remediate = any(c.enforcementLevel == analyzer_pb2.REMEDIATE for c in configure.policyConfig.values())
        return self._result, remediate

    def finish(self) -> AnalysisResult:
        """Every Analyze answer, then AnalyzeStack: the result, or the first failure (PolicyPackError)."""
        self._queue.put(_END)
        self._worker.join()
        try:
            if self._error is not None:
                raise self._error
            result = self._result
            assert result is not None
            for r, _, pack, call in self._sent:
                try:
                    response = call.result()
                except grpc.RpcError as err:
                    raise pack.call_failed("Analyze", err, pack.deadlines.analyze) from err
                _collect(result, response, default_urn=r.urn)
            stack_response = self.pool[0].call(
                "AnalyzeStack",
                analyzer_pb2.AnalyzeStackRequest(
                    resources=[
                        analyzer_pb2.AnalyzerResource(
                            **fields,
                            parent=r.parent,
                            dependencies=r.dependencies,
                            propertyDependencies={
                                k: analyzer_pb2.AnalyzerPropertyDependencies(urns=v)
                                for k, v in r.property_dependencies.items()
                            },
                        )
                        for r, fields, _, _ in self._sent
                    ]
                ),
                timeout=self.pool[0].deadlines.analyze,
            )
            _collect(result, stack_response, default_urn="")
            result.violations.sort(key=lambda v: (v.level != "mandatory", v.policy, v.urn))
            result.logs += [
                line
                for pack, logged in zip(self.pool, self._logged, strict=True)
                for line in pack.engine.logs[logged:]
            ]
            result.resources = [r for r, _, _, _ in self._sent]
            return result
        finally:
            self.close()

    def close(self) -> None:
        """Abandon the round: the worker stops at its next resource, calls in flight are cancelled."""
        self._closed = True
        self._queue.put(_END)
        for _, _, _, call in self._sent:
            call.cancel()  # a no-op for answered calls


def _described(r: Registration, by_urn: dict[str, Registration]) -> dict[str, Any]:
    """The fields an `AnalyzeRequest` and an `AnalyzerResource` share."""
    return {
        "type": r.type,
        "properties": _struct(r.inputs),
        "urn": r.urn,
        "name": r.name,
        "options": _options(r),
        "provider": _provider(r, by_urn),
    }


def _remediate(pack: PolicyPackProcess, r: Registration, result: AnalysisResult) -> Registration:
    """What the engine does before analysing a resource: let `remediate` policies rewrite its inputs."""
    response = pack.call(
        "Remediate",
        analyzer_pb2.AnalyzeRequest(
            type=r.type, properties=_struct(r.inputs), urn=r.urn, name=r.name, options=_options(r)
        ),
        timeout=pack.deadlines.analyze,
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
    request = analyzer_pb2.AnalyzerHandshakeRequest(
        engine_address=pack.engine_address,
        root_directory=str(pack.pack_dir),
        program_directory=str(pack.pack_dir),
    )
    try:
        pack.stub.Handshake(request, timeout=pack.deadlines.call)
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.UNIMPLEMENTED:  # older packs predate Handshake
            raise pack.call_failed("Handshake", err, pack.deadlines.call) from err
    pack.call(
        "ConfigureStack",
        analyzer_pb2.AnalyzerStackConfigureRequest(
            stack=pack.stack, project=pack.project, organization=organization, dry_run=True
        ),
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
