"""Slack, end to end: the real service under uvicorn, driven exactly as Slack drives it.

Signed form bodies go out as raw bytes (``tests/slack_standin.py``); the app calls the
Slack Web API stand-in and posts to its response_urls; contacts land in the Rocket.Chat
stand-in. Request formats: ``contracts/slack.md``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.datastructures import Headers

from adapter.settings import Settings, SettingsError
from handlers.slack.config import parse_manager_map
from handlers.slack.sender import make_callback, response_url_usable
from handlers.slack.verify import check_signature
from tests.conftest import ADMIN_TOKEN, Service, wait_until
from tests.rocketchat_standin import RocketChatStandIn
from tests.slack_standin import SlackStandIn, sign

CHRIS = "Chris Doe chris@example.com +1 415 555 2671"
USER = "U2147483697"


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    standin = SlackStandIn()
    with standin.serve():
        yield standin


@pytest.fixture
def start_slack(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    slack: SlackStandIn,
) -> Callable[..., Service]:
    """The service with Slack settings pointed at the stand-in (overrides as channel settings)."""

    def start(channel: dict[str, str] | None = None, **overrides: Any) -> Service:
        settings = make_settings(
            channel_settings=slack.channel_settings(**(channel or {})), **overrides
        )
        service = start_service(settings)
        slack.request_url = service.url + "/slack/events"
        return service

    return start


@pytest.fixture
def service(start_slack: Callable[..., Service]) -> Service:
    return start_slack()


def deliveries(service: Service) -> list[dict[str, Any]]:
    """The deliveries table, read straight from the service's SQLite file."""
    path = service.settings.database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM deliveries ORDER BY created_at").fetchall()
    out = []
    for row in rows:
        item = dict(row)
        for key in ("fields", "callback", "errors"):
            item[key] = json.loads(item[key]) if item[key] else None
        out.append(item)
    return out


def contact_posts(standin: RocketChatStandIn) -> list[Any]:
    return [
        c
        for c in standin.calls
        if c.method == "POST" and c.path.startswith("/api/v1/omnichannel/contact")
    ]


# ------------------------------------------------------------------- the slash command


def test_command_registers_the_contact_and_answers_with_a_link(
    start_slack: Callable[..., Service], slack: SlackStandIn, standin: RocketChatStandIn
) -> None:
    service = start_slack({"SLACK_CONTACT_MANAGER_MAP": f'{{"{USER}": "agent.smith"}}'})
    started = time.monotonic()
    response, sent = slack.command(CHRIS)
    assert time.monotonic() - started < 2.5
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    assert answer["response_type"] == "ephemeral"
    (record,) = deliveries(service)
    assert record["status"] == "delivered"
    assert "*Chris Doe* is now a contact in Rocket.Chat" in answer["text"]
    assert record["contact_id"] in answer["text"]  # the link to the contact
    assert (record["source"], record["actor"], record["team"]) == ("slack", USER, "T111")
    assert record["contact_manager"] == "agent.smith"
    assert record["fields"]["phone"] == "+14155552671"
    (post,) = contact_posts(standin)
    assert post.json["contactManager"] == {"username": "agent.smith"}
    assert post.json["name"] == "Chris Doe"
    assert slack.posts_to(sent["response_url"]) == []  # nothing more to say later


