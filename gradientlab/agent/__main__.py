"""The runner's entry point: `python -m gradientlab.agent <command>` here, and on a host
`python ~/.gradientlab/node/runner.py <command>` (deploy ships this file as runner.py, beside the
agent/ folder). The commands are in `commands.py`."""

import os
import sys

if __package__:
    from .commands import main
else:  # a host's runner.py: the agent package is the folder beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from agent.commands import main  # type: ignore[no-redef]

if __name__ == "__main__":
    sys.exit(main())
