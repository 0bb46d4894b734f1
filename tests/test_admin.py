"""The admin page over HTTP: login, session cookie, CSRF, retry, redaction, off without a token."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from adapter.core.redact import mask_email, mask_message, mask_name, mask_phone
from adapter.settings import Settings
from tests.conftest import ADMIN_TOKEN, Service, csrf_of, wait_until
from tests.rocketchat_standin import RocketChatStandIn

CHRIS = {"name": "Chris Doe", "email": "chris@example.com", "phone": "+1 415 555 2671"}
SECRETS_OF_CHRIS = ("Chris Doe", "Chris", "chris@example.com", "+14155552671", "4155552671")
COMPANY = {"label": "Company", "required": True, "regexp": "", "searchable": False}


def set_cookie(response: httpx.Response, name: str) -> str:
    """The ``Set-Cookie`` header that sets ``name``."""
    found = [c for c in response.headers.get_list("set-cookie") if c.startswith(name + "=")]
    assert len(found) == 1, response.headers.get_list("set-cookie")
    return found[0]


@pytest.fixture
def browser_client(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30, follow_redirects=False) as client:
        yield client


def log_in(client: httpx.Client) -> str:
    """Log in; return the session's CSRF token."""
    form = client.get("/admin/login")
    assert form.status_code == 200
    answer = client.post(
        "/admin/login",
        data={"token": ADMIN_TOKEN, "csrf_token": csrf_of(form.text), "next": "/admin"},
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/admin"
    dashboard = client.get("/admin")
    assert dashboard.status_code == 200
    return csrf_of(dashboard.text)


def failed_delivery(service: Service, standin: RocketChatStandIn) -> str:
    """A delivery that Rocket.Chat rejected: a required custom field we do not send."""
    standin.custom_fields["company"] = dict(COMPANY)
    body = service.post_contact(**CHRIS).json()
    delivery_id = str(body["delivery_id"])
    wait_until(lambda: service.delivery(delivery_id)["status"] == "failed")
    return delivery_id


def test_admin_is_off_without_admin_token(
    make_settings: Callable[..., Settings], start_service: Callable[[Settings], Service]
) -> None:
    service = start_service(make_settings(admin_token=None))
    for path in ("/admin", "/admin/login", "/admin/deliveries"):
        page = service.client.get(path)
        assert page.status_code == 404
        assert "ADMIN_TOKEN" in page.text
    refused = service.client.post("/admin/login", data={"token": ""})
    assert refused.status_code == 404


def test_pages_need_a_login(browser_client: httpx.Client) -> None:
    page = browser_client.get("/admin/deliveries?status=failed")
    assert page.status_code == 303
    assert page.headers["location"] == "/admin/login?next=%2Fadmin%2Fdeliveries%3Fstatus%3Dfailed"
    assert browser_client.post("/admin/retry-failed", data={}).status_code == 403


def test_wrong_token_is_refused_and_right_token_gives_a_strict_session_cookie(
    browser_client: httpx.Client,
) -> None:
    form = browser_client.get("/admin/login")
    assert form.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in form.headers["content-security-policy"]
    csrf = csrf_of(form.text)
    wrong = browser_client.post(
        "/admin/login", data={"token": ADMIN_TOKEN + "x", "csrf_token": csrf, "next": "/admin"}
    )
    assert wrong.status_code == 401
    assert "not the admin token" in wrong.text
    assert browser_client.get("/admin").status_code == 303  # still logged out

    right = browser_client.post(
        "/admin/login",
        data={"token": ADMIN_TOKEN, "csrf_token": csrf_of(wrong.text), "next": "/admin/deliveries"},
    )
    assert right.status_code == 303
    assert right.headers["location"] == "/admin/deliveries"
    cookie = set_cookie(right, "oca_admin")
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "samesite", "path", "max-age"} <= flags
    assert "samesite=strict" in cookie.lower()
    assert "path=/admin" in cookie.lower()
    assert "max-age=28800" in cookie.lower()
    assert "secure" not in flags  # plain http here: see the https test below
    assert ADMIN_TOKEN not in cookie
    assert "max-age=0" in set_cookie(right, "oca_admin_login").lower()  # the form's, gone
    assert browser_client.get("/admin/deliveries").status_code == 200


def test_the_cookie_is_secure_over_https(browser_client: httpx.Client) -> None:
    https = {"x-forwarded-proto": "https"}  # as the router says (uvicorn trusts loopback)
    form = browser_client.get("/admin/login", headers=https)
    assert "; secure" in set_cookie(form, "oca_admin_login").lower()
    # A Secure cookie is not sent back over plain http: send it as the browser would over https.
    value = set_cookie(form, "oca_admin_login").split(";")[0]
    browser_client.cookies.clear()
    answer = browser_client.post(
        "/admin/login",
        headers={**https, "cookie": value},
        data={"token": ADMIN_TOKEN, "csrf_token": csrf_of(form.text), "next": "/admin"},
    )
    assert answer.status_code == 303
    assert "; secure" in set_cookie(answer, "oca_admin").lower()


