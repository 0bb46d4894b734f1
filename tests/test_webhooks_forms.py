"""LiveChat, Typeform, Tally and the generic signed webhook, end to end and as pure functions.

The samples in ``../shared/contracts/samples/<provider>/`` are replayed as raw bytes with
their headers through the real service under uvicorn to the Rocket.Chat stand-in. The
generic (Google Forms) sample is signed for the fixed instant 1795514400: the pure tests
verify it untouched with that clock, the end-to-end ones re-sign it with the current time.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.datastructures import Headers, QueryParams

from adapter.channels.webhooks import PayloadError, WebhookEvent, WebhookProvider, WebhookRequest
from adapter.settings import Settings, load_settings
from handlers.generic import GenericProvider
from handlers.livechat import LiveChatProvider
from handlers.tally import TallyProvider, tally_signature
from handlers.typeform import TypeformProvider, typeform_signature
from tests.conftest import ADMIN_TOKEN, API_TOKEN, BOT, Service, wait_until
from tests.rocketchat_standin import RocketChatStandIn, StandInServer
from tests.webhook_samples import SAMPLE_INSTANT, load_sample, sample_events, tamper

# ------------------------------------------------------------------------------------------------
# Per provider: where it lives, its secret, how to sign, how to build a payload variant


def sign_generic(secret: str, body: bytes, now: float) -> dict[str, str]:
    stamp = str(int(now))
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Contact-Adapter-Timestamp": stamp,
        "X-Contact-Adapter-Signature": f"sha256={mac}",
    }


def compact(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def build_typeform(uid: str, contact: dict[str, str | None], extra: bool) -> Any:
    body, _ = load_sample("typeform", "form_response")
    data = json.loads(body)
    data["event_id"] = f"ev-{uid}"
    response = data["form_response"]
    response["token"] = f"tok-{uid}"
    answers = {a["field"]["ref"]: a for a in response["answers"]}
    for ref, key, kind in (
        ("full_name", "name", "text"),
        ("email", "email", "email"),
        ("phone", "phone", "phone_number"),
    ):
        if contact[key] is None:
            del answers[ref]
        else:
            answers[ref][kind] = contact[key]
    response["answers"] = list(answers.values())
    if extra:
        response["answers"] += [
            {
                "type": "choice",
                "choice": {"label": "Enterprise"},
                "field": {"id": "c1", "type": "multiple_choice", "ref": "plan"},
            },
            {
                "type": "number",
                "number": 12,
                "field": {"id": "n1", "type": "number", "ref": "seats"},
            },
            {
                "type": "boolean",
                "boolean": True,
                "field": {"id": "b1", "type": "yes_no", "ref": "newsletter"},
            },
            {
                "type": "payment",
                "payment": {"amount": "1.00", "last4": "4242"},
                "field": {"id": "p1", "type": "payment", "ref": "pay"},
            },
        ]
        response["hidden"]["campaign"] = "spring"
        response["variables"] = [{"key": "score", "type": "number", "number": 4}]
    return data


def build_tally(uid: str, contact: dict[str, str | None], extra: bool) -> Any:
    body, _ = load_sample("tally", "FORM_RESPONSE")
    data = json.loads(body)
    data["eventId"] = f"ev-{uid}"
    data["data"]["responseId"] = data["data"]["submissionId"] = f"r-{uid}"
    fields = []
    for field in data["data"]["fields"]:
        key = {"INPUT_TEXT": "name", "INPUT_EMAIL": "email", "INPUT_PHONE_NUMBER": "phone"}.get(
            field["type"]
        )
        if key is not None:
            if contact[key] is None:
                continue
            field["value"] = contact[key]
        fields.append(field)
    if extra:
        fields += [
            {
                "key": "question_cb",
                "label": "Interests",
                "type": "CHECKBOXES",
                "value": ["o1", "o2"],
                "options": [{"id": "o1", "text": "Sales"}, {"id": "o2", "text": "Support"}],
            },
            {
                "key": "question_file",
                "label": "Attachment",
                "type": "FILE_UPLOAD",
                "value": [
                    {
                        "id": "f1",
                        "name": "a.pdf",
                        "url": "https://example.com/a.pdf",
                        "mimeType": "application/pdf",
                        "size": 1,
                    }
                ],
            },
            {"key": "question_rating", "label": "Rating", "type": "RATING", "value": 5},
            {"key": "question_empty", "label": "Company", "type": "INPUT_TEXT", "value": None},
        ]
    data["data"]["fields"] = fields
    return data


def build_livechat(uid: str, contact: dict[str, str | None], extra: bool) -> Any:
    body, _ = load_sample("livechat", "incoming_chat")
    data = json.loads(body)
    chat = data["payload"]["chat"]
    chat["id"] = f"CHAT{uid}"
    customer = chat["users"][0]
    customer["id"] = f"cust-{uid}"
    form = chat["thread"]["events"][0]
    for key, user_key, field_type in (
        ("name", "name", "name"),
        ("email", "email", "email"),
        ("phone", "phone_number", "question"),
    ):
        for field in form["fields"]:
            if field["type"] == field_type:
                field["answer"] = contact[key] if contact[key] is not None else ""
        if contact[key] is None:
            customer.pop(user_key, None)
        else:
            customer[user_key] = contact[key]
    if extra:
        form["fields"] += [
            {
                "type": "checkbox",
                "id": "x1",
                "label": "Topics",
                "answers": [{"id": "1", "label": "Billing"}],
            },
            {
                "type": "group_chooser",
                "id": "x2",
                "label": "Department",
                "answer": {"id": 2, "label": "Sales", "group_id": 2},
            },
            {"type": "textarea", "id": "x3", "label": "Message", "answer": "Hello"},
        ]
        customer["session_fields"].append({"crm_id": "42"})
    return data


def build_generic(uid: str, contact: dict[str, str | None], extra: bool) -> Any:
    body, _ = load_sample("googleforms", "form_submit")
    data = json.loads(body)
    data["response_id"] = f"resp-{uid}"
    answers: dict[str, Any] = {}
    for title, key in (("Name", "name"), ("Email", "email"), ("Phone", "phone")):
        if contact[key] is not None:
            answers[title] = contact[key]
    if extra:
        answers |= {
            "Company": "Acme",
            "Interests": ["Sales", "Support"],
            "Address": {"city": "Seoul"},
        }
        data["custom_fields"] = {"utm_source": "ads"}
    data["answers"] = answers
    return data


@dataclass(frozen=True)
class Spec:
    provider: str  # /webhooks/<provider>
    sample: tuple[str, str]  # samples/<dir>/<event>
    setting: str
    secret: str
    person: dict[str, str]  # what the sample registers
    extras: dict[str, str]  # custom fields the sample carries
    build: Callable[[str, dict[str, str | None], bool], Any]
    timestamped: bool = False

    def body(self, data: Any) -> bytes:
        if self.provider == "livechat":
            data = {**data, "secret_key": self.secret}
        return compact(data)

    def headers(self, body: bytes, now: float | None = None) -> dict[str, str]:
        now = time.time() if now is None else now
        if self.provider == "typeform":
            return {
                "Content-Type": "application/json",
                "Typeform-Signature": typeform_signature(self.secret, body),
            }
        if self.provider == "tally":
            return {
                "Content-Type": "application/json",
                "Tally-Signature": tally_signature(self.secret, body),
            }
        if self.provider == "generic":
            return sign_generic(self.secret, body, now)
        return {"Content-Type": "application/json"}  # LiveChat: the secret is in the body

    def sample_request(self) -> tuple[bytes, dict[str, str]]:
        """The sample as the provider would send it now (timestamped ones re-signed)."""
        body, headers = load_sample(*self.sample)
        if self.timestamped:
            headers = self.headers(body)
        return body, headers


SPECS = {
    "livechat": Spec(
        "livechat",
        ("livechat", "incoming_chat"),
        "LIVECHAT_WEBHOOK_SECRET",
        "lc-test-secret-key-3d8f",
        {
            "name": "Priya Raghunathan",
            "email": "priya.raghunathan@example.com",
            "phone": "+919876543210",
        },
        {
            "page_url": "https://www.example.com/pricing",
            "livechat_chat_id": "PJ0MRSHTDG",
            "plan": "team",
        },
        build_livechat,
    ),
    "typeform": Spec(
        "typeform",
        ("typeform", "form_response"),
        "TYPEFORM_WEBHOOK_SECRET",
        "tf-test-secret-8e1c7b",
        {"name": "Ana Beatriz Souza", "email": "ana.souza@example.org", "phone": "+5511987654321"},
        {
            "typeform_form_id": "lT4Z3j",
            "typeform_response_id": "c9b2f6e1a8d34705b1e2f3a4c5d6e7f8",
            "utm_source": "newsletter",
        },
        build_typeform,
    ),
    "tally": Spec(
        "tally",
        ("tally", "FORM_RESPONSE"),
        "TALLY_WEBHOOK_SECRET",
        "tally-test-signing-secret-1a2b",
        {"name": "Nguyễn Thị Lan", "email": "lan.nguyen@example.com", "phone": "+442079460958"},
        {"tally_form_id": "VwbNEw", "tally_response_id": "Kq9ZrL", "utm_campaign": "winter"},
        build_tally,
    ),
    "generic": Spec(
        "generic",
        ("googleforms", "form_submit"),
        "GENERIC_WEBHOOK_SECRET",
        "gforms-test-hmac-secret-4d2c",
        {"name": "Kim Min-jun", "email": "minjun.kim@example.com", "phone": "+821012345678"},
        {"form_id": "1FAIpQLSexampleFormId0123456789", "response_id": "ACYDBNjExampleResponseId"},
        build_generic,
        timestamped=True,
    ),
}
PROVIDERS = list(SPECS)
SECRETS = {spec.setting: spec.secret for spec in SPECS.values()}
EXTRA_IDS = sorted({key for spec in SPECS.values() for key in spec.extras})


def settings_for(rocketchat_url: str, db: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "rocketchat_url": rocketchat_url,
        "rocketchat_user_id": BOT["user_id"],
        "rocketchat_auth_token": BOT["token"],
        "database_url": f"sqlite:///{db}",
        "api_token": API_TOKEN,
        "admin_token": ADMIN_TOKEN,
        "retry_first_delay": 0.2,
        "retry_max_delay": 1.0,
        "worker_poll_interval": 0.1,
        "auth_check_interval": 0.3,
        "sqlite_synchronous": "NORMAL",
        "rocketchat_contact_api": "visitor",  # contacts land in standin.visitors
        "channel_settings": dict(SECRETS),
    }
    values.update(overrides)
    return load_settings(**values)


@dataclass
class Running:
    service: Service
    standin: RocketChatStandIn

    def post(self, provider: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.service.client.post(f"/webhooks/{provider}", content=body, headers=headers)

    def delivered(self, delivery_id: str) -> dict[str, Any]:
        record = wait_until(
            lambda: (r := self.service.delivery(delivery_id))["status"] == "delivered" and r,
            timeout=10,
        )
        return dict(record)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One service for the many cheap cases: all four secrets, DEFAULT_PHONE_REGION=GB."""
    standin = RocketChatStandIn()
    for cf_id in (*EXTRA_IDS, "utm_source", "campaign", "crm_id"):
        standin.add_custom_field(cf_id)
    with StandInServer(standin.app) as rocketchat:
        db = tmp_path_factory.mktemp("forms") / "contacts.db"
        service = Service(settings_for(rocketchat.url, db, default_phone_region="GB")).start()
        try:
            yield Running(service, standin)
        finally:
            service.stop()


