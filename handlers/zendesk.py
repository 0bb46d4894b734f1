"""``POST /webhooks/zendesk``: Zendesk webhooks fired by a trigger or automation (widgets.md §9).

Purpose: register the requester of a Zendesk ticket (name, email, phone) as an Omnichannel
contact. The webhook is connected to a trigger (e.g. "Ticket is Created") whose JSON body the
Zendesk admin writes with placeholders; the template we document (docs/webhooks-zendesk.md) is::

    {"ticket_id": "{{ticket.id}}", "event": "ticket.created",
     "requester_id": "{{ticket.requester.id}}", "requester_name": "{{ticket.requester.name}}",
     "requester_email": "{{ticket.requester.email}}",
     "requester_phone": "{{ticket.requester.phone}}", …}

Verify: ``X-Zendesk-Webhook-Signature: <base64 HMAC-SHA256(secret, timestamp + raw body)>``,
no separator, with ``X-Zendesk-Webhook-Signature-Timestamp`` (ISO 8601, e.g.
``2021-03-25T05:09:27Z``; the format is Zendesk's example, not a documented guarantee) within
the replay window. The secret is the webhook's signing secret used verbatim as the key (not
base64-decoded, even though it looks like base64). Setting: ``ZENDESK_WEBHOOK_SECRET``.

Map: ``requester_name`` / ``requester_email`` / ``requester_phone`` unless
``ZENDESK_FIELD_NAME`` / ``_EMAIL`` / ``_PHONE`` name other keys of a differently written
template (comma-separated alternatives, the first non-empty wins; ``a.b`` reaches into nested
objects; the default key is tried last). Placeholders Zendesk renders empty (a requester
without a phone) count as absent; an event without email and phone is ignored (2xx). Extras
kept as custom fields: ``zendesk_ticket_id``, ``zendesk_requester_id``. The person is
``requester:<id>`` when the template carries the requester id, else ``email:<email>``.

Event id: Zendesk sends no event or delivery id we could confirm, so the dedupe key is the
templated ticket id plus event name, ``ticket:<ticket_id>:<event>``, when the body carries both
(one accepted delivery per ticket and trigger), else the body's SHA-256 (a retry of the same
rendered body is accepted once). Zendesk's retry policy is not confirmed either; the answer is
immediate (the core accepts durably, then delivers).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from adapter.channels import (
    Lookup,
    PayloadError,
    WebhookChannel,
    WebhookEvent,
    WebhookProvider,
    WebhookRequest,
    body_digest,
    json_kind,
    json_object,
    scalar_text,
    setting_list,
)

__all__ = [
    "DEFAULT_KEYS",
    "FIELD_SETTINGS",
    "ZendeskProvider",
    "channel",
    "signature_time",
    "zendesk_signature",
]

SECRET_SETTING = "ZENDESK_WEBHOOK_SECRET"
SIGNATURE_HEADER = "x-zendesk-webhook-signature"
TIMESTAMP_HEADER = "x-zendesk-webhook-signature-timestamp"

# Contact field -> the setting naming its keys, and the key of our documented template.
FIELD_SETTINGS: Mapping[str, str] = {
    "name": "ZENDESK_FIELD_NAME",
    "email": "ZENDESK_FIELD_EMAIL",
    "phone": "ZENDESK_FIELD_PHONE",
}
DEFAULT_KEYS: Mapping[str, str] = {
    "name": "requester_name",
    "email": "requester_email",
    "phone": "requester_phone",
}
TICKET_KEYS = ("ticket_id", "ticket.id")
EVENT_KEYS = ("event",)
REQUESTER_KEYS = ("requester_id", "ticket.requester.id")
MAX_KEY = 200  # event ids and person keys are stored in 255-character columns

EXPECTED = (
    'the Zendesk trigger template (docs/webhooks-zendesk.md): {"ticket_id": "{{ticket.id}}", '
    '"requester_name": …, "requester_email": …, "requester_phone": …}'
)

# ISO 8601 date and time with seconds and an explicit offset: 2021-03-25T05:09:27Z
_ISO_INSTANT = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})", re.ASCII
)


def zendesk_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Zendesk-Webhook-Signature`` value for ``body`` signed at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def signature_time(value: str) -> float | None:
    """The instant (epoch seconds) of an ISO 8601 timestamp with an offset; None otherwise
    (epoch numbers, dates without a time or an offset, other formats)."""
    if not _ISO_INSTANT.fullmatch(value):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:  # e.g. month 13
        return None


def _decoded(signature: str) -> bytes | None:
    """The 32 bytes of a base64 signature; None for anything else."""
    try:
        raw = base64.b64decode(signature.strip().encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None
    return raw if len(raw) == hashlib.sha256().digest_size else None


def _at(data: Mapping[str, Any], path: str) -> Any:
    """``data[path]``, else the value at the dotted ``path`` (``ticket.requester.email``)."""
    if path in data:
        return data[path]
    value: Any = data
    for key in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _text(data: Mapping[str, Any], path: str) -> str | None:
    """The text at ``path``; an object, array or boolean there is the wrong shape."""
    value = _at(data, path)
    if isinstance(value, Mapping | list | bool):
        raise PayloadError(f"expected {EXPECTED}; {path} is a JSON {json_kind(value)}, not text")
    return scalar_text(value)


def _first(data: Mapping[str, Any], paths: Sequence[str]) -> str | None:
    return next((v for v in (_text(data, p) for p in paths) if v is not None), None)


def _bounded(prefix: str, value: str) -> str:
    """``prefix + value``, or its digest when too long for the key columns."""
    key = prefix + value
    if len(key) <= MAX_KEY:
        return key
    return prefix + "sha256:" + hashlib.sha256(value.encode()).hexdigest()


def _mapped(data: Mapping[str, Any], lookup: Lookup) -> dict[str, str | None]:
    """Name, email and phone: the keys ``ZENDESK_FIELD_*`` name, then our template's."""
    return {
        field: _first(data, (*setting_list(lookup, setting), DEFAULT_KEYS[field]))
        for field, setting in FIELD_SETTINGS.items()
    }


