"""Reports from the ledger: listings, counts, a delivery's history, what metrics show.

:class:`LedgerReads` is the read-only half of :class:`~adapter.ledger.store.LedgerStore`
(which extends it): nothing here writes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapter.core.records import PENDING, Attempt, DeliveryRecord
from adapter.ledger.schema import deliveries, delivery_attempts, status_is
from adapter.ledger.sqlite_writer import WriteConnection

__all__ = ["NEXT_DUE", "LedgerReads"]

T = TypeVar("T")
d = deliveries.c
_UNNOTIFIED = text("notified_at IS NULL AND status IN ('delivered', 'failed')")  # partial index
NEXT_DUE = select(func.min(d.next_attempt_at)).where(status_is(PENDING))


class LedgerReads:
    """Read-only questions asked of the ledger."""

    engine: AsyncEngine

    async def read(self, job: Callable[[WriteConnection], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def history(self, delivery_id: str, *, limit: int = 200) -> list[Attempt]:
        """The delivery's tries at Rocket.Chat, newest first (at most ``limit``)."""
        attempts = delivery_attempts.c

        async def _read(conn: WriteConnection) -> Any:
            query = (
                select(delivery_attempts)
                .where(attempts.delivery_id == delivery_id)
                .order_by(attempts.started_at.desc(), attempts.id.desc())
                .limit(limit)
            )
            return (await conn.execute(query)).mappings().all()

        return [Attempt.from_row(row) for row in await self.read(_read)]

    async def select_deliveries(
        self,
        *,
        status: str | None = None,
        source: str | None = None,
        team: str | None = None,
        limit: int = 50,
        offset: int = 0,
        since: float | None = None,
    ) -> list[DeliveryRecord]:
        query = select(deliveries).order_by(d.created_at.desc()).limit(limit).offset(offset)
        if status:
            query = query.where(d.status == status)
        if source:
            # The channel and its sub-sources ("import:leads.csv"); % and _ in what an
            # operator typed are themselves, not LIKE's wildcards.
            pattern = source.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(or_(d.source == source, d.source.like(pattern + ":%", escape="\\")))
        if team:  # a Slack workspace (or Enterprise Grid org) id
            query = query.where(d.team == team)
        if since is not None:
            query = query.where(d.created_at >= since)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [DeliveryRecord.from_row(r) for r in rows]

    async def counts(self, *, since: float | None = None) -> dict[str, dict[str, int]]:
        """``{source: {status: n}}``."""
        query = select(d.source, d.status, func.count()).group_by(d.source, d.status)
        if since is not None:
            query = query.where(d.created_at >= since)
        result: dict[str, dict[str, int]] = {}
        async with self.engine.connect() as conn:
            for source, status, count in (await conn.execute(query)).all():
                result.setdefault(source, {})[status] = int(count)
        return result

    async def oldest_pending(self) -> float | None:
        """``created_at`` of the oldest pending delivery."""
        async with self.engine.connect() as conn:
            found = await conn.scalar(select(func.min(d.created_at)).where(status_is(PENDING)))
        return float(found) if found is not None else None

    async def recent_attempts(self, since: float) -> list[tuple[str, int, float, float]]:
        """Tries at Rocket.Chat since ``since``, by outcome: count, mean and longest seconds
        (from every process: worker dynos' included)."""
        attempts = delivery_attempts.c
        query = (
            select(
                attempts.outcome,
                func.count(),
                func.avg(attempts.duration),
                func.max(attempts.duration),
            )
            .where(attempts.started_at >= since)
            .group_by(attempts.outcome)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(str(o), int(n), float(mean or 0.0), float(top or 0.0)) for o, n, mean, top in rows]

    async def unnotified(self, *, before: float, limit: int) -> list[DeliveryRecord]:
        """Final outcomes last changed before ``before`` whose callbacks were never called."""
        async with self.engine.connect() as conn:
            rows = (
                (
                    await conn.execute(
                        select(deliveries)
                        .where(_UNNOTIFIED)
                        .where(d.updated_at < before)
                        .order_by(d.updated_at)
                        .limit(limit)
                    )
                )
                .mappings()
                .all()
            )
        return [DeliveryRecord.from_row(row) for row in rows]
