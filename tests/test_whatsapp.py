"""WhatsApp Cloud API, end to end: the service under uvicorn, driven as Meta drives a
webhook (the contract's signed samples; re-dated and re-signed with the recipe where a
fresh message is needed), answering through a Graph API stand-in."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from adapter.core.conversation_text import MESSAGES
from adapter.settings import Settings, SettingsError
from handlers.whatsapp import WhatsAppChannel, signature_ok
from tests.conftest import Service, wait_until
from tests.messenger_standin import (
    SAMPLES,
    WA_SECRET,
    MessengerStandIn,
    load_http,
    sign_whatsapp,
)
from tests.rocketchat_standin import RocketChatStandIn

OURS = "106540352242922"
JOSE = f"{OURS}:34612345678"
_ids = itertools.count(1)


@pytest.fixture
def messenger() -> Iterator[MessengerStandIn]:
    standin = MessengerStandIn()
    with standin.serve():
        yield standin


@pytest.fixture
def start_whatsapp(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    messenger: MessengerStandIn,
) -> Callable[..., Service]:
    def start(**channel: str) -> Service:
        return start_service(make_settings(channel_settings=messenger.whatsapp_settings(**channel)))

    return start


def fresh(name: str, *, text: str | None = None, sender: str | None = None) -> bytes:
    """A sample notification with a new message id and today's timestamp (JSON as Meta
    writes it: ASCII with \\u escapes)."""
    _, _, _, body = load_http(SAMPLES / "whatsapp" / f"{name}.http")
    data = json.loads(body)
    value = data["entry"][0]["changes"][0]["value"]
    for message in value.get("messages", []):
        message["id"] = f"wamid.TEST{next(_ids)}"
        message["timestamp"] = str(int(time.time()))
        if text is not None:
            message["text"]["body"] = text
        if sender is not None:
            message["from"] = sender
            value["contacts"][0]["wa_id"] = sender
    return json.dumps(data, separators=(",", ":")).encode()


def post(service: Service, body: bytes, signature: str | None = "") -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature or sign_whatsapp(body)
    return service.client.post("/whatsapp/webhook", content=body, headers=headers)


def table(service: Service, name: str) -> list[dict[str, Any]]:
    path = service.settings.database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT * FROM {name}")]


def contact_posts(standin: RocketChatStandIn) -> list[Any]:
    return [
        c
        for c in standin.calls
        if c.method == "POST" and c.path.startswith("/api/v1/omnichannel/contact")
    ]


def said(messenger: MessengerStandIn, count: int, chat: str = JOSE) -> list[str]:
    texts: list[str] = wait_until(
        lambda: len(messenger.texts(chat)) >= count and messenger.texts(chat),
        what=f"{count} message(s) to {chat}",
        show=lambda: messenger.texts(chat),
    )
    return texts[:count]


ES = MESSAGES["es"]


def msg(*texts: str) -> str:
    """What one step of the conversation sends: its replies as the paragraphs of one message."""
    return "\n\n".join(texts)


# ------------------------------------------------------------------------ the samples


@pytest.mark.parametrize("name", ["messages_text", "messages_contacts", "statuses_delivered"])
def test_the_samples_signatures_verify_over_the_raw_escaped_bytes(name: str) -> None:
    _, _, headers, body = load_http(SAMPLES / "whatsapp" / f"{name}.http")
    assert signature_ok(WA_SECRET, body, headers["X-Hub-Signature-256"])
    reserialised = json.dumps(json.loads(body), ensure_ascii=False).encode()
    assert not signature_ok(WA_SECRET, reserialised, headers["X-Hub-Signature-256"])


def test_the_verification_handshake(start_whatsapp: Callable[..., Service]) -> None:
    service = start_whatsapp()
    _, target, _, _ = load_http(SAMPLES / "whatsapp" / "verify_subscription.http")
    response = service.client.get(target)
    assert response.status_code == 200 and response.text == "1158201444"
    wrong = service.client.get(target.replace("wa-test-verify-token", "guess"))
    assert wrong.status_code == 403 and "WHATSAPP_VERIFY_TOKEN" in wrong.json()["error"]
    assert service.client.get("/whatsapp/webhook?hub.challenge=1").status_code == 403


def test_the_recorded_samples_are_too_old_to_be_anything_but_a_replay(
    start_whatsapp: Callable[..., Service], messenger: MessengerStandIn
) -> None:
    service = start_whatsapp()
    _, target, headers, body = load_http(SAMPLES / "whatsapp" / "messages_text.http")
    response = service.client.post(target, content=body, headers=headers)  # as Meta signed it
    assert response.status_code == 401 and "replay" in response.json()["error"]
    _, target, headers, body = load_http(SAMPLES / "whatsapp" / "statuses_delivered.http")
    assert service.client.post(target, content=body, headers=headers).status_code == 200
    assert messenger.sent == [] and service.stored_rows() == 0


# ------------------------------------------------------------------------ conversations


def test_a_text_with_an_email_registers_the_guest_in_their_language(
    start_whatsapp: Callable[..., Service],
    messenger: MessengerStandIn,
    standin: RocketChatStandIn,
) -> None:
    service = start_whatsapp()
    response = post(service, fresh("messages_text"))
    assert response.status_code == 200 and response.json()["handled"] == 1
    texts = said(messenger, 2)
    assert texts[0] == ES["registering"].format(name="José García")
    assert texts[1] == ES["delivered"].format(name="José García")
    (call,) = contact_posts(standin)
    assert call.json["name"] == "José García"  # the profile name, not "Hola, soy …"
    assert call.json["email"] == "jose.garcia@example.com"
    assert call.json["phone"] == "+34612345678"  # the number they write from
    assert messenger.to(JOSE)[0].body["to"] == "34612345678"


def test_the_bot_asks_for_the_missing_email_and_registers_once_given(
    start_whatsapp: Callable[..., Service],
    messenger: MessengerStandIn,
    standin: RocketChatStandIn,
) -> None:
    service = start_whatsapp()
    post(service, fresh("messages_text", text="Hola, quería información"))
    assert said(messenger, 1) == [msg(ES["welcome"], ES["ask_email"])]
    post(service, fresh("messages_text", text="jose.garcia@"))
    assert said(messenger, 2)[1] == msg(
        ES["bad_email"].format(value="jose.garcia@"), ES["ask_email"]
    )
    assert contact_posts(standin) == []
    post(service, fresh("messages_text", text="jose.garcia@example.com"))
    assert said(messenger, 4)[2:] == [
        ES["registering"].format(name="José García"),
        ES["delivered"].format(name="José García"),
    ]
    assert contact_posts(standin)[0].json["email"] == "jose.garcia@example.com"
    assert table(service, "conversations") == []


def test_a_french_number_is_answered_in_french_and_cancel_forgets(
    start_whatsapp: Callable[..., Service], messenger: MessengerStandIn
) -> None:
    service = start_whatsapp()
    chat = f"{OURS}:33612345678"
    post(service, fresh("messages_text", text="Bonjour", sender="33612345678"))
    assert said(messenger, 1, chat) == [msg(MESSAGES["fr"]["welcome"], MESSAGES["fr"]["ask_email"])]
    assert len(table(service, "conversations")) == 1
    post(service, fresh("messages_text", text="annuler", sender="33612345678"))
    assert said(messenger, 2, chat)[1] == MESSAGES["fr"]["cancelled"]
    assert table(service, "conversations") == []


def test_a_shared_contact_card_becomes_a_contact_directly(
    start_whatsapp: Callable[..., Service],
    messenger: MessengerStandIn,
    standin: RocketChatStandIn,
) -> None:
    service = start_whatsapp()
    assert post(service, fresh("messages_contacts")).status_code == 200
    texts = said(messenger, 2)
    assert texts[0] == ES["registering"].format(name="Chris Doe")  # José's language
    (call,) = contact_posts(standin)
    assert (call.json["name"], call.json["email"], call.json["phone"]) == (
        "Chris Doe",
        "chris.doe@example.com",
        "+14155552671",
    )


def test_a_conversation_survives_a_restart_and_expires_after_its_time(
    make_settings: Callable[..., Settings],
    messenger: MessengerStandIn,
    standin: RocketChatStandIn,
) -> None:
    settings = make_settings(channel_settings=messenger.whatsapp_settings())
    first = Service(settings).start()
    try:
        post(first, fresh("messages_text", text="Hola"))
        said(messenger, 1)
    finally:
        first.stop()
    second = Service(settings).start()
    try:
        post(second, fresh("messages_text", text="jose.garcia@example.com"))
        assert said(messenger, 2)[1] == ES["registering"].format(name="José García")
    finally:
        second.stop()
    short = make_settings(
        channel_settings=messenger.whatsapp_settings(WHATSAPP_CONVERSATION_TTL="2")
    )
    third = Service(short).start()
    try:
        post(third, fresh("messages_text", text="Hola otra vez", sender="34699999999"))
        said(messenger, 1, f"{OURS}:34699999999")
        wait_until(lambda: table(third, "conversations") == [], what="the sweep deleting it")
    finally:
        third.stop()


# ------------------------------------------------------------------------ refusals


def test_forged_and_replayed_notifications(
    start_whatsapp: Callable[..., Service], messenger: MessengerStandIn
) -> None:
    service = start_whatsapp()
    body = fresh("messages_contacts")
    for signature in (None, "sha256=" + "0" * 64, sign_whatsapp(body, "another-secret")):
        response = post(service, body, signature=signature)
        assert response.status_code == 401
        assert "WHATSAPP_APP_SECRET" in response.json()["error"]
    assert service.stored_rows() == 0 and table(service, "conversation_events") == []
    assert post(service, body).json()["handled"] == 1
    said(messenger, 1)
    assert post(service, body).json()["handled"] == 0  # Meta's retry, or a replay
    assert service.stored_rows() == 1


@pytest.mark.parametrize(
    ("body", "part"),
    [
        (b"[]", "body"),
        (b'{"object": "page", "entry": []}', "object"),
        (b'{"object": "whatsapp_business_account", "entry": {}}', "entry"),
        (
            b'{"object": "whatsapp_business_account", "entry": [{"changes": [{"field":'
            b' "messages", "value": {"messages": [{"from": "1"}]}}]}]}',
            "entry[0].changes[0].value.metadata",
        ),
        (
            b'{"object": "whatsapp_business_account", "entry": [{"changes": [{"field":'
            b' "messages", "value": {"metadata": {"phone_number_id": "1"}, "messages":'
            b' [{"from": "1", "id": "x", "timestamp": "soon", "type": "text"}]}}]}]}',
            "messages[0].timestamp",
        ),
    ],
)
def test_a_malformed_notification_is_a_400_naming_the_part(
    body: bytes, part: str, start_whatsapp: Callable[..., Service]
) -> None:
    service = start_whatsapp()
    response = post(service, body)
    assert response.status_code == 400
    assert part in response.json()["error"]


def test_settings(
    make_settings: Callable[..., Settings], start_service: Callable[[Settings], Service]
) -> None:
    service = start_service(make_settings())
    response = service.client.post("/whatsapp/webhook", content=b"{}")
    assert response.status_code == 503 and "WHATSAPP_APP_SECRET" in response.json()["error"]
    for values, name in [
        ({"WHATSAPP_APP_SECRET": "s"}, "WHATSAPP_VERIFY_TOKEN"),
        ({"WHATSAPP_APP_SECRET": "s", "WHATSAPP_VERIFY_TOKEN": "v"}, "WHATSAPP_ACCESS_TOKEN"),
        ({"WHATSAPP_VERIFY_TOKEN": "v"}, "WHATSAPP_APP_SECRET"),
        ({"WHATSAPP_PHONE_NUMBER_ID": "+1 555"}, "WHATSAPP_PHONE_NUMBER_ID"),
    ]:
        with pytest.raises(SettingsError, match=name):
            WhatsAppChannel().check(make_settings(channel_settings=values))


def test_an_oversized_notification_is_refused(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    messenger: MessengerStandIn,
) -> None:
    settings = make_settings(max_body_bytes=2048, channel_settings=messenger.whatsapp_settings())
    service = start_service(settings)
    body = fresh("messages_text", text="x" * 4000)
    assert post(service, body).status_code == 413


def record(status: str, callback: dict[str, Any]) -> Any:
    from adapter.channels import DeliveryRecord

    now = time.time()
    values: dict[str, Any] = dict.fromkeys(DeliveryRecord.__dataclass_fields__)
    values.update(
        id="d1",
        source="whatsapp",
        status=status,
        attempts=1,
        fields={"name": "José García"},
        next_attempt_at=now,
        callback=callback,
        created_at=now,
        updated_at=now,
    )
    return DeliveryRecord(**values)


def test_the_outcome_is_told_from_a_worker_process_only_inside_the_24_hour_window(
    make_settings: Callable[..., Settings], messenger: MessengerStandIn
) -> None:
    """The worker process has no routes, only settings: it builds its own sender."""
    from adapter.channels import ChannelContext

    settings = make_settings(channel_settings=messenger.whatsapp_settings())
    context = ChannelContext(settings=settings, queue=None)  # type: ignore[arg-type]
    channel = WhatsAppChannel()
    callback = {"v": 1, "to": "34612345678", "pn": OURS, "lang": "es"}

    async def main() -> None:
        await channel.notify(context, record("failed", {**callback, "at": time.time() - 90000}))
        await channel.notify(context, record("failed", {**callback, "at": time.time() - 600}))
        await channel.shutdown(context)

    asyncio.run(main())
    assert messenger.texts(JOSE) == [ES["failed"].format(name="José García")]
