"""Scale-out on real PostgreSQL, as Heroku runs it: release, 2 web + 2 worker dynos, restarts.

The Procfile's ``release`` runs first, then its ``web`` and ``worker`` commands start as
numbered dynos (``tests/dynos.py``: ``bash -c`` with ``PORT`` per web dyno, SIGTERM or
SIGKILL to the whole process group). A burst of 1,000 contacts is split over both web
dynos while the Rocket.Chat stand-in answers slowly and sometimes 503; mid-burst one
worker gets SIGTERM (a restart) and the other SIGKILL (a crash), the release runs again
(a deploy while old dynos still run), then both come back. Every accepted contact must
end up registered once, none lost, none failed.

Also here: each process keeps to ``DATABASE_POOL_SIZE`` connections under load (counted in
``pg_stat_activity``), and Heroku's ``DATABASE_URL`` forms (``postgres://``, ``?sslmode=…``) against the
real server, including a TLS-enabled one for ``sslmode=require``.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from adapter.ledger.engine import _split_ssl, create_engine, normalize_database_url
from adapter.ledger.schema import migrate
from tests.conftest import ADMIN_TOKEN, API_TOKEN, BOT
from tests.dynos import ContactPost, Deadline, Formation, RecordingStandIn, base_env, wait_for
from tests.rocketchat_standin import RocketChatStandIn, StandInServer

pytestmark = pytest.mark.postgres

BURST = 1000
CONCURRENCY = 8
# Every wait of the scale-out run comes out of this (pytest's timeout is 300 s): a slow or
# stuck run fails naming what it was waiting for, then cleans up within CLEANUP.
DEADLINE = 230.0
CLEANUP = 30.0


def guest(i: int) -> dict[str, str]:
    return {
        "name": f"Guest Number{i}",
        "email": f"guest{i}@example.com",
        "phone": f"+1415555{i:04d}",
    }


def statuses(postgres_server: Any, database_url: str) -> dict[str, int]:
    database = database_url.rsplit("/", 1)[1].split("?")[0]
    out = postgres_server.query("SELECT status, count(*) FROM deliveries GROUP BY status", database)
    return {line.split("|")[0]: int(line.split("|")[1]) for line in out.splitlines() if line}


# -- the scale-out run ----------------------------------------------------------------------


class Burst:
    """Sends the contacts from a thread, alternating between the web dynos."""

    def __init__(self, urls: list[str], count: int, parallel: int = 24, first: int = 0) -> None:
        self.urls = urls
        self.count = count
        self.first = first
        self.parallel = parallel
        self.done = 0
        self.answers: dict[int, tuple[int, dict[str, Any]]] = {}
        self.retried: list[str] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="burst", daemon=True)

    def start(self) -> Burst:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._send_all())
        except BaseException as exc:  # reported by join()
            self.error = exc

    async def _send_all(self) -> None:
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        clients = [httpx.AsyncClient(base_url=url, headers=auth, timeout=30) for url in self.urls]
        todo: asyncio.Queue[int] = asyncio.Queue()
        for i in range(self.first, self.first + self.count):
            todo.put_nowait(i)

        async def sender() -> None:
            while not todo.empty():
                i = todo.get_nowait()
                body = {**guest(i), "event_id": f"burst-{i}"}  # a retry is accepted once
                for attempt in range(5):
                    try:
                        response = await clients[i % len(clients)].post("/contacts", json=body)
                        break
                    except httpx.TransportError as exc:  # as any client: retry, same event id
                        self.retried.append(f"{type(exc).__name__}: {exc}")
                        if attempt == 4:
                            raise
                self.answers[i] = (response.status_code, response.json())
                self.done += 1

        try:
            await asyncio.gather(*(sender() for _ in range(self.parallel)))
        finally:
            for client in clients:
                await client.aclose()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), (
            f"the burst did not finish within {timeout:.0f}s: {self.done} of {self.count} "
            f"contacts answered ({len(self.retried)} client retries)"
        )
        if self.error is not None:
            raise self.error


@pytest.fixture
def recorder() -> Iterator[tuple[RocketChatStandIn, RecordingStandIn, str]]:
    # Slow answers keep deliveries in flight; 1 in 10 registrations gets a 503 first.
    standin = RocketChatStandIn(latency=0.2, error_rate=0.1, seed=8)
    recording = RecordingStandIn(standin.app)
    with StandInServer(recording) as server:
        yield standin, recording, server.url


def test_two_web_two_worker_dynos_survive_sigterm_and_sigkill_mid_burst(
    tmp_path: Path,
    postgres_server: Any,
    postgres_url: str,
    recorder: tuple[RocketChatStandIn, RecordingStandIn, str],
) -> None:
    standin, recording, standin_url = recorder
    deadline = Deadline(DEADLINE)
    env = base_env(
        DATABASE_URL=postgres_url,  # Heroku's postgres:// form, as the add-on sets it
        ROCKETCHAT_URL=standin_url,
        ROCKETCHAT_USER_ID=BOT["user_id"],  # a bot user: no rate limit
        ROCKETCHAT_AUTH_TOKEN=BOT["token"],
        ROCKETCHAT_CONTACT_API="visitor",
        ROCKETCHAT_CONCURRENCY=str(CONCURRENCY),
        API_TOKEN=API_TOKEN,
        ADMIN_TOKEN=ADMIN_TOKEN,
        FAST_PATH_BUDGET="0",  # answer 202 at once: the queue and the workers do the rest
        INPROCESS_WORKER="true",  # web dynos deliver too: four processes race for every row
        DELIVERY_LEASE="6",  # a SIGKILLed worker's rows are taken over after 6 s
        ROCKETCHAT_TIMEOUT="30",  # a starved machine must not turn slow answers into retries
        RETRY_FIRST_DELAY="0.2",
        RETRY_MAX_DELAY="1",
        WORKER_POLL_INTERVAL="0.2",
    )
    formation = Formation(env, tmp_path)
    try:
        release = formation.run("release", timeout=deadline.left(60, "the release phase"))
        assert release.returncode == 0, release.stdout + release.stderr
        assert "schema is at version" in release.stdout

        webs = [formation.start("web"), formation.start("web")]
        workers = [formation.start("worker"), formation.start("worker")]
        for web in webs:
            web.wait_ready(deadline.left(30, f"{web.name} answering /healthz"))
        started = time.monotonic()

        burst = Burst([web.url for web in webs], BURST).start()
        wait_for(
            lambda: burst.done >= BURST * 0.3,
            deadline.left(60, "the burst"),
            "30% of the burst accepted",
            show=lambda: f"{burst.done} answered, client retries: {burst.retried[-3:]}",
        )
        wait_for(lambda: recording.in_flight() > 0, deadline.left(10), "deliveries in flight")
        terminated_at = workers[0].terminate()  # a restart: finish or hand back, exit 0
        killed_at = workers[1].kill()  # a crash: its leases expire, others take over
        # A deploy's release phase while dynos run.
        redeploy = formation.run("release", timeout=deadline.left(60, "the second release"))
        assert redeploy.returncode == 0, redeploy.stdout + redeploy.stderr
        assert workers[0].exit_code(deadline.left(30), "SIGTERM") == 0, workers[0].output()[-2000:]
        assert workers[0].exited_at is not None and workers[0].exited_at - terminated_at < 25
        assert workers[1].exit_code(deadline.left(10), "SIGKILL") == -9
        formation.restart(workers[0])
        formation.restart(workers[1])
        burst.join(deadline.left(120, "the rest of the burst"))

        assert all(web.running for web in webs), "a web dyno died"
        codes = sorted({code for code, _ in burst.answers.values()})
        assert len(burst.answers) == BURST and set(codes) <= {200, 201, 202}, codes
        accepted = {body["delivery_id"] for _, body in burst.answers.values()}
        assert len(accepted) == BURST

        wait_for(
            lambda: statuses(postgres_server, postgres_url) == {"delivered": BURST},
            deadline.left(90, "the deliveries"),
            f"all {BURST} accepted contacts delivered",
            interval=0.5,
            show=lambda: statuses(postgres_server, postgres_url),
        )
        elapsed = time.monotonic() - started
    finally:
        formation.stop_all(CLEANUP)

    # Every accepted contact registered, once per person; none lost, none failed.
    per_token = recording.successes_per_token()
    assert len(per_token) == BURST
    assert len(standin.visitors) == BURST
    assert len({v["token"] for v in standin.visitors.values()}) == BURST
    # A registration is repeated only when a SIGKILL cut it between Rocket.Chat's answer and
    # the database commit: at most the rows the killed worker held (it claims up to twice
    # ROCKETCHAT_CONCURRENCY ahead), and Rocket.Chat upserts by token: still one contact.
    repeated = {token for token, n in per_token.items() if n > 1}
    assert len(repeated) <= 2 * CONCURRENCY, f"{len(repeated)} registrations repeated"
    posts = [p for p in recording.snapshot() if p.status == 200]
    for token in repeated:
        first, second, *more = sorted((p for p in posts if p.token == token), key=_start)
        assert not more
        # (A request written just before the SIGKILL reaches the stand-in a moment after.)
        assert first.started < killed_at + 0.25 < second.started, (
            f"repeated without a crash: {token} first {first.started - killed_at:+.2f}.."
            f"{(first.ended or 0) - killed_at:+.2f}s, second {second.started - killed_at:+.2f}s "
            f"after the SIGKILL (SIGTERM at {terminated_at - killed_at:+.2f}s)"
        )
        assert first.ended is not None and first.ended > killed_at - 1.0
    failures = [p for p in recording.snapshot() if p.status not in (200, None)]
    assert failures and {p.status for p in failures} == {503}, "the stand-in never failed?"
    # Every line every dyno wrote is a JSON object.
    for dyno in formation.dynos:
        assert dyno.log_lines(), dyno.name
    assert elapsed < 100, f"took {elapsed:.0f}s"
    print(
        f"scale-out: {BURST} accepted, {len(per_token)} registered, {len(repeated)} repeated "
        f"after SIGKILL, {len(failures)} answers 503, {elapsed:.1f}s, client retries: "
        f"{burst.retried}"
    )


def _start(post: ContactPost) -> float:
    return post.started


# -- connections per process -------------------------------------------------------------


def test_a_web_dyno_never_opens_more_connections_than_database_pool_size(
    tmp_path: Path,
    postgres_server: Any,
    postgres_url: str,
    recorder: tuple[RocketChatStandIn, RecordingStandIn, str],
) -> None:
    """Heroku's smallest plans allow 20 connections in all: each process must keep to
    DATABASE_POOL_SIZE (default 5), however many requests and deliveries run at once."""
    standin, _, standin_url = recorder
    standin.error_rate = 0.0
    deadline = Deadline(150)
    database = postgres_url.rsplit("/", 1)[1]
    env = base_env(
        DATABASE_URL=postgres_url,
        ROCKETCHAT_URL=standin_url,
        ROCKETCHAT_USER_ID=BOT["user_id"],
        ROCKETCHAT_AUTH_TOKEN=BOT["token"],
        ROCKETCHAT_CONTACT_API="visitor",
        ROCKETCHAT_CONCURRENCY="16",  # 32 deliveries claimed at once, each writing its outcome
        API_TOKEN=API_TOKEN,
        FAST_PATH_BUDGET="0.5",  # requests try their own contact too
        INPROCESS_WORKER="true",
        WORKER_POLL_INTERVAL="0.1",
    )
    formation = Formation(env, tmp_path)

    def connections() -> int:
        return int(
            postgres_server.query(
                # The service's own connections: not this test's psql sessions, whose
                # backends may linger a moment after psql has exited.
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                f" AND datname = '{database}' AND application_name <> 'psql'",
                "postgres",
            )
        )

    count = 400
    try:
        for first, pool_size in ((0, "3"), (count, None)):
            limit = int(pool_size or 5)
            web = formation.start("web", **({"DATABASE_POOL_SIZE": pool_size} if pool_size else {}))
            web.wait_ready(deadline.left(30, f"{web.name} answering /healthz"))
            burst = Burst([web.url], count, parallel=64, first=first).start()
            peak = 0
            expected = {"delivered": first + count}
            while statuses(postgres_server, postgres_url) != expected:
                peak = max(peak, connections())
                assert deadline.left(what=f"{count} contacts delivered through {web.name}")
                assert burst.error is None, burst.error
            burst.join(deadline.left(30, "the end of the burst"))
            codes = {code for code, _ in burst.answers.values()}
            assert len(burst.answers) == count and codes <= {200, 201, 202}, codes
            assert 0 < peak <= limit, (
                f"{web.name} (DATABASE_POOL_SIZE={pool_size or 'unset'}) opened {peak} "
                f"connections at once, more than {limit}"
            )
            web.stop(deadline.left(30, f"stopping {web.name}"))
    finally:
        formation.stop_all(CLEANUP)


# -- DATABASE_URL as Heroku gives it -------------------------------------------------------


def test_heroku_database_url_forms_are_normalised() -> None:
    url = "postgres://u5er:p4ss@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d8abc"
    assert normalize_database_url(url) == (
        "postgresql+asyncpg://u5er:p4ss@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d8abc"
    )
    assert normalize_database_url("postgresql://h/db").startswith("postgresql+asyncpg://")
    plain, args = _split_ssl(normalize_database_url(url + "?sslmode=require"))
    assert "sslmode" not in plain and plain.endswith("/d8abc")
    context = args["ssl"]
    assert isinstance(context, ssl.SSLContext)
    # Heroku Postgres' certificates are not issued for the host name: encrypt, don't verify.
    assert context.verify_mode == ssl.CERT_NONE and context.check_hostname is False
    assert _split_ssl(normalize_database_url(url + "?sslmode=disable"))[1] == {"ssl": False}
    assert _split_ssl(normalize_database_url(url + "?sslmode=prefer"))[1] == {"ssl": "prefer"}
    kept, _ = _split_ssl(normalize_database_url(url + "?sslmode=require&application_name=x"))
    assert kept.endswith("?application_name=x")


async def _server_sees_tls(url: str) -> bool:
    engine = create_engine(url)
    try:
        await migrate(engine)  # the whole schema works through this URL
        async with engine.connect() as conn:
            used = await conn.scalar(
                text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            )
        return bool(used)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("suffix", ["", "?sslmode=disable", "?sslmode=prefer"])
def test_heroku_database_url_connects_to_real_postgres(postgres_url: str, suffix: str) -> None:
    assert postgres_url.startswith("postgres://")
    assert asyncio.run(_server_sees_tls(postgres_url + suffix)) is False  # no TLS on this one


def test_sslmode_require_is_not_silently_downgraded(postgres_url: str) -> None:
    """The test server has no TLS: ``require`` must fail, not fall back to plain text."""
    with pytest.raises(ConnectionError, match="SSL"):
        asyncio.run(_server_sees_tls(postgres_url + "?sslmode=require"))


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[str]:
    """A second throw-away server with TLS on (a self-signed certificate, like Heroku's)."""
    from tests.postgres import PostgresServer, available

    reason = available()
    if reason is not None:
        pytest.skip(reason)
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a certificate for the TLS server")
    server = PostgresServer().start()
    try:
        key, cert = server.data / "server.key", server.data / "server.crt"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=not-the-host-name",
                "-keyout",
                str(key),
                "-out",
                str(cert),
            ],
            check=True,
            capture_output=True,
        )
        key.chmod(0o600)
        if server.data.owner() != key.owner():
            shutil.chown(key, server.data.owner(), server.data.group())
            shutil.chown(cert, server.data.owner(), server.data.group())
        server.query("ALTER SYSTEM SET ssl = on", "postgres")
        server.query("SELECT pg_reload_conf()", "postgres")
        wait_for(lambda: server.query("SHOW ssl", "postgres") == "on", 10, "ssl = on")
        yield server.create_database()
    finally:
        server.stop()


def test_sslmode_require_connects_over_tls(tls_postgres: str) -> None:
    assert asyncio.run(_server_sees_tls(tls_postgres + "?sslmode=require")) is True
    # Without sslmode asyncpg prefers TLS too, so a bare Heroku URL is encrypted as well.
    assert asyncio.run(_server_sees_tls(tls_postgres)) is True
    assert asyncio.run(_server_sees_tls(tls_postgres + "?sslmode=disable")) is False