def test_login_form_needs_its_csrf_token_and_a_tampered_cookie_is_no_session(
    browser_client: httpx.Client,
) -> None:
    browser_client.get("/admin/login")
    refused = browser_client.post("/admin/login", data={"token": ADMIN_TOKEN, "next": "/admin"})
    assert refused.status_code == 403
    assert browser_client.get("/admin").status_code == 303

    log_in(browser_client)
    value = browser_client.cookies["oca_admin"]
    browser_client.cookies.clear()
    browser_client.cookies.set("oca_admin", value[:-2] + "xx", path="/admin")
    assert browser_client.get("/admin").status_code == 303


def test_too_many_wrong_tokens_are_throttled(browser_client: httpx.Client) -> None:
    csrf = csrf_of(browser_client.get("/admin/login").text)
    statuses = []
    for _ in range(11):
        answer = browser_client.post("/admin/login", data={"token": "guess", "csrf_token": csrf})
        statuses.append(answer.status_code)
        csrf = csrf_of(answer.text)
    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429
    right = browser_client.post("/admin/login", data={"token": ADMIN_TOKEN, "csrf_token": csrf})
    assert right.status_code == 429  # even the right token waits for the window


def test_posts_without_or_with_a_wrong_csrf_token_or_from_another_site_change_nothing(
    service: Service, standin: RocketChatStandIn, browser_client: httpx.Client
) -> None:
    delivery_id = failed_delivery(service, standin)
    del standin.custom_fields["company"]
    csrf = log_in(browser_client)
    retry = f"/admin/deliveries/{delivery_id}/retry"
    assert browser_client.post(retry, data={}).status_code == 403
    wrong = csrf[:-1] + ("B" if csrf.endswith("A") else "A")  # always differs from the real one
    assert browser_client.post(retry, data={"csrf_token": wrong}).status_code == 403
    assert browser_client.post("/admin/retry-failed", data={"csrf_token": "x"}).status_code == 403
    cross = browser_client.post(
        retry, data={"csrf_token": csrf}, headers={"origin": "https://evil.example"}
    )
    assert cross.status_code == 403
    assert "another site" in cross.text
    assert service.delivery(delivery_id)["status"] == "failed"

    same_site = browser_client.post(
        retry, data={"csrf_token": csrf}, headers={"origin": service.url}
    )
    assert same_site.status_code == 303
    assert same_site.headers["location"] == f"/admin/deliveries/{delivery_id}?notice=retried"
    wait_until(lambda: service.delivery(delivery_id)["status"] == "delivered")


def test_retry_from_the_detail_page_delivers_after_the_cause_is_fixed(
    service: Service, standin: RocketChatStandIn, browser_client: httpx.Client
) -> None:
    delivery_id = failed_delivery(service, standin)
    csrf = log_in(browser_client)
    listing = browser_client.get("/admin/deliveries", params={"status": "failed"})
    assert f"/admin/deliveries/{delivery_id}" in listing.text
    detail = browser_client.get(f"/admin/deliveries/{delivery_id}")
    assert detail.status_code == 200
    assert "Invalid value for Company field" in detail.text
    assert "Retry this delivery" in detail.text
    assert f'action="/admin/deliveries/{delivery_id}/retry"' in detail.text

    del standin.custom_fields["company"]
    answer = browser_client.post(
        f"/admin/deliveries/{delivery_id}/retry", data={"csrf_token": csrf_of(detail.text)}
    )
    assert answer.status_code == 303
    wait_until(lambda: service.delivery(delivery_id)["status"] == "delivered")
    done = browser_client.get(f"/admin/deliveries/{delivery_id}")
    assert 'class="badge delivered"' in done.text
    contact_id = service.delivery(delivery_id)["contact_id"]
    assert contact_id and contact_id in done.text
    assert "Retry this delivery" not in done.text
    # Retrying something that is not failed says so, and changes nothing.
    again = browser_client.post(f"/admin/deliveries/{delivery_id}/retry", data={"csrf_token": csrf})
    assert again.headers["location"].endswith("notice=not-retried")


def test_retry_all_failed(
    service: Service, standin: RocketChatStandIn, browser_client: httpx.Client
) -> None:
    standin.custom_fields["company"] = dict(COMPANY)
    ids = []
    for n in range(3):
        body = service.post_contact(
            name=f"Person {n}", email=f"p{n}@example.com", phone=f"+1 415 555 26{n:02d}"
        ).json()
        ids.append(body["delivery_id"])
    wait_until(lambda: all(service.delivery(i)["status"] == "failed" for i in ids))
    csrf = log_in(browser_client)
    assert "Retry all 3 failed" in browser_client.get("/admin").text
    del standin.custom_fields["company"]
    answer = browser_client.post("/admin/retry-failed", data={"csrf_token": csrf})
    assert answer.status_code == 303
    assert "count=3" in answer.headers["location"]
    assert (
        "3 failed deliveries are queued again"
        in browser_client.get(answer.headers["location"]).text
    )
    wait_until(lambda: all(service.delivery(i)["status"] == "delivered" for i in ids))


