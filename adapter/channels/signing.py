"""Checking that a request comes from who it says: secrets compared in constant time,
HMAC signatures and timestamp windows (the pieces a provider's ``verify`` is made of)."""

from __future__ import annotations

import hmac
import time

__all__ = ["check_timestamp", "constant_time_equal", "timestamp_offset", "verify_hmac"]


def constant_time_equal(given: str | bytes, expected: str | bytes) -> bool:
    """Compare secrets without leaking where they differ."""
    a = given.encode() if isinstance(given, str) else given
    b = expected.encode() if isinstance(expected, str) else expected
    return hmac.compare_digest(a, b)


def verify_hmac(
    secret: str | bytes, message: bytes, signature: str, *, digest: str = "sha256", prefix: str = ""
) -> bool:
    """True when ``signature`` (hex, optionally prefixed like ``v0=``) signs ``message``."""
    key = secret.encode() if isinstance(secret, str) else secret
    expected = prefix + hmac.new(key, message, digest).hexdigest()
    return constant_time_equal(signature.strip().lower(), expected.lower())


def timestamp_offset(value: str | None, *, now: float | None = None) -> float | None:
    """How many seconds ``value`` (epoch seconds or milliseconds) is before now (negative:
    in the future); None when it is not a number."""
    if value is None:
        return None
    try:
        stamp = float(value.strip())
    except ValueError:
        return None
    if stamp != stamp or stamp in (float("inf"), float("-inf")):
        return None
    if stamp > 1e11:  # milliseconds
        stamp /= 1000.0
    current = time.time() if now is None else now
    return current - stamp


def check_timestamp(value: str | None, *, window: float = 300.0, now: float | None = None) -> bool:
    """True when ``value`` (epoch seconds or milliseconds) is within ``window`` of now."""
    offset = timestamp_offset(value, now=now)
    return offset is not None and abs(offset) <= window
