"""The data's lifecycle on SQLite: retention erases exactly the personal columns, a pending
row is never touched, and forgetting a person leaves no byte of them in the database files
(the db, its WAL, free pages after a checkpoint) while the service runs; in Rocket.Chat the
visitor is removed, or the refusal reported as such."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from adapter.settings import Settings
from tests.conftest import ADMIN_TOKEN, DEPLOYMENT_SECRET, Service, wait_until
from tests.rocketchat_standin import RocketChatStandIn, StandInServer

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NAME, EMAIL, PHONE = "Zelda Quintavalle", "zelda.quintavalle@example.org", "+14155552671"
# Every form in which a byte of the person could remain.
NEEDLES = [b"Zelda", b"Quintavalle", b"zelda.quintavalle", b"4155552671", b"415 555 2671"]
AUDIT_COLUMNS = ("id", "source", "status", "created_at", "updated_at", "attempts", "contact_id")


def _db_path(settings: Settings) -> Path:
    return Path(settings.database_url.split(":///", 1)[1])


def _rows(settings: Settings, sql: str, *args: Any) -> list[dict[str, Any]]:
    with sqlite3.connect(_db_path(settings)) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql, args)]


def _age(settings: Settings, seconds: float) -> None:
    """Time passes: every row (and attempt) is ``seconds`` older."""
    with sqlite3.connect(_db_path(settings)) as db:
        db.execute("UPDATE deliveries SET updated_at = updated_at - ?", (seconds,))
        db.execute("UPDATE delivery_attempts SET started_at = started_at - ?", (seconds,))
        db.execute("UPDATE people SET updated_at = updated_at - ?", (seconds,))


def _cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "ROCKETCHAT_URL": settings.rocketchat_url,
        "ROCKETCHAT_USER_ID": settings.rocketchat_user_id,
        "ROCKETCHAT_AUTH_TOKEN": settings.rocketchat_auth_token.get_secret_value(),
        "ROCKETCHAT_CONTACT_API": settings.rocketchat_contact_api,
        "DEPLOYMENT_SECRET": DEPLOYMENT_SECRET,
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "adapter.ops.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _scan(path: Path) -> list[str]:
    """Which needles occur in the database file or its WAL."""
    found = []
    for file in (path, path.with_name(path.name + "-wal")):
        if file.exists():
            data = file.read_bytes()
            found += [f"{file.name}: {n.decode()}" for n in NEEDLES if n in data]
    return found


def test_purge_erases_exactly_the_personal_columns_and_never_a_pending_row(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    settings = make_settings()
    service = start_service(settings)
    delivered = service.post_contact(name=NAME, email=EMAIL, phone=PHONE, event_id="evt-1").json()
    assert service.settled(delivered["delivery_id"])["status"] == "delivered"
    standin.down = True  # the next one stays pending
    waiting = service.post_contact(
        name="Pat Pending", email="pat@example.org", phone="+442071838750"
    ).json()
    _age(settings, 31 * 86_400)
    before = {r["id"]: r for r in _rows(settings, "SELECT * FROM deliveries")}

    dry = _cli(settings, "purge", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would erase: deliveries 1 delivered" in dry.stdout
    assert (
        _rows(settings, "SELECT fields FROM deliveries WHERE id = ?", delivered["delivery_id"])[0][
            "fields"
        ]
        == before[delivered["delivery_id"]]["fields"]
    )  # a dry run erases nothing

    run = _cli(settings, "purge")
    assert run.returncode == 0, run.stderr
    assert "erased: deliveries 1 delivered" in run.stdout
    assert "zelda" not in (run.stdout + run.stderr).lower()  # counts, never data

    after = {r["id"]: r for r in _rows(settings, "SELECT * FROM deliveries")}
    row = after[delivered["delivery_id"]]
    assert json.loads(row["fields"]) == {}
    for column in ("email_key", "phone_key", "person_key", "event_id", "callback", "actor"):
        assert row[column] is None, column
    assert row["token"].startswith("h:")  # a kept digest, not the token
    assert row["erased_at"] is not None
    for column in AUDIT_COLUMNS:
        assert row[column] == before[delivered["delivery_id"]][column], column
    # The waiting delivery is untouched, however old.
    kept = ("fields", "email_key", "phone_key", "token", "callback", "erased_at")
    assert {c: after[waiting["delivery_id"]][c] for c in kept} == {
        c: before[waiting["delivery_id"]][c] for c in kept
    }
    assert after[waiting["delivery_id"]]["erased_at"] is None
    # The event id is kept as a digest: the same event again is still a duplicate.
    events = _rows(settings, "SELECT event_id FROM delivery_events")
    assert [e["event_id"][:2] for e in events] == ["h:"]
    standin.down = False
    again = service.post_contact(name=NAME, email=EMAIL, phone=PHONE, event_id="evt-1")
    assert again.json()["delivery_id"] == delivered["delivery_id"]
    # Counts survive the erasure, and the audit log says what the purge did.
    listing = service.client.get("/deliveries", headers=ADMIN).json()
    assert listing["counts"]["delivered"] == 1
    audit = service.client.get("/audit", headers=ADMIN).json()["entries"]
    assert audit[0]["action"] == "purge" and audit[0]["actor"] == "cli"
    assert audit[0]["summary"]["deliveries"]["delivered"] == 1


def test_forget_leaves_no_byte_of_the_person_in_the_files_while_the_service_runs(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    settings = make_settings()
    service = start_service(settings)
    first = service.post_contact(name=NAME, email=EMAIL, phone=PHONE).json()
    old_contact = service.settled(first["delivery_id"])["contact_id"]
    assert old_contact
    # Updated later (the row is rewritten: old versions sit in freed space and the WAL)…
    second = service.post_contact(name=NAME + " Jr", email=EMAIL, phone="+1 415 555 2671").json()
    service.settled(second["delivery_id"])
    # …a rejected try with the phone written another way, and someone else.
    bad = service.post_contact(name=NAME, email="not-an-email", phone="(415) 555-2671")
    assert bad.status_code == 422
    other = service.post_contact(
        name="Otto Other", email="otto@example.org", phone="+442071838750"
    ).json()
    service.settled(other["delivery_id"])
    path = _db_path(settings)
    assert _scan(path), "the person should be in the files before forget"

    answer = service.client.post(
        "/people/forget", json={"email": EMAIL.upper(), "rocketchat": True}, headers=ADMIN
    )
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["erased"]["deliveries"] == 2
    assert result["complete"] is True
    assert [r["outcome"] for r in result["rocketchat"]] == ["erased"]
    assert "zelda" not in answer.text.lower()

    assert _scan(path) == []
    # The rest of the ledger is intact, and the service keeps working.
    assert _rows(settings, "SELECT count(*) AS n FROM deliveries")[0]["n"] == 3
    assert b"Otto Other" in path.read_bytes() + (
        path.with_name(path.name + "-wal").read_bytes()
        if path.with_name(path.name + "-wal").exists()
        else b""
    )
    # In Rocket.Chat the visitor holds nothing of them any more.
    assert NAME not in json.dumps(list(standin.visitors.values()))
    # Audit: who, when, how many rows, never the data.
    entry = service.client.get("/audit", headers=ADMIN).json()["entries"][0]
    assert entry["action"] == "forget" and entry["actor"] == "admin api"
    assert entry["rows"] >= 2 and "zelda" not in json.dumps(entry).lower()

    # An erased person who writes again is a new contact: nothing of the old one comes back.
    back = service.post_contact(name="Zelda Q", email=EMAIL, phone="+442071838751").json()
    record = service.settled(back["delivery_id"])
    assert record["fields"]["phone"] == "+442071838751"  # not the old phone carried over
    assert record["contact_id"] != old_contact  # a new visitor in Rocket.Chat
    assert record["fields"]["name"] == "Zelda Q"


def test_forget_cancels_a_waiting_delivery_and_reports_open_rooms(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
    rocketchat: StandInServer,
) -> None:
    settings = make_settings(retry_first_delay=600, retry_max_delay=600)  # stays waiting
    service = start_service(settings)
    delivered = service.post_contact(name=NAME, email=EMAIL, phone=PHONE).json()
    service.settled(delivered["delivery_id"])
    token = next(iter(standin.visitors.values()))["token"]
    standin.open_rooms.add(token)  # a conversation is open
    standin.down = True
    waiting = service.post_contact(name=NAME, email=EMAIL, phone=PHONE).json()
    assert service.delivery(waiting["delivery_id"])["status"] == "pending"
    standin.down = False

    refused = _cli(settings, "forget", "--email", EMAIL, "--rocketchat")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "visitor-has-open-rooms" in refused.stderr
    assert "zelda" not in (refused.stdout + refused.stderr).lower()
    # The ledger is erased all the same; the waiting delivery is cancelled, never sent.
    cancelled = service.delivery(waiting["delivery_id"])
    assert cancelled["status"] == "failed" and cancelled["fields"] == {}
    assert "erased on request" in cancelled["last_error"]
    # Once the conversation is closed, the same command finishes the job (the token is
    # derived from the email again).
    standin.open_rooms.clear()
    done = _cli(settings, "forget", "--email", EMAIL, "--rocketchat")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Rocket.Chat visitor: erased" in done.stdout
    assert not any(v.get("token") == token for v in standin.visitors.values())
    # And the visitor route answers invalid-token now, as Rocket.Chat does.
    gone = httpx.delete(f"{rocketchat.url}/api/v1/livechat/visitor/{token}")
    assert gone.status_code == 400 and gone.json()["errorType"] == "invalid-token"


def test_forget_answers_field_errors_and_needs_the_admin_token(service: Service) -> None:
    assert service.client.post("/people/forget", json={"email": EMAIL}).status_code == 401
    nobody = service.client.post("/people/forget", json={}, headers=ADMIN)
    assert nobody.status_code == 400 and "email, phone or delivery" in nobody.json()["error"]
    bad = service.client.post("/people/forget", json={"phone": "12"}, headers=ADMIN)
    assert bad.status_code == 422 and "phone" in bad.json()["errors"]


def test_the_worker_sweeps_on_its_own(
    make_settings: Callable[..., Settings], start_service: Callable[[Settings], Service]
) -> None:
    settings = make_settings(retain_delivered="90s", retention_sweep_interval=0.2)
    service = start_service(settings)
    delivered = service.post_contact(name=NAME, email=EMAIL, phone=PHONE).json()
    service.settled(delivered["delivery_id"])
    _age(settings, 3600)
    wait_until(
        lambda: _rows(settings, "SELECT erased_at FROM deliveries")[0]["erased_at"],
        timeout=15,
        what="the worker's sweep erased the delivered row",
    )
    assert _rows(settings, "SELECT fields FROM deliveries")[0]["fields"] == "{}"
