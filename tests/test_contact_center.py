"""The Contact Center strategy (issue #7): pure helpers, the client against the stand-in,
the service end to end under Rocket.Chat 6.x / 7.0 / 7.1 / 8.x, and a crash between
"created" and "recorded" in a real service process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapter.core.contact import Contact
from adapter.core.errors import ConfigurationError, ContactRejected
from adapter.rocketchat.client import RocketChatClient
from adapter.rocketchat.contacts_sansio import (
    create_body,
    merge_values,
    pick_match,
    update_body,
)
from adapter.rocketchat.sansio import Registration
from adapter.settings import Settings
from tests.conftest import ADMIN_TOKEN, AGENT, API_TOKEN, BOT, Service, wait_until
from tests.rocketchat_standin import RocketChatStandIn, StandInServer

ROOT = Path(__file__).resolve().parent.parent
CHRIS = {"name": "Chris Doe", "email": "Chris@Example.com", "phone": "+1 415 555 2671"}
OMNI = "/api/v1/omnichannel/"
CONTACTS = "/api/v1/omnichannel/contacts"
VERSIONS = [
    ("6.13", "visitor"),
    ("7.0", "visitor"),
    ("7.1", "contact-center"),
    ("8.8", "contact-center"),
]


@pytest.fixture
def standin(request: pytest.FixtureRequest) -> RocketChatStandIn:
    """Overrides conftest's: ``indirect`` parametrization picks the server version."""
    return RocketChatStandIn(version=getattr(request, "param", "8.8"))


def omni_calls(standin: RocketChatStandIn, since: int = 0) -> list[tuple[str, str]]:
    return [(c.method, c.path) for c in standin.calls[since:] if c.path.startswith(OMNI)]


def store_of(standin: RocketChatStandIn, strategy: str) -> dict[str, dict[str, Any]]:
    return standin.contacts if strategy == "contact-center" else standin.visitors


def person_at(
    standin: RocketChatStandIn, strategy: str, contact_id: str
) -> tuple[str, list[str], list[str]]:
    """Name, e-mails and phones as an agent sees them in Rocket.Chat."""
    doc = store_of(standin, strategy)[contact_id]
    if strategy == "contact-center":
        emails, phones = doc.get("emails") or [], doc.get("phones") or []
    else:
        emails, phones = doc.get("visitorEmails") or [], doc.get("phone") or []
    return doc["name"], [e["address"] for e in emails], [p["phoneNumber"] for p in phones]


def writes(standin: RocketChatStandIn, since: int = 0) -> set[str]:
    """The registration routes called (POSTs under omnichannel/)."""
    return {path for method, path in omni_calls(standin, since) if method == "POST"}


LEGACY = OMNI + "contact"


def reg(name: str = "Chris Doe", **kw: Any) -> Registration:
    known = kw.pop("known_contact_id", None)
    manager = kw.pop("contact_manager", None)
    return Registration(
        token="oca-test",
        contact=Contact(name=name, **kw),
        contact_manager=manager,
        known_contact_id=known,
    )


# --------------------------------------------------------------------------- pure helpers


def test_pick_match_wants_an_exact_email_or_phone_and_prefers_the_oldest() -> None:
    results = [
        {"_id": "c1", "emails": [{"address": "chris@example.com.br"}], "createdAt": "2025-01-01"},
        {"_id": "c2", "emails": [{"address": "xchris@example.com"}], "createdAt": "2025-01-01"},
        {"_id": "c4", "emails": [{"address": "CHRIS@example.com"}], "createdAt": "2025-03-01"},
        {"_id": "c3", "emails": [{"address": "chris@Example.com"}], "createdAt": "2025-02-01"},
        {"_id": "c5", "phones": [{"phoneNumber": "+1 (415) 555-2671"}], "createdAt": "2024"},
        "garbage",
    ]
    assert pick_match(results, email="Chris@example.com")["_id"] == "c3"  # type: ignore[index]
    assert pick_match(results, email="nobody@example.com") is None
    assert pick_match(results, phone="+14155552671")["_id"] == "c5"  # type: ignore[index]
    assert pick_match(results, phone="+141555526710") is None
    assert (
        pick_match(
            [{"_id": "d", "emails": [{"address": "a@b.c"}], "enabled": False}], email="a@b.c"
        )
        is None
    )


