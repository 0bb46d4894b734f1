"""Jotform: the multipart submission webhook, as pure functions and end to end.

The sample ``samples/jotform/submission.txt`` is replayed as its exact bytes with its
``Content-Type`` through the real service under uvicorn to the Rocket.Chat stand-in.
Jotform signs nothing: the ``?key=`` in the webhook URL (``JOTFORM_WEBHOOK_KEY``) is the
only check, and a replay is recognised by its ``submissionID``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.datastructures import Headers, QueryParams

from adapter.channels.webhooks import PayloadError, WebhookEvent, WebhookRequest
from adapter.core.contact import validate_contact
from adapter.settings import Settings
from handlers.jotform import JotformProvider
from tests.conftest import ADMIN_TOKEN, Service, wait_until
from tests.rocketchat_standin import RocketChatStandIn
from tests.webhook_samples import load_sample, tamper

KEY = "jf-url-key-Qm9zY2hpZmZyZS0xMjM0NTY3ODkw"
EXTRAS = ("jotform_form_id", "jotform_submission_id", "form_name")
LUCIA = {"name": "Lucía Gómez", "email": "lucia.gomez@example.com", "phone": "+34 612 34 56 78"}
SAMPLE_IDS = {
    "jotform_form_id": "233456789012345",
    "jotform_submission_id": "5912345678901234567",
    "form_name": "Contact Form",
}
# A form whose questions the defaults cannot place: the JOTFORM_FIELD_* settings name them.
MAPPING = {
    "JOTFORM_FIELD_NAME": "q10_nombrePila+q11_apellidos",
    "JOTFORM_FIELD_EMAIL": "contactoCorreo",
    "JOTFORM_FIELD_PHONE": "q13_movil",
}
PROVIDER = JotformProvider()


def multipart(parts: dict[str, str], boundary: str = "JotformBoundary7MA4YWxk") -> bytes:
    """``parts`` encoded as Jotform posts them: multipart/form-data, CRLF, UTF-8."""
    out = b""
    for name, value in parts.items():
        out += f"--{boundary}\r\n".encode()
        out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def content_type(boundary: str = "JotformBoundary7MA4YWxk") -> dict[str, str]:
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def submission(answers: dict[str, Any], submission_id: str = "6000000000000000001") -> bytes:
    """A Jotform submission with these answers (keyed ``q<N>_<name>``) in its rawRequest."""
    raw = {"slug": "submit/240000000000001", **answers, "event_id": "1795514400000_x"}
    return multipart(
        {
            "formID": "240000000000001",
            "type": "WEB",
            "formTitle": "Solicitud de contacto",
            "submissionID": submission_id,
            "ip": "203.0.113.7",
            "pretty": "not parsed",
            "rawRequest": json.dumps(raw, ensure_ascii=False),
        }
    )


def request_of(
    body: bytes, headers: dict[str, str], query: str = "", **settings: str
) -> WebhookRequest:
    return WebhookRequest(
        body=body,
        headers=Headers(headers),
        query=QueryParams(query),
        content_type=headers.get("Content-Type", "").split(";")[0].strip().lower(),
        lookup=lambda name: settings.get(name.upper()),
    )


def parse(body: bytes, headers: dict[str, str] | None = None, /, **settings: str) -> WebhookEvent:
    return PROVIDER.parse(request_of(body, headers or content_type(), **settings))


# ------------------------------------------------------------------------------------------------
# Pure: the key, the sample, the mapping, the shapes refused


def test_the_url_key_is_the_only_check_and_jotform_signs_nothing() -> None:
    body, headers = load_sample("jotform", "submission")

    def ok(query: str, payload: bytes = body) -> bool:
        return PROVIDER.verify(request_of(payload, headers, query), KEY, now=0)

    assert ok(f"key={KEY}")
    assert not ok("")  # no key
    assert not ok("key=")
    assert not ok(f"key={KEY[:-1]}")  # a prefix of it
    assert not ok(f"key={KEY}x")
    assert not ok(f"token={KEY}")  # only ?key= counts
    assert not PROVIDER.verify(request_of(body, headers, f"key={KEY}"), "", now=0)
    # No signature: a changed body still passes with the right key. Only the key protects it.
    assert ok(f"key={KEY}", tamper(body))


def test_the_sample_maps_to_lucia_gomez_with_e164_phone_after_validation() -> None:
    body, headers = load_sample("jotform", "submission")
    assert headers["Content-Type"].startswith("multipart/form-data; boundary=")
    event = parse(body, headers)
    assert event.ignored is None
    assert dict(event.fields) == LUCIA
    assert event.event_id == "5912345678901234567"  # submissionID
    assert dict(event.custom_fields) == SAMPLE_IDS
    contact, warnings = validate_contact(event.fields, custom_fields=event.custom_fields)
    assert (contact.name, contact.email, contact.phone) == (
        "Lucía Gómez",
        "lucia.gomez@example.com",
        "+34612345678",
    )
    assert warnings == {}


def test_default_mapping_finds_other_common_question_names() -> None:
    # Jotform's "Name" widget under another name, an email question named yourEmail after
    # an opt-in whose name merely contains "email", and a mobile number as plain text.
    event = parse(
        submission(
            {
                "q2_emailOptIn": "Yes",
                "q3_name": {"prefix": "Dr.", "first": "Ana", "middle": "María", "last": "Ruiz"},
                "q4_yourEmail": "ana.ruiz@example.org",
                "q5_mobileNumber": "+34 699 99 99 99",
                "q6_message": "Hola",
            }
        )
    )
    assert event.fields == {
        "name": "Ana María Ruiz",
        "email": "ana.ruiz@example.org",
        "phone": "+34 699 99 99 99",
    }
    assert event.custom_fields == {
        "jotform_form_id": "240000000000001",
        "jotform_submission_id": "6000000000000000001",
        "form_name": "Solicitud de contacto",
    }
    # Separate first/last name questions and the older phone widget (area + phone).
    split = parse(
        submission(
            {
                "q1_firstName": "Ana",
                "q2_lastName": "Ruiz",
                "q3_email": "ana@example.org",
                "q4_phone": {"area": "699", "phone": "999999"},
            }
        )
    )
    assert split.fields == {"name": "Ana Ruiz", "email": "ana@example.org", "phone": "699 999999"}


def test_field_settings_map_a_form_with_other_question_names() -> None:
    answers = {
        "q10_nombrePila": "Lucía",
        "q11_apellidos": "Gómez Pérez",
        "q12_contactoCorreo": "lucia@example.com",
        "q13_movil": "+34 612 34 56 78",
    }
    body = submission(answers)
    assert parse(body).ignored == "no email or phone in the event"  # the defaults find nothing
    event = parse(body, **MAPPING)
    assert event.fields == {
        "name": "Lucía Gómez Pérez",
        "email": "lucia@example.com",
        "phone": "+34 612 34 56 78",
    }
    # Alternatives: the first one answered wins; unanswered ones fall back to the defaults.
    alt = parse(
        body, JOTFORM_FIELD_EMAIL="q99_nope, q12_contactoCorreo", JOTFORM_FIELD_PHONE="q99_x"
    )
    assert alt.fields["email"] == "lucia@example.com" and alt.fields["phone"] is None
    # A setting wins over what the defaults would pick.
    both = submission({**answers, "q14_email": "other@example.com"})
    assert parse(both).fields["email"] == "other@example.com"
    assert parse(both, **MAPPING).fields["email"] == "lucia@example.com"


def test_a_submission_without_email_or_phone_is_ignored() -> None:
    event = parse(submission({"q3_fullName": {"first": "Ana", "last": "Ruiz"}, "q6_msg": "Hi"}))
    assert event.ignored == "no email or phone in the event"
    assert event.event_id == "6000000000000000001"


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        (json.dumps({"rawRequest": {}}).encode(), {"Content-Type": "application/json"}, "got "),
        (b"rawRequest=%7B%7D", {"Content-Type": "application/x-www-form-urlencoded"}, "got "),
        (multipart({"x": "y"}), {"Content-Type": "multipart/form-data"}, "no boundary"),
        (multipart({"formID": "1", "submissionID": "2"}), None, "no rawRequest part"),
        (multipart({"rawRequest": "{not json"}), None, "rawRequest is not valid JSON"),
        (multipart({"rawRequest": '["q4_email"]'}), None, "got a JSON array"),
        (multipart({"rawRequest": "{}"})[:-40], None, "no rawRequest part"),  # truncated
        (b"\x00garbage", None, "the multipart body could not be read"),
    ],
)
def test_wrong_bodies_say_what_was_expected(
    body: bytes, headers: dict[str, str] | None, expected: str
) -> None:
    with pytest.raises(PayloadError, match="expected a Jotform webhook") as caught:
        parse(body, headers)
    assert expected in str(caught.value)
    assert "rawRequest" in str(caught.value)


# ------------------------------------------------------------------------------------------------
# End to end: the real service under uvicorn, the Rocket.Chat stand-in


@dataclass
class Running:
    service: Service
    standin: RocketChatStandIn

    def post(self, body: bytes, headers: dict[str, str], key: str | None = KEY) -> httpx.Response:
        url = "/webhooks/jotform" + (f"?key={key}" if key is not None else "")
        return self.service.client.post(url, content=body, headers=headers)

    def deliveries(self) -> list[dict[str, Any]]:
        answer = self.service.client.get(
            "/deliveries?source=webhook:jotform&limit=500",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        answer.raise_for_status()
        return list(answer.json()["deliveries"])

    def delivered(self, delivery_id: str) -> dict[str, Any]:
        return dict(
            wait_until(
                lambda: (r := self.service.delivery(delivery_id))["status"] == "delivered" and r,
                what=f"delivery {delivery_id} delivered",
                show=lambda: self.service.delivery(delivery_id),
            )
        )


@pytest.fixture
def jotform(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> Iterator[Running]:
    """The service with JOTFORM_WEBHOOK_KEY and the mapping settings, extras as custom fields."""
    for cf_id in EXTRAS:
        standin.add_custom_field(cf_id)
    settings = make_settings(
        channel_settings={"JOTFORM_WEBHOOK_KEY": KEY, **MAPPING},
        rocketchat_custom_fields=",".join(EXTRAS),
    )
    yield Running(start_service(settings), standin)


def test_sample_end_to_end_registered_once_and_a_wrong_key_stores_nothing(
    jotform: Running,
) -> None:
    body, headers = load_sample("jotform", "submission")

    # Refused first, so the replay below also proves the refusals stored nothing.
    for key in ("wrong-key", None, ""):
        refused = jotform.post(body, headers, key=key)
        assert refused.status_code == 401, refused.text
        assert "JOTFORM_WEBHOOK_KEY" in refused.json()["error"]
    assert jotform.deliveries() == []

    answers = [jotform.post(body, headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    first, *again = (a.json() for a in answers)
    assert first["ok"] is True and "duplicate" not in first
    assert all(a["duplicate"] is True and a["delivery_id"] == first["delivery_id"] for a in again)
    # A resend need not be byte-identical (a new multipart boundary): the submissionID decides.
    boundary = headers["Content-Type"].split("boundary=")[1].lstrip("-").encode()
    resent = body.replace(boundary, b"0e1d2c3b4a596877")
    assert resent != body
    retry = jotform.post(
        resent,
        {"Content-Type": headers["Content-Type"].replace(boundary.decode(), "0e1d2c3b4a596877")},
    )
    assert retry.status_code == 200, retry.text
    assert retry.json()["duplicate"] is True
    assert retry.json()["delivery_id"] == first["delivery_id"]

    record = jotform.delivered(first["delivery_id"])
    assert record["source"] == "webhook:jotform"
    assert [d["id"] for d in jotform.deliveries()] == [first["delivery_id"]]  # one, not three
    visitor = jotform.standin.visitors[record["contact_id"]]
    assert visitor["name"] == "Lucía Gómez"
    assert visitor["visitorEmails"] == [{"address": "lucia.gomez@example.com"}]
    assert visitor["phone"] == [{"phoneNumber": "+34612345678"}]
    assert SAMPLE_IDS.items() <= visitor["livechatData"].items()
    assert len(jotform.standin.visitors) == 1
    assert sum(jotform.standin.contact_posts_per_token().values()) == 1


def test_mapped_form_ignored_and_malformed_posts_end_to_end(jotform: Running) -> None:
    mapped = submission(
        {
            "q10_nombrePila": "Lucía",
            "q11_apellidos": "Gómez Pérez",
            "q12_contactoCorreo": "lucia.mapped@example.com",
            "q13_movil": "+34 612 34 56 79",
        },
        submission_id="6000000000000000042",
    )
    answer = jotform.post(mapped, content_type())
    assert answer.status_code == 200, answer.text
    record = jotform.delivered(answer.json()["delivery_id"])
    visitor = jotform.standin.visitors[record["contact_id"]]
    assert visitor["name"] == "Lucía Gómez Pérez"
    assert visitor["visitorEmails"] == [{"address": "lucia.mapped@example.com"}]
    assert visitor["phone"] == [{"phoneNumber": "+34612345679"}]

    nothing = submission({"q3_fullName": {"first": "Ana", "last": "Ruiz"}}, "6000000000000000043")
    answer = jotform.post(nothing, content_type())
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"ok": True, "ignored": "no email or phone in the event"}

    as_json = jotform.post(b'{"rawRequest": "{}"}', {"Content-Type": "application/json"})
    assert as_json.status_code == 415, as_json.text  # Jotform sends multipart only
    assert "multipart/form-data, not application/json" in as_json.json()["error"]
    for body, headers, what in (
        (multipart({"formID": "1", "submissionID": "9"}), content_type(), "no rawRequest part"),
        (multipart({"rawRequest": '{"q4_email": '}), content_type(), "not valid JSON"),
    ):
        answer = jotform.post(body, headers)
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert "expected a Jotform webhook: multipart/form-data" in error and what in error
    assert [d["id"] for d in jotform.deliveries()] == [record["id"]]


def test_unset_key_is_503_naming_the_setting(
    make_settings: Callable[..., Settings], start_service: Callable[[Settings], Service]
) -> None:
    service = start_service(make_settings(channel_settings={"JOTFORM_WEBHOOK_KEY": ""}))
    body, headers = load_sample("jotform", "submission")
    answer = service.client.post(f"/webhooks/jotform?key={KEY}", content=body, headers=headers)
    assert answer.status_code == 503, answer.text  # not 404: a retry gets through once it is set
    assert "JOTFORM_WEBHOOK_KEY" in answer.json()["error"]
