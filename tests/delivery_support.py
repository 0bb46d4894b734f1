"""Helpers for the delivery tests: a recording wrapper around the Rocket.Chat stand-in,
the service and workers as real subprocesses, concurrent posting, seeding a database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from adapter.core.keys import DeploymentKey
from tests.conftest import ADMIN_TOKEN, API_TOKEN, BOT, DEPLOYMENT_SECRET, wait_until
from tests.rocketchat_standin import StandInServer


def healthy(url: str) -> bool:
    """Does the service at ``url`` answer ``/healthz`` with 200 (now)?"""
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def read_body(receive: Callable[[], Any]) -> bytes:
    """The whole body of an ASGI request (stand-in wrappers read it before answering)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


BIN = Path(sys.executable).parent
CONTACT_POST = "/api/v1/omnichannel/contact"


def guest(i: int, **extra: str) -> dict[str, str]:
    return {
        "name": f"Guest {i}",
        "email": f"guest{i}@example.com",
        "phone": "+14155552671",
        **extra,
    }


def token_of(i: int) -> str:
    key = DeploymentKey(DEPLOYMENT_SECRET)
    return key.visitor_token(email=f"guest{i}@example.com", phone=None, person_key=None)


@dataclass
class Seen:
    """One request the stand-in received."""

    method: str
    path: str
    port: int
    user_agent: str
    started: float
    ended: float = 0.0
    status: int = 0
    token: str | None = None
    reset: str | None = None  # X-RateLimit-Reset of the answer


class Tracker:
    """ASGI wrapper around the stand-in: times every request, its client port and token,
    and the most requests it ever had in flight at once."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        self.current = 0
        self.max_concurrent = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_standin"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        entry = Seen(
            method=scope["method"],
            path=scope["path"],
            port=scope["client"][1] if scope.get("client") else 0,
            user_agent=headers.get("user-agent", ""),
            started=time.time(),
        )
        chunks: list[bytes] = []

        async def receive_body() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    with contextlib.suppress(ValueError, AttributeError, TypeError):
                        entry.token = json.loads(b"".join(chunks) or b"{}").get("token")
            return message

        async def send_status(message: Any) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
                for key, value in message.get("headers", []):
                    if key.lower() == b"x-ratelimit-reset":
                        entry.reset = value.decode()
            await send(message)

        with self.lock:
            self.current += 1
            self.max_concurrent = max(self.max_concurrent, self.current)
            self.seen.append(entry)
        try:
            await self.app(scope, receive_body, send_status)
        finally:
            with self.lock:
                self.current -= 1
            entry.ended = time.time()

    def contact_posts(self, *, ours: bool = True) -> list[Seen]:
        with self.lock:
            return [
                s
                for s in self.seen
                if s.method == "POST"
                and s.path == CONTACT_POST
                and (not ours or s.user_agent == "contact-adapter")
            ]

    def registration_calls(self) -> list[Seen]:
        """Our calls to the legacy contact routes: each registration's lookup, then its POST."""
        with self.lock:
            return [
                s
                for s in self.seen
                if s.path in (CONTACT_POST, CONTACT_POST + ".search")
                and s.user_agent == "contact-adapter"
            ]

    def registered_per_token(self) -> Counter[str]:
        """Successful registrations (2xx) per token."""
        return Counter(s.token for s in self.contact_posts() if s.status == 200 and s.token)

    def ports(self) -> set[int]:
        with self.lock:
            return {s.port for s in self.seen if s.user_agent == "contact-adapter"}


@contextlib.contextmanager
def serve(app: Any) -> Iterator[tuple[StandInServer, Tracker]]:
    tracker = Tracker(app)
    with StandInServer(tracker) as server:
        yield server, tracker


def post_many(
    url: str, bodies: Sequence[dict[str, Any]], *, threads: int = 16, timeout: float = 30
) -> list[httpx.Response | Exception]:
    """POST /contacts for every body from ``threads`` clients at once; answers in order."""
    local = threading.local()

    def post(body: dict[str, Any]) -> httpx.Response | Exception:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=url, timeout=timeout)
        try:
            return client.post(
                "/contacts", json=body, headers={"Authorization": f"Bearer {API_TOKEN}"}
            )
        except httpx.HTTPError as exc:
            return exc

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(post, bodies))