def test_invalid_text_lists_each_problem_and_offers_a_prefilled_form(
    service: Service, slack: SlackStandIn, standin: RocketChatStandIn
) -> None:
    response, _ = slack.command("Chris Doe chris@ +1 555")
    assert response.status_code == 200
    answer = response.json()
    assert "*Email*: 'chris@' is not a valid email address" in answer["text"]
    assert "*Phone*: '+1 555' is not a valid phone number" in answer["text"]
    assert deliveries(service) == [] and contact_posts(standin) == []

    clicked, payload = slack.click(answer, "open_contact_form")
    assert clicked.status_code == 200 and clicked.content == b""
    (opened,) = wait_until(lambda: slack.api_calls("views.open"))
    assert opened.args["trigger_id"] == payload["trigger_id"]
    assert opened.token == slack.bot_token
    assert opened.response["ok"] is True, opened.response
    view = opened.args["view"]
    inputs = {b["block_id"]: b["element"] for b in view["blocks"] if b["type"] == "input"}
    assert inputs["name_block"]["initial_value"] == "Chris Doe"
    assert inputs["phone_block"]["initial_value"] == "+1 555"
    assert inputs["email_block"]["type"] == "email_text_input"
    assert "initial_value" not in inputs["email_block"]  # Slack refuses a malformed one
    # No DEFAULT_PHONE_REGION: the hint says a number needs its country code.
    phone_hint = next(b for b in view["blocks"] if b["block_id"] == "phone_block")["hint"]
    assert "Start with + and the country code, e.g. +1 415 555 2671" in phone_hint["text"]
    assert "read as" not in phone_hint["text"]

    view_id = opened.response["view"]["id"]
    refused = slack.submit_view(view_id, {"email": "chris@example", "phone": "+1 555"})
    assert refused.status_code == 200
    errors = refused.json()
    assert errors["response_action"] == "errors"
    assert set(errors["errors"]) == {"email_block", "phone_block"}
    assert errors["errors"]["phone_block"] == "'+1 555' is not a valid phone number"
    assert deliveries(service) == []

    closed = slack.submit_view(view_id, {"email": "chris@example.com", "phone": "+44 20 7946 0958"})
    assert closed.status_code == 200 and closed.content == b""  # empty 200 closes the modal
    (record,) = deliveries(service)
    assert record["status"] == "delivered" and record["actor"] == USER
    assert record["fields"]["phone"] == "+442079460958"
    # The confirmation replaces the error message the button was on.
    (confirmation,) = wait_until(lambda: slack.posts_to(payload["response_url"]))
    assert confirmation["replace_original"] is True
    assert "*Chris Doe* is now a contact" in confirmation["text"]


@pytest.mark.parametrize("text", ["", "help"])
def test_command_without_contact_opens_the_modal(
    start_slack: Callable[..., Service],
    slack: SlackStandIn,
    standin: RocketChatStandIn,
    text: str,
) -> None:
    service = start_slack(default_phone_region="US")
    response, sent = slack.command(text)
    assert response.status_code == 200 and response.content == b""
    (opened,) = wait_until(lambda: slack.api_calls("views.open"))
    assert opened.args["trigger_id"] == sent["trigger_id"]
    view = opened.args["view"]
    assert view["callback_id"] == "contact_form" and view["submit"]["text"] == "Register"
    phone = next(b for b in view["blocks"] if b["block_id"] == "phone_block")
    assert "read as a US number" in phone["hint"]["text"]
    assert "e.g. +1 415 555 2671" in phone["hint"]["text"]
    view_id = opened.response["view"]["id"]

    closed = slack.submit_view(
        view_id, {"name": "Dana Lee", "email": "dana@example.com", "phone": "(415) 555-0199"}
    )
    assert closed.status_code == 200 and closed.content == b""
    (record,) = deliveries(service)
    assert record["fields"]["phone"] == "+14155550199"
    # Confirmed where the command was typed, through the command's response_url.
    (confirmation,) = wait_until(lambda: slack.posts_to(sent["response_url"]))
    assert "*Dana Lee* is now a contact" in confirmation["text"]
    assert "replace_original" not in confirmation


def test_delayed_outcome_is_posted_to_response_url(
    service: Service, slack: SlackStandIn, standin: RocketChatStandIn
) -> None:
    standin.down = True
    started = time.monotonic()
    response, sent = slack.command(CHRIS)
    assert time.monotonic() - started < 2.5
    assert response.status_code == 200
    assert "Registering *Chris Doe*" in response.json()["text"]
    (record,) = deliveries(service)
    assert record["status"] == "pending"  # stored before the answer
    assert record["callback"]["response_url"] == sent["response_url"]
    standin.down = False
    (outcome,) = wait_until(lambda: slack.posts_to(sent["response_url"]), timeout=15)
    assert "*Chris Doe* is now a contact in Rocket.Chat" in outcome["text"]
    (record,) = deliveries(service)
    assert record["status"] == "delivered" and record["contact_id"] in outcome["text"]
    assert slack.api_calls("chat.postMessage") == []


