"""The gate's own failures: every one that is not a policy verdict is exit 2 with one `error:` line,
every wait on the pack has a deadline, the pack's process group is always stopped, and CI still gets a
JSON and Markdown summary of the failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from preflight import analyzer, cli
from preflight.analyzer import PolicyPackError, PolicyPackProcess, analyze
from preflight.cli import main
from preflight.engine import Registration
from tests.conftest import ROOT, project_copy, stack_file

BUCKET = Registration(
    urn="urn:pulumi:s::p::aws:s3/bucket:Bucket::b", type="aws:s3/bucket:Bucket", name="b", inputs={}
)


def error_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("error:")]


def assert_one_clear_error(out: str, *fragments: str) -> str:
    """Exactly one `error:` line, holding every fragment, and no traceback anywhere."""
    lines = error_lines(out)
    assert len(lines) == 1, out
    assert "Traceback" not in out, out
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def pack_without_config(tmp_path: Path, keep: tuple[str, ...] = ("dev.json",)) -> Path:
    """The real pack (symlinked) with only some of its per-stack configs."""
    pack = tmp_path / "pack"
    pack.mkdir()
    for entry in (ROOT / "policies").iterdir():
        if entry.name not in ("config", "__pycache__"):
            (pack / entry.name).symlink_to(entry)
    (pack / "config").mkdir()
    for name in keep:
        (pack / "config" / name).symlink_to(ROOT / "policies" / "config" / name)
    return pack


def fake_pack(tmp_path: Path, main_py: str) -> Path:
    pack = tmp_path / "fake-pack"
    pack.mkdir()
    # Its virtualenv is the one running the tests (absolute), as a real pack names its own.
    (pack / "PulumiPolicy.yaml").write_text(
        f"runtime: {{name: python, options: {{virtualenv: {sys.prefix}}}}}\nversion: 0.0.1\n"
    )
    (pack / "__main__.py").write_text(main_py)
    return pack


# Announces a free port the way the SDK does, then dies before serving it.
DIES_AFTER_PORT = """\
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.close()
print(port, flush=True)
sys.stderr.write("fake pack: lost its database\\n")
raise SystemExit(3)
"""


@pytest.fixture
def no_program(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the program runs: these errors must be found before it does."""

    def refuse(*args: Any) -> None:
        raise AssertionError("the program ran before the settings were checked")

    monkeypatch.setattr(cli, "run_program", refuse)


# 6. A stack without a policy config is an error, not a silent run on the pack's defaults.


def test_missing_policy_config_exits_2_naming_the_file_and_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_program: None
) -> None:
    pack = pack_without_config(tmp_path)
    md, plan = tmp_path / "summary.md", tmp_path / "plan.json"
    args = ["--stack", "staging", "--policy-pack", str(pack), "--markdown", str(md), "--json", str(plan)]
    assert main(args) == 2
    line = assert_one_clear_error(capsys.readouterr().out, f"{pack}/config/staging.json", "no policy config")
    assert f"create it (copy {pack}/config/dev.json)" in line
    assert "or pass --no-policy-config to run the pack on its own defaults" in line
    assert "staging.json" in md.read_text() and "failed" in md.read_text()
    assert json.loads(plan.read_text())["exitCode"] == 2


def test_no_policy_config_runs_on_the_pack_defaults_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pack = pack_without_config(tmp_path, keep=())
    md, plan = tmp_path / "summary.md", tmp_path / "plan.json"
    args = ["--stack", "dev", "--policy-pack", str(pack), "--no-policy-config"]
    assert main([*args, "--markdown", str(md), "--json", str(plan)]) == 0
    out = capsys.readouterr().out
    assert "warning: no policy config (--no-policy-config): the pack ran on its own defaults" in out
    assert out.rstrip().endswith("on the pack's defaults (no policy config)")
    assert "> **Warning:** no policy config (`--no-policy-config`)" in md.read_text()
    assert json.loads(plan.read_text())["policyConfig"] is None
    with pytest.raises(SystemExit) as exited:  # an explicit file and the opt-out exclude each other
        main([*args, "--policy-config", str(ROOT / "policies" / "config" / "dev.json")])
    assert exited.value.code == 2


