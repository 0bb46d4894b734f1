"""Checks the Rocket.Chat stand-in against /work/shared/contracts/rocketchat.md.

Every test talks real HTTP over loopback to the stand-in running under uvicorn in a
thread.  Row ids (L1, C13, U9, …) refer to the contract's §8 e2e checklist.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.rocketchat_standin import (
    METEOR_ALPHABET,
    RocketChatStandIn,
    StandInServer,
    parse_version,
)

AGENT = {"X-User-Id": "agentUserId1", "X-Auth-Token": "agent-token"}
BOT = {"X-User-Id": "botUserId1", "X-Auth-Token": "bot-token"}
PLAIN = {"X-User-Id": "plainUserId1", "X-Auth-Token": "plain-token"}
ADMIN_USER = {
    "adminUserId1": {
        "token": "admin-token",
        "username": "admin",
        "roles": ["admin", "livechat-agent"],
    }
}
ADMIN = {"X-User-Id": "adminUserId1", "X-Auth-Token": "admin-token"}
ERR403 = "User does not have the permissions required for this action [error-unauthorized]"
LOGGED_OUT = "You must be logged in to do this."
CONTACT = "/api/v1/omnichannel/contact"
SEARCH = "/api/v1/omnichannel/contact.search"
CONTACTS = "/api/v1/omnichannel/contacts"


class Harness:
    """A running stand-in plus an httpx client pointed at it."""

    def __init__(self, standin: RocketChatStandIn, server: StandInServer) -> None:
        self.rc = standin
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=5.0, verify=False)

    def get(self, path: str, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
        return self.http.get(path, headers=ADMIN if headers is None else headers, **kw)

    def post(
        self, path: str, body: Any, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        return self.http.post(path, json=body, headers=ADMIN if headers is None else headers, **kw)

    def create_contact(self, **fields: Any) -> str:
        body = {"name": "Chris", "emails": [], "phones": [], **fields}
        r = self.post(CONTACTS, body)
        assert r.status_code == 200, r.text
        return r.json()["contactId"]


Factory = Callable[..., Harness]


class SwappableApp:
    """ASGI app forwarding to ``target``: lets one uvicorn server host a fresh stand-in per
    test (uvicorn's shutdown alone costs ~0.1 s)."""

    def __init__(self) -> None:
        self.target: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.target(scope, receive, send)


@pytest.fixture(scope="module")
def server_pool() -> Iterator[list[tuple[StandInServer, SwappableApp]]]:
    pool: list[tuple[StandInServer, SwappableApp]] = []
    yield pool
    for server, _ in pool:
        server.stop()


@pytest.fixture
def make(server_pool: list[tuple[StandInServer, SwappableApp]]) -> Iterator[Factory]:
    """Fresh stand-ins on pooled loopback servers (admin user added: e2e rows run as admin)."""
    used: list[Harness] = []

    def factory(**kwargs: Any) -> Harness:
        kwargs.setdefault("users", ADMIN_USER)
        standin = RocketChatStandIn(**kwargs)
        if len(server_pool) <= len(used):
            app = SwappableApp()
            server_pool.append((StandInServer(app).start(), app))
        server, app = server_pool[len(used)]
        app.target = standin.app
        harness = Harness(standin, server)
        used.append(harness)
        return harness

    yield factory
    for harness in used:
        harness.http.close()


@pytest.fixture
def rc(make: Factory) -> Harness:
    """Newest era (8.8, Hono), no rate limit: the e2e suite runs under TEST_MODE."""
    return make(rate_limit=None)


def assert_json(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body)[-1] == "success" or body.get("success") is False
    return body


def err(r: httpx.Response) -> str:
    return r.json()["error"]


# --------------------------------------------------------------------------- basics


def test_version_parsing_and_eras() -> None:
    assert parse_version("8.8") == (8, 8, 0)
    assert parse_version("7.10.2") == (7, 10, 2)
    assert parse_version("6.13.0-rc.1") == (6, 13, 0)
    assert RocketChatStandIn(version="7.3.9").era == "R"
    assert RocketChatStandIn(version="7.4").era == "E"
    assert RocketChatStandIn(version="7.8.5").era == "E"
    assert RocketChatStandIn(version="7.9").era == "H"
    assert RocketChatStandIn(version="8.8").era == "H"


def test_server_context_manager_and_stop() -> None:
    standin = RocketChatStandIn()
    with StandInServer(standin.app) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert httpx.get(server.url + "/api/info").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/api/info", timeout=1.0)


@pytest.mark.parametrize(("version", "expected"), [("8.8.1", "8.8"), ("7.5.2", "7.5")])
def test_api_info_trimmed_unauthenticated_not_rate_limited(
    make: Factory, version: str, expected: str
) -> None:
    h = make(version=version, rate_limit=2)
    for _ in range(5):
        r = h.get("/api/info", headers={})
        body = assert_json(r, 200)
        assert body["version"] == expected
        assert "x-ratelimit-limit" not in r.headers
    assert list(body) == ["version", "minimumClientVersions", "success"]


def test_api_info_full_version_for_admin_except_era_e(make: Factory) -> None:
    assert make(version="8.8.1").get("/api/info").json()["version"] == "8.8.1"
    assert make(version="7.2.3").get("/api/info").json()["version"] == "7.2.3"
    assert make(version="7.5.2").get("/api/info").json()["version"] == "7.5"
    assert make(version="8.8.1").get("/api/info", headers=AGENT).json()["version"] == "8.8"


def test_me(make: Factory) -> None:
    h = make()
    body = assert_json(h.get("/api/v1/me", headers=AGENT), 200)
    assert body["_id"] == "agentUserId1"
    assert body["username"] == "agent.smith"
    assert body["services"] == {"password": {"exists": True}}
    assert list(body)[-1] == "success"


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("7.3", {"status": "error", "message": LOGGED_OUT}),
        (
            "7.5",
            {"success": False, "error": LOGGED_OUT, "status": "error", "message": LOGGED_OUT},
        ),
        (
            "8.8",
            {"success": False, "error": LOGGED_OUT, "status": "error", "message": LOGGED_OUT},
        ),
    ],
)
def test_401_bodies_per_era(make: Factory, version: str, expected: dict[str, Any]) -> None:
    h = make(version=version)
    for headers in ({}, {"X-User-Id": "agentUserId1", "X-Auth-Token": "wrong"}, {"X-User-Id": "x"}):
        r = h.get("/api/v1/me", headers=headers)
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/json"
        assert r.json() == expected
        assert "x-ratelimit-limit" not in r.headers
    r = h.post(CONTACT, {"token": "t", "name": "n"}, headers={})
    assert r.status_code == 401 and r.json() == expected


