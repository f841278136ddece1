"""Who is using the app, and what they may do.

The contract the pages rely on:

- `require_sign_in()` is called once by `app.py` before any page runs. It stops the script
  (`st.stop()`) until the visitor is signed in, and returns their role.
- `current_role()` is the signed-in visitor's role, for pages that show operator actions.

Roles: "viewer" reads; "operator" may also trigger flows. Nobody is an operator without
signing in.

The sign-in mode is explicit: `GRADIENTLAB_APP_SIGN_IN` is one of

- `oidc`: Streamlit's own `st.login`, configured in `.streamlit/secrets.toml` under `[auth]`.
  Roles come from `[gradientlab.roles]` in the same file: keys are verified email addresses
  (`"alice@example.com" = "operator"`) or `"<issuer>|<subject>"`; `"*"` sets everyone else's
  role, "none" (no access) unless set. An email the provider does not say is verified matches
  nothing but `"*"`.
- `users`: the local users file (`gradientlab app-user add NAME --role viewer|operator`).
- `none`: no sign-in, read-only (viewer), and only while the app listens on loopback.

Unset, unknown, or a configuration that does not load (a secrets file that does not parse, no
`[auth]`, a users file that is missing, empty or broken): the app shows no page, only what to
fix."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NoReturn

import streamlit as st

from gradientlab.app_users import (
    USERS_FILE_VAR,
    AppUser,
    AppUsersError,
    FailedSignIns,
    Role,
    authenticate,
    load_users,
    rehash_if_weak,
    users_file,
)
from gradientlab.binding import is_loopback

__all__ = ["MODE_VAR", "Role", "bound_to_loopback", "current_role", "require_sign_in"]

_ROLE_KEY = "gradientlab_role"
_USER_KEY = "gradientlab_user"
_NO_ACCESS = "none"
MODE_VAR = "GRADIENTLAB_APP_SIGN_IN"
MODES = ("oidc", "users", "none")


def bound_to_loopback() -> bool:
    """Whether Streamlit listens on a loopback address only (its `server.address`)."""
    return is_loopback(st.get_option("server.address") or "")


def current_role() -> Role:
    """The role `require_sign_in` granted this session; viewer without one."""
    role = st.session_state.get(_ROLE_KEY)
    return role if role in ("viewer", "operator") else "viewer"  # type: ignore[no-any-return]


def current_identity() -> str | None:
    """Who is signed in, as the runs they start record it: `user:<name>` (users mode) or
    `oidc:<email>` (or `oidc:<issuer>|<subject>` without an email); None without a sign-in."""
    if sign_in_mode() == "oidc":
        if not st.user.get("is_logged_in", False):
            return None
        email = st.user.get("email")
        if email:
            return f"oidc:{email}"
        return f"oidc:{st.user.get('iss')}|{st.user.get('sub')}"
    name = st.session_state.get(_USER_KEY)
    return f"user:{name}" if name and sign_in_mode() == "users" else None


def sign_in_mode() -> str | None:
    mode = os.environ.get(MODE_VAR, "").strip().lower()
    return mode if mode in MODES else None


def require_sign_in() -> Role:
    mode = sign_in_mode()
    if mode is None:
        given = os.environ.get(MODE_VAR)
        _refuse(
            (
                f"{MODE_VAR}={given!r} is not a sign-in mode. "
                if given
                else f"{MODE_VAR} is not set. "
            )
            + f"Set it to one of {', '.join(MODES)}: `users` (add users with `gradientlab "
            "app-user add NAME --role viewer|operator`), `oidc` (.streamlit/secrets.toml "
            "[auth], see the README's Sign-in section), or `none` (read-only, this machine only)."
        )
    if mode == "oidc":
        problem = _oidc_problem()
        if problem:
            _refuse(f"Sign-in is misconfigured ({MODE_VAR}=oidc): {problem}")
        role = _oidc_sign_in()
    elif mode == "users":
        try:
            users = load_users()
        except AppUsersError as exc:
            _refuse(f"Sign-in is misconfigured: {exc}")
        if not users:
            _refuse(
                f"Sign-in is misconfigured ({MODE_VAR}=users): no users in {users_file()} "
                f"(moved by {USERS_FILE_VAR}); add one with `gradientlab app-user add NAME "
                "--role operator`"
            )
        role = _local_sign_in(users)
    else:
        if not bound_to_loopback():
            _refuse_unconfigured()
        role = "viewer"
        with st.sidebar:
            st.caption(f"Read-only: no sign-in ({MODE_VAR}=none)")
    st.session_state[_ROLE_KEY] = role
    return role


def _refuse(message: str) -> NoReturn:
    st.error(message)
    st.stop()
    raise AssertionError("st.stop() returned")  # pragma: no cover


def _oidc_problem() -> str | None:
    """Why the OIDC configuration cannot be used, or None."""
    try:
        loaded = st.secrets.load_if_toml_exists()
    except Exception as exc:  # noqa: BLE001 - Streamlit's parse errors have no common type
        return f"the secrets file does not load: {exc}"
    if not loaded:
        return "no .streamlit/secrets.toml"
    if "auth" not in st.secrets:
        return "the secrets file has no [auth] section"
    return None


def oidc_role(
    configured: Mapping[str, object],
    email: str | None,
    verified: object,
    issuer: str | None = None,
    subject: str | None = None,
) -> str:
    """The role `[gradientlab.roles]` gives this account ("none": may not use the app): by
    `"<issuer>|<subject>"`, else by its email when the provider says it is verified, else
    `"*"`'s, else none."""
    roles = {str(k).lower(): str(v) for k, v in configured.items()}
    default = roles.get("*", _NO_ACCESS)
    if issuer and subject:
        by_subject = roles.get(f"{issuer}|{subject}".lower())
        if by_subject is not None:
            return by_subject
    if not email or verified is not True:
        return default
    return roles.get(email.lower(), default)


