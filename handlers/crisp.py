"""``POST /webhooks/crisp``: Crisp plugin hooks (signed) and website hooks (URL key) (widgets.md §4).

Crisp has two kinds of hooks, and a deployment enables each with its own setting:

* **Plugin hooks** (Marketplace plugin) are signed: ``X-Crisp-Signature`` is the hex
  HMAC-SHA256, keyed with the plugin's signing secret, of
  ``"[" + X-Crisp-Request-Timestamp + ";" + raw body + "]"``. The timestamp must be inside
  the replay window (milliseconds or seconds). Crisp's Node SDK signs ``JSON.stringify``
  of the parsed body, so when the raw bytes do not verify, the compact re-serialisation
  is tried too (same secret, same check). Setting: ``CRISP_WEBHOOK_SECRET``.
* **Website hooks** are not signed at all: Crisp's advice is a secret ``?key=`` in the
  hook URL, compared here in constant time. Setting: ``CRISP_WEBHOOK_KEY``; leave it
  unset and the unsigned kind is refused.

Map: Crisp sends what a visitor tells it as separate events keyed by the session:
``session:set_nickname`` (name), ``session:set_email``, ``session:set_phone``; the
visitor's nickname on each of their messages (``message:send`` from the user, accepted
once per session and nickname: its event id is the pair, so a chat of twenty messages
is one submission); and ``people:profile:created``/``updated`` for its contact book. A
site that pushes its own form's answers as session data (``session:set_data``) names the
keys with ``CRISP_FIELD_NAME`` / ``_EMAIL`` / ``_PHONE`` (comma-separated; unset: set_data
is ignored). The person is ``website_id:session_id`` (or ``website_id:people:people_id``),
so the core merges the pieces into one contact carrying everything known. Default
nicknames (``visitor493603``) are no name; operators' messages and other events are
ignored. Event id (but for messages): the body's digest (the body carries the event's own
millisecond timestamp; a retry sends the same body).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from adapter.channels import (
    PayloadError,
    WebhookChannel,
    WebhookEvent,
    WebhookProvider,
    WebhookRequest,
    body_digest,
    check_timestamp,
    constant_time_equal,
    dig,
    json_object,
    mapped_value,
    real_name,
    scalar_text,
    stringified,
    verify_hmac,
)

__all__ = ["CrispProvider", "channel"]

SECRET_SETTING = "CRISP_WEBHOOK_SECRET"  # plugin hooks: the plugin's signing secret
KEY_SETTING = "CRISP_WEBHOOK_KEY"  # website hooks: the ?key= in the hook URL
SIGNATURE_HEADER = "x-crisp-signature"
TIMESTAMP_HEADER = "x-crisp-request-timestamp"
_PLACEHOLDER_NAME = re.compile(r"^visitor\d+$")


def _name(value: Any) -> str | None:
    return real_name(scalar_text(value), _PLACEHOLDER_NAME)


def _signed_message(stamp: str, body: bytes) -> bytes:
    return b"[" + stamp.encode() + b";" + body + b"]"


class CrispProvider(WebhookProvider):
    name = "crisp"
    label = "Crisp"
    secret_setting = SECRET_SETTING
    field_prefix = "CRISP"

    @property
    def secret_settings(self) -> tuple[str, ...]:
        return (SECRET_SETTING, KEY_SETTING)

    def verify(self, request: WebhookRequest, secret: str, *, now: float) -> bool:
        signing_secret = request.lookup(SECRET_SETTING)
        signature = request.headers.get(SIGNATURE_HEADER)
        if signing_secret and signature and self._signed(request, signing_secret, signature, now):
            return True
        url_key = request.lookup(KEY_SETTING)
        given = request.query.get("key")
        return bool(url_key) and given is not None and constant_time_equal(given, url_key or "")

    def _signed(self, request: WebhookRequest, secret: str, signature: str, now: float) -> bool:
        stamp = request.headers.get(TIMESTAMP_HEADER)
        if not stamp or not check_timestamp(stamp, window=self.timestamp_window, now=now):
            return False
        if verify_hmac(secret, _signed_message(stamp, request.body), signature):
            return True
        compact = stringified(request.body)  # what Crisp's Node SDK signs
        return compact is not None and verify_hmac(
            secret, _signed_message(stamp, compact), signature
        )

    def parse(self, request: WebhookRequest) -> WebhookEvent:
        data = json_object(request.body)
        event = data.get("event")
        if not isinstance(event, str) or not event:
            raise PayloadError("expected an 'event' field naming the Crisp event")
        payload = data.get("data")
        if not isinstance(payload, Mapping):
            raise PayloadError(f"expected 'data' to be an object in {event}")
        website = (
            scalar_text(data.get("website_id")) or scalar_text(payload.get("website_id")) or "-"
        )
        fields: dict[str, str | None] = {}
        extras: dict[str, str] = {}
        person_key: str | None
        event_id = body_digest(request.body)
        if event == "message:send" and payload.get("from") == "user":
            session = scalar_text(payload.get("session_id"))
            name = _name(dig(payload, "user", "nickname"))
            if session is None or name is None:
                return WebhookEvent(
                    None, ignored=f"{event} carries no contact details", event_type=event
                )
            person_key = f"{website}:{session}"
            extras["crisp_session_id"] = session
            fields["name"] = name
            once = f"{person_key}\n{name}".encode()  # once per visitor and nickname
            event_id = "nickname:" + hashlib.sha256(once).hexdigest()
        elif event.startswith("session:set_"):
            session = scalar_text(payload.get("session_id"))
            if session is None:
                raise PayloadError(f"expected 'data.session_id' in {event}")
            person_key = f"{website}:{session}"
            extras["crisp_session_id"] = session
            if event == "session:set_nickname":
                fields["name"] = _name(payload.get("nickname"))
            elif event == "session:set_email":
                fields["email"] = scalar_text(payload.get("email"))
            elif event == "session:set_phone":
                fields["phone"] = scalar_text(payload.get("phone"))
            elif event == "session:set_data":
                custom = payload.get("data")
                for field in ("name", "email", "phone"):
                    setting = f"CRISP_FIELD_{field.upper()}"
                    fields[field] = mapped_value(request.lookup, setting, custom)
                fields["name"] = real_name(fields["name"], _PLACEHOLDER_NAME)
        elif event in ("people:profile:created", "people:profile:updated"):
            people_id = scalar_text(payload.get("people_id"))
            person_key = f"{website}:people:{people_id}" if people_id else None
            if people_id:
                extras["crisp_people_id"] = people_id
            fields["email"] = scalar_text(payload.get("email"))
            person = dig(payload, "update", "person")
            if isinstance(person, Mapping):
                fields["name"] = _name(person.get("nickname"))
                fields["phone"] = scalar_text(person.get("phone"))
        else:
            return WebhookEvent(
                None, ignored=f"{event} carries no contact details", event_type=event
            )
        if not any(fields.values()):
            return WebhookEvent(
                None, ignored=f"{event} carries no contact details", event_type=event
            )
        return WebhookEvent(
            event_id,
            fields=fields,
            person_key=person_key,
            custom_fields=extras,
            event_type=event,
        )


channel = WebhookChannel(CrispProvider())