def test_outcome_after_the_response_url_expired_comes_as_a_dm(
    service: Service, slack: SlackStandIn, standin: RocketChatStandIn
) -> None:
    standin.down = True
    response, sent = slack.command(CHRIS)
    assert response.status_code == 200
    slack.age_response_url(sent["response_url"], 31 * 60)
    standin.down = False
    (dm,) = wait_until(lambda: slack.dms(USER), timeout=15)
    assert "*Chris Doe* is now a contact" in dm["text"]
    assert slack.posts_to(sent["response_url"]) == []
    (call,) = slack.api_calls("chat.postMessage")
    assert call.token == slack.bot_token


def test_response_url_is_used_within_30_minutes_and_5_posts_only() -> None:
    callback = make_callback(
        response_url="https://hooks.slack.com/commands/T1/1/x",
        user_id="U1",
        team_id="T1",
        enterprise_id=None,
        enterprise_install=False,
        channel_id="C1",
        issued_at=1000.0,
    )
    assert response_url_usable(callback, now=1010.0)
    assert response_url_usable(callback, now=1000.0 + 28 * 60)
    assert not response_url_usable(callback, now=1000.0 + 29.5 * 60)  # a minute of margin
    assert not response_url_usable({**callback, "posts": 5}, now=1010.0)
    assert response_url_usable({**callback, "posts": 4}, now=1010.0)
    assert not response_url_usable({**callback, "response_url": None}, now=1010.0)


def test_same_command_twice_within_a_minute_registers_once(
    service: Service, slack: SlackStandIn, standin: RocketChatStandIn
) -> None:
    first, _ = slack.command(CHRIS)
    again, _ = slack.command("chris@EXAMPLE.com  Chris Doe +14155552671")
    assert "is now a contact" in first.json()["text"]
    assert "was already registered a moment ago" in again.json()["text"]
    assert len(deliveries(service)) == 1
    assert len(contact_posts(standin)) == 1
    # Another user typing the same thing is another event (merged into the same contact).
    other, _ = slack.command(CHRIS, user_id="U0OTHER")
    assert "is now a contact" in other.json()["text"]
    assert len(deliveries(service)) == 2


