"""The admin page in real Chromium (Playwright, Debian's ``chromium``).

Log in, find the failed delivery in the list (filter status=failed), open it, fix the
cause at the Rocket.Chat stand-in, click "Retry this delivery", see it delivered, with
both attempts in its history.
Screenshots go to /tmp/admin*.png (ADMIN_SCREENSHOT names the list page's).
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from tests.conftest import ADMIN_TOKEN, Service, wait_until
from tests.rocketchat_standin import RocketChatStandIn

pytestmark = pytest.mark.browser

SCREENSHOT = os.environ.get("ADMIN_SCREENSHOT", "/tmp/admin.png")
COMPANY = {"label": "Company", "required": True, "regexp": "", "searchable": False}


def test_log_in_find_the_failed_delivery_retry_it_and_see_it_delivered(
    browser: Any, service: Service, standin: RocketChatStandIn
) -> None:
    # Some history: two delivered contacts, then one that Rocket.Chat rejects.
    for name, email, phone in (
        ("Alex Roe", "alex.roe@example.org", "+44 20 7946 0958"),
        ("Sam Poe", "sam@example.net", "+1 212 555 0199"),
    ):
        assert service.post_contact(name=name, email=email, phone=phone).status_code == 201
    standin.custom_fields["company"] = dict(COMPANY)
    failed_id = service.post_contact(
        name="Chris Doe", email="chris@example.com", phone="+1 415 555 2671"
    ).json()["delivery_id"]
    wait_until(lambda: service.delivery(failed_id)["status"] == "failed")

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)

    # Logged out: the admin page sends us to the login form, which comes back after.
    page.goto(service.url + "/admin")
    assert page.url.startswith(service.url + "/admin/login")
    page.get_by_label("Admin token").fill("not the token")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("alert").filter(has_text="not the admin token").wait_for()
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Last 24 hours").wait_for()
    assert page.locator("table th[scope=row]").filter(has_text="api").count() == 1
    page.screenshot(path=SCREENSHOT.replace(".png", "-dashboard.png"), full_page=True)

    # The list, filtered to the failed ones.
    page.get_by_role("link", name="Deliveries", exact=True).click()
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/admin/deliveries?status=failed*")
    rows = page.locator("table tbody tr")
    assert rows.count() == 1
    row_text = rows.first.inner_text()
    assert "C**** D**" in row_text and "c***@example.com" in row_text
    assert "Chris" not in row_text and "chris@" not in row_text
    assert "Invalid value for Company field" in row_text

    # Unfiltered, for the screenshot: every status side by side, all redacted.
    page.get_by_role("link", name="Clear filters").click()
    page.wait_for_url("**/admin/deliveries")
    assert page.locator("table tbody tr").count() == 3
    page.screenshot(path=SCREENSHOT, full_page=True)
    page.go_back()
    page.wait_for_url("**/admin/deliveries?status=failed*")

    # Open it: the last error and the retry button.
    page.locator("table tbody tr").first.get_by_role("link").click()
    page.wait_for_url(f"**/admin/deliveries/{failed_id}")
    page.get_by_text("Rocket.Chat rejected the contact").first.wait_for()
    assert "failed" in page.locator("h1 .badge").inner_text()
    attempts = page.locator("tr.attempt")
    assert attempts.count() == 1
    assert "rejected" in attempts.first.inner_text()
    assert "Invalid value for Company field" in attempts.first.inner_text()
    page.screenshot(path=SCREENSHOT.replace(".png", "-failed.png"), full_page=True)

    # Fix the cause in "Rocket.Chat", then retry.
    del standin.custom_fields["company"]
    page.get_by_role("button", name="Retry this delivery").click()
    page.wait_for_url(f"**/admin/deliveries/{failed_id}?notice=retried")

    # The page refreshes itself while the delivery is in progress; reload too, to a deadline.
    deadline = time.monotonic() + 20
    while page.locator("h1 .badge").inner_text().strip() != "delivered":
        assert time.monotonic() < deadline, "the retried delivery was not delivered in 20 s"
        page.wait_for_timeout(300)
        page.reload()
    assert page.get_by_role("button", name="Retry this delivery").count() == 0
    # Each try is listed, newest first: the delivery, then the rejection before the fix.
    outcomes = [row.split("\t")[2].strip() for row in attempts.all_inner_texts()]
    assert outcomes == ["delivered", "rejected"], outcomes
    contact_id = service.delivery(failed_id)["contact_id"]
    assert contact_id and page.get_by_text(contact_id).count() == 1
    page.screenshot(path=SCREENSHOT.replace(".png", "-delivery.png"), full_page=True)

    # Log out: back to the login form, and the pages are closed again.
    page.get_by_role("button", name="Log out").click()
    page.get_by_role("status").filter(has_text="logged out").wait_for()
    page.goto(service.url + "/admin/deliveries")
    assert page.url.startswith(service.url + "/admin/login")
