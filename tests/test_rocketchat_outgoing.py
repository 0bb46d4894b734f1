"""Rocket.Chat's outgoing webhook, end to end: the real service under uvicorn, messages
sent as the integration sends them (``tests/rocketchat_outgoing_standin.py``), answers
turned into room messages the way Rocket.Chat does, later outcomes posted with
``chat.postMessage`` to the Rocket.Chat stand-in. Format: ``contracts/chat-platforms.md`` §5.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

import handlers.rocketchat_outgoing
from adapter.settings import Settings, SettingsError
from handlers.rocketchat_outgoing import command_text
from tests.conftest import BOT, Service, wait_until
from tests.rocketchat_outgoing_standin import OutgoingIntegration
from tests.rocketchat_standin import RocketChatStandIn

CHRIS = "!contact Chris Doe chris@example.com +1 415 555 2671"
SAMPLES = Path("/work/shared/contracts/samples/rocketchat-outgoing")
SAMPLE_TOKEN = "rc-outgoing-test-token-7f3a"
FIXED = 1795514400


@pytest.fixture
def integration() -> OutgoingIntegration:
    return OutgoingIntegration()


@pytest.fixture
def start_outgoing(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    integration: OutgoingIntegration,
) -> Callable[..., Service]:
    def start(token: str | None = None, **overrides: Any) -> Service:
        channel = {"ROCKETCHAT_OUTGOING_TOKEN": token or integration.token}
        service = start_service(make_settings(channel_settings=channel, **overrides))
        integration.url = service.url + "/rocketchat/outgoing"
        return service

    return start


@pytest.fixture
def service(start_outgoing: Callable[..., Service]) -> Service:
    return start_outgoing()


def rows(service: Service) -> list[dict[str, Any]]:
    path = service.settings.database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        found = conn.execute("SELECT * FROM deliveries ORDER BY created_at").fetchall()
    return [{**dict(r), "fields": json.loads(r["fields"])} for r in found]


def contact_posts(standin: RocketChatStandIn) -> list[Any]:
    return [c for c in standin.calls if c.method == "POST" and "omnichannel/contact" in c.path]


def test_command_in_a_room_registers_and_the_answer_is_posted_there(
    service: Service, integration: OutgoingIntegration, standin: RocketChatStandIn
) -> None:
    sent = integration.say(CHRIS)
    assert sent is not None and sent.status == 200
    (message,) = integration.room_messages
    assert message["room"] == f"#{integration.room_id}" and message["tmid"] is None
    assert "*Chris Doe* is now a contact in Rocket.Chat" in message["text"]
    assert not message["text"].startswith("!contact")  # never triggers itself
    (record,) = rows(service)
    assert record["status"] == "delivered" and record["contact_id"] in message["text"]
    assert (record["source"], record["actor"]) == ("rocketchat_outgoing", "alex.agent")
    assert contact_posts(standin)[0].json["name"] == "Chris Doe"
    assert len(integration.sent) == 1  # our answer (a bot message) triggered nothing


def test_missing_details_are_listed_in_the_thread_the_agent_wrote_in(
    service: Service, integration: OutgoingIntegration, standin: RocketChatStandIn
) -> None:
    integration.say("!contact Chris Doe", tmid="pXn7Lw2QbZc9RyT4e")
    (message,) = integration.room_messages
    assert message["tmid"] == "pXn7Lw2QbZc9RyT4e"
    assert "*Email*: is required" in message["text"] and "*Phone*: is required" in message["text"]
    assert "`!contact Chris Doe chris@example.com +1 415 555 2671`" in message["text"]
    assert rows(service) == [] and contact_posts(standin) == []


def test_a_later_outcome_is_posted_into_the_room_by_the_service_user(
    service: Service, integration: OutgoingIntegration, standin: RocketChatStandIn
) -> None:
    standin.down = True
    integration.say(CHRIS, tmid="thread0000000001")
    (message,) = integration.room_messages
    assert (
        "Registering *Chris Doe*" in message["text"] and "post the outcome here" in message["text"]
    )
    standin.down = False
    (posted,) = wait_until(lambda: standin.messages, timeout=15)
    assert posted["rid"] == integration.room_id and posted["tmid"] == "thread0000000001"
    assert "*Chris Doe* is now a contact in Rocket.Chat" in posted["msg"]
    assert posted["u"]["_id"] == BOT["user_id"]
    (record,) = rows(service)
    assert record["status"] == "delivered"


def test_retries_and_replays_register_once_and_edits_count_once_each(
    service: Service, integration: OutgoingIntegration, standin: RocketChatStandIn
) -> None:
    payload = integration.payload(CHRIS)
    assert payload is not None
    integration.post(payload)
    retry = integration.post(payload)  # Rocket.Chat resends the original payload
    assert retry.status == 200 and "was already registered" in retry.answer["text"]
    assert len(rows(service)) == 1 and len(contact_posts(standin)) == 1
    edit = dict(payload, isEdited=True, text=CHRIS.replace("+1 415 555 2671", "+1 415 555 2672"))
    integration.post(edit)
    integration.post(edit)
    assert len(rows(service)) == 2


def test_forged_stale_and_bot_messages_are_refused_or_ignored(
    service: Service, integration: OutgoingIntegration, standin: RocketChatStandIn
) -> None:
    forged = integration.payload(CHRIS)
    assert forged is not None
    del forged["token"]  # the integration's Token left empty: absent from the payload
    assert integration.post(forged).status == 401
    forged["token"] = "rc-not-the-token-000000"
    answer = integration.post(forged)
    assert answer.status == 401 and "ROCKETCHAT_OUTGOING_TOKEN" in answer.answer["error"]
    stale = integration.payload(CHRIS, ts=datetime.now(UTC) - timedelta(minutes=20))
    assert stale is not None
    answer = integration.post(stale)
    assert answer.status == 401 and "15 minutes" in answer.answer["error"]
    bot = integration.say(CHRIS, bot=True)
    assert bot is not None and bot.status == 200 and bot.answer == {}
    assert integration.room_messages == []
    assert rows(service) == [] and contact_posts(standin) == []


def test_malformed_payloads_are_400_naming_the_part(
    service: Service, integration: OutgoingIntegration
) -> None:
    payload = integration.payload(CHRIS)
    assert payload is not None
    for part in ("message_id", "timestamp"):
        broken = dict(payload)
        del broken[part]
        answer = integration.post(broken)
        assert answer.status == 400 and f"'{part}'" in answer.answer["error"]
    answer = integration.post(dict(payload, timestamp="soon"))
    assert answer.status == 400 and "'timestamp'" in answer.answer["error"]
    big = httpx.post(integration.url, content=b" " * 70_000)
    assert big.status_code == 413
    assert httpx.post(integration.url, content=b"[1]").status_code == 400
    assert rows(service) == []


def test_answer_goes_out_in_time_even_when_storing_is_slow(
    service: Service, integration: OutgoingIntegration, standin: RocketChatStandIn
) -> None:
    queue = service.app.state.queue
    real_submit = queue.submit

    async def stalled_submit(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(4)  # noqa: sleep-ok - the stalled database this test is about
        return await real_submit(*args, **kwargs)

    queue.submit = stalled_submit
    integration.say(CHRIS)
    (message,) = integration.room_messages
    assert "Registering *Chris Doe*" in message["text"]
    (posted,) = wait_until(lambda: standin.messages, timeout=15)
    assert "*Chris Doe* is now a contact" in posted["msg"]
    assert len(rows(service)) == 1


def test_the_contracts_samples_verify_with_their_token(
    start_outgoing: Callable[..., Service],
    monkeypatch: pytest.MonkeyPatch,
    standin: RocketChatStandIn,
) -> None:
    monkeypatch.setattr(handlers.rocketchat_outgoing.channel, "clock", lambda: FIXED + 30.0)
    service = start_outgoing(SAMPLE_TOKEN)
    answers = {}
    for name in ("sendMessage_complete", "sendMessage_incomplete", "sendMessage_edited_in_thread"):
        _, body = (SAMPLES / f"{name}.http").read_bytes().split(b"\r\n\r\n", 1)
        answer = httpx.post(
            service.url + "/rocketchat/outgoing",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 200, answer.text
        answers[name] = answer.json()
    assert "*Chris Doe* is now a contact" in answers["sendMessage_complete"]["text"]
    assert "*Email*: is required" in answers["sendMessage_incomplete"]["text"]
    edited = answers["sendMessage_edited_in_thread"]
    assert "*Ingrid Sørensen* is now a contact" in edited["text"]
    assert edited["tmid"] == "pXn7Lw2QbZc9RyT4e"
    assert sorted(r["fields"]["name"] for r in rows(service)) == ["Chris Doe", "Ingrid Sørensen"]


def test_trigger_word_is_taken_out_wherever_it_is() -> None:
    assert command_text("!contact Chris Doe", "!contact") == "Chris Doe"
    assert command_text("please !contact Chris Doe", "!contact") == "please Chris Doe"
    assert command_text("  Chris   Doe ", None) == "Chris Doe"


def test_settings(
    make_settings: Callable[..., Settings], start_service: Callable[[Settings], Service]
) -> None:
    bad = make_settings(channel_settings={"ROCKETCHAT_OUTGOING_TOKEN": "short"})
    with pytest.raises(SettingsError, match="ROCKETCHAT_OUTGOING_TOKEN"):
        handlers.rocketchat_outgoing.channel.check(bad)
    from adapter.web.app import create_app

    with pytest.raises(SettingsError, match="ROCKETCHAT_OUTGOING_TOKEN"):
        create_app(bad)
    off = start_service(make_settings())
    answer = off.client.post("/rocketchat/outgoing", content=b"{}")
    assert answer.status_code == 503 and "ROCKETCHAT_OUTGOING_TOKEN" in answer.json()["error"]
