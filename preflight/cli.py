"""`python -m preflight --stack dev`: what `pulumi preview --policy-pack policies` does, offline.

Exit codes: 0 clean (advisories allowed), 1 a mandatory violation and nothing else, 2 anything else
that went wrong (invalid settings, a missing policy config, a program error, a policy pack that cannot
run or does not answer in time, an interrupt), with one `error:` line. `--json` and `--markdown` are
written on failure too. Runs from any directory: `--project-dir` names the project.

`--export state.json` also writes the plan as a `pulumi stack export` document (`preflight/export.py`;
secrets in secret form, never in plaintext), for `pulumi policy analyze --file state.json --policy-pack
policies --policy-pack-config policies/config/<stack>.json --json` (Pulumi 3.249+) to run the pack in
the real engine; `python -m preflight agree` then compares the two verdicts. It is written only when
the program ran (also when the pack then failed); otherwise a file left at that path by an earlier run
is removed, so that nothing analyses a stale plan.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from preflight.analyzer import (
    Analysis,
    AnalysisResult,
    PolicyPackError,
    PolicyPackProcess,
    kill_running_packs,
    load_policy_config,
)
from preflight.engine import ProgramRun, registrations_to, run_program
from preflight.report import (
    Preflight,
    failure_json,
    failure_markdown,
    markdown,
    plan_json,
    print_report,
)
from preflight.stackconfig import StackConfigError, load_stack_config

PROJECT_DIR = Path(__file__).resolve().parent.parent
NO_POLICY_CONFIG = "--no-policy-config"
INTERRUPT_GRACE = 5.0  # seconds from SIGTERM/SIGINT to exit 2, whether or not the cleanup has finished


def default_policy_config(pack_dir: Path, stack: str) -> Path:
    """`<pack>/config/<stack>.json`, which must exist: a stack without one is a mistake, not a default."""
    path = pack_dir / "config" / f"{stack}.json"
    if path.is_file():
        return path
    example = pack_dir / "config" / "dev.json"
    if not example.is_file():
        example = next(iter(sorted((pack_dir / "config").glob("*.json"))), example)
    how = f"create it (copy {example})" if example.is_file() else "create it"
    raise PolicyPackError(
        f"{path}: no policy config for stack {stack}; {how} "
        f"or pass {NO_POLICY_CONFIG} to run the pack on its own defaults"
    )


def run_preflight(
    stack: str,
    project_dir: Path = PROJECT_DIR,
    pack_dir: Path | None = None,
    policy_config: Path | None = None,
    *,
    no_policy_config: bool = False,
) -> Preflight:
    """Program under mocks, then the policy pack over the Analyzer protocol (skipped on error).

    Settings (stack file, pack manifest, policy config) are checked before the program runs and raise
    `StackConfigError` or `PolicyPackError`. The pack process boots and is configured while the program
    runs, and analyses each resource as soon as the program has registered it (`Analysis`); it is
    stopped whatever happens. A program error or a pack failure after that is in the result (exit 2).
    """
    config = load_stack_config(project_dir, stack)
    pack_dir = pack_dir or project_dir / "policies"
    pack = PolicyPackProcess(pack_dir, project=config.project, stack=stack)  # reads PulumiPolicy.yaml
    if no_policy_config:
        if policy_config is not None:
            raise PolicyPackError(f"--policy-config and {NO_POLICY_CONFIG} exclude each other")
        settings: dict[str, Any] = {}
        source = "the pack's defaults"
    else:
        policy_config = policy_config or default_policy_config(pack_dir, stack)
        settings = load_policy_config(policy_config)
        source = str(policy_config)

    def result(run: ProgramRun, analysis: AnalysisResult | None = None, error: str = "") -> Preflight:
        return Preflight(
            config=config,
            run=run,
            analysis=analysis,
            policy_config="" if no_policy_config else source,
            pack_defaults=no_policy_config,
            error=error,
        )

    with pack:
        analysis = Analysis(pack, settings, config_source=source)
        try:
            with registrations_to(analysis.feed):
                run = run_program(project_dir, config)
            if run.error is not None:
                return result(run)
            try:
                return result(run, analysis.finish())
            except PolicyPackError as err:
                return result(run, error=str(err))
        finally:
            analysis.close()


def split_project_dir(argv: list[str]) -> tuple[Path, list[str]]:
    """`--project-dir DIR` taken out of a subcommand's arguments (default: this checkout)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR)
    known, rest = parser.parse_known_args(argv)
    return known.project_dir, rest


def output_problem(path: Path | None, flag: str) -> str:
    """Why `path` cannot be written ("" if it can), checked before anything runs."""
    if path is None:
        return ""
    if path.is_dir():
        return f"{flag} {path}: is a directory; give a file path"
    parent = path.absolute().parent
    if not parent.is_dir():
        return f"{flag} {path}: directory {parent} does not exist; create it first"
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"{flag} {path}: not writable"
    return ""


_interrupted_process = threading.Event()  # set once a signal interrupted a run in this process