def test_the_policy_config_used_is_in_the_plan(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    assert main(["--stack", "dev", "--json", str(plan)]) == 0
    assert json.loads(plan.read_text())["policyConfig"] == str(ROOT / "policies" / "config" / "dev.json")


# 7. Deadlines, a dead or hung pack, and stopping the pack's process group.


def test_deadlines_come_from_the_module_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = (analyzer.STARTUP_SECONDS, analyzer.CALL_SECONDS, analyzer.ANALYZE_SECONDS)
    assert analyzer.Deadlines.from_env({}) == analyzer.Deadlines(*defaults)
    assert defaults == (30.0, 20.0, 60.0)
    assert analyzer.Deadlines.from_env({"PREFLIGHT_PACK_TIMEOUT": "2.5"}) == analyzer.Deadlines(2.5, 2.5, 2.5)
    for bad in ("soon", "0", "-1", "inf", "nan"):
        with pytest.raises(PolicyPackError, match=f"PREFLIGHT_PACK_TIMEOUT='{bad}': must be a positive"):
            analyzer.Deadlines.from_env({"PREFLIGHT_PACK_TIMEOUT": bad})
    monkeypatch.setenv("PREFLIGHT_PACK_TIMEOUT", "7")
    assert PolicyPackProcess(ROOT / "policies", "p", "s").deadlines == analyzer.Deadlines(7, 7, 7)


def test_bad_timeout_variable_exits_2_before_the_program(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_program: None
) -> None:
    monkeypatch.setenv("PREFLIGHT_PACK_TIMEOUT", "soon")
    assert main(["--stack", "dev"]) == 2
    assert_one_clear_error(capsys.readouterr().out, "PREFLIGHT_PACK_TIMEOUT='soon'")


class RecordingStub:
    """Stands in for the Analyzer stub and records each call's deadline."""

    def __init__(self, stub: Any, calls: list[tuple[str, float | None]]) -> None:
        self._stub, self._calls = stub, calls

    def __getattr__(self, method: str) -> Any:
        real, calls = getattr(self._stub, method), self._calls

        class Method:
            def __call__(self, request: Any, timeout: float | None = None) -> Any:
                calls.append((method, timeout))
                return real(request, timeout=timeout)

            def future(self, request: Any, timeout: float | None = None) -> Any:
                calls.append((method, timeout))
                return real.future(request, timeout=timeout)

        return Method()


def test_every_call_to_the_pack_has_a_deadline(pack: PolicyPackProcess) -> None:
    calls: list[tuple[str, float | None]] = []
    real = pack.stub
    pack._stub = RecordingStub(real, calls)  # type: ignore[assignment]
    try:
        result = analyze(pack, [BUCKET], {"all": "advisory", "required-tags": "remediate"})
    finally:
        pack._stub = real
    assert result.policies
    methods = {m for m, _ in calls}
    assert methods == {
        "Handshake",
        "ConfigureStack",
        "GetAnalyzerInfo",
        "Configure",
        "Remediate",
        "Analyze",
        "AnalyzeStack",
    }
    assert all(timeout is not None and timeout > 0 for _, timeout in calls), calls
    big = {"Remediate", "Analyze", "AnalyzeStack"}
    assert {t for m, t in calls if m in big} == {pack.deadlines.analyze}
    assert {t for m, t in calls if m not in big} == {pack.deadlines.call}


def test_pack_that_exits_after_announcing_its_port(tmp_path: Path) -> None:
    started = time.monotonic()
    with PolicyPackProcess(fake_pack(tmp_path, DIES_AFTER_PORT), "p", "s") as pack:
        with pytest.raises(PolicyPackError) as failed:
            analyze(pack, [BUCKET], {})
        assert str(failed.value) == "policy pack exited with code 3: fake pack: lost its database"
    assert time.monotonic() - started < 5  # noticed at once, not after the 30 s startup deadline


def test_pack_killed_while_connected(pack_factory: Any) -> None:
    with pack_factory() as pack:
        pack.stub  # connected  # noqa: B018
        assert pack.pid is not None
        os.kill(pack.pid, signal.SIGKILL)
        with pytest.raises(PolicyPackError, match=r"^policy pack was killed by SIGKILL: "):
            analyze(pack, [BUCKET], {})


@pytest.fixture
def pack_factory() -> Iterator[Any]:
    """`with pack_factory() as pack:` the real pack with short deadlines; SIGCONT'd and killed after."""
    started: list[PolicyPackProcess] = []

    def start() -> PolicyPackProcess:
        pack = PolicyPackProcess(
            ROOT / "policies",
            "pouw-cicd",
            "t",
            deadlines=analyzer.Deadlines(startup=30.0, call=1.0, analyze=1.0),
        )
        started.append(pack)
        return pack

    yield start
    for pack in started:
        if pack.pid is not None:
            os.kill(pack.pid, signal.SIGCONT)
        pack.close()


@pytest.mark.parametrize(("stop_before", "method"), [("Handshake", "Handshake"), ("Analyze", "Analyze")])
def test_pack_that_stops_answering(
    pack_factory: Any, monkeypatch: pytest.MonkeyPatch, stop_before: str, method: str
) -> None:
    with pack_factory() as pack:
        pack.stub  # connected  # noqa: B018
        pid = pack.pid
        assert pid is not None

        def stop() -> None:
            os.kill(pid, signal.SIGSTOP)
            while proc_stat(pid)[0] != "T":  # type: ignore[index]  # delivered, not just sent
                time.sleep(0.001)

        if stop_before == "Handshake":
            stop()
        else:  # the Analyze requests are built (their options) after Configure has been answered
            options = analyzer._options
            monkeypatch.setattr(analyzer, "_options", lambda r: (stop(), options(r))[1])
        started = time.monotonic()
        with pytest.raises(PolicyPackError) as failed:
            analyze(pack, [BUCKET], {})
        assert str(failed.value) == f"policy pack did not answer {method} within 1 s"
        assert time.monotonic() - started < 3
        closing = time.monotonic()
    # close() resumes a stopped pack so that it sees SIGTERM, and kills its group: quick, and gone.
    assert time.monotonic() - closing < 2
    assert not alive(pid)


def test_dead_pack_through_the_cli_is_exit_2_with_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    md, plan = tmp_path / "summary.md", tmp_path / "plan.json"
    fake = fake_pack(tmp_path, DIES_AFTER_PORT)
    args = ["--stack", "dev", "--policy-pack", str(fake), "--no-policy-config"]
    assert main([*args, "--markdown", str(md), "--json", str(plan)]) == 2
    out = capsys.readouterr().out
    message = "policy pack exited with code 3: fake pack: lost its database"
    assert out.rstrip().endswith(f"error: {message}")
    assert_one_clear_error(out, message)
    assert "failed" in md.read_text() and message in md.read_text()
    data = json.loads(plan.read_text())
    assert data["error"] == message and data["exitCode"] == 2
    assert data["resources"]  # the program ran; its plan is still there


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) from /proc, or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat is not None and stat[2] == pgid and stat[0] != "Z":
                members.append(int(entry.name))
    return members


