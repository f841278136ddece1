"""Exceptions raised by the Gradient client.

Every exception names the endpoint it came from (``endpoint``, e.g. ``"POST /point/stats"``) and
says what to try next. ``retryable`` tells a caller (a Prefect task's ``retry_condition_fn``)
whether trying the same call again later can help. No message ever carries a password or token.
"""

from __future__ import annotations

from typing import Any, ClassVar


def _restore(cls: type[GradientError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class GradientError(Exception):
    """Something went wrong talking to Gradient's API or its Firebase auth."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, endpoint: str) -> None:
        super().__init__(message)
        self.message = message
        self.endpoint = endpoint

    def __str__(self) -> str:
        return self.message

    # Keyword-only constructors do not survive the default pickling; Prefect pickles results.
    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class GradientAuthError(GradientError):
    """Bad credentials, a refused token refresh, or a 401 that a fresh token did not cure."""


class GradientSignInRefused(GradientAuthError):
    """Firebase refused the account's sign-in: the account verdict. ``setting`` names the
    fleet-file setting a person must fix (``network.web_api_key`` for a key Firebase does not
    accept, ``account.email`` / ``account.password`` for credentials it refuses); ``reason``
    is Firebase's own word for it."""

    def __init__(self, message: str, *, endpoint: str, setting: str, reason: str) -> None:
        super().__init__(message, endpoint=endpoint)
        self.setting = setting
        self.reason = reason


class GradientRateLimited(GradientError):
    """Gradient (or Firebase) answered 429; ``retry_after`` is in seconds when it said."""

    retryable = True

    def __init__(self, message: str, *, endpoint: str, retry_after: float | None = None) -> None:
        super().__init__(message, endpoint=endpoint)
        self.retry_after = retry_after


class GradientServerError(GradientError):
    """Gradient answered 5xx (HTTP status or envelope code)."""

    retryable = True

    def __init__(self, message: str, *, endpoint: str, status: int) -> None:
        super().__init__(message, endpoint=endpoint)
        self.status = status


class GradientConnectionError(GradientError):
    """No answer at all: connection refused, DNS failure, timeout."""

    retryable = True


class GradientNotFound(GradientError):
    """Gradient answered with envelope code 404: it does not know the thing asked for."""


class GradientResponseError(GradientError):
    """The answer was not what the client expects: no envelope, an unexpected code, or a
    required field missing or of the wrong type. ``field`` names the field when there is one."""

    def __init__(self, message: str, *, endpoint: str, field: str | None = None) -> None:
        super().__init__(message, endpoint=endpoint)
        self.field = field
