"""Which addresses a server may listen on without sign-in: loopback only.

A server GradientLab starts (Prefect's, the analysis app) that listens beyond loopback must ask
for credentials; these checks say whether an address is loopback, and refuse otherwise."""

from __future__ import annotations

import ipaddress

PREFECT_SERVER_AUTH_VAR = "PREFECT_SERVER_API_AUTH_STRING"  # the server's side
PREFECT_CLIENT_AUTH_VAR = "PREFECT_API_AUTH_STRING"  # workers, flows and the CLI


def is_loopback(address: str) -> bool:
    """Whether `address` (a listen address) reaches only this machine. An empty address,
    `0.0.0.0` and `::` mean every address; a host name other than `localhost` may resolve
    anywhere, so it counts as beyond loopback."""
    address = address.strip().strip("[]")
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class UnsafeBinding(ValueError):
    """A server would listen beyond loopback without sign-in."""


def check_prefect_server_binding(host: str, auth_string: str | None) -> None:
    """Refuse a Prefect server on `host` beyond loopback unless its auth string is set."""
    if is_loopback(host) or (auth_string or "").strip():
        return
    raise UnsafeBinding(
        f"refusing to start Prefect's server on {host or 'every address'!r} without sign-in: "
        f"anyone who reaches it could run flows. Set {PREFECT_SERVER_AUTH_VAR} in the server's "
        f"environment (for example `{PREFECT_SERVER_AUTH_VAR}=admin:<a long random password>` "
        f"in a root-only EnvironmentFile), and the same value as {PREFECT_CLIENT_AUTH_VAR} for "
        "every worker and client; or bind it to 127.0.0.1"
    )
