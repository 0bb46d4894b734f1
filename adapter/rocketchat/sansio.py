"""Rocket.Chat requests and answers as pure functions (sans I/O).

Building request bodies, reading rate-limit headers, parsing ``/api/info`` and
classifying every answer into a value or an exception from :mod:`adapter.errors`
happen here, so they are tested without a network and shared by every strategy.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adapter.core.contact import Contact
from adapter.core.errors import (
    BadCredentials,
    ContactRejected,
    PermissionDenied,
    RateLimited,
    RocketChatError,
    RouteNotFound,
    ServerError,
)
from adapter.core.keys import identity_basis

__all__ = [
    "RateLimit",
    "RegisteredContact",
    "Registration",
    "classify_answer",
    "contact_token",
    "parse_rate_limit",
    "parse_version",
    "rekey_body",
    "visitor_body",
]

_VERSION = re.compile(r"^\s*(\d+)\.(\d+)")


@dataclass(frozen=True)
class Registration:
    """What to register: the person's token and everything known about them."""

    token: str
    contact: Contact
    contact_manager: str | None = None  # a Rocket.Chat username
    known_contact_id: str | None = None  # set once Rocket.Chat told us the id


@dataclass(frozen=True)
class RegisteredContact:
    """Rocket.Chat's answer to a successful registration."""

    contact_id: str
    strategy: str = "visitor"
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RateLimit:
    """The ``X-RateLimit-*`` headers of one answer; ``reset_at`` in epoch seconds."""

    limit: int
    remaining: int
    reset_at: float


def contact_token(*, email: str | None, phone: str | None, person_key: str | None) -> str:
    """The unkeyed visitor token of releases before keyed tokens (issue 12): anyone who
    knows a person's email can compute it, so new people never get one. Kept only to
    recognise such tokens (``contact-adapter rotate-tokens``); see
    :meth:`adapter.core.keys.DeploymentKey.visitor_token` for the tokens given today.
    """
    basis = identity_basis(email=email, phone=phone, person_key=person_key)
    return "oca-" + hashlib.sha256(basis.encode()).hexdigest()[:32]


