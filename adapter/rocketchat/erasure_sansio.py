"""Erasing a person in Rocket.Chat: the requests and what each answer means (pure).

Two routes, read from Rocket.Chat's source (docs/privacy.md, contracts §7a):

* ``DELETE /api/v1/livechat/visitor/{token}`` removes the livechat visitor we registered
  under that token (every version). 400 ``invalid-token``: no such visitor (nothing left
  to erase); 400 ``visitor-has-open-rooms``: a conversation is open and the GDPR setting
  (``Livechat_Allow_collect_and_store_HTTP_header_informations``) is off: refused until
  it is closed.
* ``POST /api/v1/omnichannel/contacts.delete`` ``{"contactId"}`` (permission
  ``delete-livechat-contact``) disables a Contact Center contact and removes its visitors.
  It came in 2025, well after the Contact Center (7.1): a server without it answers 404
  with no JSON, which means Rocket.Chat offers no way to erase the contact through the API.
  404 ``error-contact-not-found``: already gone; 400 ``error-invalid-contact``: refused (an
  open conversation, or contact removal turned off).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from adapter.core.errors import (
    ContactRejected,
    PermissionDenied,
    RateLimited,
    RocketChatError,
    RouteNotFound,
)

__all__ = [
    "ABSENT",
    "ERASED",
    "REFUSED",
    "UNAVAILABLE",
    "UNSUPPORTED",
    "Removal",
    "contact_removal_body",
    "removal_from_error",
    "visitor_path",
]

CONTACTS_DELETE = "/api/v1/omnichannel/contacts.delete"
ERASED, ABSENT, REFUSED, UNSUPPORTED, UNAVAILABLE = (
    "erased",
    "absent",  # Rocket.Chat holds nothing under that token or id
    "refused",
    "unsupported",  # this Rocket.Chat offers no route for it
    "unavailable",  # no usable answer: try again
)


@dataclass(frozen=True)
class Removal:
    """What came of erasing one thing in Rocket.Chat (never names the person)."""

    what: str  # "visitor" or "contact"
    outcome: str  # one of the constants above
    reason: str | None = None  # Rocket.Chat's errorType, or what to do

    @property
    def done(self) -> bool:
        return self.outcome in (ERASED, ABSENT)

    def describe(self) -> str:
        text = f"Rocket.Chat {self.what}: {self.outcome}"
        return f"{text} ({self.reason})" if self.reason else text


def visitor_path(token: str) -> str:
    return "/api/v1/livechat/visitor/" + quote(token, safe="")


def contact_removal_body(contact_id: str) -> dict[str, str]:
    return {"contactId": contact_id}


def removal_from_error(what: str, exc: RocketChatError) -> Removal:
    """The meaning of the error a removal call raised (see the module doc)."""
    if isinstance(exc, ContactRejected):
        kind = exc.error_type or ""
        if not kind and "error-invalid-contact" in str(exc):
            kind = "error-invalid-contact"  # API.v1.failure(string): no errorType
        if kind == "invalid-token":
            return Removal(what, ABSENT)
        if kind == "visitor-has-open-rooms":
            return Removal(
                what,
                REFUSED,
                "visitor-has-open-rooms: close their open conversation (or turn on the GDPR "
                "setting) and run forget again",
            )
        if kind == "error-invalid-contact":
            return Removal(
                what,
                REFUSED,
                "error-invalid-contact: the contact has an open conversation or contact "
                "removal is off in Rocket.Chat; close it and run forget again",
            )
        return Removal(what, REFUSED, kind or "refused")
    if isinstance(exc, RouteNotFound):
        if "error-contact-not-found" in str(exc):
            return Removal(what, ABSENT)
        return Removal(
            what,
            UNSUPPORTED,
            "this Rocket.Chat has no API route to erase a Contact Center contact: remove it "
            "in Rocket.Chat's Contact Center (or upgrade)",
        )
    if isinstance(exc, PermissionDenied):
        return Removal(
            what,
            REFUSED,
            "permission denied: give the bot user delete-livechat-contact"
            if what == "contact"
            else "permission denied",
        )
    if isinstance(exc, RateLimited):
        return Removal(what, UNAVAILABLE, "rate limited: run forget again in a minute")
    return Removal(what, UNAVAILABLE, f"{type(exc).__name__}: run forget again")
