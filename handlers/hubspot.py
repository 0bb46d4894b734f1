"""``POST /webhooks/hubspot``: HubSpot Webhooks API (app subscriptions) (widgets.md §8).

Verify (signature v3 only): ``X-HubSpot-Signature-v3`` is the base64 HMAC-SHA256, keyed
with the app's client secret, of ``method + URI + raw body + X-HubSpot-Request-Timestamp``
(milliseconds, inside the replay window). The URI is the one HubSpot called
(``scheme://host/path?query``): ``HUBSPOT_WEBHOOK_URL`` when set (the target URL configured
in HubSpot, for a proxy that changes it), else the request's own URL with the scheme and
host of ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` (else the ``Host`` header). The older
v1 and v2 signatures (``X-HubSpot-Signature``) sign no timestamp, so a captured request
could be replayed for ever: they are refused. Setting: ``HUBSPOT_WEBHOOK_SECRET``.

Map: the body is a JSON array of events, possibly about several contacts. ``contact.creation``
carries only the contact's id and is ignored; ``contact.propertyChange`` carries one property
each: ``firstname`` and ``lastname`` (the name is both, space-separated), ``email``,
``phone`` (else ``mobilephone``). The events of one contact in the request are combined
(latest ``occurredAt`` per property) and each carries the combined details: a first name
and a last name become one name only when they come in one request (a request with one of
them gives that part alone; the core merges per field, not per part). The channel accepts
one contact's events of a request as one submission standing for all their event ids (one
delivery, every event answered with it: adapter.channels.webhooks), and the person
``portalId:objectId`` merges it with what earlier requests said. Other subscriptions and
other properties are ignored. Event id: ``portalId:subscriptionId:eventId``, per event (a
retried event is accepted once whatever batch it comes in).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from adapter.channels import (
    TOO_DEEP,
    Lookup,
    PayloadError,
    WebhookChannel,
    WebhookEvent,
    WebhookProvider,
    WebhookRequest,
    json_kind,
    scalar_text,
    setting_error,
)

__all__ = ["HubSpotProvider", "channel", "hubspot_signature", "signed_uri"]

SECRET_SETTING = "HUBSPOT_WEBHOOK_SECRET"  # the app's client secret
URL_SETTING = "HUBSPOT_WEBHOOK_URL"  # the target URL configured in HubSpot (behind a proxy)
SIGNATURE_HEADER = "x-hubspot-signature-v3"
TIMESTAMP_HEADER = "x-hubspot-request-timestamp"
CREATION = "contact.creation"
PROPERTY_CHANGE = "contact.propertyChange"
# The contact properties we read, and the contact field each one gives.
PROPERTIES: Mapping[str, str] = {
    "firstname": "name",
    "lastname": "name",
    "email": "email",
    "phone": "phone",
    "mobilephone": "phone",
}
_EXPECTED = "a JSON array of HubSpot webhook events"


def _mac(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> bytes:
    message = method.encode() + uri.encode() + body + timestamp.encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def hubspot_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """``X-HubSpot-Signature-v3`` of a request: base64 HMAC-SHA256 of method+URI+body+timestamp."""
    return base64.b64encode(_mac(secret, method, uri, body, timestamp)).decode()


def _first(value: str | None) -> str | None:
    """The first of a proxy header's comma-separated values (the one the client sent to)."""
    if not value:
        return None
    return value.split(",")[0].strip() or None


def signed_uri(request: WebhookRequest) -> str:
    """The URI HubSpot signed: ``HUBSPOT_WEBHOOK_URL``, else the request's URL as the client
    saw it (scheme and host from ``X-Forwarded-Proto``/``X-Forwarded-Host``, else ``Host``)."""
    configured = request.lookup(URL_SETTING)
    if configured and configured.strip():
        return configured.strip()
    parts = urlsplit(request.url)
    scheme = _first(request.headers.get("x-forwarded-proto")) or parts.scheme or "https"
    host = (
        _first(request.headers.get("x-forwarded-host"))
        or (request.headers.get("host") or "").strip()
        or parts.netloc
    )
    return urlunsplit((scheme.lower(), host, parts.path, parts.query, ""))


@dataclass(frozen=True)
class _Item:
    """One element of the array, checked."""

    index: int
    kind: str
    event_id: str | None
    person: str | None  # portalId:objectId
    object_id: str | None
    portal_id: str | None
    prop: str | None  # contact.propertyChange: the property's name
    value: str | None  # and its new value
    occurred: float


