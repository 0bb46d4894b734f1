"""adapter.ops.runtime: one set-up for every entry point, closed in order whatever happens.

The order is client (no Rocket.Chat call after it), queue (the SQLite writer's connections
and thread), engine; each step runs even when the body or an earlier step raised. Observed
for real: the aiohttp session closed, the writer's thread gone, the engine disposed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from adapter.core.records import Submission
from adapter.delivery.queue import DeliveryQueue
from adapter.ops.runtime import Runtime, open_runtime
from adapter.rocketchat.client import RocketChatClient
from adapter.settings import Settings
from tests.conftest import Service

CHRIS = {"name": "Chris Doe", "email": "chris@example.com", "phone": "+14155552671"}


class Boom(Exception):
    pass


@pytest.fixture
def closes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The close steps, in the order they ran (each still does its real work)."""
    order: list[str] = []
    aclose, close, dispose = RocketChatClient.aclose, DeliveryQueue.close, AsyncEngine.dispose

    async def client_aclose(self: RocketChatClient) -> None:
        order.append("client")
        await aclose(self)

    def queue_close(self: DeliveryQueue) -> None:
        order.append("queue")
        close(self)

    async def engine_dispose(self: AsyncEngine, close: bool = True) -> None:
        order.append("engine")
        await dispose(self, close)

    monkeypatch.setattr(RocketChatClient, "aclose", client_aclose)
    monkeypatch.setattr(DeliveryQueue, "close", queue_close)
    monkeypatch.setattr(AsyncEngine, "dispose", engine_dispose)
    yield order


class Opened:
    """What a runtime had open, to look at once it is closed."""

    def __init__(self, runtime: Runtime) -> None:
        self.disposed = False
        self.session: Any = None
        self.writer_threads: set[threading.Thread] = set()
        self.before = set(threading.enumerate())

        def disposed(_engine: Any) -> None:
            self.disposed = True

        event.listen(runtime.engine.sync_engine, "engine_disposed", disposed)

    async def use(self, runtime: Runtime) -> None:
        """Open all of it: a stored contact (the SQLite writer), a Rocket.Chat call."""
        outcome = await runtime.queue.submit(Submission(source="api", fields=CHRIS), wait=0)
        assert outcome.delivery_id is not None
        await runtime.client.readiness()
        self.look(runtime)

    def look(self, runtime: Runtime) -> None:
        """Note the client's session and the writer's thread, both open by now."""
        self.session = runtime.client._session
        assert self.session is not None and not self.session.closed
        self.writer_threads = {
            t
            for t in set(threading.enumerate()) - self.before
            if t.name.startswith("sqlite-writer")
        }
        assert self.writer_threads, "the SQLite writer runs on a thread of its own"

    def assert_all_closed(self) -> None:
        assert self.session is not None and self.session.closed
        for thread in self.writer_threads:
            thread.join(5)
            assert not thread.is_alive(), thread.name
        assert self.disposed


def test_a_runtime_whose_body_raises_still_closes_everything_in_order(
    make_settings: Callable[..., Settings], closes: list[str]
) -> None:
    settings = make_settings()

    async def main() -> Opened:
        opened: Opened | None = None
        with pytest.raises(Boom):
            async with open_runtime(settings) as runtime:
                opened = Opened(runtime)
                await opened.use(runtime)
                assert closes == []
                raise Boom
        assert opened is not None
        return opened

    opened = asyncio.run(main())
    assert closes == ["client", "queue", "engine"]
    opened.assert_all_closed()


def test_every_close_step_runs_when_an_earlier_one_fails(
    make_settings: Callable[..., Settings], closes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(self: RocketChatClient) -> None:
        closes.append("client")
        raise Boom

    monkeypatch.setattr(RocketChatClient, "aclose", refuse)
    settings = make_settings()

    async def main() -> None:
        async with open_runtime(settings) as runtime:
            opened = Opened(runtime)
            await runtime.queue.submit(Submission(source="api", fields=CHRIS), wait=0)
        assert opened.disposed

    with pytest.raises(Boom):
        asyncio.run(main())
    assert closes == ["client", "queue", "engine"]


def test_a_failed_migration_closes_the_runtime(
    make_settings: Callable[..., Settings], closes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def migrate(self: Runtime) -> int:
        raise Boom

    monkeypatch.setattr(Runtime, "migrate", migrate)

    async def main() -> None:
        async with open_runtime(make_settings()):
            pytest.fail("the body runs only once migrated")

    with pytest.raises(Boom):
        asyncio.run(main())
    assert closes == ["client", "queue", "engine"]


def test_a_runtime_without_migrate_needs_a_schema_and_never_makes_one(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathlib import Path

    from adapter.ops.runtime import NoSchemaError

    settings = make_settings()
    database = Path(settings.database_url.split("///", 1)[1])

    async def fresh() -> None:
        async with open_runtime(settings, migrate=False, label=str(database)):
            raise AssertionError("opened a database without a schema")

    with pytest.raises(NoSchemaError, match="has no schema yet"):
        asyncio.run(fresh())
    assert not database.exists()  # not even an empty file

    async def migrated() -> None:
        async with open_runtime(settings):
            pass

    asyncio.run(migrated())

    async def migrate(self: Runtime) -> int:
        raise AssertionError("migrated")

    monkeypatch.setattr(Runtime, "migrate", migrate)

    async def main() -> None:
        async with open_runtime(settings, migrate=False) as runtime:
            assert isinstance(runtime.queue, DeliveryQueue)

    asyncio.run(main())


def test_the_app_closes_its_runtime_in_order_at_shutdown(
    make_settings: Callable[..., Settings], closes: list[str]
) -> None:
    service = Service(make_settings())
    runtime: Runtime = service.app.state.runtime
    assert service.app.state.queue is runtime.queue
    assert service.app.state.client is runtime.client
    opened = Opened(runtime)
    service.start()
    try:
        assert service.post_contact(**CHRIS).status_code == 201
        assert service.client.get("/readyz").status_code == 200
        opened.look(runtime)
        assert closes == []
    finally:
        service.stop()
    assert closes == ["client", "queue", "engine"]
    opened.assert_all_closed()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # exit 3
def test_the_app_closes_its_runtime_when_start_up_fails(
    make_settings: Callable[..., Settings], closes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def migrate(self: Runtime) -> int:
        raise Boom

    monkeypatch.setattr(Runtime, "migrate", migrate)
    service = Service(make_settings())
    with pytest.raises(RuntimeError, match="failed to start"):
        service.start()
    service.stop()
    assert closes == ["client", "queue", "engine"]
