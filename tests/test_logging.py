"""Structured logs end to end: one JSON object per line, ids where they belong, nothing personal.

A real ``contact-adapter serve`` (the Procfile's web command, ``LOG_LEVEL=DEBUG``, JSON
logs) runs the flows an operator sees: a valid and an invalid contact, a Rocket.Chat 503
and the retry, a 401 that pauses delivery and the resume, and, where those channels
exist, a signed generic webhook, a bad signature and a Slack slash command. Every line
of its stdout/stderr must be a JSON object; request lines carry the request id we sent
(``X-Request-Id``, as Heroku's router does), delivery lines the delivery id; and not one
line contains a name, email or phone used, in any normalised form, nor any secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapter.ops.logs import REDACTED, redact, redact_text
from tests.conftest import csrf_of
from tests.dynos import ROOT, Dyno, Formation, base_env, wait_for
from tests.rocketchat_standin import RocketChatStandIn, StandInServer

BOT_ID = "opsBot" + secrets.token_hex(4)
SECRETS = {
    "API_TOKEN": "api-" + secrets.token_hex(16),
    "ADMIN_TOKEN": "adm-" + secrets.token_hex(16),
    "METRICS_TOKEN": "met-" + secrets.token_hex(16),
    "ROCKETCHAT_AUTH_TOKEN": "rcpat-" + secrets.token_hex(16),
    "SLACK_SIGNING_SECRET": "sss" + secrets.token_hex(16),
    "SLACK_BOT_TOKEN": "xoxb-" + secrets.token_hex(16),
    "GENERIC_WEBHOOK_SECRET": "gws-" + secrets.token_hex(16),
}


# What happens to one delivery; worker-wide events (outage, resumed) have no delivery id.
# What the end-to-end flows must have logged before the log is read.
LOGGED_EVENTS = {"delivered", "delivery_retry", "delivery_paused", "delivery_resumed"}
PER_DELIVERY_EVENTS = frozenset(
    {
        "delivered",
        "delivery_retry",
        "delivery_paused",
        "delivery_rejected",
        "delivery_gave_up",
        "delivery_crashed",
        "rate_limited",
        "notify_failed",
        "webhook_accepted",
        "slack_outcome_reported",
    }
)


class Person:
    """A guest and every form their details could take in a log line."""

    def __init__(self, first: str, last: str, email: str, national: str) -> None:
        self.name = f"{first} {last}"
        self.email = email
        digits = re.sub(r"\D", "", national)
        self.phone = f"+1 {digits[:3]} {digits[3:6]} {digits[6:]}"
        self.forms = {
            first,
            last,
            self.name,
            email,
            email.split("@")[0],
            urllib.parse.quote(email),
            urllib.parse.quote_plus(self.phone),
            self.phone,
            f"+1{digits}",
            f"({digits[:3]}) {digits[3:6]}-{digits[6:]}",
            f"{digits[:3]}-{digits[3:6]}-{digits[6:]}",
            f"{digits[:3]}.{digits[3:6]}.{digits[6:]}",
        }
        self.digits = digits

    def body(self) -> dict[str, str]:
        return {"name": self.name, "email": self.email, "phone": self.phone}


PEOPLE = {
    "valid": Person("Zebulon", "Quarterfield", "zebulon.quarterfield@example.org", "4155552671"),
    "invalid": Person("Ottoline", "Brackenbury", "ottoline.b@", "202555"),
    "retry": Person("Percival", "Thistlewood", "p.thistlewood@example.net", "3125550143"),
    "paused": Person("Hortensia", "Wolverton", "hortensia.w@example.com", "6175550199"),
    "webhook": Person("Ambrosine", "Featherstone", "ambrosine@example.io", "2065550111"),
    "refused": Person("Leopold", "Marchbanks", "leopold.m@example.io", "3055550177"),
    "slack": Person("Cordelia", "Pennywhistle", "cordelia.p@example.co", "7185550123"),
}


def fake_slack() -> tuple[Starlette, list[dict[str, Any]]]:
    """The Slack Web API as the Slack channel calls it, plus a response_url sink."""
    calls: list[dict[str, Any]] = []

    async def api(request: Request) -> Response:
        method = request.path_params["method"]
        calls.append({"method": method, "body": (await request.body()).decode()})
        if method == "auth.test":
            body = {"ok": True, "team_id": "T111", "user_id": "U0BOT", "bot_id": "B111"}
            return JSONResponse(body, headers={"x-oauth-scopes": "commands,chat:write"})
        if method == "views.open":
            return JSONResponse({"ok": True, "view": {"id": "V123"}})
        return JSONResponse({"ok": True})

    async def respond(request: Request) -> Response:
        calls.append({"method": "response_url", "body": (await request.body()).decode()})
        return Response("ok")

    app = Starlette(
        routes=[
            Route("/api/{method}", api, methods=["POST", "GET"]),
            Route("/respond/{key}", respond, methods=["POST"]),
        ]
    )
    return app, calls


@pytest.fixture
def standin() -> RocketChatStandIn:
    users = {
        BOT_ID: {
            "token": SECRETS["ROCKETCHAT_AUTH_TOKEN"],
            "username": "ops.bot",
            "name": "Ops Bot",
            "roles": ["bot", "livechat-agent"],
        }
    }
    return RocketChatStandIn(users=users)


@pytest.fixture
def web(tmp_path: Path, standin: RocketChatStandIn) -> Iterator[tuple[Dyno, str]]:
    slack_app, _ = fake_slack()
    with StandInServer(standin.app) as rocketchat, StandInServer(slack_app) as slack:
        env = base_env(
            DATABASE_URL=f"sqlite:///{tmp_path / 'contacts.db'}",
            ROCKETCHAT_URL=rocketchat.url,
            ROCKETCHAT_USER_ID=BOT_ID,
            ROCKETCHAT_CONTACT_API="visitor",
            LOG_LEVEL="DEBUG",
            LOG_FORMAT="json",
            RETRY_FIRST_DELAY="0.2",
            RETRY_MAX_DELAY="0.5",
            WORKER_POLL_INTERVAL="0.1",
            AUTH_CHECK_INTERVAL="0.5",
            SLACK_API_URL=slack.url + "/api/",
            **SECRETS,
        )
        formation = Formation(env, tmp_path)
        dyno = formation.start("web")
        try:
            dyno.wait_ready()
            yield dyno, slack.url
        finally:
            formation.stop_all()


def _post(dyno: Dyno, request_id: str, person: Person) -> httpx.Response:
    headers = {"Authorization": f"Bearer {SECRETS['API_TOKEN']}", "X-Request-Id": request_id}
    return httpx.post(dyno.url + "/contacts", json=person.body(), headers=headers, timeout=10)


def _status(dyno: Dyno, delivery_id: str) -> str:
    return str(httpx.get(f"{dyno.url}/deliveries/{delivery_id}", timeout=5).json()["status"])


def _channels(dyno: Dyno) -> set[str]:
    """The kinds of channel the dyno logged at start-up (one line each: webhook:…, slack…)."""
    lines = [line for line in dyno.log_lines() if line.get("event") == "channel"]
    return {str(line["channel"]).split(":")[0] for line in lines}


def test_logs_are_json_with_ids_and_never_personal_data_or_secrets(
    web: tuple[Dyno, str], standin: RocketChatStandIn
) -> None:
    dyno, slack_url = web
    request_ids: dict[str, str] = {}

    # A valid contact, registered within the fast path.
    request_ids["valid"] = "req-valid-" + secrets.token_hex(4)
    response = _post(dyno, request_ids["valid"], PEOPLE["valid"])
    assert response.status_code == 201, response.text
    assert response.headers["x-request-id"] == request_ids["valid"]

    # An invalid one: 422 naming the fields.
    request_ids["invalid"] = "req-invalid-" + secrets.token_hex(4)
    assert _post(dyno, request_ids["invalid"], PEOPLE["invalid"]).status_code == 422

    # Rocket.Chat answers 503 once: retried later by the worker.
    standin.fail_next(1, 503)
    request_ids["retry"] = "req-retry-" + secrets.token_hex(4)
    retry = _post(dyno, request_ids["retry"], PEOPLE["retry"])
    assert retry.status_code == 202, retry.text
    wait_for(lambda: _status(dyno, retry.json()["delivery_id"]) == "delivered", 20, "the retry")

    # The credentials are refused (401): delivery pauses, then resumes when they work again.
    standin.set_credentials_valid(BOT_ID, False)
    request_ids["paused"] = "req-paused-" + secrets.token_hex(4)
    paused = _post(dyno, request_ids["paused"], PEOPLE["paused"])
    assert paused.status_code == 202, paused.text
    wait_for(lambda: httpx.get(dyno.url + "/readyz").status_code == 503, 10, "readyz 503")
    standin.set_credentials_valid(BOT_ID, True)
    wait_for(lambda: _status(dyno, paused.json()["delivery_id"]) == "delivered", 20, "resume")

    channels = _channels(dyno)
    if "webhook" in channels and (ROOT / "handlers" / "generic.py").exists():
        request_ids["webhook"] = "req-webhook-" + secrets.token_hex(4)
        body = json.dumps({**PEOPLE["webhook"].body(), "response_id": "r-1"}).encode()
        stamp = str(int(time.time()))
        mac = hmac.new(
            SECRETS["GENERIC_WEBHOOK_SECRET"].encode(), stamp.encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-Contact-Adapter-Timestamp": stamp,
            "X-Contact-Adapter-Signature": "sha256=" + mac,
            "X-Request-Id": request_ids["webhook"],
        }
        answer = httpx.post(dyno.url + "/webhooks/generic", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        request_ids["refused"] = "req-refused-" + secrets.token_hex(4)
        refused = json.dumps(PEOPLE["refused"].body()).encode()
        headers.update(
            {"X-Request-Id": request_ids["refused"], "X-Contact-Adapter-Signature": "sha256=00"}
        )
        assert (
            httpx.post(dyno.url + "/webhooks/generic", content=refused, headers=headers).status_code
            == 401
        )

    if "slack" in channels:
        request_ids["slack"] = "req-slack-" + secrets.token_hex(4)
        person = PEOPLE["slack"]
        form = urllib.parse.urlencode(
            {
                "token": "deprecated",
                "team_id": "T111",
                "team_domain": "example",
                "channel_id": "C111",
                "channel_name": "general",
                "user_id": "U222",
                "user_name": "agent.smith",
                "command": "/contact",
                "text": f"{person.name} {person.email} {person.phone}",
                "api_app_id": "A111",
                "is_enterprise_install": "false",
                "response_url": f"{slack_url}/respond/1",
                "trigger_id": "111.222.abc",
            }
        )
        stamp = str(int(time.time()))
        signature = (
            "v0="
            + hmac.new(
                SECRETS["SLACK_SIGNING_SECRET"].encode(),
                f"v0:{stamp}:{form}".encode(),
                hashlib.sha256,
            ).hexdigest()
        )
        answer = httpx.post(
            dyno.url + "/slack/events",
            content=form,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Slack-Request-Timestamp": stamp,
                "X-Slack-Signature": signature,
                "X-Request-Id": request_ids["slack"],
            },
            timeout=10,
        )
        assert answer.status_code == 200, answer.text

    def written() -> bool:
        """Every request's access line and the delivery events are in the log."""
        try:
            lines = dyno.log_lines()
        except AssertionError:  # a line half written: look again
            return False
        access = {line.get("request_id") for line in lines if line["logger"] == "uvicorn.access"}
        events = {line["event"] for line in lines}
        return set(request_ids.values()) <= access and events >= LOGGED_EVENTS

    wait_for(written, 10, "the last requests' and deliveries' lines")
    lines = dyno.log_lines()  # raises on any line that is not a JSON object
    assert len(lines) > 20
    text = dyno.output()

    # Nothing personal, nothing secret, in any line, in any form.
    for key, person in PEOPLE.items():
        if key not in request_ids and key not in ("valid", "invalid", "retry", "paused"):
            continue
        for form in person.forms:
            assert form.lower() not in text.lower(), f"{form!r} ({key}) leaked into the log"
        for line in lines:
            for value in _strings(line):
                assert person.digits not in re.sub(r"\D", "", value), (key, value)
    for name, secret in SECRETS.items():
        assert secret not in text, f"{name} leaked into the log"

    # Every line has the basics; request lines carry our request id, deliveries their id.
    for line in lines:
        assert {"event", "level", "timestamp", "logger"} <= set(line), line
    for key, request_id in request_ids.items():
        ours = [line for line in lines if line.get("request_id") == request_id]
        access = [line for line in ours if line["logger"] == "uvicorn.access"]
        assert len(access) == 1, f"{key}: the access line should carry the request id"
    for line in lines:
        if line["logger"] == "uvicorn.access":
            assert line.get("request_id"), f"access line without a request id: {line}"
        if line["event"] in PER_DELIVERY_EVENTS:
            assert re.fullmatch(r"[0-9a-f]{32}", str(line.get("delivery_id"))), line
    events = {line["event"] for line in lines}
    assert events >= LOGGED_EVENTS
    retried = [line for line in lines if line["event"] == "delivery_retry"]
    assert retried[0]["delivery_id"] == retry.json()["delivery_id"]
    # The retry happened on the request's fast path: it carries that request's id too.
    assert retried[0].get("request_id") == request_ids["retry"]


