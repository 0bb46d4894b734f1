"""Discord, end to end: the real service under uvicorn, driven exactly as Discord drives it.

Interactions go out signed with the contract's test seed (``tests/discord_standin.py``);
the app's answers are checked as Discord checks them, its follow-up edits land in the
Discord stand-in and contacts in the Rocket.Chat stand-in. The contract's signed samples
(``tests/samples/discord``, copied byte for byte) verify with the contract's public key.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.datastructures import Headers

from adapter.settings import Settings, SettingsError
from adapter.web.app import create_app
from handlers.discord import channel as discord_channel
from handlers.discord.messages import read_fix
from handlers.discord.service import token_usable
from handlers.discord.verify import check_signature, parse_interaction
from tests.conftest import Service, wait_until
from tests.discord_standin import PUBLIC_KEY, SAMPLES, DiscordStandIn, load_http, sign
from tests.rocketchat_standin import RocketChatStandIn

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_TIMES = {
    "ping.http": 1795514400,
    "application_command_complete.http": 1795514401,
    "application_command_partial.http": 1795514402,
    "modal_submit.http": 1795514403,
}


@pytest.fixture
def discord() -> Iterator[DiscordStandIn]:
    standin = DiscordStandIn()
    with standin.serve():
        yield standin


@pytest.fixture
def start_discord(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    discord: DiscordStandIn,
) -> Callable[..., Service]:
    def start(channel: dict[str, str] | None = None, **overrides: Any) -> Service:
        settings = make_settings(
            channel_settings=discord.channel_settings(**(channel or {})), **overrides
        )
        service = start_service(settings)
        discord.endpoint = service.url + "/discord/interactions"
        return service

    return start


@pytest.fixture
def service(start_discord: Callable[..., Service]) -> Service:
    return start_discord()


def deliveries(service: Service) -> list[dict[str, Any]]:
    path = service.settings.database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM deliveries ORDER BY created_at").fetchall()
    out = []
    for row in rows:
        item = dict(row)
        for key in ("fields", "callback"):
            item[key] = json.loads(item[key]) if item[key] else None
        out.append(item)
    return out


def contact_posts(standin: RocketChatStandIn) -> list[Any]:
    return [
        c
        for c in standin.calls
        if c.method == "POST" and c.path.startswith("/api/v1/omnichannel/contact")
    ]


def sample(name: str) -> tuple[dict[str, str], bytes]:
    _, _, headers, body = load_http(SAMPLES / name)
    return headers, body


# ------------------------------------------------------------------- the contract's samples


@pytest.mark.parametrize("name", sorted(SAMPLE_TIMES))
def test_signed_samples_verify_with_the_contract_key_and_nothing_else(name: str) -> None:
    headers, body = sample(name)
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(PUBLIC_KEY))
    stamp = SAMPLE_TIMES[name]
    assert headers["X-Signature-Timestamp"] == str(stamp)
    assert check_signature(key, Headers(headers), body, now=stamp + 1) is None
    interaction = parse_interaction(body)
    assert interaction.application_id == "1300000000000000001"
    # One byte changed, another timestamp, or five minutes later: refused.
    tampered = body.replace(b'"version":1', b'"version":2')
    assert "does not match" in str(check_signature(key, Headers(headers), tampered, now=stamp))
    other = {**headers, "X-Signature-Timestamp": str(stamp + 1)}
    assert "does not match" in str(check_signature(key, Headers(other), body, now=stamp))
    assert "5 minutes" in str(check_signature(key, Headers(headers), body, now=stamp + 301))
    assert sign(body, str(stamp)) == headers["X-Signature-Ed25519"]  # the seed is the contract's


def test_ping_is_answered_pong(service: Service, discord: DiscordStandIn) -> None:
    _, body = sample("ping.http")
    answer = discord.interact(json.loads(body))
    assert answer.status == 200 and answer.body == {"type": 1}
    assert answer.problems == []
    assert deliveries(service) == []


def test_complete_command_registers_the_contact_and_answers_privately(
    service: Service, discord: DiscordStandIn, standin: RocketChatStandIn
) -> None:
    _, body = sample("application_command_complete.http")
    started = time.monotonic()
    answer = discord.interact(json.loads(body))  # the sample's body, signed now
    assert time.monotonic() - started < 3
    assert answer.status == 200 and answer.problems == []
    assert answer.body["type"] == 4
    data = answer.body["data"]
    assert data["flags"] == 64  # ephemeral: only the person who ran it sees it
    assert data["allowed_mentions"] == {"parse": []}
    (record,) = deliveries(service)
    assert record["status"] == "delivered"
    assert "**Chris Doe** is now a contact in Rocket.Chat" in data["content"]
    assert record["contact_id"] in data["content"]  # the link to the contact
    assert record["event_id"] == "interaction:1300000000000009002"
    assert (record["source"], record["actor"], record["team"]) == (
        "discord",
        "1300000000000000777",
        "1300000000000000100",
    )
    assert record["fields"]["phone"] == "+14155552671"
    (post,) = contact_posts(standin)
    assert post.json["name"] == "Chris Doe"
    assert discord.edits == []  # nothing more to say later


def test_free_text_option_is_extracted(
    service: Service, discord: DiscordStandIn, standin: RocketChatStandIn
) -> None:
    answer = discord.interact(discord.command(text="Dana Lee dana@example.com +44 20 7946 0958"))
    assert "**Dana Lee** is now a contact" in answer.body["data"]["content"]
    (record,) = deliveries(service)
    assert (record["fields"]["name"], record["fields"]["email"]) == ("Dana Lee", "dana@example.com")
    assert record["fields"]["phone"] == "+442079460958"


def test_missing_details_open_a_prefilled_modal_whose_submission_registers(
    service: Service, discord: DiscordStandIn, standin: RocketChatStandIn
) -> None:
    _, body = sample("application_command_partial.http")  # name only
    answer = discord.interact(json.loads(body))
    assert answer.status == 200 and answer.problems == []
    assert answer.body["type"] == 9
    modal = answer.body["data"]
    assert modal["custom_id"] == "contact_modal"
    fields = {c["component"]["custom_id"]: c for c in modal["components"]}
    assert fields["name"]["component"]["value"] == "Chris Doe"
    assert "is required" in fields["email"]["description"]  # the problem under its field
    assert "value" not in fields["email"]["component"]
    assert deliveries(service) == []

    _, submitted = sample("modal_submit.http")
    done = discord.interact(json.loads(submitted))
    assert done.status == 200 and done.problems == []
    assert "**Chris Doe** is now a contact" in done.body["data"]["content"]
    assert done.body["data"]["flags"] == 64
    (record,) = deliveries(service)
    assert record["event_id"] == "interaction:1300000000000009004"
    assert len(contact_posts(standin)) == 1


def test_command_without_options_opens_an_empty_modal(
    start_discord: Callable[..., Service], discord: DiscordStandIn
) -> None:
    start_discord(default_phone_region="US")
    answer = discord.interact(discord.command())
    assert answer.body["type"] == 9 and answer.problems == []
    labels = {c["component"]["custom_id"]: c for c in answer.body["data"]["components"]}
    assert all("value" not in c["component"] for c in labels.values())
    assert "read as US numbers" in labels["phone"]["description"]


def test_invalid_submission_lists_each_problem_and_a_button_reopens_the_modal(
    service: Service, discord: DiscordStandIn, standin: RocketChatStandIn
) -> None:
    answer = discord.interact(
        discord.modal_submit({"name": "Chris Doe", "email": "chris@example", "phone": "+1 555"})
    )
    assert answer.status == 200 and answer.problems == []
    data = answer.body["data"]
    assert data["flags"] == 64
    assert "**Email**: 'chris@example' is not a valid email address" in data["content"]
    assert "**Phone**: '+1 555' is not a valid phone number" in data["content"]
    assert deliveries(service) == [] and contact_posts(standin) == []

    reopened = discord.interact(discord.click(answer))
    assert reopened.body["type"] == 9 and reopened.problems == []
    fields = {c["component"]["custom_id"]: c for c in reopened.body["data"]["components"]}
    assert fields["email"]["component"]["value"] == "chris@example"
    assert "not a valid email address" in fields["email"]["description"]
    assert "not a valid phone number" in fields["phone"]["description"]
    assert "description" not in fields["name"]

    fixed = discord.interact(
        discord.modal_submit(
            {"name": "Chris Doe", "email": "chris@example.com", "phone": "+1 415 555 2671"}
        )
    )
    assert "**Chris Doe** is now a contact" in fixed.body["data"]["content"]
    assert len(deliveries(service)) == 1


def test_fix_button_carries_what_fits_in_100_characters() -> None:
    from handlers.discord.messages import errors_message

    long_name = "Maximiliana " * 12
    message = errors_message(
        {"email": "bad"}, {"name": long_name, "email": "x@y", "phone": "+1 555"}
    )
    custom_id = message["data"]["components"][0]["components"][0]["custom_id"]
    assert len(custom_id) <= 100
    assert read_fix(custom_id) == {"email": "x@y", "phone": "+1 555"}  # the long name dropped


def test_slow_rocketchat_is_answered_in_time_and_the_outcome_replaces_the_answer(
    service: Service, discord: DiscordStandIn, standin: RocketChatStandIn
) -> None:
    standin.down = True
    interaction = discord.command(text="Chris Doe chris@example.com +1 415 555 2671")
    answer = discord.interact(interaction)
    assert answer.problems == []  # within 3 s
    assert "Registering **Chris Doe**" in answer.body["data"]["content"]
    (record,) = deliveries(service)
    assert record["status"] == "pending"  # stored before the answer
    assert record["callback"]["token"] == interaction["token"]
    standin.down = False
    (edit,) = wait_until(lambda: discord.edits_for(interaction), timeout=15, what="the edit")
    assert "**Chris Doe** is now a contact in Rocket.Chat" in edit["content"]
    assert edit["allowed_mentions"] == {"parse": []}
    (record,) = deliveries(service)
    assert record["status"] == "delivered" and record["contact_id"] in edit["content"]


def test_token_is_used_within_its_15_minutes_only() -> None:
    callback = {"token": "t", "application_id": "1", "issued_at": 1000.0}
    assert token_usable(callback, now=1000.0 + 14 * 60)
    assert not token_usable(callback, now=1000.0 + 15 * 60)
    assert not token_usable({**callback, "token": None}, now=1001.0)


# ------------------------------------------------------------------- refused requests


def test_forged_stale_and_replayed_interactions_store_nothing(
    service: Service, discord: DiscordStandIn, standin: RocketChatStandIn
) -> None:
    interaction = discord.command(name="Chris Doe", email="chris@example.com", phone="+14155552671")
    body = json.dumps(interaction).encode()
    now = str(int(time.time()))
    forged = discord.post(body, timestamp=now, signature=sign(body, now, seed="11" * 32))
    assert forged.status_code == 401
    assert "does not match" in forged.json()["error"]
    stale_time = str(int(time.time()) - 301)
    stale = discord.post(body, timestamp=stale_time)  # correctly signed, 5 minutes old
    assert stale.status_code == 401 and "5 minutes" in stale.json()["error"]
    unsigned = discord.post(body, headers={"X-Signature-Ed25519": ""})
    assert unsigned.status_code == 401
    assert deliveries(service) == [] and contact_posts(standin) == []

    signature = sign(body, now)
    first = discord.post(body, timestamp=now, signature=signature)
    replay = discord.post(body, timestamp=now, signature=signature)
    assert "is now a contact" in first.json()["data"]["content"]
    assert replay.status_code == 200
    assert "was already registered" in replay.json()["data"]["content"]
    assert "](<" not in replay.json()["data"]["content"]  # no contact link for a replay
    assert len(deliveries(service)) == 1 and len(contact_posts(standin)) == 1


def test_malformed_and_oversized_interactions_are_refused(
    start_discord: Callable[..., Service], discord: DiscordStandIn
) -> None:
    service = start_discord({"DISCORD_MAX_BODY_BYTES": "2048"})
    cases = {
        b'{"type": 2, "id": "1", "application_id": "1300000000000000001", "token": "t", '
        b'"data": {"name": "contact", "options": "Chris"}}': "'data.options' must be a list",
        b'{"type": "2"}': "'type' must be an integer",
        b"[1, 2]": "must be a JSON object",
        b'{"type": 2, "id": 7, "token": "t"}': "'id' must be a Discord id",
        b'{"type": 1, "id": "1", "application_id": "1", "token": "t", "name": "\xff"}': "UTF-8",
    }
    for body, expected in cases.items():
        response = discord.post(body)
        assert response.status_code == 400, body
        assert expected in response.json()["error"], (body, response.json())
    big = json.dumps(discord.command(text="x" * 3000)).encode()
    assert discord.post(big).status_code == 413
    assert deliveries(service) == []


def test_off_without_a_public_key_and_a_malformed_key_stops_start_up(
    make_settings: Callable[..., Settings], start_service: Callable[[Settings], Service]
) -> None:
    service = start_service(make_settings())
    response = service.client.post("/discord/interactions", content=b"{}")
    assert response.status_code == 503
    assert "DISCORD_PUBLIC_KEY" in response.json()["error"]
    bad = make_settings(channel_settings={"DISCORD_PUBLIC_KEY": "not-hex"})
    with pytest.raises(SettingsError, match="DISCORD_PUBLIC_KEY"):
        discord_channel.check(bad)
    with pytest.raises(SettingsError, match="DISCORD_PUBLIC_KEY"):
        create_app(bad)  # the service does not start
    with pytest.raises(SettingsError, match="DISCORD_GUILD_ID"):
        discord_channel.check(make_settings(channel_settings={"DISCORD_GUILD_ID": "my-guild"}))


# ------------------------------------------------------------------- register-commands


def _cli(discord: DiscordStandIn, tmp_path: Path, *args: str, **env: str) -> Any:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "SLACK_"))}
    environment.update(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
            "DISCORD_PUBLIC_KEY": PUBLIC_KEY,
            "DISCORD_APPLICATION_ID": discord.application_id,
            "DISCORD_BOT_TOKEN": discord.bot_token,
            "DISCORD_API_URL": discord.api_url,
        }
    )
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "adapter.ops.cli", "discord", "register-commands", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tmp_path,
        timeout=60,
    )


def test_register_commands_puts_contact_with_its_options(
    discord: DiscordStandIn, tmp_path: Path
) -> None:
    done = _cli(discord, tmp_path, "--guild", "1300000000000000100")
    assert done.returncode == 0, done.stderr
    assert "registered /contact" in done.stdout and "guild 1300000000000000100" in done.stdout
    (put,) = discord.registrations
    assert put["scope"] == "1300000000000000100"
    assert put["headers"]["authorization"] == f"Bot {discord.bot_token}"
    (command,) = put["commands"]
    assert command["name"] == "contact" and command["type"] == 1
    assert [o["name"] for o in command["options"]] == ["text", "name", "email", "phone"]
    assert all(o["type"] == 3 for o in command["options"])
    assert discord.bot_token not in done.stdout + done.stderr

    globally = _cli(discord, tmp_path)
    assert globally.returncode == 0 and "globally" in globally.stdout
    assert discord.registrations[-1]["scope"] == "global"


def test_register_commands_says_what_to_fix(discord: DiscordStandIn, tmp_path: Path) -> None:
    refused = _cli(discord, tmp_path, DISCORD_BOT_TOKEN="wrong")
    assert refused.returncode == 1
    assert "401" in refused.stderr and "DISCORD_BOT_TOKEN was refused" in refused.stderr
    missing = _cli(discord, tmp_path, DISCORD_BOT_TOKEN="")
    assert missing.returncode == 2 and "DISCORD_BOT_TOKEN" in missing.stderr
    assert discord.registrations == []


def test_an_edit_racing_discord_s_handling_of_the_answer_is_retried(
    service: Service, discord: DiscordStandIn
) -> None:
    """The outcome may come before Discord has the first answer's message: Discord says
    Unknown Message, and the edit goes through a moment later; an interaction answered
    with a modal has no message to edit, and the edit gives up."""
    import asyncio
    import threading

    from handlers.discord.api import DiscordApi
    from handlers.discord.config import DiscordConfig

    config = DiscordConfig(
        public_key=None,
        application_id=discord.application_id,
        bot_token=None,
        guild_id=None,
        api_url=discord.api_url,
        max_body_bytes=65536,
    )
    interaction = discord.command(text="Chris Doe")
    token = str(interaction["token"])
    discord.asked(interaction)

    def answer_arrives() -> None:
        wait_until(lambda: discord.refused_edits, what="a first, refused edit")
        discord.answered(interaction, {"content": "⏳ Registering…", "flags": 64})

    arrival = threading.Thread(target=answer_arrives)
    arrival.start()

    async def edit() -> bool:
        api = DiscordApi(config)
        try:
            return await api.edit_original(discord.application_id, token, {"content": "✅ done"})
        finally:
            await api.aclose()

    assert asyncio.run(edit()) is True
    arrival.join()
    assert discord.edits_for(interaction) == [{"content": "✅ done"}]
    assert discord.refused_edits[0] == (token, 404)

    modal = discord.interact(discord.command())  # answered with the modal: no message
    assert modal.body["type"] == 9
    token = str(modal.interaction["token"])
    assert asyncio.run(edit()) is False
