"""The Contact Center API's requests and answers as pure functions (Rocket.Chat ≥ 7.1).

Routes, request bodies (``create_body``, ``update_body``), merging a new e-mail or phone into
a contact's lists, picking the *exact* match out of a "contains" search, and reading the
errors that matter. :class:`~adapter.rocketchat.contact_center.ContactCenterStrategy` does
the I/O; everything here is tested without a network.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from adapter.core.errors import ContactRejected
from adapter.rocketchat.sansio import Registration

__all__ = [
    "CONTACTS",
    "NOT_ALLOWED_FIELD",
    "SEARCH",
    "SEARCH_MAX_PAGES",
    "SEARCH_PAGE",
    "UNKNOWN_SEARCH_SINCE",
    "UPDATE",
    "USERS_INFO",
    "create_body",
    "has_email",
    "has_phone",
    "is_error",
    "merge_values",
    "pick_match",
    "rejects_unknown",
    "selected_custom_fields",
    "update_body",
]

CONTACTS = "/api/v1/omnichannel/contacts"
UPDATE = "/api/v1/omnichannel/contacts.update"
SEARCH = "/api/v1/omnichannel/contacts.search"
USERS_INFO = "/api/v1/users.info"

SEARCH_PAGE = 50  # the server's default page; it caps ``count`` at 100
SEARCH_MAX_PAGES = 4  # a "contains" search rarely needs a second page to find an exact match
# ``contacts.search?unknown=true`` (contacts Rocket.Chat made for visitors who chatted): the
# parameter is absent from rest-typings 7.0 and present by 7.10; earlier servers answer 400
# "must NOT have additional properties", so it is sent from 7.10 only.
UNKNOWN_SEARCH_SINCE = (7, 10)

NOT_ALLOWED_FIELD = re.compile(r"^Custom field (.+) is not allowed$")
_PHONE_NOISE = re.compile(r"[^\d+]")


# --------------------------------------------------------------------------- pure part


def _email_key(value: str) -> str:
    return value.strip().lower()


def _phone_key(value: str) -> str:
    """``+1 (415) 555-2671`` and ``+14155552671`` are the same number."""
    return _PHONE_NOISE.sub("", value)


def _values(contact: Mapping[str, Any], field: str, attr: str) -> list[str]:
    """The strings of ``contact[field][*][attr]`` (``emails[].address``, ``phones[].phoneNumber``)."""
    items = contact.get(field)
    if not isinstance(items, list):
        return []
    values = [item.get(attr) for item in items if isinstance(item, Mapping)]
    return [v for v in values if isinstance(v, str) and v]


def has_email(contact: Mapping[str, Any], email: str) -> bool:
    """Whether the contact holds exactly this e-mail (case-insensitive)."""
    wanted = _email_key(email)
    return any(_email_key(v) == wanted for v in _values(contact, "emails", "address"))


def has_phone(contact: Mapping[str, Any], phone: str) -> bool:
    """Whether the contact holds exactly this number (ignoring spaces, dashes, brackets)."""
    wanted = _phone_key(phone)
    return any(_phone_key(v) == wanted for v in _values(contact, "phones", "phoneNumber"))


def pick_match(
    contacts: Iterable[Any], *, email: str | None = None, phone: str | None = None
) -> Mapping[str, Any] | None:
    """The contact among search results that holds exactly ``email`` (or ``phone``).

    Search results are regex matches ("chris@example.com" also finds
    "chris@example.com.br"), so only an exact match counts. When several contacts
    match (duplicates made by hand), the oldest wins, so every retry picks the same one.
    """
    matches = [
        c
        for c in contacts
        if isinstance(c, Mapping)
        and isinstance(c.get("_id"), str)
        and c["_id"]
        and c.get("enabled") is not False
        and (
            (email is not None and has_email(c, email))
            or (phone is not None and has_phone(c, phone))
        )
    ]
    if not matches:
        return None
    return min(matches, key=lambda c: (str(c.get("createdAt") or ""), str(c["_id"])))


def merge_values(
    existing: Iterable[str], new: Iterable[str | None], *, key: Callable[[str], str]
) -> list[str]:
    """``existing`` as stored, then each new value not already there (compared by ``key``).

    Never two equal strings in the result: the server rejects duplicate array items.
    """
    merged: list[str] = []
    seen_exact: set[str] = set()
    seen_keys: set[str] = set()
    for value in existing:
        if value not in seen_exact:
            merged.append(value)
            seen_exact.add(value)
            seen_keys.add(key(value))
    for candidate in new:
        if candidate and key(candidate) not in seen_keys:
            merged.append(candidate)
            seen_keys.add(key(candidate))
    return merged


def selected_custom_fields(
    custom_fields: Mapping[str, str], custom_field_ids: Iterable[str]
) -> dict[str, str]:
    """Only the custom fields configured for this deployment (``ROCKETCHAT_CUSTOM_FIELDS``).

    The Contact Center rejects any key it does not know, so nothing is sent unconfigured.
    """
    allowed = set(custom_field_ids)
    return {k: v for k, v in custom_fields.items() if k in allowed and str(v).strip()}


def create_body(
    registration: Registration,
    *,
    custom_field_ids: Iterable[str] = (),
    manager_id: str | None = None,
) -> dict[str, Any]:
    """The JSON body for ``POST omnichannel/contacts``: ``name``, ``emails``, ``phones`` always."""
    contact = registration.contact
    body: dict[str, Any] = {
        "name": contact.name,
        "emails": [contact.email] if contact.email else [],
        "phones": [contact.phone] if contact.phone else [],
    }
    custom = selected_custom_fields(contact.custom_fields, custom_field_ids)
    if custom:
        body["customFields"] = custom
    if manager_id:
        body["contactManager"] = manager_id
    return body


def update_body(
    existing: Mapping[str, Any],
    registration: Registration,
    *,
    custom_field_ids: Iterable[str] = (),
    manager_id: str | None = None,
    lists: bool = True,
) -> dict[str, Any]:
    """The JSON body for ``contacts.update`` of ``existing`` with what we know.

    ``emails``/``phones``/``customFields`` replace the stored values on the server, so
    each is sent only when it changes and then carries the stored values plus ours.
    With ``lists=False`` only the name and contact manager are sent (used when the
    stored lists are not known yet: the answer tells them).
    """
    contact = registration.contact
    body: dict[str, Any] = {"contactId": existing["_id"], "name": contact.name}
    if manager_id:
        body["contactManager"] = manager_id
    if not lists:
        return body
    emails = _values(existing, "emails", "address")
    merged_emails = merge_values(emails, [contact.email], key=_email_key)
    if merged_emails != emails:
        body["emails"] = merged_emails
    phones = _values(existing, "phones", "phoneNumber")
    merged_phones = merge_values(phones, [contact.phone], key=_phone_key)
    if merged_phones != phones:
        body["phones"] = merged_phones
    ours = selected_custom_fields(contact.custom_fields, custom_field_ids)
    stored = existing.get("customFields")
    stored = dict(stored) if isinstance(stored, Mapping) else {}
    if any(stored.get(k) != v for k, v in ours.items()):
        # The server replaces the registered fields wholesale: keep what it holds.
        body["customFields"] = {**stored, **ours}
    return body


def is_error(exc: ContactRejected, code: str) -> bool:
    return code in (exc.error_type, exc.message) or exc.message.endswith(f"[{code}]")


def rejects_unknown(exc: ContactRejected) -> bool:
    """The 400 a server without ``contacts.search?unknown`` answers to it."""
    return is_error(exc, "invalid-params") and "must NOT have additional properties" in (
        exc.message
    )


# --------------------------------------------------------------------------- the strategy
