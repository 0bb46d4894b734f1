"""The admin page's "Forget this person" in real Chromium, phone and desktop sizes: from a
delivery's page to a confirmation step, then the erasure; the delivery's page shows
nothing of the person afterwards, Rocket.Chat's visitor is gone and the audit log has it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import ADMIN_TOKEN, Service
from tests.rocketchat_standin import RocketChatStandIn

pytestmark = pytest.mark.browser

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.mark.parametrize(("width", "height"), [(390, 844), (1280, 800)])
def test_forget_this_person_with_a_confirmation_step(
    browser: Any, service: Service, standin: RocketChatStandIn, width: int, height: int
) -> None:
    answer = service.post_contact(
        name="Chris Doe", email="chris@example.com", phone="+1 415 555 2671"
    )
    delivery_id = answer.json()["delivery_id"]
    service.settled(delivery_id)
    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(15_000)
    page.goto(service.url + f"/admin/deliveries/{delivery_id}")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"**/admin/deliveries/{delivery_id}")
    page.get_by_role("link", name="Forget this person…").click()
    # The confirmation step: nothing is erased until it is confirmed.
    page.get_by_role("heading", name="Forget this person?").wait_for()
    assert "1 delivery" in page.locator("main").inner_text()
    assert service.delivery(delivery_id)["fields"]["name"] == "Chris Doe"
    button = page.get_by_role("button", name="Forget this person")
    box = button.bounding_box()
    assert box is not None and box["x"] + box["width"] <= width  # reachable on a phone
    page.screenshot(path=f"/tmp/admin-forget-{width}.png", full_page=True)
    button.click()
    page.get_by_role("heading", name="Person forgotten").wait_for()
    text = page.locator("main").inner_text()
    assert "Erased 1 deliveries" in text and "Rocket.Chat visitor: erased" in text
    assert "Chris" not in text
    assert service.delivery(delivery_id)["fields"] == {}
    assert "Chris Doe" not in json.dumps(list(standin.visitors.values()))
    entry = service.client.get("/audit", headers=ADMIN).json()["entries"][0]
    assert (entry["action"], entry["actor"], entry["rows"]) == ("forget", "admin page", 1)
    page.close()
