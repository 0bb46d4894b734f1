"""Telegram, end to end: the service under uvicorn, driven as Telegram's Bot API server
drives a webhook (the contract's samples, re-dated where the test needs a fresh update),
answering through a Bot API stand-in; contacts land in the Rocket.Chat stand-in."""

from __future__ import annotations

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
from handlers.telegram import TelegramChannel
from tests.conftest import Service, wait_until
from tests.messenger_standin import SAMPLES, TG_SECRET, MessengerStandIn, load_http
from tests.rocketchat_standin import RocketChatStandIn

CHAT = "5550001234"
_update_ids = itertools.count(861300000)


@pytest.fixture
def messenger() -> Iterator[MessengerStandIn]:
    standin = MessengerStandIn()
    with standin.serve():
        yield standin


@pytest.fixture
def start_telegram(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    messenger: MessengerStandIn,
) -> Callable[..., Service]:
    def start(**channel: str) -> Service:
        settings = make_settings(channel_settings=messenger.telegram_settings(**channel))
        return start_service(settings)

    return start


def sample(name: str) -> tuple[dict[str, str], dict[str, Any]]:
    _, _, headers, body = load_http(SAMPLES / "telegram" / f"{name}.http")
    return headers, json.loads(body)


def update(
    name: str, *, language: str | None = None, text: str | None = None, **message: Any
) -> dict[str, Any]:
    """A sample update, fresh: a new update_id and today's date (Telegram dates updates)."""
    _, data = sample(name)
    data["update_id"] = next(_update_ids)
    data["message"]["date"] = int(time.time())
    if language is not None:
        data["message"]["from"]["language_code"] = language
    if text is not None:
        data["message"]["text"] = text
        data["message"].pop("entities", None)
    data["message"].update(message)
    return data


def post(
    service: Service, data: dict[str, Any] | bytes, secret: str | None = TG_SECRET
) -> httpx.Response:
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    return service.client.post("/telegram/webhook", content=body, headers=headers)


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


def said(messenger: MessengerStandIn, count: int, chat: str = CHAT) -> list[str]:
    """The first ``count`` messages the bot sent to ``chat`` (waits for them)."""
    texts: list[str] = wait_until(
        lambda: len(messenger.texts(chat)) >= count and messenger.texts(chat),
        what=f"{count} bot message(s) to {chat}",
        show=lambda: messenger.texts(chat),
    )
    return texts[:count]


EN = MESSAGES["en"]


def msg(*texts: str) -> str:
    """What one step of the conversation sends: its replies as the paragraphs of one message."""
    return "\n\n".join(texts)


# ------------------------------------------------------------------------ the samples


def test_samples_carry_the_contract_secret_and_the_service_verifies_them(
    start_telegram: Callable[..., Service], messenger: MessengerStandIn
) -> None:
    service = start_telegram()
    method, target, headers, body = load_http(SAMPLES / "telegram" / "message_start.http")
    assert (method, target) == ("POST", "/telegram/webhook")
    assert headers["X-Telegram-Bot-Api-Secret-Token"] == TG_SECRET
    # As recorded (2026-11-24), the update is older than Telegram keeps one: a replay.
    stale = service.client.post(target, content=body, headers=headers)
    assert stale.status_code == 401
    assert "replay" in stale.json()["error"]
    # The same bytes with today's date and the sample's own headers are accepted.
    fresh = body.replace(b'"date":1795514400', f'"date":{int(time.time())}'.encode())
    response = service.client.post(target, content=fresh, headers=headers)
    assert response.status_code == 200
    (first,) = said(messenger, 1)
    # The profile name is known: hello, and the phone is asked next.
    assert first == msg(EN["welcome"], EN["ask_phone_button"])
    button = messenger.to(CHAT)[0].body["reply_markup"]["keyboard"][0][0]
    assert button == {"text": EN["share_button"], "request_contact": True}


def test_a_guest_shares_their_phone_then_types_their_email_and_is_registered(
    start_telegram: Callable[..., Service],
    messenger: MessengerStandIn,
    standin: RocketChatStandIn,
) -> None:
    service = start_telegram()
    assert post(service, update("message_start")).status_code == 200
    said(messenger, 1)
    assert post(service, update("message_shared_contact")).status_code == 200
    assert said(messenger, 2)[1] == EN["ask_email"]
    assert messenger.to(CHAT)[1].body["reply_markup"] == {"remove_keyboard": True}
    (kept,) = table(service, "conversations")
    assert json.loads(kept["state"])["fields"]["phone"] == "+14155552671"  # given its +
    assert post(service, update("message_start", text="chris.doe@example.com")).status_code == 200
    texts = said(messenger, 4)
    assert texts[2] == "Thank you, Chris Doe! We are registering your details."
    assert texts[3] == "Chris Doe, you are now registered with our team. Thank you!"
    (call,) = contact_posts(standin)
    assert call.json["name"] == "Chris Doe"
    assert call.json["email"] == "chris.doe@example.com"
    assert call.json["phone"] == "+14155552671"
    assert table(service, "conversations") == []  # personal data gone once registered


