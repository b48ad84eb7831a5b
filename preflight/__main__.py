import sys
from pathlib import Path

if not __package__:  # run as a path (`python path/to/preflight ...`): import the package from its parent
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from preflight import agree, cli, diff, policy_table, rollout

if sys.argv[1:2] == ["rollout"]:
    project_dir, argv = cli.split_project_dir(sys.argv[2:])
    sys.exit(rollout.main(argv, project_dir))
if sys.argv[1:2] == ["diff"]:
    project_dir, argv = cli.split_project_dir(sys.argv[2:])
    sys.exit(diff.main(argv, project_dir))
if sys.argv[1:2] == ["policy-table"]:
    project_dir, argv = cli.split_project_dir(sys.argv[2:])
    sys.exit(policy_table.main(argv, project_dir))
if sys.argv[1:2] == ["agree"]:
    sys.exit(agree.main(sys.argv[2:]))
sys.exit(cli.main())