@pytest.mark.parametrize(("version", "cache"), [("7.3", False), ("7.5", True), ("8.8", True)])
def test_cache_headers_per_era(make: Factory, version: str, cache: bool) -> None:
    r = make(version=version).get("/api/v1/me", headers=AGENT)
    assert ("cache-control" in r.headers) is cache
    if cache:
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["pragma"] == "no-cache"


@pytest.mark.parametrize("version", ["7.3", "7.5", "8.8"])
def test_403_body(make: Factory, version: str) -> None:
    r = make(version=version).post(CONTACT, {"token": "t", "name": "n"}, headers=PLAIN)
    assert assert_json(r, 403) == {"success": False, "error": ERR403}


def test_revoked_credentials(make: Factory) -> None:
    h = make()
    h.rc.set_credentials_valid("agentUserId1", False)
    assert h.get("/api/v1/me", headers=AGENT).status_code == 401
    h.rc.set_credentials_valid("agentUserId1", True)
    assert h.get("/api/v1/me", headers=AGENT).status_code == 200


def test_put_is_405_in_era_r(make: Factory) -> None:
    r = make(version="7.3").http.put(CONTACT, json={"token": "t", "name": "n"}, headers=AGENT)
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/json"
    assert r.headers["allow"] == "GET, POST, OPTIONS"
    assert r.json() == {"status": "error", "message": "API endpoint does not exist"}


def test_put_and_unknown_route_are_404_text_in_era_h(make: Factory) -> None:
    h = make(version="8.8")
    for r in (
        h.http.put(CONTACT, json={"token": "t", "name": "n"}, headers=AGENT),
        h.get("/api/v1/omnichannel/nope", headers=AGENT),
    ):
        assert r.status_code == 404
        assert r.headers["content-type"] == "text/plain; charset=UTF-8"
        assert r.text == "404 Not Found"


# --------------------------------------------------------------------------- rate limiter


def test_rate_limit_headers_and_429(make: Factory) -> None:
    h = make(rate_limit=10, window_ms=60_000)
    for i in range(1, 11):
        before = time.time() * 1000
        r = h.get("/api/v1/me", headers=AGENT)
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit"] == "10"
        assert r.headers["x-ratelimit-remaining"] == str(10 - i)
        reset = int(r.headers["x-ratelimit-reset"])
        assert before < reset <= before + 60_000 + 50  # epoch milliseconds
    r = h.get("/api/v1/me", headers=AGENT)
    body = assert_json(r, 429)
    assert r.headers["x-ratelimit-remaining"] == "0"
    assert "retry-after" not in r.headers
    wait = math.ceil((int(r.headers["x-ratelimit-reset"]) - time.time() * 1000) / 1000)
    assert set(body) == {"success", "error"}
    assert body["error"] in {
        "Error, too many requests. Please slow down. You must wait "
        f"{n} seconds before trying this endpoint again. [error-too-many-requests]"
        for n in (wait, wait + 1, 60)
    }
    # per route+method: another route has its own counter
    assert h.get("/api/info", headers=AGENT).status_code == 200
    assert h.post(CONTACT, {"token": "t", "name": "n"}, headers=AGENT).status_code == 200


