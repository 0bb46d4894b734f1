"""HubSpot Webhooks API (widgets.md §8): signature v3, batches of events, one contact per person.

Pure tests of ``verify`` (the contract's sample at its instant, with the contract's URI, and
a signer written here from the contract's recipe) and ``parse_all``; then end to end through
the real service under uvicorn and the Rocket.Chat stand-in, every request re-signed with the
current time and the URL the test server really has (or the public one, with
``HUBSPOT_WEBHOOK_URL``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import pytest
from starlette.datastructures import Headers, QueryParams

from adapter.channels.webhooks import PayloadError, WebhookRequest
from adapter.settings import Settings
from handlers.hubspot import HubSpotProvider, hubspot_signature
from tests.conftest import ADMIN_TOKEN, Service
from tests.rocketchat_standin import RocketChatStandIn
from tests.webhook_samples import SAMPLE_INSTANT, load_sample, tamper

SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"  # HubSpot's doc placeholder, signs the sample
CONTRACT_URI = "https://adapter.example.com/webhooks/hubspot"
CONTRACT_VECTOR = "NkHZRNTinAYtucbqd3r+cCCma3V+YC0n+SV7RnL7IMk="
SETTING = "HUBSPOT_WEBHOOK_SECRET"
PORTAL, CONTACT = 62515, 90210
PERSON = f"{PORTAL}:{CONTACT}"
EMAIL = "kenji.watanabe@example.com"
PROVIDER = HubSpotProvider()
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def sign_v3(
    body: bytes, uri: str, *, now: float | None = None, method: str = "POST", secret: str = SECRET
) -> dict[str, str]:
    """The contract's recipe: base64 HMAC-SHA256(secret, method + URI + body + timestamp ms)."""
    stamp = str(int((time.time() if now is None else now) * 1000))
    message = method.encode() + uri.encode() + body + stamp.encode()
    mac = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": base64.b64encode(mac).decode(),
        "X-HubSpot-Request-Timestamp": stamp,
    }


def sign_v1(body: bytes, secret: str = SECRET) -> dict[str, str]:
    """HubSpot's legacy signature: hex SHA-256 of secret + body, no timestamp."""
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-Version": "v1",
        "X-HubSpot-Signature": hashlib.sha256(secret.encode() + body).hexdigest(),
    }


def request(
    body: bytes,
    headers: Mapping[str, str],
    *,
    url: str = CONTRACT_URI,
    settings: Mapping[str, str] | None = None,
) -> WebhookRequest:
    values = dict(settings or {})
    return WebhookRequest(
        body=body,
        headers=Headers(headers),
        query=QueryParams(url.partition("?")[2]),
        url=url,
        lookup=values.get,
    )


