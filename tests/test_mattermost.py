"""Mattermost, end to end: the real service under uvicorn, driven as Mattermost drives it
(``tests/mattermost_standin.py``), contacts landing in the Rocket.Chat stand-in. Request
formats: ``contracts/chat-platforms.md`` §1; the signed samples are sent as they are.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest

import handlers.mattermost
from adapter.settings import Settings, SettingsError
from tests.conftest import Service, wait_until
from tests.mattermost_standin import MattermostStandIn
from tests.rocketchat_standin import RocketChatStandIn

CHRIS = "Chris Doe chris@example.com +1 415 555 2671"
SAMPLES = Path("/work/shared/contracts/samples/mattermost")
SAMPLE_TOKEN = "xk8q3zcntfbomgqjqc1u4e7wpo"
SAMPLE_STATE_SECRET = "mm-dialog-state-secret-5c1d"
FIXED = 1795514400  # the samples' instant


def load_http(path: Path) -> tuple[str, dict[str, str], bytes]:
    raw = path.read_bytes()
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    headers.pop("Host", None)
    headers.pop("Content-Length", None)
    return lines[0].split(" ")[1], headers, body


@pytest.fixture
def mattermost() -> Iterator[MattermostStandIn]:
    standin = MattermostStandIn()
    with standin.serve():
        yield standin


@pytest.fixture
def start_mattermost(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    mattermost: MattermostStandIn,
) -> Callable[..., Service]:
    def start(channel: dict[str, str] | None = None, **overrides: Any) -> Service:
        settings = make_settings(
            channel_settings=mattermost.channel_settings(**(channel or {})), **overrides
        )
        service = start_service(settings)
        mattermost.request_url = service.url + "/mattermost/command"
        return service

    return start


@pytest.fixture
def service(start_mattermost: Callable[..., Service]) -> Service:
    return start_mattermost()


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The freshness checks see the samples' instant (plus ten seconds)."""
    monkeypatch.setattr(handlers.mattermost.channel, "clock", lambda: FIXED + 10.0)


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
    return [c for c in standin.calls if c.method == "POST" and "omnichannel/contact" in c.path]


# ------------------------------------------------------------------- the slash command


def test_command_registers_the_contact_and_answers_privately(
    service: Service, mattermost: MattermostStandIn, standin: RocketChatStandIn
) -> None:
    response, sent = mattermost.command(CHRIS)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    assert answer["response_type"] == "ephemeral" and answer["skip_slack_parsing"] is True
    (record,) = deliveries(service)
    assert record["status"] == "delivered"
    assert "**Chris Doe** is now a contact in Rocket.Chat" in answer["text"]
    assert record["contact_id"] in answer["text"]
    assert (record["source"], record["actor"], record["team"]) == (
        "mattermost",
        mattermost.user_id,
        mattermost.team_id,
    )
    assert record["fields"]["phone"] == "+14155552671"
    (post,) = contact_posts(standin)
    assert post.json["name"] == "Chris Doe"
    assert mattermost.posts_to(sent["response_url"]) == []  # nothing more to say


def test_missing_details_open_a_prefilled_dialog_whose_errors_show_under_each_field(
    service: Service, mattermost: MattermostStandIn, standin: RocketChatStandIn
) -> None:
    response, sent = mattermost.command("Chris Doe chris@example")
    answer = response.json()
    assert "**Email**: 'chris@example' is not a valid email address" in answer["text"]
    assert "**Phone**: is required" in answer["text"]
    assert "form that just opened" in answer["text"]
    (opened,) = mattermost.dialogs
    assert opened.problems == [] and opened.user_id == mattermost.user_id
    assert opened.url == service.url + "/mattermost/dialog"
    elements = {e["name"]: e for e in opened.dialog["elements"]}
    assert elements["name"]["default"] == "Chris Doe"
    assert (
        elements["email"]["subtype"] == "email"
        and "not a valid email" in elements["email"]["help_text"]
    )
    assert deliveries(service) == [] and contact_posts(standin) == []

    wrong = mattermost.submit_dialog({"email": "chris@example", "phone": "+1 555"})
    assert wrong.status_code == 200
    errors = wrong.json()["errors"]
    assert errors["email"].startswith("'chris@example' is not a valid email address")
    assert errors["phone"].startswith("'+1 555' is not a valid phone number")
    assert deliveries(service) == []

    right = mattermost.submit_dialog({"email": "chris@example.com", "phone": "+1 415 555 2671"})
    assert right.status_code == 200 and right.json() == {}  # closes the dialog
    (record,) = deliveries(service)
    assert record["status"] == "delivered" and record["fields"]["email"] == "chris@example.com"
    (confirmation,) = wait_until(lambda: mattermost.posts_to(sent["response_url"]))
    assert confirmation["response_type"] == "ephemeral"
    assert "**Chris Doe** is now a contact" in confirmation["text"]
    # The same submission again (a replay) registers nothing more.
    again = mattermost.submit_dialog({"email": "chris@example.com", "phone": "+1 415 555 2671"})
    assert again.status_code == 200 and len(deliveries(service)) == 1
    assert len(contact_posts(standin)) == 1


