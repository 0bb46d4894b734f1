"""Group commit for SQLite: a process's one writer, one fsync per batch, no thread ping-pong.

SQLite has one writer at a time. Every write transaction of a process goes through its
:class:`SQLiteWriter`: write jobs queue up and run one after another in a single
transaction, committed once (one fsync) for the whole batch; each caller gets its job's
result only after that commit. If any job fails, the batch is rolled back and every job
is run again on its own, so one job's IntegrityError reaches only its caller. Within one
process this also replaces SQLite's busy handler (which sleeps, and lets later writers
overtake) with a queue in arrival order.

Where the time goes: taking the write lock (``BEGIN IMMEDIATE``, which may wait for
another process) and committing (the fsync) happen on a dedicated thread, off the event
loop. The jobs' statements run inline on the event loop, over a plain ``sqlite3``
connection that holds the lock: on a WAL database a statement costs tens of
microseconds, while sending each one to a driver thread and waiting for the answer
(aiosqlite) costs far more, and made a batch of accepts latency-bound with both threads
mostly idle. A job may only await the connection it is given (that never suspends);
between jobs the writer yields to the loop so requests keep being read meanwhile.
Read-only jobs (:meth:`SQLiteWriter.read`) run inline too, on a connection of their own.

The accept path's few statements go further (:class:`Prepared`): compiled once, they run
straight on the inline connection's ``sqlite3`` connection, with SQLAlchemy's own type
processing and exception classes. SQLAlchemy's execution of a cached statement (its cache
key, parameters, execution context and result) costs 3-5 times what SQLite takes to run
it; anywhere else (PostgreSQL, a job given an ``AsyncConnection``) they run through it.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import Connection, CursorResult, Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.base import Executable

if TYPE_CHECKING:
    Rows = CursorResult[*tuple[Any, ...]]  # any row shape, as AsyncConnection.execute says

T = TypeVar("T")

__all__ = ["Prepared", "SQLiteWriter", "WriteConnection"]


class WriteConnection(Protocol):
    """What a write job may use: ``AsyncConnection`` has it, and so has the inline one."""

    @property
    def dialect(self) -> Dialect: ...

    async def execute(self, statement: Executable, parameters: Any = None) -> Rows: ...

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> Rows: ...


Job = Callable[[WriteConnection], Awaitable[Any]]


class _Inline:
    """A sync connection behind the awaitable methods jobs call; nothing here suspends."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @property
    def dialect(self) -> Dialect:
        return self._conn.dialect

    @property
    def dbapi(self) -> sqlite3.Connection:
        """The ``sqlite3`` connection (in the writer's transaction, for :class:`Prepared`)."""
        dbapi = self._conn.connection.dbapi_connection
        assert isinstance(dbapi, sqlite3.Connection)
        return dbapi

    async def execute(self, statement: Executable, parameters: Any = None) -> Rows:
        return self._conn.execute(statement, parameters)

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> Rows:
        return self._conn.exec_driver_sql(statement, parameters)