def encode(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


_counter = iter(range(5000, 1_000_000))


def change(
    prop: str, value: str | None, *, contact: int = CONTACT, occurred: int | None = None
) -> dict[str, Any]:
    """A ``contact.propertyChange`` event as HubSpot sends it (a fresh eventId each time)."""
    number = next(_counter)
    return {
        "eventId": number,
        "subscriptionId": 2346,
        "portalId": PORTAL,
        "appId": 54321,
        "occurredAt": occurred if occurred is not None else 1795514397900 + number,
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
        "objectId": contact,
        "propertyName": prop,
        "propertyValue": value,
        "changeSource": "FORM",
    }


def creation(contact: int = CONTACT) -> dict[str, Any]:
    return {
        "eventId": next(_counter),
        "subscriptionId": 2345,
        "portalId": PORTAL,
        "appId": 54321,
        "occurredAt": 1795514397800,
        "subscriptionType": "contact.creation",
        "attemptNumber": 0,
        "objectId": contact,
        "changeFlag": "CREATED",
        "changeSource": "FORM",
    }


def key(event: Mapping[str, Any]) -> str:
    return f"{event['portalId']}:{event['subscriptionId']}:{event['eventId']}"


# =============================================================================================
# verify: signature v3 exactly as the contract says, on the untouched sample bytes


def test_the_sample_verifies_at_its_instant_and_our_recipe_gives_the_contract_vector() -> None:
    body, headers = load_sample("hubspot", "contact.creation")
    assert headers["X-HubSpot-Request-Timestamp"] == str(SAMPLE_INSTANT * 1000)
    ours = sign_v3(body, CONTRACT_URI, now=SAMPLE_INSTANT)
    assert ours["X-HubSpot-Signature-v3"] == CONTRACT_VECTOR == headers["X-HubSpot-Signature-v3"]
    stamp = headers["X-HubSpot-Request-Timestamp"]
    assert hubspot_signature(SECRET, "POST", CONTRACT_URI, body, stamp) == CONTRACT_VECTOR
    assert PROVIDER.verify(request(body, headers), SECRET, now=SAMPLE_INSTANT)
    assert not PROVIDER.verify(request(body, headers), SECRET + "x", now=SAMPLE_INSTANT)


def test_what_the_signature_covers_is_checked() -> None:
    body, headers = load_sample("hubspot", "contact.creation")

    def ok(
        body: bytes = body,
        headers: Mapping[str, str] = headers,
        url: str = CONTRACT_URI,
        now: float = SAMPLE_INSTANT,
    ) -> bool:
        return PROVIDER.verify(request(body, headers, url=url), SECRET, now=now)

    assert ok()
    assert not ok(body=tamper(body))
    assert not ok(body=tamper(body, 0))
    for other in (
        "http://adapter.example.com/webhooks/hubspot",
        "https://other.example.com/webhooks/hubspot",
        "https://adapter.example.com/webhooks/hubspot?x=1",
        "https://adapter.example.com/webhooks/other",
    ):
        assert not ok(url=other), other
    # the method is signed too
    assert not PROVIDER.verify(
        WebhookRequest(
            body=body,
            headers=Headers(headers),
            query=QueryParams(""),
            method="PUT",
            url=CONTRACT_URI,
        ),
        SECRET,
        now=SAMPLE_INSTANT,
    )
    # a 5-minute window around HubSpot's millisecond timestamp
    assert ok(now=SAMPLE_INSTANT + 299.9)
    assert not ok(now=SAMPLE_INSTANT + 301)
    assert not ok(now=SAMPLE_INSTANT - 301)
    stale = sign_v3(body, CONTRACT_URI, now=SAMPLE_INSTANT - 301)
    assert not ok(headers=stale)
    assert ok(headers=sign_v3(body, CONTRACT_URI, now=SAMPLE_INSTANT - 299))
    # the timestamp is milliseconds: the same instant in seconds is far in the past
    seconds = {**headers, "X-HubSpot-Request-Timestamp": str(SAMPLE_INSTANT)}
    assert not ok(headers=seconds)


@pytest.mark.parametrize(
    "broken",
    [
        {"X-HubSpot-Signature-v3": None},
        {"X-HubSpot-Request-Timestamp": None},
        {"X-HubSpot-Request-Timestamp": "soon"},
        {"X-HubSpot-Request-Timestamp": "1795514400000²"},  # "²".isdigit(), not a digit
        {"X-HubSpot-Signature-v3": "not base64!"},
        {"X-HubSpot-Signature-v3": CONTRACT_VECTOR.lower()},
        {"X-HubSpot-Signature-v3": "sha256=" + CONTRACT_VECTOR},
    ],
)
def test_missing_or_malformed_v3_headers_are_refused(broken: dict[str, str | None]) -> None:
    body, headers = load_sample("hubspot", "contact.creation")
    changed = {k: v for k, v in {**headers, **broken}.items() if v is not None}
    assert not PROVIDER.verify(request(body, changed), SECRET, now=SAMPLE_INSTANT)


def test_v1_and_v2_signatures_are_refused_even_when_right() -> None:
    # HubSpot's own v1 test vector (widgets.md §8): right, but it signs no timestamp.
    body = (
        b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
        b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,'
        b'"changeSource":"CRM","changeFlag":"NEW","appId":54321}]'
    )
    v1 = sign_v1(body)
    assert v1["X-HubSpot-Signature"] == (
        "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
    )
    assert not PROVIDER.verify(request(body, v1), SECRET, now=time.time())
    official_v2 = hashlib.sha256(f"{SECRET}GEThttps://www.example.com/webhook_uri".encode())
    assert official_v2.hexdigest() == (
        "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"
    )
    v2_hash = hashlib.sha256((SECRET + "POST" + CONTRACT_URI).encode() + body).hexdigest()
    v2 = {"X-HubSpot-Signature-Version": "v2", "X-HubSpot-Signature": v2_hash}
    assert not PROVIDER.verify(request(body, v2), SECRET, now=time.time())
    # the sample carries a right v1 signature beside its v3 one: without v3, refused
    sample, headers = load_sample("hubspot", "contact.creation")
    assert headers["X-HubSpot-Signature"] == sign_v1(sample)["X-HubSpot-Signature"]
    v1_only = {k: v for k, v in headers.items() if k != "X-HubSpot-Signature-v3"}
    assert not PROVIDER.verify(request(sample, v1_only), SECRET, now=SAMPLE_INSTANT)


def test_the_public_url_setting_or_the_proxy_headers_give_the_uri_hubspot_called() -> None:
    body, headers = load_sample("hubspot", "contact.creation")
    internal = "http://10.1.2.3:5000/webhooks/hubspot"  # what a process behind a router sees

    def ok(extra: Mapping[str, str] = {}, settings: Mapping[str, str] | None = None) -> bool:
        hook = request(body, {**headers, **extra}, url=internal, settings=settings)
        return PROVIDER.verify(hook, SECRET, now=SAMPLE_INSTANT)

    assert not ok()
    assert ok(settings={"HUBSPOT_WEBHOOK_URL": CONTRACT_URI})
    assert ok(settings={"HUBSPOT_WEBHOOK_URL": f"  {CONTRACT_URI}\n"})
    assert not ok(settings={"HUBSPOT_WEBHOOK_URL": CONTRACT_URI + "/"})
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "adapter.example.com"}
    assert ok(forwarded)
    assert ok({"X-Forwarded-Proto": "https, http", "Host": "adapter.example.com"})
    assert not ok({"Host": "adapter.example.com"})  # http: the scheme is signed too
    # When set, the setting is what counts, whatever the headers say.
    spoofed = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "adapter.example.com"}
    assert not ok(spoofed, settings={"HUBSPOT_WEBHOOK_URL": "https://elsewhere.example.org/h"})


