"""Database schema and its migrations (the engines are in :mod:`adapter.ledger.engine`).

The schema is created by :func:`migrate`, which is safe to run twice and while
other processes use the database: ``create_all`` creates missing tables, then every
column and index this code declares but the database lacks is added
(``ALTER TABLE … ADD COLUMN``, ``CREATE INDEX IF NOT EXISTS``), and a
``schema_version`` row records what this code expects (an advisory lock
serialises concurrent runs on PostgreSQL; on SQLite a losing concurrent run simply
tries again). We chose this over Alembic because the schema is a few small tables
that only ever gain nullable columns and indexes; Alembic's revision files would be
more machinery than migration. A change that is not additive would bump
``SCHEMA_VERSION`` and add an explicit step to :func:`migrate`.

Versions: 1 — the first schema; 2 — ``deliveries.extra_callbacks`` (callbacks of
submissions merged into a delivery, each told the outcome once), ``deliveries.queued_at``
(when the current round of attempts started: ``retry`` resets it, ``created_at`` stays)
and the index that finds outcomes not yet reported; 3 — ``deliveries.email_key`` (the
lower-cased email) and ``deliveries.phone_key`` (the E.164 phone), indexed, so a person
first seen by phone and later with an email keeps one token (rows from before stay NULL);
4 — ``delivery_attempts``: one row per try at Rocket.Chat (when, how long, what came of it,
which worker), for the admin page's history of a delivery; 5 — ``deployment_keys``: the
deployment's generated secret (visitor tokens and kept digests are keyed with it, see
:mod:`adapter.core.keys`) when ``DEPLOYMENT_SECRET`` does not set one; 6 —
``conversations`` (what a messenger guest gave so far, until it expires) and
``conversation_events`` (the messenger updates already handled, for deduplication); 7 — the data's
lifecycle: ``deliveries.erased_at`` (when its personal data was erased, by retention or
``forget``), ``consent_version``/``consent_at``, the indexes the retention sweep
walks, and ``audit_log`` (erasures: who, when, how many rows; never the data).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    literal_column,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.schema import CreateColumn, CreateIndex

# Transitional re-exports while callers move to adapter.ledger.engine.
from adapter.ledger.engine import (
    create_engine,
    engine_for,
    is_postgres,
    normalize_database_url,
    sqlite_writer_engine,
)

__all__ = [
    "SCHEMA_VERSION",
    "audit_log",
    "conversation_events",
    "conversations",
    "create_engine",
    "deliveries",
    "delivery_attempts",
    "delivery_events",
    "deployment_keys",
    "engine_for",
    "is_postgres",
    "metadata",
    "migrate",
    "normalize_database_url",
    "people",
    "schema_version_of",
    "sqlite_writer_engine",
    "status_is",
]

SCHEMA_VERSION = 7


def status_is(*names: str, column: Any = None) -> Any:
    """``deliveries.status`` (or ``column``, the same column of an alias) equal to one of
    ``names``, written into the SQL as literals: SQLite prepares a statement again on every
    execution when a bound parameter is compared with ``status``, since the partial indexes
    on it may or may not apply depending on the value. The names are the code's own
    constants, never input."""
    values: list[Any] = [literal_column("'" + name.replace("'", "''") + "'") for name in names]
    column = deliveries.c.status if column is None else column
    return column == values[0] if len(values) == 1 else column.in_(values)


metadata = MetaData()

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("source", String(64), nullable=False),
    Column("event_id", String(255)),
    Column("person_key", String(255)),
    Column("token", String(64)),
    Column("fields", JSON, nullable=False),  # Contact.as_dict() or the raw fields when rejected
    Column("errors", JSON),
    Column("warnings", JSON),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_until", Float),
    Column("last_error", Text),
    Column("contact_id", String(64)),
    Column("strategy", String(32)),
    Column("callback", JSON),
    Column("actor", String(255)),
    Column("team", String(64)),
    Column("contact_manager", String(255)),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("delivered_at", Float),
    Column("notified_at", Float),
    # Added in schema 2 (nullable, so ``migrate`` can add them to an existing table):
    Column("extra_callbacks", JSON(none_as_null=True)),  # callbacks of merged submissions
    Column("queued_at", Float),  # start of the current round of attempts (give-up clock)
    # Added in schema 3: the person's lower-cased email and E.164 phone, to find their
    # earlier deliveries (and token) when a new submission derives a different token.
    Column("email_key", String(320)),
    Column("phone_key", String(32)),
    # Added in schema 7: when the personal columns were erased (retention or forget), and
    # the guest's consent (the consent text's version, when it was given).
    Column("erased_at", Float),
    Column("consent_version", String(64)),
    Column("consent_at", Float),
    Index("ix_deliveries_due", "status", "next_attempt_at"),
    Index("ix_deliveries_token", "token"),
    Index("ix_deliveries_created", "created_at"),
    Index("ix_deliveries_email_key", "email_key", "created_at"),
    Index("ix_deliveries_phone_key", "phone_key", "created_at"),
    # A provider's person (Crisp session, Chatwoot contact) whose details are incomplete so
    # far has one rejected row, completed in place when the rest arrives (not versioned:
    # an index changes nothing older code relies on).
    Index("ix_deliveries_person", "source", "person_key", "status"),
    # At most one waiting delivery per person: a second accept merges into it.
    Index(
        "uq_deliveries_pending_token",
        "token",
        unique=True,
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
    # The retention sweep: final rows still holding personal data, oldest first per status.
    Index(
        "ix_deliveries_retention",
        "status",
        "updated_at",
        sqlite_where=text("erased_at IS NULL"),
        postgresql_where=text("erased_at IS NULL"),
    ),
    # Final outcomes whose callbacks have not been called yet (crash recovery sweep).
    Index(
        "ix_deliveries_unnotified",
        "updated_at",
        sqlite_where=text("notified_at IS NULL AND status IN ('delivered', 'failed')"),
        postgresql_where=text("notified_at IS NULL AND status IN ('delivered', 'failed')"),
    ),
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_id", String(32), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("duration", Float, nullable=False),  # seconds until the answer (or its absence)
    Column("outcome", String(16), nullable=False),  # see delivery.Attempt.OUTCOMES
    Column("error", Text),
    Column("contact_id", String(64)),
    Column("worker", String(64)),  # the lease owner that made the call
    Index("ix_delivery_attempts_delivery", "delivery_id", "started_at"),
    Index("ix_delivery_attempts_started", "started_at"),  # /metrics: the last few minutes
    # The retention sweep: attempts still holding an error text, oldest first.
    Index(
        "ix_delivery_attempts_error",
        "started_at",
        sqlite_where=text("error IS NOT NULL"),
        postgresql_where=text("error IS NOT NULL"),
    ),
)

delivery_events = Table(
    "delivery_events",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("event_id", String(255), primary_key=True),
    Column("delivery_id", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
    # Schema 7: a delivery's events, for the retention sweep and forget (kept as digests).
    Index("ix_delivery_events_delivery", "delivery_id"),
    # The admin page's search by a source's event id, whatever the source (an index adds
    # nothing older code relies on: not versioned).
    Index("ix_delivery_events_event", "event_id"),
)

people = Table(
    "people",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("person_key", String(255), primary_key=True),
    Column("token", String(64)),
    Column("fields", JSON, nullable=False),  # raw fields as last given, merged
    Column("updated_at", Float, nullable=False),
    Index("ix_people_updated", "updated_at"),  # the retention sweep
)

# Erasures and purges (schema 7): who did what, when, how many rows; never the data.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("actor", String(255), nullable=False),  # "cli", "admin api", "admin page"
    Column("action", String(32), nullable=False),  # "forget", "purge"
    Column("rows", Integer, nullable=False),
    Column("summary", JSON, nullable=False),  # counts per table, how the person was found
    Index("ix_audit_log_at", "at"),
)

# Schema 6: a messenger guest's conversation with the bot (Telegram, WhatsApp), one row per
# (channel, chat), deleted once registered, cancelled or expired: it holds personal data.
conversations = Table(
    "conversations",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("chat_id", String(128), primary_key=True),
    Column("state", JSON, nullable=False),  # adapter.core.conversation.Conversation.as_json()
    Column("expires_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_conversations_expires", "expires_at"),
)

# The platform's update / message ids already handled (no personal data), kept longer than
# the channel accepts a message as fresh, so a retry or replay is handled once.
conversation_events = Table(
    "conversation_events",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("event_id", String(255), primary_key=True),
    Column("seen_at", Float, nullable=False),
    Index("ix_conversation_events_seen", "seen_at"),
)

# The deployment's generated secrets, by purpose; read by every process sharing the ledger.
deployment_keys = Table(
    "deployment_keys",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

schema_version = Table(
    "schema_version",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("applied_at", Float, nullable=False),
)


def _add_missing(conn: Connection) -> list[str]:
    """Create missing tables, then add declared columns and indexes the database lacks."""
    metadata.create_all(conn, checkfirst=True)
    inspector = inspect(conn)
    done: list[str] = []
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable or column.primary_key:
                raise RuntimeError(
                    f"cannot add required column {table.name}.{column.name} to an existing table"
                )
            spec = CreateColumn(column).compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {spec}"))
            done.append(f"{table.name}.{column.name}")
        indexes = {i["name"] for i in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                conn.execute(CreateIndex(index, if_not_exists=True))
                done.append(str(index.name))
    return done


async def schema_version_of(engine: AsyncEngine) -> int | None:
    """The schema version the database is at; None when it has no schema yet (a SQLite
    file that does not exist is not created)."""
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database and database != ":memory:" and not Path(database).is_file():
            return None

    def has_table(conn: Connection) -> bool:
        return inspect(conn).has_table("schema_version")

    async with engine.connect() as conn:
        if not await conn.run_sync(has_table):
            return None
        version = (
            await conn.execute(select(schema_version.c.version).where(schema_version.c.id == 1))
        ).scalar()
    return int(version) if version is not None else None


async def migrate(engine: AsyncEngine) -> int:
    """Create or upgrade the schema; safe to run twice and concurrently."""
    postgres = engine.dialect.name == "postgresql"
    for attempt in range(10):
        try:
            return await _migrate_once(engine, postgres)
        except IntegrityError:
            # SQLite: another process starting at the same moment recorded the schema
            # version first (both saw none): the loser looks again.
            if postgres or attempt == 9:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))  # noqa: sleep-ok - let the winner commit
        except OperationalError as exc:
            # SQLite has no advisory lock: two processes starting together may both try
            # to create a table or column; the loser sees "already exists" and looks again.
            message = str(exc).lower()
            retryable = "already exists" in message or "duplicate column" in message
            if postgres or attempt == 9 or not (retryable or "locked" in message):
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


async def _migrate_once(engine: AsyncEngine, postgres: bool) -> int:
    async with engine.begin() as conn:
        if postgres:
            await conn.execute(text("SELECT pg_advisory_xact_lock(724201)"))
        await conn.run_sync(_add_missing)
        current = (
            await conn.execute(select(schema_version.c.version).where(schema_version.c.id == 1))
        ).scalar()
        if current is None:
            await conn.execute(
                schema_version.insert().values(id=1, version=SCHEMA_VERSION, applied_at=time.time())
            )
        elif current > SCHEMA_VERSION:
            raise RuntimeError(
                f"the database schema is version {current}, newer than this code's {SCHEMA_VERSION}: "
                "deploy the newer release"
            )
        elif current < SCHEMA_VERSION:
            await conn.execute(
                schema_version.update()
                .where(schema_version.c.id == 1)
                .values(version=SCHEMA_VERSION, applied_at=time.time())
            )
    return SCHEMA_VERSION