# -- Contact Center strategy, the admin page and a CSV import ----------------------------------

MORE_PEOPLE = {
    "cc_valid": Person("Evangeline", "Strawbridge", "evangeline.s@example.org", "4155550188"),
    "cc_failed": Person("Barnaby", "Copperfield", "barnaby.copper@example.net", "2125550166"),
    "import_1": Person("Millicent", "Ravenscroft", "millicent.r@example.com", "6465550142"),
    "import_2": Person("Thaddeus", "Winterbourne", "thaddeus.w@example.org", "7735550119"),
    "import_bad": Person("Ignatius", "Fothergill", "ignatius.fothergill@", "3125550"),
}
COMPANY = {"label": "Company", "required": True, "regexp": "", "searchable": False}


@pytest.fixture
def contact_center_web(tmp_path: Path, standin: RocketChatStandIn) -> Iterator[Dyno]:
    with StandInServer(standin.app) as rocketchat:
        env = base_env(
            DATABASE_URL=f"sqlite:///{tmp_path / 'contacts.db'}",
            ROCKETCHAT_URL=rocketchat.url,
            ROCKETCHAT_USER_ID=BOT_ID,
            ROCKETCHAT_CONTACT_API="contact-center",
            LOG_LEVEL="DEBUG",
            LOG_FORMAT="json",
            RETRY_FIRST_DELAY="0.2",
            RETRY_MAX_DELAY="0.5",
            WORKER_POLL_INTERVAL="0.1",
            **SECRETS,
        )
        formation = Formation(env, tmp_path)
        dyno = formation.start("web")
        try:
            dyno.wait_ready()
            yield dyno
        finally:
            formation.stop_all()


