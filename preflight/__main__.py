import sys

from preflight import cli, rollout

if sys.argv[1:2] == ["rollout"]:
    sys.exit(rollout.main(sys.argv[2:], cli.PROJECT_DIR))
sys.exit(cli.main())
