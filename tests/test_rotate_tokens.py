"""People registered under the unkeyed tokens of older releases (issue 12, item 0): they
keep their stored token on every intake path, and ``contact-adapter rotate-tokens`` moves
them to keyed tokens in Rocket.Chat the way Rocket.Chat really re-keys a visitor."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from adapter.core.keys import DeploymentKey
from adapter.rocketchat.sansio import contact_token
from tests.conftest import ADMIN_TOKEN, BOT, DEPLOYMENT_SECRET, Service
from tests.rocketchat_standin import RocketChatStandIn

CHRIS = {"name": "Chris Doe", "email": "chris@example.com", "phone": "+14155552671"}
ANA = {"name": "Ana Lima", "email": "ana@example.com", "phone": "+14155552672"}
KEY = DeploymentKey(DEPLOYMENT_SECRET)


def db_path(service: Service) -> str:
    return service.settings.database_url.split(":///", 1)[1]


def make_unkeyed(service: Service, standin: RocketChatStandIn, email: str, *, v2: bool) -> str:
    """Turn a registered person into one of an older release: the unkeyed token in the
    ledger and in Rocket.Chat (and, for ``v2``, no email_key/phone_key, as before schema 3)."""
    old = contact_token(email=email, phone=None, person_key=None)
    new = KEY.visitor_token(email=email, phone=None, person_key=None)
    with sqlite3.connect(db_path(service)) as db:
        db.execute("UPDATE deliveries SET token = ? WHERE token = ?", (old, new))
        if v2:
            db.execute("UPDATE deliveries SET email_key = NULL, phone_key = NULL")
    for visitor in standin.visitors.values():
        if visitor["token"] == new:
            visitor["token"] = old
    standin.visitors_changed()
    return old


def registered(standin: RocketChatStandIn) -> list[dict[str, Any]]:
    return [
        c.json
        for c in standin.calls
        if c.method == "POST" and c.path == "/api/v1/omnichannel/contact" and c.status == 200
    ]


def tokens_in_ledger(service: Service) -> set[str]:
    with sqlite3.connect(db_path(service)) as db:
        return {
            row[0] for row in db.execute("SELECT token FROM deliveries WHERE token IS NOT NULL")
        }


def rotate(service: Service, rocketchat_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LOG_LEVEL": "WARNING",
        "ROCKETCHAT_URL": rocketchat_url,
        "ROCKETCHAT_USER_ID": BOT["user_id"],
        "ROCKETCHAT_AUTH_TOKEN": BOT["token"],
        "ROCKETCHAT_CONTACT_API": "visitor",
        "DATABASE_URL": service.settings.database_url,
        "DEPLOYMENT_SECRET": DEPLOYMENT_SECRET,
    }
    return subprocess.run(
        [sys.executable, "-m", "adapter.ops.cli", "rotate-tokens", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_person_from_before_schema_3_keeps_their_stored_token(
    service: Service, standin: RocketChatStandIn
) -> None:
    first = service.post_contact(**CHRIS)
    assert first.status_code == 201, first.text
    old = make_unkeyed(service, standin, CHRIS["email"], v2=True)
    again = service.post_contact(**{**CHRIS, "name": "Chris Q. Doe"})
    assert again.status_code in (200, 201), again.text
    # Rocket.Chat heard the stored token again: one visitor, the same contact id.
    assert registered(standin)[-1]["token"] == old
    assert len(standin.visitors) == 1
    assert again.json()["contact_id"] == first.json()["contact_id"]
    assert tokens_in_ledger(service) == {old}


def test_an_import_of_a_known_person_keeps_their_stored_token(
    service: Service, standin: RocketChatStandIn, tmp_path: Path
) -> None:
    assert service.post_contact(**CHRIS).status_code == 201
    old = make_unkeyed(service, standin, CHRIS["email"], v2=True)
    csv = tmp_path / "leads.csv"
    csv.write_text("name,email,phone\nChris Doe,chris@example.com,+14155552671\n")
    env = {
        **os.environ,
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": service.settings.database_url,
        "DEPLOYMENT_SECRET": DEPLOYMENT_SECRET,
        "ROCKETCHAT_URL": "http://127.0.0.1:9",  # stored only: the service delivers
        "INPROCESS_WORKER": "false",
    }
    result = subprocess.run(
        [sys.executable, "-m", "adapter.ops.cli", "import", str(csv)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert tokens_in_ledger(service) == {old}


def test_rotate_tokens_moves_the_visitor_in_rocketchat_and_the_ledger(
    service: Service, standin: RocketChatStandIn
) -> None:
    standin.add_custom_field("company", label="Company")
    chris = service.post_contact(**CHRIS, custom_fields={"company": "Acme"})
    ana = service.post_contact(**ANA)
    assert chris.status_code == 201 and ana.status_code == 201
    old = make_unkeyed(service, standin, CHRIS["email"], v2=False)
    ana_old = make_unkeyed(service, standin, ANA["email"], v2=False)
    [visitor] = [v for v in standin.visitors.values() if v["token"] == old]
    visitor["contactManager"] = {"username": "agent.smith"}  # an agent assigned one
    url = service.settings.rocketchat_url

    dry = rotate(service, url, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would move in Rocket.Chat") == 2, dry.stdout
    assert tokens_in_ledger(service) == {old, ana_old}
    assert visitor["token"] == old

    done = rotate(service, url)
    assert done.returncode == 0, done.stderr
    new = KEY.visitor_token(email=CHRIS["email"], phone=None, person_key=None)
    # The same visitor now answers to the keyed token, with what it held unchanged.
    assert visitor["token"] == new
    assert visitor["livechatData"] == {"company": "Acme"}
    assert visitor["contactManager"] == {"username": "agent.smith"}
    assert len(standin.visitors) == 2
    assert old not in {v["token"] for v in standin.visitors.values()}
    assert tokens_in_ledger(service) == {
        new,
        KEY.visitor_token(email=ANA["email"], phone=None, person_key=None),
    }
    # One line per person, by delivery id: no name, email, phone or token.
    lines = done.stdout.strip().splitlines()
    assert sum("  moved " in line for line in lines) == 2, done.stdout
    assert "2 people under unkeyed tokens: 2 moved" in done.stdout
    for secret in (*CHRIS.values(), *ANA.values(), old, new, ana_old, "Acme"):
        assert secret not in done.stdout + done.stderr + dry.stdout + dry.stderr

    # The next registration uses the keyed token and reaches the same visitor.
    again = service.post_contact(**CHRIS)
    assert again.status_code in (200, 201), again.text
    assert registered(standin)[-1]["token"] == new
    assert again.json()["contact_id"] == chris.json()["contact_id"]

    # Safe to run again: nobody left to move.
    rerun = rotate(service, url)
    assert rerun.returncode == 0, rerun.stderr
    assert "0 people under unkeyed tokens" in rerun.stdout


def test_rotate_tokens_finishes_a_half_done_run_and_keeps_a_visitor_without_email(
    service: Service, standin: RocketChatStandIn
) -> None:
    phone_only = {"name": "Pat Doe", "phone": "+14155552673"}
    both = service.post_contact(**CHRIS)
    pat = service.post_contact(**phone_only, email="pat@example.com")
    assert both.status_code == 201 and pat.status_code == 201
    old = make_unkeyed(service, standin, CHRIS["email"], v2=False)
    pat_old = make_unkeyed(service, standin, "pat@example.com", v2=False)
    # Chris was moved in Rocket.Chat by a run that stopped before the ledger.
    new = KEY.visitor_token(email=CHRIS["email"], phone=None, person_key=None)
    for visitor in standin.visitors.values():
        if visitor["token"] == old:
            visitor["token"] = new
        if visitor["token"] == pat_old:
            visitor.pop("visitorEmails")  # an agent removed Pat's email in Rocket.Chat
    standin.visitors_changed()
    done = rotate(service, service.settings.rocketchat_url)
    assert done.returncode == 0, done.stderr
    assert "ledger-only" in done.stdout and "kept-no-email" in done.stdout, done.stdout
    assert tokens_in_ledger(service) == {new, pat_old}
    # Pat's visitor still answers to the token the ledger keeps using; no second visitor.
    assert pat_old in {v["token"] for v in standin.visitors.values()}
    assert len(standin.visitors) == 2


def test_no_token_in_the_admin_answers_or_the_cli(
    service: Service, standin: RocketChatStandIn
) -> None:
    response = service.post_contact(**CHRIS)
    assert response.status_code == 201
    delivery_id = response.json()["delivery_id"]
    token = KEY.visitor_token(email=CHRIS["email"], phone=None, person_key=None)
    assert token not in response.text
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    detail = service.client.get(f"/deliveries/{delivery_id}", headers=admin)
    listing = service.client.get("/deliveries", headers=admin)
    public = service.client.get(f"/deliveries/{delivery_id}")
    for answer in (detail, listing, public):
        assert answer.status_code == 200
        assert token not in answer.text
    assert "token" not in json.loads(detail.text)
    env = {**os.environ, "LOG_LEVEL": "WARNING", "DATABASE_URL": service.settings.database_url}
    shown = subprocess.run(
        [sys.executable, "-m", "adapter.ops.cli", "deliveries", "show", delivery_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert token not in shown.stdout