def test_everything_at_once_with_the_contact_command(
    start_telegram: Callable[..., Service],
    messenger: MessengerStandIn,
    standin: RocketChatStandIn,
) -> None:
    service = start_telegram()
    assert post(service, update("message_contact_command")).status_code == 200
    texts = said(messenger, 2)
    assert texts == [
        "Thank you, Chris Doe! We are registering your details.",
        "Chris Doe, you are now registered with our team. Thank you!",
    ]
    assert contact_posts(standin)[0].json["phone"] == "+14155552671"


@pytest.mark.parametrize("code", ["es", "pt-br", "fr", "de", "ru"])
def test_the_bot_speaks_the_guests_language(
    code: str, start_telegram: Callable[..., Service], messenger: MessengerStandIn
) -> None:
    service = start_telegram()
    post(service, update("message_start", language=code))
    lang = code.split("-")[0]
    texts = MESSAGES[lang]
    assert said(messenger, 1) == [msg(texts["welcome"], texts["ask_phone_button"])]
    button = messenger.to(CHAT)[0].body["reply_markup"]["keyboard"][0][0]
    assert button["text"] == texts["share_button"]
    post(service, update("message_start", language=code, text="not-an-address@"))
    assert said(messenger, 2)[1] == msg(
        texts["bad_email"].format(value="not-an-address@"), texts["ask_phone_button"]
    )
    post(service, update("message_start", language="xx", text="/cancel"))
    assert said(messenger, 3)[2] == texts["cancelled"]  # the conversation's language


def test_someone_elses_contact_card_is_not_taken_as_the_guests_phone(
    start_telegram: Callable[..., Service], messenger: MessengerStandIn
) -> None:
    service = start_telegram()
    data = update("message_shared_contact")
    data["message"]["contact"]["user_id"] = 5550009999
    post(service, data)
    assert said(messenger, 1) == [msg(EN["welcome"], EN["not_own_card"], EN["ask_phone_button"])]
    (kept,) = table(service, "conversations")
    assert "phone" not in json.loads(kept["state"])["fields"]


# ------------------------------------------------------------------------ durability


def test_a_conversation_survives_a_restart_of_the_service(
    make_settings: Callable[..., Settings],
    messenger: MessengerStandIn,
    standin: RocketChatStandIn,
) -> None:
    settings = make_settings(channel_settings=messenger.telegram_settings())
    first = Service(settings).start()
    try:
        post(first, update("message_start"))
        post(first, update("message_shared_contact"))
        said(messenger, 2)
    finally:
        first.stop()
    second = Service(settings).start()
    try:
        post(second, update("message_start", text="chris.doe@example.com"))
        texts = said(messenger, 4)
        assert texts[2] == "Thank you, Chris Doe! We are registering your details."
        assert contact_posts(standin)[0].json["phone"] == "+14155552671"
    finally:
        second.stop()


def test_a_conversation_expires_and_what_the_guest_gave_is_deleted(
    start_telegram: Callable[..., Service],
    messenger: MessengerStandIn,
    standin: RocketChatStandIn,
) -> None:
    service = start_telegram(TELEGRAM_CONVERSATION_TTL="2")
    post(service, update("message_start"))
    post(service, update("message_shared_contact"))
    said(messenger, 2)
    assert len(table(service, "conversations")) == 1
    wait_until(lambda: table(service, "conversations") == [], what="the sweep deleting it")
    post(service, update("message_start", text="chris.doe@example.com"))
    texts = said(messenger, 3)
    assert texts[2] == msg(EN["welcome"], EN["ask_phone_button"])  # the phone was forgotten
    assert contact_posts(standin) == []


# ------------------------------------------------------------------------ refusals


def test_a_forged_update_is_refused_and_nothing_is_stored_or_sent(
    start_telegram: Callable[..., Service], messenger: MessengerStandIn
) -> None:
    service = start_telegram()
    for secret in (None, "tg-test_secret-Token-43", ""):
        response = post(service, update("message_contact_command"), secret=secret)
        assert response.status_code == 401
        assert "TELEGRAM_WEBHOOK_SECRET" in response.json()["error"]
    assert table(service, "conversations") == []
    assert table(service, "conversation_events") == []
    assert service.stored_rows() == 0
    assert messenger.sent == []


