"""The fault suite's fleet fixtures (tests/e2e/faults.py), for the modules that ask for them:
each module that does gets a fleet of its own (module scope); the others are untouched."""

from tests.e2e.faults import (  # noqa: F401 - fixtures, found here by pytest
    clean,
    db,
    fleet,
    fleet_file,
    ssh_pool,
    webhook,
)
