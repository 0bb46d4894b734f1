"""Pure Rocket.Chat request building and answer classification (no network)."""

from __future__ import annotations

import json

import pytest

from adapter.core.contact import Contact
from adapter.core.errors import (
    BadCredentials,
    ContactRejected,
    PermissionDenied,
    RateLimited,
    RetryableError,
    RouteNotFound,
    ServerError,
)
from adapter.rocketchat.sansio import (
    Registration,
    classify_answer,
    contact_token,
    keep_what_rocketchat_holds,
    parse_rate_limit,
    parse_version,
    visitor_body,
)

NOW = 1_795_514_400.0


def answer(status: int, body: object, headers: dict[str, str] | None = None) -> dict[str, object]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return classify_answer(status, headers or {}, raw, now=NOW)


def test_success_returns_the_body() -> None:
    assert answer(200, {"contact": "7ipCD6NDtkkRDCiNM", "success": True})["contact"] == (
        "7ipCD6NDtkkRDCiNM"
    )


def test_400_keeps_rocketchats_error_and_type() -> None:
    with pytest.raises(ContactRejected) as info:
        answer(
            400,
            {
                "success": False,
                "error": "No user found with username bob [error-contact-manager-not-found]",
                "errorType": "error-contact-manager-not-found",
            },
        )
    assert info.value.error_type == "error-contact-manager-not-found"
    assert "No user found with username bob" in str(info.value)
    assert not isinstance(info.value, RetryableError)


@pytest.mark.parametrize(
    "body",
    [
        {"status": "error", "message": "You must be logged in to do this."},
        {
            "success": False,
            "error": "You must be logged in to do this.",
            "status": "error",
            "message": "You must be logged in to do this.",
        },
    ],
)
def test_both_401_shapes_are_bad_credentials(body: dict[str, object]) -> None:
    with pytest.raises(BadCredentials) as info:
        answer(401, body)
    assert "You must be logged in" in str(info.value)
    assert "ROCKETCHAT_USER_ID / ROCKETCHAT_AUTH_TOKEN" in str(info.value)


def test_403_is_a_permission_problem() -> None:
    with pytest.raises(PermissionDenied, match="view-l-room"):
        answer(
            403,
            {
                "success": False,
                "error": "User does not have the permissions required for this action [error-unauthorized]",
            },
        )


def test_429_waits_until_the_reset_in_epoch_milliseconds() -> None:
    with pytest.raises(RateLimited) as info:
        answer(
            429,
            {
                "success": False,
                "error": "Error, too many requests. Please slow down. You must wait 42 seconds before trying this endpoint again. [error-too-many-requests]",
            },
            {
                "X-RateLimit-Limit": "10",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int((NOW + 42) * 1000)),
            },
        )
    assert info.value.reset_at == pytest.approx(NOW + 42)


def test_429_without_headers_reads_the_wait_from_the_message() -> None:
    with pytest.raises(RateLimited) as info:
        answer(429, {"success": False, "error": "You must wait 7 seconds before trying"})
    assert info.value.reset_at == pytest.approx(NOW + 7)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retryable(status: int) -> None:
    with pytest.raises(ServerError):
        answer(status, b"<html>Bad gateway</html>")


def test_404_text_plain_is_a_missing_route() -> None:
    with pytest.raises(RouteNotFound):
        answer(404, b"404 Not Found")


def test_200_with_success_false_is_not_success() -> None:
    with pytest.raises(ServerError):
        answer(200, {"success": False})


def test_rate_limit_headers() -> None:
    limit = parse_rate_limit(
        {
            "x-ratelimit-limit": "10",
            "x-ratelimit-remaining": "3",
            "x-ratelimit-reset": "1795514460000",
        }
    )
    assert limit is not None
    assert (limit.limit, limit.remaining, limit.reset_at) == (10, 3, 1795514460.0)
    assert parse_rate_limit({}) is None
    assert (
        parse_rate_limit(
            {"X-RateLimit-Limit": "x", "X-RateLimit-Remaining": "1", "X-RateLimit-Reset": "1"}
        )
        is None
    )


@pytest.mark.parametrize(
    ("body", "version"),
    [
        ({"version": "8.8", "success": True}, (8, 8)),
        ({"version": "3.18.3"}, (3, 18)),
        ({"version": "7.10"}, (7, 10)),
    ],
)
def test_version(body: dict[str, str], version: tuple[int, int]) -> None:
    assert parse_version(body) == version


def test_visitor_body_has_only_accepted_keys_and_never_null_email() -> None:
    contact = Contact(
        name="Chris", phone="+14155552671", custom_fields={"page": "/pricing", "x": "1"}
    )
    body = visitor_body(
        Registration(token="t", contact=contact, contact_manager="kim.jane"),
        custom_field_ids=("page",),
    )
    assert body == {
        "token": "t",
        "name": "Chris",
        "phone": "+14155552671",
        "customFields": {"page": "/pricing"},
        "contactManager": {"username": "kim.jane"},
    }
    assert "email" not in body


def test_token_is_stable_per_person_and_prefers_email() -> None:
    a = contact_token(email="Chris@Example.com", phone="+1", person_key=None)
    b = contact_token(email="chris@example.com", phone="+2", person_key="x")
    assert a == b
    assert contact_token(email=None, phone="+14155552671", person_key=None) != a
    with pytest.raises(ValueError):
        contact_token(email=None, phone=None, person_key=None)


def test_keep_what_rocketchat_holds_sends_back_what_a_call_would_erase() -> None:
    body = {"token": "t", "name": "Ana", "phone": "+5511912345678", "customFields": {"tier": "b"}}
    stored = {
        "visitorEmails": [{"address": "ana@example.com"}],
        "contactManager": {"username": "agent.smith"},
        "livechatData": {"company": "Acme", "tier": "a", "empty": ""},
    }
    merged = keep_what_rocketchat_holds(body, stored)
    assert merged == {
        "token": "t",
        "name": "Ana",
        "phone": "+5511912345678",
        "email": "ana@example.com",
        "contactManager": {"username": "agent.smith"},
        "customFields": {"company": "Acme", "tier": "b"},  # ours wins; empty values dropped
    }
    # What we send always wins, and nothing stored means nothing added.
    ours = {
        "token": "t",
        "name": "Ana",
        "email": "new@example.com",
        "contactManager": {"username": "x"},
    }
    assert keep_what_rocketchat_holds(ours, stored)["email"] == "new@example.com"
    assert keep_what_rocketchat_holds(ours, stored)["contactManager"] == {"username": "x"}
    assert keep_what_rocketchat_holds(body, None) == body
    assert keep_what_rocketchat_holds(body, {"visitorEmails": "junk", "livechatData": []}) == body