def _silence_what_an_interrupt_abandons() -> None:
    """An interrupted program leaves asyncio tasks and coroutines behind; collected (while the
    KeyboardInterrupt unwinds, or at exit) they print "Task was destroyed but it is pending!",
    "coroutine ... was never awaited" and "Exception ignored in: <coroutine ...>" tracebacks, and a
    thread whose channel the cleanup closed prints its exception: noise, not errors, after the one
    error line. Installed up front (the noise can come before any of our
    code runs again), these filters pass everything through until a signal has been received."""
    if getattr(_silence_what_an_interrupt_abandons, "installed", False):
        return
    _silence_what_an_interrupt_abandons.installed = True  # type: ignore[attr-defined]

    def interrupted() -> bool:  # or unwinding from the interrupt, before the watcher has noticed
        return _interrupted_process.is_set() or isinstance(sys.exc_info()[1], KeyboardInterrupt)

    logging.getLogger("asyncio").addFilter(lambda record: not interrupted())
    unraisable_hook = sys.unraisablehook

    def unraisable(unraisable: Any) -> None:
        # The interrupt itself, raised where it cannot propagate (inside a callback from a compiled
        # extension, e.g. pydantic-core building a validator while a module imports): the watcher
        # still ends the run as interrupted, so it is not reported twice.
        if not (interrupted() or isinstance(unraisable.exc_value, KeyboardInterrupt)):
            unraisable_hook(unraisable)

    sys.unraisablehook = unraisable
    show_warning = warnings.showwarning

    def warning(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if not (interrupted() and category is RuntimeWarning):
            show_warning(message, category, *args, **kwargs)

    warnings.showwarning = warning
    thread_hook = threading.excepthook

    def thread_exception(args: Any) -> None:
        # A thread the interrupt's cleanup cut short: gRPC's channel thread of a call in flight when
        # the pack was stopped ("Cannot invoke RPC on closed channel!", seen once in a make test).
        if not _interrupted_process.is_set():
            thread_hook(args)

    threading.excepthook = thread_exception


class Interrupts:
    """Which signal, if any, interrupted this run (set by the watcher thread)."""

    def __init__(self) -> None:
        self.received = ""
        self.noticed = threading.Event()

    def name(self) -> str:
        self.noticed.wait(timeout=1.0)  # the watcher may not have read the wakeup byte yet
        return self.received or "SIGINT"


@contextmanager
def interrupts_stop_the_pack(on_hang: Callable[[str], None]) -> Iterator[Interrupts]:
    """SIGTERM (a cancelled CI job, `kill`) and SIGINT (Ctrl-C) raise KeyboardInterrupt in the main
    thread, so the `with PolicyPackProcess` cleanup runs and preflight reports the interrupt (exit 2),
    and a watcher thread, woken through `signal.set_wakeup_fd`, stops every running pack's process
    group at once.

    The handler is the C `signal.default_int_handler`, what Python itself installs for Ctrl-C: no
    Python code runs at an arbitrary point of the main thread (with a Python-level handler, CPython
    3.11 segfaulted in 2 of ~80 interrupts landing in the program's imports; with this one, 1 in
    ~320, not attributed). The Pulumi SDK
    can swallow the KeyboardInterrupt raised inside the program's event loop (the run then ends as a
    program error, or never ends): `Interrupts.received` still says a signal came, and if preflight
    has not finished INTERRUPT_GRACE seconds after it, the watcher calls `on_hang(signal_name)` to
    report it and exit. An inherited "ignore" (nohup, background jobs) is kept.
    """
    interrupts = Interrupts()
    if threading.current_thread() is not threading.main_thread():
        yield interrupts
        return
    _silence_what_an_interrupt_abandons()
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    watchdogs: list[threading.Timer] = []

    def watch() -> None:
        while data := os.read(read_fd, 64):  # one byte per signal; EOF when the context ends
            for signum in data:
                if signum in (signal.SIGTERM, signal.SIGINT) and not interrupts.received:
                    _interrupted_process.set()
                    interrupts.received = signal.Signals(signum).name
                    kill_running_packs()
                    watchdog = threading.Timer(INTERRUPT_GRACE, on_hang, args=(interrupts.received,))
                    watchdog.daemon = True
                    watchdog.start()
                    watchdogs.append(watchdog)
                    interrupts.noticed.set()

    watcher = threading.Thread(target=watch, name="preflight-signals", daemon=True)
    watcher.start()
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    previous = {
        sig: signal.signal(sig, signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGINT)
        if signal.getsignal(sig) is not signal.SIG_IGN
    }
    try:
        yield interrupts
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(previous_fd)
        os.close(write_fd)
        watcher.join(timeout=1.0)
        os.close(read_fd)
        for watchdog in watchdogs:
            watchdog.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m preflight", description=__doc__)
    parser.add_argument("--stack", default="dev", help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR, help=f"default: {PROJECT_DIR}")
    parser.add_argument("--policy-pack", type=Path, help="pack directory (default: policies/)")
    configs = parser.add_mutually_exclusive_group()
    configs.add_argument("--policy-config", type=Path, help="default: <policy-pack>/config/<stack>.json")
    configs.add_argument(
        NO_POLICY_CONFIG,
        action="store_true",
        help="run the pack on its own defaults, without a policy config (said in the report)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the plan as JSON")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="write a PR-comment summary")
    parser.add_argument(
        "--export", type=Path, metavar="PATH", help="write the plan as a `pulumi stack export` document"
    )
    args = parser.parse_args(argv)
    # Piped output (CI logs, tests) gets a wide fixed width instead of rich's 80 columns.
    console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
    report = _Report(args, console)

    def hung(name: str) -> None:  # the watchdog: cleanup did not finish after a signal
        report.fail(_interrupted(name))
        sys.stdout.flush()
        os._exit(2)

    interrupts = Interrupts()
    try:
        with interrupts_stop_the_pack(hung) as interrupts:
            return _main(args, report, interrupts)
    except KeyboardInterrupt:  # a signal in the last moments, after _main returned
        _after_interrupt()
        return report.fail(_interrupted(interrupts.name()))


