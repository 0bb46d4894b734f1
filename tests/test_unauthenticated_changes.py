"""An unauthenticated channel must not change what a contact already holds (issue 12,
item 2): the public form may add what is missing; a conflicting value is kept for an
agent (the admin page, and a Rocket.Chat custom field) and the answer never tells
whether the person was known."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from adapter.core.changes import guarded
from adapter.core.contact import Contact
from adapter.settings import Settings
from tests.conftest import ADMIN_TOKEN, Service, wait_until
from tests.rocketchat_standin import RocketChatStandIn

VICTIM = {"name": "Chris Doe", "email": "chris@example.com", "phone": "+14155552671"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def form_post(service: Service, **fields: str) -> httpx.Response:
    return service.client.post(
        "/forms/default", data=fields, headers={"Accept": "application/json"}
    )


def contact_calls(standin: RocketChatStandIn) -> list[dict[str, object]]:
    return [
        c.json
        for c in standin.calls
        if c.method == "POST" and c.path.startswith("/api/v1/omnichannel/contact")
    ]


def test_the_rule_is_pure_held_values_win_for_unauthenticated_senders() -> None:
    held = Contact(name="Chris Doe", email="chris@example.com", phone=None)
    sent = Contact(name="Mallory", email="chris@example.com", phone="+14155550000")
    kept, conflicts = guarded(held, sent, may_change=False)
    assert (kept.name, kept.email, kept.phone) == ("Chris Doe", "chris@example.com", "+14155550000")
    assert conflicts == {"name": "Mallory"}
    assert guarded(held, sent, may_change=True) == (sent, {})


def test_the_public_form_cannot_rename_a_known_contact_or_replace_their_phone(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    standin.add_custom_field("unverified_changes", label="Unverified changes")
    service = start_service(make_settings(rocketchat_conflicts_field="unverified_changes"))
    registered = service.post_contact(**VICTIM)
    assert registered.status_code == 201
    contact_id = registered.json()["contact_id"]

    unknown = form_post(service, name="Newcomer", email="new@example.com", phone="+14155550001")
    attack = form_post(
        service, name="Mallory Attacker", email=VICTIM["email"], phone="+14155550000"
    )
    # The same answer for a stranger and for a known person: no ids, nothing to poll.
    assert attack.status_code == unknown.status_code == 202
    assert attack.json().keys() == unknown.json().keys() == {"status", "reference"}
    assert attack.json()["status"] == unknown.json()["status"] == "received"
    assert contact_id not in attack.text

    wait_until(lambda: len(contact_calls(standin)) == 3, what="both form posts delivered")
    visitor = standin.visitors[contact_id]
    assert visitor["name"] == "Chris Doe"
    assert visitor["phone"] == [{"phoneNumber": VICTIM["phone"]}]
    # What the form sent is kept for an agent, in Rocket.Chat and on the admin page.
    noted = visitor["livechatData"]["unverified_changes"]
    assert "Mallory Attacker" in noted and "+14155550000" in noted
    listed = service.client.get("/deliveries?source=form", headers=ADMIN).json()
    mine = [d for d in listed["deliveries"] if d["contact_id"] == contact_id]
    detail = service.delivery(mine[0]["id"])
    assert "Mallory Attacker" in detail["warnings"]["name (sent)"]
    assert detail["fields"]["name"] == "Chris Doe"


def test_the_form_adds_what_a_known_contact_is_missing(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    service = start_service(make_settings(contact_required_fields="name,email"))
    registered = service.post_contact(name="Chris Doe", email=VICTIM["email"])
    contact_id = registered.json()["contact_id"]
    answer = form_post(service, name="Chris", email=VICTIM["email"], phone=VICTIM["phone"])
    assert answer.status_code == 202
    wait_until(lambda: standin.visitors[contact_id].get("phone"), what="the phone added")
    assert standin.visitors[contact_id]["phone"] == [{"phoneNumber": VICTIM["phone"]}]
    assert standin.visitors[contact_id]["name"] == "Chris Doe"


def test_a_trusted_form_may_change_a_contact(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FORM_TRUST_SENDER", "true")
    service = start_service(make_settings())
    contact_id = service.post_contact(**VICTIM).json()["contact_id"]
    answer = form_post(service, name="Chris Q. Doe", email=VICTIM["email"], phone=VICTIM["phone"])
    assert answer.status_code == 201
    assert answer.json()["contact_id"] == contact_id
    assert standin.visitors[contact_id]["name"] == "Chris Q. Doe"
