"""SIGTERM, as Heroku sends it on every restart: stop claiming, finish or hand back, exit 0.

Real ``contact-adapter worker`` and ``contact-adapter serve`` processes (started from the
Procfile's command lines) on a real PostgreSQL, against the Rocket.Chat stand-in answering
slowly, so that deliveries are in flight when the signal arrives. Then a new process
takes over and nothing accepted is lost or registered twice.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapter.core.records import Submission
from adapter.ops.runtime import open_runtime
from adapter.settings import load_settings
from tests.conftest import ADMIN_TOKEN, API_TOKEN, BOT
from tests.dynos import Formation, RecordingStandIn, base_env, wait_for
from tests.rocketchat_standin import RocketChatStandIn, StandInServer

pytestmark = pytest.mark.postgres


def guest(i: int) -> dict[str, str]:
    return {
        "name": f"Guest Number{i}",
        "email": f"guest{i}@example.com",
        "phone": f"+1415555{i:04d}",
    }


@pytest.fixture
def standin() -> RocketChatStandIn:
    return RocketChatStandIn(latency=1.0)


@pytest.fixture
def recorder(standin: RocketChatStandIn) -> Iterator[tuple[RecordingStandIn, str]]:
    recording = RecordingStandIn(standin.app)
    with StandInServer(recording) as server:
        yield recording, server.url


@pytest.fixture
def formation(
    tmp_path: Path, postgres_url: str, recorder: tuple[RecordingStandIn, str]
) -> Iterator[Formation]:
    env = base_env(
        DATABASE_URL=postgres_url,
        ROCKETCHAT_URL=recorder[1],
        ROCKETCHAT_USER_ID=BOT["user_id"],
        ROCKETCHAT_AUTH_TOKEN=BOT["token"],
        ROCKETCHAT_CONTACT_API="visitor",
        # One call per registration, so "in flight" and "late" are read off the posts alone
        # (the lookup before a new person's post is tested in test_core_e2e).
        ROCKETCHAT_LOOKUP_NEW_CONTACTS="false",
        ROCKETCHAT_CONCURRENCY="4",
        API_TOKEN=API_TOKEN,
        ADMIN_TOKEN=ADMIN_TOKEN,
        WORKER_POLL_INTERVAL="0.1",
        RETRY_FIRST_DELAY="0.2",
        RETRY_MAX_DELAY="1",
    )
    procs = Formation(env, tmp_path)
    result = procs.run("release")
    assert result.returncode == 0, result.stdout + result.stderr
    yield procs
    procs.stop_all()


def seed(database_url: str, count: int) -> list[str]:
    """Accept ``count`` contacts straight into the queue (as a web process would)."""
    settings = load_settings(database_url=database_url, fast_path_budget=0)

    async def main() -> list[str]:
        ids = []
        async with open_runtime(settings) as runtime:
            for i in range(count):
                submission = Submission(source="api", fields=guest(i))
                outcome = await runtime.queue.submit(submission, wait=0)
                assert outcome.delivery_id is not None, outcome
                ids.append(outcome.delivery_id)
        return ids

    return asyncio.run(main())


def statuses(postgres_server: Any, database_url: str) -> dict[str, int]:
    database = database_url.rsplit("/", 1)[1].split("?")[0]
    out = postgres_server.query("SELECT status, count(*) FROM deliveries GROUP BY status", database)
    return {line.split("|")[0]: int(line.split("|")[1]) for line in out.splitlines() if line}


def test_worker_finishes_in_flight_deliveries_on_sigterm_and_exits_0(
    formation: Formation,
    recorder: tuple[RecordingStandIn, str],
    postgres_server: Any,
    postgres_url: str,
    standin: RocketChatStandIn,
) -> None:
    recording, _ = recorder
    seed(postgres_url, 12)
    worker = formation.start("worker")
    wait_for(lambda: recording.in_flight() >= 4, 30, "4 deliveries in flight")
    sent = worker.terminate()
    assert worker.wait(30) == 0, worker.output()[-2000:]
    took = worker.exited_at - sent if worker.exited_at else 0.0
    # Finished what it held (1 s each at the stand-in), well within SHUTDOWN_GRACE (25 s).
    assert took < 8, f"worker took {took:.1f}s to stop"
    posts = recording.snapshot()
    assert all(p.ended is not None and p.status == 200 for p in posts), "in-flight calls cut off"
    late = [p for p in posts if p.started > sent + 0.5]
    assert late == [], "the worker claimed new deliveries after SIGTERM"
    state = statuses(postgres_server, postgres_url)
    assert state.get("delivering", 0) == 0, state
    assert state.get("delivered") == len(posts), state

    # A new worker (the restarted dyno) delivers the rest: each contact exactly once.
    standin.latency = 0.05
    formation.restart(worker)
    wait_for(lambda: statuses(postgres_server, postgres_url) == {"delivered": 12}, 30, "all 12")
    per_token = recording.successes_per_token()
    assert len(per_token) == 12 and set(per_token.values()) == {1}, per_token
    assert len(standin.visitors) == 12


def test_worker_hands_back_what_it_cannot_finish_within_the_grace(
    formation: Formation,
    recorder: tuple[RecordingStandIn, str],
    postgres_server: Any,
    postgres_url: str,
    standin: RocketChatStandIn,
) -> None:
    recording, _ = recorder
    standin.latency = 6.0
    seed(postgres_url, 6)
    worker = formation.start("worker", SHUTDOWN_GRACE="1")
    wait_for(lambda: recording.in_flight() >= 4, 30, "4 deliveries in flight")
    sent = worker.terminate()
    assert worker.wait(30) == 0, worker.output()[-2000:]
    assert worker.exited_at is not None and worker.exited_at - sent < 4
    # (The first call, alone, learned that this user is not rate limited before the rest.)
    done = sum(1 for p in recording.snapshot() if p.ended is not None and p.ended < sent)
    state = statuses(postgres_server, postgres_url)
    expected = {"pending": 6 - done, "delivered": done}
    assert state == {k: v for k, v in expected.items() if v}, "cut-off rows must be pending"

    standin.latency = 0.0
    formation.restart(worker)
    wait_for(lambda: statuses(postgres_server, postgres_url) == {"delivered": 6}, 30, "all 6")
    # The cut-off calls may have reached Rocket.Chat: the retry upserts the same token, so
    # still one contact per person.
    assert len(standin.visitors) == 6
    assert len(recording.successes_per_token()) == 6


def test_web_process_finishes_in_flight_deliveries_on_sigterm_and_exits_0(
    formation: Formation,
    recorder: tuple[RecordingStandIn, str],
    postgres_server: Any,
    postgres_url: str,
    standin: RocketChatStandIn,
) -> None:
    recording, _ = recorder
    web = formation.start("web", FAST_PATH_BUDGET="0", INPROCESS_WORKER="true")
    web.wait_ready()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    with httpx.Client(base_url=web.url, headers=auth, timeout=10) as http:
        for i in range(10):
            response = http.post("/contacts", json=guest(i))
            assert response.status_code == 202, response.text
    wait_for(lambda: recording.in_flight() >= 4, 30, "4 deliveries in flight")
    sent = web.terminate()
    assert web.wait(30) == 0, web.output()[-2000:]
    assert web.exited_at is not None and web.exited_at - sent < 8
    posts = recording.snapshot()
    assert all(p.ended is not None and p.status == 200 for p in posts)
    assert [p for p in posts if p.started > sent + 0.5] == []
    state = statuses(postgres_server, postgres_url)
    assert state.get("delivering", 0) == 0 and state.get("delivered") == len(posts), state

    standin.latency = 0.05
    formation.restart(web)
    web.wait_ready()
    wait_for(lambda: statuses(postgres_server, postgres_url) == {"delivered": 10}, 30, "all 10")
    assert set(recording.successes_per_token().values()) == {1}
    assert len(recording.successes_per_token()) == 10


def test_web_process_stops_claiming_at_sigterm_while_a_request_is_still_open(
    formation: Formation,
    recorder: tuple[RecordingStandIn, str],
    postgres_server: Any,
    postgres_url: str,
    standin: RocketChatStandIn,
) -> None:
    """uvicorn waits for open requests before the lifespan's shutdown: the in-process
    worker must not go on claiming meanwhile, and the whole stop must fit the grace."""
    recording, _ = recorder
    grace = 6.0
    web = formation.start(
        "web", FAST_PATH_BUDGET="0", INPROCESS_WORKER="true", SHUTDOWN_GRACE=str(grace)
    )
    web.wait_ready()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    count = 24
    with httpx.Client(base_url=web.url, headers=auth, timeout=10) as http:
        for i in range(count):
            response = http.post("/contacts", json=guest(i))
            assert response.status_code == 202, response.text
        wait_for(lambda: recording.in_flight() >= 4, 30, "4 deliveries in flight")
        # A client still sending its body: uvicorn keeps waiting for this request after
        # SIGTERM (up to its graceful timeout) before the lifespan's shutdown runs.
        assert web.port is not None
        slow = socket.create_connection(("127.0.0.1", web.port))
        slow.sendall(
            b"POST /contacts HTTP/1.1\r\nHost: dyno\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + API_TOKEN.encode() + b"\r\n"
            b"Content-Length: 200\r\n\r\n{"
        )
        # Answered after the slow request's headers were read (same event loop).
        assert http.get("/healthz").status_code == 200
    try:
        sent = web.terminate()
        assert web.wait(30) == 0, web.output()[-2000:]
    finally:
        slow.close()
    assert web.exited_at is not None
    took = web.exited_at - sent
    assert took < grace, f"the web process took {took:.1f}s to stop (SHUTDOWN_GRACE={grace})"
    posts = recording.snapshot()
    late = [round(p.started - sent, 2) for p in posts if p.started > sent + 0.5]
    assert late == [], f"claimed and sent after SIGTERM (seconds after the signal): {late}"
    assert all(p.ended is not None and p.status == 200 for p in posts), "in-flight calls cut off"
    state = statuses(postgres_server, postgres_url)
    # In flight at the signal: delivered; claimed but not yet sent: pending again.
    assert state == {"delivered": len(posts), "pending": count - len(posts)}, state

    standin.latency = 0.05
    formation.restart(web)
    web.wait_ready()
    wait_for(
        lambda: statuses(postgres_server, postgres_url) == {"delivered": count}, 30, "all delivered"
    )
    per_token = recording.successes_per_token()
    assert len(per_token) == count and set(per_token.values()) == {1}, per_token


def test_inprocess_worker_off_leaves_delivery_to_worker_dynos(
    formation: Formation,
    recorder: tuple[RecordingStandIn, str],
    postgres_server: Any,
    postgres_url: str,
    standin: RocketChatStandIn,
) -> None:
    recording, _ = recorder
    standin.latency = 0.0
    web = formation.start("web", FAST_PATH_BUDGET="0", INPROCESS_WORKER="false")
    web.wait_ready()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    with httpx.Client(base_url=web.url, headers=auth, timeout=10) as http:
        for i in range(5):
            assert http.post("/contacts", json=guest(i)).status_code == 202
    # A negative check: 15 poll intervals, an in-process worker would have delivered by now.
    time.sleep(1.5)  # noqa: sleep-ok
    assert recording.snapshot() == []
    assert statuses(postgres_server, postgres_url) == {"pending": 5}
    formation.start("worker")
    wait_for(lambda: statuses(postgres_server, postgres_url) == {"delivered": 5}, 30, "all 5")


def test_inprocess_and_worker_dynos_together_deliver_exactly_once(
    formation: Formation,
    recorder: tuple[RecordingStandIn, str],
    postgres_server: Any,
    postgres_url: str,
    standin: RocketChatStandIn,
) -> None:
    """The fast path, the web's in-process worker and two worker dynos race for every row."""
    recording, _ = recorder
    standin.latency = 0.05
    web = formation.start("web", INPROCESS_WORKER="true", FAST_PATH_BUDGET="0.05")
    formation.start("worker")
    formation.start("worker")
    web.wait_ready()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    count = 150

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(
            base_url=web.url, headers=auth, timeout=30, limits=limits
        ) as http:
            answers = await asyncio.gather(
                *(http.post("/contacts", json=guest(i)) for i in range(count))
            )
        return [a.status_code for a in answers]

    codes = asyncio.run(burst())
    assert set(codes) <= {201, 202}, codes
    wait_for(
        lambda: statuses(postgres_server, postgres_url) == {"delivered": count}, 60, "all delivered"
    )
    per_token = recording.successes_per_token()
    assert len(per_token) == count
    assert max(per_token.values()) == 1, [t for t, n in per_token.items() if n > 1]
    assert len(standin.visitors) == count
