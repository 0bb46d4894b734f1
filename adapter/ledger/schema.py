"""Database schema and engine: SQLite (WAL) by default, PostgreSQL when configured.

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
which worker), for the admin page's history of a delivery.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import weakref
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
    event,
    inspect,
    make_url,
    select,
    text,
)
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateColumn, CreateIndex

if TYPE_CHECKING:
    from adapter.settings import Settings

__all__ = [
    "SCHEMA_VERSION",
    "create_engine",
    "deliveries",
    "delivery_attempts",
    "delivery_events",
    "is_postgres",
    "metadata",
    "migrate",
    "normalize_database_url",
    "people",
]

SCHEMA_VERSION = 4
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
)

delivery_events = Table(
    "delivery_events",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("event_id", String(255), primary_key=True),
    Column("delivery_id", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
)

people = Table(
    "people",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("person_key", String(255), primary_key=True),
    Column("token", String(64)),
    Column("fields", JSON, nullable=False),  # raw fields as last given, merged
    Column("updated_at", Float, nullable=False),
)

schema_version = Table(
    "schema_version",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("applied_at", Float, nullable=False),
)


def normalize_database_url(url: str) -> str:
    """Accept Heroku's ``postgres://`` and plain ``sqlite:///`` forms; pick async drivers."""
    url = url.strip()
    if not url:
        raise ValueError("expected a database URL such as sqlite:///contacts.db or postgres://…")
    scheme, _, rest = url.partition("://")
    if not rest:
        raise ValueError("expected a database URL such as sqlite:///contacts.db or postgres://…")
    base = scheme.split("+")[0].lower()
    if base in ("postgres", "postgresql"):
        return "postgresql+asyncpg://" + rest
    if base == "sqlite":
        return "sqlite+aiosqlite://" + rest
    raise ValueError(f"unsupported database {scheme!r}: use sqlite:/// or postgres://")


def is_postgres(url: str) -> bool:
    return url.startswith("postgresql")


def _split_ssl(url: str) -> tuple[str, dict[str, Any]]:
    """asyncpg does not understand libpq's ``sslmode``: turn it into ``ssl=``."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    mode = query.pop("sslmode", None) or query.pop("ssl", None)
    connect_args: dict[str, Any] = {}
    if mode in ("require", "prefer", "allow"):
        context = ssl.create_default_context()
        context.check_hostname = False  # Heroku Postgres uses certificates not tied to the host
        context.verify_mode = ssl.CERT_NONE
        connect_args["ssl"] = context if mode == "require" else mode
    elif mode in ("verify-ca", "verify-full"):
        connect_args["ssl"] = ssl.create_default_context()
    elif mode == "disable":
        connect_args["ssl"] = False  # else asyncpg's default, "prefer", would try TLS first
    return urlunsplit(parts._replace(query=urlencode(query))), connect_args


def create_engine(
    url: str, *, pool_size: int | None = None, sqlite_synchronous: str = "FULL"
) -> AsyncEngine:
    """An async engine; SQLite gets WAL, a busy timeout and synchronous commits.

    PostgreSQL: a process opens at most ``pool_size`` connections (default: the
    ``DATABASE_POOL_SIZE`` setting), kept open for reuse; a transaction that finds them all
    busy waits for one (up to 30 s) rather than opening more, so a formation's total stays
    within the plan's connection limit (docs/heroku.md).
    """
    url = normalize_database_url(url)
    if is_postgres(url):
        url, connect_args = _split_ssl(url)
        return create_async_engine(
            url,
            pool_size=pool_size or _pool_size_setting(),
            max_overflow=0,
            pool_timeout=30,
            pool_pre_ping=True,
            connect_args=connect_args,
        )
    # Readers only (writes go through the process's SQLiteWriter): a fixed set of
    # connections, kept open. Each aiosqlite connection is a thread; overflow connections
    # opened and closed under load cost a thread start and the pragmas every time.
    pool: dict[str, Any] = {}
    if _sqlite_file(make_url(url)):  # in memory: SQLAlchemy's one static connection
        pool = {"pool_size": 8, "max_overflow": 0, "pool_timeout": 30}
    engine = create_async_engine(url, connect_args={"timeout": 30}, **pool)
    _sqlite_pragmas(engine.sync_engine, sqlite_synchronous)
    _SQLITE_SYNCHRONOUS[engine.sync_engine] = sqlite_synchronous
    return engine


def _sqlite_file(url: URL) -> bool:
    """Is this SQLite URL a file that other connections can open too (not in memory)?"""
    return url.database not in (None, "", ":memory:")


# The synchronous mode each SQLite engine was made with, for its writer's own connection.
_SQLITE_SYNCHRONOUS: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def _sqlite_pragmas(engine: Engine, synchronous: str) -> None:
    """Every connection of ``engine``: WAL, the configured fsync policy, a busy timeout."""

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


def sqlite_writer_engine(engine: AsyncEngine) -> Engine | None:
    """A plain (pysqlite) engine on the same SQLite file, for the process's one writer
    (``adapter.sqlite_writer``), or None where there is no file to share (PostgreSQL, an
    in-memory database). Autocommit at the driver: the writer says BEGIN and COMMIT."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or not _sqlite_file(url):
        return None
    sync = sa_create_engine(
        url.set(drivername="sqlite+pysqlite"),
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"timeout": 30, "check_same_thread": False},
    )
    _sqlite_pragmas(sync, _SQLITE_SYNCHRONOUS.get(engine.sync_engine, "FULL"))
    return sync


def engine_for(settings: Settings) -> AsyncEngine:
    """The engine a process of this deployment uses: its URL, pool size and SQLite sync mode."""
    return create_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        sqlite_synchronous=settings.sqlite_synchronous,
    )


def _pool_size_setting() -> int:
    """``DATABASE_POOL_SIZE`` as the environment (or ``.env``) sets it."""
    from adapter.settings import Settings, SettingsError, load_settings

    try:
        return load_settings().database_pool_size
    except SettingsError:  # another setting is wrong: the process reports that one itself
        return int(Settings.model_fields["database_pool_size"].default)


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


async def migrate(engine: AsyncEngine) -> int:
    """Create or upgrade the schema; safe to run twice and concurrently."""
    postgres = engine.dialect.name == "postgresql"
    for attempt in range(10):
        try:
            return await _migrate_once(engine, postgres)
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
