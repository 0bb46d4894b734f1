"""Zendesk trigger webhooks (widgets.md §9): verify, map, and end to end.

Pure tests of ``verify`` on the contract's untouched sample bytes at the sample's instant
(2026-11-24T10:00:00Z) and on the contract's test vector, and of ``parse``; then through the
real service under uvicorn to the Rocket.Chat stand-in, with the sample re-signed at the
current time (the untouched sample is days old by now, and refused as stale).

The samples were signed with Zendesk's static test secret, used verbatim as the HMAC key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.datastructures import Headers, QueryParams

from adapter.channels.webhooks import PayloadError, WebhookRequest, body_digest
from adapter.settings import Settings
from handlers.zendesk import ZendeskProvider, signature_time, zendesk_signature
from tests.conftest import Service, wait_until
from tests.rocketchat_standin import RocketChatStandIn
from tests.webhook_samples import SAMPLE_INSTANT, load_sample, tamper

SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="  # Zendesk's static test secret
SETTING = "ZENDESK_WEBHOOK_SECRET"
SAMPLE = ("zendesk", "trigger_ticket_created")
SAMPLE_SIGNATURE = "9Nte+drEbn3nwEm4XUgcnVwY+4SwMXow85LWY6E5BiM="  # widgets.md §9
SIGNATURE = "X-Zendesk-Webhook-Signature"
TIMESTAMP = "X-Zendesk-Webhook-Signature-Timestamp"
KWAME = {"name": "Kwame Mensah", "email": "kwame.mensah@example.org", "phone": "+14155552671"}
PROVIDER = ZendeskProvider()


def iso(now: float) -> str:
    """An instant as Zendesk writes it: ``2021-03-25T05:09:27Z``."""
    return datetime.fromtimestamp(int(now), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def signed(
    body: bytes, *, secret: str = SECRET, now: float | None = None, stamp: str | None = None
) -> dict[str, str]:
    """Headers as Zendesk sends them (our own signer, independent of the handler's)."""
    stamp = iso(time.time() if now is None else now) if stamp is None else stamp
    mac = hmac.new(secret.encode(), stamp.encode() + body, hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        SIGNATURE: base64.b64encode(mac).decode(),
        TIMESTAMP: stamp,
    }


def request(body: bytes, headers: Mapping[str, str], **settings: str) -> WebhookRequest:
    return WebhookRequest(
        body=body, headers=Headers(dict(headers)), query=QueryParams(""), lookup=settings.get
    )


def verifies(body: bytes, headers: Mapping[str, str], *, now: float = SAMPLE_INSTANT) -> bool:
    return PROVIDER.verify(request(body, headers), SECRET, now=now)


def encode(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


# =============================================================================================
# verify


def test_sample_verifies_at_its_instant_and_our_recipe_reproduces_it() -> None:
    body, headers = load_sample(*SAMPLE)
    assert headers[SIGNATURE] == SAMPLE_SIGNATURE
    assert headers[TIMESTAMP] == "2026-11-24T10:00:00Z" == iso(SAMPLE_INSTANT)
    assert signature_time(headers[TIMESTAMP]) == SAMPLE_INSTANT
    assert zendesk_signature(SECRET, headers[TIMESTAMP], body) == SAMPLE_SIGNATURE
    assert signed(body, now=SAMPLE_INSTANT) == headers
    assert verifies(body, headers)
    assert not PROVIDER.verify(request(body, headers), SECRET + "x", now=SAMPLE_INSTANT)


def test_contract_test_vector() -> None:
    body, stamp = b'{"event":"ticket.updated","id":123}', "2021-03-25T05:09:27Z"
    expected = "S/RDdU2ERmj7LHDDoWJ2onPYH+t7/f2+LTM4dL7UiLM="
    assert zendesk_signature(SECRET, stamp, body) == expected
    assert signed(body, stamp=stamp)[SIGNATURE] == expected
    headers = {SIGNATURE: expected, TIMESTAMP: stamp}
    assert verifies(body, headers, now=datetime(2021, 3, 25, 5, 9, 27, tzinfo=UTC).timestamp())


def test_the_secret_is_the_key_as_written_not_base64_decoded() -> None:
    body, headers = load_sample(*SAMPLE)
    decoded_key = base64.b64decode(SECRET)  # b"this_secret_is_for_testing_only"
    mac = hmac.new(decoded_key, headers[TIMESTAMP].encode() + body, hashlib.sha256).digest()
    assert not verifies(body, {**headers, SIGNATURE: base64.b64encode(mac).decode()})


def test_one_changed_byte_anywhere_is_refused() -> None:
    body, headers = load_sample(*SAMPLE)
    for at in (0, len(body) // 2, len(body) - 1):
        assert not verifies(tamper(body, at), headers), at
    shifted = {**headers, TIMESTAMP: "2026-11-24T10:00:01Z"}  # the signature covers it
    assert not verifies(body, shifted)
    sig = headers[SIGNATURE]
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    assert not verifies(body, {**headers, SIGNATURE: flipped})


def test_missing_or_malformed_headers_are_refused() -> None:
    body, headers = load_sample(*SAMPLE)
    for drop in (SIGNATURE, TIMESTAMP):
        assert not verifies(body, {k: v for k, v in headers.items() if k != drop}), drop
    mac = hmac.new(SECRET.encode(), headers[TIMESTAMP].encode() + body, hashlib.sha256)
    for bad in (
        "",
        mac.hexdigest(),  # hex, not base64
        "sha256=" + headers[SIGNATURE],  # no prefix in Zendesk's scheme
        headers[SIGNATURE][:-4],  # truncated
        headers[SIGNATURE].rstrip("="),  # unpadded
        "%%%not base64%%%",
        "Zm9v",  # valid base64, wrong length
        "é" * 44,
    ):
        assert not verifies(body, {**headers, SIGNATURE: bad}), bad
    assert not verifies(body, {**headers, TIMESTAMP: ""})


@pytest.mark.parametrize(
    "stamp",
    [
        "1795514400",  # epoch seconds
        "1795514400000",  # epoch milliseconds
        "2026-11-24T10:00:00",  # no offset: which zone?
        "2026-11-24",
        "2026-11-24 10:00:00Z",
        "Tue, 24 Nov 2026 10:00:00 GMT",
        "2026-13-24T10:00:00Z",
        "garbage",
    ],
)
def test_a_timestamp_that_is_not_iso_8601_is_refused_even_when_signed(stamp: str) -> None:
    body, _ = load_sample(*SAMPLE)
    assert signature_time(stamp) is None
    assert not verifies(body, signed(body, stamp=stamp))


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-11-24T10:00:00Z",
        "2026-11-24T10:00:00+00:00",
        "2026-11-24T11:00:00+01:00",
        "2026-11-24T10:00:00.250Z",
        "2026-11-24T05:00:00-0500",
    ],
)
def test_equivalent_iso_8601_forms_are_accepted(stamp: str) -> None:
    body, _ = load_sample(*SAMPLE)
    assert signature_time(stamp) == pytest.approx(SAMPLE_INSTANT, abs=0.5)
    assert verifies(body, signed(body, stamp=stamp))


@pytest.mark.parametrize("offset", [-301, 301])
def test_timestamps_outside_the_300_s_window_are_refused(offset: int) -> None:
    body, headers = load_sample(*SAMPLE)
    assert verifies(body, headers, now=SAMPLE_INSTANT + offset * 300 / 301)  # ±300 s
    assert not verifies(body, headers, now=SAMPLE_INSTANT + offset)


# =============================================================================================
# parse


def parse(body: bytes, **settings: str) -> Any:
    return PROVIDER.parse(request(body, {}, **settings))


def test_sample_maps_to_kwame_mensah() -> None:
    body, _ = load_sample(*SAMPLE)
    event = parse(body)
    assert event.ignored is None
    assert dict(event.fields) == KWAME
    assert dict(event.custom_fields) == {"zendesk_ticket_id": "4812"}
    # The sample's template has no event name: the dedupe key is the body's digest.
    assert event.event_id == body_digest(body)
    # ... and no requester id: the person is the requester's email.
    assert event.person_key == "email:kwame.mensah@example.org"


def test_ticket_id_and_event_name_make_the_dedupe_key_and_requester_id_the_person() -> None:
    body, _ = load_sample(*SAMPLE)
    data = json.loads(body) | {"event": "ticket.created", "requester_id": 36000012345}
    event = parse(encode(data))
    assert event.event_id == "ticket:4812:ticket.created"
    assert event.person_key == "requester:36000012345"
    assert event.custom_fields["zendesk_requester_id"] == "36000012345"
    # The same ticket through the same trigger, re-rendered differently: the same key.
    again = parse(encode(data | {"subject": "Callback request (edited)"}))
    assert again.event_id == event.event_id
    # Another trigger on the same ticket: another key.
    assert parse(encode(data | {"event": "ticket.solved"})).event_id == "ticket:4812:ticket.solved"
    # Very long templated values still fit the key columns.
    long = parse(encode(data | {"event": "x" * 500, "requester_id": "y" * 500}))
    assert len(long.event_id) <= 255 and long.event_id.startswith("ticket:sha256:")
    assert len(long.person_key) <= 255 and long.person_key.startswith("requester:sha256:")


def test_the_documented_template_rendered_maps_like_the_sample() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "webhooks-zendesk.md").read_text()
    template = re.search(r"```json\n(.*?)```", doc, re.DOTALL)
    assert template is not None, "no JSON body template in docs/webhooks-zendesk.md"
    rendered = template.group(1)
    for placeholder, value in {
        "ticket.id": "4812",
        "ticket.requester.id": "36000012345",
        "ticket.requester.name": KWAME["name"],
        "ticket.requester.email": KWAME["email"],
        "ticket.requester.phone": KWAME["phone"],
    }.items():
        rendered = rendered.replace("{{" + placeholder + "}}", value)
    assert "{{" not in rendered, rendered
    event = parse(rendered.encode())
    assert dict(event.fields) == KWAME
    assert event.event_id == "ticket:4812:ticket.created"
    assert event.person_key == "requester:36000012345"


