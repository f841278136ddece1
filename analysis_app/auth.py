"""Who is using the app, and what they may do.

The contract the pages rely on:

- `require_sign_in()` is called once by `app.py` before any page runs. It stops the script
  (`st.stop()`) until the visitor is signed in, and returns their role.
- `current_role()` is the signed-in visitor's role, for pages that show operator actions.

Roles: "viewer" reads; "operator" may also trigger flows.

How a visitor signs in, first match wins:

1. OIDC, when `.streamlit/secrets.toml` has an `[auth]` section: Streamlit's own `st.login`.
   Roles come from `[gradientlab.roles]` in the same file (`"alice@example.com" = "operator"`);
   `"*"` sets the role of everyone else ("viewer" unless set; "none" lets only listed people in).
2. The local users file (`gradientlab app-user add NAME --role viewer|operator`), when it has
   at least one user.
3. Nobody configured: no sign-in, operator, only while the app listens on loopback (a person at
   the machine itself). Beyond loopback the app shows no page and says how to configure one."""

from __future__ import annotations

from collections.abc import Mapping

import streamlit as st

from gradientlab.app_users import (
    USERS_FILE_VAR,
    AppUser,
    AppUsersError,
    FailedSignIns,
    Role,
    authenticate,
    load_users,
    users_file,
)
from gradientlab.binding import is_loopback

__all__ = ["Role", "bound_to_loopback", "current_role", "require_sign_in"]

_ROLE_KEY = "gradientlab_role"
_USER_KEY = "gradientlab_user"
_NO_ACCESS = "none"


def bound_to_loopback() -> bool:
    """Whether Streamlit listens on a loopback address only (its `server.address`)."""
    return is_loopback(st.get_option("server.address") or "")


def current_role() -> Role:
    """The role `require_sign_in` granted this session; without it, operator only for an app
    on loopback with no sign-in configured, viewer otherwise."""
    role = st.session_state.get(_ROLE_KEY)
    if role in ("viewer", "operator"):
        return role  # type: ignore[no-any-return]
    return "operator" if bound_to_loopback() and not _sign_in_configured() else "viewer"


def require_sign_in() -> Role:
    if _oidc_configured():
        role = _oidc_sign_in()
    else:
        try:
            users = load_users()
        except AppUsersError as exc:
            st.error(f"Sign-in is misconfigured: {exc}")
            st.stop()
        if users:
            role = _local_sign_in(users)
        elif bound_to_loopback():
            role = "operator"
        else:
            _refuse_unconfigured()
    st.session_state[_ROLE_KEY] = role
    return role


def _secrets_loaded() -> bool:
    try:
        return bool(st.secrets.load_if_toml_exists())
    except Exception:  # a malformed secrets file is reported by _oidc_configured's caller
        return False


def _oidc_configured() -> bool:
    return _secrets_loaded() and "auth" in st.secrets


def _sign_in_configured() -> bool:
    if _oidc_configured():
        return True
    try:
        return bool(load_users())
    except AppUsersError:
        return True  # a broken file still means someone meant to require sign-in


def oidc_role(configured: Mapping[str, object], email: str | None, verified: object) -> str:
    """The role `[gradientlab.roles]` gives `email` ("none": may not use the app). An address
    the provider says is unverified gets only the default."""
    roles = {str(k).lower(): str(v) for k, v in configured.items()}
    default = roles.get("*", "viewer")
    if not email or verified is False:
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
    role = oidc_role(configured, str(email) if email else None, st.user.get("email_verified"))
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
        wait = limiter.wait_seconds(name)
        if wait > 0:
            st.error(f"Too many failed attempts for {name!r}; try again in {wait:.0f} s.")
        else:
            user = authenticate(users, name, password)
            if user is None:
                limiter.failed(name)
                st.error("Wrong user name or password.")
            else:
                limiter.succeeded(name)
                st.session_state[_USER_KEY] = user.name
                st.rerun()
    st.stop()


def _sign_out(rerun: bool = True) -> None:
    for key in (_USER_KEY, _ROLE_KEY):
        st.session_state.pop(key, None)
    if rerun:
        st.rerun()


def _refuse_unconfigured() -> None:
    address = st.get_option("server.address") or "every address"
    st.error(
        f"This app listens on {address}, beyond this machine, and no sign-in is configured, "
        "so it shows nothing. Either add users: `gradientlab app-user add NAME --role viewer` "
        f"(or `--role operator`; the file is {users_file()}, moved by {USERS_FILE_VAR}); or "
        "configure OIDC sign-in in .streamlit/secrets.toml under [auth] (see the README's "
        "Sign-in section); or bind the app to 127.0.0.1 (`server.address` in "
        ".streamlit/config.toml)."
    )
    st.stop()