def test_duplicate_window_spans_the_minute_boundary(
    service: Service, slack: SlackStandIn, standin: RocketChatStandIn
) -> None:
    slack.command(CHRIS)
    path = service.settings.database_url.split(":///", 1)[1]

    def move_first_event(seconds_ago: float) -> None:
        """Pretend the first command came ``seconds_ago``, in its own minute."""
        with sqlite3.connect(path) as conn:
            event_id, _created = conn.execute(
                "SELECT event_id, created_at FROM delivery_events WHERE event_id LIKE 'cmd:%'"
            ).fetchall()[0]
            stamp = time.time() - seconds_ago
            head, _, _ = event_id.rpartition(":")
            bucket = int(time.time() // 60) - 1
            conn.execute(
                "UPDATE delivery_events SET event_id = ?, created_at = ? WHERE event_id = ?",
                (f"{head}:{bucket}", stamp, event_id),
            )

    move_first_event(30)
    again, _ = slack.command(CHRIS)
    assert "was already registered a moment ago" in again.json()["text"]
    move_first_event(61)
    later, _ = slack.command(CHRIS)
    assert "is now a contact" in later.json()["text"]
    assert "already" not in later.json()["text"]


def test_one_workspace_checks_its_token_once_not_per_command(
    service: Service, slack: SlackStandIn
) -> None:
    """``auth.test`` at start-up only: a command must not cost Slack's rate-limited API a call."""
    (check,) = wait_until(lambda: slack.api_calls("auth.test"))
    assert check.token == slack.bot_token
    for n in range(3):
        response, _ = slack.command(f"Chris Doe chris{n}@example.com +1 415 555 267{n}")
        assert "is now a contact" in response.json()["text"]
    invalid, _ = slack.command("Chris Doe chris@ +1 555")
    slack.click(invalid.json(), "open_contact_form")
    slack.command("")
    wait_until(lambda: len(slack.api_calls("views.open")) == 2)  # both forms opened
    assert len(slack.api_calls("auth.test")) == 1


def test_text_with_the_word_payload_reaches_the_core(service: Service, slack: SlackStandIn) -> None:
    # bolt 1.30 parses any form body containing "payload" as an interaction (§3.8.1).
    # (text after the details is a note, not the name: the word goes before them)
    response, _ = slack.command("Chris Doe payload payload@example.com +1 415 555 2671")
    assert response.status_code == 200
    (record,) = deliveries(service)
    assert record["fields"]["email"] == "payload@example.com"
    assert record["fields"]["name"] == "Chris Doe payload"


def test_slack_escapes_are_undone_before_extraction(service: Service, slack: SlackStandIn) -> None:
    response, _ = slack.command(
        "Chris &amp; Sam &lt;Doe&gt; <mailto:chris@example.com|chris@example.com> +1 415 555 2671"
    )
    assert response.status_code == 200, response.text
    (record,) = deliveries(service)
    assert record["fields"]["email"] == "chris@example.com"
    assert record["fields"]["name"].startswith("Chris & Sam")
    assert "*Chris &amp; Sam" in response.json()["text"]  # escaped again for mrkdwn


def test_configured_command_name(start_slack: Callable[..., Service], slack: SlackStandIn) -> None:
    service = start_slack({"SLACK_COMMAND": "/guest"})
    ours, _ = slack.command(CHRIS, command="/guest")
    assert "is now a contact" in ours.json()["text"]
    other, _ = slack.command(CHRIS, command="/contact")
    assert other.status_code == 200
    assert "registers contacts with `/guest`" in other.json()["text"]
    assert len(deliveries(service)) == 1


# ------------------------------------------------------------------- refusing requests


def test_forged_and_stale_requests_are_refused_and_nothing_is_stored(
    service: Service, slack: SlackStandIn, standin: RocketChatStandIn
) -> None:
    now = int(time.time())
    forged, _ = slack.command(CHRIS, secret="not-the-signing-secret")
    stale, _ = slack.command(CHRIS, timestamp=str(now - 301))
    future, _ = slack.command(CHRIS, timestamp=str(now + 400))
    assert [r.status_code for r in (forged, stale, future)] == [401, 401, 401]
    assert "SLACK_SIGNING_SECRET" in forged.json()["error"]
    body, _ = slack.command_body(CHRIS)
    ts = str(now)
    tampered = slack.post(
        body.replace(b"Chris", b"Eve"),
        headers={
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": sign(slack.signing_secret, ts, body),
        },
    )
    assert tampered.status_code == 401
    assert deliveries(service) == [] and contact_posts(standin) == []
    within, _ = slack.command(CHRIS, timestamp=str(now - 290))
    assert within.status_code == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"X-Slack-Request-Timestamp": "not-a-number"}, 400),
        ({"X-Slack-Request-Timestamp": "1e9"}, 400),
        ({"X-Slack-Request-Timestamp": ""}, 400),
        ({"X-Slack-Request-Timestamp": "12"}, 401),  # numeric, but 1970
        ({"X-Slack-Request-Timestamp": "-5"}, 400),
        ({"X-Slack-Signature": ""}, 401),
        ({"X-Slack-Signature": "v0=zz"}, 401),
        ({"X-Slack-Signature": "v1=" + "0" * 64}, 401),
    ],
)
def test_malformed_headers_are_4xx_never_500(
    service: Service, slack: SlackStandIn, headers: dict[str, str], status: int
) -> None:
    body, _ = slack.command_body(CHRIS)
    ts = str(int(time.time()))
    sent = {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": sign(slack.signing_secret, ts, body),
    }
    sent.update(headers)
    response = slack.post(body, signed=False, headers=sent)
    assert response.status_code == status, response.text
    assert response.json()["error"]
    assert deliveries(service) == []


def test_missing_signature_headers_and_malformed_signed_bodies(
    service: Service, slack: SlackStandIn
) -> None:
    unsigned = slack.post(slack.command_body(CHRIS)[0], signed=False)
    assert unsigned.status_code == 401
    assert (
        slack.post(
            b"\xff\xfe text=\xc3", content_type="application/x-www-form-urlencoded"
        ).status_code
        == 400
    )
    assert slack.post(b"{not json", content_type="application/json").status_code == 400
    assert slack.post(b"[1, 2]", content_type="application/json").status_code == 400
    assert slack.post(b"payload=%7Bbroken").status_code == 400
    deep = b"[" * 30_000 + b"]" * 30_000  # under the size cap, too deep for Python: 400
    assert slack.post(b"payload=" + deep).status_code == 400
    assert slack.post(b'{"a":' + deep + b"}", content_type="application/json").status_code == 400
    assert deliveries(service) == []