def test_empty_command_opens_the_empty_form_silently(
    service: Service, mattermost: MattermostStandIn
) -> None:
    response, _ = mattermost.command("")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-type"].startswith("text/plain")  # a silent ack
    (opened,) = mattermost.dialogs
    assert all("default" not in e for e in opened.dialog["elements"])


def test_form_that_cannot_open_says_so_with_an_example(
    service: Service, mattermost: MattermostStandIn
) -> None:
    mattermost.trigger_seconds = 0  # every trigger has expired when the app uses it
    response, _ = mattermost.command("Chris Doe")
    text = response.json()["text"]
    assert "**Email**: is required" in text
    assert "the form could not open" in text and "/contact Chris Doe chris@example.com" in text
    assert mattermost.dialogs == [] and len(mattermost.dialog_opens) == 1


def test_delayed_outcome_is_posted_to_response_url(
    service: Service, mattermost: MattermostStandIn, standin: RocketChatStandIn
) -> None:
    standin.down = True
    response, sent = mattermost.command(CHRIS)
    assert "Registering **Chris Doe**" in response.json()["text"]
    (record,) = deliveries(service)
    assert record["status"] == "pending"  # stored before the answer
    assert record["callback"]["response_url"] == sent["response_url"]
    standin.down = False
    (outcome,) = wait_until(lambda: mattermost.posts_to(sent["response_url"]), timeout=15)
    assert "**Chris Doe** is now a contact in Rocket.Chat" in outcome["text"]
    assert outcome["response_type"] == "ephemeral"
    assert mattermost.ephemeral_posts == []


def test_outcome_after_the_response_url_expired_comes_as_the_bots_ephemeral_post(
    service: Service, mattermost: MattermostStandIn, standin: RocketChatStandIn
) -> None:
    standin.down = True
    response, sent = mattermost.command(CHRIS)
    assert response.status_code == 200
    mattermost.age_hook(sent["response_url"], 31 * 60)
    # The callback's own clock started at our end: age it too.
    path = service.settings.database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as conn:
        (raw,) = conn.execute("SELECT callback FROM deliveries").fetchone()
        callback = json.loads(raw)
        callback["issued_at"] -= 31 * 60
        conn.execute("UPDATE deliveries SET callback = ?", (json.dumps(callback),))
    standin.down = False
    (post,) = wait_until(lambda: mattermost.ephemeral_posts, timeout=15)
    assert post["user_id"] == mattermost.user_id
    assert post["post"]["channel_id"] == mattermost.channel_id
    assert "**Chris Doe** is now a contact" in post["post"]["message"]
    assert mattermost.posts_to(sent["response_url"]) == []