def pack_child(parent: int, timeout: float) -> int:
    """The pid of `parent`'s policy pack process, once it is running."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (stat := proc_stat(int(entry.name))) and stat[1] == parent:
                try:
                    if b"pulumi.policy" in (entry / "cmdline").read_bytes():
                        return int(entry.name)
                except FileNotFoundError:
                    continue
        time.sleep(0.05)
    raise AssertionError(f"no policy pack process under {parent} within {timeout} s")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_pack_process_group(tmp_path: Path, sig: signal.Signals) -> None:
    if sig == signal.SIGINT and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        pytest.skip("SIGINT is ignored here, and so in the child")  # e.g. a background job
    md = tmp_path / "summary.md"
    command = [sys.executable, "-m", "preflight", "--stack", "prod", "--markdown", str(md)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pack_pid = 0
    try:
        pack_pid = pack_child(proc.pid, timeout=15)
        assert proc_stat(pack_pid) is not None and proc_stat(pack_pid)[2] == pack_pid  # type: ignore[index]
        time.sleep(0.3)  # the program is running now
        proc.send_signal(sig)
        signalled = time.monotonic()
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if pack_pid and alive(pack_pid):  # what the old code left behind: clean it up, then fail below
            os.kill(pack_pid, signal.SIGKILL)
            pytest.fail(f"the pack (pid {pack_pid}) outlived preflight after {sig.name}")
    assert time.monotonic() - signalled < 7  # cleanup, or else the watchdog (5 s)
    assert proc.returncode == 2, (out, err)
    assert_one_clear_error(out, f"interrupted by {sig.name}; the policy pack was stopped")
    assert "Traceback" not in err
    assert not alive(pack_pid)
    assert group_members(pack_pid) == []
    assert f"interrupted by {sig.name}" in md.read_text()


# Stands in for a program whose SDK swallows the KeyboardInterrupt: it either goes on to finish the
# run (which must still be reported as interrupted) or never returns (the watchdog must end it).
SWALLOWING_PROGRAM = """\
import runpy, sys, time
from preflight import cli
real = cli.run_program
cli.INTERRUPT_GRACE = 1.0

