"""``POST /webhooks/rocketchat``: Rocket.Chat Livechat's own webhook (widgets.md §2).

Rocket.Chat signs nothing: it sends the admin's "Secret Token" in clear in the
``X-RocketChat-Livechat-Token`` header, compared here in constant time. There is no
timestamp, so no replay window: use HTTPS, and rely on deduplication. Setting:
``ROCKETCHAT_WEBHOOK_SECRET``.

Map: room events (``LivechatSessionStart``, ``…Queued``, ``…Taken``, ``…Forwarded``,
``LivechatSession``, ``LivechatEdit``), ``Message`` and ``LeadCapture`` carry the visitor
with ``email: [{address}]`` and ``phone: [{phoneNumber}]``; ``LivechatOfflineMessage`` has
``visitor.email`` as a plain string and no phone, so a single phone number written in
international form in the message text is taken (``ROCKETCHAT_REQUIRED_FIELDS=name,email``
keeps those without one instead of rejecting them). The visitor's ``_id`` is the person;
its department and custom fields (short text, capped like every extra) travel as custom
fields. When the Livechat registration
form asks for the phone (or name, email) in a custom field, ``ROCKETCHAT_FIELD_PHONE``
(``_NAME``, ``_EMAIL``) names its id (comma-separated; the first non-empty one wins over
the standard field).

Answer: Rocket.Chat counts only an exact 200 as success and stores our answer body in
the room (echoing it back later as ``crmData``), so the answer is 200 with a small JSON
naming the delivery (and the contact once registered) — never personal data or field
errors. Event id: the body's digest (retries resend the same body; there is no id).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapter.channels import (
    PayloadError,
    WebhookChannel,
    WebhookEvent,
    WebhookProvider,
    WebhookRequest,
    body_digest,
    constant_time_equal,
    custom_value,
    json_object,
    mapped_value,
    phone_in_text,
    scalar_text,
)

__all__ = ["RocketChatLivechatProvider", "channel"]

TOKEN_HEADER = "x-rocketchat-livechat-token"
OFFLINE = "LivechatOfflineMessage"
TEST_ROOM_ID = "fasd6f5a4sd6f8a4sdf"  # the room id of the sample Rocket.Chat's "Send Test" posts
MAX_CUSTOM_KEY = 100  # a custom field's id, as the visitor's browser may send any


def _first(value: Any, key: str) -> str | None:
    """A plain string, or the first non-empty ``key`` of a list of objects (or strings)."""
    if isinstance(value, list):
        for item in value:
            found = scalar_text(item.get(key)) if isinstance(item, Mapping) else scalar_text(item)
            if found:
                return found
        return None
    if isinstance(value, Mapping):
        return scalar_text(value.get(key))
    return scalar_text(value)


def _mapped(request: WebhookRequest, field: str, custom: Mapping[str, Any]) -> str | None:
    """The first value of the visitor custom fields ``ROCKETCHAT_FIELD_<field>`` names."""
    return mapped_value(request.lookup, f"ROCKETCHAT_FIELD_{field}", custom)


class RocketChatLivechatProvider(WebhookProvider):
    name = "rocketchat"
    secret_setting = "ROCKETCHAT_WEBHOOK_SECRET"
    field_prefix = "ROCKETCHAT"
    label = "Rocket.Chat Livechat"
    success_status = 200  # exactly: Rocket.Chat retries 201/202/204
    answer_errors = False  # Rocket.Chat keeps the answer in the room: a few ids, no personal data

    def verify(self, request: WebhookRequest, secret: str, *, now: float) -> bool:
        token = request.headers.get(TOKEN_HEADER)
        return token is not None and constant_time_equal(token, secret)

    def parse(self, request: WebhookRequest) -> WebhookEvent:
        data = json_object(request.body)
        kind = data.get("type")
        if not isinstance(kind, str) or not kind:
            raise PayloadError("expected a 'type' field naming the Livechat event")
        if data.get("_id") == TEST_ROOM_ID:
            return WebhookEvent(None, ignored="Rocket.Chat's webhook test", event_type=kind)
        visitor = data.get("visitor")
        if not isinstance(visitor, Mapping):
            if kind == OFFLINE or "visitor" in data:
                raise PayloadError(f"expected 'visitor' to be an object in {kind}")
            return WebhookEvent(None, ignored=f"{kind} carries no visitor", event_type=kind)

        custom = visitor.get("customFields")
        custom = custom if isinstance(custom, Mapping) else {}
        name = _mapped(request, "NAME", custom) or scalar_text(visitor.get("name"))
        email = _mapped(request, "EMAIL", custom) or _first(visitor.get("email"), "address")
        phone = _mapped(request, "PHONE", custom) or _first(visitor.get("phone"), "phoneNumber")
        if phone is None and kind == OFFLINE:
            phone = phone_in_text(data.get("message"))
        fields = {"name": name, "email": email, "phone": phone}

        visitor_id = scalar_text(visitor.get("_id"))
        extras = {
            str(k)[:MAX_CUSTOM_KEY]: text
            for k, v in custom.items()
            if isinstance(v, str) and (text := custom_value(v))
        }
        if visitor_id:
            extras["rocketchat_visitor_id"] = visitor_id
        department = scalar_text(visitor.get("department")) or scalar_text(data.get("departmentId"))
        if department:
            extras["department"] = department
        return WebhookEvent.unless_unreachable(
            body_digest(request.body),
            fields,
            person_key=visitor_id,
            custom_fields=extras,
            event_type=kind,
            never_sends=frozenset({"phone"}) if kind == OFFLINE else frozenset(),
            reason="the visitor left no email or phone",
        )


channel = WebhookChannel(RocketChatLivechatProvider())
