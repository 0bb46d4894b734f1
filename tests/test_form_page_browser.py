"""The hosted contact form in real Chromium (Playwright, Debian's ``chromium``).

Fill it in with bad values, submit, see each error next to its field, fix them, submit,
see the success; the contact arrives at the Rocket.Chat stand-in. Once with JavaScript
(fetch + JSON) and once without (a plain POST answered with a page).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from adapter.settings import Settings
from tests.conftest import Service, wait_until
from tests.rocketchat_standin import RocketChatStandIn

pytestmark = pytest.mark.browser

SCREENSHOT = os.environ.get("FORM_SCREENSHOT", "/tmp/form.png")


def _visitor(standin: RocketChatStandIn, email: str) -> dict[str, Any] | None:
    for visitor in standin.visitors.values():
        if any(e.get("address") == email for e in visitor.get("visitorEmails") or []):
            return visitor
    return None


def test_hosted_form_with_and_without_javascript(
    browser: Any,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    service = start_service(make_settings(channel_settings={"FORM_RATE_LIMIT": "0"}))

    # -- with JavaScript: fetch, errors next to the fields, focus on the first error ----------
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    page = context.new_page()
    console_errors: list[str] = []
    page.on(
        "console",
        lambda m: (
            console_errors.append(m.text)
            # a 422 answer is logged as a failed resource load: that one is expected
            if m.type == "error" and "status of 422" not in m.text
            else None
        ),
    )
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    page.goto(f"{service.url}/form")
    assert page.title() == "Contact us"
    page.get_by_label("Name").fill("Zoë O'Brien")
    page.get_by_label("Email").fill("zoe@")
    page.get_by_label("Phone").fill("+1 555")
    page.get_by_role("button", name="Send").click()

    phone_error = page.locator("#f-phone-error")
    phone_error.wait_for(state="visible")
    assert phone_error.inner_text() == "'+1 555' is not a valid phone number"
    assert page.locator("#f-email-error").inner_text().startswith("'zoe@' is not a valid email")
    assert page.locator("#f-name-error").inner_text() == ""
    assert page.locator("#f-email").get_attribute("aria-invalid") == "true"
    assert (
        page.locator("#f-phone").get_attribute("aria-describedby") == "f-phone-hint f-phone-error"
    )
    assert page.locator("#f-name").get_attribute("aria-invalid") is None
    assert page.evaluate("document.activeElement.id") == "f-email"  # the first error
    assert page.locator("#form-status").inner_text() == "Please correct the 2 fields marked below."
    assert "/form" in page.url  # no navigation: the script handled it
    page.screenshot(path=SCREENSHOT, full_page=True)  # the errors state, to look at
    assert standin.visitors == {}

    page.get_by_label("Email").fill("zoe@example.org")
    page.get_by_label("Phone").fill("+1 (415) 555-2671")
    page.get_by_role("button", name="Send").click()
    result = page.locator("#form-result")
    result.wait_for(state="visible")
    assert page.locator("#result-title").inner_text() == "Thank you!"
    assert "registered" in page.locator("#result-message").inner_text()
    assert (
        result.get_attribute("data-outcome") == "queued"
    )  # a public form never says whether the person was known
    assert page.locator("#contact-form").is_hidden()
    assert page.evaluate("document.activeElement.id") == "result-title"
    visitor = wait_until(lambda: _visitor(standin, "zoe@example.org"))
    assert visitor["name"] == "Zoë O'Brien"
    assert visitor["phone"] == [{"phoneNumber": "+14155552671"}]
    assert console_errors == []  # e.g. nothing refused by the Content-Security-Policy
    context.close()

    # -- without JavaScript: a plain POST, the form again with the errors, then a page --------
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(f"{service.url}/form")
    page.get_by_label("Name").fill("Rahul Sharma")
    page.get_by_label("Email").fill("rahul.sharma@example.com")
    page.get_by_label("Phone").fill("12")
    page.get_by_role("button", name="Send").click()
    page.wait_for_url(f"{service.url}/forms/default")
    assert page.locator("h1").first.inner_text() == "Check your details"
    assert page.locator("#f-phone-error").inner_text().startswith("'12' is not")
    assert page.locator("#f-phone").get_attribute("aria-invalid") == "true"
    assert page.locator("#f-email").input_value() == "rahul.sharma@example.com"  # kept
    assert page.evaluate("document.activeElement.id") == "f-phone"  # autofocus, no script
    page.get_by_label("Phone").fill("+91 98765 43210")
    page.get_by_role("button", name="Send").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Thank you!"
    assert "registered" in page.locator("#result-message").inner_text()
    visitor = wait_until(lambda: _visitor(standin, "rahul.sharma@example.com"))
    assert visitor["phone"] == [{"phoneNumber": "+919876543210"}]
    context.close()
