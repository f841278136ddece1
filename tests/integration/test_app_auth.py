"""Sign-in before any page of the analysis app: the real app through AppTest, on a real
Postgres, with the listen address and the users file each test sets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy import Engine
from streamlit import config
from streamlit.testing.v1 import AppTest

from analysis_app import auth
from gradientlab import app_users
from gradientlab.app_users import AppUsersError, FailedSignIns

APP = Path(__file__).resolve().parents[2] / "analysis_app" / "app.py"
PASSWORD = "correct horse battery"


@pytest.fixture()
def users_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "app-users.toml"
    monkeypatch.setenv(app_users.USERS_FILE_VAR, str(path))
    return path


@pytest.fixture()
def mode(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """The app's sign-in mode (`GRADIENTLAB_APP_SIGN_IN`); None unsets it."""

    def set_mode(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(auth.MODE_VAR, raising=False)
        else:
            monkeypatch.setenv(auth.MODE_VAR, value)

    yield set_mode


@pytest.fixture()
def listen_on() -> Iterator[object]:
    before = config.get_option("server.address")

    def set_address(address: str) -> None:
        config.set_option("server.address", address)

    yield set_address
    config.set_option("server.address", before)
    auth.failed_sign_ins.clear()
    st.cache_data.clear()


def run(at: AppTest | None = None) -> AppTest:
    at = (at if at is not None else AppTest.from_file(APP, default_timeout=60)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def sign_in(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input[0].input(name)
    at.text_input[1].input(password)
    at.button[0].click()
    return run(at)


def page_shown(at: AppTest) -> bool:
    """A page of the app ran (the sign-in screens' only title is "GradientLab")."""
    return any(t.value != "GradientLab" for t in at.title)


# --- the users file ------------------------------------------------------------------------


def test_users_file_keeps_only_salted_hashes_readable_by_its_owner(users_path: Path) -> None:
    app_users.add_user("alice", "operator", PASSWORD)
    app_users.add_user("bob", "viewer", PASSWORD)

    text = users_path.read_text()
    assert PASSWORD not in text
    assert users_path.stat().st_mode & 0o777 == 0o600
    users = app_users.load_users()
    assert {u.name: u.role for u in users.values()} == {"alice": "operator", "bob": "viewer"}
    assert users["alice"].password_hash != users["bob"].password_hash  # own salt each
    assert app_users.authenticate(users, "alice", PASSWORD) == users["alice"]
    assert app_users.authenticate(users, "alice", PASSWORD + "x") is None
    assert app_users.authenticate(users, "carol", PASSWORD) is None

    app_users.remove_user("bob")
    assert set(app_users.load_users()) == {"alice"}


@pytest.mark.parametrize(
    ("name", "role", "password", "wrong"),
    [
        ("alice", "admin", PASSWORD, "role 'admin'"),
        ("al ice", "viewer", PASSWORD, "user name 'al ice'"),
        ("alice", "viewer", "short", "at least 12 characters"),
    ],
)
def test_bad_user_requests_say_what_is_wrong(
    users_path: Path, name: str, role: str, password: str, wrong: str
) -> None:
    with pytest.raises(AppUsersError, match=wrong):
        app_users.add_user(name, role, password)
    assert not users_path.exists()


def test_a_hand_edited_users_file_names_the_file_and_user(users_path: Path) -> None:
    users_path.write_text('[users.alice]\nrole = "root"\npassword = "x"\n')
    with pytest.raises(AppUsersError, match=r"app-users.toml: \[users.alice\]: role 'root'"):
        app_users.load_users()
    users_path.write_text('[users.alice]\nrole = "viewer"\npassword = "hunter2"\n')
    with pytest.raises(AppUsersError, match="must be a hash"):
        app_users.load_users()


def test_failed_attempts_lock_a_name_for_the_window() -> None:
    now = [1000.0]
    limiter = FailedSignIns(limit=3, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.wait_seconds("alice") == 0
        limiter.failed("alice")
    assert limiter.wait_seconds("alice") == pytest.approx(60)
    assert limiter.wait_seconds("bob") == 0
    now[0] += 59
    assert limiter.wait_seconds("alice") == pytest.approx(1)
    now[0] += 1
    assert limiter.wait_seconds("alice") == 0


# --- the app -------------------------------------------------------------------------------


def test_on_loopback_without_sign_in_the_app_is_read_only(
    engine: Engine, users_path: Path, listen_on: object, mode: object
) -> None:
    mode("none")  # type: ignore[operator]
    listen_on("127.0.0.1")  # type: ignore[operator]
    at = run()
    assert page_shown(at)
    assert at.session_state["gradientlab_role"] == "viewer"  # nobody operator unsigned


@pytest.mark.parametrize("given", [None, "", "ldap", "open"])
def test_without_an_explicit_sign_in_mode_no_page_is_shown(
    engine: Engine, users_path: Path, listen_on: object, mode: object, given: str | None
) -> None:
    app_users.add_user("alice", "operator", PASSWORD)  # a users file alone decides nothing
    mode(given)  # type: ignore[operator]
    listen_on("127.0.0.1")  # type: ignore[operator]
    at = run()
    assert not page_shown(at) and not at.text_input
    message = at.error[0].value
    assert auth.MODE_VAR in message and "oidc, users, none" in message


@pytest.mark.parametrize("address", ["0.0.0.0", "", "192.0.2.7", "gradientlab.example"])
def test_beyond_loopback_with_nobody_configured_no_page_is_shown(
    engine: Engine, users_path: Path, listen_on: object, mode: object, address: str
) -> None:
    mode("none")  # type: ignore[operator]
    listen_on(address)  # type: ignore[operator]
    at = run()
    assert not page_shown(at)
    message = at.error[0].value
    assert "no sign-in is configured" in message
    assert "gradientlab app-user add" in message and "[auth]" in message


def test_users_mode_without_users_shows_no_page(
    engine: Engine, users_path: Path, listen_on: object, mode: object, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    mode("users")  # type: ignore[operator]
    listen_on("127.0.0.1")  # type: ignore[operator]
    # the users file in another folder than the one the app reads: not "no users, come in"
    app_users.add_user("alice", "operator", PASSWORD, path=tmp_path / "elsewhere.toml")
    at = run()
    assert not page_shown(at) and not at.text_input
    assert "no users in" in at.error[0].value and str(users_path) in at.error[0].value


def test_beyond_loopback_users_sign_in_with_their_role_and_out_again(
    engine: Engine, users_path: Path, listen_on: object, mode: object
) -> None:
    mode("users")  # type: ignore[operator]
    app_users.add_user("alice", "operator", PASSWORD)
    app_users.add_user("bob", "viewer", PASSWORD)
    listen_on("0.0.0.0")  # type: ignore[operator]

    at = run()
    assert not page_shown(at)
    assert [t.label for t in at.text_input] == ["User name", "Password"]

    at = sign_in(at, "bob", "not the password")
    assert "Wrong user name or password" in at.error[0].value
    assert not page_shown(at)

    at = sign_in(at, "bob", PASSWORD)
    assert page_shown(at)
    assert at.session_state["gradientlab_role"] == "viewer"

    sign_out = next(b for b in at.sidebar.button if b.label == "Sign out")
    sign_out.click()
    at = run(at)
    assert not page_shown(at)

    at = sign_in(at, "alice", PASSWORD)
    assert page_shown(at)
    assert at.session_state["gradientlab_role"] == "operator"


def test_users_configured_on_loopback_still_sign_in(
    engine: Engine, users_path: Path, listen_on: object, mode: object
) -> None:
    mode("users")  # type: ignore[operator]
    app_users.add_user("alice", "viewer", PASSWORD)
    listen_on("127.0.0.1")  # type: ignore[operator]
    at = run()
    assert not page_shown(at)
    assert sign_in(at, "alice", PASSWORD).session_state["gradientlab_role"] == "viewer"


def test_a_removed_user_is_signed_out_at_the_next_rerun(
    engine: Engine, users_path: Path, listen_on: object, mode: object
) -> None:
    mode("users")  # type: ignore[operator]
    app_users.add_user("alice", "operator", PASSWORD)
    app_users.add_user("bob", "viewer", PASSWORD)
    listen_on("0.0.0.0")  # type: ignore[operator]
    at = sign_in(run(), "alice", PASSWORD)
    assert page_shown(at)

    app_users.remove_user("alice")
    at = run(at)
    assert not page_shown(at)
    assert "gradientlab_role" not in at.session_state


def test_repeated_failures_lock_the_name_even_with_the_right_password(
    engine: Engine, users_path: Path, listen_on: object, mode: object
) -> None:
    mode("users")  # type: ignore[operator]
    app_users.add_user("alice", "operator", PASSWORD)
    listen_on("0.0.0.0")  # type: ignore[operator]
    at = run()
    for _ in range(auth.failed_sign_ins().limit):
        at = sign_in(at, "alice", "guess " * 3)
    at = sign_in(at, "alice", PASSWORD)
    assert not page_shown(at)
    assert "Too many failed attempts" in at.error[0].value


def test_failures_under_many_names_lock_the_client_too(
    engine: Engine, users_path: Path, listen_on: object, mode: object
) -> None:
    mode("users")  # type: ignore[operator]
    app_users.add_user("alice", "operator", PASSWORD)
    listen_on("0.0.0.0")  # type: ignore[operator]
    at = run()
    for i in range(auth.failed_sign_ins().limit):  # one guess per name: no name is locked
        at = sign_in(at, f"guess-{i}", "guess " * 3)
    at = sign_in(at, "alice", PASSWORD)  # the same client: locked
    assert not page_shown(at)
    assert "Too many failed attempts" in at.error[0].value


def test_failed_attempts_are_kept_in_bounded_memory() -> None:
    limiter = FailedSignIns(limit=3, window=60, clock=lambda: 1000.0, max_keys=100)
    for i in range(1000):
        limiter.failed(f"name-{i}")
    assert len(limiter) == 100
    assert limiter.wait_seconds("name-999") == 0  # one failure: not locked
    for _ in range(10):
        limiter.failed("name-999")
    assert limiter.wait_seconds("name-999") > 0 and len(limiter) == 100


def test_a_weak_stored_hash_is_rehashed_at_or_above_owasp_on_sign_in(
    engine: Engine, users_path: Path, listen_on: object, mode: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    mode("users")  # type: ignore[operator]
    assert (app_users.SCRYPT_N, app_users.SCRYPT_R, app_users.SCRYPT_P) >= (2**17, 8, 1)
    with monkeypatch.context() as weak:
        weak.setattr(app_users, "SCRYPT_N", 2**14)  # what this app stored before
        app_users.add_user("alice", "operator", PASSWORD)
    assert app_users.load_users()["alice"].password_hash.startswith("scrypt$16384$")
    assert app_users.needs_rehash(app_users.load_users()["alice"].password_hash)
    listen_on("0.0.0.0")  # type: ignore[operator]
    at = sign_in(run(), "alice", PASSWORD)
    assert page_shown(at)
    stored = app_users.load_users()["alice"].password_hash
    assert stored.startswith("scrypt$131072$8$1$") and not app_users.needs_rehash(stored)
    assert app_users.authenticate(app_users.load_users(), "alice", PASSWORD) is not None


def test_a_broken_users_file_shows_no_page(
    engine: Engine, users_path: Path, listen_on: object, mode: object
) -> None:
    mode("users")  # type: ignore[operator]
    users_path.write_text("[users\n")
    listen_on("127.0.0.1")  # type: ignore[operator]
    at = run()
    assert not page_shown(at)
    assert "not valid TOML" in at.error[0].value


OIDC = {
    "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
    "cookie_secret": "a-long-random-cookie-secret-for-the-test-only",
    "client_id": "gradientlab",
    "client_secret": "test-only",
    "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
}


def test_with_oidc_configured_the_visitor_signs_in_with_the_provider_first(
    engine: Engine, users_path: Path, listen_on: object, mode: object
) -> None:
    mode("oidc")  # type: ignore[operator]
    app_users.add_user("alice", "operator", PASSWORD)  # the mode says OIDC
    listen_on("0.0.0.0")  # type: ignore[operator]
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["auth"] = OIDC
    at = run(at)
    assert not page_shown(at)
    assert not at.text_input  # no local form
    assert [b.label for b in at.button] == ["Sign in"]


def test_oidc_mode_without_its_configuration_shows_no_page(
    engine: Engine, users_path: Path, listen_on: object, mode: object
) -> None:
    mode("oidc")  # type: ignore[operator]
    app_users.add_user("alice", "operator", PASSWORD)  # never a fallback to another mode
    listen_on("127.0.0.1")  # type: ignore[operator]
    at = run()
    assert not page_shown(at) and not at.text_input and not at.button
    assert "misconfigured" in at.error[0].value


@pytest.mark.parametrize(
    ("roles", "email", "verified", "role"),
    [
        ({"Alice@Example.com": "operator"}, "alice@example.com", True, "operator"),
        ({"alice@example.com": "operator"}, "bob@example.com", True, "none"),  # default none
        ({"alice@example.com": "operator", "*": "viewer"}, "bob@example.com", True, "viewer"),
        ({"alice@example.com": "operator"}, "alice@example.com", False, "none"),
        ({"alice@example.com": "operator"}, "alice@example.com", None, "none"),  # unverified
        ({"*": "none"}, "mallory@example.com", True, "none"),
        ({}, None, None, "none"),
    ],
)
def test_oidc_roles_come_from_the_verified_email_mapping(
    roles: dict[str, str],
    email: str | None,
    verified: bool | None,
    role: str,
) -> None:
    assert auth.oidc_role(roles, email, verified) == role


def test_oidc_roles_can_match_on_issuer_and_subject() -> None:
    roles = {"https://id.example|user-42": "operator"}
    assert auth.oidc_role(roles, None, None, "https://id.example", "user-42") == "operator"
    assert auth.oidc_role(roles, None, None, "https://other.example", "user-42") == "none"


@pytest.mark.parametrize(
    ("email", "role"), [("alice@example.com", "operator"), ("bob@example.com", "viewer")]
)
def test_an_oidc_user_gets_the_role_mapped_to_their_email(
    engine: Engine, users_path: Path, listen_on: object, mode: object, email: str, role: str
) -> None:
    mode("oidc")  # type: ignore[operator]
    listen_on("0.0.0.0")  # type: ignore[operator]
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["auth"] = OIDC
    at.secrets["gradientlab"] = {"roles": {"alice@example.com": "operator", "*": "viewer"}}
    at.user = {"is_logged_in": True, "email": email, "email_verified": True}
    at = run(at)
    assert page_shown(at)
    assert at.session_state["gradientlab_role"] == role
    assert any(b.label == "Sign out" for b in at.sidebar.button)


def test_an_oidc_user_nobody_listed_is_refused_when_others_are_none(
    engine: Engine, users_path: Path, listen_on: object, mode: object
) -> None:
    mode("oidc")  # type: ignore[operator]
    listen_on("0.0.0.0")  # type: ignore[operator]
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["auth"] = OIDC
    at.secrets["gradientlab"] = {"roles": {"*": "none", "alice@example.com": "viewer"}}
    at.user = {"is_logged_in": True, "email": "mallory@example.com", "email_verified": True}
    at = run(at)
    assert not page_shown(at)
    assert "mallory@example.com may not use this app" in at.error[0].value
