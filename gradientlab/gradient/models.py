"""Typed answers of Gradient's API.

Tolerant of what the client does not use (unknown fields are ignored, missing location or
``bannedReason`` become ``None``), strict about what it does use (a missing or mistyped ``id``,
``node`` or ``duration`` is an error naming that field). Each model reads the API's own field
names (``latency``, ``bannedReason``, ``location.country``) and can also be built by its Python
field names, which is how tests and stand-in servers build them.

Points are integers scaled by 100000 and are kept raw; ``points()`` is for display only.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, AliasPath, BaseModel, BeforeValidator, ConfigDict, Field

POINT_SCALE = 100_000
"""Gradient sends points multiplied by this; 1234567 raw is 12.34567 points."""


def points(raw: int) -> Decimal:
    """Display value of a raw point integer: ``points(1234567) == Decimal("12.34567")``."""
    return Decimal(raw).scaleb(-5)


def _whole_number(value: Any) -> Any:
    # JSON booleans are ints to Python and fractional floats would silently lose points.
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("expected an integer, got a fraction")
        return int(value)
    return value


def _utc_day(value: Any) -> Any:
    if isinstance(value, datetime):
        raise ValueError("expected a UTC day as YYYYMMDD, got a timestamp")
    if isinstance(value, date):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and len(value) == 8 and value.isdigit():
        try:
            return date(int(value[:4]), int(value[4:6]), int(value[6:]))
        except ValueError:
            pass
    raise ValueError("expected a UTC day as YYYYMMDD")


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


RawInt = Annotated[int, BeforeValidator(_whole_number)]
UtcDay = Annotated[date, BeforeValidator(_utc_day)]
UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class GradientModel(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        validate_by_alias=True,
        validate_by_name=True,
    )


class Profile(GradientModel):
    """``POST /user/profile``: the account's name, point totals and active Sentry Nodes."""

    name: str
    point_total: RawInt = Field(validation_alias=AliasPath("point", "total"))
    point_balance: RawInt = Field(validation_alias=AliasPath("point", "balance"))
    point_referral: RawInt = Field(validation_alias=AliasPath("point", "referral"))
    sentry_active: RawInt = Field(validation_alias=AliasPath("node", "sentryActive"))


class PointDay(GradientModel):
    """One UTC day of ``POST /point/stats``: raw points by source."""

    day: UtcDay = Field(validation_alias="id")
    node: RawInt
    referral: RawInt
    bonus: RawInt
    boost: RawInt


class NodeDay(GradientModel):
    """One UTC day of ``POST /sentrynode/stats/{clientid}``.

    ``duration`` is the uptime Gradient counted; ``taps`` is the API's ``latency`` field, which
    the dashboard shows as the day's taps.
    """

    day: UtcDay = Field(validation_alias="id")
    duration: RawInt
    taps: RawInt = Field(validation_alias="latency")


class NodeInfo(GradientModel):
    """``GET /sentrynode/get/{clientid}``: one node as the popup sees it.

    ``banned`` is what the popup shows as Unsupported, with ``banned_reason``.
    """

    active: bool
    connect: bool
    banned: bool
    banned_reason: str | None = Field(None, validation_alias="bannedReason")
    ip: str | None
    today: RawInt
    season: int | str | None = None
    country: str | None = Field(None, validation_alias=AliasPath("location", "country"))
    place: str | None = Field(None, validation_alias=AliasPath("location", "place"))


class NodeListItem(GradientModel):
    """One row of ``POST /sentrynode/list``. ``point`` and ``today`` are raw points."""

    name: str
    connect: bool
    point: RawInt
    today: RawInt
    taps: RawInt = Field(validation_alias="latency")
    country: str | None = Field(None, validation_alias=AliasPath("location", "country"))
    place: str | None = Field(None, validation_alias=AliasPath("location", "place"))
    ip: str | None = None
    banned: bool | None = None
    banned_reason: str | None = Field(None, validation_alias="bannedReason")


class NetworkStatus(GradientModel):
    """``GET /status``: the address Gradient sees the caller at, and its clock (UTC)."""

    ip: str
    time: UtcDatetime