def test_rate_limit_window_resets(make: Factory) -> None:
    h = make(rate_limit=2, window_ms=300)
    h.rc.reset_rate_limits()
    codes = [h.get("/api/v1/me", headers=AGENT).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        r = h.get("/api/v1/me", headers=AGENT)
        if r.status_code == 200:
            break
    assert r.status_code == 200
    h.rc.reset_rate_limits()
    assert h.get("/api/v1/me", headers=AGENT).headers["x-ratelimit-remaining"] == "1"


def test_rate_limit_shared_by_users_on_one_ip(make: Factory) -> None:
    h = make(rate_limit=2)
    assert h.get("/api/v1/me", headers=AGENT).status_code == 200
    assert h.get("/api/v1/me", headers=AGENT).status_code == 200
    # plain user, same IP, same route: limited too (key is IP + route + method)
    assert h.get("/api/v1/me", headers=PLAIN).status_code == 429


def test_bypass_users_get_no_rate_limit_headers(make: Factory) -> None:
    h = make(rate_limit=2)
    for i in range(5):
        r = h.post(CONTACT, {"token": f"t{i}", "name": "n"}, headers=BOT)
        assert r.status_code == 200
        assert not any(k.startswith("x-ratelimit") for k in r.headers)


def test_rate_limit_switched_at_run_time(make: Factory) -> None:
    """``{"rate_limit": 0}`` turns the limiter off (no headers, as for a user granted the bot
    role); a number turns it on again with fresh windows."""
    h = make(rate_limit=2, window_ms=60_000)
    codes = [h.get("/api/v1/me", headers=AGENT).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    state = h.http.post("/_standin/control", json={"rate_limit": 0}).json()
    assert state["rate_limit"] == 0
    for _ in range(5):
        r = h.get("/api/v1/me", headers=AGENT)
        assert r.status_code == 200
        assert not any(k.startswith("x-ratelimit") for k in r.headers)
    state = h.http.post("/_standin/control", json={"rate_limit": 1, "window_ms": 5000}).json()
    assert (state["rate_limit"], state["window_ms"]) == (1, 5000)
    r = h.get("/api/v1/me", headers=AGENT)
    assert (r.status_code, r.headers["x-ratelimit-limit"]) == (200, "1")
    assert h.get("/api/v1/me", headers=AGENT).status_code == 429


@pytest.mark.parametrize(("version", "status"), [("7.3", 429), ("7.5", 429), ("8.8", 403)])
def test_check_order_rate_limit_vs_permission(make: Factory, version: str, status: int) -> None:
    """Era R/E: rate limit before permission; Era H: permission first (no headers on 403)."""
    h = make(version=version, rate_limit=1)
    assert h.post(CONTACT, {"token": "t", "name": "n"}, headers=PLAIN).status_code == 403
    r = h.post(CONTACT, {"token": "t", "name": "n"}, headers=PLAIN)
    assert r.status_code == status
    assert ("x-ratelimit-limit" in r.headers) is (status == 429)


@pytest.mark.parametrize(("version", "status"), [("7.5", 400), ("8.8", 403)])
def test_check_order_validation_vs_permission(make: Factory, version: str, status: int) -> None:
    h = make(version=version)
    assert h.post(CONTACTS, {"emails": []}, headers=PLAIN).status_code == status


# --------------------------------------------------------------------------- legacy POST


def test_legacy_success_example(rc: Harness) -> None:
    body = {
        "token": "434lxd7iss8yh8c4m80wh",
        "name": "Chris",
        "email": "Chris@Gmail.com ",
        "phone": "+91123456788",
        "contactManager": {"username": "agent.smith"},
    }
    r = rc.post(CONTACT, body)
    answer = assert_json(r, 200)
    assert list(answer) == ["contact", "success"]
    vid = answer["contact"]
    assert len(vid) == 17 and set(vid) <= set(METEOR_ALPHABET)
    visitor = rc.rc.visitors[vid]
    assert visitor["visitorEmails"] == [{"address": "chris@gmail.com"}]
    assert visitor["phone"] == [{"phoneNumber": "+91123456788"}]
    assert visitor["contactManager"] == {"username": "agent.smith"}
    assert visitor["username"] == "guest-1"
    assert rc.rc.contact_posts_per_token() == {"434lxd7iss8yh8c4m80wh": 1}


def test_l14_to_l18_legacy_upsert(rc: Harness) -> None:
    token = "tok-l14"
    vid = rc.post(CONTACT, {"name": "First", "token": token}).json()["contact"]  # L14
    assert rc.rc.visitors[vid]["token"] == token
    r = rc.post(CONTACT, {"name": "Second", "token": token})  # L15
    assert r.json() == {"contact": vid, "success": True}
    assert rc.rc.visitors[vid]["name"] == "Second"
    body = {"name": "Second", "email": "x@y.z", "phone": "+1555", "token": token}  # L16
    assert rc.post(CONTACT, body).json()["contact"] == vid
    fetched = rc.get(CONTACT, params={"contactId": vid}).json()["contact"]
    assert fetched["visitorEmails"] == [{"address": "x@y.z"}]
    assert fetched["phone"] == [{"phoneNumber": "+1555"}]
    body = {"contactManager": {"username": "admin"}, "token": token, "name": "S"}  # L17
    assert rc.post(CONTACT, body).json()["contact"] == vid
    assert rc.rc.visitors[vid]["contactManager"] == {"username": "admin"}
    rc.rc.add_custom_field("favword")  # L18
    body = {"token": token, "name": "S", "customFields": {"favword": "test"}}
    assert rc.post(CONTACT, body).json()["contact"] == vid
    assert rc.rc.visitors[vid]["livechatData"] == {"favword": "test"}
    assert rc.rc.contact_posts_per_token()[token] == 5


def test_legacy_omitted_email_and_manager_are_unset(rc: Harness) -> None:
    body = {"token": "t", "name": "n", "email": "a@b.c", "phone": "+1"}
    vid = rc.post(CONTACT, {**body, "contactManager": {"username": "agent.smith"}}).json()[
        "contact"
    ]
    rc.post(CONTACT, {"token": "t", "name": "n"})
    visitor = rc.rc.visitors[vid]
    assert "visitorEmails" not in visitor and "contactManager" not in visitor
    assert visitor["phone"] == [{"phoneNumber": "+1"}]  # absent phone: untouched
    rc.post(CONTACT, {"token": "t", "name": "n", "phone": ""})
    assert "phone" not in rc.rc.visitors[vid]


def test_legacy_5x_does_not_unset(make: Factory) -> None:
    h = make(version="5.4", rate_limit=None)
    vid = h.post(CONTACT, {"token": "t", "name": "n", "email": "a@b.c"}).json()["contact"]
    h.post(CONTACT, {"token": "t", "name": "n"})
    assert h.rc.visitors[vid]["visitorEmails"] == [{"address": "a@b.c"}]


def test_legacy_token_email_upsert_reuses_visitor(rc: Harness) -> None:
    vid = rc.post(CONTACT, {"token": "old", "name": "n", "email": "Same@X.io"}).json()["contact"]
    username = rc.rc.visitors[vid]["username"]
    r = rc.post(CONTACT, {"token": "new", "name": "n2", "email": "same@x.io", "username": "u"})
    assert r.json()["contact"] == vid
    assert rc.rc.visitors[vid]["token"] == "new"
    assert rc.rc.visitors[vid]["username"] == username
    assert len(rc.rc.visitors) == 1
    # same phone under a new token is never merged
    rc.post(CONTACT, {"token": "p1", "name": "n", "phone": "+1"})
    rc.post(CONTACT, {"token": "p2", "name": "n", "phone": "+1"})
    assert len(rc.rc.visitors) == 3


def test_legacy_username_used_only_for_new_visitor(rc: Harness) -> None:
    vid = rc.post(CONTACT, {"token": "t", "name": "n", "username": "bob"}).json()["contact"]
    rc.post(CONTACT, {"token": "t", "name": "n", "username": "alice", "_id": "ignored"})
    assert rc.rc.visitors[vid]["username"] == "bob"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "Match error: Missing key 'token'"),
        ({"name": "n"}, "Match error: Missing key 'token'"),
        ({"token": "t"}, "Match error: Missing key 'name'"),
        ({"token": 123, "name": "n"}, "Match error: Expected string, got number in field token"),
        ({"name": None, "token": "t"}, "Match error: Expected string, got null in field name"),
        ({"email": 5}, "Match error: Failed Match.OneOf, Match.Maybe or Match.Optional "
         "validation in field email"),
        ({"token": "t", "name": "n", "customFields": []}, "Match error: Failed Match.OneOf, "
         "Match.Maybe or Match.Optional validation in field customFields"),
        ({"token": "t", "name": "n", "contactManager": "bob"}, "Match error: Failed Match.OneOf, "
         "Match.Maybe or Match.Optional validation in field contactManager"),
        ({"token": "t", "name": "n", "contactManager": {"username": "a", "x": 1}},
         "Match error: Failed Match.OneOf, Match.Maybe or Match.Optional validation "
         "in field contactManager"),
        ({"_Id": "x", "token": "t", "name": "n"}, "Match error: Unknown key in field _Id"),
        ({"token": "t", "extra": 1}, "Match error: Unknown key in field extra"),
        ({"token": "t", "name": "n", "email": None},
         "Cannot read properties of null (reading 'trim')"),
    ],
)  # fmt: skip
def test_legacy_check_errors(rc: Harness, body: dict[str, Any], error: str) -> None:
    answer = assert_json(rc.post(CONTACT, body), 400)
    assert answer == {"success": False, "error": error}
    assert not rc.rc.visitors


