"""Durable delivery (issue #4) through the real service, the stand-in and a real database.

Every test that takes ``db_url`` runs on SQLite and on a real PostgreSQL server (skipped
with the reason when PostgreSQL cannot be started here).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapter.settings import Settings
from tests.conftest import (
    ADMIN_TOKEN,
    AGENT,
    BOT,
    DEPLOYMENT_SECRET,
    Service,
    wait_until,
    wait_until_async,
)
from tests.delivery_support import (
    BIN,
    CONTACT_POST,
    EchoingRejection,
    Tracker,
    guest,
    post_many,
    seed,
    serve,
    service_env,
    token_of,
)
from tests.rocketchat_standin import RocketChatStandIn, StandInServer

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'deliveries.db'}"


@pytest.fixture
def tracker(standin: RocketChatStandIn) -> Tracker:
    return Tracker(standin.app)


@pytest.fixture
def rocketchat(tracker: Tracker) -> Iterator[StandInServer]:
    """The conftest stand-in, behind a recorder (times, ports, concurrency)."""
    with StandInServer(tracker) as server:
        yield server


def delivered(service: Service, ids: list[str]) -> bool:
    return all(service.delivery(i)["status"] == "delivered" for i in ids)


def listing(service: Service, **params: Any) -> dict[str, Any]:
    response = service.client.get("/deliveries", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    return dict(response.json())


# --------------------------------------------------------------------------- outage


def test_outage_accepts_everything_then_delivers_each_exactly_once(
    db_url: str,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
    tracker: Tracker,
) -> None:
    service = start_service(make_settings(database_url=db_url))
    standin.down = True
    answers = post_many(service.url, [guest(i) for i in range(200)])
    assert [getattr(a, "status_code", a) for a in answers] == [202] * 200
    ids = [a.json()["delivery_id"] for a in answers if isinstance(a, httpx.Response)]
    assert len(set(ids)) == 200
    assert standin.contact_posts_per_token() == {}  # nothing delivered
    # An outage costs a probe per backoff step, not a call per contact.
    assert len(tracker.contact_posts()) < 60, len(tracker.contact_posts())
    counts = listing(service)["counts"]
    assert counts == {"pending": 200} or set(counts) <= {"pending", "delivering"}

    standin.down = False
    wait_until(
        lambda: listing(service, status="delivered", limit=1)["counts"].get("delivered") == 200,
        timeout=30,
        interval=0.2,
    )
    per_token = standin.contact_posts_per_token()
    assert per_token == {token_of(i): 1 for i in range(200)}
    assert listing(service)["counts"] == {"delivered": 200}
    assert listing(service, status="failed")["deliveries"] == []


# --------------------------------------------------------------------------- merge, dedupe


def test_same_person_while_waiting_is_one_delivery_and_same_event_is_accepted_once(
    db_url: str,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    # The first try's retry is 3 s away, so the second post finds the row waiting, not
    # leased to a retry in flight (then it would be a delivery of its own, folded later).
    settings = make_settings(
        database_url=db_url,
        contact_required_fields="name,email",
        retry_first_delay=3.0,
        retry_max_delay=3.0,
    )
    service = start_service(settings)
    standin.down = True
    first = service.post_contact(name="Chris Doe", email="chris@example.com")
    second = service.post_contact(
        name="Chris D. Doe",
        email="Chris@Example.com",
        phone="+1 415 555 2671",
        custom_fields={"plan": "pro"},
    )
    assert first.status_code == second.status_code == 202
    assert second.json()["delivery_id"] == first.json()["delivery_id"]  # merged

    lead = service.post_contact(**guest(7), event_id="lead-7")
    again = service.post_contact(**guest(7), event_id="lead-7")
    assert lead.status_code == 202
    assert again.status_code == 202
    assert again.json() == {**lead.json(), "duplicate": True}

    standin.down = False
    chris = first.json()["delivery_id"]
    wait_until(lambda: delivered(service, [chris, lead.json()["delivery_id"]]), timeout=20)
    per_token = standin.contact_posts_per_token()
    assert sorted(per_token.values()) == [1, 1]
    record = service.delivery(chris)
    assert record["fields"]["name"] == "Chris D. Doe"
    assert record["fields"]["email"] == "Chris@example.com"
    assert record["fields"]["phone"] == "+14155552671"
    visitor = standin.visitors[record["contact_id"]]
    assert visitor["name"] == "Chris D. Doe"
    assert visitor["phone"] == [{"phoneNumber": "+14155552671"}]
    # After delivery the same event still gets the first answer, now final.
    late = service.post_contact(**guest(7), event_id="lead-7")
    assert late.status_code == 200
    assert late.json()["duplicate"] is True
    assert late.json()["status"] == "delivered"
    assert sum(standin.contact_posts_per_token().values()) == 2


# --------------------------------------------------------------------------- fast path


def test_fast_path_answers_201_under_concurrent_load(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    """The worker must not snatch the row a request is about to try itself."""
    service = start_service(make_settings())
    answers = post_many(service.url, [guest(i) for i in range(60)], threads=8)
    codes = [getattr(a, "status_code", a) for a in answers]
    assert codes == [201] * 60, codes
    assert all(isinstance(a, httpx.Response) and a.json()["contact_id"] for a in answers)
    assert set(standin.contact_posts_per_token().values()) == {1}


# --------------------------------------------------------------------------- Rocket.Chat answers


def test_429_moves_every_due_delivery_to_the_reset_without_spending_attempts(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    standin = RocketChatStandIn(rate_limit=5, window_ms=4000)
    with serve(standin.app) as (server, tracker):
        settings = make_settings(
            rocketchat_url=server.url,
            rocketchat_user_id=AGENT["user_id"],
            rocketchat_auth_token=AGENT["token"],
        )
        ids = seed(settings.database_url, range(5))  # all five due before the first call
        # Someone else behind our IP uses up a fresh window.
        standin.reset_rate_limits()
        with httpx.Client(
            base_url=server.url,
            headers={"X-User-Id": AGENT["user_id"], "X-Auth-Token": AGENT["token"]},
        ) as other:
            for i in range(5):
                answer = other.post(CONTACT_POST, json={"token": f"t{i}", "name": "Other"})
                assert answer.status_code == 200
        service = start_service(settings)
        first = wait_until(lambda: tracker.contact_posts(), timeout=10)[0]
        assert first.status == 429
        reset = int(first.reset or 0) / 1000
        assert reset > time.time()  # still inside the window
        # Every row was due before the 429: none spent an attempt on it or calls before the
        # reset (those already claimed wait in the shared pacer, the others are postponed).
        assert all(service.delivery(i)["attempts"] == 0 for i in ids)
        wait_until(lambda: delivered(service, ids), timeout=20)
        assert all(service.delivery(i)["attempts"] == 1 for i in ids)  # the 429 spent none
        histories = sorted([a["outcome"] for a in history_of(service, i)] for i in ids)
        assert histories == [["delivered"]] * 4 + [["delivered", "rate_limited"]]
        ours = tracker.contact_posts()
        assert [s.status for s in ours].count(429) == 1, [s.status for s in ours]
        assert [s.status for s in ours].count(200) == 5
        assert all(s.started >= reset for s in ours[1:])  # nothing before the window reopened


def test_burst_of_100_under_the_limit_takes_about_ten_windows_and_at_most_one_429(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    standin = RocketChatStandIn(rate_limit=10, window_ms=1000)
    with serve(standin.app) as (server, tracker):
        service = start_service(
            make_settings(
                rocketchat_url=server.url,
                rocketchat_user_id=AGENT["user_id"],
                rocketchat_auth_token=AGENT["token"],
                fast_path_budget=0,  # the whole burst is queued at once
            )
        )
        answers = post_many(service.url, [guest(i) for i in range(100)], threads=8)
        assert all(getattr(a, "status_code", 0) == 202 for a in answers)
        wait_until(lambda: len(standin.contact_posts_per_token()) == 100, timeout=30)
        ours = tracker.contact_posts()
        codes = [s.status for s in ours]
        assert codes.count(429) <= 1, [(s.status, s.reset, round(s.started, 3)) for s in ours]
        assert codes.count(200) == 100
        # The stand-in's X-RateLimit-Reset wobbles by a millisecond or two within a window.
        resets = sorted(int(s.reset or 0) for s in ours if s.status == 200)
        windows = [[resets[0]]]
        for reset in resets[1:]:
            if reset - windows[-1][-1] > 200:
                windows.append([])
            windows[-1].append(reset)
        assert len(windows) <= 11, [len(w) for w in windows]
        span = ours[-1].started - ours[0].started
        assert span < 11 * 1.0 + 1, span  # ~ten windows, not a storm of retries


def test_400_fails_at_once_with_rocketchats_message(
    db_url: str,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
    tracker: Tracker,
) -> None:
    standin.add_custom_field("company", label="Company", required=True)
    service = start_service(make_settings(database_url=db_url, fast_path_budget=0))
    response = service.post_contact(**guest(1))
    assert response.status_code == 202
    delivery_id = response.json()["delivery_id"]
    record = wait_until(
        lambda: (r := service.delivery(delivery_id))["status"] == "failed" and r, timeout=10
    )
    assert record["attempts"] == 1
    assert record["last_error"].startswith("Rocket.Chat rejected the contact: ")
    assert "Invalid value for Company field" in record["last_error"]
    # A negative check: a retry (0.2-1 s backoff here) would have shown up by now.
    time.sleep(0.5)  # noqa: sleep-ok - no retry may come in this window
    assert len(tracker.contact_posts()) == 1  # never retried


def test_401_pauses_everything_without_spending_attempts_then_resumes(
    db_url: str,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
    tracker: Tracker,
) -> None:
    service = start_service(make_settings(database_url=db_url))
    standin.set_credentials_valid(BOT["user_id"], False)
    ids = [service.post_contact(**guest(i)).json()["delivery_id"] for i in range(5)]
    ready = wait_until(lambda: (r := service.client.get("/readyz")).status_code == 503 and r)
    assert "ROCKETCHAT_USER_ID / ROCKETCHAT_AUTH_TOKEN" in ready.json()["reason"]

    def me_checks() -> int:
        return sum(1 for s in tracker.seen if s.path == "/api/v1/me" and s.method == "GET")

    before = me_checks()
    # The credentials are re-checked periodically (auth_check_interval=0.3)…
    wait_until(lambda: me_checks() >= before + 3, timeout=10)
    # …while the deliveries wait without spending attempts.
    assert all(service.delivery(i)["attempts"] == 0 for i in ids)
    assert all(service.delivery(i)["status"] == "pending" for i in ids)
    # Only the first registration found out (at its lookup); the rest wait.
    assert len(tracker.registration_calls()) == 1 and not tracker.contact_posts()
    standin.set_credentials_valid(BOT["user_id"], True)
    wait_until(lambda: delivered(service, ids), timeout=15)
    assert all(service.delivery(i)["attempts"] == 1 for i in ids)
    assert service.client.get("/readyz").status_code == 200


def test_web_process_without_a_worker_resumes_once_the_credentials_work_again(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    """The Procfile setup (INPROCESS_WORKER=false): a 401 on the web process's own try
    pauses it; nothing else there re-checks, so the fast path must find out itself."""
    service = start_service(make_settings(inprocess_worker=False))
    standin.set_credentials_valid(BOT["user_id"], False)
    assert service.post_contact(**guest(0)).status_code == 202
    ready = wait_until(lambda: (r := service.client.get("/readyz")).status_code == 503 and r)
    assert "delivery paused" in ready.json()["reason"]
    assert service.post_contact(**guest(1)).status_code == 202  # still paused
    standin.set_credentials_valid(BOT["user_id"], True)
    counter = itertools.count(2)

    def answered_201() -> bool:
        return service.post_contact(**guest(next(counter))).status_code == 201

    wait_until(answered_201, timeout=10, interval=0.1)  # no restart
    assert service.client.get("/readyz").status_code == 200


def test_a_403_pause_ends_once_the_permission_is_granted(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    service = start_service(make_settings())
    granted = set(standin.permissions["view-l-room"])
    standin.set_permission("view-l-room", [])
    response = service.post_contact(**guest(1))
    assert response.status_code == 202
    delivery_id = response.json()["delivery_id"]
    ready = wait_until(lambda: (r := service.client.get("/readyz")).status_code == 503 and r)
    assert "view-l-room" in ready.json()["reason"]
    assert service.delivery(delivery_id)["status"] in ("pending", "delivering")
    standin.set_permission("view-l-room", granted)
    record = wait_until(
        lambda: (r := service.delivery(delivery_id))["status"] == "delivered" and r, timeout=15
    )
    assert record["attempts"] == 1  # the 403s spent none
    wait_until(lambda: service.client.get("/readyz").status_code == 200)


def test_public_view_of_a_failed_delivery_masks_what_rocketchat_quoted(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    with StandInServer(EchoingRejection(standin.app)) as server:
        service = start_service(make_settings(rocketchat_url=server.url))
        response = service.post_contact(**guest(1))
        delivery_id = response.json()["delivery_id"]
        full = wait_until(
            lambda: (r := service.delivery(delivery_id))["status"] == "failed" and r, timeout=10
        )
        assert "guest1@example.com" in full["last_error"]  # operators see Rocket.Chat's words
        public = service.client.get(f"/deliveries/{delivery_id}")
        assert public.status_code == 200
        assert public.json()["status"] == "failed"
        assert public.json()["last_error"].startswith("Rocket.Chat rejected the contact: ")
        assert "guest1@example.com" not in public.text
        assert "4155552671" not in public.text
        listed = service.client.get("/deliveries", headers=ADMIN).text
        assert "guest1@example.com" not in listed


def test_same_person_by_phone_then_with_email_stays_one_visitor(
    db_url: str,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    service = start_service(
        make_settings(database_url=db_url, contact_required_fields="name,phone")
    )
    first = service.post_contact(name="Chris Doe", phone="+1 415 555 2671")
    assert first.status_code == 201, first.text
    second = service.post_contact(name="Chris Doe", email="chris@example.com", phone="+14155552671")
    assert second.status_code == 201, second.text
    assert second.json()["contact_id"] == first.json()["contact_id"]
    # An invalid email dropped by a lenient channel: still the same person (by phone).
    third = service.post_contact(name="Chris D. Doe", phone="+14155552671")
    assert third.status_code == 201, third.text
    assert len(standin.visitors) == 1, standin.visitors
    visitor = next(iter(standin.visitors.values()))
    assert visitor["visitorEmails"] == [{"address": "chris@example.com"}]
    assert visitor["phone"] == [{"phoneNumber": "+14155552671"}]
    assert visitor["name"] == "Chris D. Doe"
    # Someone else with another email on that phone is not folded into Chris.
    other = service.post_contact(name="Ana", email="ana@example.com", phone="+14155552671")
    assert other.status_code == 201, other.text
    assert len(standin.visitors) == 2


def test_backoff_is_never_earlier_than_the_stated_delay_nor_later_than_the_cap() -> None:
    import random

    from adapter.core.policy import backoff_delay

    rng = random.Random(7)
    for attempts, stated in [(1, 2.0), (2, 4.0), (3, 8.0), (8, 256.0)]:
        delays = [backoff_delay(attempts, first=2.0, cap=600.0, rng=rng) for _ in range(500)]
        assert min(delays) >= stated  # RETRY_FIRST_DELAY is the first retry's delay
        assert max(delays) <= stated * 1.5
        assert max(delays) - min(delays) > stated * 0.3  # jittered: retries spread out
    near_cap = [backoff_delay(9, first=2.0, cap=600.0, rng=rng) for _ in range(100)]
    assert min(near_cap) >= 512.0 and max(near_cap) == 600.0  # jitter stops at the cap
    capped = [backoff_delay(12, first=2.0, cap=600.0, rng=rng) for _ in range(100)]
    assert set(capped) == {600.0}


def test_5xx_is_retried_with_growing_backoff(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
    tracker: Tracker,
) -> None:
    service = start_service(make_settings(fast_path_budget=0))
    standin.fail_next(3, 503)
    delivery_id = service.post_contact(**guest(1)).json()["delivery_id"]
    record = wait_until(
        lambda: (r := service.delivery(delivery_id))["status"] == "delivered" and r, timeout=15
    )
    assert record["attempts"] == 4
    # Each attempt starts with the lookup of what Rocket.Chat holds, then registers.
    attempts = [s for s in tracker.registration_calls() if s.method == "GET"]
    starts = [s.started for s in attempts]
    assert [s.status for s in attempts] == [503, 503, 503, 200]
    assert [s.status for s in tracker.contact_posts()] == [200]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # retry_first_delay=0.2, never earlier than the stated delay: ≥ 0.2, ≥ 0.4, ≥ 0.8 seconds
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4 and gaps[2] >= 0.8, gaps
    assert gaps[2] > gaps[0]
    # The operator sees each try, newest first: three 503s, then the delivery.
    history = history_of(service, delivery_id)
    assert [a["outcome"] for a in history] == ["delivered", "retry", "retry", "retry"]
    assert all("503" in a["error"] for a in history[1:]) and history[0]["error"] is None
    assert history[0]["contact_id"] == record["contact_id"]
    for attempt, seen in zip(reversed(history), attempts, strict=True):
        assert abs(attempt["started_at"] - seen.started) < 0.5
    assert all(a["duration"] >= 0 and a["worker"] == history[0]["worker"] for a in history)


def test_give_up_marks_failed_keeps_the_row_and_retry_brings_it_back(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'contacts.db'}"
    service = start_service(make_settings(retry_give_up_after=1.0))
    standin.down = True
    ids = [service.post_contact(**guest(i)).json()["delivery_id"] for i in range(3)]
    for delivery_id in ids:
        record = wait_until(
            lambda d=delivery_id: (r := service.delivery(d))["status"] == "failed" and r,
            timeout=15,
        )
        assert record["last_error"].startswith("gave up after 1 s and ")
        assert "503" in record["last_error"]
    assert listing(service, status="failed")["counts"] == {"failed": 3}
    standin.down = False

    # One through the admin endpoint…
    retried = service.client.post(f"/deliveries/{ids[0]}/retry", headers=ADMIN)
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "pending"
    wait_until(lambda: delivered(service, ids[:1]), timeout=10)
    again = service.client.post(f"/deliveries/{ids[0]}/retry", headers=ADMIN)
    assert again.status_code == 409
    assert service.client.post("/deliveries/nope/retry", headers=ADMIN).status_code == 404
    # …one through the CLI, the rest with retry-failed.
    env = service_env("http://127.0.0.1:9", database_url)
    cli = [str(BIN / "contact-adapter"), "deliveries"]
    shown = subprocess.run(
        [*cli, "list", "--status", "failed"], env=env, capture_output=True, text=True, timeout=60
    )
    assert ids[1] in shown.stdout and ids[2] in shown.stdout, shown
    done = subprocess.run(
        [*cli, "retry", ids[1]], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert f"{ids[1]} queued again" in done.stdout
    wait_until(lambda: delivered(service, ids[:2]), timeout=10)
    answer = service.client.post("/deliveries/retry-failed", headers=ADMIN)
    assert answer.json() == {"retried": 1}
    wait_until(lambda: delivered(service, ids), timeout=10)
    created = service.delivery(ids[0])["created_at"]
    assert created < service.delivery(ids[0])["delivered_at"] - 1.0  # created_at is kept
    assert set(standin.contact_posts_per_token().values()) == {1}


def history_of(service: Service, delivery_id: str) -> list[dict[str, Any]]:
    """The delivery's attempts, newest first, as an operator sees them (admin token)."""
    answer = service.client.get(f"/deliveries/{delivery_id}", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    history: list[dict[str, Any]] = answer.json()["history"]
    return history


def test_admin_endpoints_need_the_admin_token(
    make_settings: Callable[..., Settings], start_service: Callable[[Settings], Service]
) -> None:
    service = start_service(make_settings())
    delivery_id = service.post_contact(**guest(1)).json()["delivery_id"]
    for method, path in [
        ("GET", "/deliveries"),
        ("POST", "/deliveries/retry-failed"),
        ("POST", f"/deliveries/{delivery_id}/retry"),
    ]:
        assert service.client.request(method, path).status_code == 401
        wrong = {"Authorization": "Bearer wrong"}
        assert service.client.request(method, path, headers=wrong).status_code == 401
    page = listing(service, status="delivered")
    assert [d["id"] for d in page["deliveries"]] == [delivery_id]
    assert "fields" not in page["deliveries"][0]  # listings carry no personal data
    assert service.client.get("/deliveries?status=bogus", headers=ADMIN).status_code == 400
    assert service.client.get("/deliveries?limit=0", headers=ADMIN).status_code == 400

    off = start_service(make_settings(admin_token=None))
    assert off.client.get("/deliveries", headers=ADMIN).status_code == 404
    assert "ADMIN_TOKEN" in off.client.get("/deliveries").json()["error"]
    public = off.client.get(f"/deliveries/{delivery_id}")
    assert public.status_code == 200 and "fields" not in public.json()


# --------------------------------------------------------------------------- concurrency


def test_sustained_burst_never_exceeds_the_connection_limit(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
    tracker: Tracker,
) -> None:
    standin.latency = 0.03
    service = start_service(make_settings(rocketchat_concurrency=4))
    answers = post_many(service.url, [guest(i) for i in range(150)], threads=24)
    assert all(getattr(a, "status_code", 0) in (201, 202) for a in answers)
    wait_until(lambda: len(standin.contact_posts_per_token()) == 150, timeout=30)
    assert tracker.max_concurrent <= 4, tracker.max_concurrent
    assert len(tracker.ports()) <= 4, tracker.ports()  # one keep-alive pool
    assert set(standin.contact_posts_per_token().values()) == {1}


# --------------------------------------------------------------------------- workers, in process


def _queue_and_worker(database_url: str, rocketchat_url: str, **overrides: Any) -> Any:
    from adapter.delivery.queue import DeliveryQueue
    from adapter.delivery.worker import DeliveryWorker
    from adapter.ledger.schema import create_engine
    from adapter.rocketchat.client import RocketChatClient
    from adapter.settings import load_settings

    settings = load_settings(
        database_url=database_url,
        rocketchat_url=rocketchat_url,
        rocketchat_user_id=BOT["user_id"],
        rocketchat_auth_token=BOT["token"],
        rocketchat_contact_api="visitor",
        deployment_secret=DEPLOYMENT_SECRET,
        retry_first_delay=0.2,
        retry_max_delay=1.0,
        worker_poll_interval=0.05,
        **overrides,
    )
    engine = create_engine(database_url, sqlite_synchronous="NORMAL")
    queue = DeliveryQueue(engine, RocketChatClient.from_settings(settings), settings)
    return queue, DeliveryWorker(queue)


async def _close(*queues: Any) -> None:
    for queue in queues:
        await queue.client.aclose()
        await queue.engine.dispose()


def test_two_workers_on_one_database_never_deliver_a_row_twice(
    db_url: str, standin: RocketChatStandIn, rocketchat: StandInServer
) -> None:
    from adapter.core.records import Submission
    from adapter.ledger.schema import migrate

    standin.latency = 0.01

    async def main() -> tuple[int, int]:
        (qa, wa), (qb, wb) = (
            _queue_and_worker(db_url, rocketchat.url),
            _queue_and_worker(db_url, rocketchat.url),
        )
        await migrate(qa.engine)
        for i in range(200):
            await qa.submit(Submission(source="api", fields=guest(i)), wait=0)
        done = {"a": 0, "b": 0}

        def counting(queue: Any, name: str) -> None:
            deliver = queue.deliver

            async def wrapped(record: Any, waiter: Any = None, **options: Any) -> None:
                await deliver(record, waiter, **options)
                done[name] += 1

            queue.deliver = wrapped

        counting(qa, "a")
        counting(qb, "b")
        tasks = [asyncio.create_task(wa.run()), asyncio.create_task(wb.run())]
        await wait_until_async(lambda: len(standin.contact_posts_per_token()) >= 200, 30)
        wa.stop()
        wb.stop()
        await asyncio.gather(*tasks)
        counts = await qa.counts()
        await _close(qa, qb)
        assert counts == {"api": {"delivered": 200}}
        return done["a"], done["b"]

    a, b = asyncio.run(main())
    assert standin.contact_posts_per_token() == {token_of(i): 1 for i in range(200)}
    assert a + b == 200 and a > 0 and b > 0, (a, b)


def test_a_dead_workers_rows_are_taken_over_after_the_lease_expires(
    db_url: str, standin: RocketChatStandIn, rocketchat: StandInServer, tracker: Tracker
) -> None:
    from adapter.core.records import Submission
    from adapter.ledger.schema import migrate

    async def main() -> None:
        (qa, wa), (qb, wb) = (
            _queue_and_worker(db_url, rocketchat.url, delivery_lease=1.0),
            _queue_and_worker(db_url, rocketchat.url, delivery_lease=1.0),
        )
        await migrate(qa.engine)
        ids = []
        for i in range(6):
            outcome = await qa.submit(Submission(source="api", fields=guest(i)), wait=0)
            ids.append(outcome.delivery_id)
        claimed = await wa.claim(4)  # …and worker A dies before calling Rocket.Chat
        died = time.time()
        assert len(claimed) == 4
        task = asyncio.create_task(wb.run())
        await wait_until_async(lambda: len(standin.contact_posts_per_token()) >= 6, 20)
        wb.stop()
        await task
        assert (await qb.counts()) == {"api": {"delivered": 6}}
        claimed_tokens = {r.token for r in claimed}
        for seen in tracker.contact_posts():
            if seen.token in claimed_tokens:
                assert seen.started >= died + 1.0 - 0.05  # only once A's lease ran out
        records = [await qb.get(i) for i in ids]
        assert all(r is not None and r.attempts == 1 for r in records)
        # The history says what happened to A's rows: taken over, then delivered by B.
        for delivery_id in ids:
            history = await qb.history(delivery_id)
            if delivery_id in {r.id for r in claimed}:
                assert [a.outcome for a in history] == ["delivered", "abandoned"]
                assert history[1].worker == qa.owner and history[0].worker == qb.owner
            else:
                assert [a.outcome for a in history] == ["delivered"]
        await _close(qa, qb)

    asyncio.run(main())
    assert set(standin.contact_posts_per_token().values()) == {1}


# --------------------------------------------------------------------------- several event ids


WEBHOOK = "webhook:batching"  # a provider that combines one person's events in one submission


async def _events_of(queue: Any) -> dict[str, str]:
    """``{event id: delivery id}`` as recorded for WEBHOOK."""
    from sqlalchemy import select

    from adapter.ledger.schema import delivery_events

    async with queue.engine.connect() as conn:
        query = select(delivery_events.c.event_id, delivery_events.c.delivery_id).where(
            delivery_events.c.source == WEBHOOK
        )
        return {event: delivery for event, delivery in (await conn.execute(query)).all()}


def test_a_submission_of_several_event_ids_is_a_duplicate_only_when_all_were_seen(
    db_url: str, rocketchat: StandInServer
) -> None:
    from adapter.core.records import Submission
    from adapter.ledger.schema import migrate

    def batch(i: int, first: str | None, *others: str) -> Submission:
        return Submission(
            source=WEBHOOK, fields=guest(i), event_id=first, also_event_ids=tuple(others)
        )

    async def main() -> None:
        queue, _ = _queue_and_worker(db_url, rocketchat.url)
        await migrate(queue.engine)
        # None seen: one delivery, every id recorded for it.
        one = await queue.submit(batch(1, "e1", "e2", "e3"), wait=0)
        assert one.status == "pending" and not one.duplicate
        assert await _events_of(queue) == dict.fromkeys(("e1", "e2", "e3"), one.delivery_id)
        record = await queue.get(str(one.delivery_id))
        assert record is not None and record.event_id == "e1"
        # All seen, in any order or combination, or alone: the duplicate of that delivery.
        for again in (batch(1, "e3", "e1"), batch(9, "e2", "e3", "e1"), batch(9, "e2")):
            outcome = await queue.submit(again, wait=0)
            assert outcome.duplicate and outcome.delivery_id == one.delivery_id
            assert outcome.contact is not None and outcome.contact.name == "Guest 1"
        # Some seen: the seen ones are dropped, the rest goes on (the first unseen id is the
        # delivery's event id) and is recorded for the new delivery.
        two = await queue.submit(batch(2, "e2", "e4", "e1", "e5"), wait=0)
        assert two.status == "pending" and not two.duplicate
        assert two.delivery_id not in (None, one.delivery_id)
        record = await queue.get(str(two.delivery_id))
        assert record is not None and record.event_id == "e4"
        assert record.fields["name"] == "Guest 2"
        assert await _events_of(queue) == {
            **dict.fromkeys(("e1", "e2", "e3"), one.delivery_id),
            **dict.fromkeys(("e4", "e5"), two.delivery_id),
        }
        # An id given twice, an empty one, or extras without a first id: each id once.
        three = await queue.submit(batch(3, "e6", "e6", "", "e7"), wait=0)
        four = await queue.submit(batch(4, None, "e8", "e9"), wait=0)
        events = await _events_of(queue)
        assert [events.pop(e) for e in ("e6", "e7", "e8", "e9")] == [
            three.delivery_id,
            three.delivery_id,
            four.delivery_id,
            four.delivery_id,
        ]
        assert len(events) == 5  # e1..e5, unchanged
        record = await queue.get(str(four.delivery_id))
        assert record is not None and record.event_id == "e8"
        assert (await queue.counts())[WEBHOOK] == {"pending": 4}  # no row per extra id
        await _close(queue)

    asyncio.run(main())


def test_an_event_id_recorded_by_a_concurrent_accept_is_dropped_from_the_others(
    db_url: str, rocketchat: StandInServer
) -> None:
    """Between the look for seen ids and the write, another accept records one (or all) of
    them: the write fails on the unique event id, the look is made again and the submission
    goes on without it (or is that accept's duplicate)."""
    from adapter.core.records import Outcome, Submission
    from adapter.ledger.schema import migrate

    async def main() -> None:
        queue, _ = _queue_and_worker(db_url, rocketchat.url)
        await migrate(queue.engine)
        accept = queue._accept
        rivals: list[Submission] = []
        rival_outcomes: list[Outcome] = []

        async def rival_first(submission: Submission, raw: Any, **options: Any) -> Outcome:
            if rivals:  # once, before the first write of the submission under test
                rival_outcomes.append(await queue.submit(rivals.pop(), wait=0))
            return await accept(submission, raw, **options)

        queue._accept = rival_first
        # Another accept records "r2" first: ours keeps "r1" and "r3".
        rivals.append(Submission(source=WEBHOOK, fields=guest(2), event_id="r2"))
        ours = await queue.submit(
            Submission(source=WEBHOOK, fields=guest(1), event_id="r1", also_event_ids=("r2", "r3")),
            wait=0,
        )
        (rival,) = rival_outcomes
        assert ours.status == "pending" and not ours.duplicate
        assert ours.delivery_id not in (None, rival.delivery_id)
        assert await _events_of(queue) == {
            "r1": ours.delivery_id,
            "r2": rival.delivery_id,
            "r3": ours.delivery_id,
        }
        # Another accept records all of them first: ours is its duplicate.
        rivals.append(
            Submission(source=WEBHOOK, fields=guest(3), event_id="r5", also_event_ids=("r4",))
        )
        late = await queue.submit(
            Submission(source=WEBHOOK, fields=guest(4), event_id="r4", also_event_ids=("r5",)),
            wait=0,
        )
        rival = rival_outcomes[1]
        assert late.duplicate and late.delivery_id == rival.delivery_id
        assert late.contact is not None and late.contact.name == "Guest 3"
        events = await _events_of(queue)
        assert events["r4"] == events["r5"] == rival.delivery_id
        assert (await queue.counts())[WEBHOOK] == {"pending": 3}
        await _close(queue)

    asyncio.run(main())


# --------------------------------------------------------------------------- outcomes flow back


def test_each_callback_is_told_the_outcome_exactly_once(
    db_url: str, standin: RocketChatStandIn, rocketchat: StandInServer
) -> None:
    from sqlalchemy import update

    from adapter.core.records import DeliveryRecord, Submission
    from adapter.ledger.schema import deliveries, migrate

    told: list[tuple[str, str, str]] = []

    async def notifier(record: DeliveryRecord) -> None:
        assert record.callback is not None
        told.append((record.id, str(record.callback["url"]), record.status))

    async def main() -> None:
        queue, worker = _queue_and_worker(db_url, rocketchat.url, fast_path_budget=1.0)
        queue.notifiers["chat"] = notifier
        await migrate(queue.engine)

        def chat(i: int, url: str, **fields: str) -> Submission:
            return Submission(source="chat", fields=guest(i, **fields), callback={"url": url})

        # Two people ask about the same guest while Rocket.Chat is down: one delivery…
        standin.down = True
        first = await queue.submit(chat(1, "u1"))
        second = await queue.submit(chat(1, "u2", name="Guest One"))
        assert first.status == second.status == "pending"
        assert first.delivery_id == second.delivery_id
        standin.down = False
        task = asyncio.create_task(worker.run())
        assert first.delivery_id is not None
        await queue.wait_for_final(first.delivery_id, 10)
        await wait_until_async(lambda: len(told) >= 2, 2)
        # …and both are told, once each.
        assert sorted(told) == [
            (first.delivery_id, "u1", "delivered"),
            (first.delivery_id, "u2", "delivered"),
        ]
        # A caller that waited gets the outcome in its answer, not through the callback.
        fast = await queue.submit(chat(2, "u3"))
        assert fast.status == "delivered"
        # A process that died between recording an outcome and telling it: the sweep tells.
        async with queue.engine.begin() as conn:
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.id == fast.delivery_id)
                .values(notified_at=None, updated_at=time.time() - 60)
            )
        assert await queue.notify_missed() == 1
        assert await queue.notify_missed() == 0  # claimed: never twice
        worker.stop()
        await task
        await _close(queue)
        assert [t for t in told if t[1] == "u3"] == [(fast.delivery_id, "u3", "delivered")]
        assert len(told) == 3

    asyncio.run(main())


