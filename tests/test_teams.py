"""Microsoft Teams' outgoing webhook, end to end: the real service under uvicorn, messages
signed and sent as Teams sends them (``tests/teams_standin.py``), contacts landing in the
Rocket.Chat stand-in. Request format: ``contracts/chat-platforms.md`` §2.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import handlers.teams
from adapter.settings import Settings, SettingsError
from handlers.teams import message_text
from tests.conftest import Service
from tests.rocketchat_standin import RocketChatStandIn
from tests.teams_standin import TeamsStandIn, teams_signature

CHRIS = "Chris Doe chris@example.com +1 415 555 2671"
SAMPLES = Path("/work/shared/contracts/samples/teams")
SAMPLE_TOKEN = "dGVhbXMtb3V0Z29pbmctd2ViaG9vay10ZXN0LWtleSE="
FIXED = 1795514400


@pytest.fixture
def teams() -> TeamsStandIn:
    return TeamsStandIn()


@pytest.fixture
def start_teams(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    teams: TeamsStandIn,
) -> Callable[..., Service]:
    def start(secret: str | None = None, **overrides: Any) -> Service:
        channel = {"TEAMS_WEBHOOK_SECRET": secret or teams.token}
        service = start_service(make_settings(channel_settings=channel, **overrides))
        teams.callback_url = service.url + "/teams/outgoing"
        return service

    return start


@pytest.fixture
def service(start_teams: Callable[..., Service]) -> Service:
    return start_teams()


def rows(service: Service) -> list[dict[str, Any]]:
    path = service.settings.database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        found = conn.execute("SELECT * FROM deliveries ORDER BY created_at").fetchall()
    return [{**dict(r), "fields": json.loads(r["fields"])} for r in found]


def contact_posts(standin: RocketChatStandIn) -> list[Any]:
    return [c for c in standin.calls if c.method == "POST" and "omnichannel/contact" in c.path]


def test_mention_registers_the_contact_and_replies_in_the_thread(
    service: Service, teams: TeamsStandIn, standin: RocketChatStandIn
) -> None:
    response, _ = teams.mention(CHRIS)
    assert response.status_code == 200
    (reply,) = teams.replies
    assert "**Chris Doe** is now a contact in Rocket.Chat" in reply["text"]
    (record,) = rows(service)
    assert record["status"] == "delivered" and record["contact_id"] in reply["text"]
    assert (record["source"], record["actor"]) == ("teams", teams.user["aadObjectId"])
    assert record["fields"]["phone"] == "+14155552671"
    assert contact_posts(standin)[0].json["name"] == "Chris Doe"


def test_missing_or_invalid_details_are_listed_with_an_example(
    service: Service, teams: TeamsStandIn, standin: RocketChatStandIn
) -> None:
    teams.mention("Chris Doe chris@ +1 555")
    (reply,) = teams.replies
    assert "**Email**: 'chris@' is not a valid email address" in reply["text"]
    assert "**Phone**: '+1 555' is not a valid phone number" in reply["text"]
    assert "@Contacts Chris Doe chris@example.com" in reply["text"]
    assert rows(service) == [] and contact_posts(standin) == []


def test_slow_rocketchat_still_gets_an_answer_within_five_seconds(
    service: Service, teams: TeamsStandIn, standin: RocketChatStandIn
) -> None:
    standin.down = True
    response, _ = teams.mention(CHRIS)  # the stand-in gives up after 5 s, as Teams does
    assert response.status_code == 200
    (reply,) = teams.replies
    assert "Registering **Chris Doe**" in reply["text"] and "Teams cannot be told" in reply["text"]
    (record,) = rows(service)
    assert record["status"] == "pending"


def test_answer_goes_out_in_time_even_when_storing_is_slow(
    service: Service, teams: TeamsStandIn
) -> None:
    queue = service.app.state.queue
    real_submit = queue.submit

    async def stalled_submit(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(6)  # noqa: sleep-ok - the stalled database this test is about
        return await real_submit(*args, **kwargs)

    queue.submit = stalled_submit
    response, _ = teams.mention(CHRIS)  # would raise ReadTimeout after Teams' 5 s
    assert response.status_code == 200 and "Registering **Chris Doe**" in teams.replies[0]["text"]


def test_forged_stale_and_replayed_messages_store_nothing_twice(
    service: Service, teams: TeamsStandIn, standin: RocketChatStandIn
) -> None:
    activity = teams.activity(CHRIS)
    body = json.dumps(activity).encode()
    other = "b3RoZXItdGVhbXMta2V5LW9mLTMyLWJ5dGVzLWxvbmch"
    assert teams.send(body, token=other).status_code == 401
    assert teams.send(body, authorization="Bearer x").status_code == 401
    tampered = body.replace(b"Chris Doe", b"Eve Doe")  # with the original's signature
    assert teams.send(tampered, authorization=teams_signature(teams.token, body)).status_code == 401
    stale = json.dumps(teams.activity(CHRIS, sent_at=time.time() - 600)).encode()
    answer = teams.send(stale)
    assert answer.status_code == 401 and "more than 5 minutes" in answer.json()["error"]
    assert rows(service) == [] and contact_posts(standin) == []

    assert teams.send(body).status_code == 200
    replay = teams.send(body)
    assert replay.status_code == 200 and "was already registered" in replay.json()["text"]
    assert len(rows(service)) == 1 and len(contact_posts(standin)) == 1


def test_malformed_activities_are_400_naming_the_part(
    service: Service, teams: TeamsStandIn
) -> None:
    for broken, part in (
        ({"type": "message", "id": "1", "timestamp": "2026"}, "'text'"),
        ({"type": "invoke", "id": "1", "text": "x", "timestamp": "x"}, "'type'"),
    ):
        answer = teams.send(json.dumps(broken).encode())
        assert answer.status_code == 400 and part in answer.json()["error"]
    activity = teams.activity(CHRIS)
    activity["timestamp"] = "yesterday"
    answer = teams.send(json.dumps(activity).encode())
    assert answer.status_code == 400 and "'timestamp'" in answer.json()["error"]
    assert teams.send(b"\xff[]").status_code == 400
    assert teams.send(b"[" * 70_000).status_code == 413
    assert rows(service) == []


def test_the_contracts_signed_samples_verify(
    start_teams: Callable[..., Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers.teams.channel, "clock", lambda: FIXED + 5.0)
    service = start_teams(SAMPLE_TOKEN)
    for name, who in (
        ("outgoing_webhook_message.http", "**Chris Doe**"),
        ("outgoing_webhook_unicode.http", "**Zoë Łukasiewicz**"),
    ):
        head, body = (SAMPLES / name).read_bytes().split(b"\r\n\r\n", 1)
        auth = next(
            line.split(": ", 1)[1]
            for line in head.decode().split("\r\n")
            if line.startswith("Authorization")
        )
        answer = httpx.post(
            service.url + "/teams/outgoing",
            content=body,
            headers={"Authorization": auth, "Content-Type": "application/json; charset=utf-8"},
        )
        assert answer.status_code == 200, answer.text
        assert f"{who} is now a contact" in answer.json()["text"]
    names = sorted(r["fields"]["name"] for r in rows(service))
    assert names == ["Chris Doe", "Zoë Łukasiewicz"]


def test_mention_markup_and_entities_are_removed_before_extraction() -> None:
    text = "<at>Contacts</at>&nbsp;Chris Doe &lt;chris@example.com&gt; <b>+1 415 555 2671</b>"
    assert message_text(text) == "Chris Doe <chris@example.com> +1 415 555 2671"


def test_settings(
    make_settings: Callable[..., Settings], start_service: Callable[[Settings], Service]
) -> None:
    bad = make_settings(channel_settings={"TEAMS_WEBHOOK_SECRET": "not base64!"})
    with pytest.raises(SettingsError, match="TEAMS_WEBHOOK_SECRET"):
        handlers.teams.channel.check(bad)
    from adapter.web.app import create_app

    with pytest.raises(SettingsError, match="TEAMS_WEBHOOK_SECRET"):
        create_app(bad)
    off = start_service(make_settings())
    answer = off.client.post("/teams/outgoing", content=b"{}")
    assert answer.status_code == 503 and "TEAMS_WEBHOOK_SECRET" in answer.json()["error"]