def test_legacy_null_optionals_accepted(rc: Harness) -> None:
    body = {"token": "t", "name": "n", "phone": None, "customFields": None, "contactManager": None}
    assert rc.post(CONTACT, body).status_code == 200


def test_legacy_empty_token(rc: Harness) -> None:
    assert rc.post(CONTACT, {"token": "", "name": "n"}).json() == {
        "success": False,
        "error": "Invalid visitor token [error-invalid-contact-data]",
        "errorType": "error-invalid-contact-data",
    }


def test_legacy_contact_manager_errors(rc: Harness) -> None:
    r = rc.post(CONTACT, {"token": "t", "name": "n", "contactManager": {"username": "ghost"}})
    assert assert_json(r, 400) == {
        "success": False,
        "error": "No user found with username ghost [error-contact-manager-not-found]",
        "errorType": "error-contact-manager-not-found",
    }
    r = rc.post(CONTACT, {"token": "t", "name": "n", "contactManager": {"username": "plain.user"}})
    assert assert_json(r, 400) == {
        "success": False,
        "error": 'The contact manager must have the role "livechat-agent" '
        "[error-invalid-contact-manager]",
        "errorType": "error-invalid-contact-manager",
    }
    assert not rc.rc.visitors


def test_legacy_custom_fields(rc: Harness) -> None:
    rc.rc.add_custom_field("zip", label="Zip code", regexp="^[0-9]+$")
    rc.rc.add_custom_field("city")
    body = {"token": "t", "name": "n", "customFields": {"zip": " 123 ", "city": "X", "nope": 1}}
    vid = rc.post(CONTACT, body).json()["contact"]
    assert rc.rc.visitors[vid]["livechatData"] == {"zip": "123", "city": "X"}
    rc.post(CONTACT, {"token": "t", "name": "n", "customFields": {"city": "Y"}})
    assert rc.rc.visitors[vid]["livechatData"] == {"city": "Y"}  # replaced wholesale
    r = rc.post(CONTACT, {"token": "t", "name": "n", "customFields": {"zip": "abc"}})
    assert r.json() == {"success": False, "error": "Invalid value for Zip code field"}
    rc.rc.custom_fields["city"]["required"] = True
    r = rc.post(CONTACT, {"token": "t", "name": "n"})
    assert r.json() == {"success": False, "error": "Invalid value for city field"}


def test_legacy_body_key_order(rc: Harness) -> None:
    r = rc.post(CONTACT, {"bogus": 1, "token": 5})
    assert err(r) == "Match error: Unknown key in field bogus"
    r = rc.post(CONTACT, {"email": 5, "bogus": 1})
    assert err(r).endswith("in field email")


# --------------------------------------------------------------------------- legacy lookups


def test_legacy_get_contact(rc: Harness) -> None:
    vid = rc.post(CONTACT, {"token": "t", "name": "n"}).json()["contact"]
    body = assert_json(rc.get(CONTACT, params={"contactId": vid}), 200)
    assert body["contact"]["_id"] == vid and "token" not in body["contact"]  # 8.x projection
    assert rc.get(CONTACT, params={"contactId": "nope"}).json() == {
        "contact": None,
        "success": True,
    }
    assert err(rc.get(CONTACT)) == "Match error: Missing key 'contactId'"
    r = rc.get(CONTACT, params={"contactId": vid, "x": "1"})
    assert err(r) == "Match error: Unknown key in field x"


def test_legacy_get_contact_keeps_token_before_8(make: Factory) -> None:
    h = make(version="7.5", rate_limit=None)
    vid = h.post(CONTACT, {"token": "t", "name": "n"}).json()["contact"]
    assert h.get(CONTACT, params={"contactId": vid}).json()["contact"]["token"] == "t"


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({}, "[error-invalid-params]"),  # L1
        ({"email": ""}, "[error-invalid-params]"),  # L2
        ({"custom": '{a":1}'}, "[error-invalid-params-custom]"),  # L3
        ({"custom": "{}"}, "[error-invalid-params]"),  # L4
    ],
)
def test_l1_to_l4_search_errors(rc: Harness, params: dict[str, str], error: str) -> None:
    body = assert_json(rc.get(SEARCH, params=params), 400)
    assert body["error"] == error
    assert body["errorType"] == error.strip("[]")


@pytest.fixture
def visitor(rc: Harness) -> dict[str, Any]:
    rc.rc.add_custom_field("address", label="Address", searchable=True)
    body = {
        "token": "visitor-token",
        "name": "Visitor",
        "email": "visitor@rocket.chat",
        "phone": "+5511999",
        "customFields": {"address": "Rocket.Chat street"},
    }
    vid = rc.post(CONTACT, body).json()["contact"]
    return rc.rc.visitors[vid]


