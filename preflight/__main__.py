"""`python -m preflight [rollout|diff|policy-table|agree] ...`: each subcommand imports only its own module.

Why lazily: `preflight.rollout` imports `components.rollout` from this checkout, and the diff and
rollout modules bring their own libraries; a preview must import neither (it would also mix this
checkout's `components/` into the run of another `--project-dir`).
"""

import importlib
import sys
from pathlib import Path

if not __package__:  # run as a path (`python path/to/preflight ...`): import the package from its parent
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

# subcommand -> (module, whether its main takes `--project-dir` as a second argument)
SUBCOMMANDS = {
    "rollout": ("preflight.rollout", True),
    "diff": ("preflight.diff", True),
    "policy-table": ("preflight.policy_table", True),
    "agree": ("preflight.agree", False),
}

command = SUBCOMMANDS.get(sys.argv[1]) if len(sys.argv) > 1 else None
if command is None:
    from preflight import cli

    sys.exit(cli.main())
module_name, takes_project_dir = command
module = importlib.import_module(module_name)
if not takes_project_dir:
    sys.exit(module.main(sys.argv[2:]))
from preflight.cli import split_project_dir  # noqa: E402 (only for the subcommands that take it)

project_dir, argv = split_project_dir(sys.argv[2:])
sys.exit(module.main(argv, project_dir))
