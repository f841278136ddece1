"""Gradient Network's internal API and its Firebase sign-in, behind one client."""

from gradientlab.gradient.client import (
    REFRESH_MARGIN,
    FirebaseSession,
    GradientClient,
    GradientEndpoints,
)
from gradientlab.gradient.errors import (
    GradientAuthError,
    GradientConnectionError,
    GradientError,
    GradientNotFound,
    GradientRateLimited,
    GradientResponseError,
    GradientServerError,
    GradientSignInRefused,
)
from gradientlab.gradient.models import (
    POINT_SCALE,
    NetworkStatus,
    NodeDay,
    NodeInfo,
    NodeListItem,
    PointDay,
    Profile,
    points,
)

__all__ = [
    "POINT_SCALE",
    "REFRESH_MARGIN",
    "FirebaseSession",
    "GradientAuthError",
    "GradientClient",
    "GradientConnectionError",
    "GradientEndpoints",
    "GradientError",
    "GradientNotFound",
    "GradientRateLimited",
    "GradientResponseError",
    "GradientServerError",
    "GradientSignInRefused",
    "NetworkStatus",
    "NodeDay",
    "NodeInfo",
    "NodeListItem",
    "PointDay",
    "Profile",
    "points",
]
