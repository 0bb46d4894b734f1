"""The worker's claim and outcome statements on SQLite run straight on sqlite3
(``adapter.ledger.worker_sql``) and lease, skip and record exactly what the SQLAlchemy
statements PostgreSQL runs do."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from adapter.core.records import Attempt
from adapter.ledger.engine import create_engine, sqlite_writer_engine
from adapter.ledger.schema import deliveries, delivery_attempts, migrate
from adapter.ledger.store import LedgerStore
from tests.test_accept_prepared import row


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[AsyncEngine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}", sqlite_synchronous="NORMAL")
    asyncio.run(migrate(engine))
    yield engine
    asyncio.run(engine.dispose())


def through_sqlalchemy(engine: AsyncEngine) -> list[str]:
    """Statements the writer's connection runs through SQLAlchemy (not prepared)."""
    seen: list[str] = []
    writer = sqlite_writer_engine(engine)
    assert writer is not None

    @event.listens_for(writer, "before_cursor_execute")
    def _seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    return seen


def test_a_claim_leases_the_earliest_due_rows_skipping_busy_people(engine: AsyncEngine) -> None:
    async def main() -> None:
        store = LedgerStore(engine)
        try:
            rows = [
                row("late", "t-late", "pending", 1.0, next_attempt_at=50.0),
                row("second", "t2", "pending", 1.0, next_attempt_at=20.0),
                row("first", "t1", "pending", 1.0, next_attempt_at=10.0),
                row("third", "t3", "pending", 1.0, next_attempt_at=30.0),
                # t4's person is being delivered by another worker under a live lease.
                row("busy", "t4", "delivering", 1.0, lease_owner="x", lease_until=1000.0),
                row("waits", "t4", "pending", 1.0, next_attempt_at=5.0),
                row("done", "t5", "delivered", 1.0, next_attempt_at=1.0),
            ]
            async with engine.begin() as conn:
                for values in rows:  # one by one: the rows' columns differ
                    await conn.execute(deliveries.insert().values(**values))
            seen = through_sqlalchemy(engine)
            claimed, next_due = await store.claim(
                owner="me", limit=2, now=40.0, lease=60.0, take_over=False
            )
            assert sorted(r.id for r in claimed) == ["first", "second"]
            assert {r.status for r in claimed} == {"delivering"}
            assert next_due is None
            claimed, _ = await store.claim(
                owner="me", limit=5, now=40.0, lease=60.0, take_over=False
            )
            assert [r.id for r in claimed] == ["third"]  # "late" not due; "waits" busy
            assert claimed[0].fields == {"name": "A", "email": None, "phone": None}
            claimed, next_due = await store.claim(
                owner="me", limit=5, now=40.0, lease=60.0, take_over=False
            )
            assert (claimed, next_due) == ([], 5.0)  # the busy person's row is due first
            async with engine.connect() as conn:
                lease = (
                    await conn.execute(
                        select(deliveries.c.lease_owner, deliveries.c.lease_until).where(
                            deliveries.c.id == "first"
                        )
                    )
                ).one()
            assert tuple(lease) == ("me", 100.0)
            assert seen == []  # all of it prepared, none of it through SQLAlchemy
        finally:
            store.close()

    asyncio.run(main())


def test_finishing_records_the_outcome_and_attempt_only_under_our_lease(
    engine: AsyncEngine,
) -> None:
    async def main() -> None:
        store = LedgerStore(engine)
        try:
            async with engine.begin() as conn:
                for values in (
                    row("ours", "t1", "delivering", 1.0, lease_owner="me", contact_id="c0"),
                    row("theirs", "t2", "delivering", 1.0, lease_owner="other"),
                ):
                    await conn.execute(deliveries.insert().values(**values))
            seen = through_sqlalchemy(engine)
            attempt = Attempt(
                started_at=2.0,
                duration=0.1,
                outcome="delivered",
                error=None,
                contact_id="c1",
                worker="me",
            )
            values = {
                "b_id": "ours",
                "b_owner": "me",
                "b_status": "delivered",
                "b_now": 3.0,
                "b_attempts": 1,
                "b_error": None,
                "b_contact_id": None,
                "b_strategy": "visitor",
                "b_delivered_at": 3.0,
                "b_notified_at": None,
            }
            assert await store.finish(values, attempt) == ("c0", "visitor")
            assert await store.finish({**values, "b_id": "theirs"}, attempt) is None
            assert seen == []
            async with engine.connect() as conn:
                status = (
                    await conn.execute(
                        select(deliveries.c.id, deliveries.c.status, deliveries.c.lease_owner)
                    )
                ).all()
                attempts = (
                    await conn.execute(
                        select(delivery_attempts.c.delivery_id, delivery_attempts.c.outcome)
                    )
                ).all()
            assert sorted(map(tuple, status)) == [
                ("ours", "delivered", None),
                ("theirs", "delivering", "other"),
            ]
            assert [tuple(a) for a in attempts] == [("ours", "delivered")]
        finally:
            store.close()

    asyncio.run(main())
