"""Database engines: SQLite (WAL, one writer per process) by default, PostgreSQL when set.

:func:`engine_for` is the engine a process of a deployment uses; :func:`create_engine`
takes the URL, the pool size and SQLite's fsync policy as arguments (it reads no
environment). :func:`sqlite_writer_engine` is the plain engine of the process's one SQLite
writer (:mod:`adapter.ledger.sqlite_writer`).
"""

from __future__ import annotations

import ssl
import weakref
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy import event, make_url
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from adapter.settings import Settings

__all__ = [
    "create_engine",
    "engine_for",
    "is_postgres",
    "normalize_database_url",
    "sqlite_writer_engine",
]


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


def create_engine(url: str, *, pool_size: int = 5, sqlite_synchronous: str = "FULL") -> AsyncEngine:
    """An async engine; SQLite gets WAL, a busy timeout and synchronous commits.

    PostgreSQL: a process opens at most ``pool_size`` connections (``engine_for`` passes
    the ``DATABASE_POOL_SIZE`` setting), kept open for reuse; a transaction that finds them all
    busy waits for one (up to 30 s) rather than opening more, so a formation's total stays
    within the plan's connection limit (docs/heroku.md).
    """
    url = normalize_database_url(url)
    if is_postgres(url):
        url, connect_args = _split_ssl(url)
        return create_async_engine(
            url,
            pool_size=pool_size,
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
    """Every connection of ``engine``: WAL, the configured fsync policy, a busy timeout, and
    ``secure_delete`` (deleted or overwritten content is zeroed in the file, so an erased
    person leaves no bytes behind in free pages or cells: docs/privacy.md)."""

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA secure_delete=ON")
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