def swallowing(project_dir, config):
    print("program running", flush=True)
    while True:
        try:
            time.sleep(0.1 if sys.argv[1] == "hangs" else 30)
        except KeyboardInterrupt:
            if sys.argv[1] == "finishes":
                return real(project_dir, config)

cli.run_program = swallowing
sys.argv[1:2] = []
runpy.run_module("preflight", run_name="__main__", alter_sys=True)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("program", ["finishes", "hangs"])
def test_signal_swallowed_by_the_program_is_still_an_interrupt(tmp_path: Path, program: str) -> None:
    md = tmp_path / "summary.md"
    command = [sys.executable, "-c", SWALLOWING_PROGRAM, program, "--stack", "dev", "--markdown", str(md)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pack_pid = 0
    try:
        pack_pid = pack_child(proc.pid, timeout=15)
        assert proc.stdout is not None and proc.stdout.readline() == "program running\n"
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if pack_pid and alive(pack_pid):
            os.kill(pack_pid, signal.SIGKILL)
            pytest.fail(f"the pack (pid {pack_pid}) outlived preflight")
    assert time.monotonic() - signalled < 4  # the watchdog's grace is 1 s here
    assert proc.returncode == 2, (out, err)
    assert_one_clear_error(out, "interrupted by SIGTERM; the policy pack was stopped")
    assert "Traceback" not in err
    assert group_members(pack_pid) == []
    assert "interrupted by SIGTERM" in md.read_text()


# 8. Bad paths are exit 2 with one line, found before the program runs.


@pytest.mark.parametrize(
    ("make_args", "fragment"),
    [
        (lambda t: ["--policy-pack", str(t / "nope")], "policy pack directory {t}/nope does not exist"),
        (lambda t: ["--policy-pack", str(t)], "{t}/PulumiPolicy.yaml: not found"),
        (lambda t: ["--policy-config", str(t)], "{t}: is a directory; the policy config is a JSON file"),
        (lambda t: ["--json", str(t / "missing" / "p.json")], "--json {t}/missing/p.json: directory"),
        (lambda t: ["--markdown", str(t)], "--markdown {t}: is a directory"),
        (lambda t: ["--project-dir", str(t / "nope")], "--project-dir {t}/nope does not exist"),
    ],
    ids=["no-pack-dir", "no-manifest", "config-is-dir", "json-dir-missing", "markdown-is-dir", "no-project"],
)
def test_bad_path_is_exit_2_with_one_line_before_the_program(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_program: None, make_args: Any, fragment: str
) -> None:
    assert main(["--stack", "dev", *make_args(tmp_path)]) == 2
    assert_one_clear_error(capsys.readouterr().out, fragment.format(t=tmp_path))


def test_unwritable_output_still_leaves_the_other_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_program: None
) -> None:
    md = tmp_path / "summary.md"
    assert main(["--stack", "dev", "--json", str(tmp_path / "no" / "p.json"), "--markdown", str(md)]) == 2
    capsys.readouterr()
    assert "### Preflight `dev`: failed" in md.read_text()
    assert "no/p.json: directory" in md.read_text()


