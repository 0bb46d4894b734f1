"""Visitor tokens are keyed with the deployment's secret (issue 12, item 0).

In Rocket.Chat the visitor token is the guest's only credential on the Livechat API, so
nobody who knows a guest's email may be able to compute it.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapter.core.keys import DeploymentKey
from adapter.rocketchat.sansio import contact_token
from adapter.settings import Settings, SettingsError, load_settings
from tests.conftest import Service
from tests.rocketchat_standin import RocketChatStandIn

CHRIS = {"name": "Chris Doe", "email": "Chris@Example.com", "phone": "+1 415 555 2671"}


def registered_tokens(standin: RocketChatStandIn) -> list[str]:
    return [
        c.json["token"]
        for c in standin.calls
        if c.method == "POST" and c.path == "/api/v1/omnichannel/contact"
    ]


def public_token(email: str) -> str:
    """What anyone could compute from the old, published recipe."""
    return "oca-" + hashlib.sha256(("email:" + email.lower()).encode()).hexdigest()[:32]


def test_two_deployments_give_the_same_guest_unrelated_tokens() -> None:
    one = DeploymentKey("a" * 40)
    other = DeploymentKey("b" * 40)
    token = one.visitor_token(email="chris@example.com", phone=None, person_key=None)
    assert token != other.visitor_token(email="chris@example.com", phone=None, person_key=None)
    # Equal people get equal tokens inside one deployment, whatever the email's case.
    assert token == one.visitor_token(email="Chris@Example.COM", phone="+1", person_key="x")
    assert token != contact_token(email="chris@example.com", phone=None, person_key=None)
    assert "a" * 32 not in repr(one)


def test_a_deployment_secret_shorter_than_32_characters_stops_start_up() -> None:
    with pytest.raises(SettingsError, match="setting DEPLOYMENT_SECRET: expected at least 32"):
        load_settings(deployment_secret="short")


def test_the_registered_token_cannot_be_computed_from_the_guest_email(
    service: Service, standin: RocketChatStandIn
) -> None:
    response = service.post_contact(**CHRIS)
    assert response.status_code == 201, response.text
    [token] = registered_tokens(standin)
    assert token != public_token(CHRIS["email"])
    assert token.startswith("ocak-")
    # Nor does the public answer carry it.
    assert token not in response.text


def test_without_a_setting_every_process_on_one_ledger_shares_one_generated_secret(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
    tmp_path: Path,
) -> None:
    settings: dict[str, Any] = {"deployment_secret": None}
    first = start_service(make_settings(**settings))
    assert first.post_contact(**CHRIS).status_code == 201
    first.stop()
    # A second process (a restart, or a worker dyno) on the same ledger: same token.
    second = start_service(make_settings(**settings))
    again = {**CHRIS, "phone": "+1 415 555 2672"}
    assert second.post_contact(**again).status_code in (200, 201)
    tokens = registered_tokens(standin)
    assert len(tokens) == 2 and tokens[0] == tokens[1], tokens
    # The generated secret is in the ledger, not derivable from the guest.
    with sqlite3.connect(tmp_path / "contacts.db") as db:
        [(secret,)] = db.execute("SELECT value FROM deployment_keys").fetchall()
    key = DeploymentKey(secret)
    assert tokens[0] == key.visitor_token(email=CHRIS["email"], phone=None, person_key=None)

    # Another deployment (another ledger) gives the same guest an unrelated token.
    other = start_service(
        make_settings(**settings, database_url=f"sqlite:///{tmp_path / 'other.db'}")
    )
    assert other.post_contact(**CHRIS).status_code == 201
    assert registered_tokens(standin)[-1] != tokens[0]
