"""How a contact is registered: the strategy protocol and the legacy visitor upsert.

A strategy talks to Rocket.Chat only through :class:`RocketChatCaller` (what
:class:`~adapter.rocketchat.client.RocketChatClient` offers it), so this module and
:mod:`adapter.rocketchat.contact_center` import no client and the client imports both at
top level. Bodies and answers are built and read by :mod:`adapter.rocketchat.sansio`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from adapter.core.errors import RocketChatError
from adapter.rocketchat.sansio import (
    RegisteredContact,
    Registration,
    keep_what_rocketchat_holds,
    visitor_body,
)

__all__ = ["ContactIdRecorder", "RegistrationStrategy", "RocketChatCaller", "VisitorStrategy"]

ContactIdRecorder = Callable[[str], Awaitable[None]]


class RocketChatCaller(Protocol):
    """What a strategy may use of the client: paced, classified calls and shared state."""

    base_url: str
    contact_api: str
    manager_ids: dict[str, str]
    manager_lock: asyncio.Lock

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        auth: bool = True,
        paced: bool = True,
    ) -> dict[str, Any]: ...

    async def server_version(self, *, refresh: bool = False) -> tuple[int, int] | None: ...


class RegistrationStrategy(Protocol):
    """How a contact is registered on a given Rocket.Chat server."""

    name: str

    async def register(
        self,
        client: RocketChatCaller,
        registration: Registration,
        *,
        record_contact_id: ContactIdRecorder | None = None,
    ) -> RegisteredContact: ...


class VisitorStrategy:
    """The legacy ``POST /api/v1/omnichannel/contact`` upsert, keyed by the token."""

    name = "visitor"

    def __init__(
        self, custom_field_ids: tuple[str, ...] = (), *, lookup_new_contacts: bool = True
    ) -> None:
        self.custom_field_ids = custom_field_ids
        self.lookup_new_contacts = lookup_new_contacts

    async def register(
        self,
        client: RocketChatCaller,
        registration: Registration,
        *,
        record_contact_id: ContactIdRecorder | None = None,
    ) -> RegisteredContact:
        body = visitor_body(registration, custom_field_ids=self.custom_field_ids)
        # Rocket.Chat unsets what a call leaves out: read what it holds about the person
        # first, so that what agents added there is sent back. Registered before: by the
        # id it gave us. New to us: by email, because a known email makes Rocket.Chat reuse
        # that visitor (a phone never does). Each lookup route has its own rate-limit
        # bucket, so the registrations' pace is unchanged.
        found: dict[str, Any] | None = None
        if registration.known_contact_id:
            found = await client.call(
                "GET",
                "/api/v1/omnichannel/contact",
                params={"contactId": registration.known_contact_id},
            )
        elif self.lookup_new_contacts and registration.contact.email:
            found = await client.call(
                "GET",
                "/api/v1/omnichannel/contact.search",
                params={"email": registration.contact.email.strip().lower()},
            )
        if found is not None:
            stored = found.get("contact")
            body = keep_what_rocketchat_holds(body, stored if isinstance(stored, dict) else None)
        data = await client.call("POST", "/api/v1/omnichannel/contact", json=body)
        contact_id = data.get("contact")
        if not isinstance(contact_id, str) or not contact_id:
            raise RocketChatError("Rocket.Chat answered 200 without a contact id")
        return RegisteredContact(contact_id=contact_id, strategy=self.name)