# 9. Failures before a result still write JSON and Markdown for CI.


def test_settings_error_writes_failure_summaries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    md, plan = tmp_path / "summary.md", tmp_path / "plan.json"
    assert main(["--stack", "qa", "--markdown", str(md), "--json", str(plan)]) == 2
    assert_one_clear_error(capsys.readouterr().out, "Pulumi.qa.yaml: no such stack file")
    text = md.read_text()
    assert text.startswith("### Preflight `qa`: failed") and "Pulumi.qa.yaml: no such stack file" in text
    data = json.loads(plan.read_text())
    assert data["exitCode"] == 2 and "no such stack file" in data["error"]
    assert data["stack"] == "qa" and data["resources"] == [] and data["diagnostics"] == []


def test_program_error_writes_failure_summaries(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = project_copy(tmp_path / "project", "dev", stack_file("dev")["config"])
    (project / "__main__.py").unlink()
    (project / "__main__.py").write_text("raise RuntimeError('boom in program')\n")
    md, plan = tmp_path / "summary.md", tmp_path / "plan.json"
    args = ["--stack", "dev", "--project-dir", str(project), "--markdown", str(md), "--json", str(plan)]
    assert main(args) == 2
    capsys.readouterr()
    assert "failed" in md.read_text() and "RuntimeError: boom in program" in md.read_text()
    assert json.loads(plan.read_text())["exitCode"] == 2


def test_unexpected_bug_is_exit_2_not_a_verdict(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def bug(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "run_preflight", bug)
    md = tmp_path / "summary.md"
    assert main(["--stack", "dev", "--markdown", str(md)]) == 2
    captured = capsys.readouterr()
    assert_one_clear_error(captured.out, "preflight failed unexpectedly: ZeroDivisionError: a bug")
    assert "Traceback" in captured.err  # for whoever fixes the bug
    assert "ZeroDivisionError: a bug" in md.read_text()


# 10. From any working directory.


def no_pythonpath() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_runs_from_another_directory_by_path(tmp_path: Path) -> None:
    """`python <repo>/preflight --project-dir <repo>`: no PYTHONPATH, no cd; relative outputs land in cwd."""
    command = [sys.executable, str(ROOT / "preflight"), "--project-dir", str(ROOT), "--stack", "dev"]
    done = subprocess.run(
        [*command, "--json", "plan.json", "--markdown", "summary.md"],
        cwd=tmp_path,
        env=no_pythonpath(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((tmp_path / "plan.json").read_text())["project"] == "pouw-cicd"
    assert "passed" in (tmp_path / "summary.md").read_text()


def test_module_form_from_another_directory_uses_project_dir(tmp_path: Path) -> None:
    """`python -m preflight` from elsewhere needs the repo importable (PYTHONPATH=<repo>)."""
    project = project_copy(tmp_path / "project", "dev", {})
    done = subprocess.run(
        [sys.executable, "-m", "preflight", "--project-dir", str(project), "--stack", "qa"],
        cwd=tmp_path,
        env={**no_pythonpath(), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert_one_clear_error(done.stdout, f"{project}/Pulumi.qa.yaml", "known stacks: dev")


def test_rollout_honours_project_dir(tmp_path: Path) -> None:
    project = project_copy(tmp_path / "project", "dev", {"pouw-cicd:services": [{"name": "only-in-copy"}]})
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "preflight"),
            "rollout",
            "promote",
            "--stack",
            "dev",
            "--service",
            "web",
            "--project-dir",
            str(project),
            "--dry-run",
        ],
        cwd=tmp_path,
        env=no_pythonpath(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no service 'web' in pouw-cicd:services; services are only-in-copy" in done.stdout


def test_split_project_dir() -> None:
    assert cli.split_project_dir(["promote", "--stack", "dev"]) == (
        cli.PROJECT_DIR,
        ["promote", "--stack", "dev"],
    )
    assert cli.split_project_dir(["promote", "--project-dir", "/x", "--dry-run"]) == (
        Path("/x"),
        ["promote", "--dry-run"],
    )
    assert cli.split_project_dir(["--project-dir=/y", "set-weight"]) == (Path("/y"), ["set-weight"])


# The interpreter: the one the CLI would run, from PulumiPolicy.yaml's runtime options.


def test_the_pack_runs_in_the_virtualenv_its_manifest_declares() -> None:
    pack = PolicyPackProcess(ROOT / "policies", "p", "s")
    assert Path(pack.python) == ROOT / "policies" / "venv" / "bin" / "python"
    with pack:
        assert pack.pid is not None
        exe = Path(f"/proc/{pack.pid}/exe").resolve()
        assert exe == (ROOT / "policies" / "venv" / "bin" / "python").resolve()


def test_a_missing_pack_virtualenv_fails_as_the_cli_would(tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    pack.mkdir()
    (pack / "PulumiPolicy.yaml").write_text("runtime: {name: python, options: {virtualenv: venv}}\n")
    with pytest.raises(PolicyPackError) as err:
        PolicyPackProcess(pack, "p", "s")
    assert f"{pack / 'venv'}: the pack's virtualenv" in str(err.value)
    assert "make policy-venv" in str(err.value)


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ("version: 0.0.1\n", "`runtime` is missing"),
        ("runtime: nodejs\n", "runtime 'nodejs': preflight runs Python packs only"),
        ("runtime: {name: python, options: {toolchain: uv}}\n", "toolchain 'uv'"),
    ],
)
def test_unsupported_pack_runtimes_are_named(tmp_path: Path, manifest: str, expected: str) -> None:
    (tmp_path / "PulumiPolicy.yaml").write_text(manifest)
    with pytest.raises(PolicyPackError, match=expected.replace("(", r"\(")):
        PolicyPackProcess(tmp_path, "p", "s")


def test_an_interrupt_raised_where_it_cannot_propagate_prints_no_traceback() -> None:
    """SIGTERM can land while a compiled extension calls back into Python (pydantic-core building a
    validator during an import): the KeyboardInterrupt is then "unraisable" and Python prints it as
    "Exception ignored in ..." before the watcher has marked the run interrupted. Preflight's hook keeps
    it quiet (the run still ends as interrupted); other unraisable errors are still shown."""
    script = """
from preflight import cli
cli._silence_what_an_interrupt_abandons()
class Raises:
    def __init__(self, exc):
        self.exc = exc
    def __del__(self):  # an exception here cannot propagate: Python hands it to sys.unraisablehook
        raise self.exc
Raises(KeyboardInterrupt())
Raises(ValueError("shown"))
"""
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "KeyboardInterrupt" not in done.stderr
    assert "ValueError: shown" in done.stderr


def test_a_thread_the_interrupt_cut_short_prints_no_traceback() -> None:
    """After a signal, the cleanup stops the pack and closes its channel; a gRPC thread with a call in
    flight then dies with "Cannot invoke RPC on closed channel!". Preflight's hook keeps that quiet
    once the run is interrupted; a thread that fails before any signal is still shown."""
    script = """
import threading
from preflight import cli
cli._silence_what_an_interrupt_abandons()
def fail(message):
    raise ValueError(message)
for message in ("before the signal", "after the signal"):
    if message.startswith("after"):
        cli._interrupted_process.set()
    thread = threading.Thread(target=fail, args=(message,))
    thread.start()
    thread.join()
"""
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ValueError: before the signal" in done.stderr
    assert "after the signal" not in done.stderr
