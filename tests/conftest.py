"""Shared fixtures: a Rocket.Chat stand-in and the real service, both under uvicorn on loopback."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import uvicorn

from adapter.settings import HOME_VARIABLE, Settings, load_settings
from adapter.web.app import create_app
from tests.rocketchat_standin import RocketChatStandIn, StandInServer
from tests.settings_names import is_service_variable

AGENT = {"user_id": "agentUserId1", "token": "agent-token"}  # rate limited, like a normal user
BOT = {"user_id": "botUserId1", "token": "bot-token"}  # api-bypass-rate-limit
API_TOKEN = "test-api-token-0123456789"
# The tests' deployment secret, so a test can say which visitor token a guest gets.
DEPLOYMENT_SECRET = "test-deployment-secret-0123456789-abcdef"
ADMIN_TOKEN = "test-admin-token-0123456789"
FINAL = ("delivered", "rejected", "failed", "merged")  # statuses a delivery ends in


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.02,
    *,
    what: str = "condition",
    show: Callable[[], Any] | None = None,
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``, saying
    ``what`` was awaited and what was seen instead (``show()``, else the last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            seen = show() if show is not None else value
            raise AssertionError(f"{what} not met within {timeout:.1f}s (last seen: {seen!r})")
        time.sleep(interval)  # noqa: sleep-ok - the poll interval of this deadline wait


def csrf_of(html: str) -> str:
    """The CSRF token of the admin page's form in ``html``."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


async def wait_until_async(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05
) -> Any:
    """:func:`wait_until` for tests that drive the service's coroutines in their own loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(interval)  # noqa: sleep-ok - the poll interval of this deadline wait


@pytest.fixture(autouse=True)
def _settings_isolated(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """No test reads the user's ``.env`` or the service's variables from their shell: each
    runs in an empty home (``CONTACT_ADAPTER_HOME``, also the working directory) with every
    variable the service reads removed from ``os.environ``, so that the subprocesses tests
    start from ``os.environ`` inherit the same clean state (tests/test_isolation.py)."""
    home = tmp_path_factory.mktemp("home")
    for name in list(os.environ):
        if is_service_variable(name):
            monkeypatch.delenv(name)
    monkeypatch.setenv(HOME_VARIABLE, str(home))
    monkeypatch.chdir(home)
    yield home


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    """A command run in-process (typer's CliRunner) configures logging onto its own stdout,
    closed once it returns: put the root logger and structlog back, so later tests' log lines
    are not written to a closed stream ("--- Logging error ---") and lost."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    named = {
        name: (logger.level, logger.propagate, logger.handlers[:])
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    config = structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(level)  # setLevel, not assignment: it also clears logging's level caches
    for name, (old_level, propagate, old_handlers) in named.items():
        logger = logging.getLogger(name)
        logger.setLevel(old_level)
        logger.propagate, logger.handlers[:] = propagate, old_handlers
    structlog.configure(**config)


@pytest.fixture
def standin() -> RocketChatStandIn:
    return RocketChatStandIn()


@pytest.fixture
def rocketchat(standin: RocketChatStandIn) -> Iterator[StandInServer]:
    with StandInServer(standin.app) as server:
        yield server


@pytest.fixture
def make_settings(tmp_path: Path, rocketchat: StandInServer) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "rocketchat_url": rocketchat.url,
            "rocketchat_user_id": BOT["user_id"],
            "rocketchat_auth_token": BOT["token"],
            # The stand-in says 8.8, where "auto" picks the Contact Center; tests of the
            # legacy flow pin the visitor route, tests/test_contact_center.py overrides it.
            "rocketchat_contact_api": "visitor",
            "database_url": f"sqlite:///{tmp_path / 'contacts.db'}",
            "api_token": API_TOKEN,
            "admin_token": ADMIN_TOKEN,
            "deployment_secret": DEPLOYMENT_SECRET,
            "retry_first_delay": 0.2,
            "retry_max_delay": 1.0,
            "worker_poll_interval": 0.1,
            "auth_check_interval": 0.3,
            "sqlite_synchronous": "NORMAL",
        }
        values.update(overrides)
        return load_settings(**values)

    return make


class ServiceThread:
    """Our app under uvicorn in a thread, lifespan on (migrations, worker), free loopback port."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ServiceThread:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, lifespan="on", log_config=None, access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name="service"
        )
        self._thread.start()
        wait_until(
            lambda: (
                (self._server is not None and self._server.started) or not self._thread.is_alive()
            )
        )
        if not self._thread.is_alive():
            raise RuntimeError("the service failed to start (see the log above)")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(30)


class Service:
    """The real service under uvicorn, plus an HTTP client pointed at it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.server = ServiceThread(self.app)
        self.url = ""
        self.http: httpx.Client | None = None

    def start(self) -> Service:
        self.server.start()
        self.url = self.server.url
        self.http = httpx.Client(base_url=self.url, timeout=30)
        return self

    def stop(self) -> None:
        if self.http is not None:
            self.http.close()
        self.server.stop()

    @property
    def client(self) -> httpx.Client:
        assert self.http is not None
        return self.http

    def post_contact(self, **body: Any) -> httpx.Response:
        return self.client.post(
            "/contacts", json=body, headers={"Authorization": f"Bearer {API_TOKEN}"}
        )

    def delivery(self, delivery_id: str) -> dict[str, Any]:
        response = self.client.get(
            f"/deliveries/{delivery_id}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        response.raise_for_status()
        return dict(response.json())

    def settled(self, delivery_id: str, timeout: float = 15.0) -> dict[str, Any]:
        """The delivery once it reached a final status (or was merged into another)."""
        record: dict[str, Any] = wait_until(
            lambda: (r := self.delivery(delivery_id))["status"] in FINAL and r,
            timeout=timeout,
            what=f"delivery {delivery_id} final",
        )
        return record

    def stored_rows(self) -> int:
        """How many deliveries the service's SQLite database holds."""
        path = self.settings.database_url.split(":///", 1)[1]
        with sqlite3.connect(path) as db:
            return int(db.execute("SELECT count(*) FROM deliveries").fetchone()[0])


@pytest.fixture
def start_service() -> Iterator[Callable[[Settings], Service]]:
    started: list[Service] = []

    def start(settings: Settings) -> Service:
        service = Service(settings).start()
        started.append(service)
        return service

    yield start
    for service in reversed(started):
        service.stop()


@pytest.fixture
def service(
    make_settings: Callable[..., Settings], start_service: Callable[[Settings], Service]
) -> Service:
    return start_service(make_settings())


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL server for the whole session (skips with the reason if impossible)."""
    from tests.postgres import PostgresServer, available

    reason = available()
    if reason is not None:
        pytest.skip(reason)
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: Any) -> str:
    """A fresh database on the session's PostgreSQL server, as a ``postgres://`` URL."""
    return str(postgres_server.create_database())


CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (skips with the reason when unavailable)."""
    import os
    import shutil

    executable = None
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", "chromium"):
        if candidate and (path := shutil.which(candidate)):
            executable = path
            break
    if executable is None:
        pytest.skip(
            "Chromium not found (set CHROMIUM or install Debian's chromium: tests/system-deps.sh); "
            "Playwright's own browser download is not used"
        )
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
