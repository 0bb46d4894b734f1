"""The admin page's login: signed session cookies, the login form's CSRF cookie, the
throttle on wrong tokens, and where a login may send the browser next.

The cookies are signed with itsdangerous, keyed from ``ADMIN_TOKEN`` (every web process
accepts them; changing the token ends every session), HttpOnly, SameSite=Strict, Secure on
https. The throttle is per client address and per process.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "LOGIN_COOKIE",
    "LOGIN_FAILURES_ALLOWED",
    "LOGIN_FAILURE_WINDOW",
    "LOGIN_FORM_MAX_AGE",
    "SESSION_COOKIE",
    "SESSION_MAX_AGE",
    "Sessions",
    "Throttle",
    "safe_next",
    "same_secret",
]

SESSION_COOKIE = "oca_admin"
LOGIN_COOKIE = "oca_admin_login"
SESSION_MAX_AGE = 8 * 3600  # seconds a login lasts
LOGIN_FORM_MAX_AGE = 3600  # seconds a login form stays valid
LOGIN_FAILURES_ALLOWED = 10  # wrong tokens per client address…
LOGIN_FAILURE_WINDOW = 300.0  # …per this many seconds, then 429


class Sessions:
    """Signed, expiring cookies; the key is derived from ADMIN_TOKEN.

    Two cookies: the session (``auth``: true, path ``/admin``) and the login form's
    (path ``/admin/login``), which only carries that form's CSRF token. Keeping them apart
    means showing the login form never overwrites a session the browser held back (a
    SameSite=Strict cookie is not sent when arriving from a link on another site).
    """

    def __init__(self, token: str) -> None:
        key = hmac.new(token.encode(), b"contact-adapter admin session", hashlib.sha256).digest()
        self.serializer = URLSafeTimedSerializer(key, salt="admin-session")

    @staticmethod
    def _cookie(login: bool) -> tuple[str, str, int]:
        if login:
            return LOGIN_COOKIE, "/admin/login", LOGIN_FORM_MAX_AGE
        return SESSION_COOKIE, "/admin", SESSION_MAX_AGE

    def load(self, request: Request, *, login: bool = False) -> dict[str, Any] | None:
        name, _, max_age = self._cookie(login)
        raw = request.cookies.get(name)
        if not raw:
            return None
        try:
            data = self.serializer.loads(raw, max_age=max_age)
        except BadSignature:  # includes expired
            return None
        if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
            return None
        if bool(data.get("auth")) == login:
            return None
        return data

    def save(self, request: Request, response: Response, data: dict[str, Any]) -> None:
        name, path, max_age = self._cookie(login=not data.get("auth"))
        response.set_cookie(
            name,
            self.serializer.dumps(data),
            max_age=max_age,
            path=path,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )

    def clear(self, request: Request, response: Response, *, login: bool = False) -> None:
        name, path, _ = self._cookie(login)
        response.delete_cookie(
            name,
            path=path,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )

    @staticmethod
    def new(*, auth: bool) -> dict[str, Any]:
        return {"auth": auth, "csrf": secrets.token_urlsafe(32), "since": int(time.time())}


def same_secret(given: str, expected: str) -> bool:
    """Compare a secret (token, CSRF token) in constant time, whatever their lengths."""
    return hmac.compare_digest(_digest(given), _digest(expected))


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def safe_next(value: str | None) -> str:
    """Only a path inside /admin, so the login cannot send anyone elsewhere."""
    if (
        value
        and value.startswith("/admin")
        and not value.startswith("/admin/login")
        and not any(c in value for c in "\\\r\n")
    ):
        return value
    return "/admin"


class Throttle:
    """At most LOGIN_FAILURES_ALLOWED wrong tokens per client per window (this process)."""

    def __init__(self) -> None:
        self.failures: dict[str, deque[float]] = {}

    def blocked(self, client: str) -> float:
        """Seconds until ``client`` may try again (0 when it may now)."""
        recent = self.failures.get(client)
        now = time.monotonic()
        while recent and recent[0] < now - LOGIN_FAILURE_WINDOW:
            recent.popleft()
        if recent is not None and len(recent) >= LOGIN_FAILURES_ALLOWED:
            return recent[0] + LOGIN_FAILURE_WINDOW - now
        return 0.0

    def failed(self, client: str) -> None:
        if len(self.failures) > 10_000:
            self.failures.clear()
        self.failures.setdefault(client, deque()).append(time.monotonic())

    def succeeded(self, client: str) -> None:
        self.failures.pop(client, None)
