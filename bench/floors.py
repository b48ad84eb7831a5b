"""What no change to preflight can take away, measured so the benches can print their figures beside it.

- the import floor: a fresh interpreter that only imports the provider submodules the program uses
  (`python -c "import pulumi_aws.ec2, ..."`, interpreter start included), with the cyclic collector
  off and what was imported frozen before exit, as preflight's engine runs a program: the least any
  run of the program can pay (with the collector on and the usual exit, the same imports take twice as
  long on this machine). The SDKs load as the program loads them: `import components` first, which
  postpones their annotations (components/sdk_annotations.py; `POUW_SDK_ANNOTATIONS=eager` in the
  environment measures Python's default loading instead);
- the SDK floor: the Pulumi SDK alone registering N trivial `pulumi.CustomResource`s under the mocks
  preflight uses (`preflight.engine.run_function`), in a fresh process, its imports excluded;
- the protocol floor: the same `Analyze` requests, sent as preflight sends them (futures, at most
  `ANALYZE_WINDOW` in flight), to an analyzer that answers each with an empty response, served by the
  pack's interpreter as pulumi-policy serves a pack (`grpc.server` with a four-thread pool, as in
  pulumi_policy/policy.py's `PolicyPack.__init__`): what the gRPC round trip alone costs per resource,
  which no change to the pack's policies can take away.

Both run in a fresh `.venv` interpreter with bytecode caching on, as `make preview` runs preflight.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROVIDER_PREFIX = "pulumi_"  # pulumi_aws, pulumi_gcp, ...: the provider SDKs (not pulumi itself)

_SDK_FLOOR = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import pulumi
from preflight.engine import run_function
from preflight.stackconfig import load_stack_config
config = load_stack_config(Path(sys.argv[1]), sys.argv[2])
count = int(sys.argv[3])
def program():
    for i in range(count):
        pulumi.CustomResource("pouw:bench:Trivial", f"r{i}", {"value": str(i)})
t0 = time.perf_counter()
run = run_function(program, Path(sys.argv[1]), config)
elapsed = time.perf_counter() - t0
assert run.error is None and len(run.resources) == count, run.error_text
print(json.dumps({"seconds": elapsed}))
"""


# The modules a program run loads (not merely announces: the providers register their service
# packages lazily, as `_LazyModule`s that load on first use).
_PROGRAM_MODULES = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from preflight.engine import run_program
from preflight.stackconfig import load_stack_config
before = set(sys.modules)
run_program(Path(sys.argv[2]), load_stack_config(Path(sys.argv[2]), sys.argv[3]))
loaded = [m for m in set(sys.modules) - before if type(sys.modules[m]).__name__ != "_LazyModule"]
print(json.dumps(sorted(loaded)))
"""


# Run by the pack's interpreter: an Analyzer that answers every Analyze with no diagnostics.
_EMPTY_ANALYZER = """
import sys
from concurrent import futures
import grpc
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
class EmptyAnalyzer(analyzer_pb2_grpc.AnalyzerServicer):
    def Analyze(self, request, context):
        return analyzer_pb2.AnalyzeResponse()
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
analyzer_pb2_grpc.add_AnalyzerServicer_to_server(EmptyAnalyzer(), server)
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
sys.stdin.read()  # until the bench closes it
"""


def env() -> dict[str, str]:
    """As `make preview` runs it: bytecode caching on (the Makefile unexports PYTHONDONTWRITEBYTECODE)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def provider_modules(modules: Iterable[str]) -> list[str]:
    """The provider submodules among `modules` (`pulumi_aws.ec2`, ...; their packages come with them)."""
    return sorted(m for m in modules if m.startswith(PROVIDER_PREFIX) and "." in m)


def program_modules(project_dir: Path, stack: str) -> list[str]:
    """The modules a fresh run of `project_dir`'s program on `stack` loads."""
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM_MODULES, str(ROOT), str(project_dir), stack],
        capture_output=True,
        text=True,
        env=env(),
        check=True,
    )
    modules: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return modules


def import_floor(modules: list[str], runs: int) -> float:
    """Median wall seconds of a fresh interpreter importing `modules` and nothing else."""
    code = "\n".join(
        ["import gc", "gc.disable()", "import components", *(f"import {m}" for m in modules), "gc.freeze()"]
    )
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env(), cwd=ROOT)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def sdk_floor(count: int, runs: int, stack: str = "prod") -> float:
    """Median seconds for the SDK alone to register `count` trivial resources under preflight's mocks."""
    samples = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", _SDK_FLOOR, str(ROOT), stack, str(count)],
            capture_output=True,
            text=True,
            env=env(),
            check=True,
        )
        result: dict[str, Any] = json.loads(done.stdout)
        samples.append(float(result["seconds"]))
    return statistics.median(samples)


def protocol_floor(requests: list[Any], runs: int) -> float:
    """Median seconds to send `requests` (AnalyzeRequests) to the empty analyzer and get every answer."""
    import functools
    import threading

    import grpc
    from pulumi.runtime.proto import analyzer_pb2_grpc

    from preflight.analyzer import ANALYZE_WINDOW, _release, pack_python, read_manifest

    pack_dir = ROOT / "policies"
    python = pack_python(pack_dir, read_manifest(pack_dir))
    with subprocess.Popen(
        [python, "-c", _EMPTY_ANALYZER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as server:
        assert server.stdout is not None and server.stdin is not None
        channel = grpc.insecure_channel(f"127.0.0.1:{int(server.stdout.readline())}")
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = analyzer_pb2_grpc.AnalyzerStub(channel)
        samples = []
        for _ in range(runs + 1):  # the first round warms the connection up
            window = threading.BoundedSemaphore(ANALYZE_WINDOW)
            t0 = time.perf_counter()
            calls = []
            for request in requests:
                window.acquire()
                call = stub.Analyze.future(request)
                call.add_done_callback(functools.partial(_release, window))
                calls.append(call)
            for call in calls:
                call.result()
            samples.append(time.perf_counter() - t0)
        channel.close()
        server.stdin.close()
    return statistics.median(samples[1:])