def _oidc_sign_in() -> Role:
    if not st.user.get("is_logged_in", False):
        st.title("GradientLab")
        st.write("Sign in to see the fleet.")
        if st.button("Sign in", type="primary"):
            st.login()
        st.stop()
    email = st.user.get("email")
    configured = st.secrets.get("gradientlab", {}).get("roles", {})
    issuer, subject = st.user.get("iss"), st.user.get("sub")
    role = oidc_role(
        configured,
        str(email) if email else None,
        st.user.get("email_verified"),
        str(issuer) if issuer else None,
        str(subject) if subject else None,
    )
    if role not in ("viewer", "operator"):
        st.error(
            f"{email or 'This account'} may not use this app. Ask an operator to add it under "
            "[gradientlab.roles] in .streamlit/secrets.toml."
        )
        if st.button("Sign out"):
            st.logout()
        st.stop()
    with st.sidebar:
        st.caption(f"Signed in as {email} ({role})")
        if st.button("Sign out"):
            st.logout()
    return role  # type: ignore[return-value]


@st.cache_resource(show_spinner=False)
def failed_sign_ins() -> FailedSignIns:
    """One count of failed attempts for the whole app process (every session shares it)."""
    return FailedSignIns()


def _local_sign_in(users: dict[str, AppUser]) -> Role:
    signed_in = st.session_state.get(_USER_KEY)
    user = users.get(signed_in) if signed_in else None
    if user is not None:
        with st.sidebar:
            st.caption(f"Signed in as {user.name} ({user.role})")
            if st.button("Sign out"):
                _sign_out()
        return user.role
    if signed_in:  # removed from the file since: sign out
        _sign_out(rerun=False)
    st.title("GradientLab")
    with st.form("sign-in"):
        name = st.text_input("User name")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        limiter = failed_sign_ins()
        client = f"client:{_client_address()}"
        wait = max(limiter.wait_seconds(name), limiter.wait_seconds(client))
        if wait > 0:
            st.error(f"Too many failed attempts; try again in {wait:.0f} s.")
        else:
            user = authenticate(users, name, password)
            if user is None:
                limiter.failed(name)
                limiter.failed(client)
                st.error("Wrong user name or password.")
            else:
                limiter.succeeded(name)
                rehash_if_weak(user, password)
                st.session_state[_USER_KEY] = user.name
                st.rerun()
    st.stop()


def _client_address() -> str:
    """The visitor's address as Streamlit sees it (a proxy's, behind one)."""
    try:
        address = st.context.ip_address
    except Exception:  # noqa: BLE001 - not every runtime has a client
        address = None
    # None: this machine (Streamlit reports loopback visitors so); AppTest's is not a string
    return address if isinstance(address, str) and address else "this machine"


def _sign_out(rerun: bool = True) -> None:
    for key in (_USER_KEY, _ROLE_KEY):
        st.session_state.pop(key, None)
    if rerun:
        st.rerun()


def _refuse_unconfigured() -> None:
    address = st.get_option("server.address") or "every address"
    _refuse(
        f"This app listens on {address}, beyond this machine, and no sign-in is configured "
        f"({MODE_VAR}=none), so it shows nothing. Either add users: `gradientlab app-user add "
        f"NAME --role viewer` (or `--role operator`; the file is {users_file()}, moved by "
        f"{USERS_FILE_VAR}) and set {MODE_VAR}=users; or configure OIDC sign-in in "
        f".streamlit/secrets.toml under [auth] (see the README's Sign-in section) and set "
        f"{MODE_VAR}=oidc; or bind the app to 127.0.0.1 (`server.address` in "
        ".streamlit/config.toml)."
    )
