"""What a hostile sender tried that used to get through (issue 12, items 1, 4, 5, 6, 8):
each reproduced over HTTP against the real service."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator

import httpx
import pytest
import structlog.testing

from adapter.settings import Settings
from tests.conftest import ADMIN_TOKEN, API_TOKEN, Service
from tests.test_admin import log_in

CHRIS = {"name": "Chris Doe", "email": "chris@example.com", "phone": "+14155552671"}
ANA = {"name": "Ana Lima", "email": "ana@example.com", "phone": "+14155552672"}
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def browser_client(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30, follow_redirects=False) as client:
        yield client


def test_a_lone_surrogate_is_refused_with_a_field_error(service: Service) -> None:
    body = '{"name": "Sur \\ud800Rogate", "email": "sur@example.com", "phone": "+14155552673"}'
    answer = service.client.post(
        "/contacts", content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    assert "not valid Unicode" in answer.json()["errors"]["name"]
    assert service.stored_rows() == 0


def test_every_view_shows_a_surrogate_stored_before(
    service: Service, browser_client: httpx.Client
) -> None:
    created = service.post_contact(**CHRIS)
    assert created.status_code == 201
    delivery_id = created.json()["delivery_id"]
    # A row stored by a release that let it through (JSON keeps the \ud800 escape).
    path = service.settings.database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as db:
        fields = json.dumps({**CHRIS, "name": "Sur \ud800Rogate"})
        db.execute("UPDATE deliveries SET fields = ? WHERE id = ?", (fields, delivery_id))
    detail = service.client.get(f"/deliveries/{delivery_id}", headers=ADMIN)
    assert detail.status_code == 200 and "Sur \ufffdRogate" in detail.json()["fields"]["name"]
    assert service.client.get("/deliveries", headers=ADMIN).status_code == 200
    log_in(browser_client)
    for url in (
        "/admin/deliveries",
        "/admin/deliveries?status=delivered",
        "/admin/deliveries?channel=api",
        f"/admin/deliveries/{delivery_id}",
    ):
        assert browser_client.get(url).status_code == 200, url
    env = {**os.environ, "LOG_LEVEL": "WARNING", "DATABASE_URL": service.settings.database_url}
    shown = subprocess.run(
        [sys.executable, "-m", "adapter.ops.cli", "deliveries", "show", delivery_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr


def test_an_idempotency_key_reused_for_another_person_is_a_422(service: Service) -> None:
    first = service.client.post("/contacts", json=CHRIS, headers={**AUTH, "Idempotency-Key": "k1"})
    assert first.status_code == 201
    again = service.client.post("/contacts", json=CHRIS, headers={**AUTH, "Idempotency-Key": "k1"})
    assert again.status_code == 200 and again.json()["duplicate"] is True
    other = service.client.post("/contacts", json=ANA, headers={**AUTH, "Idempotency-Key": "k1"})
    assert other.status_code == 422, other.text
    assert "another contact" in other.json()["errors"]["Idempotency-Key"]


def test_invalid_utf8_in_a_urlencoded_contact_is_a_400(service: Service) -> None:
    answer = service.client.post(
        "/contacts",
        content=b"name=%FF%FE&email=chris%40example.com&phone=%2B14155552671",
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 400, answer.text
    assert "UTF-8" in answer.json()["error"]
    assert service.stored_rows() == 0


@pytest.mark.parametrize(
    "query",
    ["offset=9223372036854775808", "offset=-1", "limit=0", "since=nan", "since=1e999"],
)
def test_numeric_query_parameters_out_of_range_are_a_400(service: Service, query: str) -> None:
    answer = service.client.get(f"/deliveries?{query}", headers=ADMIN)
    assert answer.status_code == 400, answer.text
    assert "error" in answer.json()


def test_a_percent_in_the_channel_filter_matches_only_itself(service: Service) -> None:
    assert service.post_contact(**CHRIS).status_code == 201
    everything = service.client.get("/deliveries?source=%25", headers=ADMIN)
    assert everything.status_code == 200
    assert everything.json()["deliveries"] == []
    assert (
        len(service.client.get("/deliveries?source=api", headers=ADMIN).json()["deliveries"]) == 1
    )


def test_start_up_says_when_no_proxy_is_in_front(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DYNO", raising=False)
    with structlog.testing.capture_logs() as logs:
        start_service(make_settings()).stop()
    warned = [line for line in logs if line["event"] == "no_proxy_in_front"]
    assert len(warned) == 1 and "BEHIND_PROXY=true" in warned[0]["message"]
    with structlog.testing.capture_logs() as logs:
        start_service(make_settings(behind_proxy=True)).stop()
    assert not [line for line in logs if line["event"] == "no_proxy_in_front"]
    monkeypatch.setenv("DYNO", "web.1")  # Heroku's router appends the client's address
    with structlog.testing.capture_logs() as logs:
        start_service(make_settings(database_url=make_settings().database_url)).stop()
    assert not [line for line in logs if line["event"] == "no_proxy_in_front"]


def test_a_signed_webhook_in_a_content_type_its_provider_never_sends_is_a_415(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hashlib
    import hmac
    import time

    secret = "generic-secret-0123456789"
    monkeypatch.setenv("GENERIC_WEBHOOK_SECRET", secret)
    service = start_service(make_settings())
    body = json.dumps({"event_id": "e1", **CHRIS}).encode()
    stamp = str(int(time.time()))
    signature = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
    headers = {
        "X-Contact-Adapter-Timestamp": stamp,
        "X-Contact-Adapter-Signature": "sha256=" + signature.hexdigest(),
    }
    answer = service.client.post(
        "/webhooks/generic", content=body, headers={**headers, "Content-Type": "text/plain"}
    )
    assert answer.status_code == 415, answer.text
    assert "application/json" in answer.json()["error"]
    assert service.stored_rows() == 0


def test_every_channel_refuses_a_surrogate_through_the_one_validation() -> None:
    from adapter.core.contact import ContactError, validate_contact

    with pytest.raises(ContactError) as refused:
        validate_contact(
            {"name": "Sur \ud800Rogate", "email": "sur@example.com", "phone": "+14155552673"},
            custom_fields={"company": "Ac\udfffme"},
        )
    assert set(refused.value.errors) == {"name", "custom_fields.company"}


def test_a_visitor_token_quoted_in_a_log_line_is_masked() -> None:
    from adapter.core.redact import redact_text

    keyed, unkeyed = "ocak-" + "0123456789abcdef" * 2, "oca-" + "fedcba9876543210" * 2
    masked = redact_text(f"GET /api/v1/livechat/visitor/{keyed} failed; old {unkeyed}")
    assert keyed not in masked and unkeyed not in masked
