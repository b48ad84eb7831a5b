"""`python -m preflight --stack dev`: what `pulumi preview --policy-pack policies` does, offline.

Exit codes: 0 clean (advisories allowed), 1 a mandatory violation, 2 invalid settings, a program
error or a policy pack that cannot run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from preflight.analyzer import PolicyPackError, PolicyPackProcess, analyze, load_policy_config
from preflight.engine import run_program
from preflight.report import Preflight, markdown, plan_json, print_report
from preflight.stackconfig import StackConfigError, load_stack_config

PROJECT_DIR = Path(__file__).resolve().parent.parent


def run_preflight(
    stack: str,
    project_dir: Path = PROJECT_DIR,
    pack_dir: Path | None = None,
    policy_config: Path | None = None,
) -> Preflight:
    """Program under mocks, then the policy pack over the Analyzer protocol (skipped on error).

    The pack process boots while the program runs; it is stopped whatever happens.
    """
    config = load_stack_config(project_dir, stack)
    pack_dir = pack_dir or project_dir / "policies"
    if policy_config is None:
        candidate = pack_dir / "config" / f"{stack}.json"
        policy_config = candidate if candidate.exists() else None
    settings = load_policy_config(policy_config)
    with PolicyPackProcess(pack_dir, project=config.project, stack=stack) as pack:
        run = run_program(project_dir, config)
        if run.error is not None:
            return Preflight(config=config, run=run, analysis=None)
        analysis = analyze(pack, run.resources, settings, config_source=str(policy_config or "policy config"))
    return Preflight(config=config, run=run, analysis=analysis)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m preflight", description=__doc__)
    parser.add_argument("--stack", default="dev", help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR)
    parser.add_argument("--policy-pack", type=Path, help="pack directory (default: policies/)")
    parser.add_argument("--policy-config", type=Path, help="default: <policy-pack>/config/<stack>.json")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the plan as JSON")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="write a PR-comment summary")
    args = parser.parse_args(argv)
    # Piped output (CI logs, tests) gets a wide fixed width instead of rich's 80 columns.
    console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
    try:
        result = run_preflight(args.stack, args.project_dir, args.policy_pack, args.policy_config)
    except (StackConfigError, PolicyPackError) as err:
        console.print(f"[red bold]error:[/] {err}", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        return 2
    print_report(result, console)
    if args.json:
        args.json.write_text(plan_json(result))
    if args.markdown:
        args.markdown.write_text(markdown(result))
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
