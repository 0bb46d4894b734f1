"""Chat-widget webhooks: Chatwoot, Rocket.Chat Livechat, tawk.to and Crisp (issue #6),
plus Intercom and Zendesk in the table of payload variants.

Pure tests of each provider's ``verify`` (on the contract's untouched sample bytes, at
the samples' instant) and ``parse``; then end to end through the real service under
uvicorn and the Rocket.Chat stand-in: every sample replayed three times, tampered,
stale, unconfigured, and a table of payload variants per provider.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.datastructures import Headers, QueryParams

from adapter.channels.webhooks import PayloadError, WebhookEvent, WebhookProvider, WebhookRequest
from adapter.core.payloads import MAX_CUSTOM_VALUE
from adapter.settings import Settings, SettingsError
from adapter.web.app import create_app
from handlers.chatwoot import ChatwootProvider
from handlers.crisp import CrispProvider
from handlers.rocketchat_livechat import RocketChatLivechatProvider
from handlers.tawkto import TawkToProvider
from tests.conftest import ADMIN_TOKEN, Service
from tests.rocketchat_standin import RocketChatStandIn
from tests.webhook_samples import (
    SAMPLE_INSTANT,
    SECRETS,
    load_sample,
    sample_events,
    sign,
    tamper,
)

PROVIDERS: dict[str, WebhookProvider] = {
    "chatwoot": ChatwootProvider(),
    "rocketchat": RocketChatLivechatProvider(),
    "tawkto": TawkToProvider(),
    "crisp": CrispProvider(),
}
SETTING = {
    "chatwoot": "CHATWOOT_WEBHOOK_SECRET",
    "rocketchat": "ROCKETCHAT_WEBHOOK_SECRET",
    "tawkto": "TAWKTO_WEBHOOK_SECRET",
    "crisp": "CRISP_WEBHOOK_SECRET",
}
ALL_SECRETS = {SETTING[p]: SECRETS[p] for p in PROVIDERS} | {"CRISP_WEBHOOK_KEY": ""}
NO_SECRETS = dict.fromkeys([*SETTING.values(), "CRISP_WEBHOOK_KEY"], "")
RELAXED = "name,email"


def request(
    body: bytes,
    headers: Mapping[str, str],
    *,
    query: str = "",
    settings: Mapping[str, str] | None = None,
) -> WebhookRequest:
    values = dict(settings or {})
    return WebhookRequest(
        body=body, headers=Headers(headers), query=QueryParams(query), lookup=values.get
    )


def sample_request(provider: str, event: str) -> WebhookRequest:
    body, headers = load_sample(provider, event)
    return request(body, headers, settings=ALL_SECRETS)


def one_byte_changed(
    provider: str, body: bytes, headers: Mapping[str, str]
) -> tuple[bytes, dict[str, str]]:
    """The request with one byte changed where the provider's authentication covers it.

    Rocket.Chat's token does not cover the body (it signs nothing), so the token changes.
    """
    if provider == "rocketchat":
        token = headers["X-RocketChat-Livechat-Token"].encode()
        return body, {**headers, "X-RocketChat-Livechat-Token": tamper(token).decode()}
    return tamper(body), dict(headers)


def encode(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


# =============================================================================================
# verify: exactly as each provider signs, on the untouched sample bytes at the samples' instant


@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_every_sample_verifies_at_its_instant_and_our_signer_reproduces_it(provider: str) -> None:
    verifier = PROVIDERS[provider]
    wrong = ALL_SECRETS | {SETTING[provider]: SECRETS[provider] + "x"}
    for name in sample_events(provider):
        body, headers = load_sample(provider, name)
        assert sign(provider, body, headers, now=SAMPLE_INSTANT) == headers, name
        hook = request(body, headers, settings=ALL_SECRETS)
        assert verifier.verify(hook, SECRETS[provider], now=SAMPLE_INSTANT), name
        other = request(body, headers, settings=wrong)
        assert not verifier.verify(other, SECRETS[provider] + "x", now=SAMPLE_INSTANT), name
        changed = request(*one_byte_changed(provider, body, headers), settings=ALL_SECRETS)
        assert not verifier.verify(changed, SECRETS[provider], now=SAMPLE_INSTANT), name


def test_our_signers_give_the_contract_test_vectors() -> None:
    vectors = [
        (
            "chatwoot",
            "contact_created",
            "X-Chatwoot-Signature",
            "sha256=ec709a245beb77b50104ae30935c90e69d45fcf20cd2412bdcb045f9458f93e3",
        ),
        ("tawkto", "chat_start", "X-Tawk-Signature", "8805aa58cc437d4d1ed53c832039500f68259861"),
        (
            "crisp",
            "session_set_email",
            "X-Crisp-Signature",
            "d850996849d28472368e8316a0a392869ff8f8189ce76d447f5b5a63379e6204",
        ),
    ]
    for provider, event, header, expected in vectors:
        body, _ = load_sample(provider, event)
        assert sign(provider, body, now=SAMPLE_INSTANT)[header] == expected


@pytest.mark.parametrize(
    ("provider", "event"), [("chatwoot", "contact_updated"), ("crisp", "session_set_email")]
)
@pytest.mark.parametrize("offset", [-301, 301])
def test_signed_timestamps_outside_the_window_are_refused(
    provider: str, event: str, offset: int
) -> None:
    hook = sample_request(provider, event)
    verifier = PROVIDERS[provider]
    assert verifier.verify(hook, SECRETS[provider], now=SAMPLE_INSTANT + offset * 0.99)
    assert not verifier.verify(hook, SECRETS[provider], now=SAMPLE_INSTANT + offset)


def test_chatwoot_refuses_missing_or_malformed_signature_headers() -> None:
    body, headers = load_sample("chatwoot", "contact_updated")
    verifier = PROVIDERS["chatwoot"]
    secret = SECRETS["chatwoot"]
    for drop in ("X-Chatwoot-Timestamp", "X-Chatwoot-Signature"):
        partial = {k: v for k, v in headers.items() if k != drop}
        assert not verifier.verify(request(body, partial), secret, now=SAMPLE_INSTANT)
    bare = {**headers, "X-Chatwoot-Signature": headers["X-Chatwoot-Signature"][7:]}  # no sha256=
    assert not verifier.verify(request(body, bare), secret, now=SAMPLE_INSTANT)
    shifted = {**headers, "X-Chatwoot-Timestamp": "1795514401"}  # the signature covers it
    assert not verifier.verify(request(body, shifted), secret, now=SAMPLE_INSTANT)


def test_rocketchat_token_must_match_exactly() -> None:
    body, headers = load_sample("rocketchat", "LivechatSessionStart")
    verifier = PROVIDERS["rocketchat"]
    secret = SECRETS["rocketchat"]
    assert verifier.verify(request(body, headers), secret, now=0)
    for token in (secret + " ", secret.upper(), secret[:-1], ""):
        hook = request(body, {**headers, "X-RocketChat-Livechat-Token": token})
        assert not verifier.verify(hook, secret, now=0), token
    assert not verifier.verify(request(body, {"Content-Type": "application/json"}), secret, now=0)


def test_tawkto_signature_is_sha1_of_the_raw_body() -> None:
    body, headers = load_sample("tawkto", "ticket_create")
    verifier = PROVIDERS["tawkto"]
    assert verifier.verify(request(body, headers), SECRETS["tawkto"], now=0)
    assert not verifier.verify(request(body, {}), SECRETS["tawkto"], now=0)
    pretty = json.dumps(json.loads(body), indent=2).encode()  # same content, other bytes
    assert not verifier.verify(request(pretty, headers), SECRETS["tawkto"], now=0)


def test_crisp_plugin_hooks_and_website_hooks_each_need_their_own_setting() -> None:
    body, headers = load_sample("crisp", "session_set_phone")
    verifier = PROVIDERS["crisp"]
    signed_only = {"CRISP_WEBHOOK_SECRET": SECRETS["crisp"]}
    key_only = {"CRISP_WEBHOOK_KEY": "url-key-0123456789"}
    both = signed_only | key_only
    unsigned = {"Content-Type": "application/json"}
    at = SAMPLE_INSTANT

    def ok(hdrs: Mapping[str, str], cfg: Mapping[str, str], query: str = "") -> bool:
        hook = request(body, hdrs, query=query, settings=cfg)
        return verifier.verify(hook, next(iter(cfg.values())), now=at)

    assert ok(headers, signed_only)
    assert not ok(unsigned, signed_only, "key=url-key-0123456789")  # signing secret ≠ URL key
    assert not ok(headers, key_only)  # a signature is not checked without the signing secret
    assert ok(unsigned, key_only, "key=url-key-0123456789")
    assert not ok(unsigned, key_only, "key=url-key-012345678")
    assert not ok(unsigned, key_only, "")
    assert ok(unsigned, both, "key=url-key-0123456789")
    assert ok(headers, both)
    assert not ok({**headers, "X-Crisp-Signature": "0" * 64}, both)


def test_crisp_signature_over_the_node_sdk_form_of_the_body_is_accepted() -> None:
    body, _ = load_sample("crisp", "session_set_nickname")
    pretty = json.dumps(json.loads(body), indent=2, ensure_ascii=False).encode()
    headers = sign("crisp", body, now=SAMPLE_INSTANT)  # signed over JSON.stringify(parsed)
    hook = request(pretty, headers, settings=ALL_SECRETS)
    assert PROVIDERS["crisp"].verify(hook, SECRETS["crisp"], now=SAMPLE_INSTANT)
    other = request(pretty.replace("Jürgen".encode(), b"Jurgen"), headers, settings=ALL_SECRETS)
    assert not PROVIDERS["crisp"].verify(other, SECRETS["crisp"], now=SAMPLE_INSTANT)


# =============================================================================================
# parse: the samples map to the contract's fields, ids and persons


SAMPLE_EVENTS: dict[tuple[str, str], dict[str, Any]] = {
    ("chatwoot", "contact_created"): {"ignored": "the contact has no email or phone yet"},
    ("chatwoot", "contact_updated"): {
        "fields": {
            "name": "Aiko Tanaka",
            "email": "aiko.tanaka@example.com",
            "phone": "+81312345678",
        },
        "person_key": "3:1042",
        "event_id": "c7d1a0e4-2b3f-4a56-9e8d-0f1a2b3c4d5e",
        "custom_fields": {"chatwoot_contact_id": "1042"},
    },
    ("chatwoot", "conversation_created"): {
        "person_key": "3:1042",
        "event_id": "3:conversation_created:118",
        "custom_fields": {
            "chatwoot_contact_id": "1042",
            "page_url": "https://www.example.com/pricing",
        },
    },
    ("chatwoot", "message_created"): {
        "person_key": "3:1042",
        "event_id": "3:message_created:5531",
    },
    ("rocketchat", "LivechatOfflineMessage"): {
        "fields": {
            "name": "Ingrid Sørensen",
            "email": "ingrid.sorensen@example.com",
            "phone": "+4915123456789",  # from the message text
        },
        "person_key": None,
    },
    ("rocketchat", "LivechatSessionStart"): {
        "fields": {
            "name": "Oluwaseun Adeyemi",
            "email": "seun.adeyemi@example.org",
            "phone": "+2348031234567",
        },
        "person_key": "6742f3a1c9e77b0012ab34cd",
        "custom_fields": {
            "company": "Adeyemi Logistics",
            "rocketchat_visitor_id": "6742f3a1c9e77b0012ab34cd",
            "department": "Ebk7wX3tqzQ9Jv2LM",
        },
    },
    ("rocketchat", "LivechatSession"): {"person_key": "6742f3a1c9e77b0012ab34cd"},
    ("tawkto", "chat_start"): {
        "fields": {
            "name": "María José Fernández",
            "email": "mariajose.fernandez@example.com",
            "phone": None,
        },
        "event_id": "a1f3c5e7-0b2d-4f6a-8c9e-1d3f5a7b9c0e",
        "person_key": "chat:70fe3290-99ad-11e9-a30a-51567162179f",
        "custom_fields": {
            "tawkto_chat_id": "70fe3290-99ad-11e9-a30a-51567162179f",
            "tawkto_property": "Bobs Burgers",
            "city": "madrid",
            "country": "ES",
        },
    },
    ("tawkto", "chat_end"): {"event_id": "b2e4d6f8-1c3e-4a5b-9d0f-2e4a6c8b0d1f"},
    ("tawkto", "ticket_create"): {
        "fields": {
            "name": "Kwame Mensah",
            "email": "kwame.mensah@example.org",
            "phone": "+14155552671",
        },
        "custom_fields": {"tawkto_ticket_id": "3", "tawkto_property": "Bobs Burgers"},
        "person_key": None,
    },
    ("crisp", "message_send"): {"ignored": "message:send carries no contact details"},
    ("crisp", "session_set_nickname"): {"fields": {"name": "Jürgen Weiß"}},
    ("crisp", "session_set_email"): {"fields": {"email": "juergen.weiss@example.org"}},
    ("crisp", "session_set_phone"): {"fields": {"phone": "+49 151 23456789"}},
}
CRISP_PERSON = "42286ab3-b29a-4fde-8538-da0ae501d825:session_36ba3566-9651-4790-afc8-ffedbccc317f"


@pytest.mark.parametrize(("provider", "event"), list(SAMPLE_EVENTS))
def test_samples_map_to_the_contract_fields(provider: str, event: str) -> None:
    expected = SAMPLE_EVENTS[(provider, event)]
    parsed = PROVIDERS[provider].parse(sample_request(provider, event))
    if "ignored" in expected:
        assert parsed.ignored == expected["ignored"]
        return
    assert parsed.ignored is None
    assert parsed.event_id
    for key, value in expected.items():
        actual = getattr(parsed, key)
        assert (dict(actual) if isinstance(actual, Mapping) else actual) == value, key
    if provider == "crisp":
        assert parsed.person_key == CRISP_PERSON
        assert parsed.custom_fields == {"crisp_session_id": CRISP_PERSON.split(":", 1)[1]}


def test_sample_sets_are_complete() -> None:
    for provider in PROVIDERS:
        assert {e for p, e in SAMPLE_EVENTS if p == provider} == set(sample_events(provider))


def parse(
    provider: str,
    payload: Any,
    headers: Mapping[str, str] | None = None,
    settings: Mapping[str, str] | None = None,
) -> WebhookEvent:
    body = payload if isinstance(payload, bytes) else encode(payload)
    return PROVIDERS[provider].parse(request(body, headers or {}, settings=settings))


def test_chatwoot_ignores_agents_typing_and_anonymous_contacts() -> None:
    body, _ = load_sample("chatwoot", "message_created")
    outgoing = {**json.loads(body), "message_type": "outgoing"}
    assert parse("chatwoot", outgoing).ignored == "not a visitor's message"
    assert parse("chatwoot", {"event": "conversation_typing_on"}).ignored
    named_by_chatwoot = {
        "event": "contact_updated",
        "id": 7,
        "name": "cool-dawn-77",
        "email": "a@example.com",
    }
    event = parse("chatwoot", named_by_chatwoot)
    assert event.fields["name"] is None  # a Haikunator name is no name
    assert event.fields["email"] == "a@example.com"
    assert event.event_id is not None and event.event_id.startswith("sha256:")  # no delivery id


def test_chatwoot_webwidget_triggered_keeps_the_page() -> None:
    event = parse(
        "chatwoot",
        {
            "event": "webwidget_triggered",
            "id": 5,
            "account": {"id": 9},
            "contact": {"id": 44, "name": "Ola Nordmann", "email": "ola@example.com"},
            "event_info": {"referer": "https://shop.example.com/cart"},
        },
        {"X-Chatwoot-Delivery": "d-1"},
    )
    assert event.fields == {"name": "Ola Nordmann", "email": "ola@example.com", "phone": None}
    assert event.person_key == "9:44"
    assert event.event_id == "d-1"
    assert event.custom_fields["page_url"] == "https://shop.example.com/cart"


def test_rocketchat_accepts_the_old_string_shapes_and_ignores_its_own_test() -> None:
    old = {
        "type": "LivechatSession",
        "_id": "r1",
        "visitor": {
            "_id": "v1",
            "name": "Ana",
            "email": "ana@example.com",
            "phone": "+5511912345678",
        },
    }
    assert parse("rocketchat", old).fields == {
        "name": "Ana",
        "email": "ana@example.com",
        "phone": "+5511912345678",
    }
    send_test = {**old, "_id": "fasd6f5a4sd6f8a4sdf"}
    assert parse("rocketchat", send_test).ignored == "Rocket.Chat's webhook test"
    assert parse("rocketchat", {"type": "LivechatSessionQueued", "_id": "r2"}).ignored
    nobody = {
        "type": "Message",
        "_id": "r3",
        "visitor": {"_id": "v3", "name": "guest-4", "phone": None},
    }
    assert parse("rocketchat", nobody).ignored == "the visitor left no email or phone"
    two_numbers = {
        "type": "LivechatOfflineMessage",
        "visitor": {"name": "Bo", "email": "bo@example.com"},
        "message": "call +44 20 7946 0958 or +1 415 555 2671",
    }
    assert parse("rocketchat", two_numbers).fields["phone"] is None  # ambiguous: none taken


def test_tawkto_placeholder_names_and_other_events() -> None:
    body, _ = load_sample("tawkto", "chat_start")
    unnamed = json.loads(body)
    unnamed["visitor"]["name"] = "V1561719148780935"
    assert parse("tawkto", unnamed).fields["name"] is None
    assert parse("tawkto", {"event": "chat:unknown"}).ignored
    transcript = {
        "event": "chat:transcript_created",
        "chat": {"id": "c9", "visitor": {"name": "Ivo", "email": "ivo@example.com"}},
    }
    event = parse("tawkto", transcript, {"X-Hook-Event-Id": "e9"})
    assert (event.fields["name"], event.event_id, event.person_key) == ("Ivo", "e9", "chat:c9")


def test_crisp_default_nicknames_and_people_profiles() -> None:
    nickname = {
        "website_id": "w",
        "event": "session:set_nickname",
        "data": {"session_id": "s", "nickname": "visitor493603"},
    }
    assert parse("crisp", nickname).ignored
    profile = {
        "website_id": "w",
        "event": "people:profile:updated",
        "data": {
            "people_id": "p1",
            "email": "eva@example.com",
            "update": {"person": {"nickname": "Eva Nováková", "phone": "+420 601 123 456"}},
        },
    }
    event = parse("crisp", profile)
    assert event.fields == {
        "email": "eva@example.com",
        "name": "Eva Nováková",
        "phone": "+420 601 123 456",
    }
    assert event.person_key == "w:people:p1"


def test_custom_prechat_questions_are_mapped_by_setting() -> None:
    contact = {
        "event": "contact_updated",
        "id": 8,
        "name": "Noor Haddad",
        "email": "noor@example.com",
        "phone_number": None,
        "custom_attributes": {"mobile": "+44 20 7946 0958"},
    }
    assert parse("chatwoot", contact).fields["phone"] is None
    mapping = {"CHATWOOT_FIELD_PHONE": "whatsapp, mobile"}
    assert parse("chatwoot", contact, settings=mapping).fields["phone"] == "+44 20 7946 0958"
    body, _ = load_sample("chatwoot", "conversation_created")
    conversation = json.loads(body)
    conversation["custom_attributes"] = {"whatsapp": "+81 90-1234-5678"}
    event = parse("chatwoot", conversation, settings=mapping)
    assert event.fields["phone"] == "+81 90-1234-5678"  # the answer wins over the profile

    body, _ = load_sample("rocketchat", "LivechatSessionStart")
    room = json.loads(body)
    room["visitor"]["customFields"]["telefone"] = "+55 11 91234-5678"
    assert parse("rocketchat", room).fields["phone"] == "+2348031234567"
    mapped = parse("rocketchat", room, settings={"ROCKETCHAT_FIELD_PHONE": "telefone"})
    assert mapped.fields["phone"] == "+55 11 91234-5678"

    data = {
        "website_id": "w",
        "event": "session:set_data",
        "data": {"session_id": "s", "data": {"tel": "+49 151 23456789", "plan": "pro"}},
    }
    assert parse("crisp", data).ignored
    event = parse("crisp", data, settings={"CRISP_FIELD_PHONE": "tel"})
    assert (event.fields["phone"], event.person_key) == ("+49 151 23456789", "w:s")


@pytest.mark.parametrize(
    ("provider", "payload", "needle"),
    [
        ("chatwoot", b"{not json", "not valid JSON"),
        ("chatwoot", [1, 2], "JSON object"),
        ("chatwoot", {"id": 1}, "'event'"),
        ("chatwoot", {"event": "conversation_created", "meta": {"sender": "x"}}, "meta.sender"),
        ("rocketchat", b"\xff\xfe", "not valid JSON"),
        ("rocketchat", {"visitor": {}}, "'type'"),
        ("rocketchat", {"type": "LivechatOfflineMessage", "visitor": "x"}, "'visitor'"),
        ("tawkto", {"event": "chat:start", "visitor": None}, "'visitor'"),
        ("tawkto", "chat:start", "JSON object"),
        ("crisp", {"event": "session:set_email", "data": []}, "'data'"),
        ("crisp", {"event": "session:set_email", "data": {"email": "a@b.c"}}, "session_id"),
    ],
)
def test_wrong_shapes_are_payload_errors(provider: str, payload: Any, needle: str) -> None:
    with pytest.raises(PayloadError, match=needle):
        parse(provider, payload)


# =============================================================================================
# end to end: the real service under uvicorn, the Rocket.Chat stand-in


@dataclass
class Posted:
    response: httpx.Response
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def delivery_id(self) -> str | None:
        value = self.body.get("delivery_id")
        return str(value) if value else None


def post(
    service: Service,
    provider: str,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    query: str = "",
    fresh: bool = True,
) -> Posted:
    sent = sign(provider, body, headers) if fresh else dict(headers or {})
    response = service.client.post(f"/webhooks/{provider}{query}", content=body, headers=sent)
    try:
        parsed = response.json()
    except ValueError:
        parsed = {}
    return Posted(response, parsed if isinstance(parsed, dict) else {})


def visitor(standin: RocketChatStandIn, email: str) -> dict[str, Any]:
    found = [
        v
        for v in standin.visitors.values()
        if any(e.get("address") == email for e in v.get("visitorEmails") or [])
    ]
    assert len(found) == 1, f"{len(found)} visitors with {email}"
    return found[0]


def phones(doc: Mapping[str, Any]) -> list[str]:
    return [p["phoneNumber"] for p in doc.get("phone") or []]


@pytest.fixture
def chat_service(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> Callable[..., Service]:
    """Starts a service with every chat provider's secret set (plus overrides)."""
    for cf in (
        "chatwoot_contact_id",
        "page_url",
        "rocketchat_visitor_id",
        "department",
        "company",
        "tawkto_property",
        "tawkto_chat_id",
        "tawkto_ticket_id",
        "crisp_session_id",
        "intercom_contact_id",
        "zendesk_ticket_id",
    ):
        standin.add_custom_field(cf)

    def start(channel_settings: Mapping[str, str] | None = None, **overrides: Any) -> Service:
        configured = ALL_SECRETS | dict(channel_settings or {})
        return start_service(make_settings(channel_settings=configured, **overrides))

    return start


