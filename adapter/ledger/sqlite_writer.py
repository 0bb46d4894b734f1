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
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy.engine import Connection, CursorResult, Dialect, Engine
from sqlalchemy.sql.base import Executable

if TYPE_CHECKING:
    Rows = CursorResult[*tuple[Any, ...]]  # any row shape, as AsyncConnection.execute says

T = TypeVar("T")

__all__ = ["SQLiteWriter", "WriteConnection"]


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

    async def execute(self, statement: Executable, parameters: Any = None) -> Rows:
        return self._conn.execute(statement, parameters)

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> Rows:
        return self._conn.exec_driver_sql(statement, parameters)


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
