"""``GET /metrics``: off without METRICS_TOKEN, bearer-protected, and counting what matters.

Per channel: accepted, duplicate, rejected (field errors), delivered and failed contacts;
attempt outcomes (delivered, retry, rejected, paused); Rocket.Chat latency; queue depth
per status, per channel and the age of the oldest waiting contact from the database.
The last test runs two web processes: counters are per process, the database-backed
gauges the same everywhere (docs/heroku.md says what that means when scaled out).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapter.settings import Settings
from tests.conftest import API_TOKEN, BOT, Service, wait_until
from tests.dynos import Formation, base_env
from tests.rocketchat_standin import RocketChatStandIn, StandInServer

METRICS_TOKEN = "test-metrics-token-0123456789"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base_url: str, token: str = METRICS_TOKEN) -> Samples:
    response = httpx.get(
        base_url + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_are_off_without_a_token_and_bearer_protected_with_one(
    make_settings: Callable[..., Settings], start_service: Callable[[Settings], Service]
) -> None:
    off = start_service(make_settings())
    assert off.client.get("/metrics").status_code == 404
    assert "METRICS_TOKEN" in off.client.get("/metrics").json()["error"]
    on = start_service(make_settings(metrics_token=METRICS_TOKEN))
    assert on.client.get("/metrics").status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert on.client.get("/metrics", headers=wrong).status_code == 401
    assert scrape(on.url)  # the right token


def test_metrics_count_outcomes_per_channel_attempts_latency_and_queue(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    service = start_service(make_settings(metrics_token=METRICS_TOKEN))
    before = scrape(service.url)  # counters are process-wide: compare with a baseline

    def delta(samples: Samples, name: str, **labels: str) -> float:
        return value(samples, name, **labels) - value(before, name, **labels)

    ok = service.post_contact(name="Chris Doe", email="chris@example.com", phone="+14155552671")
    assert ok.status_code == 201, ok.text
    again = dict(name="Chris Doe", email="chris@example.com", phone="+14155552671", event_id="e1")
    assert service.post_contact(**again).status_code == 201
    assert service.post_contact(**again).json()["duplicate"] is True
    assert service.post_contact(name="", email="nope@", phone="+1 555").status_code == 422

    standin.fail_next(1, 503)  # retried, then delivered
    retried = service.post_contact(name="Ann Lee", email="ann@example.com", phone="+14155550100")
    assert retried.status_code == 202
    wait_until(lambda: service.delivery(retried.json()["delivery_id"])["status"] == "delivered")

    standin.fail_next(1, 400)  # Rocket.Chat refuses the contact: failed, never retried
    refused = service.post_contact(name="Bo Ng", email="bo@example.com", phone="+14155550101")
    assert service.delivery(refused.json()["delivery_id"])["status"] == "failed"

    samples = scrape(service.url)
    contacts = "contact_adapter_contacts_total"
    assert delta(samples, contacts, channel="api", outcome="accepted") == 4
    assert delta(samples, contacts, channel="api", outcome="duplicate") == 1
    assert delta(samples, contacts, channel="api", outcome="rejected") == 1
    assert delta(samples, contacts, channel="api", outcome="delivered") == 3
    assert delta(samples, contacts, channel="api", outcome="failed") == 1
    attempts = "contact_adapter_delivery_attempts_total"
    assert delta(samples, attempts, outcome="delivered") == 3
    assert delta(samples, attempts, outcome="retry") == 1
    assert delta(samples, attempts, outcome="rejected") == 1
    assert delta(samples, "contact_adapter_rocketchat_seconds_count") >= 5
    assert value(samples, "contact_adapter_rocketchat_seconds_bucket", le="+Inf") >= 5
    # From the database: this service's own SQLite file.
    assert value(samples, "contact_adapter_queue_depth", status="delivered") == 3
    assert value(samples, "contact_adapter_queue_depth", status="failed") == 1
    assert value(samples, "contact_adapter_queue_depth", status="pending") == 0
    assert value(samples, "contact_adapter_deliveries", channel="api", status="delivered") == 3
    assert value(samples, "contact_adapter_oldest_pending_seconds") == 0
    assert value(samples, "contact_adapter_delivery_paused") == 0
    # The last 5 minutes' tries, from the attempts every delivery keeps (its own database).
    recent = "contact_adapter_recent_attempts"
    assert value(samples, recent, outcome="delivered") == 3
    assert value(samples, recent, outcome="retry") == 1
    assert value(samples, recent, outcome="rejected") == 1
    assert value(samples, recent, outcome="gave_up") == 0  # listed, so alerts can use it
    seconds = "contact_adapter_recent_attempt_seconds"
    longest = value(samples, seconds, outcome="delivered", stat="max")
    assert 0 < value(samples, seconds, outcome="delivered", stat="mean") <= longest < 10


def test_paused_delivery_and_waiting_contacts_show(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    service = start_service(make_settings(metrics_token=METRICS_TOKEN, auth_check_interval=60))
    before = scrape(service.url)
    standin.set_credentials_valid(BOT["user_id"], False)
    waiting = service.post_contact(name="Cy Twombly", email="cy@example.com", phone="+14155550102")
    assert waiting.status_code == 202
    samples = scrape(service.url)
    paused = "contact_adapter_delivery_attempts_total"
    assert value(samples, paused, outcome="paused") - value(before, paused, outcome="paused") == 1
    assert value(samples, "contact_adapter_delivery_paused") == 1
    assert value(samples, "contact_adapter_queue_depth", status="pending") == 1
    assert value(samples, "contact_adapter_oldest_pending_seconds") > 0


@pytest.fixture
def two_webs(tmp_path: Path) -> Iterator[tuple[str, str]]:
    standin = RocketChatStandIn()
    server = StandInServer(standin.app).start()
    env = base_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'shared.db'}",
        ROCKETCHAT_URL=server.url,
        ROCKETCHAT_USER_ID=BOT["user_id"],
        ROCKETCHAT_AUTH_TOKEN=BOT["token"],
        ROCKETCHAT_CONTACT_API="visitor",
        API_TOKEN=API_TOKEN,
        METRICS_TOKEN=METRICS_TOKEN,
    )
    formation = Formation(env, tmp_path)
    webs = [formation.start("web"), formation.start("web")]
    try:
        for web in webs:
            web.wait_ready()
        yield webs[0].url, webs[1].url
    finally:
        formation.stop_all()
        server.stop()


def test_counters_are_per_process_and_queue_gauges_global(two_webs: tuple[str, str]) -> None:
    first, second = two_webs
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    for i in range(3):
        body = {"name": f"Dee Number{i}", "email": f"dee{i}@example.com"}
        body["phone"] = f"+1415555{i:04d}"
        assert httpx.post(first + "/contacts", json=body, headers=auth).status_code == 201
    a, b = scrape(first), scrape(second)
    contacts = "contact_adapter_contacts_total"
    assert value(a, contacts, channel="api", outcome="accepted") == 3
    assert value(b, contacts, channel="api", outcome="accepted") == 0  # its own counters
    for samples in (a, b):  # the database says the same to everyone
        assert value(samples, "contact_adapter_recent_attempts", outcome="delivered") == 3
        assert value(samples, "contact_adapter_queue_depth", status="delivered") == 3
        assert value(samples, "contact_adapter_deliveries", channel="api", status="delivered") == 3