def test_dashboard_and_list_show_counts_and_redacted_contacts_only(
    service: Service, standin: RocketChatStandIn, browser_client: httpx.Client
) -> None:
    delivered = service.post_contact(
        name="Alex Roe", email="alex.roe@example.org", phone="+44 20 7946 0958"
    ).json()
    assert delivered["status"] == "delivered"
    failed_delivery(service, standin)
    log_in(browser_client)

    dashboard = browser_client.get("/admin").text
    assert re.search(r'<span class="n">2</span> received', dashboard)
    assert re.search(
        r'<span class="n">1</span>\s*<a href="/admin/deliveries\?status=failed', dashboard
    )
    assert ">api</a></th>" in dashboard

    pages = [
        browser_client.get("/admin/deliveries").text,
        browser_client.get("/admin/deliveries", params={"channel": "api", "period": "24h"}).text,
        browser_client.get("/admin/deliveries", params={"status": "failed"}).text,
        dashboard,
    ]
    listing = pages[0]
    assert "C**** D**" in listing
    assert "c***@example.com" in listing
    assert "+1 *** *** **71" in listing
    assert "A*** R**" in listing
    assert "+44 *** *** **58" in listing
    for page in pages:
        for secret in (*SECRETS_OF_CHRIS, "Alex", "alex.roe@", "+442079460958", "79460958"):
            assert secret not in page, secret
        assert ADMIN_TOKEN not in page
    only_failed = pages[2]
    assert "C**** D**" in only_failed and "A*** R**" not in only_failed


def test_list_paginates(service: Service, browser_client: httpx.Client) -> None:
    for n in range(53):
        answer = service.post_contact(
            name=f"P {n}", email=f"page{n}@example.com", phone=f"+1 415 555 {2600 + n}"
        )
        assert answer.status_code in (201, 202), answer.text
    log_in(browser_client)
    first = browser_client.get("/admin/deliveries").text
    assert first.count('class="badge ') == 50
    assert 'href="/admin/deliveries?page=2"' in first
    second = browser_client.get("/admin/deliveries?page=2").text
    assert second.count('class="badge ') == 3
    assert 'href="/admin/deliveries"' in second and "?page=3" not in second


def test_logout_ends_the_session(browser_client: httpx.Client) -> None:
    csrf = log_in(browser_client)
    answer = browser_client.post("/admin/logout", data={"csrf_token": csrf})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/login?notice=logged-out"
    assert "max-age=0" in set_cookie(answer, "oca_admin").lower()
    assert browser_client.get("/admin").status_code == 303


def test_unknown_delivery_is_a_404_page(browser_client: httpx.Client) -> None:
    log_in(browser_client)
    page = browser_client.get("/admin/deliveries/nope")
    assert page.status_code == 404
    assert "No such delivery" in page.text


def test_masks() -> None:
    assert mask_name("Chris Doe") == "C**** D**"
    assert mask_name("  ") == ""
    assert mask_email("chris@example.com") == "c***@example.com"
    assert mask_email("not-an-email") == "n***"
    assert mask_phone("+14155552671") == "+1 *** *** **71"
    assert mask_phone("+442079460958") == "+44 *** *** **58"
    assert mask_phone("12") == "**"
    shown: dict[str, Any] = {
        "email": mask_message("email", "'chris@' is not a valid email address: it needs a domain"),
        "phone": mask_message("phone", "'+1 415 555 26' is not a valid phone number"),
        "name": mask_message("name", "is required"),
    }
    assert shown["email"] == "'c***@' is not a valid email address: it needs a domain"
    assert "415 555" not in shown["phone"] and shown["phone"].endswith(
        "is not a valid phone number"
    )
    assert shown["name"] == "is required"


def test_showing_the_login_form_keeps_an_existing_session(browser_client: httpx.Client) -> None:
    log_in(browser_client)
    session = browser_client.cookies["oca_admin"]
    # Arriving from another site, the browser holds the SameSite=Strict session back:
    # the login form it gets must not overwrite it.
    fresh = httpx.get(browser_client.base_url.join("/admin/login"))
    assert [c for c in fresh.headers.get_list("set-cookie") if c.startswith("oca_admin=")] == []
    assert browser_client.cookies["oca_admin"] == session
    # With the session, the login form sends you on.
    again = browser_client.get("/admin/login?next=/admin/deliveries")
    assert again.status_code == 303 and again.headers["location"] == "/admin/deliveries"