class Prepared:
    """``statement`` compiled once for SQLite (for an INSERT, with exactly the columns
    ``column_keys``), run on the inline connection's ``sqlite3`` connection.

    :meth:`rows` (a SELECT) and :meth:`run` return None when ``conn`` is not the writer's
    inline connection: the caller executes ``statement`` through SQLAlchemy instead. Bound
    values and result columns go through the SQLAlchemy types' own processors (JSON to
    and from text); a driver error is raised as SQLAlchemy raises it (IntegrityError…).
    """

    _dialect = SQLiteDialect_pysqlite()

    def __init__(self, statement: Any, column_keys: list[str] | None = None) -> None:
        dialect = self._dialect
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        self.statement = statement
        self.sql = str(compiled)
        names = list(compiled.positiontup or ())
        binds = compiled.binds
        # Bound values given in the statement (LIMIT 1…); the others come from each call.
        self._given = {n: b.effective_value for n, b in binds.items() if not b.required}
        self._params = [
            (n, binds[n].type.dialect_impl(dialect).bind_processor(dialect)) for n in names
        ]
        # An INSERT whose compiled form adds columns (Python-side defaults) is not for us.
        self.complete = column_keys is None or set(names) <= set(column_keys)
        # A SELECT's columns, or an UPDATE's or INSERT's RETURNING columns.
        columns = list(getattr(statement, "exported_columns", ()))
        self._keys = [c.key for c in columns]
        self._results = [
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
        ]

    def _execute(self, conn: WriteConnection, params: Mapping[str, Any]) -> sqlite3.Cursor | None:
        if not isinstance(conn, _Inline) or not self.complete:
            return None
        values = []
        for name, process in self._params:
            value = params[name] if name in params else self._given[name]
            values.append(process(value) if process is not None else value)
        try:
            return conn.dbapi.execute(self.sql, values)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(
                self.sql, values, exc, sqlite3.Error, dialect=self._dialect
            ) from exc

    def rows(self, conn: WriteConnection, params: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        """The SELECT's (or RETURNING's) rows as dicts, or None (not the inline connection)."""
        cursor = self._execute(conn, params)
        if cursor is None:
            return None
        keys, results = self._keys, self._results
        return [
            {
                key: process(value) if process is not None else value
                for key, process, value in zip(keys, results, row, strict=True)
            }
            for row in cursor.fetchall()
        ]

    def run(self, conn: WriteConnection, params: Mapping[str, Any]) -> bool:
        """Run the statement (an INSERT, UPDATE…): False when it was not (not inline)."""
        return self._execute(conn, params) is not None


class SQLiteWriter:
    """Runs write jobs in batched transactions on one connection (see the module doc)."""

    MAX_BATCH = 128

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None  # the writer's; its lock is taken per batch
        self._reader: Connection | None = None  # inline reads (see read())
        self._thread: ThreadPoolExecutor | None = None  # made on first use, again after close
        self._jobs: collections.deque[tuple[Job, asyncio.Future[Any]]] = collections.deque()
        self._task: asyncio.Task[None] | None = None

    async def run(self, job: Callable[[WriteConnection], Awaitable[T]]) -> T:
        """Run ``job`` in a write transaction; return its result once committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.append((job, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await future

    async def read(self, job: Callable[[WriteConnection], Awaitable[T]]) -> T:
        """Run a read-only ``job`` inline on a connection of its own: a WAL reader sees
        what was committed and never waits for the writer, so there is nothing to hand
        to a thread. Each statement reads the latest commit."""
        if self._reader is None or self._reader.closed:
            self._reader = self.engine.connect()
        reader = self._reader
        try:
            return await job(_Inline(reader))
        finally:
            reader.rollback()  # SQLAlchemy's bookkeeping only: the driver is in autocommit

    async def checkpoint(self, *, tries: int = 50) -> bool:
        """Copy the WAL into the database file and truncate the WAL to nothing
        (``wal_checkpoint(TRUNCATE)``), on a connection of its own, off the loop. A reader
        in the middle of a read or a batch being written keeps it from completing: tried
        again (a short while apart) up to ``tries`` times. True when the WAL was emptied."""
        loop = asyncio.get_running_loop()
        for attempt in range(tries):
            if not await loop.run_in_executor(None, self._checkpoint):
                return True
            await asyncio.sleep(0.02 * (attempt + 1))  # noqa: sleep-ok - a reader's read ends
        return False

    def _checkpoint(self) -> bool:
        """One TRUNCATE checkpoint; True when it was kept from completing (busy)."""
        with self.engine.connect() as conn:
            row = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
        return bool(row is None or row[0])

    def close(self) -> None:
        """Close the connections and the lock thread (the engine's owner disposes of it).
        A later job opens them again."""
        for conn in (self._conn, self._reader):
            if conn is not None:
                conn.close()
        self._conn = self._reader = None
        if self._thread is not None:
            self._thread.shutdown(wait=False)
            self._thread = None

    def _lock_thread(self) -> ThreadPoolExecutor:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        return self._thread

    # -- batches -------------------------------------------------------------------

    async def _drain(self) -> None:
        batch: list[tuple[Job, asyncio.Future[Any]]] = []
        try:
            while self._jobs:
                batch = [self._jobs.popleft() for _ in range(min(len(self._jobs), self.MAX_BATCH))]
                try:
                    results = await self._transaction([job for job, _ in batch])
                except Exception as exc:
                    if len(batch) == 1:
                        _settle(batch[0][1], exception=exc)
                    else:
                        for job, future in batch:
                            await self._alone(job, future)
                else:
                    for (_, future), result in zip(batch, results, strict=True):
                        _settle(future, result=result)
                batch = []
        finally:
            # Cancelled (shutdown): nobody may wait forever on a job that will not run.
            for _, future in [*batch, *self._jobs]:
                _settle(future, exception=RuntimeError("the database writer stopped"))
            self._jobs.clear()

    async def _alone(self, job: Job, future: asyncio.Future[Any]) -> None:
        try:
            (result,) = await self._transaction([job])
        except Exception as exc:
            _settle(future, exception=exc)
        else:
            _settle(future, result=result)

    async def _transaction(self, jobs: list[Job]) -> list[Any]:
        loop = asyncio.get_running_loop()
        conn = await loop.run_in_executor(self._lock_thread(), self._begin)
        results: list[Any] = []
        try:
            inline = _Inline(conn)
            for i, job in enumerate(jobs):
                if i:
                    await asyncio.sleep(0)  # let the loop read requests between jobs
                results.append(await job(inline))
        except BaseException:
            self._rollback(conn)  # no fsync, quick: fine on the loop, even when cancelled
            raise
        try:
            await loop.run_in_executor(self._lock_thread(), self._commit, conn)
        except BaseException:
            self._rollback(conn)
            raise
        return results

    # -- on the lock thread ----------------------------------------------------------

    def _begin(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self.engine.connect()
        try:
            self._conn.exec_driver_sql("BEGIN IMMEDIATE")  # waits up to busy_timeout
        except Exception:
            self._discard()
            raise
        return self._conn

    def _commit(self, conn: Connection) -> None:
        conn.exec_driver_sql("COMMIT")
        conn.commit()  # SQLAlchemy's own bookkeeping (the driver is in autocommit)

    def _rollback(self, conn: Connection) -> None:
        try:
            if _in_transaction(conn):
                conn.exec_driver_sql("ROLLBACK")
            conn.rollback()
        except Exception:
            self._discard()

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()
                conn.close()
            except Exception:  # noqa: S110 - it is being thrown away
                pass


def _in_transaction(conn: Connection) -> bool:
    dbapi = conn.connection.dbapi_connection
    return bool(getattr(dbapi, "in_transaction", False))


def _settle(
    future: asyncio.Future[Any], *, result: Any = None, exception: BaseException | None = None
) -> None:
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