def test_oversized_body_is_413(start_slack: Callable[..., Service], slack: SlackStandIn) -> None:
    service = start_slack()
    big, _ = slack.command("x" * (64 * 1024))
    assert big.status_code == 413
    assert "SLACK_MAX_BODY_BYTES" in big.json()["error"]
    chunks = slack.post(
        iter([b"a" * 40_000, b"b" * 40_000]),  # chunked: no length
        signed=False,
        headers={"X-Slack-Request-Timestamp": "1", "X-Slack-Signature": "v0=0"},
    )
    assert chunks.status_code == 413
    assert deliveries(service) == []


def test_signed_but_oddly_shaped_interactions_are_400_never_500(
    service: Service, slack: SlackStandIn, standin: RocketChatStandIn
) -> None:
    """Correctly signed payloads whose parts have the wrong JSON type: a 400 saying which."""
    answer, _ = slack.command("Chris Doe chris@ +1 555")
    click = slack.block_actions_payload(answer.json(), "open_contact_form")
    slack.command("")
    (call,) = wait_until(lambda: slack.api_calls("views.open"))
    submit = slack.view_submission_payload(
        call.response["view"]["id"],
        {"name": "Dana Lee", "email": "dana@example.com", "phone": "+1 415 555 0199"},
    )
    assert slack.send_payload(submit).status_code == 200  # the well-formed one is fine
    assert len(deliveries(service)) == 1
    view = submit["view"]
    shapes: list[tuple[dict[str, Any], str]] = [
        ({**click, "actions": "open_contact_form"}, "actions"),
        ({**click, "actions": ["open_contact_form"]}, "actions"),
        ({**click, "user": USER}, "user"),
        ({**submit, "view": "V123"}, "view"),
        ({**submit, "view": {**view, "state": "x"}}, "view.state"),
        ({**submit, "view": {**view, "state": {"values": ["x"]}}}, "view.state.values"),
        ({**click, "type": ["block_actions"]}, "type"),
    ]
    for payload, part in shapes:
        response = slack.send_payload(payload)
        assert response.status_code == 400, (part, response.status_code, response.text)
        assert f"'{part}'" in response.json()["error"], response.text
    assert len(deliveries(service)) == 1 and len(contact_posts(standin)) == 1
    assert len(slack.api_calls("views.open")) == 1  # no form opened for a malformed click


def test_ssl_check_gets_an_empty_200(service: Service, slack: SlackStandIn) -> None:
    response = slack.ssl_check()
    assert response.status_code == 200 and response.content == b""
    assert deliveries(service) == []


