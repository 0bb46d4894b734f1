"""Register guests in Rocket.Chat's Contact Center (``omnichannel/contacts``, Rocket.Chat ≥ 7.1).

The Contact Center's contact (``ILivechatContact``) has no upsert key: ``POST
omnichannel/contacts`` always creates a new one. Registering exactly once therefore
means *look the person up before creating*:

1. the contact id recorded on the delivery (``Registration.known_contact_id``, also
   carried over from the person's previous delivery) → ``contacts.update``;
2. else ``contacts.search`` by e-mail, then by phone, keeping only an *exact* match
   (the search is a case-insensitive "contains" regex over name, e-mails and phones)
   → ``contacts.update``, merging the new e-mail/phone into the contact's lists. On
   7.10+ the same searches follow among the *unknown* contacts (``unknown=true``:
   those Rocket.Chat made itself for visitors who chatted), so a returning guest's
   contact is updated — which also marks it known — instead of duplicated;
3. else ``POST omnichannel/contacts``, and the new id is handed to
   ``record_contact_id`` at once, so a retry updates instead of creating again.

A crash after the server created the contact but before its id was recorded is
covered by step 2: the retry finds the contact by its e-mail or phone.

Request bodies, merging and picking the match from search results are pure code in
:mod:`adapter.rocketchat.contacts_sansio`; :class:`ContactCenterStrategy` does the I/O through
the client (:class:`~adapter.rocketchat.strategies.RocketChatCaller`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from adapter.core.errors import ConfigurationError, ContactRejected, RocketChatError, RouteNotFound
from adapter.rocketchat.contacts_sansio import (
    CONTACTS,
    NOT_ALLOWED_FIELD,
    SEARCH,
    SEARCH_MAX_PAGES,
    SEARCH_PAGE,
    UNKNOWN_SEARCH_SINCE,
    UPDATE,
    USERS_INFO,
    create_body,
    is_error,
    pick_match,
    rejects_unknown,
    update_body,
)
from adapter.rocketchat.sansio import RegisteredContact, Registration
from adapter.rocketchat.strategies import ContactIdRecorder

if TYPE_CHECKING:
    from adapter.rocketchat.strategies import RocketChatCaller

__all__ = ["ContactCenterStrategy"]


class ContactCenterStrategy:
    """Look the person up, then ``contacts.update`` or ``POST omnichannel/contacts``."""

    name = "contact-center"

    def __init__(self, custom_field_ids: tuple[str, ...] = ()) -> None:
        self.custom_field_ids = custom_field_ids

    async def register(
        self,
        client: RocketChatCaller,
        registration: Registration,
        *,
        record_contact_id: ContactIdRecorder | None = None,
    ) -> RegisteredContact:
        try:
            return await self._register(client, registration, record_contact_id)
        except RouteNotFound as exc:
            if client.contact_api != "contact-center":
                raise  # auto: the client detects the server's version again
            raise ConfigurationError(
                f"{exc.message}. {await self._version_text(client)} has no usable Contact Center "
                "API (Rocket.Chat 7.1 or newer): set ROCKETCHAT_CONTACT_API=auto or visitor"
            ) from None
        except ContactRejected as exc:
            raise await self._explain(client, exc) from None

    async def _register(
        self,
        client: RocketChatCaller,
        registration: Registration,
        record_contact_id: ContactIdRecorder | None,
    ) -> RegisteredContact:
        manager_id = await self.manager_id(client, registration.contact_manager)
        calls = 0
        if registration.known_contact_id:
            # Name and manager first; the answer carries the stored lists to merge into.
            calls += 1
            stored = await self._update(
                client,
                update_body(
                    {"_id": registration.known_contact_id},
                    registration,
                    manager_id=manager_id,
                    lists=False,
                ),
            )
            if stored is not None:
                if not stored:  # updated, but the answer did not show the lists to merge into
                    return self._done(registration.known_contact_id, "updated", calls)
                body = update_body(
                    stored,
                    registration,
                    custom_field_ids=self.custom_field_ids,
                    manager_id=manager_id,
                )
                if set(body) - {"contactId", "name", "contactManager"}:
                    calls += 1
                    await self._update(client, body, must_exist=True)
                return self._done(registration.known_contact_id, "updated", calls)

        found, searches = await self._find(client, registration)
        calls += searches
        if found is not None:
            contact_id = str(found["_id"])
            if record_contact_id is not None and contact_id != registration.known_contact_id:
                await record_contact_id(contact_id)
            body = update_body(
                found, registration, custom_field_ids=self.custom_field_ids, manager_id=manager_id
            )
            await self._update(client, body, must_exist=True)
            return self._done(contact_id, "updated", calls + 1)

        data = await client.call(
            "POST",
            CONTACTS,
            json=create_body(
                registration, custom_field_ids=self.custom_field_ids, manager_id=manager_id
            ),
        )
        created = data.get("contactId")
        if not isinstance(created, str) or not created:
            raise RocketChatError("Rocket.Chat answered 200 without a contactId")
        if record_contact_id is not None:
            await record_contact_id(created)
        return self._done(created, "created", calls + 1)

    def _done(self, contact_id: str, action: str, calls: int) -> RegisteredContact:
        return RegisteredContact(
            contact_id=contact_id, strategy=self.name, extra={"action": action, "calls": calls}
        )

    async def _update(
        self, client: RocketChatCaller, body: dict[str, Any], *, must_exist: bool = False
    ) -> dict[str, Any] | None:
        """``contacts.update``; the stored contact, or None when the id is unknown."""
        try:
            data = await client.call("POST", UPDATE, json=body)
        except ContactRejected as exc:
            if not is_error(exc, "error-contact-not-found"):
                raise
            if must_exist:  # deleted between the search and the update: look again later
                raise RocketChatError(
                    f"contact {body['contactId']} disappeared before it was updated"
                ) from None
            return None  # deleted, or an id from the legacy visitor strategy
        contact = data.get("contact")
        # Without the stored contact its lists are unknown: {} makes the caller leave them be.
        return contact if isinstance(contact, dict) and contact.get("_id") else {}

    async def _find(
        self, client: RocketChatCaller, registration: Registration
    ) -> tuple[Mapping[str, Any] | None, int]:
        """Look the person up; the exact match and the calls spent.

        First among the contacts agents know (``unknown: false``, the search's default),
        by e-mail then by phone; then among those Rocket.Chat made itself for visitors who
        chatted (``unknown=true``), on servers whose search takes that parameter.
        """
        contact = registration.contact
        keys = [
            (text, email, phone)
            for text, email, phone in (
                (contact.email, contact.email, None),
                (contact.phone, None, contact.phone),
            )
            if text
        ]
        calls = 0
        passes = [False, True] if await self.searches_unknown(client) else [False]
        for unknown in passes:
            for text, email, phone in keys:
                try:
                    found, spent = await self._search(
                        client, text, email=email, phone=phone, unknown=unknown
                    )
                except ContactRejected as exc:
                    if not (unknown and rejects_unknown(exc)):
                        raise
                    # The server does not take ``unknown`` after all (rolled back below
                    # 7.10?): read its version again, and go on without that search.
                    await client.server_version(refresh=True)
                    return None, calls + 1
                calls += spent
                if found is not None:
                    return found, calls
        return None, calls

    async def _search(
        self,
        client: RocketChatCaller,
        text: str,
        *,
        email: str | None,
        phone: str | None,
        unknown: bool,
    ) -> tuple[Mapping[str, Any] | None, int]:
        """``contacts.search`` for ``text``, page by page; the exact match and the calls."""
        params = {"searchText": text, "count": str(SEARCH_PAGE)}
        if unknown:
            params["unknown"] = "true"
        offset = 0
        calls = 0
        for _ in range(SEARCH_MAX_PAGES):
            calls += 1
            data = await client.call("GET", SEARCH, params={**params, "offset": str(offset)})
            page = data.get("contacts")
            if not isinstance(page, list):
                raise RocketChatError("Rocket.Chat answered contacts.search without a list")
            found = pick_match(page, email=email, phone=phone)
            if found is not None:
                return found, calls
            offset += len(page)
            total = data.get("total")
            if not page or not isinstance(total, int) or offset >= total:
                break
        return None, calls

    @staticmethod
    async def searches_unknown(client: RocketChatCaller) -> bool:
        """Does this server's ``contacts.search`` take ``unknown``? (7.10+, see the contract:
        absent in 7.0's typings, present by 7.10's; older servers reject the key.)"""
        version = await client.server_version()
        return version is not None and version >= UNKNOWN_SEARCH_SINCE

    async def manager_id(self, client: RocketChatCaller, username: str | None) -> str | None:
        """The user id of the agent ``username`` (``users.info``), resolved once.

        Cached on the client (``client.manager_ids``), not here: the strategy object is
        replaced whenever the strategy is chosen again, the cache survives that.
        """
        if not username:
            return None
        cache = client.manager_ids
        if username in cache:
            return cache[username]
        async with client.manager_lock:
            if username not in cache:
                try:
                    data = await client.call("GET", USERS_INFO, params={"username": username})
                except ContactRejected as exc:
                    raise ContactRejected(
                        f"the contact manager {username!r} is not a Rocket.Chat user "
                        f"(users.info answered: {exc.message})",
                        error_type="error-contact-manager-not-found",
                    ) from None
                user = data.get("user")
                user_id = user.get("_id") if isinstance(user, dict) else None
                if not isinstance(user_id, str) or not user_id:
                    raise RocketChatError("Rocket.Chat answered users.info without a user id")
                cache[username] = user_id
            return cache[username]

    async def _explain(self, client: RocketChatCaller, exc: ContactRejected) -> RocketChatError:
        """The server's 400 as a readable, actionable error."""
        if is_error(exc, "error-not-allowed"):
            # 6.13-7.0 answer this unless the server runs in TEST_MODE: not the contact's fault.
            if client.contact_api == "auto":
                # Chosen for 7.1+, so the server was rolled back: read its version again, and
                # the next attempt is made with the strategy that version calls for.
                await client.server_version(refresh=True)
            return ConfigurationError(
                f"{await self._version_text(client)} does not allow the Contact Center API "
                f"yet ({exc.message}); it is usable from Rocket.Chat 7.1: set "
                "ROCKETCHAT_CONTACT_API=auto or visitor"
            )
        match = NOT_ALLOWED_FIELD.match(exc.message)
        if match:
            return ContactRejected(
                f"{exc.message}: Rocket.Chat has no contact custom field {match.group(1)!r}; "
                "create it (Omnichannel > Custom Fields, scope visitor) or remove it from "
                "ROCKETCHAT_CUSTOM_FIELDS",
                error_type=exc.error_type,
            )
        return exc

    @staticmethod
    async def _version_text(client: RocketChatCaller) -> str:
        version = await client.server_version()
        if version is None:
            return f"Rocket.Chat at {client.base_url}"
        return f"Rocket.Chat {version[0]}.{version[1]} at {client.base_url}"