def test_contact_center_admin_retry_and_import_log_nothing_personal_or_secret(
    contact_center_web: Dyno, standin: RocketChatStandIn, tmp_path: Path
) -> None:
    dyno = contact_center_web
    # Contact Center strategy (POST /api/v1/omnichannel/contacts): registered at once.
    valid = _post(dyno, "req-cc-" + secrets.token_hex(4), MORE_PEOPLE["cc_valid"])
    assert valid.status_code == 201, valid.text

    # Rejected by Rocket.Chat (a required custom field we do not send): failed.
    standin.custom_fields["company"] = dict(COMPANY)
    failed_id = _post(dyno, "req-cc-failed", MORE_PEOPLE["cc_failed"]).json()["delivery_id"]
    wait_for(lambda: _status(dyno, failed_id) == "failed", 20, "the rejected delivery failed")

    # An operator logs in to /admin, fixes the cause, retries it from the detail page.
    with httpx.Client(base_url=dyno.url, timeout=10, follow_redirects=False) as admin:
        form = admin.get("/admin/login")
        login = admin.post(
            "/admin/login",
            data={"token": SECRETS["ADMIN_TOKEN"], "csrf_token": csrf_of(form.text), "next": "/"},
        )
        assert login.status_code == 303, login.text
        detail = admin.get(f"/admin/deliveries/{failed_id}")
        assert detail.status_code == 200 and "Retry this delivery" in detail.text
        del standin.custom_fields["company"]
        retried = admin.post(
            f"/admin/deliveries/{failed_id}/retry", data={"csrf_token": csrf_of(detail.text)}
        )
        assert retried.status_code == 303, retried.text
    wait_for(lambda: _status(dyno, failed_id) == "delivered", 20, "the retried delivery")

    # A CSV import into the same database (two good rows, one bad), delivered by the web.
    leads = tmp_path / "leads.csv"
    rows = [MORE_PEOPLE[k] for k in ("import_1", "import_2", "import_bad")]
    leads.write_text(
        "Full name,Email,Phone\n" + "".join(f"{p.name},{p.email},{p.phone}\n" for p in rows)
    )
    imported = subprocess.run(
        ["contact-adapter", "import", str(leads)],
        env=dyno.env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.returncode == 1, imported.stdout + imported.stderr  # one row rejected
    wait_for(lambda: len(standin.contacts) == 4, 20, "the imported contacts registered")

    def delivered_lines() -> int:
        return sum(1 for line in dyno.log_lines() if line.get("event") == "delivered")

    wait_for(lambda: delivered_lines() >= 4, 10, "a 'delivered' line per contact")
    lines = dyno.log_lines()
    texts = {"web": dyno.output(), "import": imported.stdout + imported.stderr}
    strategies = {line.get("strategy") for line in lines if line.get("event") == "delivered"}
    assert strategies == {"contact-center"}, strategies
    for key, person in MORE_PEOPLE.items():
        for where, text in texts.items():
            for form in person.forms:
                assert form.lower() not in text.lower(), f"{form!r} ({key}) in the {where} log"
        for line in lines:
            for value in _strings(line):
                assert person.digits not in re.sub(r"\D", "", value), (key, value)
    for name, secret in SECRETS.items():
        for where, text in texts.items():
            assert secret not in text, f"{name} leaked into the {where} log"
    events = {line["event"] for line in lines}
    assert {"delivered", "delivery_rejected"} <= events, events


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


# -- the redaction processor on its own --------------------------------------------------------


def test_redact_masks_personal_keys_and_values_inside_text() -> None:
    event = {
        "event": "oops for chris@example.com at +1 415 555 2671",
        "name": "Chris Doe",
        "fields": {"name": "Chris Doe"},
        "authorization": "Bearer abc",
        "delivery_id": "0123456789abcdef0123456789abcdef",
        "request_id": "req-1",
        "path": "/contacts?email=chris%40example.com",
    }
    out = redact(None, "info", dict(event))
    assert out["name"] == REDACTED and out["fields"] == REDACTED
    assert out["authorization"] == REDACTED
    assert "chris" not in out["event"] and "2671" not in out["event"]
    assert out["delivery_id"] == event["delivery_id"] and out["request_id"] == "req-1"
    assert "chris" not in out["path"]


def test_redact_text_keeps_addresses_and_ids_but_not_sql_parameters() -> None:
    assert redact_text("Uvicorn running on http://0.0.0.0:5000") == (
        "Uvicorn running on http://0.0.0.0:5000"
    )
    assert redact_text('127.0.0.1:55244 - "POST /contacts HTTP/1.1" 201').startswith("127.0.0.1")
    assert redact_text("2026-11-25T04:16:25.219265Z") == "2026-11-25T04:16:25.219265Z"
    leaked = (
        "(sqlalchemy.exc.IntegrityError) duplicate key\n[SQL: INSERT INTO deliveries ...]\n"
        "[parameters: ('0a1b', 'api', None, '{\"name\": \"Chris Doe\"}')]\n"
        "(Background on this error at: https://sqlalche.me/e/20/gkpj)"
    )
    assert "Chris" not in redact_text(leaked)
    assert "IntegrityError" in redact_text(leaked)
    assert "Chris" not in redact_text(
        "1 validation error\n  input_value='Chris Doe', input_type=str"
    )
    assert "+1%20415%20555%202671" not in redact_text("/x?phone=%2B1%20415%20555%202671")


def test_redact_runs_on_standard_library_records_too() -> None:
    """Also third-party records, and SQLAlchemy stays quiet even at DEBUG (it logs parameters)."""
    script = """
import asyncio, logging, structlog
from adapter.ops.logs import configure_logging
from adapter.ledger.schema import create_engine
configure_logging("DEBUG", "json")
logging.getLogger("somelib").warning("user chris@example.com called +1 415 555 2671")
structlog.get_logger("t").info("bound", email="chris@example.com", note="x")
async def main():
    engine = create_engine("sqlite:///:memory:")
    async with engine.connect() as conn:
        await conn.exec_driver_sql("SELECT ?", ("Chris Doe",))
    await engine.dispose()
asyncio.run(main())
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "chris@example.com" not in out and "2671" not in out and "Chris Doe" not in out
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert {line["event"] for line in lines} >= {"bound"}


def test_our_own_sentences_about_secret_settings_are_not_masked_but_values_are() -> None:
    # The start-up line of a channel that is off names the setting to set: readable.
    for sentence in (
        "set CHATWOOT_WEBHOOK_SECRET to the secret from Chatwoot",
        "set CRISP_WEBHOOK_SECRET or CRISP_WEBHOOK_KEY to the secret from Crisp",
        "the Discord channel is off: set DISCORD_PUBLIC_KEY (Developer Portal > Public Key)",
    ):
        assert redact_text(sentence) == sentence
    # Values after the same words still are.
    assert redact_text("secret hunter2 and token xoxb-123") == (
        f"secret {REDACTED} and token {REDACTED}"
    )
    assert redact_text("X-Auth-Token: to") == f"X-Auth-Token: {REDACTED}"