# --------------------------------------------------------------------------- schema


def test_sqlite_database_runs_in_wal_mode(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    import sqlite3

    path = tmp_path / "wal.db"
    service = start_service(make_settings(database_url=f"sqlite:///{path}"))
    assert service.post_contact(**guest(1)).status_code == 201
    with contextlib.closing(sqlite3.connect(path)) as conn:  # WAL is a property of the file
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT count(*) FROM deliveries").fetchone() == (1,)
    assert path.with_name("wal.db-wal").exists()


def test_schema_1_database_keeps_its_rows_and_gains_the_attempts_table(db_url: str) -> None:
    from sqlalchemy import inspect, text

    from adapter.ledger.schema import SCHEMA_VERSION, create_engine, migrate

    async def main() -> None:
        engine = create_engine(db_url)
        await migrate(engine)
        async with engine.begin() as conn:  # back to what schema 1 had
            await conn.execute(text("DROP INDEX ix_deliveries_unnotified"))
            await conn.execute(text("DROP INDEX ix_deliveries_email_key"))
            await conn.execute(text("DROP INDEX ix_deliveries_phone_key"))
            for column in ("extra_callbacks", "queued_at", "email_key", "phone_key"):
                await conn.execute(text(f"ALTER TABLE deliveries DROP COLUMN {column}"))
            await conn.execute(text("DROP TABLE delivery_attempts"))  # schema 4
            await conn.execute(text("UPDATE schema_version SET version = 1"))
            await conn.execute(
                text(
                    "INSERT INTO deliveries (id, source, fields, status, attempts, "
                    "next_attempt_at, created_at, updated_at) VALUES "
                    "('old', 'api', '{\"name\": \"Old\"}', 'failed', 3, 0, 1, 1)"
                )
            )
        assert await asyncio.gather(migrate(engine), migrate(engine)) == [SCHEMA_VERSION] * 2
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT status, attempts, queued_at, extra_callbacks, email_key, "
                        "phone_key FROM deliveries"
                    )
                )
            ).one()
            indexes = await conn.run_sync(
                lambda sync: {i["name"] for i in inspect(sync).get_indexes("deliveries")}
            )
            version = (await conn.execute(text("SELECT version FROM schema_version"))).scalar()
            attempts = (await conn.execute(text("SELECT count(*) FROM delivery_attempts"))).scalar()
        await engine.dispose()
        assert tuple(row) == ("failed", 3, None, None, None, None)
        assert {"ix_deliveries_email_key", "ix_deliveries_phone_key"} <= indexes
        assert attempts == 0  # the table exists; the old row's three attempts were only counted
        assert version == SCHEMA_VERSION == 7
        assert "ix_deliveries_retention" in indexes  # schema 7: the retention sweep's index

    asyncio.run(main())


