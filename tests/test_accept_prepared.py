"""The accept path's statements run straight on sqlite3 (``Prepared``) exactly as through
SQLAlchemy: the same stored values, the same lookups, the same exceptions."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from adapter.ledger import intake as sql
from adapter.ledger.schema import deliveries, metadata
from adapter.ledger.sqlite_writer import _Inline


class _Through:
    """Not the writer's inline connection: every statement goes through SQLAlchemy."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.dialect = conn.dialect

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self._conn.execute(statement, parameters)

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> Any:
        return self._conn.exec_driver_sql(statement, parameters)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Connection]:
    engine = sqlalchemy.create_engine(
        f"sqlite:///{tmp_path / 'c.db'}", isolation_level="AUTOCOMMIT"
    )
    metadata.create_all(engine)
    with engine.connect() as connection:
        yield connection
    engine.dispose()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def row(delivery_id: str, token: str, status: str, created: float, **extra: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": delivery_id,
        "source": "api",
        "event_id": None,
        "person_key": None,
        "token": token,
        "fields": {"name": "A", "email": extra.get("email_key"), "phone": extra.get("phone_key")},
        "status": status,
        "attempts": 0,
        "next_attempt_at": created,
        "callback": None,
        "actor": None,
        "team": None,
        "contact_manager": None,
        "created_at": created,
        "updated_at": created,
        "queued_at": created,
        "extra_callbacks": None,
        "warnings": None,
        "contact_id": None,
        "email_key": None,
        "phone_key": None,
    }
    values.update(extra)
    return values


def stored(conn: Connection, delivery_id: str) -> tuple[Any, ...]:
    columns = ", ".join(f"quote({c.name})" for c in deliveries.c)
    return tuple(
        conn.exec_driver_sql(f"SELECT {columns} FROM deliveries WHERE id = ?", (delivery_id,)).one()
    )


def test_insert_stores_what_sqlalchemy_stores(conn: Connection) -> None:
    for values in (
        row("a", "t1", "pending", 1.0, warnings={"phone": "x"}, email_key="a@example.com"),
        {**row("b", "t2", "ignored", 2.0), "last_error": "why", "token": None},
    ):
        run(sql.insert_deliveries(_Inline(conn), values))
        copy = {**values, "id": values["id"] + "2", "token": "other"}
        run(sql.insert_deliveries(_Through(conn), copy))
        ours, theirs = stored(conn, values["id"]), stored(conn, copy["id"])
        token = list(deliveries.c.keys()).index("token")
        assert [v for i, v in enumerate(ours) if i not in (0, token)] == [
            v for i, v in enumerate(theirs) if i not in (0, token)
        ]
        conn.exec_driver_sql("DELETE FROM deliveries WHERE id = ?", (copy["id"],))


def test_a_second_pending_row_of_a_person_is_an_integrity_error(conn: Connection) -> None:
    run(sql.insert_deliveries(_Inline(conn), row("a", "t1", "pending", 1.0)))
    with pytest.raises(IntegrityError):
        run(sql.insert_deliveries(_Inline(conn), row("b", "t1", "pending", 2.0)))


@pytest.mark.parametrize(
    ("token", "email_key", "phone_key"),
    [
        ("t-pending", "p@example.com", "+1"),
        ("t-new", None, None),
        ("t-new", "e@example.com", None),  # an earlier token by email
        ("t-new", None, "+2"),  # by phone
        ("t-new", "other@example.com", "+2"),  # that phone has another email: someone else
        ("t-new", "e@example.com", "+2"),  # both: the latest one
        ("t-delivered", None, None),
    ],
)
def test_lookups_find_what_sqlalchemy_finds(
    conn: Connection, token: str, email_key: str | None, phone_key: str | None
) -> None:
    rows = [
        row("p1", "t-pending", "pending", 1.0, email_key="p@example.com", phone_key="+1"),
        row("d1", "t-delivered", "delivered", 2.0, contact_id="c1"),
        row("d2", "t-delivered", "failed", 3.0),
        row("e1", "t-email", "delivered", 4.0, email_key="e@example.com"),
        row("f1", "t-phone", "failed", 5.0, email_key="f@example.com", phone_key="+2"),
        row("r1", "t-rejected", "rejected", 6.0, email_key="e@example.com", phone_key="+2"),
    ]
    for values in rows:
        run(sql.insert_deliveries(_Through(conn), values))
    inline = run(sql.latest_or_earlier(_Inline(conn), token, email_key, phone_key))
    through = run(sql.latest_or_earlier(_Through(conn), token, email_key, phone_key))
    assert inline == through
    assert run(sql.latest_for_token(_Inline(conn), token)) == run(
        sql.latest_for_token(_Through(conn), token)
    )