def test_merge_values_adds_new_items_once_and_keeps_stored_ones() -> None:
    lower = str.lower
    assert merge_values(["A@x.com"], ["a@x.com"], key=lower) == ["A@x.com"]
    assert merge_values(["a@x.com"], ["b@x.com", None, "B@X.com"], key=lower) == [
        "a@x.com",
        "b@x.com",
    ]
    assert merge_values(["a@x.com", "a@x.com"], [], key=lower) == ["a@x.com"]  # never duplicates


def test_create_body_sends_lists_always_and_only_configured_custom_fields() -> None:
    registration = reg(email="c@x.com", custom_fields={"company": "ACME", "secret": "no"})
    assert create_body(registration, custom_field_ids=("company",), manager_id="u1") == {
        "name": "Chris Doe",
        "emails": ["c@x.com"],
        "phones": [],
        "customFields": {"company": "ACME"},
        "contactManager": "u1",
    }
    assert create_body(reg(phone="+14155552671")) == {
        "name": "Chris Doe",
        "emails": [],
        "phones": ["+14155552671"],
    }


def test_update_body_sends_only_what_changes_merged_with_what_is_stored() -> None:
    stored = {
        "_id": "c1",
        "emails": [{"address": "a@x.com"}],
        "phones": [{"phoneNumber": "+14155552671"}],
        "customFields": {"company": "ACME", "size": "10"},
    }
    same = reg(email="A@x.com", phone="+14155552671", custom_fields={"company": "ACME"})
    assert update_body(stored, same, custom_field_ids=("company",)) == {
        "contactId": "c1",
        "name": "Chris Doe",
    }
    new = reg(email="b@x.com", phone="+16505551234", custom_fields={"company": "Initech"})
    assert update_body(stored, new, custom_field_ids=("company",), manager_id="u1") == {
        "contactId": "c1",
        "name": "Chris Doe",
        "contactManager": "u1",
        "emails": ["a@x.com", "b@x.com"],
        "phones": ["+14155552671", "+16505551234"],
        "customFields": {"company": "Initech", "size": "10"},
    }
    assert update_body(stored, new, lists=False) == {"contactId": "c1", "name": "Chris Doe"}


# --------------------------------------------------------------------------- the stand-in's users.info


def test_standin_users_info_follows_the_real_shape(rocketchat: StandInServer) -> None:
    headers = {"X-User-Id": AGENT["user_id"], "X-Auth-Token": AGENT["token"]}
    with httpx.Client(base_url=rocketchat.url, headers=headers) as http:
        by_name = http.get("/api/v1/users.info", params={"username": "agent.smith"})
        assert by_name.status_code == 200
        assert by_name.json()["user"]["_id"] == "agentUserId1"
        assert by_name.json()["success"] is True
        assert by_name.headers["x-ratelimit-limit"] == "10"  # rate limited like every v1 route
        by_id = http.get("/api/v1/users.info", params={"userId": "botUserId1"})
        assert by_id.json()["user"]["username"] == "contact.bot"
        missing = http.get("/api/v1/users.info", params={"username": "nobody"})
        assert (missing.status_code, missing.json()) == (
            400,
            {"success": False, "error": "User not found."},
        )
        assert http.get("/api/v1/users.info").json()["error"] == "Invalid search query."
        assert httpx.get(rocketchat.url + "/api/v1/users.info?username=x").status_code == 401


# --------------------------------------------------------------------------- the client


