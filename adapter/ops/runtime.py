"""One runtime set-up for every entry point: a process's database engine, Rocket.Chat client
and delivery queue, built from the settings, and closed in order.

The CLI commands and the importer use ``async with open_runtime(settings) as runtime``.
The app needs the queue while it builds its routes, so it makes a :class:`Runtime` at build
time (:meth:`Runtime.build`), migrates in its lifespan's start-up and closes the same object
in its shutdown. Closing (:meth:`Runtime.aclose`) goes: the client (no call in flight
after it), the queue (the SQLite writer's connections and thread, before the engine goes),
then the engine; every step runs even when the body or an earlier step raised.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from adapter.delivery.queue import DeliveryQueue
from adapter.ledger.schema import engine_for, schema_version_of
from adapter.ledger.schema import migrate as migrate_schema
from adapter.rocketchat.client import RocketChatClient
from adapter.settings import HOME_VARIABLE, Settings

__all__ = ["NoSchemaError", "Runtime", "open_runtime"]


class NoSchemaError(RuntimeError):
    """The database a command would read or write has no schema: most likely not the
    database the service uses (the message says what to do)."""


@dataclass(frozen=True)
class Runtime:
    """What one process needs to accept and deliver contacts."""

    settings: Settings
    engine: AsyncEngine
    client: RocketChatClient
    queue: DeliveryQueue

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        """Engine, client and queue for ``settings``; nothing is connected yet (the client
        and the engine connect on first use), so there is nothing to close until used."""
        engine = engine_for(settings)
        client = RocketChatClient.from_settings(settings)
        return cls(settings, engine, client, DeliveryQueue(engine, client, settings))

    async def migrate(self) -> int:
        """Create or upgrade the schema; the version it is at."""
        return await migrate_schema(self.engine)

    async def aclose(self) -> None:
        """Close the client, then the queue, then dispose of the engine, each even when an
        earlier one raised (then raising once all ran)."""
        try:
            await self.client.aclose()
        finally:
            try:
                self.queue.close()
            finally:
                await self.engine.dispose()


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings, *, migrate: bool = True, label: str | None = None
) -> AsyncIterator[Runtime]:
    """The runtime for ``settings``, schema migrated first unless ``migrate`` is false; then
    a database without a schema raises :class:`NoSchemaError` (naming it as ``label``)
    rather than being created. Closed on the way out, whatever happened inside."""
    runtime = Runtime.build(settings)
    try:
        if migrate:
            await runtime.migrate()
        elif await schema_version_of(runtime.engine) is None:
            raise NoSchemaError(
                f"the database {label or 'named by DATABASE_URL'} has no schema yet, so it is "
                "not the service's: run this from the service's folder, or set "
                f"{HOME_VARIABLE} (or DATABASE_URL) to the service's; for a new database run "
                "'contact-adapter migrate' first"
            )
        yield runtime
    finally:
        await runtime.aclose()