def test_answer_goes_out_in_time_even_when_storing_is_slow(
    service: Service, mattermost: MattermostStandIn
) -> None:
    queue = service.app.state.queue
    real_submit = queue.submit

    async def stalled_submit(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(4)  # noqa: sleep-ok - the stalled database this test is about
        return await real_submit(*args, **kwargs)

    queue.submit = stalled_submit
    started = time.monotonic()
    response, sent = mattermost.command(CHRIS)
    assert time.monotonic() - started < 3.5  # well inside Mattermost's 30 s, and no wait
    assert "Registering **Chris Doe**" in response.json()["text"]
    (outcome,) = wait_until(lambda: mattermost.posts_to(sent["response_url"]), timeout=15)
    assert "**Chris Doe** is now a contact" in outcome["text"]
    assert len(deliveries(service)) == 1


# ------------------------------------------------------------------- refused requests


def test_forged_stale_and_replayed_commands_store_nothing_twice(
    service: Service, mattermost: MattermostStandIn, standin: RocketChatStandIn
) -> None:
    body, _ = mattermost.command_body(CHRIS, token="wrongtoken0000000000000000")
    forged = mattermost.post(body, token="wrongtoken0000000000000000")
    assert forged.status_code == 401 and "MATTERMOST_COMMAND_TOKEN" in forged.json()["error"]
    stale_body, _ = mattermost.command_body(CHRIS, trigger_millis=int(time.time() - 600) * 1000)
    stale = mattermost.post(stale_body)
    assert stale.status_code == 401 and "more than 5 minutes old" in stale.json()["error"]
    assert deliveries(service) == [] and contact_posts(standin) == []

    body, _ = mattermost.command_body(CHRIS)
    first = mattermost.post(body)
    replay = mattermost.post(body)
    assert first.status_code == replay.status_code == 200
    assert "was already registered" in replay.json()["text"]
    assert len(deliveries(service)) == 1 and len(contact_posts(standin)) == 1


def test_malformed_commands_are_400_naming_the_part(
    service: Service, mattermost: MattermostStandIn
) -> None:
    body, _ = mattermost.command_body(CHRIS)
    without_trigger = body.replace(b"trigger_id=", b"trigger_xx=")
    answer = mattermost.post(without_trigger)
    assert answer.status_code == 400 and "'trigger_id' is missing" in answer.json()["error"]
    elsewhere = body.replace(
        quote_plus(mattermost.base_url).encode(), b"https%3A%2F%2Fevil.example"
    )
    answer = mattermost.post(elsewhere)
    assert answer.status_code == 400 and "'response_url'" in answer.json()["error"]
    assert mattermost.post(b"\xff\xfe" + body).status_code == 400
    too_big = mattermost.post(body + b"&x=" + b"a" * 70_000)
    assert too_big.status_code == 413
    assert deliveries(service) == []


def test_forged_and_expired_dialog_submissions_are_refused(
    service: Service, mattermost: MattermostStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    mattermost.command("Chris Doe")
    good = {"email": "chris@example.com", "phone": "+1 415 555 2671"}
    state = mattermost.dialogs[0].dialog["state"]
    forged = mattermost.submit_dialog(good, state=state[:-1] + ("0" if state[-1] != "0" else "1"))
    assert forged.status_code == 401 and "signature" in forged.json()["error"]
    other_user = mattermost.submit_dialog(good, user_id="someoneelse0000000000000000")
    assert other_user.status_code == 401 and "another user" in other_user.json()["error"]
    monkeypatch.setattr(handlers.mattermost.channel, "clock", lambda: time.time() + 3600)
    expired = mattermost.submit_dialog(good)
    assert expired.status_code == 200 and "open too long" in expired.json()["error"]
    assert deliveries(service) == []
    monkeypatch.undo()
    cancelled = mattermost.submit_dialog(cancelled=True)
    assert cancelled.status_code == 200 and cancelled.json() == {}
    assert deliveries(service) == []


# ------------------------------------------------------------------- the contract's samples


def test_the_contracts_samples_verify_with_their_secrets(
    start_mattermost: Callable[..., Service], fixed_clock: None, standin: RocketChatStandIn
) -> None:
    service = start_mattermost(
        {
            "MATTERMOST_COMMAND_TOKEN": SAMPLE_TOKEN,
            "MATTERMOST_URL": "https://chat.example.com",
            "MATTERMOST_DIALOG_SECRET": SAMPLE_STATE_SECRET,
        }
    )

    def send(name: str) -> httpx.Response:
        path, headers, body = load_http(SAMPLES / name)
        return httpx.post(service.url + path, content=body, headers=headers, timeout=30)

    complete = send("slash_command_complete.http")
    assert complete.status_code == 200, complete.text
    assert "**Chris Doe** is now a contact" in complete.json()["text"]
    (record,) = deliveries(service)
    assert record["fields"]["email"] == "chris.doe@example.com"

    incomplete = send("slash_command_incomplete.http")  # no network: the form cannot open
    assert incomplete.status_code == 200
    assert "**Email**: is required" in incomplete.json()["text"]

    bad_email = send("dialog_submission_bad_email.http")
    assert bad_email.status_code == 200
    assert "not a valid email address" in bad_email.json()["errors"]["email"]
    cancelled = send("dialog_cancelled.http")
    assert cancelled.status_code == 200 and cancelled.json() == {}
    assert len(deliveries(service)) == 1 and len(contact_posts(standin)) == 1


def test_samples_signed_with_another_secret_are_refused(
    start_mattermost: Callable[..., Service], fixed_clock: None
) -> None:
    service = start_mattermost({"MATTERMOST_URL": "https://chat.example.com"})
    for name in ("slash_command_complete.http", "dialog_submission_bad_email.http"):
        path, headers, body = load_http(SAMPLES / name)
        answer = httpx.post(service.url + path, content=body, headers=headers, timeout=30)
        assert answer.status_code == 401, name
    assert deliveries(service) == []


# ------------------------------------------------------------------- settings and the worker


def test_settings_are_checked_at_start_up_naming_the_variable(
    make_settings: Callable[..., Settings], mattermost: MattermostStandIn
) -> None:
    from adapter.web.app import create_app

    bad = make_settings(channel_settings=mattermost.channel_settings(MATTERMOST_URL="chat"))
    with pytest.raises(SettingsError, match="MATTERMOST_URL"):
        handlers.mattermost.channel.check(bad)
    with pytest.raises(SettingsError, match="MATTERMOST_URL"):
        create_app(bad)
    token = make_settings(channel_settings={"MATTERMOST_COMMAND_TOKEN": "short"})
    with pytest.raises(SettingsError, match="MATTERMOST_COMMAND_TOKEN"):
        handlers.mattermost.channel.check(token)


def test_channel_is_off_without_its_settings(
    start_service: Callable[[Settings], Service], make_settings: Callable[..., Settings]
) -> None:
    service = start_service(make_settings())
    answer = service.client.post("/mattermost/command", content=b"text=x")
    assert answer.status_code == 503 and "MATTERMOST_COMMAND_TOKEN" in answer.json()["error"]
    answer = service.client.post("/mattermost/dialog", content=b"{}")
    assert answer.status_code == 503


def test_worker_process_reports_with_nothing_but_the_record_and_settings(
    make_settings: Callable[..., Settings], mattermost: MattermostStandIn
) -> None:
    """``contact-adapter worker`` has no web app: the outcome still reaches the user."""
    from adapter.channels import ChannelContext
    from adapter.core.records import DeliveryRecord
    from adapter.web.app import create_app
    from handlers.mattermost.replies import make_callback

    settings = make_settings(channel_settings=mattermost.channel_settings())
    queue = create_app(settings).state.queue
    context = ChannelContext(settings=settings, queue=queue)
    _, sent = mattermost.command_body(CHRIS)
    now = time.time()
    callback = make_callback(
        response_url=sent["response_url"], user_id=mattermost.user_id,
        channel_id=mattermost.channel_id, issued_at=now,
    )  # fmt: skip
    record = DeliveryRecord(
        id="d1", source="mattermost", status="delivered", attempts=1,
        fields={"name": "Chris Doe"}, token="oca-x", event_id=None, person_key=None,
        errors=None, warnings=None, next_attempt_at=now, last_error=None,
        contact_id="c123", strategy="visitor", callback=callback, actor=mattermost.user_id,
        team=None, contact_manager=None, created_at=now, updated_at=now,
        delivered_at=now, notified_at=None,
    )  # fmt: skip

    async def report() -> None:
        await handlers.mattermost.channel.notify(context, record)
        await queue.engine.dispose()

    asyncio.run(report())
    (posted,) = mattermost.posts_to(sent["response_url"])
    assert "**Chris Doe** is now a contact" in posted["text"] and "c123" in posted["text"]