def run_with_client(url: str, fn: Callable[[RocketChatClient], Any], **kwargs: Any) -> Any:
    async def main() -> Any:
        kwargs.setdefault("contact_api", "contact-center")
        client = RocketChatClient(url, BOT["user_id"], BOT["token"], **kwargs)
        try:
            return await fn(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("standin", "expected"),
    [
        # 7.1-7.9: searches by e-mail, by phone.
        ("7.1", [("created", 2), ("created", 3), ("updated", 2), ("updated", 1), ("updated", 2)]),
        # 7.10+: the same searches again among unknown contacts (guests who chatted).
        ("8.8", [("created", 3), ("created", 5), ("updated", 2), ("updated", 1), ("updated", 2)]),
    ],
    indirect=["standin"],
)
def test_calls_per_registered_contact(
    rocketchat: StandInServer, standin: RocketChatStandIn, expected: list[tuple[str, int]]
) -> None:
    """Search + create for a new person; search + update for a known one; 1-2 updates by id."""
    recorded: list[str] = []

    async def remember(contact_id: str) -> None:
        recorded.append(contact_id)

    async def scenario(client: RocketChatClient) -> list[tuple[str, int, int]]:
        strategy = await client.strategy()
        out = []

        async def register(registration: Registration) -> str:
            before = len(standin.calls)
            result = await strategy.register(client, registration, record_contact_id=remember)
            spent = len(omni_calls(standin, before))
            out.append((str(result.extra["action"]), int(result.extra["calls"]), spent))
            return result.contact_id

        await register(reg(email="ana@example.com"))  # new, e-mail only: search + create
        bo = await register(
            reg(email="bo@example.com", phone="+14155550001")
        )  # 2 searches + create
        await register(reg(email="ana@example.com", phone="+14155550002"))  # search + update
        # By the recorded id: nothing new = 1 update; a new phone = update + update (merged).
        await register(reg(email="bo@example.com", phone="+14155550001", known_contact_id=bo))
        await register(reg(email="bo@example.com", phone="+14155550003", known_contact_id=bo))
        return out

    assert run_with_client(rocketchat.url, scenario) == [(a, n, n) for a, n in expected]
    assert len(standin.contacts) == 2
    assert len(recorded) == 3  # both creations at once, and the contact found by search
    bo = next(c for c in standin.contacts.values() if c["emails"][0]["address"] == "bo@example.com")
    assert bo["phones"] == [{"phoneNumber": "+14155550001"}, {"phoneNumber": "+14155550003"}]


def test_contact_manager_username_is_resolved_once_to_a_user_id(
    rocketchat: StandInServer, standin: RocketChatStandIn
) -> None:
    async def scenario(client: RocketChatClient) -> tuple[str, str]:
        strategy = await client.strategy()
        a = await strategy.register(
            client, reg(email="a@example.com", contact_manager="agent.smith")
        )
        await strategy.register(client, reg(email="b@example.com", contact_manager="agent.smith"))
        with pytest.raises(ContactRejected) as nobody:
            await strategy.register(client, reg(email="c@example.com", contact_manager="nobody"))
        with pytest.raises(ContactRejected) as plain:
            await strategy.register(
                client, reg(email="d@example.com", contact_manager="plain.user")
            )
        assert "'nobody' is not a Rocket.Chat user" in nobody.value.message
        assert plain.value.message == "error-contact-manager-not-found"  # not an agent
        return a.contact_id, plain.value.message

    contact_id, _ = run_with_client(rocketchat.url, scenario)
    assert standin.contacts[contact_id]["contactManager"] == "agentUserId1"
    lookups = [c.query for c in standin.calls if c.path == "/api/v1/users.info"]
    assert lookups == [
        {"username": "agent.smith"},
        {"username": "nobody"},
        {"username": "plain.user"},
    ]


def test_a_legacy_visitor_id_as_known_id_falls_back_to_search(
    rocketchat: StandInServer, standin: RocketChatStandIn
) -> None:
    """A person registered as a visitor before the server's upgrade: update fails, search, create."""

    async def scenario(client: RocketChatClient) -> str:
        strategy = await client.strategy()
        result = await strategy.register(
            client, reg(email="v@example.com", known_contact_id="7ipCD6NDtkkRDCiNM")
        )
        return result.contact_id

    contact_id = run_with_client(rocketchat.url, scenario)
    assert list(standin.contacts) == [contact_id]
    assert omni_calls(standin) == [
        ("POST", CONTACTS + ".update"),
        ("GET", CONTACTS + ".search"),  # among known contacts
        ("GET", CONTACTS + ".search"),  # among unknown ones (8.8)
        ("POST", CONTACTS),
    ]


