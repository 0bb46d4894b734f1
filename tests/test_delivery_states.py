"""The worker in the states users meet: idle with Rocket.Chat down, back after an outage,
after a rate-limited window (issue 11's three defects), on a real database.

Each test drives a real ``DeliveryQueue`` and ``DeliveryWorker`` against the Rocket.Chat
stand-in over loopback, on SQLite and on a real PostgreSQL server. The pure rules behind
them are in test_policy.py; these show the worker carrying them out.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from adapter.core.policy import OUTAGE_THRESHOLD
from adapter.core.records import Submission
from adapter.delivery.queue import DeliveryQueue
from adapter.delivery.worker import DeliveryWorker
from adapter.ledger.engine import create_engine
from adapter.ledger.schema import migrate
from adapter.rocketchat.client import RocketChatClient
from adapter.settings import load_settings
from tests.conftest import AGENT, BOT, wait_until_async
from tests.delivery_support import guest
from tests.rocketchat_standin import RocketChatStandIn, StandInServer


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'deliveries.db'}"


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def running(
    database_url: str, rocketchat_url: str, **overrides: Any
) -> AsyncIterator[tuple[DeliveryQueue, DeliveryWorker]]:
    credentials = {"rocketchat_user_id": BOT["user_id"], "rocketchat_auth_token": BOT["token"]}
    settings = load_settings(
        database_url=database_url,
        rocketchat_url=rocketchat_url,
        **{**credentials, **overrides},
        rocketchat_contact_api="visitor",
        rocketchat_lookup_new_contacts=False,
        fast_path_budget=0,
    )
    engine = create_engine(database_url, sqlite_synchronous="NORMAL")
    await migrate(engine)
    client = RocketChatClient.from_settings(settings)
    queue = DeliveryQueue(engine, client, settings)
    try:
        yield queue, DeliveryWorker(queue)
    finally:
        await client.aclose()
        queue.close()
        await engine.dispose()


async def submit(queue: DeliveryQueue, count: int, start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + count):
        outcome = await queue.submit(Submission(source="api", fields=guest(i)), wait=0)
        assert outcome.delivery_id is not None
        ids.append(outcome.delivery_id)
    return ids


async def fail_once_each(worker: DeliveryWorker) -> int:
    """One claim, every claimed delivery tried (and failed) once."""
    claimed = await worker.run_once()
    await wait_until_async(lambda: worker.in_flight == 0, timeout=15)
    return claimed


def test_an_idle_worker_with_rocketchat_down_sleeps_instead_of_spinning(db_url: str) -> None:
    """Defect 2: one contact waiting out a long backoff, Rocket.Chat refusing connections,
    the outage probe's own wait over. The worker used to wake every 5 ms (a write
    transaction each time); now its next look is the poll interval away at the soonest."""

    async def main() -> None:
        url = f"http://127.0.0.1:{closed_port()}"
        overrides = {"retry_first_delay": 30.0, "retry_max_delay": 600.0}
        async with running(db_url, url, worker_poll_interval=1.0, **overrides) as (queue, worker):
            (only,) = await submit(queue, 1)
            await fail_once_each(worker)
            record = await queue.get(only)
            assert record is not None and record.status == "pending" and record.attempts == 1
            # Rocket.Chat has been failing long enough to be in an outage, and the probe's
            # wait is over while the row's own backoff (30 s or more) is not.
            for _ in range(OUTAGE_THRESHOLD):
                queue.gate.unanswered(time.time(), queue.rng)
            assert queue.gate.in_outage
            queue.gate.probe_at = time.time()
            assert await worker.run_once() == 0  # nothing due: nothing claimed
            assert worker.idle_seconds() >= 0.9  # not a 5 ms busy loop

    asyncio.run(main())


def test_after_an_outage_the_held_back_deliveries_go_at_full_concurrency(
    db_url: str, standin: RocketChatStandIn
) -> None:
    """Defect 3: every delivery tried during the outage waits out a backoff of its own.
    Once a probe gets through, they are all due at once, not each after its backoff."""

    async def main(server: StandInServer) -> None:
        overrides = {"retry_first_delay": 60.0, "retry_max_delay": 600.0}
        async with running(db_url, server.url, **overrides) as (queue, worker):
            standin.down = True  # 503 for every call
            held = await submit(queue, 10)
            assert await fail_once_each(worker) == 10
            assert queue.gate.in_outage
            for delivery_id in held:
                record = await queue.get(delivery_id)
                assert record is not None and record.next_attempt_at > time.time() + 50
            standin.down = False
            (probe,) = await submit(queue, 1, start=100)  # due now: the outage's next probe
            queue.gate.probe_at = time.time()  # the probe's wait is over
            assert await fail_once_each(worker) == 1
            assert (await queue.get(probe)).status == "delivered"  # type: ignore[union-attr]
            assert not queue.gate.in_outage
            # The next claim takes every held-back delivery at once.
            assert await worker.run_once() == 10
            await wait_until_async(lambda: worker.in_flight == 0, timeout=15)
            for delivery_id in held:
                record = await queue.get(delivery_id)
                assert record is not None and record.status == "delivered"
            assert max(standin.contact_posts_per_token().values()) == 1  # each once

    with StandInServer(standin.app) as server:
        asyncio.run(main(server))


def test_once_answers_lose_their_rate_limit_headers_the_worker_claims_a_full_batch(
    db_url: str,
) -> None:
    """Defect 1: the user was rate limited (answers carried X-RateLimit-*), then granted
    the bot role or the limiter was switched off (answers carry none). The worker must
    claim at full concurrency again, not one delivery per reopened window for ever."""
    standin = RocketChatStandIn(rate_limit=3, window_ms=500)
    agent = {"rocketchat_user_id": AGENT["user_id"], "rocketchat_auth_token": AGENT["token"]}

    async def main(server: StandInServer) -> None:
        async with running(db_url, server.url, **agent) as (queue, worker):
            pacer = queue.client.pacer
            await submit(queue, 40)
            await fail_once_each(worker)  # the first call goes alone: it learns the limit
            assert pacer.room_hint(16) <= 3  # paced by the window
            standin.rate_limit = None  # the limiter is off: answers carry no headers
            await wait_until_async(lambda: pacer.room_hint(16) > 0, timeout=5)
            await fail_once_each(worker)  # the reopened window's first answer: no headers
            assert pacer.room_hint(16) == 16
            assert await worker.run_once() == 16  # a full batch, not one per window
            await wait_until_async(lambda: worker.in_flight == 0, timeout=15)

    with StandInServer(standin.app) as server:
        asyncio.run(main(server))


def test_a_bulk_accept_honours_each_submissions_required_fields(db_url: str) -> None:
    """``submit_many`` (imports) validates like ``submit``: a submission's own required
    fields apply (they used to be ignored in bulk)."""

    async def main() -> None:
        url = f"http://127.0.0.1:{closed_port()}"
        async with running(db_url, url, contact_required_fields="name,email") as (queue, _):
            strict = ("name", "email", "phone")
            no_phone = {"name": "Chris Doe", "email": "chris@example.com"}
            outcomes = await queue.submit_many(
                [
                    Submission(source="import", fields=no_phone, required_fields=strict),
                    Submission(source="import", fields={**no_phone, "email": "ann@example.com"}),
                ]
            )
            assert outcomes[0].status == "invalid"
            assert outcomes[0].errors == {"phone": "is required"}
            assert outcomes[1].status == "pending"
            single = await queue.submit(
                Submission(source="api", fields=no_phone, required_fields=strict), wait=0
            )
            assert single.errors == outcomes[0].errors  # the same rule on both paths

    asyncio.run(main())
