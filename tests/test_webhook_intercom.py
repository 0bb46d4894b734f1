"""Intercom webhook notifications (widgets.md §7): ``POST /webhooks/intercom``.

Pure tests of ``verify`` on the contract's untouched sample bytes and of ``parse``; then
end to end through the real service under uvicorn and the Rocket.Chat stand-in: the
sample registered once however often Intercom sends it, refused requests storing
nothing, a lead completed by ``contact.email.updated`` staying one contact, and the
service answering 503 while ``INTERCOM_WEBHOOK_SECRET`` is unset.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import pytest
from starlette.datastructures import Headers, QueryParams

from adapter.channels.webhooks import PayloadError, WebhookEvent, WebhookRequest
from handlers.intercom import IntercomProvider, intercom_signature
from tests.conftest import Service
from tests.rocketchat_standin import RocketChatStandIn
from tests.webhook_samples import load_sample, tamper

SECRET = "ic-test-client-secret-5a7b"  # widgets.md §0: what the sample was signed with
SETTING = "INTERCOM_WEBHOOK_SECRET"
VECTOR = "sha1=076ee6a2717747ffb184e25673511a65f36102c1"  # widgets.md §7 [ran]
SAMPLE = "contact.lead.created"
CONTACT_ID = "6742f3a1c9e77b0012ab9f01"
NOTIFICATION_ID = "notif_4e3504a3-ba3f-46dc-ab48-8e4d5bdfdf4e"
EXTRAS = ("intercom_contact_id", "intercom_role", "intercom_external_id", "city", "country")

PROVIDER = IntercomProvider()


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    """Headers as Intercom sends them, signed with our own reading of the recipe."""
    digest = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    return {"Content-Type": "application/json", "X-Hub-Signature": f"sha1={digest}"}


def encode(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def sample() -> dict[str, Any]:
    body, _ = load_sample("intercom", SAMPLE)
    payload: dict[str, Any] = json.loads(body)
    return payload


def notification(topic: str, notif: str, **item: Any) -> dict[str, Any]:
    """The sample notification under another topic and id, its contact changed by ``item``."""
    payload = copy.deepcopy(sample())
    payload.update(topic=topic, id=notif)
    payload["data"]["item"].update(item)
    return payload


def hook(body: bytes, headers: Mapping[str, str], **settings: str) -> WebhookRequest:
    return WebhookRequest(
        body=body, headers=Headers(headers), query=QueryParams(""), lookup=settings.get
    )


def parse(payload: Any, **settings: str) -> WebhookEvent:
    body = payload if isinstance(payload, bytes) else encode(payload)
    return PROVIDER.parse(hook(body, {}, **settings))


# =============================================================================================
# verify


def test_the_contract_sample_verifies_and_our_recipe_gives_the_contract_vector() -> None:
    body, headers = load_sample("intercom", SAMPLE)
    assert headers["X-Hub-Signature"] == VECTOR
    assert signed(body)["X-Hub-Signature"] == VECTOR  # independent of the handler
    assert intercom_signature(SECRET, body) == VECTOR
    assert PROVIDER.verify(hook(body, headers), SECRET, now=0)
    lower = {k.lower(): v for k, v in headers.items()}  # header names are case-insensitive
    assert PROVIDER.verify(hook(body, lower), SECRET, now=0)


def test_changed_bytes_wrong_secrets_and_bad_headers_are_refused() -> None:
    body, headers = load_sample("intercom", SAMPLE)
    digest = VECTOR.removeprefix("sha1=")
    sha256 = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert not PROVIDER.verify(hook(tamper(body), headers), SECRET, now=0)
    assert not PROVIDER.verify(hook(tamper(body, 0), headers), SECRET, now=0)
    pretty = json.dumps(json.loads(body), indent=2).encode()  # same content, other bytes
    assert not PROVIDER.verify(hook(pretty, headers), SECRET, now=0)
    for secret in (SECRET + "x", SECRET[:-1], SECRET.upper(), "hub-secret"):
        assert not PROVIDER.verify(hook(body, headers), secret, now=0), secret
    for value in (
        "",
        digest,  # no sha1= prefix
        "sha256=" + sha256,  # another digest
        "sha1=" + digest[:-1],
        "sha1=" + digest + "0",
        "sha1=" + "z" * 40,
        "sha1=" + tamper(digest.encode()).decode(),
        "sha1 " + digest,
    ):
        bad = {**headers, "X-Hub-Signature": value}
        assert not PROVIDER.verify(hook(body, bad), SECRET, now=0), value
    missing = {k: v for k, v in headers.items() if k != "X-Hub-Signature"}
    assert not PROVIDER.verify(hook(body, missing), SECRET, now=0)


# =============================================================================================
# parse


def test_the_sample_maps_to_the_contract_fields() -> None:
    body, headers = load_sample("intercom", SAMPLE)
    event = PROVIDER.parse(hook(body, headers))
    assert event.ignored is None
    assert dict(event.fields) == {
        "name": "Fatima Al-Sayed",
        "email": "fatima.alsayed@example.com",
        "phone": "+971501234567",
    }
    assert event.event_id == NOTIFICATION_ID
    assert event.person_key == CONTACT_ID
    assert event.event_type == "contact.lead.created"
    assert dict(event.custom_fields) == {
        "intercom_contact_id": CONTACT_ID,
        "intercom_role": "lead",
        "city": "Dubai",
        "country": "United Arab Emirates",
    }


def test_a_user_with_an_external_id_keeps_it() -> None:
    event = parse(notification("contact.user.created", "notif_u1", role="user", external_id=42))
    assert event.custom_fields["intercom_role"] == "user"
    assert event.custom_fields["intercom_external_id"] == "42"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (
            {
                "type": "notification_event",
                "id": "notif_c1",
                "topic": "conversation.user.created",
                "data": {"item": {"type": "conversation", "contacts": {"contacts": []}}},
            },
            "conversation.user.created carries no contact details",
        ),
        (
            {
                "type": "notification_event",
                "id": None,
                "topic": "ping",
                "data": {"item": {"type": "ping", "message": "something"}},
            },
            "ping carries no contact details",
        ),
        (
            {"type": "notification_event", "topic": "company.created", "data": {"item": {}}},
            "company.created carries no contact details",
        ),
        (
            {"type": "notification_event", "topic": "contact.deleted", "data": {"item": {}}},
            "contact.deleted: the contact left Intercom",
        ),
        (
            {
                "type": "notification_event",
                "topic": "contact.user.tag.created",
                "data": {"item": {"type": "contact_tag", "tag": {}, "contact": {}}},
            },
            "contact.user.tag.created carries a contact_tag, not a contact",
        ),
    ],
)
def test_topics_without_contact_details_are_ignored(payload: dict[str, Any], reason: str) -> None:
    assert parse(payload).ignored == reason


def test_an_anonymous_lead_is_ignored_until_it_has_an_email_or_phone() -> None:
    anonymous = notification("contact.lead.created", "notif_a1", email=None, phone=None)
    assert parse(anonymous).ignored == "the contact has no email or phone yet"
    named_only = notification("contact.lead.created", "notif_a2", email="  ", phone="")
    assert parse(named_only).ignored == "the contact has no email or phone yet"


def test_custom_attributes_named_by_setting_win_over_the_contact_fields() -> None:
    payload = notification(
        "contact.user.created",
        "notif_m1",
        phone=None,
        custom_attributes={"mobile": "+44 20 7946 0958", "plan": "pro"},
    )
    assert parse(payload).fields["phone"] is None
    mapped = parse(payload, INTERCOM_FIELD_PHONE="whatsapp, mobile")
    assert mapped.fields["phone"] == "+44 20 7946 0958"
    assert mapped.fields["email"] == "fatima.alsayed@example.com"


def test_without_a_notification_id_retries_still_share_an_event_id() -> None:
    first = notification("contact.email.updated", "x", delivery_attempts=1)
    del first["id"]
    retry = {**first, "delivery_attempts": 2}
    event = parse(first)
    assert event.event_id == f"{CONTACT_ID}:contact.email.updated:1795514400"
    assert parse(retry).event_id == event.event_id


EXPECTED = "expected an Intercom notification"


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"{not json", f"{EXPECTED}.*the body is not valid JSON"),
        (b"\xff\xfe{}", f"{EXPECTED}.*not UTF-8"),
        ([1, 2], f"{EXPECTED}.*got a JSON array"),
        ({"topic": "contact.lead.created"}, f"{EXPECTED}.*type is missing"),
        ({"type": "contact", "id": "1"}, f"{EXPECTED}.*type is 'contact'"),
        ({"type": "notification_event"}, f"{EXPECTED}.*topic is missing"),
        ({"type": "notification_event", "topic": 7}, f"{EXPECTED}.*topic is not a string"),
        ({"type": "notification_event", "topic": " "}, f"{EXPECTED}.*topic is empty"),
        (
            {"type": "notification_event", "topic": "contact.lead.created"},
            "expected the notification.data to be an object, got missing",
        ),
        (
            {"type": "notification_event", "topic": "contact.lead.created", "data": {"item": []}},
            "expected data.item to be an object, got a JSON array",
        ),
    ],
)
def test_wrong_shapes_say_what_was_expected(payload: Any, needle: str) -> None:
    with pytest.raises(PayloadError, match=needle):
        parse(payload)


# =============================================================================================
# end to end: the real service under uvicorn, the Rocket.Chat stand-in


def post(service: Service, body: bytes, headers: Mapping[str, str] | None = None) -> httpx.Response:
    sent = signed(body) if headers is None else dict(headers)
    return service.client.post("/webhooks/intercom", content=body, headers=sent)


def phones(doc: Mapping[str, Any]) -> list[str]:
    return [p["phoneNumber"] for p in doc.get("phone") or []]


def emails(doc: Mapping[str, Any]) -> list[str]:
    return [e["address"] for e in doc.get("visitorEmails") or []]


@pytest.fixture
def intercom_service(
    make_settings: Callable[..., Any],
    start_service: Callable[[Any], Service],
    standin: RocketChatStandIn,
) -> Callable[..., Service]:
    """Starts the service with ``INTERCOM_WEBHOOK_SECRET`` set (plus overrides)."""
    for cf in EXTRAS:
        standin.add_custom_field(cf)

    def start(**channel_settings: str) -> Service:
        configured = {SETTING: SECRET} | channel_settings
        return start_service(make_settings(channel_settings=configured))

    return start


def test_the_sample_is_registered_once_however_often_intercom_sends_it(
    intercom_service: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    service = intercom_service()
    body, headers = load_sample("intercom", SAMPLE)  # signed once, no timestamp: as it is
    first, *again = [post(service, body, headers) for _ in range(3)]
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["ok"] is True and "duplicate" not in answer
    for replay in again:
        assert replay.status_code == 200
        assert replay.json()["duplicate"] is True
        assert replay.json()["delivery_id"] == answer["delivery_id"]
    # Intercom's own retry: same notification id, the attempt counted up (other bytes).
    retry = encode({**json.loads(body), "delivery_attempts": 2})
    retried = post(service, retry)
    assert retried.status_code == 200 and retried.json()["duplicate"] is True

    record = service.settled(answer["delivery_id"])
    assert record["status"] == "delivered", record
    assert record["source"] == "webhook:intercom"
    assert len(standin.visitors) == 1
    doc = next(iter(standin.visitors.values()))
    assert doc["name"] == "Fatima Al-Sayed"
    assert emails(doc) == ["fatima.alsayed@example.com"]
    assert phones(doc) == ["+971501234567"]
    assert {"intercom_contact_id": CONTACT_ID, "intercom_role": "lead"}.items() <= (
        doc.get("livechatData") or {}
    ).items()
    assert sum(standin.contact_posts_per_token().values()) == 1
    assert service.stored_rows() == 1


def test_refused_and_ignored_requests_register_nothing(
    intercom_service: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    service = intercom_service()
    body, headers = load_sample("intercom", SAMPLE)
    no_header = {k: v for k, v in headers.items() if k != "X-Hub-Signature"}
    for label, sent_body, sent in [
        ("one byte changed", tamper(body), headers),
        ("wrong secret", body, signed(body, "not-the-client-secret")),
        ("missing header", body, no_header),
        ("no sha1= prefix", body, {**headers, "X-Hub-Signature": VECTOR[5:]}),
        ("malformed", body, {**headers, "X-Hub-Signature": "sha1=not-hex"}),
    ]:
        answer = post(service, sent_body, sent)
        assert answer.status_code == 401, (label, answer.text)
        assert SETTING in answer.json()["error"], label

    too_big = post(service, b"{" + b" " * 300_000 + b"}")
    assert too_big.status_code == 413
    for payload, needle in [
        (b"{not json", "the body is not valid JSON"),
        (encode({"type": "contact", "topic": "contact.lead.created"}), "type is 'contact'"),
        (encode({"type": "notification_event", "id": "n"}), "topic is missing"),
        (
            encode({"type": "notification_event", "topic": "contact.lead.created", "data": []}),
            "expected the notification.data to be an object, got a JSON array",
        ),
    ]:
        answer = post(service, payload)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert needle in error, error
        assert '"type": "notification_event"' in error  # the shape that was expected

    conversation = {
        "type": "notification_event",
        "id": "notif_conv_1",
        "topic": "conversation.user.created",
        "data": {"type": "notification_event_data", "item": {"type": "conversation"}},
    }
    ignored = post(service, encode(conversation))
    assert ignored.status_code == 200
    assert ignored.json() == {
        "ok": True,
        "ignored": "conversation.user.created carries no contact details",
    }
    anonymous = notification("contact.lead.created", "notif_anon", email=None, phone=None)
    assert post(service, encode(anonymous)).json()["ignored"]

    assert service.stored_rows() == 0
    assert standin.contact_posts_per_token() == {}
    assert standin.visitors == {}


def test_a_lead_completed_by_contact_email_updated_is_one_contact(
    intercom_service: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    service = intercom_service()  # CONTACT_REQUIRED_FIELDS defaults to name,email,phone
    lead = notification("contact.lead.created", "notif_l1", email=None)
    created = post(service, encode(lead))
    assert created.status_code == 200, created.text
    assert created.json()["status"] == "rejected"
    assert created.json()["errors"] == {"email": "is required"}

    updated = notification("contact.email.updated", "notif_l2", updated_at=1795514460)
    answer = post(service, encode(updated))
    assert answer.status_code == 200, answer.text
    record = service.settled(answer.json()["delivery_id"])
    assert record["status"] == "delivered", record
    # The rejection while the email was missing became the person's delivery.
    assert record["id"] == created.json()["delivery_id"]
    assert len(standin.visitors) == 1
    doc = standin.visitors[record["contact_id"]]
    assert doc["name"] == "Fatima Al-Sayed"
    assert (emails(doc), phones(doc)) == (["fatima.alsayed@example.com"], ["+971501234567"])

    # She corrects her email in Intercom: still the same contact (the Intercom contact id),
    # not a second one for the new address.
    corrected = notification(
        "contact.email.updated",
        "notif_l3",
        email="fatima.al-sayed@example.org",
        updated_at=1795514520,
    )
    again = service.settled(post(service, encode(corrected)).json()["delivery_id"])
    assert again["status"] == "delivered", again
    assert again["contact_id"] == record["contact_id"]
    assert len(standin.visitors) == 1
    doc = standin.visitors[record["contact_id"]]
    assert emails(doc) == ["fatima.al-sayed@example.org"]
    assert phones(doc) == ["+971501234567"]


def test_unset_secret_answers_503_naming_the_setting(
    intercom_service: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    service = intercom_service(INTERCOM_WEBHOOK_SECRET="")
    body, headers = load_sample("intercom", SAMPLE)
    answer = post(service, body, headers)
    assert answer.status_code == 503
    assert SETTING in answer.json()["error"]
    assert service.stored_rows() == 0
    assert standin.contact_posts_per_token() == {}
