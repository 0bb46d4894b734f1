"""``POST /webhooks/tawkto``: tawk.to webhooks (widgets.md §3).

Verify: ``X-Tawk-Signature: <hex HMAC-SHA1(webhook secret key, raw body)>`` — tawk.to's
own algorithm, compared in constant time. tawk.to sends no timestamp, so there is no
replay window; deduplication on ``X-Hook-Event-Id`` (the same across tawk.to's retries)
is the defence. Setting: ``TAWKTO_WEBHOOK_SECRET``.

Map: ``chat:start``/``chat:end`` → ``visitor.name``/``visitor.email``;
``chat:transcript_created`` → ``chat.visitor``; ``ticket:create`` → ``requester.name``/
``requester.email`` and a single phone number written in international form in the
ticket's message. tawk.to's chat events carry no phone: a deployment that takes chat
visitors sets ``TAWKTO_REQUIRED_FIELDS=name,email`` (or ``CONTACT_REQUIRED_FIELDS`` for
every channel), otherwise they are kept as rejected, the record saying which to set.
Generated visitor names (``V1561719148780935``) are no name. Extras: the chat or ticket
id, the property (site) name, city and country. tawk.to waits 30 s and retries for up to
12 h on anything but a 2xx.
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
    dig,
    json_object,
    phone_in_text,
    real_name,
    scalar_text,
    verify_hmac,
)

__all__ = ["TawkToProvider", "channel"]

SIGNATURE_HEADER = "x-tawk-signature"
EVENT_ID_HEADER = "x-hook-event-id"
_PLACEHOLDER_NAME = re.compile(r"^V\d{10,}$")


class TawkToProvider(WebhookProvider):
    name = "tawkto"
    secret_setting = "TAWKTO_WEBHOOK_SECRET"
    label = "tawk.to"
    never_sends = frozenset({"phone"})  # no phone field in any event (tickets: only the text)

    def verify(self, request: WebhookRequest, secret: str, *, now: float) -> bool:
        signature = request.headers.get(SIGNATURE_HEADER)
        return bool(signature) and verify_hmac(secret, request.body, signature or "", digest="sha1")

    def parse(self, request: WebhookRequest) -> WebhookEvent:
        data = json_object(request.body)
        event = data.get("event")
        if not isinstance(event, str) or not event:
            raise PayloadError("expected an 'event' field naming the tawk.to event")
        phone: str | None = None
        extras: dict[str, str] = {}
        person_key: str | None = None
        if event in ("chat:start", "chat:end"):
            person = data.get("visitor")
            where = "visitor"
            chat_id = scalar_text(data.get("chatId"))
        elif event == "chat:transcript_created":
            person = dig(data, "chat", "visitor")
            where = "chat.visitor"
            chat_id = scalar_text(dig(data, "chat", "id")) or scalar_text(data.get("chatId"))
        elif event == "ticket:create":
            person = data.get("requester")
            where = "requester"
            chat_id = None
            ticket = data.get("ticket")
            if isinstance(ticket, Mapping):
                phone = phone_in_text(ticket.get("message"))
                ticket_id = scalar_text(ticket.get("humanId")) or scalar_text(ticket.get("id"))
                if ticket_id:
                    extras["tawkto_ticket_id"] = ticket_id
        else:
            return WebhookEvent(None, ignored=f"{event} carries no visitor", event_type=event)
        if not isinstance(person, Mapping):
            raise PayloadError(f"expected '{where}' to be an object in {event}")

        name = real_name(scalar_text(person.get("name")), _PLACEHOLDER_NAME)
        email = scalar_text(person.get("email"))
        phone = scalar_text(person.get("phone")) or phone
        fields = {"name": name, "email": email, "phone": phone}
        if chat_id:
            extras["tawkto_chat_id"] = chat_id
            person_key = f"chat:{chat_id}"
        prop = data.get("property")
        if isinstance(prop, Mapping) and (site := scalar_text(prop.get("name"))):
            extras["tawkto_property"] = site
        for key in ("city", "country"):
            if value := scalar_text(person.get(key)):
                extras[key] = value
        return WebhookEvent.unless_unreachable(
            request.headers.get(EVENT_ID_HEADER) or body_digest(request.body),
            fields,
            person_key=person_key,
            custom_fields=extras,
            event_type=event,
            reason="the visitor left no email or phone",
        )


channel = WebhookChannel(TawkToProvider())
