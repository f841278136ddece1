"""The connection keeper for a worker machine, with the SSH key from Prefect.

    python -m deployments.keeper [keeper options]

The same keeper as `python -m gradientlab.remote.keeper` (the same options), but when
`GRADIENTLAB_SSH_KEY_BLOCK` names a Secret block it reads the key from there, once, into memory:
`gradientlab/` itself never imports Prefect. Run it beside each worker, as the worker's user with
the worker's `GRADIENTLAB_HOME`, so flow runs find its socket."""

from __future__ import annotations

import sys

from gradientlab.remote import keeper
from tasks.common import use_operator_key_block


def main(argv: list[str] | None = None) -> int:
    use_operator_key_block()
    return keeper.main(argv)


if __name__ == "__main__":
    sys.exit(main())