@pytest.mark.parametrize(
    "params",
    [
        {"email": "visitor@rocket.chat"},  # L5
        {"phone": "+5511999"},  # L6
        {"custom": json.dumps({"address": "Rocket.Chat"})},  # L7
        {"email": "visitor@rocket.chat", "phone": "+5511999"},
    ],
)
def test_l5_to_l7_search_found(
    rc: Harness, visitor: dict[str, Any], params: dict[str, str]
) -> None:
    body = assert_json(rc.get(SEARCH, params=params), 200)
    contact = body["contact"]
    for key in ("_id", "name", "username", "phone", "visitorEmails"):
        assert key in contact
    assert contact["_id"] == visitor["_id"]
    assert contact["phone"][0]["phoneNumber"] == "+5511999"
    assert contact["livechatData"]["address"] == "Rocket.Chat street"


@pytest.mark.parametrize(
    "custom",
    [
        {"nope": "nel"},  # L8
        {"nope": "nel", "another": "field"},  # L9
        {"$regex": "nel"},  # L10
        {"$regex: { very-bad }": "nel"},  # L11
        {"nope": "^((ab)*)+$"},  # L12
        {"address": "^Rocket"},  # escaped, not a regex
    ],
)
def test_l8_to_l12_search_null(
    rc: Harness, visitor: dict[str, Any], custom: dict[str, str]
) -> None:
    body = assert_json(rc.get(SEARCH, params={"custom": json.dumps(custom)}), 200)
    assert body == {"contact": None, "success": True}


def test_search_exact_email_and_non_searchable_cf(rc: Harness, visitor: dict[str, Any]) -> None:
    assert rc.get(SEARCH, params={"email": "VISITOR@rocket.chat"}).json()["contact"] is None
    rc.rc.custom_fields["address"]["searchable"] = False
    r = rc.get(SEARCH, params={"custom": json.dumps({"address": "Rocket"})})
    assert r.json()["contact"] is None


def test_l13_no_view_l_room(rc: Harness) -> None:
    rc.rc.set_permission("view-l-room", [])
    r = rc.get(CONTACT, params={"text": "nel"})
    assert assert_json(r, 403) == {"success": False, "error": ERR403}
    assert rc.get(SEARCH, params={"email": "a"}).status_code == 403


# --------------------------------------------------------------------------- contacts API


def test_c1_c2_create(rc: Harness) -> None:
    body = {"name": "Chris", "emails": ["a@b.c"], "phones": ["+1"]}
    answer = assert_json(rc.post(CONTACTS, body), 200)
    assert list(answer) == ["contactId", "success"]
    stored = rc.rc.contacts[answer["contactId"]]
    assert stored["emails"] == [{"address": "a@b.c"}]
    assert stored["unknown"] is False and stored["channels"] == []
    rc.rc.set_permission("create-livechat-contact", [])
    assert assert_json(rc.post(CONTACTS, body), 403)["error"] == ERR403


def test_create_accepts_duplicate_values_across_contacts(rc: Harness) -> None:
    rc.create_contact(emails=["Dup@x.io"], phones=["+1"])
    rc.create_contact(emails=["Dup@x.io"], phones=["+1"])
    assert len(rc.rc.contacts) == 2
    assert all(c["emails"] == [{"address": "Dup@x.io"}] for c in rc.rc.contacts.values())


@pytest.mark.parametrize("manager", ["invalid", "plainUserId1"])
def test_c3_c4_contact_manager_not_found(rc: Harness, manager: str) -> None:
    r = rc.post(CONTACTS, {"name": "n", "emails": [], "phones": [], "contactManager": manager})
    assert assert_json(r, 400) == {"success": False, "error": "error-contact-manager-not-found"}


def test_c5_contact_manager_agent(rc: Harness) -> None:
    cid = rc.create_contact(contactManager="agentUserId1")
    assert rc.rc.contacts[cid]["contactManager"] == "agentUserId1"


@pytest.fixture
def cfs(rc: Harness) -> Harness:
    rc.rc.add_custom_field("cf1", label="Custom Field 1", required=True, regexp="^[0-9]+$")
    rc.rc.add_custom_field("cf2", label="Custom Field 2")
    rc.rc.add_custom_field("cfOptional", label="Custom Field Optional")
    return rc


def test_c6_to_c8_create_custom_fields(cfs: Harness) -> None:
    cid = cfs.create_contact(customFields={"cf1": "123"})  # C6
    assert cfs.rc.contacts[cid]["customFields"] == {"cf1": "123"}
    for custom in ({}, {"cf1": "invalid"}, None):  # C7, C8, absent
        body = {"name": "n", "emails": [], "phones": []}
        if custom is not None:
            body["customFields"] = custom
        r = cfs.post(CONTACTS, body)
        assert assert_json(r, 400) == {
            "success": False,
            "error": "Invalid value for Custom Field 1 field",
        }


def test_c9_to_c12_update_custom_fields(cfs: Harness) -> None:
    cid = cfs.create_contact(customFields={"cf1": "123", "cf2": "456"})
    del cfs.rc.custom_fields["cf2"]
    update = CONTACTS + ".update"

    def upd(custom: dict[str, str]) -> httpx.Response:
        return cfs.post(update, {"contactId": cid, "customFields": custom})

    contact = assert_json(upd({"cf1": "456", "cf2": "789"}), 200)["contact"]  # C9
    assert contact["_id"] == cid
    assert contact["customFields"] == {"cf2": "456", "cf1": "456"}
    contact = upd({"cf1": "789", "cfOptional": "567"}).json()["contact"]  # C10
    assert contact["customFields"] == {"cf2": "456", "cf1": "789", "cfOptional": "567"}
    contact = upd({"cf1": "789"}).json()["contact"]  # C11
    assert contact["customFields"] == {"cf2": "456", "cf1": "789"}
    r = upd({"cf1": "123", "cf3": "invalid"})  # C12
    assert assert_json(r, 400) == {"success": False, "error": "Custom field cf3 is not allowed"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"emails": [], "phones": []}, "must have required property 'name'"),  # C13
        ({"name": "n", "phones": []}, "must have required property 'emails'"),  # C14
        ({"name": "n", "emails": []}, "must have required property 'phones'"),  # C15
        ({"name": "n", "emails": "invalid", "phones": []}, "must be array"),  # C16
        ({"name": "n", "emails": [{"invalid": True}], "phones": []}, "must be string"),  # C17
        ({"name": "n", "emails": [], "phones": [{"invalid": True}]}, "must be string"),  # C18
        (
            {"name": "n", "emails": [], "phones": [], "additional": "invalid"},
            "must NOT have additional properties",
        ),  # C19
        (
            {"name": "n", "emails": ["a", "b", "a"], "phones": []},
            "must NOT have duplicate items (items ## 2 and 0 are identical)",
        ),
        ({"name": "n", "emails": [], "phones": [], "customFields": []}, "must be object"),
    ],
)
def test_c13_to_c19_create_validation(rc: Harness, body: dict[str, Any], message: str) -> None:
    answer = assert_json(rc.post(CONTACTS, body), 400)
    assert answer == {
        "success": False,
        "error": f"{message} [invalid-params]",
        "errorType": "invalid-params",
    }