def test_a_retried_or_replayed_update_is_handled_once(
    start_telegram: Callable[..., Service], messenger: MessengerStandIn
) -> None:
    service = start_telegram()
    data = update("message_contact_command")
    assert post(service, data).json() == {"ok": True}
    said(messenger, 2)
    again = post(service, data)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert service.stored_rows() == 1
    future = update("message_start")
    future["message"]["date"] = int(time.time()) + 3600
    assert post(service, future).status_code == 401
    assert len(messenger.texts(CHAT)) == 2


@pytest.mark.parametrize(
    ("body", "part"),
    [
        (b"[1, 2]", "body"),
        (b"\xff\xfe", "body"),
        (b'{"message": {}}', "update_id"),
        (b'{"update_id": 1, "message": []}', "message"),
        (b'{"update_id": 1, "message": {"date": 1}}', "message.chat"),
        (
            b'{"update_id": 1, "message": {"chat": {"id": 1, "type": "private"}, "date": 1,'
            b' "from": {"id": 1}, "text": "\\ud800"}}',
            "message.text: not valid Unicode",
        ),
    ],
)
def test_a_malformed_update_is_a_400_naming_the_part(
    body: bytes, part: str, start_telegram: Callable[..., Service]
) -> None:
    service = start_telegram()
    response = post(service, body)
    assert response.status_code == 400
    assert part in response.json()["error"]


def test_an_oversized_body_is_refused(start_telegram: Callable[..., Service]) -> None:
    service = start_telegram()
    response = post(service, b"{" + b" " * 70_000 + b"}")
    assert response.status_code == 413


def test_groups_and_other_updates_are_acknowledged_and_ignored(
    start_telegram: Callable[..., Service], messenger: MessengerStandIn
) -> None:
    service = start_telegram()
    group = update("message_contact_command")
    group["message"]["chat"] = {"id": -100123, "type": "supergroup", "title": "Team"}
    assert post(service, group).json()["ignored"].startswith("a supergroup chat")
    edited = {"update_id": 5, "edited_message": {}}
    assert "not a message" in post(service, edited).json()["ignored"]
    assert messenger.sent == [] and service.stored_rows() == 0


# ------------------------------------------------------------------------ settings


def test_off_without_settings_and_misconfiguration_names_the_setting(
    make_settings: Callable[..., Settings], start_service: Callable[[Settings], Service]
) -> None:
    service = start_service(make_settings())
    response = service.client.post("/telegram/webhook", content=b"{}")
    assert response.status_code == 503
    assert "TELEGRAM_BOT_TOKEN" in response.json()["error"]
    checks = [
        ({"TELEGRAM_BOT_TOKEN": "1:x"}, "TELEGRAM_WEBHOOK_SECRET"),
        ({"TELEGRAM_WEBHOOK_SECRET": "abc"}, "TELEGRAM_BOT_TOKEN"),
        ({"TELEGRAM_BOT_TOKEN": "1:x", "TELEGRAM_WEBHOOK_SECRET": "no spaces"}, "SECRET"),
        (
            {"TELEGRAM_BOT_TOKEN": "1:x", "TELEGRAM_WEBHOOK_SECRET": "s", "TELEGRAM_API_URL": "x"},
            "TELEGRAM_API_URL",
        ),
        (
            {
                "TELEGRAM_BOT_TOKEN": "1:x",
                "TELEGRAM_WEBHOOK_SECRET": "s",
                "TELEGRAM_CONVERSATION_TTL": "soon",
            },
            "TELEGRAM_CONVERSATION_TTL",
        ),
    ]
    for values, name in checks:
        with pytest.raises(SettingsError, match=name):
            TelegramChannel().check(make_settings(channel_settings=values))


def test_a_registration_rocketchat_refuses_is_told_to_the_guest(
    start_telegram: Callable[..., Service],
    messenger: MessengerStandIn,
    standin: RocketChatStandIn,
) -> None:
    service = start_telegram()
    standin.fail_next(1, status=400)
    post(service, update("message_contact_command", language="pt-br"))
    assert said(messenger, 2) == [
        MESSAGES["pt"]["registering"].format(name="Chris Doe"),
        MESSAGES["pt"]["failed"].format(name="Chris Doe"),
    ]


def test_a_conversation_continues_in_another_process(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    messenger: MessengerStandIn,
    standin: RocketChatStandIn,
) -> None:
    """Two web processes on one database (two dynos): each message may reach either."""
    settings = make_settings(channel_settings=messenger.telegram_settings())
    one, other = start_service(settings), start_service(settings)
    post(one, update("message_start"))
    said(messenger, 1)
    post(other, update("message_shared_contact"))
    assert said(messenger, 2)[1] == EN["ask_email"]
    post(one, update("message_start", text="chris.doe@example.com"))
    assert said(messenger, 4)[2] == "Thank you, Chris Doe! We are registering your details."
    (call,) = contact_posts(standin)
    assert call.json["phone"] == "+14155552671"
