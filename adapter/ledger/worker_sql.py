"""The statements the worker runs for every delivery: claiming due rows, recording an
outcome and its attempt.

On SQLite they run as :class:`~adapter.ledger.sqlite_writer.Prepared` statements on the
writer's inline connection (compiled once; SQLAlchemy's execution of a cached statement
costs several times what SQLite takes to run it, and these run a few times per contact);
on PostgreSQL :class:`~adapter.ledger.store.LedgerStore` runs the SQLAlchemy forms.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, bindparam, exists, func, select, update

from adapter.core.records import DELIVERING, PENDING
from adapter.ledger.reads import NEXT_DUE
from adapter.ledger.schema import deliveries, delivery_attempts, status_is
from adapter.ledger.sqlite_writer import Prepared, WriteConnection

__all__ = [
    "FINISH",
    "FINISH_SQLITE",
    "INSERT_ATTEMPT",
    "INSERT_ATTEMPT_SQLITE",
    "claim_inline",
]

d = deliveries.c

# Recording an outcome (only while we hold the lease); the contact id may have been
# recorded meanwhile (contact-center strategy), so it and the strategy are kept if not given.
FINISH = (
    update(deliveries)
    .where(d.id == bindparam("b_id"), d.lease_owner == bindparam("b_owner"))
    .values(
        status=bindparam("b_status"),
        lease_owner=None,
        lease_until=None,
        updated_at=bindparam("b_now"),
        attempts=bindparam("b_attempts"),
        last_error=bindparam("b_error"),
        contact_id=func.coalesce(bindparam("b_contact_id"), d.contact_id),
        strategy=func.coalesce(bindparam("b_strategy"), d.strategy),
        delivered_at=func.coalesce(bindparam("b_delivered_at"), d.delivered_at),
        notified_at=bindparam("b_notified_at"),
    )
    .returning(d.contact_id, d.strategy)
)
INSERT_ATTEMPT = delivery_attempts.insert()
ATTEMPT_COLUMNS = [
    "delivery_id",
    "started_at",
    "duration",
    "outcome",
    "error",
    "contact_id",
    "worker",
]


def _claim_due() -> Any:
    """Lease the earliest due pending deliveries whose person is not busy, in one statement
    (``b_limit`` of them): what a claim runs on SQLite, where the one writer makes the
    select-then-update of PostgreSQL's ``FOR UPDATE SKIP LOCKED`` unnecessary."""
    now: Any = bindparam("b_now", type_=Float)
    candidate, other = deliveries.alias("candidate"), deliveries.alias("other")
    c = candidate.c
    busy = exists().where(
        other.c.token == c.token,
        status_is(DELIVERING, column=other.c.status),
        other.c.lease_until > now,
        other.c.id != c.id,
    )
    due_ids = (
        select(c.id)
        .where(status_is(PENDING, column=c.status), c.next_attempt_at <= now, ~busy)
        .order_by(c.next_attempt_at)
        .limit(bindparam("b_limit"))
    )
    return (
        update(deliveries)
        .where(d.id.in_(due_ids.scalar_subquery()))
        .values(
            status=DELIVERING,
            lease_owner=bindparam("b_owner"),
            lease_until=bindparam("b_until"),
            updated_at=now,
        )
        .returning(*deliveries.c)
    )


# The worker's hot statements, compiled once for the SQLite writer's inline connection
# (see adapter.ledger.sqlite_writer.Prepared); elsewhere they run through SQLAlchemy.
CLAIM_DUE_SQLITE = Prepared(_claim_due())
NEXT_DUE_SQLITE = Prepared(NEXT_DUE)
FINISH_SQLITE = Prepared(FINISH)
INSERT_ATTEMPT_SQLITE = Prepared(INSERT_ATTEMPT, ATTEMPT_COLUMNS)


def claim_inline(
    conn: WriteConnection, owner: str, limit: int, now: float, lease: float
) -> tuple[list[dict[str, Any]], float | None] | None:
    """A claim of due pending rows on the SQLite writer's connection (two prepared
    statements at most), or None elsewhere: then the caller's statements run."""
    params = {"b_now": now, "b_limit": limit, "b_owner": owner, "b_until": now + lease}
    rows = CLAIM_DUE_SQLITE.rows(conn, params)
    if rows is None:
        return None
    if rows:
        return rows, None
    next_due = NEXT_DUE_SQLITE.rows(conn, {})
    assert next_due is not None
    return [], next(iter(next_due[0].values())) if next_due else None