def test_mapping_settings_read_a_differently_templated_body() -> None:
    nested = {
        "ticket": {
            "id": 77,
            "requester": {"id": 5, "full": "Ama Owusu", "mail": "ama@example.com", "tel": ""},
        },
        "extra": {"mobile": "+233 24 123 4567"},
    }
    body = encode(nested)
    assert parse(body).ignored == "no email or phone in the event"  # our keys are not there
    mapped = parse(
        body,
        ZENDESK_FIELD_NAME="ticket.requester.full",
        ZENDESK_FIELD_EMAIL="ticket.requester.mail",
        ZENDESK_FIELD_PHONE="ticket.requester.tel, extra.mobile",  # empty: the next one
    )
    assert dict(mapped.fields) == {
        "name": "Ama Owusu",
        "email": "ama@example.com",
        "phone": "+233 24 123 4567",
    }
    assert mapped.person_key == "requester:5"
    assert mapped.custom_fields["zendesk_ticket_id"] == "77"
    flat = encode({"customer": "Ama", "contact_email": "ama@example.com"})
    renamed = parse(flat, ZENDESK_FIELD_NAME="customer", ZENDESK_FIELD_EMAIL="contact_email")
    assert dict(renamed.fields) == {"name": "Ama", "email": "ama@example.com", "phone": None}
    # A setting whose keys are absent falls back to our template's keys.
    sample, _ = load_sample(*SAMPLE)
    assert dict(parse(sample, ZENDESK_FIELD_EMAIL="nope").fields) == KWAME