def test_create_coerces_types(rc: Harness) -> None:
    cid = rc.create_contact(name=123, emails=[5], phones=[])
    assert rc.rc.contacts[cid]["name"] == "123"
    assert rc.rc.contacts[cid]["emails"] == [{"address": "5"}]


def test_u1_to_u3_update(rc: Harness) -> None:
    cid = rc.create_contact(emails=["old@x.io"], phones=["+1", "+2"])
    update = CONTACTS + ".update"
    body = {"contactId": cid, "name": "New", "emails": ["n@x.io"], "phones": ["+3"]}
    contact = assert_json(rc.post(update, body), 200)["contact"]  # U1
    assert contact["_id"] == cid and contact["name"] == "New"
    assert contact["emails"] == [{"address": "n@x.io"}]
    assert contact["phones"] == [{"phoneNumber": "+3"}]
    contact = rc.post(update, {"contactId": cid, "name": "N2"}).json()["contact"]  # U2
    assert contact["unknown"] is False and contact["emails"] == [{"address": "n@x.io"}]
    contact = rc.post(update, {"contactId": cid, "contactManager": "agentUserId1"}).json()[
        "contact"
    ]  # U3
    assert contact["contactManager"] == "agentUserId1"
    contact = rc.post(update, {"contactId": cid, "emails": None, "phones": None}).json()["contact"]
    assert contact["emails"] == [{"address": "n@x.io"}] and contact["phones"]  # nulls dropped
    contact = rc.post(update, {"contactId": cid, "contactManager": ""}).json()["contact"]
    assert "contactManager" not in contact


def test_u4_to_u9_update_errors(cfs: Harness) -> None:
    cid = cfs.create_contact(customFields={"cf1": "1"})
    update = CONTACTS + ".update"
    body = {"contactId": "invalid", "name": "n", "emails": [], "phones": []}
    assert err(cfs.post(update, body)) == "error-contact-not-found"  # U4
    r = cfs.post(update, {"contactId": cid, "contactManager": "invalid"})  # U5
    assert err(r) == "error-contact-manager-not-found"
    r = cfs.post(update, {"contactId": cid, "customFields": {"cf1": "123"}})  # U7
    assert assert_json(r, 200)["contact"]["_id"] == cid
    r = cfs.post(update, {"contactId": cid, "customFields": {"cf1": "invalid"}})  # U8
    assert err(r) == "Invalid value for Custom Field 1 field"
    r = cfs.post(update, {"contactId": cid, "customFields": {"cf1": "123", "cf9": "x"}})  # U9
    assert err(r) == "Custom field cf9 is not allowed"
    cfs.rc.set_permission("update-livechat-contact", [])  # U6
    assert assert_json(cfs.post(update, {"contactId": cid}), 403)["error"] == ERR403


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (None, "must have required property 'contactId'"),  # U10
        ({"emails": "invalid"}, "must be array"),  # U11
        ({"emails": [{"invalid": True}]}, "must be string"),  # U12
        ({"phones": "invalid"}, "must be array"),  # U13
        ({"phones": [{"invalid": True}]}, "must be string"),  # U14
        ({"unknown": True}, "must NOT have additional properties"),  # U15
    ],
)
def test_u10_to_u15_update_validation(
    rc: Harness, extra: dict[str, Any] | None, message: str
) -> None:
    body = {"name": "n"} if extra is None else {"contactId": "x", **extra}
    answer = assert_json(rc.post(CONTACTS + ".update", body), 400)
    assert answer["error"] == f"{message} [invalid-params]"
    assert answer["errorType"] == "invalid-params"


def test_g1_to_g4_get(rc: Harness) -> None:
    cid = rc.create_contact(emails=["a@b.c"], phones=["+1"], contactManager="agentUserId1")
    contact = assert_json(rc.get(CONTACTS + ".get", params={"contactId": cid}), 200)["contact"]
    assert contact["_id"] == cid and contact["name"] == "Chris" and "createdAt" in contact
    assert contact["emails"] == [{"address": "a@b.c"}]
    assert contact["phones"] == [{"phoneNumber": "+1"}]
    assert contact["contactManager"] == "agentUserId1"
    r = rc.get(CONTACTS + ".get", params={"contactId": "invalid"})  # G2
    assert assert_json(r, 404) == {"success": False, "error": "Resource not found"}
    body = assert_json(rc.get(CONTACTS + ".get"), 400)  # G4
    assert body["errorType"] == "invalid-params"
    assert body["error"].split("\n ") == [
        "must have required property 'contactId' [invalid-params]"
    ]
    rc.rc.set_permission("view-livechat-contact", [])  # G3
    assert err(rc.get(CONTACTS + ".get", params={"contactId": cid})) == ERR403


