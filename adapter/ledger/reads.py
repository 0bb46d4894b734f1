"""Reports from the ledger: listings, counts, a delivery's history, what metrics show.

:class:`LedgerReads` is the read-only half of :class:`~adapter.ledger.store.LedgerStore`
(which extends it): nothing here writes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import and_, func, or_, select, text, union
from sqlalchemy.ext.asyncio import AsyncEngine

from adapter.core.records import PENDING, REJECTED, Attempt, DeliveryRecord
from adapter.ledger.schema import deliveries, delivery_attempts, delivery_events, status_is
from adapter.ledger.sqlite_writer import WriteConnection

__all__ = ["NEXT_DUE", "LedgerReads", "Match", "like_prefix"]

T = TypeVar("T")
d = deliveries.c
_UNNOTIFIED = text("notified_at IS NULL AND status IN ('delivered', 'failed')")  # partial index
NEXT_DUE = select(func.min(d.next_attempt_at)).where(status_is(PENDING))


def like_prefix(value: str) -> str:
    """``value`` as the literal start of a LIKE pattern (``%``, ``_`` and ``\\`` escaped,
    for ``escape="\\"``): a channel named ``%`` matches only a channel named ``%``."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class Match:
    """Who or what an operator searches for, already normalised by the caller.

    A delivery matches when any given key matches (each through an index): its id, the
    start of its id (the short reference a person was shown), a source's event id, the
    person's email key (lower-cased, as intake stores it) or phone key (E.164). A rejected
    delivery stores no person keys, so ``email_key`` also matches a rejected row's email as
    it was given, lower-cased (among rejected rows only: the status index)."""

    delivery_id: str | None = None
    id_prefix: str | None = None
    event_id: str | None = None
    email_key: str | None = None
    phone_key: str | None = None

    def ids(self) -> Any:
        """A query of the ids of the matching deliveries (a union of indexed lookups)."""
        parts: list[Any] = []
        if self.delivery_id:
            parts.append(select(d.id).where(d.id == self.delivery_id))
        if self.id_prefix:
            prefix = self.id_prefix
            after = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            parts.append(select(d.id).where(d.id >= prefix, d.id < after))  # the primary key
        if self.event_id:
            events = delivery_events.c
            parts.append(select(events.delivery_id).where(events.event_id == self.event_id))
        if self.email_key:
            parts.append(select(d.id).where(d.email_key == self.email_key))
            given = func.lower(func.trim(d.fields["email"].as_string()))
            parts.append(select(d.id).where(and_(status_is(REJECTED), given == self.email_key)))
        if self.phone_key:
            parts.append(select(d.id).where(d.phone_key == self.phone_key))
        if not parts:
            return select(d.id).where(text("1 = 0"))
        return parts[0] if len(parts) == 1 else union(*parts)


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
        statuses: Sequence[str] = (),
        until: float | None = None,
        match: Match | None = None,
    ) -> list[DeliveryRecord]:
        """Deliveries newest first; every filter given narrows the list (they combine).

        ``source``: a source (``api``) or a channel, matching its sources
        (``webhook`` → ``webhook:tawkto``…); ``statuses``: any of these; ``match``: see
        :class:`Match`."""
        query = select(deliveries).order_by(d.created_at.desc()).limit(limit).offset(offset)
        if status:
            query = query.where(d.status == status)
        if statuses:
            query = query.where(d.status.in_(list(statuses)))
        if source:
            pattern = like_prefix(source) + ":%"
            query = query.where(or_(d.source == source, d.source.like(pattern, escape="\\")))
        if team:  # a Slack workspace (or Enterprise Grid org) id
            query = query.where(d.team == team)
        if since is not None:
            query = query.where(d.created_at >= since)
        if until is not None:
            query = query.where(d.created_at < until)
        if match is not None:
            query = query.where(d.id.in_(match.ids()))
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