@pytest.mark.parametrize(
    "payload",
    [
        {"ticket_id": "1", "requester_name": "No Contact"},
        # Zendesk renders the placeholders of details the requester lacks as empty strings.
        {"ticket_id": "1", "requester_name": "A", "requester_email": "", "requester_phone": " "},
        {"requester_email": None, "requester_phone": None},
        {},
    ],
)
def test_no_email_or_phone_is_ignored(payload: dict[str, Any]) -> None:
    event = parse(encode(payload))
    assert event.ignored == "no email or phone in the event"
    assert event.fields == {}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "got a JSON array"),
        (b'"text"', "got a JSON string"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[" * 100_000, "not valid JSON"),
        (b'{"requester_email": {"address": "a@example.com"}}', "requester_email is a JSON object"),
        (b'{"requester_phone": ["+14155552671"]}', "requester_phone is a JSON array"),
        (b'{"requester_email": "a@example.com", "ticket_id": [1]}', "ticket_id is a JSON array"),
        (b'{"requester_email": "a@example.com", "event": true}', "event is a JSON boolean"),
    ],
)
def test_wrong_shapes_say_what_was_expected(body: bytes, needle: str) -> None:
    with pytest.raises(PayloadError, match=needle) as caught:
        parse(body)
    assert "Zendesk trigger template" in str(caught.value)


# =============================================================================================
# End to end: the real service under uvicorn, the Rocket.Chat stand-in


