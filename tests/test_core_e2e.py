"""End to end through the real service and the Rocket.Chat stand-in, over loopback HTTP."""

from __future__ import annotations

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
    assert sent.json["token"].startswith("oca-")
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
