"""Database schema and engine: SQLite (WAL) by default, PostgreSQL when configured.

The schema is created by :func:`migrate`, which is safe to run twice and while
other processes use the database: ``create_all`` only adds what is missing, and a
``schema_version`` row records what this code expects (an advisory lock
serialises concurrent runs on PostgreSQL). We chose this over Alembic because the
schema is three small tables that only ever gain columns and indexes; Alembic's
revision files would be more machinery than migration.
"""

from __future__ import annotations

import ssl
import time
from typing import Any
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
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = [
    "SCHEMA_VERSION",
    "create_engine",
    "deliveries",
    "delivery_events",
    "is_postgres",
    "metadata",
    "migrate",
    "normalize_database_url",
    "people",
]

SCHEMA_VERSION = 1
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
    Index("ix_deliveries_due", "status", "next_attempt_at"),
    Index("ix_deliveries_token", "token"),
    Index("ix_deliveries_created", "created_at"),
    # At most one waiting delivery per person: a second accept merges into it.
    Index(
        "uq_deliveries_pending_token",
        "token",
        unique=True,
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
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
    return urlunsplit(parts._replace(query=urlencode(query))), connect_args


def create_engine(
    url: str, *, pool_size: int = 10, sqlite_synchronous: str = "FULL"
) -> AsyncEngine:
    """An async engine; SQLite gets WAL, a busy timeout and synchronous commits."""
    url = normalize_database_url(url)
    if is_postgres(url):
        url, connect_args = _split_ssl(url)
        return create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            connect_args=connect_args,
        )
    engine = create_async_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={sqlite_synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


async def migrate(engine: AsyncEngine) -> int:
    """Create or upgrade the schema; safe to run twice and concurrently."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(724201)"))
        await conn.run_sync(metadata.create_all, checkfirst=True)
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