def test_s1_to_s8_search(rc: Harness) -> None:
    cid = rc.create_contact(name="Zed Smith", emails=["zed@x.io"], phones=["+15550001"])
    rc.create_contact(name="Amy (a.k.a.) Brown", emails=["amy@x.io"], phones=["+15550002"])
    rc.rc.contacts["unknown1"] = {"_id": "unknown1", "name": "Guest", "unknown": True}
    search = CONTACTS + ".search"
    body = assert_json(rc.get(search), 200)  # S1, S2
    assert [c["name"] for c in body["contacts"]] == ["Amy (a.k.a.) Brown", "Zed Smith"]
    assert (body["count"], body["offset"], body["total"]) == (50, 0, 2)
    assert body["contacts"][0]["unknown"] is False
    assert rc.get(search, params={"unknown": "true"}).json()["contacts"][0]["unknown"] is True
    for text, field in (("ZED@X.io", "emails"), ("+15550001", "phones"), ("smith", "name")):
        body = rc.get(search, params={"searchText": text}).json()  # S4-S6
        assert body["total"] == 1 and body["contacts"][0]["_id"] == cid, field
    assert rc.get(search, params={"searchText": "(a.k.a.)"}).json()["total"] == 1  # escaped
    body = rc.get(search, params={"searchText": "invalid"}).json()  # S7
    assert body["contacts"] == [] and body["total"] == 0
    body = rc.get(search, params={"count": "1", "offset": "1"}).json()
    assert [c["_id"] for c in body["contacts"]] == [cid]
    assert (body["count"], body["offset"], body["total"]) == (1, 1, 2)
    assert err(rc.get(search, params={"bogus": "1"})) == (
        "must NOT have additional properties [invalid-params]"
    )
    rc.rc.set_permission("view-livechat-contact", [])  # S8
    assert err(rc.get(search)) == ERR403


def test_e1_to_e9_check_existence(rc: Harness) -> None:
    cid = rc.create_contact(emails=["a@b.c"], phones=["+1"])
    url = CONTACTS + ".checkExistence"
    for params, exists in (
        ({"contactId": cid}, True),
        ({"contactId": "nope"}, False),
        ({"email": "a@b.c"}, True),
        ({"email": "z@b.c"}, False),
        ({"phone": "+1"}, True),
        ({"phone": "+2"}, False),
    ):
        assert assert_json(rc.get(url, params=params), 200) == {"exists": exists, "success": True}
    body = assert_json(rc.get(url), 400)  # E8
    assert body["error"].split("\n ") == [
        "must have required property 'contactId'",
        "must have required property 'email'",
        "must have required property 'phone'",
        "must match exactly one schema in oneOf [invalid-params]",
    ]
    r = rc.get(url, params={"contactId": cid, "email": "a", "phone": "b"})  # E9
    assert err(r).split("\n ") == [
        *["must NOT have additional properties"] * 3,
        "must match exactly one schema in oneOf [invalid-params]",
    ]
    rc.rc.set_permission("view-livechat-contact", [])  # E7
    assert err(rc.get(url, params={"contactId": cid})) == ERR403


@pytest.mark.parametrize("version", ["6.13", "7.0.5"])
def test_contacts_api_gated_before_7_1(make: Factory, version: str) -> None:
    h = make(version=version, rate_limit=None)
    r = h.post(CONTACTS, {"name": "n", "emails": [], "phones": []})
    assert assert_json(r, 400) == {
        "success": False,
        "error": "This endpoint is only allowed in test mode [error-not-allowed]",
        "errorType": "error-not-allowed",
    }
    # param checks come first
    assert err(h.post(CONTACTS, {})) == "must have required property 'name' [invalid-params]"
    assert err(h.get(CONTACTS + ".get", params={"contactId": "x"})).endswith("[error-not-allowed]")
    assert not h.rc.contacts


def test_contacts_api_usable_from_7_1(make: Factory) -> None:
    h = make(version="7.1", rate_limit=None)
    cid = h.create_contact()
    assert h.get(CONTACTS + ".get", params={"contactId": cid}).status_code == 200


def test_contacts_api_absent_before_6_13(make: Factory) -> None:
    h = make(version="6.12", rate_limit=None)
    r = h.post(CONTACTS, {"name": "n", "emails": [], "phones": []})
    assert r.status_code == 404
    assert h.post(CONTACT, {"token": "t", "name": "n"}).status_code == 200


def test_c1_contact_id_is_a_string_and_create_marks_known(rc: Harness) -> None:
    answer = assert_json(rc.post(CONTACTS, {"name": "n", "emails": [], "phones": []}), 200)
    assert isinstance(answer["contactId"], str) and answer["contactId"]
    assert rc.rc.contacts[answer["contactId"]]["preRegistration"] is True


@pytest.mark.parametrize(
    ("version", "accepted"), [("7.1", False), ("7.9.2", False), ("7.10", True), ("8.8", True)]
)
def test_s3_unknown_search_parameter_by_version(
    make: Factory, version: str, accepted: bool
) -> None:
    """§3.5: ``unknown`` absent in rest-typings 7.0.0, present by 7.10.0 (ajv rejects
    extra query keys, so a server without it answers 400 invalid-params)."""
    h = make(version=version, rate_limit=None)
    cid = h.rc.seed_unknown_contact("Guest 3", email="guest@x.io", phone="+15550003")
    search = CONTACTS + ".search"
    r = h.get(search, params={"searchText": "guest@x.io", "unknown": "true"})
    if accepted:
        body = assert_json(r, 200)
        assert [c["_id"] for c in body["contacts"]] == [cid]
        assert body["contacts"][0]["unknown"] is True  # S3
    else:
        assert assert_json(r, 400) == {
            "success": False,
            "error": "must NOT have additional properties [invalid-params]",
            "errorType": "invalid-params",
        }
    # S2: the default search leaves unknown contacts out, on every version.
    assert assert_json(h.get(search, params={"searchText": "guest@x.io"}), 200)["total"] == 0


def test_seeded_unknown_contact_looks_like_a_guest_who_chatted(rc: Harness) -> None:
    cid = rc.rc.seed_unknown_contact("Guest 3", email="guest@x.io", phone="+15550003")
    contact = assert_json(rc.get(CONTACTS + ".get", params={"contactId": cid}), 200)["contact"]
    assert contact["unknown"] is True
    assert contact["emails"] == [{"address": "guest@x.io"}]
    assert contact["phones"] == [{"phoneNumber": "+15550003"}]
    (channel,) = contact["channels"]
    visitor = rc.rc.visitors[channel["visitor"]["visitorId"]]
    assert visitor["visitorEmails"] == [{"address": "guest@x.io"}]
    # §3.3: contacts.update sets unknown:false; the default search then shows it.
    r = rc.post(CONTACTS + ".update", {"contactId": cid, "name": "Guest Three"})
    assert assert_json(r, 200)["contact"]["unknown"] is False
    body = rc.get(CONTACTS + ".search", params={"searchText": "guest@x.io"}).json()
    assert [c["_id"] for c in body["contacts"]] == [cid]