def admin(url: str) -> httpx.Client:
    return httpx.Client(
        base_url=url, timeout=30, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_env(rocketchat_url: str, database_url: str, **settings: str) -> dict[str, str]:
    """Environment for ``contact-adapter serve|worker``: only what the test says."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("ROCKETCHAT_", "DATABASE_", "PYTEST_", "API_", "ADMIN_", "DEPLOYMENT_")
        )
    }
    env.update(
        PYTHONUNBUFFERED="1",
        ROCKETCHAT_URL=rocketchat_url,
        ROCKETCHAT_USER_ID=BOT["user_id"],
        ROCKETCHAT_AUTH_TOKEN=BOT["token"],
        ROCKETCHAT_CONTACT_API="visitor",
        DATABASE_URL=database_url,
        API_TOKEN=API_TOKEN,
        ADMIN_TOKEN=ADMIN_TOKEN,
        DEPLOYMENT_SECRET=DEPLOYMENT_SECRET,
        SQLITE_SYNCHRONOUS="NORMAL",
        RETRY_FIRST_DELAY="0.2",
        RETRY_MAX_DELAY="1",
        WORKER_POLL_INTERVAL="0.1",
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
    )
    env.update(settings)
    return env


class Proc:
    """``contact-adapter …`` as a real subprocess, its output in a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self.killed_at: float | None = None

    @classmethod
    def serve(cls, env: dict[str, str], log: Path) -> Proc:
        proc = cls([str(BIN / "contact-adapter"), "serve"], env, log)
        proc.port = free_port()
        proc.args += ["--port", str(proc.port)]
        return proc

    @classmethod
    def worker(cls, env: dict[str, str], log: Path) -> Proc:
        return cls([str(BIN / "contact-adapter"), "worker"], env, log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        if self.port is not None:
            self.wait_http()
        return self

    def wait_http(self, timeout: float = 30) -> None:
        def answering() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.args} exited: {self.output()[-2000:]}")
            return healthy(self.url)

        wait_for(answering, timeout, f"{self.args} answering /healthz")

    def kill(self) -> float:
        """SIGKILL: no shutdown, no drain, leases left behind."""
        assert self.process is not None
        self.killed_at = time.time()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        return self.killed_at

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.output().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("event") == name:
                    found.append(entry)
        return found


def seed(database_url: str, indexes: Sequence[int]) -> list[str]:
    """Accept guests straight into the database (no fast path); their delivery ids."""
    from adapter.core.records import Submission
    from adapter.delivery.queue import DeliveryQueue
    from adapter.ledger.schema import create_engine, migrate
    from adapter.rocketchat.client import RocketChatClient
    from adapter.settings import load_settings

    settings = load_settings(
        database_url=database_url,
        rocketchat_url="http://127.0.0.1:9",
        fast_path_budget=0,
        deployment_secret=DEPLOYMENT_SECRET,
    )

    async def main() -> list[str]:
        engine = create_engine(database_url, sqlite_synchronous="NORMAL")
        await migrate(engine)
        client = RocketChatClient.from_settings(settings)
        queue = DeliveryQueue(engine, client, settings)
        try:
            ids = []
            for i in indexes:
                outcome = await queue.submit(Submission(source="api", fields=guest(i)), wait=0)
                assert outcome.delivery_id is not None, outcome
                ids.append(outcome.delivery_id)
            return ids
        finally:
            await client.aclose()
            await engine.dispose()

    return asyncio.run(main())


class DbReader:
    """Reads the deliveries table from the test thread: one engine on a loop of its own."""

    def __init__(self, database_url: str) -> None:
        from adapter.ledger.schema import create_engine

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.engine = create_engine(database_url)

    def rows(self) -> list[dict[str, Any]]:
        from sqlalchemy import select

        from adapter.ledger.schema import deliveries

        async def read() -> list[dict[str, Any]]:
            async with self.engine.connect() as conn:
                return [dict(r) for r in (await conn.execute(select(deliveries))).mappings()]

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(30)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.engine.dispose(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


_readers: dict[str, DbReader] = {}


def rows(database_url: str) -> list[dict[str, Any]]:
    """Every row of the deliveries table (an engine kept per URL until ``close_readers``)."""
    reader = _readers.get(database_url)
    if reader is None:
        reader = _readers[database_url] = DbReader(database_url)
    return reader.rows()


def statuses(database_url: str) -> dict[str, str]:
    """``{delivery id: status}`` read straight from the database."""
    return {r["id"]: r["status"] for r in rows(database_url)}


def close_readers() -> None:
    while _readers:
        _readers.popitem()[1].close()


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.05,
    show: Callable[[], Any] | None = None,
) -> Any:
    """:func:`tests.conftest.wait_until` with the description first, as process tests read."""
    return wait_until(predicate, timeout, interval, what=what, show=show)


class EchoingRejection:
    """ASGI wrapper: the contact route answers 400 quoting the email and phone it was sent,
    as Rocket.Chat's validation messages may ("… 'chris@example.com' is invalid")."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) != ("POST", CONTACT_POST):
            await self.app(scope, receive, send)
            return
        raw = await read_body(receive)
        sent = json.loads(raw or b"{}")
        error = f"Invalid contact data: email {sent.get('email')} / phone {sent.get('phone')}"
        body = json.dumps({"success": False, "error": error}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