# --------------------------------------------------------------------------- the pacer

ROUTE = "/api/v1/omnichannel/contactpost"


def test_pacer_probes_then_paces_the_window_and_probes_again_after_the_reset() -> None:
    from adapter.rocketchat.pacer import Pacer
    from adapter.rocketchat.sansio import RateLimit

    async def main() -> None:
        pacer = Pacer()
        await pacer.acquire(ROUTE)  # nothing known yet: one probe
        second = asyncio.create_task(pacer.acquire(ROUTE))
        await asyncio.sleep(0.05)  # noqa: sleep-ok - a negative check: still blocked
        assert not second.done()  # …alone until it is answered
        assert pacer.room_hint(8) == 0
        reset = time.time() + 0.3
        await pacer.release(ROUTE, RateLimit(limit=3, remaining=2, reset_at=reset))
        await asyncio.wait_for(second, 1)
        await asyncio.wait_for(pacer.acquire(ROUTE), 1)  # 2 left, 1 in flight
        assert pacer.room_hint(8) == 0 and pacer.exhausted()
        await pacer.release(ROUTE, RateLimit(limit=3, remaining=1, reset_at=reset))
        await pacer.release(ROUTE, RateLimit(limit=3, remaining=0, reset_at=reset))
        hint = pacer.wait_hint_any()
        assert hint is not None and reset < hint < reset + 0.1
        await asyncio.wait_for(pacer.acquire(ROUTE), 2)  # waited for the window
        assert time.time() >= reset
        # A reopened window: one call learns the new budget before the others go.
        assert pacer.room_hint(8) == 0
        late = asyncio.create_task(pacer.acquire(ROUTE))
        await asyncio.sleep(0.05)  # noqa: sleep-ok - a negative check: still blocked
        assert not late.done()
        await pacer.release(ROUTE, RateLimit(limit=3, remaining=2, reset_at=time.time() + 5))
        await asyncio.wait_for(late, 1)
        # A 429 closes the route until its reset, whatever the headers said before.
        await pacer.release(ROUTE, None, rate_limited_until=time.time() + 0.2)
        assert pacer.wait_hint(ROUTE) is not None
        started = time.time()
        await asyncio.wait_for(pacer.acquire(ROUTE), 2)
        assert time.time() - started >= 0.15

    asyncio.run(main())


def test_pacer_does_not_pace_a_user_that_gets_no_rate_limit_headers() -> None:
    from adapter.rocketchat.pacer import Pacer

    async def main() -> None:
        pacer = Pacer()
        await pacer.acquire(ROUTE)
        await pacer.release(ROUTE, None)  # a bot: no X-RateLimit-* at all
        await asyncio.wait_for(asyncio.gather(*(pacer.acquire(ROUTE) for _ in range(50))), 1)
        assert pacer.room_hint(8) == 8
        assert pacer.wait_hint_any() is None and not pacer.exhausted()

    asyncio.run(main())
