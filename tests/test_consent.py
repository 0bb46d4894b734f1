"""Consent: with REQUIRE_CONSENT the API and the hosted form refuse a guest who did not
agree (a field error naming consent), a signed webhook without it is kept as rejected,
and an agreed one is stored with the text's version and time, sent to Rocket.Chat as
custom fields when ROCKETCHAT_CUSTOM_FIELDS names them."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from urllib.parse import urlencode

from adapter.settings import Settings
from tests.conftest import Service
from tests.rocketchat_standin import RocketChatStandIn
from tests.test_webhooks_forms import sign_generic

TEXT = "I agree that Example Ltd stores my details to answer me."
GOOD = {"name": "Chris Doe", "email": "chris@example.com", "phone": "+1 415 555 2671"}
GENERIC_SECRET = "generic-secret-0123456789abcdef"


def _start(
    make_settings: Callable[..., Settings], start_service: Callable[[Settings], Service]
) -> Service:
    settings = make_settings(
        require_consent=True,
        form_consent_text=TEXT,
        rocketchat_custom_fields="consent_version,consent_at",
        channel_settings={"GENERIC_WEBHOOK_SECRET": GENERIC_SECRET},
    )
    return start_service(settings)


def _row(service: Service, delivery_id: str) -> dict[str, object]:
    path = service.settings.database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return dict(db.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone())


def test_the_api_refuses_without_consent_and_stores_and_sends_it_when_given(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    for field in ("consent_version", "consent_at"):
        standin.add_custom_field(field)
    service = _start(make_settings, start_service)
    refused = service.post_contact(**GOOD)
    assert refused.status_code == 422
    assert refused.json()["errors"]["consent"].startswith("is required")
    both = service.post_contact(name="Chris Doe", email="not-an-email", phone=GOOD["phone"])
    assert set(both.json()["errors"]) == {"email", "consent"}  # every problem at once

    before = time.time()
    agreed = service.post_contact(**GOOD, consent=True)
    assert agreed.status_code in (201, 202), agreed.text
    row = _row(service, agreed.json()["delivery_id"])
    version = service.settings.consent_version
    assert version and row["consent_version"] == version
    assert isinstance(row["consent_at"], float) and row["consent_at"] >= before - 1
    service.settled(agreed.json()["delivery_id"])
    visitor = next(v for v in standin.visitors.values() if v.get("name") == "Chris Doe")
    assert visitor["livechatData"]["consent_version"] == version
    assert visitor["livechatData"]["consent_at"].endswith("Z")


def test_the_hosted_form_shows_the_box_and_refuses_without_it(
    make_settings: Callable[..., Settings], start_service: Callable[[Settings], Service]
) -> None:
    service = _start(make_settings, start_service)
    page = service.client.get("/form")
    assert TEXT in page.text and 'name="consent"' in page.text
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    refused = service.client.post("/forms/default", content=urlencode(GOOD), headers=form)
    assert refused.status_code == 422
    assert "Tick this box to send the form." in refused.text
    assert 'value="chris@example.com"' in refused.text  # what was typed is kept
    agreed = service.client.post(
        "/forms/default", content=urlencode({**GOOD, "consent": "yes"}), headers=form
    )
    assert agreed.status_code in (201, 202), agreed.text


def test_a_signed_webhook_without_consent_is_kept_as_rejected(
    make_settings: Callable[..., Settings], start_service: Callable[[Settings], Service]
) -> None:
    service = _start(make_settings, start_service)
    body = json.dumps({"response_id": "r-1", **GOOD}).encode()
    answer = service.client.post(
        "/webhooks/generic", content=body, headers=sign_generic(GENERIC_SECRET, body, time.time())
    )
    assert answer.status_code < 300, answer.text
    record = service.delivery(answer.json()["delivery_id"])
    assert record["status"] == "rejected"
    assert "consent" in record["errors"]
    body = json.dumps({"response_id": "r-2", **GOOD, "consent": True}).encode()
    agreed = service.client.post(
        "/webhooks/generic", content=body, headers=sign_generic(GENERIC_SECRET, body, time.time())
    )
    assert service.delivery(agreed.json()["delivery_id"])["status"] != "rejected"
