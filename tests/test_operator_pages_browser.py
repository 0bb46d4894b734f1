"""The operator's pages in real Chromium (Playwright, Debian's ``chromium``) at a phone's
and a laptop's width: every admin page and the root status page fit without sideways
scrolling (``document.documentElement.scrollWidth`` ≤ the viewport's width); find a person
and retry from the list on a phone; the hosted form with its texts from settings, errors
that clear as they are corrected, a Send button with AA contrast and a short reference.

Screenshots go to ``$SCREENS`` (default /work/notes/screens, else /tmp/screens).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapter.settings import Settings
from tests.conftest import ADMIN_TOKEN, Service, wait_until
from tests.rocketchat_standin import RocketChatStandIn
from tests.test_admin import COMPANY
from tests.webhook_samples import SECRETS, sign

pytestmark = pytest.mark.browser

# A phone's and a laptop's viewport; OPERATOR_VIEWPORTS="360x740,1440x900" tries others.
WIDTHS = {
    size: tuple(int(n) for n in size.split("x"))
    for size in os.environ.get("OPERATOR_VIEWPORTS", "390x844,1280x800").split(",")
}


def screens() -> Path:
    wanted = Path(os.environ.get("SCREENS", "/work/notes/screens"))
    try:
        wanted.mkdir(parents=True, exist_ok=True)
    except OSError:
        wanted = Path("/tmp/screens")
        wanted.mkdir(parents=True, exist_ok=True)
    return wanted


def fits(page: Any, what: str) -> None:
    """No sideways scrolling: the document is no wider than the viewport, and no table
    is wider than its box."""
    width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.evaluate("window.innerWidth")
    assert width <= viewport, f"{what}: {width} px wide in a {viewport} px viewport"
    # Nor does a table scroll sideways inside its box.
    inner = page.evaluate(
        "Array.from(document.querySelectorAll('.table-wrap'))"
        ".filter(e => e.scrollWidth > e.clientWidth).map(e => e.scrollWidth - e.clientWidth)"
    )
    assert inner == [], f"{what}: a table scrolls sideways by {inner} px"


def contrast(page: Any, selector: str) -> float:
    """The WCAG contrast ratio of an element's text colour on its background colour."""
    colours = page.eval_on_selector(
        selector,
        "e => { const s = getComputedStyle(e); return [s.color, s.backgroundColor]; }",
    )

    def luminance(css: str) -> float:
        r, g, b = (int(x) / 255 for x in re.findall(r"\d+", css)[:3])
        lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    light, dark = sorted((luminance(c) for c in colours), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def post_generic(service: Service, **body: str) -> dict[str, Any]:
    raw = json.dumps(body).encode()
    answer = service.client.post("/webhooks/generic", content=raw, headers=sign("generic", raw))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_every_operator_page_fits_a_phone_and_a_laptop_and_works_there(
    browser: Any,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    service = start_service(
        make_settings(
            channel_settings={
                "GENERIC_WEBHOOK_SECRET": SECRETS["generic"],
                "TAWKTO_WEBHOOK_SECRET": "tawk-secret",
            }
        )
    )
    # Some history: delivered after an nginx error page, rejected, failed.
    standin.fault_html = True
    standin.fail_next(1, 503)
    bumpy = service.post_contact(
        name="Alexandra Konstantinopoulou-Vanderbilt",
        email="alexandra.konstantinopoulou-vanderbilt@subdomain.example.org",
        phone="+44 20 7946 0958",
    ).json()["delivery_id"]
    assert service.settled(bumpy)["status"] == "delivered"
    rejected = post_generic(service, name="Jane Roe", email="jane@example", phone="+1 555")
    standin.custom_fields["company"] = dict(COMPANY)
    failed = service.post_contact(
        name="Chris Doe", email="chris@example.com", phone="+1 415 555 2671"
    ).json()["delivery_id"]
    assert service.settled(failed)["status"] == "failed"

    out = screens()
    for width, height in WIDTHS.values():
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        page.set_default_timeout(15_000)

        page.goto(service.url + "/")
        page.get_by_role("heading", name="Channels").wait_for()
        fits(page, f"status page at {width}")
        page.screenshot(path=str(out / f"root-{width}.png"), full_page=True)

        page.goto(service.url + "/admin")
        fits(page, f"login at {width}")
        page.get_by_label("Admin token").fill(ADMIN_TOKEN)
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("heading", name="Last 24 hours").wait_for()
        fits(page, f"dashboard at {width}")
        page.screenshot(path=str(out / f"admin-dashboard-{width}.png"), full_page=True)

        page.get_by_role("link", name="Deliveries", exact=True).click()
        page.wait_for_url("**/admin/deliveries")
        fits(page, f"deliveries at {width}")
        page.screenshot(path=str(out / f"admin-list-{width}.png"), full_page=True)
        # On a phone the status and the reason are in view, not off to the right.
        rows = page.locator("table tbody tr")
        assert rows.count() == 3
        rejected_row = rows.filter(has_text="rejected: email")
        box = rejected_row.locator(".last-error").bounding_box()
        assert box is not None and box["x"] + box["width"] <= width
        assert "is not a valid email address" in rejected_row.inner_text()

        # Find a person by the email typed in full: one row, still masked.
        page.get_by_label("Find").fill("Chris@Example.com")
        page.get_by_role("button", name="Filter").click()
        page.get_by_text("matching the search").wait_for()
        assert rows.count() == 1
        assert "c***@example.com" in rows.first.inner_text()
        assert "chris@example.com" not in page.locator("table").inner_text()
        fits(page, f"search results at {width}")
        page.screenshot(path=str(out / f"admin-search-{width}.png"), full_page=True)

        for delivery_id, name in (
            (failed, "failed"),
            (bumpy, "delivered"),
            (rejected["delivery_id"], "rejected"),
        ):
            page.goto(f"{service.url}/admin/deliveries/{delivery_id}")
            page.get_by_role("heading", name="What happened").wait_for()
            fits(page, f"{name} delivery at {width}")
            page.screenshot(path=str(out / f"admin-detail-{name}-{width}.png"), full_page=True)
        page.goto(f"{service.url}/admin/deliveries/{bumpy}")
        history = page.locator("tr.attempt").all_inner_texts()
        assert any("503 Service Unavailable" in row and "<" not in row for row in history)

        page.goto(service.url + "/admin")
        page.get_by_role("button", name="Test connection").click()
        page.get_by_text("accepts the credentials").wait_for()
        fits(page, f"test connection at {width}")
        page.screenshot(path=str(out / f"admin-connection-{width}.png"), full_page=True)

        page.goto(service.url + "/admin/deliveries/nope")
        fits(page, f"no such delivery at {width}")
        context.close()

    # Retry from the list, on a phone: back to the list, delivered once the cause is fixed.
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(service.url + "/admin/deliveries?status=failed")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/deliveries?status=failed")
    del standin.custom_fields["company"]
    page.get_by_role("button", name=re.compile(r"^Retry delivery ")).click()
    page.wait_for_url("**/admin/deliveries?status=failed&notice=retried-one")
    page.get_by_role("status").filter(has_text="queued again").wait_for()
    wait_until(lambda: service.delivery(failed)["status"] == "delivered")
    context.close()


def test_the_hosted_form_takes_its_texts_from_settings_and_reads_well_at_both_widths(
    browser: Any,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    service = start_service(
        make_settings(
            channel_settings={
                "FORM_RATE_LIMIT": "0",
                "FORMS": "demande,closed",
                "FORM_DEMANDE_TITLE": "Contactez-nous",
                "FORM_DEMANDE_INTRO": "Laissez vos coordonnées, nous vous rappelons.",
                "FORM_DEMANDE_BUTTON_LABEL": "Envoyer",
                "FORM_DEMANDE_SUCCESS_MESSAGE": "Merci, nous vous contactons bientôt.",
                "FORM_DEMANDE_LANGUAGE": "fr",
                "FORM_CLOSED_ENABLED": "false",
            }
        )
    )
    out = screens()
    for width, height in WIDTHS.values():
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        # The default form is unchanged.
        page.goto(f"{service.url}/form")
        assert page.title() == "Contact us"
        assert page.locator("html").get_attribute("lang") == "en"
        send = page.get_by_role("button", name="Send")
        ratio = contrast(page, "#contact-form button[type=submit]")
        assert ratio >= 4.5, f"Send: {ratio:.2f}:1, WCAG AA asks 4.5:1 for 16 px text"
        fits(page, f"form at {width}")
        page.screenshot(path=str(out / f"form-{width}.png"), full_page=True)

        # Errors clear as each field is corrected, without sending again.
        page.get_by_label("Name").fill("Zoë O'Brien")
        page.get_by_label("Email").fill("zoe@")
        page.get_by_label("Phone").fill("+1 555")
        send.click()
        page.locator("#f-phone-error").wait_for(state="visible")
        fits(page, f"form with errors at {width}")
        page.screenshot(path=str(out / f"form-errors-{width}.png"), full_page=True)
        page.get_by_label("Email").press_sequentially("example.org")
        assert page.locator("#f-email-error").inner_text() == ""
        assert page.locator("#f-email").get_attribute("aria-invalid") is None
        assert page.locator("#f-phone-error").is_visible()  # the other one is still wrong
        border = page.eval_on_selector("#f-email", "e => getComputedStyle(e).borderTopWidth")
        assert border == "1px"  # the red 2 px border is gone
        page.get_by_label("Phone").fill("+1 (415) 555-2671")
        assert page.locator("#form-status").is_hidden()  # "Please correct…" gone with the last
        send.click()
        page.locator("#form-result").wait_for(state="visible")
        reference = page.locator("#result-reference").inner_text()
        assert re.fullmatch(r"Your reference: [0-9A-F]{4}-[0-9A-F]{4}", reference), reference
        fits(page, f"thank-you at {width}")
        page.screenshot(path=str(out / f"form-sent-{width}.png"), full_page=True)
        standin.visitors.clear()

        # A form with its own texts and language.
        page.goto(f"{service.url}/form/demande")
        assert page.title() == "Contactez-nous"
        assert page.locator("html").get_attribute("lang") == "fr"
        assert page.locator("#form-intro").inner_text() == (
            "Laissez vos coordonnées, nous vous rappelons."
        )
        page.get_by_label("Name").fill("Zoë Martin")
        page.get_by_label("Email").fill(f"zoe.martin.{width}@example.fr")
        page.get_by_label("Phone").fill("+33 1 42 68 53 00")
        page.get_by_role("button", name="Envoyer").click()
        page.locator("#form-result").wait_for(state="visible")
        assert page.locator("#result-message").inner_text() == (
            "Merci, nous vous contactons bientôt."
        )
        fits(page, f"custom form at {width}")
        page.screenshot(path=str(out / f"form-custom-sent-{width}.png"), full_page=True)

        # A form turned off says so, and takes nothing.
        answer = page.goto(f"{service.url}/form/closed")
        assert answer is not None and answer.status == 404
        assert "This form is not available" in page.locator("h1").inner_text()
        fits(page, f"closed form at {width}")
        context.close()
    refused = service.client.post("/forms/closed", data={"name": "A", "email": "a@example.com"})
    assert refused.status_code == 404 and "turned off" in refused.text