# =============================================================================================
# parse_all: one event per array element, each contact's details combined within the request


def parsed(payload: Any) -> list[Any]:
    return list(PROVIDER.parse_all(request(encode(payload), {})))


def test_the_sample_is_a_creation_ignored_and_an_email_for_the_contact() -> None:
    body, headers = load_sample("hubspot", "contact.creation")
    created, email = PROVIDER.parse_all(request(body, headers))
    assert created.ignored and "contact.propertyChange" in created.ignored
    assert created.event_id == "62515:2345:4101"
    assert email.ignored is None
    assert email.event_id == "62515:2346:4102"
    assert email.person_key == PERSON
    assert dict(email.fields) == {"name": None, "email": EMAIL, "phone": None}
    assert dict(email.custom_fields) == {
        "hubspot_contact_id": str(CONTACT),
        "hubspot_portal_id": str(PORTAL),
    }
    with pytest.raises(PayloadError, match="expected one HubSpot event, got 2"):
        PROVIDER.parse(request(body, headers))


def test_a_contacts_properties_in_one_request_are_combined_on_each_of_its_events() -> None:
    events = [
        creation(),
        change("firstname", "Kenji"),
        change("lastname", "Watanabe"),
        change("email", EMAIL),
        change("mobilephone", "+81 90-1234-5678"),
        change("phone", "+81 3-1234-5678"),
        change("company", "Example KK"),
        change("firstname", "Aiko", contact=CONTACT + 1),
        change("email", "aiko@example.com", contact=CONTACT + 1),
        change("mobilephone", "+81 90-8765-4321", contact=CONTACT + 1),
    ]
    got = parsed(events)
    assert [e.event_id for e in got] == [key(e) for e in events]  # one per element, in order
    assert [bool(e.ignored) for e in got] == [True] + [False] * 5 + [True] + [False] * 3
    kenji = {"name": "Kenji Watanabe", "email": EMAIL, "phone": "+81 3-1234-5678"}
    aiko = {"name": "Aiko", "email": "aiko@example.com", "phone": "+81 90-8765-4321"}
    assert [dict(e.fields) for e in got[1:6]] == [kenji] * 5
    assert [dict(e.fields) for e in got[7:]] == [aiko] * 3
    assert {e.person_key for e in got[1:6]} == {PERSON}
    assert {e.person_key for e in got[7:]} == {f"{PORTAL}:{CONTACT + 1}"}
    assert "company" in got[6].ignored