# Each provider's samples → the people at the stand-in (name, email, phones) and some of the
# provider extras they carry as custom fields.
REPLAYS: dict[str, dict[str, Any]] = {
    "chatwoot": {
        "people": [("Aiko Tanaka", "aiko.tanaka@example.com", ["+81312345678"])],
        "custom": {"chatwoot_contact_id": "1042", "page_url": "https://www.example.com/pricing"},
    },
    "rocketchat": {
        "people": [
            ("Ingrid Sørensen", "ingrid.sorensen@example.com", ["+4915123456789"]),
            ("Oluwaseun Adeyemi", "seun.adeyemi@example.org", ["+2348031234567"]),
        ],
        "custom": {"company": "Adeyemi Logistics", "department": "Ebk7wX3tqzQ9Jv2LM"},
    },
    "tawkto": {  # chat events carry no phone: tawk.to alone requires name and email only
        "settings": {"channel_settings": {"TAWKTO_REQUIRED_FIELDS": RELAXED}},
        "people": [
            ("María José Fernández", "mariajose.fernandez@example.com", []),
            ("Kwame Mensah", "kwame.mensah@example.org", ["+14155552671"]),
        ],
        "custom": {"tawkto_property": "Bobs Burgers"},
    },
    "crisp": {
        "people": [("Jürgen Weiß", "juergen.weiss@example.org", ["+4915123456789"])],
        "custom": {"crisp_session_id": "session_36ba3566-9651-4790-afc8-ffedbccc317f"},
    },
}