@pytest.fixture
def running(
    standin: RocketChatStandIn, rocketchat: StandInServer, tmp_path: Path
) -> Iterator[Callable[..., Running]]:
    """A fresh service (own database, own stand-in) with the given setting overrides."""
    started: list[Service] = []

    def start(**overrides: Any) -> Running:
        service = Service(settings_for(rocketchat.url, tmp_path / "contacts.db", **overrides))
        started.append(service.start())
        return Running(service, standin)

    yield start
    for service in started:
        service.stop()


# ------------------------------------------------------------------------------------------------
# Pure: verify exactly as each provider signs, on the untouched sample bytes


def request_of(body: bytes, headers: dict[str, str], **settings: str) -> WebhookRequest:
    return WebhookRequest(
        body=body,
        headers=Headers(headers),
        query=QueryParams(""),
        lookup=lambda name: settings.get(name.upper()),
    )


def provider_of(name: str) -> WebhookProvider:
    return {
        "livechat": LiveChatProvider(),
        "typeform": TypeformProvider(),
        "tally": TallyProvider(),
        "generic": GenericProvider(),
    }[name]


def flip(body: bytes, at: int) -> bytes:
    return tamper(body, at)


def test_every_sample_of_these_providers_is_covered() -> None:
    covered = {spec.sample for spec in SPECS.values()}
    for folder in ("livechat", "typeform", "tally", "googleforms"):
        assert {(folder, event) for event in sample_events(folder)} <= covered


