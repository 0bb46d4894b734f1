"""How the admin pages show things: the template environment and its filters (dates,
durations, "the worker is behind"), a delivery as a list row, and what a search means.

A search is typed by the admin and matched, never listed: an email or a phone is
normalised as on intake (:mod:`adapter.core.contact`) into the person keys the ledger
stores; a delivery id, the short reference a person was shown, or a source's event id
match as they are. Rows are always shown masked (:mod:`adapter.core.redact`).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from adapter.core.contact import FieldError, normalize_email, normalize_phone
from adapter.core.plain import reason_of, short_reference
from adapter.core.records import STATUSES, DeliveryRecord, person_keys
from adapter.core.redact import masked_fields
from adapter.ledger.reads import Match

__all__ = ["BEHIND_AFTER", "DAY", "env", "row_view", "search_match"]

DAY = 86_400.0
BEHIND_AFTER = 5.0  # seconds past its due time before a pending delivery is "behind"
SEARCH_MAX = 320  # characters of a search read
_HEX_ID = re.compile(r"[0-9a-f]{32}")
_REFERENCE = re.compile(r"[0-9a-f]{4}-?[0-9a-f]{4}")

_TEMPLATES = Path(__file__).parent / "templates" / "admin"
env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(stamp: float | None) -> str:
    if stamp is None:
        return ""
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(stamp: float | None) -> str:
    if stamp is None:
        return ""
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < DAY:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / DAY:.0f} d"


def _ago(stamp: float | None) -> str:
    if stamp is None:
        return ""
    seconds = time.time() - stamp
    text = _span(abs(seconds))
    return f"in {text}" if seconds < 0 else f"{text} ago"


def _due(stamp: float | None) -> str:
    """A pending delivery's next attempt: "in 12 s", or, when that time is past, that the
    worker is behind (a due delivery is taken within a moment by a running worker)."""
    if stamp is None:
        return ""
    late = time.time() - stamp
    if late <= BEHIND_AFTER:
        return "due now" if late > 0 else f"in {_span(-late)}"
    return (
        f"{_span(late)} overdue: the worker is behind. Check that a worker runs "
        "(INPROCESS_WORKER, or the worker process) and see its log"
    )


def _took(seconds: float) -> str:
    """How long an attempt took: "85 ms", "2.4 s", "3 min"."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.0f} min"


env.filters.update(when=_when, iso=_iso, ago=_ago, due=_due, took=_took)
env.globals.update(statuses=STATUSES)


def row_view(record: DeliveryRecord) -> dict[str, Any]:
    """One delivery as the pages show it: masked, with its reason in plain words."""
    return {
        "id": record.id,
        "reference": short_reference(record.id),
        "url": "/admin/deliveries/" + quote(record.id, safe=""),
        "source": record.source,
        "status": record.status,
        "attempts": record.attempts,
        "created_at": record.created_at,
        "last_error": reason_of(record.status, record.last_error, record.errors),
        **masked_fields(record.fields),
    }


def search_match(text: str, *, region: str | None) -> Match | None:
    """What a search for ``text`` matches (any of them); ``None`` for an empty search.

    An id (32 hex digits) or a short reference (``3F2A-9C1B``) matches deliveries by id;
    anything that is a valid email or phone number, normalised as on intake (``region``:
    DEFAULT_PHONE_REGION, for numbers without a country code), matches the person's
    deliveries; and every search also matches a source's event id as typed.
    """
    term = text.strip()[:SEARCH_MAX]
    if not term:
        return None
    lowered = term.lower()
    delivery_id = lowered if _HEX_ID.fullmatch(lowered) else None
    prefix = lowered.replace("-", "") if _REFERENCE.fullmatch(lowered) else None
    email = phone = None
    if "@" in term:
        try:
            email = normalize_email(term)
        except FieldError:
            email = None
    elif any(ch.isdigit() for ch in term):
        try:
            phone, _ = normalize_phone(term, default_region=region)
        except FieldError:
            phone = None
    keys = person_keys({"email": email, "phone": phone})
    return Match(
        delivery_id=delivery_id,
        id_prefix=prefix,
        event_id=term[:255],
        email_key=keys["email_key"],
        phone_key=keys["phone_key"],
    )