@pytest.mark.parametrize("provider", list(REPLAYS))
def test_every_sample_replayed_three_times_registers_the_right_contact_once(
    provider: str, chat_service: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    expected = REPLAYS[provider]
    service = chat_service(**expected.get("settings", {}))
    accepted: dict[str, str] = {}
    for event in sample_events(provider):
        body, headers = load_sample(provider, event)
        headers = sign(provider, body, headers)  # fresh timestamp, same recipe
        first, *again = [post(service, provider, body, headers, fresh=False) for _ in range(3)]
        assert first.response.status_code == 200, (event, first.response.text)
        if first.delivery_id is None:
            assert first.body["ignored"], event
            assert all(a.body == first.body for a in again)
            continue
        for retry in again:
            assert retry.response.status_code == 200
            assert retry.body["duplicate"] is True
            assert retry.delivery_id == first.delivery_id
        accepted[event] = first.delivery_id
        service.settled(first.delivery_id)  # one event at a time: deterministic call counts

    assert len(standin.visitors) == len(expected["people"])
    for name, email, numbers in expected["people"]:
        doc = visitor(standin, email)
        assert doc["name"] == name
        assert phones(doc) == numbers
    # The replays stored nothing; a person whose details came in several events (Crisp)
    # has one row, completed in place.
    assert service.stored_rows() == len(set(accepted.values()))
    records = [service.delivery(i) for i in set(accepted.values())]
    delivered = [r for r in records if r["status"] == "delivered"]
    assert all(r["attempts"] == 1 for r in delivered)
    # exactly one registration per accepted event that was complete, none for the replays
    assert sum(standin.contact_posts_per_token().values()) == len(delivered)
    livechat_data: dict[str, str] = {}
    for doc in standin.visitors.values():
        livechat_data.update(doc.get("livechatData") or {})
    assert expected["custom"].items() <= livechat_data.items()


TAWKTO_GUIDANCE = "is required (tawk.to never sends a phone: set TAWKTO_REQUIRED_FIELDS=name,email)"


def test_tawkto_chat_visitors_without_phone_are_rejected_when_phone_is_required(
    chat_service: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    service = chat_service()  # CONTACT_REQUIRED_FIELDS defaults to name,email,phone
    body, headers = load_sample("tawkto", "chat_start")
    answer = post(service, "tawkto", body, headers)
    assert answer.response.status_code == 200
    assert answer.body["status"] == "rejected"
    assert answer.body["errors"] == {"phone": TAWKTO_GUIDANCE}
    record = service.delivery(str(answer.delivery_id))
    assert record["status"] == "rejected"
    assert record["errors"] == {"phone": TAWKTO_GUIDANCE}  # says what to do
    body, headers = load_sample("tawkto", "ticket_create")  # the ticket's text has a phone
    service.settled(str(post(service, "tawkto", body, headers).delivery_id))
    assert phones(visitor(standin, "kwame.mensah@example.org")) == ["+14155552671"]
    assert len(standin.visitors) == 1


def test_provider_required_fields_override_only_that_provider(
    chat_service: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    service = chat_service(channel_settings={"TAWKTO_REQUIRED_FIELDS": "name, EMAIL"})
    body, headers = load_sample("tawkto", "chat_start")
    record = service.settled(str(post(service, "tawkto", body, headers).delivery_id))
    assert record["status"] == "delivered"
    doc = visitor(standin, "mariajose.fernandez@example.com")
    assert (doc["name"], phones(doc)) == ("María José Fernández", [])
    # Every other provider still follows CONTACT_REQUIRED_FIELDS (name,email,phone).
    no_phone = {"event": "contact_updated", "id": 77, "name": "Ben Ode", "email": "b@example.com"}
    other = post(service, "chatwoot", encode(no_phone))
    assert service.delivery(str(other.delivery_id))["errors"] == {"phone": "is required"}
    assert len(standin.visitors) == 1


def test_rocketchat_offline_messages_without_a_phone_say_which_setting_keeps_them(
    chat_service: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    offline = {
        "type": "LivechatOfflineMessage",
        "sentAt": "2026-11-24T10:00:00.000Z",
        "visitor": {"name": "Bo Berg", "email": "bo.berg@example.com"},
        "message": "Please call me back tomorrow.",
    }
    strict = chat_service()
    answer = post(strict, "rocketchat", encode(offline))
    assert answer.response.status_code == 200 and answer.body["status"] == "rejected"
    assert strict.delivery(str(answer.delivery_id))["errors"] == {
        "phone": "is required (Rocket.Chat Livechat LivechatOfflineMessage never sends a "
        "phone: set ROCKETCHAT_REQUIRED_FIELDS=name,email)"
    }
    assert "errors" not in answer.body  # Rocket.Chat keeps our answer in the room
    strict.stop()

    relaxed = chat_service(channel_settings={"ROCKETCHAT_REQUIRED_FIELDS": RELAXED})
    offline["message"] = "Second try: please call me back."  # the first one was kept, rejected
    record = relaxed.settled(str(post(relaxed, "rocketchat", encode(offline)).delivery_id))
    assert record["status"] == "delivered"
    assert visitor(standin, "bo.berg@example.com")["name"] == "Bo Berg"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TAWKTO_REQUIRED_FIELDS", "email,phone"),  # no name
        ("TAWKTO_REQUIRED_FIELDS", "name"),  # neither email nor phone
        ("CHATWOOT_REQUIRED_FIELDS", "name,fax"),
        ("WEBHOOK_RECORD_IGNORED", "sometimes"),
    ],
)
def test_malformed_webhook_settings_stop_the_service_naming_the_variable(
    variable: str, value: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(channel_settings=ALL_SECRETS | {variable: value})
    with pytest.raises(SettingsError, match=f"^setting {variable} \\(got '{value}'\\): expected"):
        create_app(settings)


def test_ignored_events_are_kept_as_ignored_rows_when_asked(
    chat_service: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    service = chat_service(channel_settings={"WEBHOOK_RECORD_IGNORED": "true"})
    created, _ = load_sample("chatwoot", "contact_created")  # an anonymous widget contact
    first, again = (post(service, "chatwoot", created) for _ in range(2))
    assert first.response.status_code == 200
    assert first.body["ignored"] == "the contact has no email or phone yet"
    assert first.body["status"] == "ignored" and first.delivery_id
    assert again.delivery_id == first.delivery_id and again.body["duplicate"] is True
    body, headers = load_sample("crisp", "message_send")
    crisp = post(service, "crisp", body, headers)
    assert crisp.body["status"] == "ignored"
    assert service.stored_rows() == 2

    record = service.delivery(first.delivery_id)
    assert record["status"] == "ignored"
    assert record["source"] == "webhook:chatwoot"
    assert record["last_error"] == "contact_created: the contact has no email or phone yet"
    listed = service.client.get(
        "/deliveries?status=ignored", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert listed.status_code == 200, listed.text
    rows = listed.json()["deliveries"]
    assert {r["source"] for r in rows} == {"webhook:chatwoot", "webhook:crisp"}
    assert listed.json()["counts"]["ignored"] == 2
    assert standin.contact_posts_per_token() == {}  # nothing is ever registered for them


def test_rocketchat_visitor_custom_fields_are_capped(
    make_settings: Callable[..., Settings],
) -> None:
    body, _ = load_sample("rocketchat", "LivechatSessionStart")
    room = json.loads(body)
    room["visitor"]["customFields"] = {"notes": "x" * 50_000, "k" * 500: "v", "blank": "  "}
    extras = parse("rocketchat", room).custom_fields
    assert len(extras["notes"]) == MAX_CUSTOM_VALUE
    assert extras["k" * 100] == "v"
    assert "blank" not in extras


def test_crisp_visitor_messages_give_the_nickname_once_per_session(
    chat_service: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    body, _ = load_sample("crisp", "message_send")
    message = json.loads(body)
    message["data"]["user"]["nickname"] = "Jürgen Weiß"
    event = parse("crisp", message)
    assert event.fields == {"name": "Jürgen Weiß"} and event.person_key == CRISP_PERSON
    later = {**message, "data": {**message["data"], "content": "Noch da?", "fingerprint": 2}}
    assert parse("crisp", later).event_id == event.event_id  # one name, one submission
    operator = {**message, "data": {**message["data"], "from": "operator"}}
    assert parse("crisp", operator).ignored  # an agent's nickname is not the visitor's

    service = chat_service(contact_required_fields=RELAXED)
    email_body, email_headers = load_sample("crisp", "session_set_email")
    post(service, "crisp", email_body, email_headers)
    answers = [post(service, "crisp", encode(m)) for m in (message, later)]
    assert answers[1].body["duplicate"] is True
    assert service.settled(str(answers[0].delivery_id))["status"] == "delivered"
    assert visitor(standin, "juergen.weiss@example.org")["name"] == "Jürgen Weiß"
    assert list(standin.contact_posts_per_token().values()) == [1]


def test_crisp_pieces_become_one_contact_that_grows(
    chat_service: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    service = chat_service(contact_required_fields=RELAXED)
    order = ["session_set_email", "session_set_nickname", "session_set_phone"]
    ids = []
    for event in order:
        body, headers = load_sample("crisp", event)
        answer = post(service, "crisp", body, headers)
        assert answer.response.status_code == 200
        ids.append(service.settled(str(answer.delivery_id)))
    assert [r["status"] for r in ids] == ["rejected", "delivered", "delivered"]
    assert ids[0]["errors"] == {"name": "is required"}
    # The row rejected while the name was missing became the person's delivery: operators
    # see no stale rejection for someone who was registered.
    assert ids[1]["id"] == ids[0]["id"]
    assert service.delivery(ids[0]["id"])["errors"] == {}
    doc = visitor(standin, "juergen.weiss@example.org")
    assert (doc["name"], phones(doc)) == ("Jürgen Weiß", ["+4915123456789"])
    assert len(standin.visitors) == 1
    assert list(standin.contact_posts_per_token().values()) == [2]  # each carried all known


def test_chatwoot_anonymous_contact_then_prechat_form_is_one_contact(
    chat_service: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    service = chat_service(contact_required_fields=RELAXED)
    created, _ = load_sample("chatwoot", "contact_created")
    ignored = post(service, "chatwoot", created)
    assert ignored.response.status_code == 200 and ignored.body["ignored"]
    base = json.loads(created)
    first = {**base, "event": "contact_updated", "name": "Aiko Tanaka", "email": "aiko@example.com"}
    record = service.settled(str(post(service, "chatwoot", encode(first)).delivery_id))
    assert record["status"] == "delivered"
    later = {**first, "phone_number": "+81 3-1234-5678", "name": "Aiko T."}
    again = service.settled(str(post(service, "chatwoot", encode(later)).delivery_id))
    assert again["contact_id"] == record["contact_id"]
    doc = standin.visitors[record["contact_id"]]
    assert (doc["name"], phones(doc)) == ("Aiko T.", ["+81312345678"])
    assert len(standin.visitors) == 1


def test_rocketchat_gets_exactly_200_and_no_personal_data_back(
    chat_service: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    service = chat_service()
    body, headers = load_sample("rocketchat", "LivechatSessionStart")
    answer = post(service, "rocketchat", body, headers)
    assert answer.response.status_code == 200
    assert set(answer.body) <= {"ok", "delivery_id", "status", "contact_id"}
    broken = json.loads(body)
    broken["_id"] = "another-room"
    broken["visitor"].update(_id="v2", email=[{"address": "typo@example.com"}])
    broken["visitor"]["phone"] = [{"phoneNumber": "+1 555"}]
    answer = post(service, "rocketchat", encode(broken))
    assert answer.response.status_code == 200
    assert answer.body["status"] == "rejected"
    assert "+1 555" not in answer.response.text and "typo@" not in answer.response.text
    assert set(answer.body) <= {"ok", "delivery_id", "status", "contact_id"}
    assert (
        "not a valid phone number" in service.delivery(str(answer.delivery_id))["errors"]["phone"]
    )


def test_refused_requests_store_nothing(
    chat_service: Callable[..., Service],
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    service = chat_service(channel_settings={"CRISP_WEBHOOK_KEY": "url-key-0123456789"})
    for provider in PROVIDERS:
        for event in sample_events(provider):
            body, headers = load_sample(provider, event)
            fresh = sign(provider, body, headers)
            changed = post(service, provider, *one_byte_changed(provider, body, fresh), fresh=False)
            assert changed.response.status_code == 401, (provider, event)
            assert SETTING[provider] in changed.body["error"]
            if provider in ("chatwoot", "crisp"):
                stale = sign(provider, body, headers, now=time.time() - 301)
                assert post(service, provider, body, stale, fresh=False).response.status_code == 401
                untouched = post(service, provider, body, headers, fresh=False)  # 2026 instant
                assert untouched.response.status_code == 401
            wrong = sign(provider, body, headers, secret="not-the-secret")
            assert post(service, provider, body, wrong, fresh=False).response.status_code == 401
        too_big = post(service, provider, b"{" + b" " * 300_000 + b"}")
        assert too_big.response.status_code == 413, provider
        bad_json = post(service, provider, b"{not json")
        assert bad_json.response.status_code == 400, provider
        assert "not valid JSON" in bad_json.body["error"]
        deep = post(service, provider, b"[" * 200_000)  # RecursionError in json.loads: was a 500
        assert deep.response.status_code == 400, (provider, deep.response.text)
        assert "not valid JSON (nested too deeply)" in deep.body["error"]
    crisp_body, _ = load_sample("crisp", "session_set_email")
    unsigned = {"Content-Type": "application/json"}
    assert (
        post(
            service, "crisp", crisp_body, unsigned, query="?key=nope", fresh=False
        ).response.status_code
        == 401
    )
    assert service.client.post("/webhooks/nosuchwidget", content=b"{}").status_code == 404
    assert service.stored_rows() == 0

    off = start_service(make_settings(channel_settings=NO_SECRETS))
    for provider in PROVIDERS:
        body, headers = load_sample(provider, sample_events(provider)[-1])
        answer = post(off, provider, body, headers)
        assert answer.response.status_code == 503, provider
        assert SETTING[provider] in answer.body["error"]
    assert "CRISP_WEBHOOK_KEY" in post(off, "crisp", crisp_body).body["error"]
    assert off.stored_rows() == 0
    assert standin.contact_posts_per_token() == {}


def test_crisp_website_hook_with_the_url_key(
    chat_service: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    service = chat_service(
        channel_settings={"CRISP_WEBHOOK_SECRET": "", "CRISP_WEBHOOK_KEY": "url-key-0123456789"},
        contact_required_fields=RELAXED,
    )
    unsigned = {"Content-Type": "application/json"}
    last = None
    for event in ("session_set_nickname", "session_set_email"):
        body, _ = load_sample("crisp", event)
        answer = post(
            service, "crisp", body, unsigned, query="?key=url-key-0123456789", fresh=False
        )
        assert answer.response.status_code == 200
        last = answer.delivery_id
    service.settled(str(last))
    assert visitor(standin, "juergen.weiss@example.org")["name"] == "Jürgen Weiß"
    body, headers = load_sample("crisp", "session_set_phone")
    signed_without_key = post(service, "crisp", body, headers)  # no signing secret configured
    assert signed_without_key.response.status_code == 401


# =============================================================================================
# payload variants, per provider, through the service (DEFAULT_PHONE_REGION=GB)


@dataclass(frozen=True)
class Variant:
    label: str
    name: str | None
    email: str | None
    phone: str | None
    strict: tuple[Any, ...]  # expected with CONTACT_REQUIRED_FIELDS=name,email,phone
    relaxed: tuple[Any, ...]  # expected with name,email
    extra: bool = False


# ("delivered", E.164 or None) | ("rejected", {field: message}) | ("warned", field) | ("ignored",)
VARIANTS = [
    Variant(
        "unicode name",
        "Zoë Łukasiewicz-Øster",
        "zoe@example.com",
        "+44 20 7946 0958",
        ("delivered", "+442079460958"),
        ("delivered", "+442079460958"),
    ),
    Variant(
        "CJK name",
        "李小龍",
        "li@example.com",
        "+81 3-1234-5678",
        ("delivered", "+81312345678"),
        ("delivered", "+81312345678"),
    ),
    Variant(
        "number without + (GB)",
        "Chris Doe",
        "chris@example.com",
        "020 7946 0959",
        ("delivered", "+442079460959"),
        ("delivered", "+442079460959"),
    ),
    Variant(
        "missing email",
        "Ana Lima",
        None,
        "+55 11 91234-5678",
        ("rejected", {"email": "is required"}),
        ("rejected", {"email": "is required"}),
    ),
    Variant(
        "missing phone",
        "Ben Ode",
        "ben@example.com",
        None,
        ("rejected", {"phone": "is required"}),
        ("delivered", None),
    ),
    Variant(
        "invalid phone",
        "Cy Twombly",
        "cy@example.com",
        "+1 555",
        ("rejected", {"phone": "'+1 555' is not a valid phone number"}),
        ("warned", "phone"),
    ),
    Variant(
        "extra fields",
        "Dee Extra",
        "dee@example.com",
        "+1 415 555 2671",
        ("delivered", "+14155552671"),
        ("delivered", "+14155552671"),
        extra=True,
    ),
    Variant(
        "no contact details",
        "Eve Anon",
        None,
        None,
        ("ignored",),
        ("ignored",),
    ),
]


def _chatwoot_bodies(v: Variant, n: int) -> list[bytes]:
    payload: dict[str, Any] = {
        "account": {"id": 3, "name": "Acme Support"},
        "additional_attributes": {},
        "custom_attributes": {},
        "email": v.email,
        "id": 5000 + n,
        "identifier": None,
        "name": v.name,
        "phone_number": v.phone,
        "thumbnail": "",
        "event": "contact_updated",
    }
    if v.extra:
        payload["custom_attributes"] = {"plan": "pro", "seats": 3}
        payload["additional_attributes"] = {"company_name": "Extra Ltd", "social": {"x": "@dee"}}
        payload["brand_new_field"] = [1, {"nested": True}]
    return [encode(payload)]


def _rocketchat_bodies(v: Variant, n: int) -> list[bytes]:
    guest: dict[str, Any] = {"_id": f"visitor-{n}", "token": f"tok-{n}", "username": f"guest-{n}"}
    if v.name:
        guest["name"] = v.name
    if v.email:
        guest["email"] = [{"address": v.email}]
    guest["phone"] = [{"phoneNumber": v.phone}] if v.phone else None
    payload: dict[str, Any] = {
        "_id": f"room-{n}",
        "type": "LivechatSessionStart",
        "visitor": guest,
        "messages": [],
    }
    if v.extra:
        payload["crmData"] = {"whatever": 1}
        guest["customFields"] = {"company": "Extra Ltd", "score": 7}
        guest["os"] = "Plan 9"
    return [encode(payload)]


def _crisp_bodies(v: Variant, n: int) -> list[bytes]:
    site = "42286ab3-b29a-4fde-8538-da0ae501d825"
    session = f"session_variant_{n}"
    events = []
    for event, key, value in (
        ("session:set_nickname", "nickname", v.name),
        ("session:set_email", "email", v.email),
        ("session:set_phone", "phone", v.phone),
    ):
        if value is None:
            continue
        data: dict[str, Any] = {
            "website_id": site,
            "session_id": session,
            "inbox_id": None,
            key: value,
        }
        if v.extra:
            data["extra"] = {"fresh": ["field"]}
        events.append(
            {"website_id": site, "event": event, "data": data, "timestamp": 1795514400017 + n}
        )
    if v.email is None and v.phone is None:  # a message: no contact details
        events = [
            {
                "website_id": site,
                "event": "message:send",
                "data": {"session_id": session, "from": "user", "content": "hi", "fingerprint": n},
            }
        ]
    return [encode(e) for e in events]


def _intercom_bodies(v: Variant, n: int) -> list[bytes]:
    item: dict[str, Any] = {
        "type": "contact",
        "id": f"6650c0ffee{n:04d}",
        "role": "lead",
        "name": v.name,
        "email": v.email,
        "phone": v.phone,
    }
    if v.extra:
        item["custom_attributes"] = {"plan": "pro", "seats": 3}
        item["brand_new_field"] = [1, {"nested": True}]
    payload = {
        "type": "notification_event",
        "id": f"notif_variant_{n}",
        "topic": "contact.lead.created",
        "app_id": "abc123",
        "data": {"type": "notification_event_data", "item": item},
        "delivery_attempts": 1,
    }
    return [encode(payload)]


def _zendesk_bodies(v: Variant, n: int) -> list[bytes]:
    # The trigger template of docs/webhooks-zendesk.md; Zendesk renders a missing value empty.
    payload: dict[str, Any] = {
        "event": "ticket.created",
        "ticket_id": str(7000 + n),
        "requester_id": str(9000 + n),
        "requester_name": v.name or "",
        "requester_email": v.email or "",
        "requester_phone": v.phone or "",
    }
    if v.extra:
        payload["organization"] = {"name": "Extra Ltd", "tags": ["a", "b"]}
    return [encode(payload)]


BUILDERS: dict[str, Callable[[Variant, int], list[bytes]]] = {
    "chatwoot": _chatwoot_bodies,
    "rocketchat": _rocketchat_bodies,
    "crisp": _crisp_bodies,
    "intercom": _intercom_bodies,
    "zendesk": _zendesk_bodies,
}
# The extras of the "extra fields" variant n that must reach Rocket.Chat as custom fields.
EXTRAS: dict[str, Callable[[int], dict[str, str]]] = {
    "chatwoot": lambda n: {"chatwoot_contact_id": str(5000 + n)},
    "rocketchat": lambda n: {"company": "Extra Ltd", "rocketchat_visitor_id": f"visitor-{n}"},
    "crisp": lambda n: {"crisp_session_id": f"session_variant_{n}"},
    "intercom": lambda n: {"intercom_contact_id": f"6650c0ffee{n:04d}"},
    "zendesk": lambda n: {"zendesk_ticket_id": str(7000 + n)},
}
# Providers beyond this file's four, turned on for the variants.
MORE_SECRETS = {"INTERCOM_WEBHOOK_SECRET": SECRETS["intercom"]}
MORE_SECRETS["ZENDESK_WEBHOOK_SECRET"] = SECRETS["zendesk"]


def check_variant(
    service: Service,
    standin: RocketChatStandIn,
    provider: str,
    v: Variant,
    expect: tuple[Any, ...],
    bodies: list[bytes],
    extras: Mapping[str, str],
) -> None:
    answers = [post(service, provider, body) for body in bodies]
    assert all(a.response.status_code == 200 for a in answers), v.label
    last = answers[-1]
    if expect[0] == "ignored":
        assert last.delivery_id is None and last.body["ignored"], v.label
        return
    record = service.settled(str(last.delivery_id))
    if expect[0] == "rejected":
        assert record["status"] == "rejected", (v.label, record)
        assert record["errors"] == expect[1], v.label
        return
    assert record["status"] == "delivered", (v.label, record)
    assert v.email is not None
    doc = visitor(standin, v.email)
    assert doc["name"] == v.name, v.label
    if expect[0] == "warned":
        assert phones(doc) == [], v.label
        assert "not a valid phone number" in record["warnings"][expect[1]], v.label
    else:
        assert phones(doc) == ([expect[1]] if expect[1] else []), v.label
    if v.extra:
        assert extras.items() <= (doc.get("livechatData") or {}).items(), v.label


@pytest.mark.parametrize("profile", ["strict", "relaxed"])
@pytest.mark.parametrize("provider", list(BUILDERS))
def test_payload_variants(
    provider: str, profile: str, chat_service: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    required = RELAXED if profile == "relaxed" else "name,email,phone"
    service = chat_service(
        MORE_SECRETS, default_phone_region="GB", contact_required_fields=required
    )
    for n, v in enumerate(VARIANTS):
        expect = v.relaxed if profile == "relaxed" else v.strict
        bodies = BUILDERS[provider](v, n)
        check_variant(service, standin, provider, v, expect, bodies, EXTRAS[provider](n))


TAWKTO_VARIANTS: list[tuple[str, dict[str, Any], tuple[Any, ...], tuple[Any, ...]]] = [
    (
        "unicode chat visitor",
        {
            "event": "chat:start",
            "visitor": {"name": "Þórdís Ægisdóttir", "email": "thordis@example.com"},
        },
        ("rejected", {"phone": TAWKTO_GUIDANCE}),
        ("delivered", "Þórdís Ægisdóttir", "thordis@example.com", None),
    ),
    (
        "ticket with an international number in its text",
        {
            "event": "ticket:create",
            "requester": {"name": "Kofi Boateng", "email": "kofi@example.com"},
            "ticket": {"id": "t1", "humanId": 9, "message": "Ring me: +44 20 7946 0958, thanks"},
        },
        ("delivered", "Kofi Boateng", "kofi@example.com", "+442079460958"),
        ("delivered", "Kofi Boateng", "kofi@example.com", "+442079460958"),
    ),
    (
        "national number in a phone field (GB)",
        {
            "event": "chat:end",
            "visitor": {"name": "Alf Green", "email": "alf@example.com", "phone": "020 7946 0960"},
        },
        ("delivered", "Alf Green", "alf@example.com", "+442079460960"),
        ("delivered", "Alf Green", "alf@example.com", "+442079460960"),
    ),
    (
        "invalid phone in a phone field",
        {
            "event": "chat:end",
            "visitor": {"name": "Bea Bad", "email": "bea@example.com", "phone": "12"},
        },
        ("rejected", {"phone": "'12' is not a valid phone number"}),
        ("warned", "Bea Bad", "bea@example.com", None),
    ),
    (
        "missing email",
        {"event": "chat:start", "visitor": {"name": "Cai No-Mail"}},
        ("ignored",),
        ("ignored",),
    ),
    (
        "extra fields",
        {
            "event": "chat:start",
            "visitor": {
                "name": "Dora Extra",
                "email": "dora@example.com",
                "city": "oslo",
                "new": [1],
            },
            "property": {"id": "p", "name": "Shop", "plan": {"tier": 2}},
            "surprise": True,
        },
        ("rejected", {"phone": TAWKTO_GUIDANCE}),
        ("delivered", "Dora Extra", "dora@example.com", None),
    ),
]


@pytest.mark.parametrize("profile", ["strict", "relaxed"])
def test_tawkto_payload_variants(
    profile: str, chat_service: Callable[..., Service], standin: RocketChatStandIn
) -> None:
    required = RELAXED if profile == "relaxed" else "name,email,phone"
    service = chat_service(default_phone_region="GB", contact_required_fields=required)
    for n, (label, payload, strict, relaxed) in enumerate(TAWKTO_VARIANTS):
        expect = relaxed if profile == "relaxed" else strict
        payload = {**payload, "chatId": f"chat-{n}", "time": "2026-11-24T10:00:00.000Z"}
        answer = post(service, "tawkto", encode(payload), {"X-Hook-Event-Id": f"evt-{n}"})
        assert answer.response.status_code == 200, label
        if expect[0] == "ignored":
            assert answer.body["ignored"], label
            continue
        record = service.settled(str(answer.delivery_id))
        if expect[0] == "rejected":
            assert (record["status"], record["errors"]) == ("rejected", expect[1]), label
            continue
        assert record["status"] == "delivered", (label, record)
        _, name, email, number = expect
        doc = visitor(standin, email)
        assert (doc["name"], phones(doc)) == (name, [number] if number else []), label
        if expect[0] == "warned":
            assert "phone" in record["warnings"], label
        if label == "extra fields":
            kept = {"tawkto_property": "Shop", "tawkto_chat_id": f"chat-{n}"}
            assert kept.items() <= (doc.get("livechatData") or {}).items(), label