def test_the_contact_manager_id_survives_strategy_refreshes(
    rocketchat: StandInServer, standin: RocketChatStandIn
) -> None:
    """The username → user id cache lives on the client: a new strategy object reuses it."""

    async def scenario(client: RocketChatClient) -> str:
        first = await client.strategy()
        await client.register(reg(email="a@example.com", contact_manager="agent.smith"))
        second = await client.strategy(refresh=True)
        third = await client.strategy(refresh=True)
        assert len({id(first), id(second), id(third)}) == 3  # really chosen again
        result = await client.register(reg(email="b@example.com", contact_manager="agent.smith"))
        return result.contact_id

    contact_id = run_with_client(rocketchat.url, scenario)
    assert standin.contacts[contact_id]["contactManager"] == "agentUserId1"
    assert len(standin.contacts) == 2
    assert [c.query for c in standin.calls if c.path == "/api/v1/users.info"] == [
        {"username": "agent.smith"}
    ]


def test_the_hourly_version_recheck_follows_upgrades_and_rollbacks(
    rocketchat: StandInServer, standin: RocketChatStandIn
) -> None:
    """The legacy route answers on every version, so no 404 tells of an upgrade: the
    version is read again hourly (and on the gated API's error-not-allowed)."""
    standin.set_version("7.0")
    now = [1000.0]

    async def scenario(client: RocketChatClient) -> list[str]:
        client.monotonic = lambda: now[0]
        used: list[str] = []

        async def register(email: str) -> None:
            try:
                used.append((await client.register(reg(email=email))).strategy)
            except ConfigurationError as exc:
                assert "ROCKETCHAT_CONTACT_API=auto or visitor" in exc.message
                used.append("paused")

        await register("a@example.com")  # 7.0
        standin.set_version("7.1")
        now[0] += 3599
        await register("b@example.com")  # upgraded, not re-checked yet
        now[0] += 1
        await register("c@example.com")  # re-checked: 7.1
        standin.set_version("7.0")
        now[0] += 3600
        await register("d@example.com")  # rolled back, re-checked before any call
        standin.set_version("8.8")
        now[0] += 3600
        await register("e@example.com")
        standin.set_version("7.0")  # rolled back again, no re-check due
        await register("f@example.com")  # the gated API says so: paused, version read
        await register("g@example.com")
        return used

    assert run_with_client(rocketchat.url, scenario, contact_api="auto") == [
        "visitor",
        "visitor",
        "contact-center",
        "visitor",
        "contact-center",
        "paused",
        "visitor",
    ]
    legacy = [c.json["email"] for c in standin.calls if c.path == LEGACY and c.status == 200]
    assert legacy == ["a@example.com", "b@example.com", "d@example.com", "g@example.com"]
    contacts = sorted(c["emails"][0]["address"] for c in standin.contacts.values())
    assert contacts == ["c@example.com", "e@example.com"]


