"""The exception tree for Rocket.Chat answers, mirroring HTTP status classes.

Like gidgethub's, callers catch the class that matters to them: a
:class:`RetryableError` is worth trying again later, a :class:`ContactRejected`
never is, and a :class:`ConfigurationError` needs a person to fix a setting.
"""

from __future__ import annotations

__all__ = [
    "BadCredentials",
    "ConfigurationError",
    "ContactRejected",
    "PermissionDenied",
    "RateLimited",
    "RetryableError",
    "RocketChatError",
    "RocketChatUnavailable",
    "RouteNotFound",
    "ServerError",
]


class RocketChatError(Exception):
    """Rocket.Chat did not register the contact."""

    status: int | None = None

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class RetryableError(RocketChatError):
    """A temporary problem: the same call may succeed later."""


class RocketChatUnavailable(RetryableError):
    """No answer: connection refused, timed out, or the connection broke."""


class ServerError(RetryableError):
    """Rocket.Chat (or a proxy in front of it) answered 5xx."""


class RateLimited(RetryableError):
    """429: too many calls; ``reset_at`` is when the window reopens (epoch seconds)."""

    status = 429

    def __init__(self, message: str, *, reset_at: float) -> None:
        super().__init__(message, status=429)
        self.reset_at = reset_at


class ContactRejected(RocketChatError):
    """400: Rocket.Chat refused the contact; sending it again will not help."""

    status = 400

    def __init__(self, message: str, *, error_type: str | None = None) -> None:
        super().__init__(message, status=400)
        self.error_type = error_type


class ConfigurationError(RocketChatError):
    """The service's credentials or permissions are wrong; a person must fix them."""


class BadCredentials(ConfigurationError):
    """401: the user id / token pair is not accepted."""

    status = 401


class PermissionDenied(ConfigurationError):
    """403: the user lacks a permission the route needs."""

    status = 403


class RouteNotFound(RocketChatError):
    """404/405: this server has no such route (older or newer than expected)."""