@pytest.mark.parametrize(("version", "min_length"), [("7.1", False), ("7.10", True)])
def test_g4_empty_contact_id_rejected_from_7_10(
    make: Factory, version: str, min_length: bool
) -> None:
    h = make(version=version, rate_limit=None)
    r = h.get(CONTACTS + ".get", params={"contactId": ""})
    if min_length:
        assert err(r) == "must NOT have fewer than 1 characters [invalid-params]"
    else:
        assert assert_json(r, 404) == {"success": False, "error": "Resource not found"}


def test_check_existence_only_from_7_10(make: Factory) -> None:
    h = make(version="7.5", rate_limit=None)
    assert h.get(CONTACTS + ".checkExistence", params={"email": "a@b.c"}).status_code == 404
    h = make(version="7.10", rate_limit=None)
    r = h.get(CONTACTS + ".checkExistence", params={"email": "a@b.c"})
    assert assert_json(r, 200) == {"exists": False, "success": True}


def test_version_switched_at_run_time(make: Factory) -> None:
    """An upgrade (or rollback) of the running server: routes, era and /api/info follow."""
    h = make(version="6.12", rate_limit=None)
    body = {"name": "n", "emails": [], "phones": []}
    assert h.post(CONTACTS, body).status_code == 404
    h.rc.set_version("8.8")
    assert h.get("/api/info", headers={}).json()["version"] == "8.8"
    cid = assert_json(h.post(CONTACTS, body), 200)["contactId"]
    assert h.http.put(CONTACT).text == "404 Not Found"  # era H now
    r = h.http.post("/_standin/control", json={"version": "7.0"})
    assert r.json()["version"] == "7.0" and r.json()["era"] == "R"
    assert err(h.post(CONTACTS, body)).endswith("[error-not-allowed]")
    assert cid in h.rc.contacts  # the data survives, like the database


# --------------------------------------------------------------------------- faults & control


def test_down_and_fail_next(rc: Harness) -> None:
    rc.rc.down = True
    r = rc.post(CONTACT, {"token": "t", "name": "n"})
    assert r.status_code == 503
    assert r.json() == {"success": False, "error": "Service Unavailable"}
    assert rc.get("/_standin/state").json()["down"] is True
    rc.rc.down = False
    rc.rc.fail_next(2, 502)
    assert [rc.get("/api/info").status_code for _ in range(3)] == [502, 502, 200]
    assert not rc.rc.visitors
    assert rc.rc.calls[0].status == 503 and rc.rc.calls[0].json == {"token": "t", "name": "n"}


def test_error_rate_only_hits_contact_posts(make: Factory) -> None:
    h = make(rate_limit=None, error_rate=1.0)
    assert h.post(CONTACT, {"token": "t", "name": "n"}).status_code == 503
    assert h.get("/api/info").status_code == 200
    assert not h.rc.visitors
    h.rc.error_rate = 0.5
    codes = {h.post(CONTACT, {"token": f"t{i}", "name": "n"}).status_code for i in range(40)}
    assert codes == {200, 503}


def test_latency_and_http_control(rc: Harness) -> None:
    state = rc.http.post("/_standin/control", json={"latency": 0.2}).json()
    assert state["latency"] == 0.2
    start = time.monotonic()
    rc.get("/api/info")
    assert time.monotonic() - start >= 0.2
    rc.http.post("/_standin/control", json={"latency": 0, "down": True})
    assert rc.get("/api/info").status_code == 503
    rc.http.post("/_standin/control", json={"down": False})
    rc.post(CONTACT, {"token": "t", "name": "n"})
    state = rc.http.get("/_standin/state").json()
    assert state["visitors"] == 1 and state["contact_posts"] == 1
    assert all(not c.path.startswith("/_standin") for c in rc.rc.calls)


def test_state_counts_calls_in_flight(rc: Harness) -> None:
    rc.rc.latency = 0.3
    assert rc.get("/_standin/state").json()["max_in_flight"] == 0
    barrier = threading.Barrier(3)

    def call() -> None:
        with httpx.Client(base_url=rc.server.url, timeout=5) as client:
            barrier.wait()
            client.get("/api/info")

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = rc.get("/_standin/state").json()
    assert (state["in_flight"], state["max_in_flight"]) == (0, 3)
    state = rc.http.post("/_standin/control", json={"reset_max_in_flight": True}).json()
    assert state["max_in_flight"] == 0


def test_state_counts_posts_per_token(rc: Harness) -> None:
    state = rc.get("/_standin/state").json()
    assert state["first_call_at"] is None and state["first_contact_post_at"] is None
    before = time.time()
    rc.get("/api/info")
    for token in ("a", "b", "a"):
        rc.post(CONTACT, {"token": token, "name": "n"})
    state = rc.get("/_standin/state").json()
    assert (state["contact_posts"], state["contact_tokens"], state["max_posts_per_token"]) == (
        3,
        2,
        2,
    )
    assert before <= state["first_call_at"] <= state["first_contact_post_at"] <= time.time()


def test_recorded_calls(rc: Harness) -> None:
    rc.post(CONTACT, {"token": "t", "name": "n"}, params={"a": "1"})
    call = rc.rc.calls[-1]
    assert (call.method, call.path, call.query, call.status) == ("POST", CONTACT, {"a": "1"}, 200)
    assert call.headers["x-user-id"] == "adminUserId1"
    assert call.json == {"token": "t", "name": "n"}
    assert call.response["success"] is True


def test_concurrent_posts_are_consistent(make: Factory) -> None:
    h = make(rate_limit=None)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        with httpx.Client(base_url=h.server.url) as client:
            try:
                for i in range(20):
                    body = {"token": f"tok-{i % 5}", "name": f"w{n}"}
                    assert client.post(CONTACT, json=body, headers=BOT).status_code == 200
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(h.rc.visitors) == 5
    assert sum(h.rc.contact_posts_per_token().values()) == 80
