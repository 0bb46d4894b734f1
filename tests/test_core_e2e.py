"""End to end through the real service and the Rocket.Chat stand-in, over loopback HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from adapter.settings import Settings
from tests.conftest import AGENT, API_TOKEN, BOT, Service, wait_until
from tests.rocketchat_standin import RocketChatStandIn, StandInServer

CHRIS = {"name": "Chris Doe", "email": "Chris@Example.com", "phone": "+1 415 555 2671"}


def contact_posts(standin: RocketChatStandIn) -> list[Any]:
    return [
        c for c in standin.calls if c.method == "POST" and c.path == "/api/v1/omnichannel/contact"
    ]


def test_valid_contact_is_registered_with_exactly_the_documented_request(
    service: Service, standin: RocketChatStandIn
) -> None:
    response = service.post_contact(**CHRIS)
    assert response.status_code == 201, response.text
    body = response.json()
    posts = contact_posts(standin)
    assert len(posts) == 1
    sent = posts[0]
    assert sent.json == {
        "token": sent.json["token"],
        "name": "Chris Doe",
        "email": "Chris@example.com",
        "phone": "+14155552671",
    }
    assert sent.json["token"].startswith("ocak-")
    assert sent.headers["x-user-id"] == BOT["user_id"]
    assert sent.headers["x-auth-token"] == BOT["token"]
    assert sent.headers["content-type"] == "application/json"
    visitor = standin.visitors[body["contact_id"]]
    assert visitor["name"] == "Chris Doe"
    assert visitor["visitorEmails"] == [{"address": "chris@example.com"}]
    assert visitor["phone"] == [{"phoneNumber": "+14155552671"}]
    status = service.client.get(f"/deliveries/{body['delivery_id']}").json()
    assert status["status"] == "delivered"
    assert status["contact_id"] == body["contact_id"]
    assert "fields" not in status  # no personal data without the admin token


def test_invalid_fields_are_all_reported_and_nothing_is_sent(
    service: Service, standin: RocketChatStandIn
) -> None:
    response = service.post_contact(name="  ", email="chris@", phone="+1 555")
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert errors["phone"] == "'+1 555' is not a valid phone number"
    assert errors["email"].startswith("'chris@' is not a valid email address")
    assert errors["name"] == "is required"
    assert contact_posts(standin) == []


def test_same_person_twice_is_one_contact_and_keeps_everything_known(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    service = start_service(make_settings(contact_required_fields="name,email"))
    first = service.post_contact(**CHRIS).json()
    second = service.post_contact(name="Chris D. Doe", email="chris@example.com", phone="").json()
    assert first["contact_id"] == second["contact_id"]
    assert len(standin.visitors) == 1
    visitor = standin.visitors[first["contact_id"]]
    assert visitor["name"] == "Chris D. Doe"
    # The second call omitted the phone, but every call carries everything known.
    assert visitor["phone"] == [{"phoneNumber": "+14155552671"}]
    assert visitor["visitorEmails"] == [{"address": "chris@example.com"}]
    assert set(standin.contact_posts_per_token().values()) == {2}


def test_what_agents_added_in_rocketchat_survives_the_next_registration(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    """Rocket.Chat erases the email and contact manager a call leaves out and replaces the
    custom fields: what an agent set there since our last call must be sent back."""
    standin.add_custom_field("company")
    standin.add_custom_field("tier")
    service = start_service(make_settings(contact_required_fields="name,phone"))
    first = service.post_contact(name="Ana Lima", phone="+55 11 91234-5678").json()
    visitor = standin.visitors[first["contact_id"]]
    # An agent completes the contact in Rocket.Chat.
    visitor["visitorEmails"] = [{"address": "ana@example.com"}]
    visitor["contactManager"] = {"username": "agent.smith"}
    visitor["livechatData"] = {"company": "Acme", "tier": "gold"}
    again = service.post_contact(
        name="Ana Lima", phone="+55 11 91234-5678", custom_fields={"tier": "platinum"}
    ).json()
    assert again["contact_id"] == first["contact_id"] and len(standin.visitors) == 1
    visitor = standin.visitors[first["contact_id"]]
    assert visitor["visitorEmails"] == [{"address": "ana@example.com"}]
    assert visitor["contactManager"] == {"username": "agent.smith"}
    assert visitor["livechatData"] == {"company": "Acme", "tier": "platinum"}  # ours wins


@pytest.mark.parametrize("lookup", [True, False])
def test_a_visitor_rocketchat_already_knows_keeps_its_manager_and_fields(
    lookup: bool,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    """A guest who chatted before exists in Rocket.Chat under its own token: our first
    registration with their email reuses that visitor, and must not wipe what it holds
    (unless ROCKETCHAT_LOOKUP_NEW_CONTACTS=false saves that call, as documented)."""
    standin.add_custom_field("company")
    standin.visitors["livechatVisitor1"] = {
        "_id": "livechatVisitor1",
        "username": "guest-7",
        "token": "widget-session-token",
        "name": "Chris",
        "visitorEmails": [{"address": "chris@example.com"}],
        "contactManager": {"username": "agent.smith"},
        "livechatData": {"company": "Acme"},
    }
    service = start_service(make_settings(rocketchat_lookup_new_contacts=lookup))
    answer = service.post_contact(**CHRIS)
    assert answer.status_code == 201, answer.text
    assert answer.json()["contact_id"] == "livechatVisitor1" and len(standin.visitors) == 1
    visitor = standin.visitors["livechatVisitor1"]
    assert visitor["name"] == "Chris Doe"
    if lookup:
        assert visitor["contactManager"] == {"username": "agent.smith"}
        assert visitor["livechatData"] == {"company": "Acme"}
    else:  # Rocket.Chat's own upsert semantics, unguarded
        assert "contactManager" not in visitor and visitor["livechatData"] == {}


def test_idempotency_key_is_accepted_once(service: Service, standin: RocketChatStandIn) -> None:
    first = service.post_contact(**CHRIS, event_id="lead-42")
    again = service.post_contact(**CHRIS, event_id="lead-42")
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["delivery_id"] == first.json()["delivery_id"]
    assert len(contact_posts(standin)) == 1


def test_rocketchat_rejection_fails_at_once_with_its_message(
    service: Service, standin: RocketChatStandIn
) -> None:
    standin.custom_fields["company"] = {
        "label": "Company",
        "required": True,
        "regexp": "",
        "searchable": False,
    }
    response = service.post_contact(**CHRIS)
    assert response.status_code == 422
    assert "Invalid value for Company field" in response.json()["error"]
    record = service.delivery(response.json()["delivery_id"])
    assert record["status"] == "failed"
    assert record["attempts"] == 1


def test_down_then_up_is_delivered_without_loss(
    service: Service, standin: RocketChatStandIn
) -> None:
    standin.down = True
    response = service.post_contact(**CHRIS)
    assert response.status_code == 202
    assert response.headers["location"] == f"/deliveries/{response.json()['delivery_id']}"
    delivery_id = response.json()["delivery_id"]
    wait_until(lambda: service.delivery(delivery_id)["attempts"] >= 1)
    assert service.delivery(delivery_id)["status"] == "pending"
    assert "503" in service.delivery(delivery_id)["last_error"]
    standin.down = False
    record = wait_until(
        lambda: (r := service.delivery(delivery_id))["status"] == "delivered" and r, timeout=15
    )
    assert record["contact_id"] in standin.visitors
    assert sum(standin.contact_posts_per_token().values()) == 1


def test_network_failure_is_retried(
    make_settings: Callable[..., Settings], start_service: Callable[[Settings], Service]
) -> None:
    service = start_service(make_settings(rocketchat_url="http://127.0.0.1:9"))
    response = service.post_contact(**CHRIS)
    assert response.status_code == 202
    delivery_id = response.json()["delivery_id"]
    record = wait_until(lambda: (r := service.delivery(delivery_id))["attempts"] >= 2 and r)
    assert record["status"] == "pending"
    assert "unreachable" in record["last_error"]


def test_bad_credentials_pause_delivery_until_fixed(
    service: Service, standin: RocketChatStandIn
) -> None:
    standin.set_credentials_valid(BOT["user_id"], False)
    response = service.post_contact(**CHRIS)
    assert response.status_code == 202
    delivery_id = response.json()["delivery_id"]
    ready = wait_until(lambda: (r := service.client.get("/readyz")).status_code == 503 and r)
    assert "ROCKETCHAT_USER_ID / ROCKETCHAT_AUTH_TOKEN" in ready.json()["reason"]
    record = service.delivery(delivery_id)
    assert record["status"] == "pending"
    assert record["attempts"] == 0  # pausing burns no attempts
    standin.set_credentials_valid(BOT["user_id"], True)
    wait_until(lambda: service.delivery(delivery_id)["status"] == "delivered", timeout=15)


def test_missing_permission_is_a_configuration_error(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    service = start_service(
        make_settings(rocketchat_user_id="plainUserId1", rocketchat_auth_token="plain-token")
    )
    response = service.post_contact(**CHRIS)
    assert response.status_code == 202
    ready = service.client.get("/readyz")
    assert ready.status_code == 503
    assert "403" in ready.json()["reason"]
    assert service.delivery(response.json()["delivery_id"])["attempts"] == 0


def test_pacing_under_the_default_rate_limit_causes_no_429(
    tmp_path: Any,
    start_service: Callable[[Settings], Service],
    make_settings: Callable[..., Settings],
) -> None:
    standin = RocketChatStandIn(rate_limit=5, window_ms=1000)
    with StandInServer(standin.app) as server:
        service = start_service(
            make_settings(
                rocketchat_url=server.url,
                rocketchat_user_id=AGENT["user_id"],
                rocketchat_auth_token=AGENT["token"],
                database_url=f"sqlite:///{tmp_path / 'paced.db'}",
                contact_required_fields="name,email",
            )
        )
        ids = []
        for i in range(15):
            response = service.post_contact(name=f"Guest {i}", email=f"guest{i}@example.com")
            assert response.status_code in (201, 202), response.text
            ids.append(response.json()["delivery_id"])
        wait_until(
            lambda: all(service.delivery(i)["status"] == "delivered" for i in ids), timeout=30
        )
        statuses = [c.status for c in standin.calls if c.path == "/api/v1/omnichannel/contact"]
        assert statuses.count(429) == 0
        assert statuses.count(200) == 15


def test_readiness_reports_version_and_strategy(service: Service) -> None:
    response = service.client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["strategy"] in ("visitor", "contact-center")
    assert response.json()["rocketchat_version"]
    assert service.client.get("/healthz").json() == {"status": "ok"}


def test_api_requires_its_token_and_is_off_without_it(
    service: Service,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    assert service.client.post("/contacts", json=CHRIS).status_code == 401
    wrong = service.client.post("/contacts", json=CHRIS, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    off = start_service(make_settings(api_token=None))
    response = off.client.post("/contacts", json=CHRIS)
    assert response.status_code == 404
    assert "API_TOKEN" in response.json()["error"]


@pytest.mark.parametrize(
    ("content", "ctype", "status", "needle"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b"[" * 50_000 + b"]" * 50_000, "application/json", 400, "not valid JSON"),
        (b"[1, 2]", "application/json", 400, "JSON object"),
        (b'{"name": 5}', "application/json", 400, "name: expected a string"),
        (b"x" * 300_000, "application/json", 413, "larger than"),
    ],
)
def test_malformed_requests_get_4xx_never_500(
    service: Service, content: bytes, ctype: str, status: int, needle: str
) -> None:
    response = service.client.post(
        "/contacts",
        content=content,
        headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": ctype},
    )
    assert response.status_code == status
    assert needle in response.json()["error"]


def test_form_encoded_body_works_too(service: Service, standin: RocketChatStandIn) -> None:
    response = service.client.post(
        "/contacts",
        data={"name": "Ana Lima", "email": "ana@example.com", "phone": "+55 11 91234-5678"},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    assert response.status_code == 201, response.text
    assert standin.visitors[response.json()["contact_id"]]["phone"] == [
        {"phoneNumber": "+5511912345678"}
    ]


def test_openapi_document_describes_contacts(service: Service) -> None:
    spec = service.client.get("/openapi.json").json()
    assert "post" in spec["paths"]["/contacts"]
    assert set(spec["paths"]["/contacts"]["post"]["responses"]) >= {"201", "202", "422"}


def test_unknown_delivery_and_route_say_what_to_do(service: Service) -> None:
    assert "Location" in service.client.get("/deliveries/nope").json()["error"]
    assert service.client.get("/nowhere").status_code == 404
    assert isinstance(httpx.codes.OK, int)


# --- readiness: cached, unpaced, and honest about a rate-limited /me ----------------------


def me_calls(standin: RocketChatStandIn) -> list[Any]:
    return [c for c in standin.calls if c.method == "GET" and c.path == "/api/v1/me"]


def test_readiness_is_cached_so_me_is_asked_once_a_minute(
    service: Service, standin: RocketChatStandIn
) -> None:
    first = service.client.get("/readyz")
    second = service.client.get("/readyz")
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert len(me_calls(standin)) == 1


@pytest.fixture
def limited_me() -> Any:
    """A stand-in allowing one /me call a minute for a normal (rate-limited) user."""
    standin = RocketChatStandIn(rate_limit=1, window_ms=60_000)
    with StandInServer(standin.app) as server:
        yield standin, server


def agent_settings(make_settings: Callable[..., Settings], url: str, tmp_path: Any) -> Settings:
    return make_settings(
        rocketchat_url=url,
        rocketchat_user_id=AGENT["user_id"],
        rocketchat_auth_token=AGENT["token"],
        database_url=f"sqlite:///{tmp_path / 'limited.db'}",
    )


def test_readiness_with_me_rate_limited_does_not_blame_the_credentials(
    tmp_path: Any,
    limited_me: Any,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    standin, server = limited_me
    # Someone else behind the same IP used this minute's /me budget.
    headers = {"X-User-Id": AGENT["user_id"], "X-Auth-Token": AGENT["token"]}
    assert httpx.get(server.url + "/api/v1/me", headers=headers).status_code == 200
    service = start_service(agent_settings(make_settings, server.url, tmp_path))
    ready = service.client.get("/readyz", timeout=5)
    assert [c.status for c in me_calls(standin)] == [200, 429]
    assert ready.status_code == 200, ready.text
    reason = ready.json()["reason"]
    assert "checking credentials failed" not in reason
    assert "ROCKETCHAT_AUTH_TOKEN" not in reason
    assert "rate-limited GET /api/v1/me (429)" in reason


def test_readiness_recheck_with_no_budget_left_answers_at_once_with_the_last_result(
    tmp_path: Any,
    limited_me: Any,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    standin, server = limited_me
    service = start_service(agent_settings(make_settings, server.url, tmp_path))
    assert service.client.get("/readyz").status_code == 200  # used the minute's only /me call
    service.app.state.client.forget_readiness()  # what a resumed delivery does
    started = time.monotonic()
    ready = service.client.get("/readyz", timeout=5)  # a paced /me would wait ~60 s here
    assert time.monotonic() - started < 5
    assert ready.status_code == 200, ready.text
    assert ready.json()["reason"].startswith("ok (last known result")
    assert [c.status for c in me_calls(standin)] == [200, 429]


# --- timeouts, the <= 7.3 (Restivus) 401 body, email deliverability -----------------------


def test_rocketchat_slower_than_its_timeout_is_accepted_and_retried(
    tmp_path: Any,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    standin = RocketChatStandIn(latency=1.0)
    with StandInServer(standin.app) as server:
        service = start_service(
            make_settings(
                rocketchat_url=server.url,
                rocketchat_timeout=0.3,
                database_url=f"sqlite:///{tmp_path / 'slow.db'}",
            )
        )
        response = service.post_contact(**CHRIS)
        assert response.status_code == 202, response.text
        delivery_id = response.json()["delivery_id"]
        assert response.headers["location"] == f"/deliveries/{delivery_id}"
        record = wait_until(lambda: (r := service.delivery(delivery_id))["attempts"] >= 1 and r)
        assert record["status"] == "pending"
        assert "did not answer in time" in record["last_error"]


def test_restivus_401_body_of_rocketchat_7_3_names_the_credentials(
    tmp_path: Any,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    standin = RocketChatStandIn(version="7.3")
    standin.set_credentials_valid(BOT["user_id"], False)
    with StandInServer(standin.app) as server:
        service = start_service(
            make_settings(rocketchat_url=server.url, database_url=f"sqlite:///{tmp_path / 'r.db'}")
        )
        ready = service.client.get("/readyz")
        assert ready.status_code == 503
        reason = ready.json()["reason"]
        assert "answered 401" in reason
        assert "check ROCKETCHAT_USER_ID / ROCKETCHAT_AUTH_TOKEN" in reason
        assert "You must be logged in to do this." in reason
        answered = [c.response for c in standin.calls if c.path == "/api/v1/me"]
        assert answered == [{"status": "error", "message": "You must be logged in to do this."}]
        response = service.post_contact(**CHRIS)
        assert response.status_code == 202  # kept, delivered once the credentials are fixed
        record = service.delivery(response.json()["delivery_id"])
        assert record["status"] == "pending"
        assert record["attempts"] == 0


UNRESOLVABLE = "chris@example.zzzznotatld"  # a top-level domain that does not exist


def test_email_deliverability_check_is_honoured_within_the_short_timeout(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    checking = start_service(make_settings(check_email_deliverability=True))
    started = time.monotonic()
    response = checking.post_contact(**{**CHRIS, "email": UNRESOLVABLE})
    assert time.monotonic() - started < 2.5  # Slack's 3 s deadline holds
    assert response.status_code == 422, response.text
    message = response.json()["errors"]["email"]
    assert message.startswith(f"'{UNRESOLVABLE}' is not a valid email address")
    assert "does not exist" in message or "does not accept email" in message
    assert contact_posts(standin) == []
    default = start_service(make_settings())  # CHECK_EMAIL_DELIVERABILITY=false
    accepted = default.post_contact(**{**CHRIS, "email": UNRESOLVABLE})
    assert accepted.status_code == 201, accepted.text
    assert standin.visitors[accepted.json()["contact_id"]]["visitorEmails"] == [
        {"address": UNRESOLVABLE}
    ]


# --- the OpenAPI document and the code agree ----------------------------------------------

_JSON_TYPES = {"string": str, "boolean": bool, "object": dict, "null": type(None)}


def _conforms(schema: dict[str, Any], body: Any, components: dict[str, Any]) -> bool:
    """A small JSON Schema check (the subset handlers/api.py uses)."""
    if "$ref" in schema:
        return _conforms(components[schema["$ref"].rsplit("/", 1)[1]], body, components)
    if "oneOf" in schema:
        return sum(_conforms(s, body, components) for s in schema["oneOf"]) == 1
    if "const" in schema and body != schema["const"]:
        return False
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(isinstance(body, _JSON_TYPES[t]) for t in types):
            return False
    if isinstance(body, dict):
        if any(key not in body for key in schema.get("required", ())):
            return False
        for key, sub in schema.get("properties", {}).items():
            if key in body and not _conforms(sub, body[key], components):
                return False
    return True


def test_every_documented_contacts_answer_is_provoked_and_matches_the_document(
    service: Service,
    standin: RocketChatStandIn,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    spec = service.client.get("/openapi.json").json()
    documented = spec["paths"]["/contacts"]["post"]["responses"]
    components = spec["components"]["schemas"]
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    answers: dict[str, httpx.Response] = {}

    answers["201"] = service.post_contact(**CHRIS, event_id="spec-1")
    answers["200"] = service.post_contact(**CHRIS, event_id="spec-1")
    answers["400"] = service.client.post(
        "/contacts", content=b"{nope", headers={**auth, "Content-Type": "application/json"}
    )
    answers["401"] = service.client.post("/contacts", json=CHRIS)
    answers["413"] = service.client.post(
        "/contacts", content=b"x" * 300_000, headers={**auth, "Content-Type": "application/json"}
    )
    invalid = service.post_contact(name="Chris", email="chris@", phone="+1 555")
    standin.add_custom_field("company", label="Company", required=True)
    refused = service.post_contact(name="Ana Lima", email="ana@example.com", phone=CHRIS["phone"])
    answers["422"] = invalid
    standin.custom_fields.clear()
    standin.down = True
    answers["202"] = service.post_contact(
        name="Bo Li", email="bo@example.com", phone="+14155552672"
    )
    off = start_service(make_settings(api_token=None))
    answers["404"] = off.client.post("/contacts", json=CHRIS, headers=auth)
    # 502: the same event again after its delivery gave up for good.
    giving_up = start_service(make_settings(retry_give_up_after=0.001))
    cy = {"name": "Cy Twombly", "email": "cy@example.com", "phone": "+14155552673"}
    first = giving_up.post_contact(**cy, event_id="spec-2")
    # The caller waiting on the fast path hears the final "failed", not a stale "pending".
    assert first.status_code == 502, first.text
    assert giving_up.delivery(first.json()["delivery_id"])["status"] == "failed"
    answers["502"] = giving_up.post_contact(**cy, event_id="spec-2")

    # 500 is the safety net for bugs: documented, not provokable on purpose.
    assert set(documented) - {"500"} == set(answers), "document and test disagree"
    for status, response in [*answers.items(), ("422", refused)]:
        assert response.status_code == int(status), (status, response.text)
        assert response.headers["content-type"] == "application/json"
        schema = documented[status]["content"]["application/json"]["schema"]
        assert _conforms(schema, response.json(), components), (status, response.json())
    assert answers["422"].json()["errors"]["phone"] == "'+1 555' is not a valid phone number"
    assert "Invalid value for Company field" in refused.json()["error"]
    assert answers["200"].json()["duplicate"] is True
    location = answers["202"].headers["location"]
    assert "Location" in documented["202"]["headers"]
    assert location == f"/deliveries/{answers['202'].json()['delivery_id']}"
    assert "gave up" in answers["502"].json()["error"]


@pytest.fixture
def silent_dns(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A DNS server on loopback that never answers, used by every new resolver."""
    import socket

    import dns.resolver

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]

    def configure(self: dns.resolver.Resolver, _f: Any) -> None:
        self.nameservers = ["127.0.0.1"]
        self.port = port

    monkeypatch.setattr(dns.resolver.Resolver, "read_resolv_conf", configure)
    yield
    sink.close()


def test_email_deliverability_check_with_silent_dns_accepts_and_says_unchecked(
    silent_dns: Any,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    service = start_service(make_settings(check_email_deliverability=True))
    started = time.monotonic()
    response = service.post_contact(**CHRIS)
    assert time.monotonic() - started < 2.5  # the short DNS timeout keeps Slack's 3 s
    assert response.status_code == 201, response.text
    warning = response.json()["warnings"]["email"]
    assert warning.startswith("the domain of 'Chris@Example.com' could not be checked")
