"""``POST /webhooks/tawkto``: tawk.to webhooks (widgets.md §3).

Verify: ``X-Tawk-Signature: <hex HMAC-SHA1(webhook secret key, raw body)>`` — tawk.to's
own algorithm, compared in constant time. tawk.to sends no timestamp, so there is no
replay window; deduplication on ``X-Hook-Event-Id`` (the same across tawk.to's retries)
is the defence. Setting: ``TAWKTO_WEBHOOK_SECRET``.

Map: ``chat:start``/``chat:end`` → ``visitor.name``/``visitor.email``;
``chat:transcript_created`` → ``chat.visitor``; ``ticket:create`` → ``requester.name``/
``requester.email`` and a single phone number written in international form in the
ticket's message. tawk.to's chat events carry no phone: a deployment that takes chat
visitors needs ``CONTACT_REQUIRED_FIELDS=name,email``, otherwise they are kept as
rejected ("phone is required"). Generated visitor names (``V1561719148780935``) are no
name. Extras: the chat or ticket id, the property (site) name, city and country.
tawk.to waits 30 s and retries for up to 12 h on anything but a 2xx.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import phonenumbers

from adapter.channels import verify_hmac
from adapter.webhooks import (
    PayloadError,
    WebhookChannel,
    WebhookEvent,
    WebhookProvider,
    WebhookRequest,
    body_digest,
)

__all__ = ["TawkToProvider", "channel"]

SIGNATURE_HEADER = "x-tawk-signature"
EVENT_ID_HEADER = "x-hook-event-id"
_PLACEHOLDER_NAME = re.compile(r"^V\d{10,}$")


def _object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise PayloadError(f"the body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise PayloadError("expected a JSON object")
    return data


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


def _phone_in_text(text: Any) -> str | None:
    """The one phone number written in international form in free text, else ``None``."""
    if not isinstance(text, str) or not text:
        return None
    found = {
        phonenumbers.format_number(m.number, phonenumbers.PhoneNumberFormat.E164): m.raw_string
        for m in phonenumbers.PhoneNumberMatcher(text, None)
    }
    return next(iter(found.values())) if len(found) == 1 else None


class TawkToProvider(WebhookProvider):
    name = "tawkto"
    secret_setting = "TAWKTO_WEBHOOK_SECRET"

    def verify(self, request: WebhookRequest, secret: str, *, now: float) -> bool:
        signature = request.headers.get(SIGNATURE_HEADER)
        return bool(signature) and verify_hmac(secret, request.body, signature or "", digest="sha1")

    def parse(self, request: WebhookRequest) -> WebhookEvent:
        data = _object(request.body)
        event = data.get("event")
        if not isinstance(event, str) or not event:
            raise PayloadError("expected an 'event' field naming the tawk.to event")
        phone: str | None = None
        extras: dict[str, str] = {}
        person_key: str | None = None
        if event in ("chat:start", "chat:end"):
            person = data.get("visitor")
            where = "visitor"
            chat_id = _text(data.get("chatId"))
        elif event == "chat:transcript_created":
            chat = data.get("chat")
            person = chat.get("visitor") if isinstance(chat, Mapping) else None
            where = "chat.visitor"
            chat_id = _text(chat.get("id")) if isinstance(chat, Mapping) else None
            chat_id = chat_id or _text(data.get("chatId"))
        elif event == "ticket:create":
            person = data.get("requester")
            where = "requester"
            chat_id = None
            ticket = data.get("ticket")
            if isinstance(ticket, Mapping):
                phone = _phone_in_text(ticket.get("message"))
                ticket_id = _text(ticket.get("humanId")) or _text(ticket.get("id"))
                if ticket_id:
                    extras["tawkto_ticket_id"] = ticket_id
        else:
            return WebhookEvent(None, ignored=f"{event} carries no visitor", event_type=event)
        if not isinstance(person, Mapping):
            raise PayloadError(f"expected '{where}' to be an object in {event}")

        name = _text(person.get("name"))
        if name is not None and _PLACEHOLDER_NAME.fullmatch(name):
            name = None
        email = _text(person.get("email"))
        phone = _text(person.get("phone")) or phone
        if email is None and phone is None:
            return WebhookEvent(
                None, ignored="the visitor left no email or phone", event_type=event
            )
        if chat_id:
            extras["tawkto_chat_id"] = chat_id
            person_key = f"chat:{chat_id}"
        prop = data.get("property")
        if isinstance(prop, Mapping) and (site := _text(prop.get("name"))):
            extras["tawkto_property"] = site
        for key in ("city", "country"):
            if value := _text(person.get(key)):
                extras[key] = value
        return WebhookEvent(
            request.headers.get(EVENT_ID_HEADER) or body_digest(request.body),
            fields={"name": name, "email": email, "phone": phone},
            person_key=person_key,
            custom_fields=extras,
            event_type=event,
        )


channel = WebhookChannel(TawkToProvider())
