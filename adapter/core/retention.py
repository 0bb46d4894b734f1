"""How long personal data is kept, and what erasing a row leaves behind (pure, clock passed in).

A delivery's personal data (name, email, phone, custom fields, raw payload, callback URLs,
person keys) stays for a retention period counted from when it reached its final status
(``RETAIN_DELIVERED``, ``RETAIN_FAILED``, ``RETAIN_REJECTED``), an attempt's stored error
for ``RETAIN_ATTEMPTS``; then it is erased *in place*, leaving an audit record (id, source,
status, timestamps, attempts, Rocket.Chat contact id, an error class) so counts and
history survive. :class:`RetentionPolicy` says what is due by when; :func:`erased_columns`
says what an erased row's columns become. Both are used by ``contact-adapter purge``, the
worker's sweep and ``contact-adapter forget`` (:mod:`adapter.ledger.retention` runs the SQL).

Dedupe keys that must outlive the data are kept as keyed digests
(:meth:`adapter.core.keys.DeploymentKey.digest`): a provider's event id becomes
``h:<hmac>`` (the duplicate check looks for both forms), a person's visitor token becomes
``h:<hmac>`` too (on purge; ``forget`` removes it outright, so nothing links a returning
person to the old rows).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from adapter.core.records import DELIVERED, FAILED, IGNORED, MERGED, REJECTED

__all__ = [
    "DIGEST_PREFIX",
    "ERASED",
    "RetentionPolicy",
    "erased_columns",
    "error_class",
    "hashed_event_id",
    "parse_duration",
]

ERASED = "erased"
DIGEST_PREFIX = "h:"  # a kept digest, never a clear value (no provider's id starts so… and if
# one does, it is hashed like any other: hashed_event_id never hashes twice)

_DURATION = re.compile(r"^\s*(\d+)\s*([dhms])\s*$", re.IGNORECASE)
_UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
DURATION_HELP = "expected a duration such as 30d, 12h, 15m or 90s, or 0 / off to keep for ever"


def parse_duration(value: Any) -> float | None:
    """``30d``, ``12h``, ``15m``, ``90s`` → seconds; ``0`` or ``off`` → None (keep for ever).
    Raises ValueError naming the accepted forms otherwise."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(DURATION_HELP)
        return None if value == 0 else float(value)
    text = str(value).strip().lower()
    if text in ("0", "off", "never", "forever"):
        return None
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(DURATION_HELP)
    seconds = int(match.group(1)) * _UNITS[match.group(2).lower()]
    return None if seconds == 0 else float(seconds)


@dataclass(frozen=True)
class RetentionPolicy:
    """Seconds each kind of row keeps its personal data (None: for ever)."""

    delivered: float | None = 30 * 86_400.0
    failed: float | None = 90 * 86_400.0
    rejected: float | None = 30 * 86_400.0
    attempts: float | None = 30 * 86_400.0

    def periods(self) -> dict[str, float | None]:
        """Per final status, its retention. A merged row's details live on in the row it
        was merged into, so it follows ``delivered``; an ignored event follows ``rejected``."""
        return {
            DELIVERED: self.delivered,
            MERGED: self.delivered,
            FAILED: self.failed,
            REJECTED: self.rejected,
            IGNORED: self.rejected,
        }

    def cutoffs(self, now: float) -> dict[str, float]:
        """Per final status, the ``updated_at`` before which a row is due: statuses kept
        for ever are absent. Pending and delivering rows are never due."""
        return {status: now - period for status, period in self.periods().items() if period}

    def attempts_cutoff(self, now: float) -> float | None:
        return now - self.attempts if self.attempts else None

    def people_cutoff(self, now: float) -> float | None:
        """A provider's person (what they gave so far, for completing a later submission)
        is kept as long as the longest delivery retention, else for ever."""
        periods = [self.delivered, self.failed, self.rejected]
        if any(p is None for p in periods):
            return None
        return now - max(p for p in periods if p is not None)

    @property
    def enabled(self) -> bool:
        return any(p is not None for p in (*self.periods().values(), self.attempts))


_SAFE_CLASS = re.compile(r"^[A-Za-z][A-Za-z .()\-_/]{0,80}$")


def error_class(text: str | None) -> str | None:
    """What kind of error a stored message was, without anything it quoted: its lead
    phrase (up to the first ``:``) when that holds no digit, ``@``, quote or other
    specifics, else ``erased``."""
    if not text:
        return None
    head = text.split(":", 1)[0].strip()
    if head and _SAFE_CLASS.match(head) and len(head.split()) <= 12:
        return head
    return ERASED


def hashed_event_id(event_id: str, digest: Callable[[str, str], str]) -> str:
    """The kept form of a provider's event id (a keyed digest), for duplicate checks."""
    if event_id.startswith(DIGEST_PREFIX):
        return event_id
    return DIGEST_PREFIX + digest("event-id", event_id)


def erased_columns(row: Mapping[Any, Any], *, now: float, token: str | None) -> dict[str, Any]:
    """The column values that erase a ``deliveries`` row's personal data in place.

    ``token``: what the visitor token becomes (a kept digest on purge, None on forget).
    Which fields were wrong (``errors``' keys) stays; what was given does not.
    """
    return {
        "fields": {},
        "errors": {key: ERASED for key in row.get("errors") or {}} or None,
        "warnings": {key: ERASED for key in row.get("warnings") or {}} or None,
        "person_key": None,
        "token": token,
        "event_id": None,
        "email_key": None,
        "phone_key": None,
        "callback": None,
        "extra_callbacks": None,
        "actor": None,
        "contact_manager": None,
        "last_error": error_class(row.get("last_error")),
        "erased_at": now,
    }