def visitor_body(
    registration: Registration, *, custom_field_ids: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The JSON body for ``POST /api/v1/omnichannel/contact``.

    Only keys the server accepts; never ``"email": null`` (the server crashes on it);
    every known field each time, because Rocket.Chat 6+ erases an email or contact
    manager that a later call leaves out.
    """
    contact = registration.contact
    body: dict[str, Any] = {"token": registration.token, "name": contact.name}
    if contact.email:
        body["email"] = contact.email
    if contact.phone:
        body["phone"] = contact.phone
    custom = {
        k: v
        for k, v in contact.custom_fields.items()
        if not custom_field_ids or k in custom_field_ids
    }
    if custom:
        body["customFields"] = custom
    if registration.contact_manager:
        body["contactManager"] = {"username": registration.contact_manager}
    return body


def rekey_body(visitor: Mapping[str, Any], new_token: str) -> dict[str, Any] | None:
    """The ``POST /api/v1/omnichannel/contact`` body that moves ``visitor`` (as ``GET
    /api/v1/livechat/visitor/:token`` returns it) to ``new_token``, everything it holds
    sent back as it is (the route erases what a call leaves out); None when the visitor
    has no email.

    Rocket.Chat's ``registerContact`` looks the token up, and for an unknown token reuses
    the visitor holding the email and overwrites its token; a visitor it cannot find by
    email (phone only) would be a second one, so it cannot be moved this way.
    """
    emails = [
        str(entry.get("address") or "")
        for entry in visitor.get("visitorEmails") or []
        if isinstance(entry, Mapping)
    ]
    emails = [email for email in emails if email]
    if not emails:
        return None
    body: dict[str, Any] = {
        "token": new_token,
        "name": str(visitor.get("name") or visitor.get("username") or ""),
        "email": emails[0],
    }
    phones = [
        str(entry.get("phoneNumber") or "")
        for entry in visitor.get("phone") or []
        if isinstance(entry, Mapping)
    ]
    if phones and phones[0]:
        body["phone"] = phones[0]
    custom = visitor.get("livechatData")
    if isinstance(custom, Mapping) and custom:
        body["customFields"] = dict(custom)
    manager = visitor.get("contactManager")
    if isinstance(manager, Mapping) and manager.get("username"):
        body["contactManager"] = {"username": str(manager["username"])}
    return body


def keep_what_rocketchat_holds(
    body: Mapping[str, Any], stored: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``body`` plus what the stored visitor holds that this call would otherwise erase.

    Rocket.Chat 6+ unsets the email and the contact manager that a call leaves out and
    replaces the custom fields wholesale (contract §1.4): an email, manager or custom field
    an agent set in Rocket.Chat would be lost when the person arrives again. What we send
    wins; what only Rocket.Chat knows is sent back as it is. ``stored`` is the visitor
    ``GET /api/v1/omnichannel/contact`` returned (None: nothing stored, nothing to keep).
    """
    merged = dict(body)
    if not stored:
        return merged
    emails = stored.get("visitorEmails")
    if "email" not in merged and isinstance(emails, list) and emails:
        address = emails[0].get("address") if isinstance(emails[0], Mapping) else None
        if isinstance(address, str) and address:
            merged["email"] = address
    manager = stored.get("contactManager")
    if "contactManager" not in merged and isinstance(manager, Mapping):
        username = manager.get("username")
        if isinstance(username, str) and username:
            merged["contactManager"] = {"username": username}
    data = stored.get("livechatData")
    if isinstance(data, Mapping):
        kept = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str) and v}
        if kept:
            merged["customFields"] = {**kept, **dict(merged.get("customFields") or {})}
    return merged


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimit | None:
    """Read ``X-RateLimit-Limit/Remaining/Reset`` (reset is epoch **milliseconds**)."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        return RateLimit(
            limit=int(lower["x-ratelimit-limit"]),
            remaining=int(lower["x-ratelimit-remaining"]),
            reset_at=int(lower["x-ratelimit-reset"]) / 1000.0,
        )
    except (KeyError, ValueError):
        return None


def parse_version(info: Mapping[str, Any]) -> tuple[int, int]:
    """``(major, minor)`` from an ``/api/info`` body; ValueError when absent."""
    match = _VERSION.match(str(info.get("version", "")))
    if not match:
        raise ValueError(f"no version in /api/info answer: {str(info)[:100]}")
    return int(match.group(1)), int(match.group(2))


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _error_text(data: dict[str, Any] | None, body: bytes) -> str:
    if data is not None:
        for key in ("error", "message"):
            if isinstance(data.get(key), str) and data[key]:
                return str(data[key])
    return body[:200].decode("utf-8", "replace").strip() or "(empty answer)"


def classify_answer(
    status: int, headers: Mapping[str, str], body: bytes, *, now: float, where: str = "Rocket.Chat"
) -> dict[str, Any]:
    """Return the JSON of a successful answer, or raise the matching error.

    ``now`` (epoch seconds) is used when a 429 lacks a usable reset header.
    """
    data = _json(body)
    if 200 <= status < 300:
        if data is None or data.get("success") is False:
            raise ServerError(
                f"{where} answered {status} without a JSON success body", status=status
            )
        return data
    text = _error_text(data, body)
    if status == 400:
        error_type = data.get("errorType") if data else None
        raise ContactRejected(text, error_type=str(error_type) if error_type else None)
    if status == 401:
        raise BadCredentials(
            f"{where} answered 401 ({text}): check ROCKETCHAT_USER_ID / ROCKETCHAT_AUTH_TOKEN",
            status=401,
        )
    if status == 403:
        raise PermissionDenied(
            f"{where} answered 403 ({text}): give the bot user the permission this route needs "
            "(view-l-room for contacts; create-/update-/view-livechat-contact for the Contact Center)",
            status=403,
        )
    if status == 429:
        limit = parse_rate_limit(headers)
        reset_at = limit.reset_at if limit else math.nan
        if math.isnan(reset_at) or reset_at <= now:
            match = re.search(r"wait (\d+) seconds", text)
            reset_at = now + (int(match.group(1)) if match else 60)
        raise RateLimited(f"{where} answered 429: {text}", reset_at=reset_at)
    if status in (404, 405):
        raise RouteNotFound(f"{where} has no such route (answered {status}): {text}", status=status)
    if status >= 500:
        raise ServerError(f"{where} answered {status}: {text}", status=status)
    raise RocketChatError(f"{where} answered {status}: {text}", status=status)