def _milliseconds(value: object) -> float:
    """``occurredAt`` as a number to order events by (0 when it is not one)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    try:
        return float(value)
    except OverflowError:  # an integer beyond any float
        return 0.0


def _id(event: Mapping[str, Any], key: str, index: int, kind: str, what: str) -> str:
    value = event.get(key)
    text = scalar_text(value)
    if text is None:
        got = "missing" if key not in event else f"a JSON {json_kind(value)}"
        raise PayloadError(
            f"expected {_EXPECTED}; element {index} ({kind}) needs {key}, {what}: it is {got}"
        )
    return text


def _item(index: int, event: object) -> _Item:
    if not isinstance(event, Mapping):
        raise PayloadError(
            f"expected {_EXPECTED} (objects); element {index} is a JSON {json_kind(event)}"
        )
    kind = event.get("subscriptionType")
    if not isinstance(kind, str) or not kind.strip():
        got = "missing" if "subscriptionType" not in event else "not a string"
        raise PayloadError(
            f"expected {_EXPECTED}; element {index} needs subscriptionType "
            f"(e.g. {PROPERTY_CHANGE}): it is {got}"
        )
    occurred = _milliseconds(event.get("occurredAt"))
    ids = [scalar_text(event.get(k)) for k in ("portalId", "subscriptionId", "eventId")]
    if kind not in (CREATION, PROPERTY_CHANGE):  # not ours to read: only its id, if any
        event_id = ":".join(i for i in ids if i) if all(ids) else None
        return _Item(index, kind, event_id, None, None, None, None, None, occurred)
    portal = _id(event, "portalId", index, kind, "the HubSpot account id")
    subscription = _id(event, "subscriptionId", index, kind, "the subscription's id")
    number = _id(event, "eventId", index, kind, "the event's id")
    object_id = _id(event, "objectId", index, kind, "the HubSpot contact id")
    prop: str | None = None
    value: str | None = None
    if kind == PROPERTY_CHANGE:
        name = event.get("propertyName")
        if not isinstance(name, str) or not name:
            got = "missing" if "propertyName" not in event else "not a string"
            raise PayloadError(
                f"expected {_EXPECTED}; element {index} ({kind}) needs propertyName: it is {got}"
            )
        prop, value = name, scalar_text(event.get("propertyValue"))
    return _Item(
        index,
        kind,
        f"{portal}:{subscription}:{number}",
        f"{portal}:{object_id}",
        object_id,
        portal,
        prop,
        value,
        occurred,
    )


def _items(body: bytes) -> list[_Item]:
    try:
        data = json.loads(body)
    except RecursionError:
        raise PayloadError(f"the body is not valid JSON ({TOO_DEEP})") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError, UnicodeDecodeError, huge ints
        raise PayloadError(f"the body is not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise PayloadError(f"expected {_EXPECTED}; got a JSON {json_kind(data)}")
    return [_item(index, event) for index, event in enumerate(data)]


def _combined(items: Sequence[_Item]) -> dict[str, dict[str, str | None]]:
    """Per person, the details all their events in the request give (latest value wins)."""
    latest: dict[str, dict[str, str]] = {}
    given = [i for i in items if i.person and i.prop in PROPERTIES and i.value]
    for item in sorted(given, key=lambda i: (i.occurred, i.index)):
        assert item.person is not None and item.prop is not None and item.value is not None
        latest.setdefault(item.person, {})[item.prop] = item.value
    people: dict[str, dict[str, str | None]] = {}
    for person, props in latest.items():
        parts = [props.get("firstname"), props.get("lastname")]
        people[person] = {
            "name": " ".join(p for p in parts if p) or None,
            "email": props.get("email"),
            "phone": props.get("phone") or props.get("mobilephone"),
        }
    return people


class HubSpotProvider(WebhookProvider):
    name = "hubspot"
    label = "HubSpot"
    secret_setting = SECRET_SETTING
    refusal_hint = (
        "only X-HubSpot-Signature-v3 is accepted (v1 and v2 sign no timestamp), with "
        "X-HubSpot-Request-Timestamp within 5 minutes, over the URL HubSpot called: behind a "
        f"proxy that changes it, set {URL_SETTING} to the target URL configured in HubSpot"
    )

    def check(self, lookup: Lookup) -> None:
        value = (lookup(URL_SETTING) or "").strip()
        parts = urlsplit(value)
        if value and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise setting_error(
                URL_SETTING,
                value,
                "expected the absolute target URL configured in HubSpot, e.g. "
                "https://contacts.example.com/webhooks/hubspot",
            )

    def verify(self, request: WebhookRequest, secret: str, *, now: float) -> bool:
        signature = request.headers.get(SIGNATURE_HEADER)
        stamp = (request.headers.get(TIMESTAMP_HEADER) or "").strip()
        if not signature or not stamp.isdigit() or not stamp.isascii():
            return False
        if abs(now * 1000 - int(stamp)) > self.timestamp_window * 1000:  # milliseconds
            return False
        try:
            given = base64.b64decode(signature.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        expected = _mac(secret, request.method, signed_uri(request), request.body, stamp)
        return hmac.compare_digest(given, expected)

    def parse(self, request: WebhookRequest) -> WebhookEvent:
        """The request's event when it carries exactly one (see :meth:`parse_all`)."""
        events = self.parse_all(request)
        if len(events) != 1:
            raise PayloadError(f"expected one HubSpot event, got {len(events)}: use parse_all")
        return events[0]

    def parse_all(self, request: WebhookRequest) -> Sequence[WebhookEvent]:
        items = _items(request.body)
        people = _combined(items)
        events: list[WebhookEvent] = []
        for item in items:
            if item.kind == CREATION:
                why = (
                    f"{CREATION} carries no contact details (they come as "
                    f"{PROPERTY_CHANGE} events for firstname, lastname, email and phone)"
                )
            elif item.kind != PROPERTY_CHANGE:
                why = f"{item.kind} carries no contact details"
            elif item.prop not in PROPERTIES:
                why = f"{PROPERTY_CHANGE} of {item.prop} carries no contact details"
            elif not item.value:
                why = f"{PROPERTY_CHANGE} of {item.prop} carries an empty value"
            else:
                assert item.person is not None and item.object_id and item.portal_id
                events.append(
                    WebhookEvent(
                        item.event_id,
                        fields=people[item.person],
                        person_key=item.person,
                        custom_fields={
                            "hubspot_contact_id": item.object_id,
                            "hubspot_portal_id": item.portal_id,
                        },
                        event_type=item.kind,
                    )
                )
                continue
            events.append(WebhookEvent(item.event_id, ignored=why, event_type=item.kind))
        return events


channel = WebhookChannel(HubSpotProvider())
