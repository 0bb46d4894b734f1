"""``POST /webhooks/chatwoot``: Chatwoot account webhooks (widgets.md §1).

Verify: ``X-Chatwoot-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>``
with ``X-Chatwoot-Timestamp`` (unix seconds) inside the replay window. Chatwoot generates
the secret per webhook since v4.11.2; older versions sign nothing and are refused (there
is nothing to check). Setting: ``CHATWOOT_WEBHOOK_SECRET``.

Map: ``contact_created``/``contact_updated`` carry the contact at the top level,
``conversation_*`` under ``meta.sender``, ``message_*`` under ``sender`` (visitor messages
only, ``message_type == "incoming"``), ``webwidget_triggered`` under ``contact``. Names
Chatwoot invents for anonymous widget visitors (``billowing-frost-412``) are no name; a
contact without email and phone is ignored (the pre-chat form fills them later through
``contact_updated``). Custom pre-chat questions end in custom attributes:
``CHATWOOT_FIELD_NAME`` / ``_EMAIL`` / ``_PHONE`` name the attribute keys (comma-separated,
first non-empty wins over the standard field). The person is ``account id:contact id``, so every event about one
Chatwoot contact lands in one contact.

Event id: ``account:event:id`` for ``*_created`` events (stable across Chatwoot's fan-out
to several webhooks and across retries), else ``X-Chatwoot-Delivery`` (stable across
retries), else the body's digest. Chatwoot gives up after 5 s and does not retry, so the
answer is immediate (the core accepts durably, then delivers).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from adapter.channels import (
    PayloadError,
    WebhookChannel,
    WebhookEvent,
    WebhookProvider,
    WebhookRequest,
    body_digest,
    check_timestamp,
    dig,
    json_object,
    mapped_value,
    real_name,
    scalar_text,
    timestamp_offset,
    verify_hmac,
)

__all__ = ["ChatwootProvider", "channel"]

# Where each event keeps the contact: a path of keys from the payload's root.
CONTACT_PATHS: Mapping[str, tuple[str, ...]] = {
    "contact_created": (),
    "contact_updated": (),
    "conversation_created": ("meta", "sender"),
    "conversation_updated": ("meta", "sender"),
    "conversation_status_changed": ("meta", "sender"),
    "message_created": ("sender",),
    "message_updated": ("sender",),
    "webwidget_triggered": ("contact",),
}
# Haikunator names Chatwoot gives anonymous widget visitors, e.g. "billowing-frost-412"
_PLACEHOLDER_NAME = re.compile(r"^[a-z]+-[a-z]+-\d{1,4}$")


class ChatwootProvider(WebhookProvider):
    name = "chatwoot"
    label = "Chatwoot"
    secret_setting = "CHATWOOT_WEBHOOK_SECRET"
    field_prefix = "CHATWOOT"

    def verify(self, request: WebhookRequest, secret: str, *, now: float) -> bool:
        stamp = request.headers.get("x-chatwoot-timestamp")
        signature = request.headers.get("x-chatwoot-signature")
        if not stamp or not signature or not stamp.strip().isdigit():
            return False
        if not check_timestamp(stamp, window=self.timestamp_window, now=now):
            return False
        return verify_hmac(
            secret, stamp.strip().encode() + b"." + request.body, signature, prefix="sha256="
        )

    def stale_by(self, request: WebhookRequest, secret: str, *, now: float) -> float | None:
        stamp = request.headers.get("x-chatwoot-timestamp")
        signature = request.headers.get("x-chatwoot-signature")
        if not stamp or not signature or not stamp.strip().isdigit():
            return None
        signed = verify_hmac(
            secret, stamp.strip().encode() + b"." + request.body, signature, prefix="sha256="
        )
        return timestamp_offset(stamp, now=now) if signed else None

    def parse(self, request: WebhookRequest) -> WebhookEvent:
        data = json_object(request.body)
        event = data.get("event")
        if not isinstance(event, str) or not event:
            raise PayloadError("expected an 'event' field naming the Chatwoot event")
        path = CONTACT_PATHS.get(event)
        if path is None:
            return WebhookEvent(None, ignored=f"{event} carries no contact", event_type=event)
        if event.startswith("message_") and data.get("message_type") not in ("incoming", 0):
            return WebhookEvent(None, ignored="not a visitor's message", event_type=event)
        person = dig(data, *path)
        if not isinstance(person, Mapping):
            where = ".".join(path)
            raise PayloadError(f"expected '{where}' to be the contact object of {event}")

        # Custom pre-chat questions land in custom attributes: of the contact, or of the
        # conversation (the payload's own for conversation_*, its conversation's for message_*).
        attributes = [
            person.get("custom_attributes"),
            data.get("custom_attributes") if event.startswith("conversation_") else None,
            dig(data, "conversation", "custom_attributes"),
        ]

        def given(field: str, standard: str) -> str | None:
            """The attribute ``CHATWOOT_FIELD_<field>`` names, else the contact's own field."""
            setting = f"CHATWOOT_FIELD_{field}"
            return mapped_value(request.lookup, setting, *attributes) or scalar_text(
                person.get(standard)
            )

        name = real_name(given("NAME", "name"), _PLACEHOLDER_NAME)
        email, phone = given("EMAIL", "email"), given("PHONE", "phone_number")
        fields = {"name": name, "email": email, "phone": phone}

        account = scalar_text(dig(data, "account", "id")) or scalar_text(
            dig(person, "account", "id")
        )
        contact_id = scalar_text(person.get("id"))
        person_key = f"{account or '-'}:{contact_id}" if contact_id else None

        extras: dict[str, str] = {}
        if contact_id:
            extras["chatwoot_contact_id"] = contact_id
        page = (
            scalar_text(dig(data, "additional_attributes", "referer"))
            if event.startswith("conversation_")
            else scalar_text(dig(data, "conversation", "additional_attributes", "referer"))
            or scalar_text(dig(data, "event_info", "referer"))
        )
        if page:
            extras["page_url"] = page
        for key in ("city", "country"):
            value = scalar_text(dig(person, "additional_attributes", key))
            if value:
                extras[key] = value

        event_id: str | None
        object_id = scalar_text(data.get("id"))
        if event.endswith("_created") and object_id:
            event_id = f"{account or '-'}:{event}:{object_id}"
        else:
            event_id = request.headers.get("x-chatwoot-delivery") or body_digest(request.body)
        return WebhookEvent.unless_unreachable(
            event_id,
            fields,
            person_key=person_key,
            custom_fields=extras,
            event_type=event,
            reason="the contact has no email or phone yet",
        )


channel = WebhookChannel(ChatwootProvider())
