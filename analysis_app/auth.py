"""Who is using the app, and what they may do.

The contract the pages rely on (the sign-in itself is filled in by the control-plane work):

- `require_sign_in()` is called once by `app.py` before any page runs. It stops the script
  (`st.stop()`) until the visitor is signed in, and returns their role.
- `current_role()` is the signed-in visitor's role, for pages that show operator actions.

Roles: "viewer" reads; "operator" may also trigger flows. Until sign-in is configured, the app
only grants "operator" when it is bound to loopback (a person at the machine itself)."""

from __future__ import annotations

import ipaddress
from typing import Literal

import streamlit as st

Role = Literal["viewer", "operator"]


def bound_to_loopback() -> bool:
    """Whether Streamlit listens on a loopback address only (its `server.address`)."""
    address = st.get_option("server.address") or ""
    if address in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # unset (every address) or a host name
        return False


def current_role() -> Role:
    return "operator" if bound_to_loopback() else "viewer"


def require_sign_in() -> Role:
    return current_role()
