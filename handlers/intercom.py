"""``POST /webhooks/intercom``: Intercom webhook notifications (widgets.md §7).

Registers the leads and users of an Intercom workspace (Messenger visitors who left an
email or phone, people your app identified) as Omnichannel contacts.

Verify: ``X-Hub-Signature: sha1=<lowercase hex HMAC-SHA1(key, raw body)>``, compared in
constant time; a missing header, one without the ``sha1=`` prefix, or any other digest is
refused. The key is the Intercom app's ``client_secret`` (Developer Hub → Basic info), as
third-party guides say for current apps — not confirmed by Intercom's own documentation
(the v1.0 API documented a per-subscription ``hub_secret`` instead). Setting:
``INTERCOM_WEBHOOK_SECRET``. Intercom signs **no timestamp**, so no replay window is
possible: deduplication on the notification ``id`` (``notif_…``, the same across
Intercom's retries) and TLS are the defence.

Map: the body is a notification ``{"type": "notification_event", "id", "topic",
"data": {"item": {…}}}``. ``contact.*`` topics whose ``data.item`` is a contact object
(``contact.user.created``, ``contact.lead.created``, ``contact.email.updated``,
``contact.user.updated`` …) → ``data.item.name`` / ``.email`` / ``.phone``;
``INTERCOM_FIELD_NAME`` / ``_EMAIL`` / ``_PHONE`` name custom attribute keys that win
over those (comma-separated, first non-empty). Every other topic (``conversation.*``,
whose item names its contacts by id only, ``company.*``, the Developer Hub's ``ping``),
contact removals (``contact.deleted``, ``contact.archived``), contact topics whose item is
not a contact (tags) and contacts without email or phone are answered 2xx and ignored.
The person is the Intercom contact id, so a lead created without an email and completed
by ``contact.email.updated`` (or whose email is corrected later) stays one contact.
Extras kept as custom fields: ``intercom_contact_id``, ``intercom_role`` (``lead`` or
``user``), ``intercom_external_id`` (your app's user id), ``city``, ``country``.

Event id: the notification ``id``; without one, ``contact id:topic:updated_at``, which
Intercom's retries share (their bodies differ in ``delivery_attempts``, so the body's
digest would not do).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from adapter.channels import (
    PayloadError,
    WebhookChannel,
    WebhookEvent,
    WebhookProvider,
    WebhookRequest,
    constant_time_equal,
    custom_value,
    dig,
    event_kind,
    json_object,
    mapped_value,
    member,
    scalar_text,
)

__all__ = ["IntercomProvider", "channel", "intercom_signature"]

SIGNATURE_HEADER = "x-hub-signature"
NOTIFICATION = "notification_event"
EXPECTED = (
    'an Intercom notification: {"type": "notification_event", "id": "notif_…", '
    '"topic": "contact.…", "data": {"item": {"type": "contact", "id": …, '
    '"name": …, "email": …, "phone": …}}}'
)
# Contact topics about a contact leaving Intercom: no guest to register.
REMOVALS = frozenset({"deleted", "archived", "archive"})


def intercom_signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature`` header value for ``body``: ``sha1=<lowercase hex>``."""
    return "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


class IntercomProvider(WebhookProvider):
    name = "intercom"
    secret_setting = "INTERCOM_WEBHOOK_SECRET"
    field_prefix = "INTERCOM"
    label = "Intercom"
    success_status = 200  # any 2xx

    def verify(self, request: WebhookRequest, secret: str, *, now: float) -> bool:
        given = request.headers.get(SIGNATURE_HEADER)
        if not given:
            return False
        return constant_time_equal(given.strip().lower(), intercom_signature(secret, request.body))

    def parse(self, request: WebhookRequest) -> WebhookEvent:
        data = json_object(request.body, EXPECTED)
        kind = event_kind(data, "type", EXPECTED)
        if kind != NOTIFICATION:
            raise PayloadError(f"expected {EXPECTED}; type is {kind[:80]!r}")
        topic = event_kind(data, "topic", EXPECTED).strip()
        if not topic:
            raise PayloadError(f"expected {EXPECTED}; topic is empty")
        notification_id = custom_value(data.get("id"))
        if not topic.startswith("contact."):
            return self._ignored(notification_id, topic, f"{topic} carries no contact details")
        if topic.rsplit(".", 1)[-1] in REMOVALS:
            return self._ignored(notification_id, topic, f"{topic}: the contact left Intercom")
        try:
            payload = member(data, "data", dict, "the notification")
            item: dict[str, Any] = member(payload, "item", dict, "data")
        except PayloadError as exc:
            raise PayloadError(f"{exc}, in {EXPECTED}") from None
        item_type = item.get("type")
        if item_type not in (None, "contact"):
            what = str(item_type)[:80]
            return self._ignored(notification_id, topic, f"{topic} carries a {what}, not a contact")

        attributes = item.get("custom_attributes")

        def given(field: str, standard: str) -> str | None:
            """The custom attribute ``INTERCOM_FIELD_<field>`` names, else the contact's own."""
            return mapped_value(request.lookup, f"INTERCOM_FIELD_{field}", attributes) or (
                scalar_text(item.get(standard))
            )

        fields = {
            "name": given("NAME", "name"),
            "email": given("EMAIL", "email"),
            "phone": given("PHONE", "phone"),
        }

        contact_id = custom_value(item.get("id"))
        extras: dict[str, str] = {}
        for key, value in (
            ("intercom_contact_id", contact_id),
            ("intercom_role", item.get("role")),
            ("intercom_external_id", item.get("external_id")),
            ("city", dig(item, "location", "city")),
            ("country", dig(item, "location", "country")),
        ):
            if text := custom_value(value):
                extras[key] = text

        event_id = notification_id
        if event_id is None and contact_id:
            updated = scalar_text(item.get("updated_at")) or "-"
            event_id = f"{contact_id}:{topic}:{updated}"
        return WebhookEvent.unless_unreachable(
            event_id,
            fields,
            person_key=contact_id,
            custom_fields=extras,
            event_type=topic,
            reason="the contact has no email or phone yet",
        )

    @staticmethod
    def _ignored(event_id: str | None, topic: str, why: str) -> WebhookEvent:
        return WebhookEvent(event_id, ignored=why, event_type=topic)


channel = WebhookChannel(IntercomProvider())