def test_the_latest_change_of_a_property_wins_whatever_the_order_in_the_array() -> None:
    events = [
        change("email", "new@example.com", occurred=1795514399000),
        change("email", "old@example.com", occurred=1795514398000),
        change("lastname", "Watanabe"),
        change("phone", ""),  # cleared: nothing to take
    ]
    first, second, name, cleared = parsed(events)
    assert first.fields == second.fields == name.fields
    assert dict(first.fields) == {"name": "Watanabe", "email": "new@example.com", "phone": None}
    assert cleared.ignored == "contact.propertyChange of phone carries an empty value"
    (odd,) = parsed([change("email", EMAIL, occurred=10**400)])  # no float holds it: unordered
    assert dict(odd.fields)["email"] == EMAIL


def test_other_subscriptions_are_ignored_even_without_an_object_id() -> None:
    association = {
        "eventId": 7,
        "subscriptionId": 9,
        "portalId": PORTAL,
        "subscriptionType": "contact.associationChange",
        "fromObjectId": CONTACT,
        "toObjectId": 1,
    }
    (event,) = parsed([association])
    assert event.ignored == "contact.associationChange carries no contact details"
    assert event.event_id == f"{PORTAL}:9:7"
    assert parsed([]) == []


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ({"eventId": 1}, "expected a JSON array of HubSpot webhook events; got a JSON object"),
        ([change("email", EMAIL), "email"], "element 1 is a JSON string"),
        ([None], "element 0 is a JSON null"),
        (
            [{k: v for k, v in change("email", EMAIL).items() if k != "objectId"}],
            "element 0 (contact.propertyChange) needs objectId, the HubSpot contact id: "
            "it is missing",
        ),
        ([{**creation(), "objectId": {"id": 1}}], "needs objectId, the HubSpot contact id"),
        ([{**creation(), "eventId": None}], "needs eventId"),
        ([{**creation(), "portalId": True}], "needs portalId"),
        ([{"objectId": 1}], "element 0 needs subscriptionType"),
        (
            [{k: v for k, v in change("email", EMAIL).items() if k != "propertyName"}],
            "needs propertyName",
        ),
    ],
)
def test_wrong_shapes_say_what_was_expected(payload: Any, needle: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parsed(payload)
    assert needle in str(caught.value)


# =============================================================================================
# End to end: the real service, the Rocket.Chat stand-in


class Posted:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        try:
            body = response.json()
        except ValueError:
            body = {}
        self.body: dict[str, Any] = body if isinstance(body, dict) else {}

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def events(self) -> list[dict[str, Any]]:
        """Each event's answer (a request of one event is answered with its own)."""
        return list(self.body["events"]) if "events" in self.body else [self.body]


def post(
    service: Service,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    uri: str | None = None,
) -> Posted:
    """POST to /webhooks/hubspot; by default signed now for the URL the server really has."""
    if headers is None:
        headers = sign_v3(body, uri or f"{service.url}/webhooks/hubspot")
    return Posted(service.client.post("/webhooks/hubspot", content=body, headers=dict(headers)))


def ignored_rows(service: Service) -> int:
    """``ignored`` rows: only events without contact details, and only when asked to keep them."""
    path = service.settings.database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as db:
        query = "SELECT count(*) FROM deliveries WHERE status = 'ignored'"
        return int(db.execute(query).fetchone()[0])


def counts(service: Service) -> dict[str, int]:
    """The operator's per-status counts (what /admin and /metrics count from)."""
    response = service.client.get("/deliveries", headers=ADMIN)
    assert response.status_code == 200, response.text
    return dict(response.json()["counts"])


def registrations(standin: RocketChatStandIn) -> int:
    return sum(standin.contact_posts_per_token().values())


def same_answer(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """The one answer every event of a person's group got (their details went in together)."""
    assert answers and all(a == answers[0] for a in answers), answers
    return answers[0]


def only_visitor(standin: RocketChatStandIn) -> dict[str, Any]:
    assert len(standin.visitors) == 1, list(standin.visitors.values())
    return next(iter(standin.visitors.values()))


def details(doc: Mapping[str, Any]) -> tuple[str, list[str], list[str]]:
    return (
        doc["name"],
        [e["address"] for e in doc.get("visitorEmails") or []],
        [p["phoneNumber"] for p in doc.get("phone") or []],
    )


KENJI = ("Kenji Watanabe", [EMAIL], ["+81312345678"])


@pytest.fixture
def hubspot(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> Callable[..., Service]:
    """Starts the service with HUBSPOT_WEBHOOK_SECRET set (plus other channel settings)."""
    standin.add_custom_field("hubspot_contact_id")
    standin.add_custom_field("hubspot_portal_id")

    def start(**channel_settings: str) -> Service:
        configured = {SETTING: SECRET, "HUBSPOT_WEBHOOK_URL": "", **channel_settings}
        return start_service(make_settings(channel_settings=configured))

    return start


def test_one_batch_with_every_detail_registers_one_contact_once(
    hubspot: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    service = hubspot()  # required: name, email and phone (CONTACT_REQUIRED_FIELDS default)
    events = [
        creation(),
        change("firstname", "Kenji"),
        change("lastname", "Watanabe"),
        change("email", EMAIL),
        change("phone", "+81 3-1234-5678"),
    ]
    body = encode(events)
    answer = post(service, body)
    assert answer.status == 200, answer.response.text
    created, *kenji = answer.events
    assert created == {"ok": True, "ignored": created["ignored"]}  # only logged
    # the four events' details went into one delivery, and each of them is answered with it
    first = same_answer(kenji)
    delivery_id = first["delivery_id"]
    assert first == {"ok": True, "delivery_id": delivery_id, "status": "pending"}
    record = service.settled(delivery_id)
    assert record["status"] == "delivered" and record["attempts"] == 1
    doc = only_visitor(standin)
    assert details(doc) == KENJI
    assert doc["livechatData"] == {"hubspot_contact_id": str(CONTACT), "hubspot_portal_id": "62515"}
    assert registrations(standin) == 1  # one registration for the four events
    # one row: no 'ignored' row for the combined events (WEBHOOK_RECORD_IGNORED is false)
    assert service.stored_rows() == 1 and ignored_rows(service) == 0
    assert counts(service) == {"delivered": 1}

    # HubSpot retries the batch (re-signed), and each event on its own: all duplicates.
    again = post(service, body)
    assert again.status == 200
    assert again.events[0] == created  # ignored again (nothing stored for it)
    duplicate = same_answer(again.events[1:])
    assert duplicate["duplicate"] is True and duplicate["delivery_id"] == delivery_id
    assert duplicate["status"] == "delivered"
    for event in events[1:]:
        alone = post(service, encode([event]))
        assert alone.status == 200
        assert "events" not in alone.body  # one event: its own answer, as for every provider
        assert alone.body["duplicate"] is True
        assert alone.body["delivery_id"] == delivery_id
    # Any two of them in another batch: a duplicate too.
    pair = post(service, encode([events[4], events[2]]))
    assert same_answer(pair.events)["duplicate"] is True
    assert service.stored_rows() == 1
    assert registrations(standin) == 1
    assert service.settled(delivery_id)["status"] == "delivered"


def test_details_over_several_requests_complete_one_row_and_one_contact(
    hubspot: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    service = hubspot()  # required: name, email and phone
    sample, _ = load_sample("hubspot", "contact.creation")
    first = post(service, sample)  # the contract's sample: creation + email
    assert first.status == 200, first.response.text
    created, email = first.events
    assert "ignored" in created and "delivery_id" not in created
    assert email["status"] == "rejected"
    assert email["errors"] == {"name": "is required", "phone": "is required"}
    row = email["delivery_id"]

    names = post(service, encode([change("firstname", "Kenji"), change("lastname", "Watanabe")]))
    both = same_answer(names.events)
    assert both["delivery_id"] == row  # the same row, kept up to date
    assert both["status"] == "rejected" and both["errors"] == {"phone": "is required"}
    assert registrations(standin) == 0
    assert service.stored_rows() == 1

    phone_change = change("phone", "+81 3-1234-5678")
    phone = post(service, encode([phone_change]))
    assert phone.body["delivery_id"] == row and phone.body["status"] == "pending"
    record = service.settled(row)
    assert record["status"] == "delivered" and record["errors"] == {}
    assert details(only_visitor(standin)) == KENJI
    assert service.stored_rows() == 1  # the rejected row became the person's delivery

    # Every request again: duplicates, nothing registered twice.
    for body in (sample, encode([phone_change])):
        again = post(service, body)
        assert all(a.get("duplicate") for a in again.events if "ignored" not in a)
    assert registrations(standin) == 1
    assert service.stored_rows() == 1


def test_a_retried_event_beside_new_ones_does_not_hide_them(
    hubspot: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    service = hubspot(HUBSPOT_REQUIRED_FIELDS="name,email")
    email = change("email", EMAIL)
    rejected = post(service, encode([email]))
    assert rejected.body["errors"] == {"name": "is required"}
    # HubSpot sends the email event again in a batch with the name: the email was seen, the
    # name is new, so the batch is not a duplicate and the name is not lost.
    batch = [email, change("firstname", "Kenji"), change("lastname", "Watanabe")]
    answer = post(service, encode(batch))
    accepted = same_answer(answer.events)
    assert accepted["delivery_id"] == rejected.body["delivery_id"]  # completed in place
    assert accepted["status"] == "pending" and "duplicate" not in accepted
    assert service.settled(accepted["delivery_id"])["status"] == "delivered"
    assert details(only_visitor(standin)) == ("Kenji Watanabe", [EMAIL], [])
    assert registrations(standin) == 1
    # Now every one of them was seen: the batch again, or a name event alone, is a duplicate.
    again = same_answer(post(service, encode(batch)).events)
    assert again["duplicate"] is True and again["delivery_id"] == accepted["delivery_id"]
    alone = post(service, encode([batch[2]]))
    assert alone.body["duplicate"] is True
    assert alone.body["delivery_id"] == accepted["delivery_id"]
    assert registrations(standin) == 1
    assert service.stored_rows() == 1 and ignored_rows(service) == 0


def test_with_name_and_email_required_the_contact_grows_as_details_arrive(
    hubspot: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    service = hubspot(HUBSPOT_REQUIRED_FIELDS="name,email")
    sample, _ = load_sample("hubspot", "contact.creation")
    email = post(service, sample).events[1]
    assert email["errors"] == {"name": "is required"}  # the phone is no longer required
    names = post(service, encode([change("lastname", "Watanabe"), change("firstname", "Kenji")]))
    assert service.settled(names.events[0]["delivery_id"])["status"] == "delivered"
    assert names.events[0]["delivery_id"] == email["delivery_id"]
    assert details(only_visitor(standin)) == ("Kenji Watanabe", [EMAIL], [])
    phone = post(service, encode([change("mobilephone", "+81 90-1234-5678")]))
    assert service.settled(phone.body["delivery_id"])["status"] == "delivered"
    assert details(only_visitor(standin)) == ("Kenji Watanabe", [EMAIL], ["+819012345678"])
    assert registrations(standin) == 2  # each registration carried everything known


def test_several_contacts_in_one_batch_are_kept_apart(
    hubspot: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    service = hubspot(HUBSPOT_REQUIRED_FIELDS="name,email")
    events = [
        change("firstname", "Kenji"),
        change("firstname", "Aiko", contact=CONTACT + 1),
        change("email", EMAIL),
        change("email", "aiko.tanaka@example.com", contact=CONTACT + 1),
    ]
    answer = post(service, encode(events))
    kenji = same_answer(answer.events[0::2])["delivery_id"]
    aiko = same_answer(answer.events[1::2])["delivery_id"]
    assert kenji != aiko
    for delivery_id in (kenji, aiko):
        assert service.settled(delivery_id)["status"] == "delivered"
    assert sorted(details(v) for v in standin.visitors.values()) == [
        ("Aiko", ["aiko.tanaka@example.com"], []),
        ("Kenji", [EMAIL], []),
    ]
    assert service.stored_rows() == 2 and ignored_rows(service) == 0
    assert registrations(standin) == 2


def test_ignored_events_of_a_batch_are_kept_one_by_one_when_asked(
    hubspot: Callable[..., Service],
) -> None:
    service = hubspot(WEBHOOK_RECORD_IGNORED="true", HUBSPOT_REQUIRED_FIELDS="name,email")
    body = encode(
        [
            creation(),
            change("firstname", "Kenji"),
            change("company", "Example KK"),
            change("email", EMAIL),
        ]
    )
    first = post(service, body)
    created, name, company, email = first.events
    assert [a["status"] for a in (created, company)] == ["ignored", "ignored"]
    assert created["delivery_id"] != company["delivery_id"]
    # Only the events without contact details are kept as 'ignored'; the person's two are one.
    assert same_answer([name, email])["status"] == "pending"
    assert ignored_rows(service) == 2 and service.stored_rows() == 3
    assert all(a["duplicate"] for a in post(service, body).events)
    assert service.stored_rows() == 3


def test_refused_requests_store_nothing(
    hubspot: Callable[..., Service],
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    service = hubspot()
    own = f"{service.url}/webhooks/hubspot"
    body = encode(
        [change("firstname", "Kenji"), change("email", EMAIL), change("phone", "+81 3-1234-5678")]
    )
    empty = post(service, encode([]), sign_v3(encode([]), own))  # the recipe works
    assert (empty.status, empty.body) == (200, {"ok": True, "events": []})
    refused = {
        "a changed byte": post(service, tamper(body), sign_v3(body, own)),
        "another URI": post(service, body, uri=CONTRACT_URI),
        "301 s old": post(service, body, sign_v3(body, own, now=time.time() - 301)),
        "the wrong secret": post(service, body, sign_v3(body, own, secret=SECRET[:-1] + "z")),
        "v1 only": post(service, body, sign_v1(body)),
        "the sample's instant": post(service, *load_sample("hubspot", "contact.creation")),
    }
    for why, answer in refused.items():
        assert answer.status == 401, why
        assert SETTING in answer.body["error"], why
        assert "only X-HubSpot-Signature-v3 is accepted" in answer.body["error"], why
        assert "HUBSPOT_WEBHOOK_URL" in answer.body["error"], why
    assert service.stored_rows() == 0

    off = start_service(make_settings(channel_settings={SETTING: ""}))
    unset = post(off, body)
    assert unset.status == 503
    assert SETTING in unset.body["error"]
    assert off.stored_rows() == 0
    assert standin.contact_posts_per_token() == {}


def test_the_public_url_setting_verifies_what_hubspot_signed_behind_a_proxy(
    hubspot: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    events = [change("firstname", "Kenji"), change("lastname", "Watanabe"), change("email", EMAIL)]
    body = encode(events)
    service = hubspot(HUBSPOT_WEBHOOK_URL=CONTRACT_URI, HUBSPOT_REQUIRED_FIELDS="name,email")
    assert service.url.startswith("http://127.0.0.1:")  # not the URL HubSpot was given
    assert post(service, body).status == 401  # signed for the URL this process sees
    answer = post(service, body, uri=CONTRACT_URI)
    assert answer.status == 200, answer.response.text
    assert service.settled(answer.events[0]["delivery_id"])["status"] == "delivered"
    assert only_visitor(standin)["name"] == "Kenji Watanabe"

    # Without the setting, the proxy's X-Forwarded-Proto / X-Forwarded-Host give the URI.
    other = hubspot(HUBSPOT_REQUIRED_FIELDS="name,email")
    headers = {
        **sign_v3(body, CONTRACT_URI),
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "adapter.example.com",
    }
    assert post(other, body, headers).status == 200
    assert post(other, body, uri=CONTRACT_URI).status == 401  # no proxy headers: not that URL


def test_wrong_shapes_are_400_saying_what_was_expected_and_store_nothing(
    hubspot: Callable[..., Service],
) -> None:
    service = hubspot()
    missing_object = {k: v for k, v in change("email", EMAIL).items() if k != "objectId"}
    cases = {
        encode(
            {"eventId": 1}
        ): "expected a JSON array of HubSpot webhook events; got a JSON object",
        encode([change("email", EMAIL), 42]): "element 1 is a JSON number",
        encode([change("phone", "+81 3-1234-5678"), missing_object]): "needs objectId",
        b"[{not json": "the body is not valid JSON",
        b"[" * 200_000: "not valid JSON (nested too deeply)",
    }
    for body, needle in cases.items():
        answer = post(service, body)
        assert answer.status == 400, (needle, answer.response.text)
        assert answer.body["error"].startswith("not a HubSpot event we understand: ")
        assert needle in answer.body["error"]
    assert service.stored_rows() == 0  # a batch with one bad element is refused whole


def test_a_batch_of_foreign_events_logs_one_line_not_one_per_event(
    hubspot: Callable[..., Service],
) -> None:
    """Issue 12, item 8: a signed batch of 5,000 foreign events wrote 5,000 log lines."""
    import structlog.testing

    service = hubspot()
    foreign = [
        {
            "eventId": n,
            "subscriptionId": 9,
            "portalId": PORTAL,
            "subscriptionType": "contact.associationChange",
            "fromObjectId": CONTACT,
            "toObjectId": n,
        }
        for n in range(1, 501)
    ]
    with structlog.testing.capture_logs() as logs:
        posted = post(service, encode(foreign))
    assert posted.status == 200
    webhook_lines = [line for line in logs if str(line["event"]).startswith("webhook_")]
    assert [line["event"] for line in webhook_lines] == ["webhook_batch"]
    assert webhook_lines[0]["events"] == 500 and webhook_lines[0]["ignored"] == 500
