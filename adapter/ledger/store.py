"""The ledger store: every SQL statement the delivery queue, the worker and metrics run.

:class:`LedgerStore` owns the engine's use: reads and write transactions (on SQLite all of
a process's writes go through one :class:`~adapter.ledger.sqlite_writer.SQLiteWriter`,
which commits whatever queued up in one transaction), and one method per question asked
of the ledger or change made to it. Methods that take a ``conn`` run inside a transaction
the caller opened with :meth:`LedgerStore.write` (the accept path composes several in
one); the others open their own. Statements used on hot paths are built once: building
and cache-keying a statement costs more than SQLite takes to run it.

Nothing here decides anything: when to retry, what to merge and who is told come from
:mod:`adapter.core.policy` and :mod:`adapter.core.records`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import and_, bindparam, exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from adapter.core.keys import DeploymentKey, new_secret
from adapter.core.records import (
    DELIVERING,
    FAILED,
    MERGED,
    PENDING,
    Attempt,
    DeliveryRecord,
    contact_of,
    merge_into,
)
from adapter.core.retention import hashed_event_id
from adapter.ledger.engine import sqlite_writer_engine
from adapter.ledger.reads import NEXT_DUE as _NEXT_DUE
from adapter.ledger.reads import LedgerReads
from adapter.ledger.schema import (
    deliveries,
    delivery_events,
    deployment_keys,
    status_is,
)
from adapter.ledger.sqlite_writer import SQLiteWriter, WriteConnection
from adapter.ledger.worker_sql import FINISH as _FINISH
from adapter.ledger.worker_sql import (
    FINISH_SQLITE,
    INSERT_ATTEMPT_SQLITE,
    claim_inline,
)
from adapter.ledger.worker_sql import INSERT_ATTEMPT as _INSERT_ATTEMPT

__all__ = ["LedgerStore", "WriteConnection"]

T = TypeVar("T")
d = deliveries.c

# An event id is kept in clear, or as a digest once its delivery was erased (retention or
# forget: adapter.core.retention): a replay of it is still a duplicate.
_FIND_EVENT = (
    select(deliveries, delivery_events.c.created_at.label("event_created_at"))
    .join(delivery_events, delivery_events.c.delivery_id == d.id)
    .where(
        delivery_events.c.source == bindparam("source"),
        delivery_events.c.event_id.in_([bindparam("event_id"), bindparam("kept_id")]),
    )
    .limit(1)
)
_SEEN_EVENTS = select(delivery_events.c.event_id).where(
    delivery_events.c.source == bindparam("source"),
    delivery_events.c.event_id.in_(bindparam("event_ids", expanding=True)),
)
_GET = select(deliveries).where(d.id == bindparam("id"))


def _token_busy(now: float) -> Any:
    """Another delivery of the same person is being delivered (under a live lease)."""
    other = deliveries.alias("other")
    return exists().where(
        other.c.token == d.token,
        status_is(DELIVERING, column=other.c.status),
        other.c.lease_until > now,
        other.c.id != d.id,
    )


class LedgerStore(LedgerReads):
    """Reads and writes of the deliveries ledger for one process."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # SQLite has one writer at a time: this process's writes go through one queue and
        # share transactions (one commit, one fsync, for everything that queued meanwhile).
        writer_engine = sqlite_writer_engine(engine)
        self._writer = SQLiteWriter(writer_engine) if writer_engine is not None else None
        self._key: DeploymentKey | None = None

    def close(self) -> None:
        """Release the SQLite writer's connection and thread (before ``engine.dispose()``)."""
        if self._writer is not None:
            self._writer.close()

    async def read(self, job: Callable[[WriteConnection], Awaitable[T]]) -> T:
        """Run a read-only ``job``: inline on SQLite (see adapter.ledger.sqlite_writer),
        else on a pooled connection."""
        if self._writer is not None:
            return await self._writer.read(job)
        async with self.engine.connect() as conn:
            return await job(conn)

    async def write(self, job: Callable[[WriteConnection], Awaitable[T]]) -> T:
        """Run ``job`` in a write transaction and commit before returning its result."""
        if self._writer is not None:
            return await self._writer.run(job)
        async with self.engine.begin() as conn:
            return await job(conn)

    async def write_apart(self, job: Callable[[WriteConnection], Awaitable[T]]) -> T:
        """Run ``job`` in a transaction of its own, outside the SQLite writer's batches
        (for a job that waits on something else, e.g. DNS, while it holds the lock)."""
        async with self.engine.begin() as conn:
            return await job(conn)

    async def _write_retrying(self, job: Callable[[WriteConnection], Awaitable[T]]) -> T:
        """``write``, again (up to three times) when a pending row for the same person was
        inserted between our look and our update (SQLite reads outside the write
        transaction): the job looks again."""
        for tries in range(3):
            try:
                return await self.write(job)
            except IntegrityError:
                if tries == 2:
                    raise
        raise AssertionError("unreachable")

    async def deployment_key(self, configured: str | None) -> DeploymentKey:
        """The deployment's key: from ``configured`` (the ``DEPLOYMENT_SECRET`` setting),
        else the secret kept in the ledger, generated by whichever process needs it first
        (a process that loses that race reads the winner's). Read once per process."""
        if self._key is None:
            self._key = DeploymentKey(configured or await self._kept_secret("visitor-token"))
        return self._key

    async def _kept_secret(self, name: str) -> str:
        query = select(deployment_keys.c.value).where(deployment_keys.c.name == name)

        async def _read(conn: WriteConnection) -> str | None:
            value = (await conn.execute(query)).scalar()
            return None if value is None else str(value)

        async def _insert(conn: WriteConnection) -> None:
            row = {"name": name, "value": new_secret(), "created_at": time.time()}
            await conn.execute(deployment_keys.insert().values(**row))

        kept = await self.read(_read)
        if kept is None:
            # Another process may generate it first: then theirs is the one read back.
            with contextlib.suppress(IntegrityError):
                await self.write(_insert)
            kept = await self.read(_read)
        if kept is None:
            raise RuntimeError("the deployment secret could not be kept in the ledger")
        return kept

    async def checkpoint(self) -> bool:
        """SQLite: write the WAL into the database file and empty it (after an erasure, so
        no copy of the erased bytes stays in the WAL). True when done; PostgreSQL: nothing
        to do here (docs/privacy.md says what VACUUM and backups keep)."""
        if self._writer is None:
            return True
        return await self._writer.checkpoint()

    def kept_event_id(self, event_id: str) -> str:
        """The digest an event id is kept as once its delivery was erased (the id itself
        until the deployment's key was read: nothing can have been erased with it unread
        in a process that accepts, since accepting reads it first)."""
        if self._key is None:
            return event_id
        return hashed_event_id(event_id, self._key.digest)

    # -- reads ---------------------------------------------------------------------------

    async def find_event(self, source: str, event_id: str) -> tuple[DeliveryRecord, float] | None:
        """The delivery ``source``'s event led to, and when the event was recorded."""

        async def _read(conn: WriteConnection) -> Any:
            params = {
                "source": source,
                "event_id": event_id,
                "kept_id": self.kept_event_id(event_id),
            }
            return (await conn.execute(_FIND_EVENT, params)).mappings().first()

        row = await self.read(_read)
        if row is None:
            return None
        return DeliveryRecord.from_row(row), float(row["event_created_at"])

    async def seen_events(
        self, source: str, event_ids: Sequence[str]
    ) -> tuple[set[str], DeliveryRecord | None]:
        """Which of ``event_ids`` were recorded before; when all were, the delivery the
        first one leads to."""

        kept = {self.kept_event_id(i): i for i in event_ids}

        async def _read(conn: WriteConnection) -> tuple[set[str], Any]:
            params = {"source": source, "event_ids": [*event_ids, *kept]}
            found = {str(row[0]) for row in await conn.execute(_SEEN_EVENTS, params)}
            seen = {kept.get(i, i) for i in found}
            if len(seen) < len(event_ids):
                return seen, None
            first = event_ids[0]
            params = {"source": source, "event_id": first, "kept_id": self.kept_event_id(first)}
            return seen, (await conn.execute(_FIND_EVENT, params)).mappings().first()

        seen, row = await self.read(_read)
        return seen, DeliveryRecord.from_row(row) if row is not None else None

    async def get(self, delivery_id: str) -> DeliveryRecord | None:
        async def _read(conn: WriteConnection) -> Any:
            return (await conn.execute(_GET, {"id": delivery_id})).mappings().first()

        row = await self.read(_read)
        return DeliveryRecord.from_row(row) if row is not None else None

    # -- taking deliveries ---------------------------------------------------------------

    async def take(
        self, delivery_id: str, *, owner: str, now: float, lease: float
    ) -> DeliveryRecord | None:
        """Lease one pending delivery to ``owner`` (the fast path), unless its person is
        being delivered already."""

        async def _tx(conn: WriteConnection) -> Any:
            query = (
                update(deliveries)
                .where(d.id == delivery_id, status_is(PENDING))
                .where(~_token_busy(now))
                .values(
                    status=DELIVERING, lease_owner=owner, lease_until=now + lease, updated_at=now
                )
                .returning(*deliveries.c)
            )
            return (await conn.execute(query)).mappings().first()

        row = await self.write(_tx)
        return DeliveryRecord.from_row(row) if row is not None else None

    async def claim(
        self,
        *,
        owner: str,
        limit: int,
        now: float,
        lease: float,
        take_over: bool,
    ) -> tuple[list[DeliveryRecord], float | None]:
        """Lease up to ``limit`` due deliveries to ``owner`` (none whose person is busy).

        Returns them, and when there were none, the earliest ``next_attempt_at`` among
        pending deliveries (None: nothing pending), read in the same transaction, so an
        idle worker knows how long to sleep at the cost of its one claim.

        ``take_over``: also take rows whose worker died (lease expired), recording the
        lost attempt; one whose person has a newer pending delivery is folded into it.
        """
        expired = and_(status_is(DELIVERING), d.lease_until < now)
        waiting = and_(status_is(PENDING), d.next_attempt_at <= now)
        not_busy = ~_token_busy(now)
        due = or_(waiting, expired)

        async def _tx(conn: WriteConnection) -> Any:
            ids: list[str] = []
            if take_over:
                ids = await self._take_over_expired(conn, expired, not_busy, limit, now)
            elif (claimed := claim_inline(conn, owner, limit, now, lease)) is not None:
                return claimed
            if len(ids) < limit:
                # Two index range scans rather than one OR: the pending one walks
                # ix_deliveries_due in next_attempt_at order and stops at the limit, so a
                # claim costs the same with 10 or 100,000 contacts queued.
                pending_query = (
                    select(d.id)
                    .where(waiting)
                    .where(not_busy)
                    .order_by(d.next_attempt_at)
                    .limit(limit - len(ids))
                    .with_for_update(skip_locked=True)
                )
                ids += [r[0] for r in (await conn.execute(pending_query)).all()]
            if not ids:
                return [], (await conn.execute(_NEXT_DUE)).scalar()
            query = (
                update(deliveries)
                .where(d.id.in_(ids), due)
                .values(
                    status=DELIVERING, lease_owner=owner, lease_until=now + lease, updated_at=now
                )
                .returning(*deliveries.c)
            )
            return (await conn.execute(query)).mappings().all(), None

        rows, next_due = await self.write(_tx)
        records = [DeliveryRecord.from_row(r) for r in rows]
        return records, float(next_due) if next_due is not None else None

    async def _take_over_expired(
        self, conn: WriteConnection, expired: Any, not_busy: Any, limit: int, now: float
    ) -> list[str]:
        """Rows whose worker died (lease expired): the ids to deliver again. One whose
        person has a newer pending delivery is folded into that one instead, since it
        carries everything and must not be overwritten by older details afterwards."""
        query = (
            select(deliveries)
            .where(expired)
            .where(not_busy)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids: list[str] = []
        for row in (await conn.execute(query)).mappings().all():
            record = DeliveryRecord.from_row(row)
            lost = Attempt(
                started_at=record.updated_at,  # when that worker claimed it
                duration=now - record.updated_at,
                outcome="abandoned",
                error="the worker delivering it stopped before recording Rocket.Chat's answer "
                "(lease expired); delivered again, by the same contact token",
                worker=record.lease_owner,
            )
            await conn.execute(_INSERT_ATTEMPT, lost.values(record.id))
            other = await self._pending_sibling(conn, record)
            if other is None:
                ids.append(record.id)
            else:
                await self._fold_into(conn, record, other, owner=None, now=now)
        return ids

    async def heartbeat(self, *, owner: str, ids: Sequence[str], until: float) -> None:
        """Extend the leases of ``owner``'s rows still in flight."""

        async def _tx(conn: WriteConnection) -> None:
            await conn.execute(
                update(deliveries)
                .where(d.id.in_(list(ids)), d.lease_owner == owner, status_is(DELIVERING))
                .values(lease_until=until)
            )

        await self.write(_tx)

    async def hand_back(self, *, owner: str, now: float) -> None:
        """``owner``'s claimed rows become pending again (or fold into a newer sibling)."""

        async def _tx(conn: WriteConnection) -> None:
            query = select(deliveries).where(d.lease_owner == owner, status_is(DELIVERING))
            for row in (await conn.execute(query)).mappings().all():
                record = DeliveryRecord.from_row(row)
                other = await self._pending_sibling(conn, record)
                if other is not None:
                    await self._fold_into(conn, record, other, owner=owner, now=now)
                    continue
                await conn.execute(
                    update(deliveries)
                    .where(d.id == record.id, d.lease_owner == owner)
                    .values(status=PENDING, lease_owner=None, lease_until=None, updated_at=now)
                )

        await self._write_retrying(_tx)

    # -- recording what happened ---------------------------------------------------------

    async def remember_contact_id(self, delivery_id: str, contact_id: str, now: float) -> None:
        """Rocket.Chat gave the contact an id (before the outcome is recorded)."""

        async def _tx(conn: WriteConnection) -> None:
            await conn.execute(
                update(deliveries)
                .where(d.id == delivery_id)
                .values(contact_id=contact_id, updated_at=now)
            )

        await self.write(_tx)

    async def release(
        self,
        record: DeliveryRecord,
        *,
        owner: str,
        now: float,
        next_attempt_at: float,
        last_error: str | None,
        attempts: int | None = None,
        attempt: Attempt | None = None,
    ) -> None:
        """Hand a claimed row back as pending (or fold it into a newer pending one),
        recording the ``attempt`` that ended this way, if there was one."""
        values: dict[str, Any] = {
            "status": PENDING,
            "lease_owner": None,
            "lease_until": None,
            "next_attempt_at": next_attempt_at,
            "last_error": last_error,
            "updated_at": now,
        }
        if attempts is not None:
            values["attempts"] = attempts

        async def _tx(conn: WriteConnection) -> None:
            # Another pending row for this person may have arrived meanwhile: it carries
            # everything we know, so fold ours into it.
            other = await self._pending_sibling(conn, record)
            if other is not None:
                await self._fold_into(conn, record, other, owner=owner, now=now)
            else:
                changed = await conn.execute(
                    update(deliveries)
                    .where(d.id == record.id, d.lease_owner == owner)
                    .values(**values)
                )
                if changed.rowcount == 0:
                    return  # our lease was taken over: the attempt is not ours to tell
            if attempt is not None:
                await conn.execute(_INSERT_ATTEMPT, attempt.values(record.id))

        await self._write_retrying(_tx)

    async def finish(
        self, values: Mapping[str, Any], attempt: Attempt | None
    ) -> tuple[str | None, str | None] | None:
        """Record a final outcome (``_FINISH``'s ``b_*`` parameters) while ``b_owner``
        holds the lease: the stored contact id and strategy, or None when the lease was
        taken over meanwhile (the other worker reports the outcome)."""

        async def _tx(conn: WriteConnection) -> tuple[str | None, str | None] | None:
            rows = FINISH_SQLITE.rows(conn, values)
            if rows is not None:  # the SQLite writer's inline connection
                if rows and attempt is not None:
                    INSERT_ATTEMPT_SQLITE.run(conn, attempt.values(str(values["b_id"])))
                return (rows[0]["contact_id"], rows[0]["strategy"]) if rows else None
            row = (await conn.execute(_FINISH, dict(values))).first()
            if row is not None and attempt is not None:
                await conn.execute(_INSERT_ATTEMPT, attempt.values(str(values["b_id"])))
            return (row.contact_id, row.strategy) if row is not None else None

        return await self.write(_tx)

    async def postpone_due(self, until: float) -> None:
        """No pending delivery is due before ``until`` (a rate-limited window)."""

        async def _tx(conn: WriteConnection) -> None:
            await conn.execute(
                update(deliveries)
                .where(status_is(PENDING), d.next_attempt_at < until)
                .values(next_attempt_at=until)
            )

        await self.write(_tx)

    async def due_now(self, now: float) -> int:
        """Rocket.Chat is back after an outage: every pending delivery waiting out a retry
        backoff is due at once (their failures were the outage's, not theirs)."""

        async def _tx(conn: WriteConnection) -> int:
            changed = await conn.execute(
                update(deliveries)
                .where(status_is(PENDING), d.next_attempt_at > now, d.attempts > 0)
                .values(next_attempt_at=now)
            )
            return int(changed.rowcount)

        return await self.write(_tx)

    async def claim_notification(self, delivery_id: str, now: float) -> bool:
        """Take the right to tell a delivery's outcome (only one process wins it)."""

        async def _tx(conn: WriteConnection) -> int:
            claimed = await conn.execute(
                update(deliveries)
                .where(d.id == delivery_id, d.notified_at.is_(None))
                .values(notified_at=now)
            )
            return int(claimed.rowcount)

        return bool(await self.write(_tx))

    async def retry(self, delivery_id: str, now: float) -> bool:
        """Put a failed delivery back in the queue (attempts reset), unless the person
        has a waiting one already."""
        waiting = deliveries.alias("waiting")

        async def _tx(conn: WriteConnection) -> int:
            changed = await conn.execute(
                update(deliveries)
                .where(d.id == delivery_id, status_is(FAILED))
                .where(
                    ~exists().where(
                        waiting.c.token == d.token, status_is(PENDING, column=waiting.c.status)
                    )
                )
                .values(
                    status=PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    queued_at=now,  # the give-up clock starts again; created_at stays
                    updated_at=now,
                    notified_at=None,
                )
            )
            return int(changed.rowcount)

        return bool(await self.write(_tx))

    # -- folding a row into a newer one of the same person ---------------------------

    @staticmethod
    async def _pending_sibling(
        conn: WriteConnection, record: DeliveryRecord
    ) -> Mapping[Any, Any] | None:
        if record.token is None:
            return None
        query = (
            select(deliveries)
            .where(d.token == record.token, status_is(PENDING), d.id != record.id)
            .with_for_update()
        )
        return (await conn.execute(query)).mappings().first()

    @staticmethod
    async def _fold_into(
        conn: WriteConnection,
        record: DeliveryRecord,
        other: Mapping[Any, Any],
        *,
        owner: str | None,
        now: float,
    ) -> bool:
        """Mark ``record`` merged into the pending delivery ``other`` of the same person.

        ``other`` is newer: its fields win, ours fill the gaps. It takes over our callbacks
        (each still told the outcome once) and our source events (a retried event gets its
        answer). ``owner``: we hold ``record``'s lease; None: it must be an expired one.
        """
        condition = (
            d.lease_owner == owner
            if owner is not None
            else and_(status_is(DELIVERING), d.lease_until < now)
        )
        changed = await conn.execute(
            update(deliveries)
            .where(d.id == record.id, condition)
            .values(
                status=MERGED,
                last_error=f"merged into delivery {other['id']}, which carries its details",
                lease_owner=None,
                lease_until=None,
                updated_at=now,
            )
        )
        if not changed.rowcount:
            return False
        _, carried = merge_into(
            other,
            record.contact or contact_of(other["fields"]),
            callbacks=record.callbacks,
            contact_manager=record.contact_manager,
            contact_id=record.contact_id,
            newer_wins=False,
        )
        carried["updated_at"] = now
        await conn.execute(update(deliveries).where(d.id == other["id"]).values(**carried))
        await conn.execute(
            update(delivery_events)
            .where(delivery_events.c.delivery_id == record.id)
            .values(delivery_id=other["id"])
        )
        return True
