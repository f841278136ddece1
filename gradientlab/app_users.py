"""The analysis app's local sign-in: a file of users with hashed passwords and roles.

Used when the app listens beyond loopback and no OIDC provider is configured. The file is TOML,
readable by its owner only, one table per user:

    [users.alice]
    role = "operator"
    password = "scrypt$16384$8$1$<salt, base64>$<hash, base64>"

`gradientlab app-user add|remove|list` edits it; the password is read from a prompt or stdin,
never from the command line. Its place is `GRADIENTLAB_APP_USERS`, or `app-users.toml` in
GradientLab's data folder."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import re
import secrets
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from gradientlab.paths import data_dir

Role = Literal["viewer", "operator"]
ROLES: tuple[Role, ...] = ("viewer", "operator")
USERS_FILE_VAR = "GRADIENTLAB_APP_USERS"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
MIN_PASSWORD_LENGTH = 12

# scrypt at OWASP's minimum (Password Storage Cheat Sheet: N=2**17, r=8, p=1; 128 MiB): a
# stored hash below it is rehashed at the user's next sign-in
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
SCRYPT_MAXMEM = 256 * 1024 * 1024


class AppUsersError(ValueError):
    """The users file or a request to change it is wrong; the message names what and where."""


def users_file() -> Path:
    configured = os.environ.get(USERS_FILE_VAR)
    return Path(configured) if configured else data_dir() / "app-users.toml"


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=SCRYPT_MAXMEM,
        dklen=32,
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def password_matches(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=SCRYPT_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def needs_rehash(stored: str) -> bool:
    """Whether a stored hash is weaker than today's parameters (or not one we can read)."""
    try:
        scheme, n, r, p, _, _ = stored.split("$")
        return scheme != "scrypt" or (int(n), int(r), int(p)) < (SCRYPT_N, SCRYPT_R, SCRYPT_P)
    except ValueError:
        return True


@functools.cache
def _no_such_user() -> str:
    """Checked against when the name is unknown, so that a wrong name costs what a wrong
    password does (made on first use: it costs a hash)."""
    return hash_password(secrets.token_hex(16))


@dataclass(frozen=True)
class AppUser:
    name: str
    role: Role
    password_hash: str


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise AppUsersError(
            f"user name {name!r}: use 1 to 64 letters, digits and . _ @ + - "
            "(starting with a letter or digit)"
        )
    return name


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise AppUsersError(f"role {role!r}: use one of {', '.join(ROLES)}")
    return cast(Role, role)


def load_users(path: Path | None = None) -> dict[str, AppUser]:
    """The users in `path` (default `users_file()`); none when the file does not exist."""
    path = path or users_file()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise AppUsersError(f"{path}: cannot read the app's users file: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AppUsersError(f"{path}: not valid TOML: {exc}") from None
    tables = data.get("users", {})
    if not isinstance(tables, dict):
        raise AppUsersError(f"{path}: `users` must be a table of users")
    users = {}
    for name, entry in tables.items():
        where = f"{path}: [users.{name}]"
        if not isinstance(entry, dict):
            raise AppUsersError(f"{where} must be a table with `role` and `password`")
        try:
            check_name(name)
            role = check_role(str(entry.get("role")))
        except AppUsersError as exc:
            raise AppUsersError(f"{where}: {exc}") from None
        password = entry.get("password")
        if not isinstance(password, str) or not password.startswith("scrypt$"):
            raise AppUsersError(
                f"{where}: `password` must be a hash written by `gradientlab app-user add`"
            )
        users[name] = AppUser(name, role, password)
    return users


def save_users(users: dict[str, AppUser], path: Path | None = None) -> Path:
    """Write the file atomically, readable by its owner only."""
    path = path or users_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# GradientLab analysis app users: edit with `gradientlab app-user`.", ""]
    for user in sorted(users.values(), key=lambda u: u.name):
        lines += [
            f'[users."{user.name}"]',
            f'role = "{user.role}"',
            f'password = "{user.password_hash}"',
            "",
        ]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines))
    tmp.replace(path)
    return path


def add_user(name: str, role: str, password: str, path: Path | None = None) -> AppUser:
    """Add `name` or replace its role and password."""
    check_name(name)
    checked_role = check_role(role)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AppUsersError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    users = load_users(path)
    users[name] = AppUser(name, checked_role, hash_password(password))
    save_users(users, path)
    return users[name]


def remove_user(name: str, path: Path | None = None) -> None:
    users = load_users(path)
    if users.pop(name, None) is None:
        raise AppUsersError(f"{path or users_file()}: no user {name!r}")
    save_users(users, path)


def authenticate(users: dict[str, AppUser], name: str, password: str) -> AppUser | None:
    """The user when the password is theirs; the same work is done for an unknown name."""
    user = users.get(name)
    matches = password_matches(password, user.password_hash if user else _no_such_user())
    return user if user is not None and matches else None


def rehash_if_weak(user: AppUser, password: str, path: Path | None = None) -> bool:
    """After a good sign-in: store `user`'s password hashed with today's parameters when its
    stored hash is weaker. True when it was rewritten."""
    if not needs_rehash(user.password_hash):
        return False
    users = load_users(path)
    current = users.get(user.name)
    if current is None or current.password_hash != user.password_hash:
        return False  # changed or removed meanwhile: leave it
    users[user.name] = AppUser(user.name, user.role, hash_password(password))
    save_users(users, path)
    return True


@dataclass
class FailedSignIns:
    """Failed attempts per key (a user name, or `client:<address>`): after `limit` failures
    within `window` seconds, that key is refused until the oldest of them is `window` seconds
    old. Shared by every session of the app process, so a new browser tab does not reset it.
    Bounded: at most `max_keys` keys are kept (the least recently failed are forgotten first),
    and at most `limit` failures per key."""

    limit: int = 5
    window: float = 300.0
    clock: Callable[[], float] = time.monotonic
    max_keys: int = 10_000
    _failures: dict[str, list[float]] = field(default_factory=dict)

    def _recent(self, name: str) -> list[float]:
        now = self.clock()
        recent = [t for t in self._failures.get(name, []) if now - t < self.window]
        if recent:
            self._failures[name] = recent
        else:
            self._failures.pop(name, None)
        return recent

    def wait_seconds(self, name: str) -> float:
        """How long `name` must wait before another attempt (0 when it may try now)."""
        recent = self._recent(name)
        if len(recent) < self.limit:
            return 0.0
        return max(0.0, recent[-self.limit] + self.window - self.clock())

    def failed(self, name: str) -> None:
        recent = self._recent(name)
        self._failures.pop(name, None)  # re-inserted last: the most recently failed
        self._failures[name] = (recent + [self.clock()])[-self.limit :]
        while len(self._failures) > self.max_keys:
            del self._failures[next(iter(self._failures))]

    def __len__(self) -> int:
        return len(self._failures)

    def succeeded(self, name: str) -> None:
        self._failures.pop(name, None)
