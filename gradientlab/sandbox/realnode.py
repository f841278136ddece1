"""A node running Gradient's published extension against the sandbox under the real names: the
set-up that tests and benchmarks share (never the product's, for a real fleet).

- ``find_real_extension()``: the unpacked published extension (``GRADIENTLAB_REAL_EXTENSION``,
  else ``shared/fixtures/`` beside the checkout or at ``/work/shared/fixtures``), or None;
- ``start_real_sandbox()``: a new local CA and the sandbox serving that extension under the real
  names, started;
- ``real_network_yaml()``: the fleet file's ``network:`` section for it (the runner signs in on
  the dashboard's real origin, the only one the extension takes sessions from);
- ``onto_real_names()``: on a deployed host, the host user trusts the CA, the runner's browser
  resolves the real names to the sandbox (``extra_chromium_flags``, with any other flags), and
  the runner restarts on it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .network import SandboxConfig
from .realnames import (
    REAL_DASHBOARD_URL,
    Authority,
    make_authority,
    real_names_sandbox,
    trust_command,
)
from .server import SandboxServer

REAL_EXTENSION_ENV = "GRADIENTLAB_REAL_EXTENSION"
REAL_UNPACKED = "gradient-sentry-node-1.0.16"
_CONFIG = ".gradientlab/node/config.json"
_CA_ON_HOST = ".gradientlab-test-ca.pem"


def real_extension_candidates() -> list[Path]:
    """Where the published extension is looked for, first match wins."""
    named = os.environ.get(REAL_EXTENSION_ENV)
    if named:
        return [Path(named)]
    checkout = Path(__file__).resolve().parents[2]
    return [
        checkout.parent / "shared" / "fixtures" / REAL_UNPACKED,
        Path("/work/shared/fixtures") / REAL_UNPACKED,
    ]


def find_real_extension() -> Path | None:
    return next((p for p in real_extension_candidates() if (p / "manifest.json").is_file()), None)


def start_real_sandbox(
    extension_dir: Path, folder: Path, config: SandboxConfig, **kwargs: Any
) -> tuple[SandboxServer, Authority]:
    """A new CA in ``folder`` and the sandbox under the real names serving ``extension_dir``,
    started (the caller stops it)."""
    authority = make_authority(folder)
    server = real_names_sandbox(extension_dir, authority, config, **kwargs)
    server.start()
    return server, authority


def real_network_yaml(server: SandboxServer) -> str:
    """``server.fleet_network_yaml()`` with the dashboard on its real origin; the control plane
    still reads the API at the sandbox's own address."""
    return server.fleet_network_yaml().replace(
        f"dashboard_url: {server.dashboard_login_url}", f"dashboard_url: {REAL_DASHBOARD_URL}"
    )


def onto_real_names(
    ex: Any,
    python: str | None,
    server: SandboxServer,
    authority: Authority,
    extra_flags: Sequence[str] = (),
) -> dict[str, Any]:
    """On a host the deploy flow has set up (``ex`` its executor): trust the CA, set the
    runner's ``extra_chromium_flags`` to the host-resolver rules plus ``extra_flags``, and
    restart the runner. Returns the runner's start answer."""
    from gradientlab.node.deploy import runner_command

    ex.write_file(_CA_ON_HOST, authority.ca_pem.read_bytes(), 0o644)
    trusted = ex.run(trust_command(_CA_ON_HOST))
    if not trusted.ok:
        raise RuntimeError(f"trusting the sandbox CA failed: {trusted.stderr}")
    config = json.loads(ex.read_file(_CONFIG) or b"{}")
    config["extra_chromium_flags"] = [
        f"--host-resolver-rules={server.host_resolver_rules()}",
        *extra_flags,
    ]
    ex.write_file(_CONFIG, json.dumps(config).encode(), 0o600)
    stopped = ex.run(runner_command(python, "stop"))
    if not stopped.ok:
        raise RuntimeError(f"runner stop failed: {stopped.stderr}")
    started = ex.run(runner_command(python, "start"))
    if '"started": true' not in started.stdout:
        raise RuntimeError(f"runner did not start: {started.stdout} {started.stderr}")
    answer: dict[str, Any] = json.loads(started.stdout.strip().splitlines()[-1])
    return answer