@pytest.mark.parametrize("name", PROVIDERS)
def test_sample_verifies_untouched_and_fails_when_one_byte_changes(name: str) -> None:
    spec, provider = SPECS[name], provider_of(name)
    body, headers = load_sample(*spec.sample)
    assert provider.verify(request_of(body, headers), spec.secret, now=SAMPLE_INSTANT)
    assert not provider.verify(request_of(body, headers), spec.secret + "x", now=SAMPLE_INSTANT)
    if name == "livechat":
        # No signature exists: only the secret_key in the body authenticates the request.
        at = body.index(spec.secret.encode()) + 3
        assert not provider.verify(request_of(flip(body, at), headers), spec.secret, now=0)
        no_key = compact({k: v for k, v in json.loads(body).items() if k != "secret_key"})
        assert not provider.verify(request_of(no_key, headers), spec.secret, now=0)
        return
    for at in (0, len(body) // 2, len(body) - 1):
        changed = request_of(flip(body, at), headers)
        assert not provider.verify(changed, spec.secret, now=SAMPLE_INSTANT), at
    unsigned = {k: v for k, v in headers.items() if "signature" not in k.lower()}
    assert not provider.verify(request_of(body, unsigned), spec.secret, now=SAMPLE_INSTANT)


def test_generic_timestamp_window() -> None:
    provider = GenericProvider()
    body, headers = load_sample("googleforms", "form_submit")
    assert provider.verify(
        request_of(body, headers), "gforms-test-hmac-secret-4d2c", now=SAMPLE_INSTANT + 299
    )
    for now in (SAMPLE_INSTANT + 301, SAMPLE_INSTANT - 301):
        assert not provider.verify(
            request_of(body, headers), "gforms-test-hmac-secret-4d2c", now=now
        )
    # Moving the timestamp breaks the signature, which covers it.
    moved = {**headers, "X-Contact-Adapter-Timestamp": str(SAMPLE_INSTANT + 1)}
    assert not provider.verify(
        request_of(body, moved), "gforms-test-hmac-secret-4d2c", now=SAMPLE_INSTANT
    )


def test_typeform_signature_is_base64_with_prefix_not_hex() -> None:
    body, headers = load_sample("typeform", "form_response")
    assert headers["Typeform-Signature"] == typeform_signature("tf-test-secret-8e1c7b", body)
    hexed = "sha256=" + hmac.new(b"tf-test-secret-8e1c7b", body, hashlib.sha256).hexdigest()
    assert not TypeformProvider().verify(
        request_of(body, {"Typeform-Signature": hexed}), "tf-test-secret-8e1c7b", now=0
    )


def test_tally_accepts_a_signature_over_the_compact_reserialisation() -> None:
    # Tally's documented example signs JSON.stringify(req.body), not the bytes on the wire.
    secret = "tally-test-signing-secret-1a2b"
    body, headers = load_sample("tally", "FORM_RESPONSE")
    pretty = json.dumps(json.loads(body), indent=2, ensure_ascii=False).encode()
    assert TallyProvider().verify(request_of(pretty, headers), secret, now=0)
    tampered = pretty.replace(b"Nguy", b"Nguu")
    assert not TallyProvider().verify(request_of(tampered, headers), secret, now=0)


@pytest.mark.parametrize("name", PROVIDERS)
def test_sample_maps_to_the_person_its_ids_and_extras(name: str) -> None:
    spec = SPECS[name]
    body, headers = load_sample(*spec.sample)
    event = provider_of(name).parse(request_of(body, headers))
    assert event.ignored is None
    raw_phone = {"generic": "+82 10-1234-5678"}.get(name, spec.person["phone"])
    assert dict(event.fields) == {**spec.person, "phone": raw_phone}
    assert spec.extras.items() <= dict(event.custom_fields).items()
    assert "secret_key" not in json.dumps(dict(event.custom_fields))
    expected_ids = {
        "livechat": "incoming_chat:PJ0MRSHTDG:K600PKZON8",
        "typeform": "lT4Z3j:c9b2f6e1a8d34705b1e2f3a4c5d6e7f8",
        "tally": "d2b6f1a4-3c8e-4e7b-9a5d-0c1f2e3a4b5c",
        "generic": "google-forms:ACYDBNjExampleResponseId",
    }
    assert event.event_id == expected_ids[name]
    if name == "livechat":
        assert event.person_key == "b7eff798-f8df-4364-8059-649c35c9ed0c"


def parse(name: str, data: Any, **settings: str) -> WebhookEvent:
    spec = SPECS[name]
    body = spec.body(data)
    return provider_of(name).parse(request_of(body, spec.headers(body), **settings))


def test_typeform_mapping_settings_and_defaults() -> None:
    base = build_typeform("m1", {"name": "Ana", "email": "ana@example.org", "phone": None}, False)
    # The phone typed into a text question, named by TYPEFORM_FIELD_PHONE (by ref or id).
    base["form_response"]["answers"].append(
        {
            "type": "text",
            "text": "+44 20 7946 0958",
            "field": {"id": "Zz9", "type": "short_text", "ref": "mobile_no"},
        }
    )
    assert (
        parse("typeform", base, TYPEFORM_FIELD_PHONE="mobile_no").fields["phone"]
        == "+44 20 7946 0958"
    )
    assert parse("typeform", base, TYPEFORM_FIELD_PHONE="Zz9").fields["phone"] == "+44 20 7946 0958"
    # Name joined from several questions, in the order given.
    both = copy.deepcopy(base)
    both["form_response"]["answers"].append(
        {
            "type": "text",
            "text": "Souza",
            "field": {"id": "L1", "type": "short_text", "ref": "last"},
        }
    )
    assert (
        parse("typeform", both, TYPEFORM_FIELD_NAME="full_name+last").fields["name"] == "Ana Souza"
    )
    # Without a ref called name, the first short_text answer is the name.
    renamed = copy.deepcopy(base)
    renamed["form_response"]["answers"][0]["field"]["ref"] = "0b1c-uuid-like"
    renamed["form_response"]["definition"]["fields"][0]["title"] = "Who are you?"
    assert parse("typeform", renamed).fields["name"] == "Ana"
    # Partial responses and other event types: ignored.
    partial = {**base, "event_type": "form_response_partial"}
    assert "partial" in (parse("typeform", partial).ignored or "")


def test_tally_mapping_settings_and_defaults() -> None:
    data = build_tally("m2", {"name": "Lan", "email": "lan@example.com", "phone": None}, False)
    fields = data["data"]["fields"]
    fields.insert(
        0, {"key": "question_co", "label": "Company", "type": "INPUT_TEXT", "value": "Acme"}
    )
    fields.append(
        {"key": "question_tel", "label": "WhatsApp", "type": "INPUT_TEXT", "value": "+447700900123"}
    )
    event = parse("tally", data)
    assert event.fields == {"name": "Lan", "email": "lan@example.com", "phone": "+447700900123"}
    assert parse("tally", data, TALLY_FIELD_NAME="question_co").fields["name"] == "Acme"
    # Comma-separated alternatives: the first one answered wins; none answered: the defaults.
    mapped = parse("tally", data, TALLY_FIELD_PHONE="question_nope, WhatsApp")
    assert mapped.fields["phone"] == "+447700900123"
    assert parse("tally", data, TALLY_FIELD_NAME="question_nope").fields["name"] == "Lan"
    split = [
        {"key": "q1", "label": "First name", "type": "INPUT_TEXT", "value": "Thị Lan"},
        {"key": "q2", "label": "Last name", "type": "INPUT_TEXT", "value": "Nguyễn"},
        {"key": "q3", "label": "E-mail", "type": "INPUT_TEXT", "value": "lan@example.com"},
    ]
    data["data"]["fields"] = split
    assert parse("tally", data).fields == {
        "name": "Thị Lan Nguyễn",
        "email": "lan@example.com",
        "phone": None,
    }


def test_livechat_mapping_settings_and_other_events() -> None:
    data = build_livechat("m3", {"name": "Priya", "email": "p@example.com", "phone": None}, False)
    form = data["payload"]["chat"]["thread"]["events"][0]
    form["fields"].append(
        {
            "type": "question",
            "id": "777",
            "label": "How do we reach you?",
            "answer": "+91 98765 43210",
        }
    )
    assert parse("livechat", data).fields["phone"] is None
    assert parse("livechat", data, LIVECHAT_FIELD_PHONE="777").fields["phone"] == "+91 98765 43210"
    later: dict[str, Any] = {
        "secret_key": "lc-test-secret-key-3d8f",
        "action": "incoming_event",
        "payload": {
            "chat_id": "CHATm3",
            "thread_id": "T1",
            "event": {
                "id": "T1_3",
                "type": "filled_form",
                "form_type": "ask_for_email",
                "author_id": "cust-m3",
                "fields": [
                    {"type": "email", "id": "1", "label": "Email", "answer": "p@example.com"}
                ],
            },
        },
    }
    event = parse("livechat", later)
    assert event.fields["email"] == "p@example.com"
    assert event.person_key == "cust-m3"  # the same customer as the incoming_chat: one contact
    assert event.event_id == "incoming_event:CHATm3:T1_3"
    message = {
        **later,
        "payload": {**later["payload"], "event": {"id": "T1_4", "type": "message", "text": "hi"}},
    }
    assert parse("livechat", message).ignored
    assert parse("livechat", {**later, "action": "chat_deactivated", "payload": {}}).ignored


def test_generic_top_level_fields_and_mapping_settings() -> None:
    data = {
        "event_id": "z-1",
        "name": "Zap User",
        "email": "zap@example.com",
        "phone": "+14155552671",
    }
    event = parse("generic", data)
    assert event.fields == {"name": "Zap User", "email": "zap@example.com", "phone": "+14155552671"}
    assert event.event_id == "z-1"
    titled = {"answers": {"Nome completo": "Ana", "Correo de contacto": "ana@example.org"}}
    assert parse("generic", titled).ignored  # "Correo de contacto" is no known email label
    mapped = parse("generic", titled, GENERIC_FIELD_EMAIL="Correo de contacto")
    assert mapped.fields == {"name": "Ana", "email": "ana@example.org", "phone": None}
    assert (mapped.event_id or "").startswith("sha256:")  # no id given: the body's digest


@pytest.mark.parametrize(
    ("name", "body", "expected"),
    [
        ("typeform", b"not json", "not valid JSON"),
        ("typeform", b"[1, 2]", "got a JSON array"),
        (
            "typeform",
            b'{"event_type": "form_response", "form_response": "x"}',
            "form_response to be an object",
        ),
        (
            "typeform",
            b'{"event_type": "form_response", "form_response": {"answers": {}}}',
            "form_response.answers to be an array",
        ),
        ("typeform", b'{"form_response": {}}', "event_type is missing"),
        (
            "tally",
            b'{"eventType": "FORM_RESPONSE", "data": {"fields": "x"}}',
            "data.fields to be an array",
        ),
        (
            "tally",
            b'{"eventType": "FORM_RESPONSE", "data": {"fields": [1]}}',
            "data.fields[0] to be an object",
        ),
        ("tally", b'{"eventType": "FORM_RESPONSE"}', "data to be an object, got missing"),
        ("generic", b'{"answers": ["Name", "Ana"]}', "answers to be an object"),
        ("generic", b'{"email": {"address": "a@example.com"}}', "email to be text"),
        ("generic", b"\xff\xfe", "not UTF-8"),
        (
            "livechat",
            b'{"action": "incoming_chat", "payload": {"chat": {"id": "C", "users": {}}}}',
            "payload.chat.users to be an array",
        ),
        ("livechat", b'{"action": "incoming_chat"}', "payload to be an object"),
    ],
)
def test_wrong_shapes_say_what_was_expected(name: str, body: bytes, expected: str) -> None:
    with pytest.raises(PayloadError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        provider_of(name).parse(request_of(body, {}))


# ------------------------------------------------------------------------------------------------
# End to end: the real service under uvicorn, the Rocket.Chat stand-in


@pytest.mark.parametrize("name", PROVIDERS)
def test_sample_replayed_three_times_is_one_contact_and_tampering_is_401(
    name: str, running: Callable[..., Running]
) -> None:
    spec = SPECS[name]
    run = running(rocketchat_custom_fields=",".join(EXTRA_IDS))
    for cf_id in EXTRA_IDS:
        run.standin.add_custom_field(cf_id)
    body, headers = spec.sample_request()

    # Refused first, so that the replay below also proves the refusals stored nothing.
    at = body.index(spec.secret.encode()) + 3 if name == "livechat" else len(body) // 2
    refused = run.post(name, flip(body, at), headers)
    assert refused.status_code == 401, refused.text
    assert spec.setting in refused.json()["error"]
    if spec.timestamped:
        stale = spec.headers(body, now=time.time() - 301)
        assert run.post(name, body, stale).status_code == 401
        future = spec.headers(body, now=time.time() + 330)  # past the window, however slow the post
        assert run.post(name, body, future).status_code == 401
        assert run.post(name, body, {"Content-Type": "application/json"}).status_code == 401

    answers = [run.post(name, body, headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    first, *again = (a.json() for a in answers)
    assert "duplicate" not in first
    assert all(a["duplicate"] is True and a["delivery_id"] == first["delivery_id"] for a in again)

    record = run.delivered(first["delivery_id"])
    assert record["source"] == f"webhook:{name}"
    visitor = run.standin.visitors[record["contact_id"]]
    assert visitor["name"] == spec.person["name"]
    assert visitor["visitorEmails"] == [{"address": spec.person["email"]}]
    assert visitor["phone"] == [{"phoneNumber": spec.person["phone"]}]
    assert spec.extras.items() <= visitor["livechatData"].items()
    time.sleep(0.3)  # noqa: sleep-ok - a negative check: a re-queued duplicate would show up
    assert len(run.standin.visitors) == 1
    assert sum(run.standin.contact_posts_per_token().values()) == 1


def test_unconfigured_provider_is_503_naming_its_setting_and_unknown_is_404(
    running: Callable[..., Running],
) -> None:
    run = running(channel_settings={setting: "" for setting in SECRETS})
    for name, spec in SPECS.items():
        body, headers = spec.sample_request()
        answer = run.post(name, body, headers)
        assert answer.status_code == 503, (name, answer.text)  # never 404/410: Typeform disables
        assert spec.setting in answer.json()["error"]
    nope = run.post("nope", b"{}", {"Content-Type": "application/json"})
    assert nope.status_code == 404
    assert run.standin.calls == [] or all("omnichannel" not in c.path for c in run.standin.calls)


GOOD: dict[str, str | None] = {"name": "Morgan Lee", "email": None, "phone": "+44 20 7946 0958"}
VARIANTS: dict[str, tuple[dict[str, str | None], bool, dict[str, Any]]] = {
    # variant: (contact as typed, extra fields?, expected)
    "complete": (
        {"name": "Morgan Lee", "email": "m@example.com", "phone": "+44 20 7946 0958"},
        False,
        {"status": "delivered", "phone": "+442079460958"},
    ),
    "missing email": (
        {"name": "Morgan Lee", "email": None, "phone": "+44 20 7946 0958"},
        False,
        {"status": "rejected", "errors": {"email": "is required"}},
    ),
    "missing phone": (
        {"name": "Morgan Lee", "email": "m@example.com", "phone": None},
        False,
        {"status": "rejected", "errors": {"phone": "is required"}},
    ),
    "extra fields": (
        {"name": "Morgan Lee", "email": "m@example.com", "phone": "+44 20 7946 0958"},
        True,
        {"status": "delivered", "phone": "+442079460958"},
    ),
    "unicode name": (
        {
            "name": "Zoë Ørsted-Łukasiewicz 李小龍",
            "email": "zoe@example.com",
            "phone": "+44 20 7946 0958",
        },
        False,
        {"status": "delivered", "name": "Zoë Ørsted-Łukasiewicz 李小龍"},
    ),
    "national number, DEFAULT_PHONE_REGION=GB": (
        {"name": "Morgan Lee", "email": "m@example.com", "phone": "020 7946 0958"},
        False,
        {"status": "delivered", "phone": "+442079460958"},
    ),
    "invalid phone": (
        {"name": "Morgan Lee", "email": "m@example.com", "phone": "+1 555"},
        False,
        {"status": "rejected", "errors": {"phone": "'+1 555' is not a valid phone number"}},
    ),
    "no email or phone": (
        {"name": "Morgan Lee", "email": None, "phone": None},
        False,
        {"status": "ignored"},
    ),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", PROVIDERS)
def test_payload_variants(name: str, variant: str, shared: Running) -> None:
    spec = SPECS[name]
    contact, extra, expected = VARIANTS[variant]
    uid = uuid.uuid4().hex[:10]
    if contact["email"]:  # one contact per case: the stand-in upserts by email
        contact = {**contact, "email": contact["email"].replace("@", f"+{uid}@")}
    body = spec.body(spec.build(uid, contact, extra))
    answer = shared.post(name, body, spec.headers(body))
    assert answer.status_code == 200, answer.text  # a 2xx whatever the data: retrying won't fix it
    result = answer.json()
    if expected["status"] == "ignored":
        assert result["ignored"] == "no email or phone in the event"
        return
    if expected["status"] == "rejected":
        assert result["status"] == "rejected"
        assert result["errors"] == expected["errors"]
        record = shared.service.delivery(result["delivery_id"])
        assert record["status"] == "rejected" and record["errors"] == expected["errors"]
        return
    record = shared.delivered(result["delivery_id"])
    visitor = shared.standin.visitors[record["contact_id"]]
    assert visitor["name"] == expected.get("name", contact["name"])
    assert visitor["phone"] == [{"phoneNumber": expected.get("phone", "+442079460958")}]
    assert visitor["visitorEmails"] == [{"address": contact["email"]}]
    if extra:
        kept = record["fields"]["custom_fields"]
        assert {"generic": "utm_source", "typeform": "campaign", "livechat": "crm_id"}.get(
            name, "tally_form_id"
        ) in kept


def test_ignored_events_are_200_and_store_nothing(shared: Running) -> None:
    partial = SPECS["typeform"].build("p1", GOOD | {"email": "p@example.com"}, False)
    partial["event_type"] = "form_response_partial"
    tally_other = SPECS["tally"].build("p2", GOOD | {"email": "p@example.com"}, False)
    tally_other["eventType"] = "FORM_DELETED"
    livechat_other = {"action": "chat_deactivated", "payload": {"chat_id": "X", "thread_id": "Y"}}
    for name, data in (("typeform", partial), ("tally", tally_other), ("livechat", livechat_other)):
        spec = SPECS[name]
        body = spec.body(data)
        answer = shared.post(name, body, spec.headers(body))
        assert answer.status_code == 200, answer.text
        assert answer.json()["ok"] is True and answer.json()["ignored"]
        assert "delivery_id" not in answer.json()


@pytest.mark.parametrize("name", PROVIDERS)
def test_malformed_json_and_wrong_shape_are_400_with_what_was_expected(
    name: str, shared: Running
) -> None:
    spec = SPECS[name]
    wrong = {
        "typeform": {"event_type": "form_response", "form_response": {"answers": "none"}},
        "tally": {"eventType": "FORM_RESPONSE", "data": []},
        "generic": {"answers": "Name=Ana"},
        "livechat": {"action": "incoming_chat", "payload": {"chat": {"id": "C", "users": "x"}}},
    }[name]
    body = spec.body(wrong)
    answer = shared.post(name, body, spec.headers(body))
    assert answer.status_code == 400, answer.text
    assert "expected" in answer.json()["error"]
    garbage = b'{"oops": '
    answer = shared.post(name, garbage, spec.headers(garbage))
    if name == "livechat":
        # The secret travels inside the JSON: a body that is not JSON cannot be authenticated.
        assert answer.status_code == 401
    else:
        assert answer.status_code == 400, answer.text
        assert "expected a" in answer.json()["error"] and "not valid JSON" in answer.json()["error"]
    deep = b"[" * 200_000  # json.loads raises RecursionError: was a 500
    answer = shared.post(name, deep, spec.headers(deep))
    if name == "livechat":
        assert answer.status_code == 401
    else:
        assert answer.status_code == 400, answer.text
        assert "not valid JSON (nested too deeply)" in answer.json()["error"]


def test_relaxed_required_fields_register_without_phone_and_drop_an_invalid_one(
    running: Callable[..., Running],
) -> None:
    run = running(contact_required_fields="name,email")
    spec = SPECS["tally"]
    cases: dict[str, dict[str, str | None]] = {
        "a": {"name": "Lan", "email": "lan.a@example.com", "phone": None},
        "b": {"name": "Lan", "email": "lan.b@example.com", "phone": "+1 555"},
    }
    results = {}
    for uid, contact in cases.items():
        body = spec.body(spec.build(uid, contact, False))
        answer = run.post("tally", body, spec.headers(body))
        assert answer.status_code == 200, answer.text
        results[uid] = run.delivered(answer.json()["delivery_id"])
    for record in results.values():
        visitor = run.standin.visitors[record["contact_id"]]
        assert "phone" not in visitor
    assert results["b"]["warnings"] == {"phone": "'+1 555' is not a valid phone number (dropped)"}


def test_livechat_later_form_updates_the_same_contact(running: Callable[..., Running]) -> None:
    run = running(contact_required_fields="name,email")
    spec = SPECS["livechat"]
    first = spec.build(
        "lc1", {"name": "Priya R", "email": "priya.lc1@example.com", "phone": None}, False
    )
    body = spec.body(first)
    answer = run.post("livechat", body, spec.headers(body))
    one = run.delivered(answer.json()["delivery_id"])
    later = {
        "action": "incoming_event",
        "payload": {
            "chat_id": "CHATlc1",
            "thread_id": "T1",
            "event": {
                "id": "T1_9",
                "type": "filled_form",
                "form_type": "postchat",
                "author_id": "cust-lc1",
                "fields": [
                    {"type": "question", "id": "9", "label": "Phone", "answer": "+91 98765 43210"}
                ],
            },
        },
    }
    body = spec.body(later)
    answer = run.post("livechat", body, spec.headers(body))
    assert answer.status_code == 200, answer.text
    two = run.delivered(answer.json()["delivery_id"])
    assert two["contact_id"] == one["contact_id"]
    visitor = run.standin.visitors[one["contact_id"]]
    assert visitor["name"] == "Priya R"
    assert visitor["visitorEmails"] == [{"address": "priya.lc1@example.com"}]
    assert visitor["phone"] == [{"phoneNumber": "+919876543210"}]


def test_contact_center_server_gets_the_sample_and_only_the_configured_extras(
    running: Callable[..., Running],
) -> None:
    # Rocket.Chat >= 7.1 refuses unknown custom fields: only ROCKETCHAT_CUSTOM_FIELDS are sent.
    run = running(
        rocketchat_contact_api="auto", rocketchat_custom_fields="typeform_form_id,utm_source"
    )
    for cf_id in ("typeform_form_id", "utm_source"):
        run.standin.add_custom_field(cf_id)
    spec = SPECS["typeform"]
    body, headers = spec.sample_request()
    answer = run.post("typeform", body, headers)
    assert answer.status_code == 200, answer.text
    record = run.delivered(answer.json()["delivery_id"])
    contact = run.standin.contacts[record["contact_id"]]
    assert contact["name"] == spec.person["name"]
    assert contact["emails"] == [{"address": spec.person["email"]}]
    assert contact["phones"] == [{"phoneNumber": spec.person["phone"]}]
    assert contact["customFields"] == {"typeform_form_id": "lT4Z3j", "utm_source": "newsletter"}


def test_body_over_the_cap_is_413(shared: Running) -> None:
    big = b'{"event_type": "form_response", "pad": "' + b"x" * 300_000 + b'"}'
    answer = shared.post("typeform", big, SPECS["typeform"].headers(big))
    assert answer.status_code == 413, answer.text