def post(service: Service, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
    return service.client.post("/webhooks/zendesk", content=body, headers=dict(headers))


def delivered(service: Service, delivery_id: str) -> dict[str, Any]:
    record: dict[str, Any] = wait_until(
        lambda: (r := service.delivery(delivery_id))["status"] == "delivered" and r,
        timeout=10,
        what=f"delivery {delivery_id} delivered",
        show=lambda: service.delivery(delivery_id),
    )
    return record


@pytest.fixture
def zendesk(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> Callable[..., Service]:
    """Starts the service with ZENDESK_WEBHOOK_SECRET set (plus the given channel settings)."""
    for cf in ("zendesk_ticket_id", "zendesk_requester_id"):
        standin.add_custom_field(cf)

    def start(**channel_settings: str) -> Service:
        values = {SETTING: SECRET} | channel_settings
        return start_service(make_settings(channel_settings=values))

    return start


def test_sample_end_to_end_refusals_store_nothing_and_three_replays_register_once(
    zendesk: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    service = zendesk()
    body, sample_headers = load_sample(*SAMPLE)
    now = time.time()
    fresh = signed(body)

    refused = {
        "one changed byte": (tamper(body), fresh),
        "wrong secret": (body, signed(body, secret="not-the-secret")),
        "no signature": (body, {k: v for k, v in fresh.items() if k != SIGNATURE}),
        "no timestamp": (body, {k: v for k, v in fresh.items() if k != TIMESTAMP}),
        "no headers": (body, {"Content-Type": "application/json"}),
        "hex signature": (body, {**fresh, SIGNATURE: "ab" * 32}),
        "not base64": (body, {**fresh, SIGNATURE: "%%%"}),
        "301 s old": (body, signed(body, now=now - 301)),
        "330 s ahead": (body, signed(body, now=now + 330)),
        "epoch timestamp": (body, signed(body, stamp=str(int(now)))),
        "untouched sample (2026-11-24)": (body, sample_headers),
    }
    for case, (content, headers) in refused.items():
        answer = post(service, content, headers)
        assert answer.status_code == 401, (case, answer.text)
        assert SETTING in answer.json()["error"], case
    too_big = b'{"requester_email": "' + b"a" * 300_000 + b'"}'
    assert post(service, too_big, signed(too_big)).status_code == 413
    assert service.stored_rows() == 0
    assert standin.contact_posts_per_token() == {}

    answers = [post(service, body, fresh) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    first, *again = (a.json() for a in answers)
    assert first["ok"] is True and "duplicate" not in first
    for retry in again:
        assert retry["duplicate"] is True and retry["delivery_id"] == first["delivery_id"]

    record = delivered(service, first["delivery_id"])
    assert record["source"] == "webhook:zendesk"
    assert record["attempts"] == 1
    visitor = standin.visitors[record["contact_id"]]
    assert visitor["name"] == KWAME["name"]
    assert visitor["visitorEmails"] == [{"address": KWAME["email"]}]
    assert visitor["phone"] == [{"phoneNumber": KWAME["phone"]}]
    assert visitor["livechatData"]["zendesk_ticket_id"] == "4812"
    assert len(standin.visitors) == 1
    assert sum(standin.contact_posts_per_token().values()) == 1
    assert service.stored_rows() == 1


def test_field_settings_map_another_template_end_to_end(
    zendesk: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    service = zendesk(
        ZENDESK_FIELD_NAME="customer.full_name",
        ZENDESK_FIELD_EMAIL="customer.mail",
        ZENDESK_FIELD_PHONE="customer.mobile",
    )
    data = {
        "ticket": {"id": 9001},
        "event": "ticket.created",
        "customer": {
            "full_name": "Ama Owusu",
            "mail": "ama@example.com",
            "mobile": "+233241234567",
        },
    }
    body = encode(data)
    answers = [post(service, body, signed(body)) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    assert answers[1].json()["duplicate"] is True
    record = delivered(service, answers[0].json()["delivery_id"])
    visitor = standin.visitors[record["contact_id"]]
    assert visitor["name"] == "Ama Owusu"
    assert visitor["visitorEmails"] == [{"address": "ama@example.com"}]
    assert visitor["phone"] == [{"phoneNumber": "+233241234567"}]
    assert visitor["livechatData"]["zendesk_ticket_id"] == "9001"

    # The same ticket through another trigger, re-signed seconds later: accepted again.
    other = encode(data | {"event": "ticket.solved"})
    assert "duplicate" not in post(service, other, signed(other)).json()


def test_no_contact_is_ignored_and_wrong_shapes_are_400_end_to_end(
    zendesk: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    service = zendesk()
    empty = encode({"ticket_id": "4813", "requester_name": "Someone", "requester_email": ""})
    answer = post(service, empty, signed(empty))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"ok": True, "ignored": "no email or phone in the event"}

    for bad, needle in (
        (b"{not json", "not valid JSON"),
        (b"[]", "got a JSON array"),
        (b'{"requester_email": {"a": 1}}', "requester_email is a JSON object"),
        (b"[" * 200_000, "nested too deeply"),
    ):
        answer = post(service, bad, signed(bad))
        assert answer.status_code == 400, (bad[:20], answer.text)
        error = answer.json()["error"]
        assert "not a Zendesk event we understand" in error and needle in error, error
    assert service.stored_rows() == 0
    assert standin.contact_posts_per_token() == {}


def test_unset_secret_is_503_naming_the_setting(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    service = start_service(make_settings(channel_settings={SETTING: ""}))
    body, _ = load_sample(*SAMPLE)
    answer = post(service, body, signed(body))
    assert answer.status_code == 503, answer.text
    assert SETTING in answer.json()["error"]
    assert service.stored_rows() == 0
    assert standin.contact_posts_per_token() == {}