def _interrupted(name: str) -> str:
    return f"interrupted by {name}; the policy pack was stopped"


class _Report:
    """The console and the --json/--markdown outputs; a failure is reported once, to all of them."""

    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.stack: str = args.stack
        self.console = console
        outputs = {"--json": args.json, "--markdown": args.markdown, "--export": args.export}
        problems = {flag: output_problem(path, flag) for flag, path in outputs.items()}
        self.problems = [p for p in problems.values() if p]
        # A failure's summary still goes to every output that can be written.
        self.writable = {f: path for f, path in outputs.items() if path is not None and not problems[f]}
        self._failed = threading.Lock()

    def fail(self, message: str) -> int:
        if self._failed.acquire(blocking=False):  # the watchdog and the main thread must not both report
            self.console.print(f"[red bold]error:[/] {escape(message)}")
            self.write(
                {
                    "--json": lambda: failure_json(self.stack, message),
                    "--markdown": lambda: failure_markdown(self.stack, message),
                }
            )
        return 2

    def write(self, texts: dict[str, Callable[[], str]]) -> bool:
        """Each output its text, made only for the outputs asked for (the JSON plan of a large stack takes
        a while); an output with none (`--export` when the program did not run) is removed."""
        for flag, path in self.writable.items():
            try:
                if flag not in texts:
                    path.unlink(missing_ok=True)
                    continue
                path.write_text(texts[flag]())
            except OSError as err:
                reason = err.strerror or str(err)
                self.console.print(f"[red bold]error:[/] {escape(f'{flag} {path}: cannot write: {reason}')}")
                return False
        return True


def _main(args: argparse.Namespace, report: _Report, interrupts: Interrupts) -> int:
    try:
        if report.problems:
            return report.fail(report.problems[0])
        if not args.project_dir.is_dir():
            what = "is not a directory" if args.project_dir.exists() else "does not exist"
            return report.fail(f"--project-dir {args.project_dir} {what}")
        result = run_preflight(
            args.stack,
            args.project_dir,
            args.policy_pack,
            args.policy_config,
            no_policy_config=args.no_policy_config,
        )
        if interrupts.received:  # the SDK swallowed the KeyboardInterrupt: the run is not a result
            raise KeyboardInterrupt
        print_report(result, report.console)
        texts: dict[str, Callable[[], str]] = {
            "--json": lambda: plan_json(result),
            "--markdown": lambda: markdown(result),
        }
        if result.run.error is None and args.export is not None:
            from preflight.export import export_preflight  # only for --export

            export = export_preflight(result)
            texts["--export"] = export.json
            for where in export.redacted:
                report.console.print(f"[yellow bold]warning:[/] --export: {escape(where)}: a secret in clear")
        if not report.write(texts):
            return 2
        return result.exit_code
    except (StackConfigError, PolicyPackError) as err:
        return report.fail(str(err))
    except KeyboardInterrupt:
        _after_interrupt()
        return report.fail(_interrupted(interrupts.name()))
    except Exception as err:  # noqa: BLE001 - a bug must not look like a policy verdict (exit 1)
        traceback.print_exc(file=sys.stderr)
        bug = f"{type(err).__name__}: {err}"
        return report.fail(f"preflight failed unexpectedly: {bug} (traceback on stderr)")


def _after_interrupt() -> None:
    """On the interrupted path: make the interrupt end as exit 2.

    CPython (3.11, 3.12) sets a process-wide "unhandled KeyboardInterrupt" flag when the exception
    leaves code run by `exec`/`eval` of a string (the namedtuple and dataclass bodies the program's
    imports generate), even though it is handled here; under `python -m`, the interpreter then exits
    by killing itself with SIGINT instead of with exit 2. Each `exec` of a string resets the flag.
    """
    _interrupted_process.set()
    exec("pass")