class ZendeskProvider(WebhookProvider):
    name = "zendesk"
    label = "Zendesk"
    secret_setting = SECRET_SETTING
    field_prefix = "ZENDESK"
    success_status = 200

    def verify(self, request: WebhookRequest, secret: str, *, now: float) -> bool:
        stamp = request.headers.get(TIMESTAMP_HEADER)
        signature = request.headers.get(SIGNATURE_HEADER)
        if not stamp or not signature:
            return False
        instant = signature_time(stamp)
        if instant is None or abs(now - instant) > self.timestamp_window:
            return False
        given = _decoded(signature)
        if given is None:
            return False
        expected = hmac.new(secret.encode(), stamp.encode() + request.body, hashlib.sha256)
        return hmac.compare_digest(given, expected.digest())

    def parse(self, request: WebhookRequest) -> WebhookEvent:
        data = json_object(request.body, EXPECTED)
        fields = _mapped(data, request.lookup)
        ticket = _first(data, TICKET_KEYS)
        event = _first(data, EVENT_KEYS)
        requester = _first(data, REQUESTER_KEYS)

        if ticket is not None and event is not None:
            event_id = _bounded("ticket:", f"{ticket}:{event}")
        else:
            event_id = body_digest(request.body)
        if requester is not None:
            person_key: str | None = _bounded("requester:", requester)
        elif fields["email"]:
            person_key = _bounded("email:", fields["email"].lower())
        else:
            person_key = None

        extras: dict[str, str] = {}
        for key, value in (("zendesk_ticket_id", ticket), ("zendesk_requester_id", requester)):
            if value is not None:
                extras[key] = value[:200]
        return WebhookEvent.unless_unreachable(
            event_id,
            fields,
            person_key=person_key,
            custom_fields=extras,
            event_type=event or "trigger",
        )


channel = WebhookChannel(ZendeskProvider())