def test_verification_token_in_the_environment_changes_nothing(
    start_slack: Callable[..., Service],
    slack: SlackStandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bolt reads SLACK_VERIFICATION_TOKEN itself and then refuses the right one (§3.8.2)."""
    token = "gIkuvaNzQIHg97ATvDxqgjtO"  # what Slack puts in an ssl_check
    monkeypatch.setenv("SLACK_VERIFICATION_TOKEN", token)
    service = start_slack()
    plain = slack.ssl_check()
    assert plain.status_code == 200 and plain.content == b""
    signed = slack.post(
        json.dumps({"ssl_check": "1", "token": token}).encode(), content_type="application/json"
    )
    assert signed.status_code == 200, signed.text
    response, _ = slack.command(CHRIS)
    assert response.status_code == 200
    assert "is now a contact" in response.json()["text"]
    assert len(deliveries(service)) == 1


def test_mattermost_style_request_is_refused(
    service: Service, slack: SlackStandIn, standin: RocketChatStandIn
) -> None:
    # Mattermost's documented example: token auth, no signature, no replay protection.
    body = (
        b"channel_id=jux16pkewjrkfj3ehep1psxyxc&channel_name=town-square&command=%2Fcontact"
        b"&response_url=http%3A%2F%2Flocalhost%3A8065%2Fhooks%2Fcommands%2Fxbrkb8p393gjpq5cawei7npije"
        b"&team_domain=test&team_id=carya1qs77bemjup96ff538snh&text=Chris+Doe+chris%40example.com"
        b"+%2B1+415+555+2671&token=okwexkjpe7ygb8eq1ww58t483w&user_id=aoa1agao6t8fmx3ikt1j9w5ybw"
        b"&user_name=somename"
    )
    response = slack.post(
        body,
        signed=False,
        headers={
            "Authorization": "Token okwexkjpe7ygb8eq1ww58t483w",
            "Accept": "application/json",
            "User-Agent": "Go-http-client/1.1",
        },
    )
    assert response.status_code == 401
    assert "Mattermost" in response.json()["error"]
    assert deliveries(service) == [] and contact_posts(standin) == []


def test_without_signing_secret_the_routes_answer_503_naming_it(
    start_slack: Callable[..., Service], slack: SlackStandIn
) -> None:
    service = start_slack({"SLACK_SIGNING_SECRET": ""})
    response, _ = slack.command(CHRIS)
    assert response.status_code == 503
    assert "SLACK_SIGNING_SECRET" in response.json()["error"]
    assert service.client.get("/slack/install").status_code == 503


def test_signature_check_matches_slacks_test_vector() -> None:
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
        b"G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook"
        b"-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F3977"
        b"00885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d"
        b"10d2c447fce8b6703c"
    )
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    signature = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    headers = Headers({"x-slack-request-timestamp": "1531420618", "x-slack-signature": signature})
    assert sign(secret, "1531420618", body) == signature
    assert check_signature(secret, headers, body, now=1531420618 + 299) is None
    assert check_signature(secret, headers, body, now=1531420618 + 301) is not None
    assert check_signature(secret, headers, body + b"x", now=1531420618) is not None


def test_contact_manager_map_forms() -> None:
    assert parse_manager_map('{"U1": "alice", "U2": "@bob"}') == {"U1": "alice", "U2": "bob"}
    assert parse_manager_map("U1=alice, U2=bob") == {"U1": "alice", "U2": "bob"}
    with pytest.raises(ValueError, match="U123=alice"):
        parse_manager_map("U1 alice")


def test_malformed_slack_setting_stops_start_up_naming_it(
    make_settings: Callable[..., Settings], slack: SlackStandIn
) -> None:
    from adapter.web.app import create_app

    settings = make_settings(
        channel_settings=slack.channel_settings(SLACK_CONTACT_MANAGER_MAP="U1 alice")
    )
    with pytest.raises(SettingsError, match="SLACK_CONTACT_MANAGER_MAP"):
        create_app(settings)


# ------------------------------------------------------------------- many workspaces


def oauth_settings(slack: SlackStandIn) -> dict[str, str]:
    return {
        "SLACK_BOT_TOKEN": "",
        "SLACK_CLIENT_ID": slack.client_id,
        "SLACK_CLIENT_SECRET": slack.client_secret,
    }


def start_install(service: Service) -> tuple[str, str]:
    """A browser opens /slack/install: Slack's authorize URL and the state cookie."""
    page = service.client.get("/slack/install")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    cookie = page.headers["set-cookie"].split(";")[0]
    assert cookie.startswith("slack-app-oauth-state=")
    authorize_url = next(
        part.split('"')[0]
        for part in page.text.split('href="')[1:]
        if part.startswith("https://slack.com/oauth/v2/authorize")
    ).replace("&amp;", "&")
    state = parse_qs(urlsplit(authorize_url).query)["state"][0]
    assert cookie == f"slack-app-oauth-state={state}"
    return authorize_url, cookie


def test_oauth_install_round_trip_then_a_command_from_that_workspace(
    start_slack: Callable[..., Service], slack: SlackStandIn, standin: RocketChatStandIn
) -> None:
    service = start_slack(oauth_settings(slack))
    authorize_url, cookie = start_install(service)
    redirect = slack.approve_install(
        authorize_url, service.url + "/slack/oauth_redirect", team_id="T222"
    )
    without_cookie = httpx.get(redirect)  # another browser: refused, state kept unused
    assert without_cookie.status_code == 400
    done = httpx.get(redirect, headers={"Cookie": cookie})
    assert done.status_code == 200, done.text
    (access,) = slack.api_calls("oauth.v2.access")
    assert access.response["ok"] is True
    team = slack.teams["T222"]
    path = service.settings.database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as conn:
        stored = conn.execute("SELECT team_id, bot_token FROM slack_bots").fetchall()
    assert stored == [("T222", team.bot_token)]
    replay = httpx.get(redirect, headers={"Cookie": cookie})  # a state is good once
    assert replay.status_code != 200

    response, _ = slack.command(CHRIS, team_id="T222", user_id="U0DANA")
    assert response.status_code == 200
    assert "is now a contact" in response.json()["text"]
    (record,) = deliveries(service)
    assert (record["team"], record["actor"]) == ("T222", "U0DANA")
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for team_id, expected in (("T222", [record["id"]]), ("T111", [])):  # each workspace's own
        listed = service.client.get("/deliveries", params={"team": team_id}, headers=admin)
        assert [d["id"] for d in listed.json()["deliveries"]] == expected
    empty, _ = slack.command("", team_id="T222", user_id="U0DANA")
    assert empty.status_code == 200
    (opened,) = wait_until(lambda: slack.api_calls("views.open"))
    assert opened.token == team.bot_token and opened.response["ok"] is True

    # A workspace that never installed the app is told so, and nothing is stored.
    stranger, sent = slack.command(CHRIS, team_id="T333", user_id="U0EVE")
    assert stranger.status_code == 200
    (notice,) = wait_until(lambda: slack.posts_to(sent["response_url"]))
    assert "not installed" in notice["text"]
    assert len(deliveries(service)) == 1


def test_manifest_matches_the_service() -> None:
    import yaml

    from handlers.slack.config import BOT_SCOPES, DEFAULT_COMMAND

    manifest = yaml.safe_load((Path(__file__).parent.parent / "slack-manifest.yml").read_text())
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == DEFAULT_COMMAND
    assert command["url"].endswith("/slack/events")
    assert manifest["settings"]["interactivity"]["request_url"] == command["url"]
    assert manifest["oauth_config"]["redirect_urls"][0].endswith("/slack/oauth_redirect")
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == set(BOT_SCOPES)
    assert len(manifest["display_information"]["name"]) <= 35
    # Late outcomes come as a DM from the bot: the Messages tab must show it, read-only.
    home = manifest["features"]["app_home"]
    assert home["messages_tab_enabled"] is True
    assert home["messages_tab_read_only_enabled"] is True


def test_form_that_cannot_open_says_so_with_an_example(
    service: Service, slack: SlackStandIn
) -> None:
    slack.trigger_seconds = 0  # Slack took too long to hand us the request
    response, sent = slack.command("")
    assert response.status_code == 200
    (notice,) = wait_until(lambda: slack.posts_to(sent["response_url"]))
    assert "Could not open the form (trigger_expired)" in notice["text"]
    assert "/contact Chris Doe chris@example.com" in notice["text"]


def test_worker_process_reports_with_nothing_but_the_record_and_settings(
    make_settings: Callable[..., Settings], slack: SlackStandIn
) -> None:
    """``contact-adapter worker`` has no bolt app: the outcome still reaches the user."""
    import asyncio

    from adapter.channels import ChannelContext
    from adapter.core.records import DeliveryRecord
    from adapter.web.app import create_app
    from handlers.slack import channel

    settings = make_settings(channel_settings=slack.channel_settings())
    queue = create_app(settings).state.queue
    context = ChannelContext(settings=settings, queue=queue)  # as the worker builds it
    _, fresh = slack.command_body(CHRIS)
    _, old = slack.command_body(CHRIS)

    def record(callback: dict[str, Any]) -> DeliveryRecord:
        now = time.time()
        return DeliveryRecord(
            id="d1", source="slack", status="delivered", attempts=2,
            fields={"name": "Chris Doe"}, token="oca-x", event_id=None, person_key=None,
            errors=None, warnings=None, next_attempt_at=now, last_error=None,
            contact_id="c123", strategy="visitor", callback=callback, actor=USER,
            team="T111", contact_manager=None, created_at=now, updated_at=now,
            delivered_at=now, notified_at=None,
        )  # fmt: skip

    def callback(fields: dict[str, str], issued_at: float) -> dict[str, Any]:
        return make_callback(
            response_url=fields["response_url"], user_id=USER, team_id="T111",
            enterprise_id=None, enterprise_install=False, channel_id="C1", issued_at=issued_at,
        )  # fmt: skip

    async def report() -> None:
        await channel.notify(context, record(callback(fresh, time.time())))
        # Our own clock says 29.5 minutes: too close to Slack's 30 to trust the URL.
        await channel.notify(context, record(callback(old, time.time() - 29.5 * 60)))
        await queue.engine.dispose()

    asyncio.run(report())
    (posted,) = slack.posts_to(fresh["response_url"])
    assert "*Chris Doe* is now a contact" in posted["text"] and "c123" in posted["text"]
    assert slack.posts_to(old["response_url"]) == []
    assert slack.posts_to(old["response_url"], refused=True) == []  # not even tried
    (dm,) = slack.dms(USER)
    assert "*Chris Doe* is now a contact" in dm["text"]


def test_answer_goes_out_in_time_even_when_storing_is_slow(
    service: Service, slack: SlackStandIn, standin: RocketChatStandIn
) -> None:
    """A database stalled for 4 s must not cost Slack's 3-second answer."""
    import asyncio

    queue = service.app.state.queue
    real_submit = queue.submit

    async def stalled_submit(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(4)  # noqa: sleep-ok - the stalled database this test is about
        return await real_submit(*args, **kwargs)

    queue.submit = stalled_submit
    started = time.monotonic()
    response, sent = slack.command(CHRIS)
    assert time.monotonic() - started < 2.9
    assert "Registering *Chris Doe*" in response.json()["text"]
    # Once stored (and registered at once), the outcome follows at the response_url.
    (outcome,) = wait_until(lambda: slack.posts_to(sent["response_url"]), timeout=15)
    assert "*Chris Doe* is now a contact" in outcome["text"]
    assert len(deliveries(service)) == 1


@pytest.mark.postgres
def test_oauth_install_and_command_on_postgres(
    start_slack: Callable[..., Service], slack: SlackStandIn, postgres_url: str
) -> None:
    """The installation and state stores share the deliveries' PostgreSQL database."""
    service = start_slack(oauth_settings(slack), database_url=postgres_url + "?sslmode=disable")
    authorize_url, cookie = start_install(service)
    redirect = slack.approve_install(
        authorize_url, service.url + "/slack/oauth_redirect", team_id="T222"
    )
    done = httpx.get(redirect, headers={"Cookie": cookie})
    assert done.status_code == 200, done.text
    response, _ = slack.command(CHRIS, team_id="T222", user_id="U0DANA")
    assert "is now a contact" in response.json()["text"]
    empty, _ = slack.command("", team_id="T222", user_id="U0DANA")
    assert empty.status_code == 200
    (opened,) = wait_until(lambda: slack.api_calls("views.open"))
    assert opened.token == slack.teams["T222"].bot_token


def test_a_command_replayed_inside_the_signature_window_is_a_duplicate(
    service: Service, slack: SlackStandIn, standin: RocketChatStandIn
) -> None:
    """Issue 12, item 3: replayed 130 s later (inside the 5-minute signature window, past
    the minute buckets) it used to become a second delivery."""
    sent_at = int(time.time()) - 130
    body, _ = slack.command_body(CHRIS)
    first = slack.post(body, timestamp=str(sent_at))
    assert "is now a contact" in first.json()["text"]
    path = service.settings.database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as conn:  # the command's minute buckets, 130 s ago
        for event_id, _ in conn.execute("SELECT event_id, created_at FROM delivery_events"):
            head, _, bucket = event_id.rpartition(":")
            if event_id.startswith("cmd:"):
                moved = f"{head}:{int(bucket) - 3}"
                conn.execute(
                    "UPDATE delivery_events SET event_id = ?, created_at = ? WHERE event_id = ?",
                    (moved, sent_at, event_id),
                )
        conn.execute("UPDATE delivery_events SET created_at = ?", (sent_at,))
    replay = slack.post(body, timestamp=str(sent_at))
    assert replay.status_code == 200
    assert "already registered" in replay.json()["text"]
    assert len(deliveries(service)) == 1
    assert len(contact_posts(standin)) == 1