@pytest.mark.parametrize("standin", ["8.8", "7.10"], indirect=True)
def test_a_guest_who_chatted_is_found_among_unknown_contacts_and_updated(
    standin: RocketChatStandIn,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    """Rocket.Chat made an ``unknown`` contact when the guest chatted: we update that one."""
    seeded = standin.seed_unknown_contact("Guest 7", email="chris@example.com")
    service = start_service(make_settings(rocketchat_contact_api="auto"))
    response = service.post_contact(**CHRIS)
    assert response.status_code == 201, response.text
    assert response.json()["contact_id"] == seeded
    assert list(standin.contacts) == [seeded]  # no second contact
    contact = standin.contacts[seeded]
    assert contact["unknown"] is False  # agents now find it in the Contact Center
    assert contact["name"] == "Chris Doe"
    assert contact["emails"] == [{"address": "chris@example.com"}]
    assert contact["phones"] == [{"phoneNumber": "+14155552671"}]
    searches = [c for c in standin.calls if c.path == CONTACTS + ".search"]
    # Known contacts by e-mail and by phone first, then the unknown ones by e-mail.
    assert [c.query.get("unknown") for c in searches] == [None, None, "true"]
    assert all(c.status == 200 for c in standin.calls if c.path.startswith(OMNI))


@pytest.mark.parametrize("standin", ["7.1", "7.9"], indirect=True)
def test_a_server_without_the_unknown_parameter_is_never_sent_it(
    standin: RocketChatStandIn,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    standin.seed_unknown_contact("Guest 7", email="chris@example.com")
    service = start_service(make_settings(rocketchat_contact_api="auto"))
    response = service.post_contact(**CHRIS)
    assert response.status_code == 201, response.text
    searches = [c for c in standin.calls if c.path == CONTACTS + ".search"]
    assert len(searches) == 2
    assert all("unknown" not in c.query and c.status == 200 for c in searches)
    # Such a server cannot show us the guest's contact: ours is created next to it.
    assert len(standin.contacts) == 2


def test_a_rollback_below_7_10_mid_run_drops_the_unknown_search(
    rocketchat: StandInServer, standin: RocketChatStandIn
) -> None:
    """The version read before says 8.8; the server now rejects ``unknown``: no failure."""

    async def scenario(client: RocketChatClient) -> list[str]:
        strategy = await client.strategy()
        standin.set_version("7.5")
        first = await strategy.register(client, reg(email="new@example.com"))
        second = await strategy.register(client, reg(email="other@example.com"))
        return [str(first.extra["action"]), str(second.extra["action"])]

    assert run_with_client(rocketchat.url, scenario) == ["created", "created"]
    rejected = [c for c in standin.calls if c.status != 200]
    assert [(c.path, c.query.get("unknown"), c.status) for c in rejected] == [
        (CONTACTS + ".search", "true", 400)
    ]
    after = standin.calls[standin.calls.index(rejected[0]) + 1 :]
    assert not [c for c in after if "unknown" in c.query]
    assert len(standin.contacts) == 2


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize(("standin", "strategy"), VERSIONS, indirect=["standin"])
def test_auto_picks_the_strategy_by_version_and_registers_a_person_once(
    standin: RocketChatStandIn,
    strategy: str,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    service = start_service(make_settings(rocketchat_contact_api="auto"))
    ready = service.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["strategy"] == strategy
    assert ready.json()["rocketchat_version"] == standin.version

    first = service.post_contact(**CHRIS)
    assert first.status_code == 201, first.text
    contact_id = first.json()["contact_id"]
    store = store_of(standin, strategy)
    assert list(store) == [contact_id]
    name, emails, phones = person_at(standin, strategy, contact_id)
    assert (name, [e.lower() for e in emails], phones) == (
        "Chris Doe",
        ["chris@example.com"],
        ["+14155552671"],
    )
    assert writes(standin) == ({CONTACTS} if strategy == "contact-center" else {LEGACY})
    context = "details" if strategy == "contact-center" else "info"
    assert first.json()["contact_url"] == (
        f"{service.settings.rocketchat_url}/omnichannel-directory/contacts/{context}/{contact_id}"
    )
    calls_first = len(omni_calls(standin))

    before = len(standin.calls)
    second = service.post_contact(
        name="Chris D. Doe", email="chris@example.com", phone=CHRIS["phone"]
    )
    assert second.status_code == 201, second.text
    assert second.json()["contact_id"] == contact_id
    assert list(store) == [contact_id]
    assert person_at(standin, strategy, contact_id)[0] == "Chris D. Doe"
    assert service.delivery(second.json()["delivery_id"])["strategy"] == strategy
    if strategy == "contact-center":
        assert person_at(standin, strategy, contact_id)[1:] == (
            ["Chris@example.com"],
            ["+14155552671"],
        )
        assert writes(standin, before) == {CONTACTS + ".update"}
        # New: search by e-mail, by phone (8.8: again among unknown contacts), create.
        # Again: one update by the recorded id.
        searches = 4 if standin.version_tuple >= (7, 10, 0) else 2
        assert (calls_first, len(omni_calls(standin, before))) == (searches + 1, 1)
    else:
        assert writes(standin, before) == {LEGACY}
        # What Rocket.Chat holds is read first (what agents added is kept): new to us, by
        # email; again, by the id it gave us. Then the upsert.
        assert omni_calls(standin, before) == [("GET", LEGACY), ("POST", LEGACY)]
        assert calls_first == 2


@pytest.mark.parametrize(("standin", "strategy"), VERSIONS, indirect=["standin"])
def test_rejection_fails_at_once_with_the_servers_message(
    standin: RocketChatStandIn,
    strategy: str,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    standin.add_custom_field("company", label="Company", required=True, searchable=False)
    service = start_service(make_settings(rocketchat_contact_api="auto"))
    response = service.post_contact(**CHRIS)
    assert response.status_code == 422
    assert "Invalid value for Company field" in response.json()["error"]
    record = service.delivery(response.json()["delivery_id"])
    assert (record["status"], record["attempts"]) == ("failed", 1)
    assert "Invalid value for Company field" in record["last_error"]
    assert store_of(standin, strategy) == {}
    rejected = [c for c in standin.calls if c.method == "POST" and c.path.startswith(OMNI)]
    assert [(c.path, c.status) for c in rejected] == [
        (CONTACTS if strategy == "contact-center" else LEGACY, 400)
    ]


@pytest.mark.parametrize(("standin", "strategy"), VERSIONS, indirect=["standin"])
def test_down_at_start_then_up_detects_the_version_and_delivers_once(
    standin: RocketChatStandIn,
    strategy: str,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    standin.down = True
    service = start_service(make_settings(rocketchat_contact_api="auto"))
    response = service.post_contact(**CHRIS)
    assert response.status_code == 202
    delivery_id = response.json()["delivery_id"]
    wait_until(lambda: service.delivery(delivery_id)["attempts"] >= 1)
    standin.down = False
    record = wait_until(
        lambda: (r := service.delivery(delivery_id))["status"] == "delivered" and r, timeout=15
    )
    assert record["strategy"] == strategy  # not stuck on the legacy route for 7.1+
    assert list(store_of(standin, strategy)) == [record["contact_id"]]


@pytest.mark.parametrize("standin", ["7.1", "8.8"], indirect=True)
def test_email_then_phone_merge_into_the_contacts_lists(
    standin: RocketChatStandIn,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    service = start_service(make_settings(rocketchat_contact_api="auto"))
    # Someone else whose address merely *contains* Chris's: the regex search finds it too.
    service.post_contact(name="Other", email="xchris@example.com", phone="+16505550000")

    first = service.post_contact(name="Chris", email="chris@example.com", phone="+14155552671")
    # A new e-mail, the same phone: found by phone, the e-mail is added.
    second = service.post_contact(name="Chris", email="chris@work.example", phone="+14155552671")
    # The first e-mail (its recorded contact id is reused) with a new phone: the phone is added.
    third = service.post_contact(name="Chris", email="chris@example.com", phone="+16505551234")
    ids = {r.json()["contact_id"] for r in (first, second, third)}
    assert len(ids) == 1, [r.text for r in (first, second, third)]
    contact = standin.contacts[ids.pop()]
    assert contact["emails"] == [
        {"address": "chris@example.com"},
        {"address": "chris@work.example"},
    ]
    assert contact["phones"] == [{"phoneNumber": "+14155552671"}, {"phoneNumber": "+16505551234"}]
    assert len(standin.contacts) == 2
    assert all(c.status == 200 for c in standin.calls if c.path.startswith(OMNI))


def test_custom_fields_only_configured_ones_and_unknown_is_a_readable_failure(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    standin.add_custom_field("company", label="Company")
    service = start_service(
        make_settings(rocketchat_contact_api="auto", rocketchat_custom_fields="company,region")
    )
    ok = service.post_contact(**CHRIS, custom_fields={"company": "ACME", "internal": "x"})
    assert ok.status_code == 201, ok.text
    assert standin.contacts[ok.json()["contact_id"]]["customFields"] == {"company": "ACME"}

    # "region" is configured here but does not exist in Rocket.Chat: permanent, readable.
    bad = service.post_contact(
        name="Dee", email="dee@example.com", phone="+16505550101", custom_fields={"region": "EU"}
    )
    assert bad.status_code == 422, bad.text
    error = bad.json()["error"]
    assert "Custom field region is not allowed" in error
    assert "ROCKETCHAT_CUSTOM_FIELDS" in error
    record = service.delivery(bad.json()["delivery_id"])
    assert (record["status"], record["attempts"]) == ("failed", 1)
    assert len(standin.contacts) == 1


@pytest.mark.parametrize("standin", ["6.13", "7.0"], indirect=True)
def test_explicit_contact_center_below_7_1_is_a_readable_configuration_error(
    standin: RocketChatStandIn,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    service = start_service(make_settings(rocketchat_contact_api="contact-center"))
    response = service.post_contact(**CHRIS)
    assert response.status_code == 202
    ready = wait_until(lambda: (r := service.client.get("/readyz")).status_code == 503 and r)
    reason = ready.json()["reason"]
    assert f"Rocket.Chat {standin.version}" in reason
    assert "ROCKETCHAT_CONTACT_API=auto or visitor" in reason
    if standin.version == "7.0":
        assert "only allowed in test mode [error-not-allowed]" in reason
    record = service.delivery(response.json()["delivery_id"])
    assert record["status"] in ("pending", "delivering")  # kept (and retried), never failed
    assert record["attempts"] == 0  # pausing burns no attempts
    assert "ROCKETCHAT_CONTACT_API" in record["last_error"]
    assert standin.contacts == {} and standin.visitors == {}


@pytest.mark.parametrize("standin", ["7.0"], indirect=True)
def test_an_upgrade_to_7_1_seen_by_the_readiness_check_switches_to_the_contact_center(
    standin: RocketChatStandIn,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    service = start_service(make_settings(rocketchat_contact_api="auto"))
    first = service.post_contact(**CHRIS)
    assert first.status_code == 201, first.text
    assert service.delivery(first.json()["delivery_id"])["strategy"] == "visitor"

    standin.set_version("7.1")  # upgraded while we run: the legacy route still answers
    ana = {"name": "Ana Lima", "email": "ana@example.com", "phone": "+5511912345678"}
    second = service.post_contact(**ana)
    assert service.delivery(second.json()["delivery_id"])["strategy"] == "visitor"

    ready = service.client.get("/readyz").json()
    assert (ready["rocketchat_version"], ready["strategy"]) == ("7.1", "contact-center")
    third = service.post_contact(name="Bo Reyes", email="bo@example.com", phone="+14155550009")
    assert third.status_code == 201, third.text
    assert service.delivery(third.json()["delivery_id"])["strategy"] == "contact-center"
    assert list(standin.contacts) == [third.json()["contact_id"]]
    assert len(standin.visitors) == 2


class SwitchApp:
    """One loopback address whose Rocket.Chat can be replaced (an upgrade or a rollback)."""

    def __init__(self, target: Any) -> None:
        self.target = target

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.target(scope, receive, send)


def test_a_404_on_a_route_detects_the_version_again(
    make_settings: Callable[..., Settings], start_service: Callable[[Settings], Service]
) -> None:
    new, old = RocketChatStandIn(version="8.8"), RocketChatStandIn(version="6.12")
    switch = SwitchApp(new.app)
    with StandInServer(switch) as server:
        service = start_service(
            make_settings(rocketchat_url=server.url, rocketchat_contact_api="auto")
        )
        first = service.post_contact(**CHRIS)
        assert first.status_code == 201, first.text
        assert list(new.contacts) == [first.json()["contact_id"]]

        switch.target = old.app  # rolled back: no omnichannel/contacts* routes any more
        second = service.post_contact(
            name="Ana Lima", email="ana@example.com", phone="+5511912345678"
        )
        assert second.status_code == 201, second.text
        assert list(old.visitors) == [second.json()["contact_id"]]
        assert service.delivery(second.json()["delivery_id"])["strategy"] == "visitor"
        paths = [c.path for c in old.calls]
        legacy = "/api/v1/omnichannel/contact"
        assert paths[:4] == [CONTACTS + ".search", "/api/info", legacy + ".search", legacy]
        service.stop()


def test_pacing_under_the_rate_limit_causes_no_429(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    standin = RocketChatStandIn(rate_limit=4, window_ms=1000)
    with StandInServer(standin.app) as server:
        service = start_service(
            make_settings(
                rocketchat_url=server.url,
                rocketchat_user_id=AGENT["user_id"],
                rocketchat_auth_token=AGENT["token"],
                rocketchat_contact_api="auto",
                database_url=f"sqlite:///{tmp_path / 'paced.db'}",
                contact_required_fields="name,email",
            )
        )
        ids = [
            service.post_contact(name=f"Guest {i}", email=f"guest{i}@example.com").json()[
                "delivery_id"
            ]
            for i in range(10)
        ]
        wait_until(
            lambda: all(service.delivery(i)["status"] == "delivered" for i in ids), timeout=30
        )
        statuses = [c.status for c in standin.calls if c.path.startswith(CONTACTS)]
        assert statuses.count(429) == 0
        assert len(standin.contacts) == 10
        service.stop()


# --------------------------------------------------------------------------- crash safety


class SlowCreateStandIn(RocketChatStandIn):
    """Creates the contact at once, then answers ``create_delay`` seconds later."""

    create_delay = 0.0

    def _contacts_create(self, ctx: Any) -> dict[str, Any]:
        answer = super()._contacts_create(ctx)
        self.latency = self.create_delay  # read after the handler: this very answer is late
        return answer


class ServiceProcess:
    """``python -m uvicorn adapter.app:app`` as its own process, settings from the environment."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> ServiceProcess:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.runs += 1
        log = (self.workdir / f"service-{self.runs}.log").open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "adapter.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
            ],
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(self.log())
            try:
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=30, interval=0.05)
        return self

    def log(self) -> str:
        return (self.workdir / f"service-{self.runs}.log").read_text(errors="replace")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(
            self.url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10
        )


@pytest.fixture
def service_process(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], ServiceProcess]]:
    started: list[ServiceProcess] = []

    def make(settings: dict[str, str]) -> ServiceProcess:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "CONTACT_ADAPTER_HOME": str(tmp_path),
            "PYTHONPATH": str(ROOT),
            "LOG_LEVEL": "WARNING",
            **settings,
        }
        process = ServiceProcess(env, tmp_path)
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


def test_crash_between_created_and_recorded_makes_no_second_contact(
    tmp_path: Path, service_process: Callable[[dict[str, str]], ServiceProcess]
) -> None:
    standin = SlowCreateStandIn()
    standin.create_delay = 2.5
    database = tmp_path / "crash.db"
    with StandInServer(standin.app) as server:
        service = service_process(
            {
                "ROCKETCHAT_URL": server.url,
                "ROCKETCHAT_USER_ID": BOT["user_id"],
                "ROCKETCHAT_AUTH_TOKEN": BOT["token"],
                "ROCKETCHAT_CONTACT_API": "auto",
                "DATABASE_URL": f"sqlite:///{database}",
                "API_TOKEN": API_TOKEN,
                "ADMIN_TOKEN": ADMIN_TOKEN,
                "FAST_PATH_BUDGET": "0",
                "DELIVERY_LEASE": "1",
                "RETRY_FIRST_DELAY": "0.2",
                "WORKER_POLL_INTERVAL": "0.1",
            }
        ).start()
        response = httpx.post(
            service.url + "/contacts",
            json=CHRIS,
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            timeout=10,
        )
        assert response.status_code == 202, response.text
        delivery_id = response.json()["delivery_id"]

        # The stand-in has created the contact and holds its answer: kill the service now.
        wait_until(lambda: len(standin.contacts) == 1, timeout=20, interval=0.005)
        service.kill()
        (created_id,) = standin.contacts
        with sqlite3.connect(database) as db:
            row = db.execute(
                "SELECT status, contact_id FROM deliveries WHERE id = ?", (delivery_id,)
            ).fetchone()
        assert row == ("delivering", None), "the kill must come before the id is recorded"

        standin.create_delay = standin.latency = 0.0
        # The stand-in logs a call once answered: let the orphaned answer go out first.
        wait_until(lambda: any((c.method, c.path) == ("POST", CONTACTS) for c in standin.calls))
        restarted_at = len(standin.calls)
        service.start()  # same database: the lease runs out and the delivery is retried
        record = wait_until(
            lambda: (
                (r := service.get(f"/deliveries/{delivery_id}").json())["status"] == "delivered"
                and r
            ),
            timeout=20,
        )
        assert len(standin.contacts) == 1
        assert record["contact_id"] == created_id
        assert record["attempts"] == 1
        after = omni_calls(standin, restarted_at)
        assert after == [("GET", CONTACTS + ".search"), ("POST", CONTACTS + ".update")]
        assert len([c for c in standin.calls if (c.method, c.path) == ("POST", CONTACTS)]) == 1
        service.stop()
