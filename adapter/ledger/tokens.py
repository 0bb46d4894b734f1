"""The statements of ``contact-adapter rotate-tokens``: the people still under an unkeyed
visitor token (``oca-``, from releases before keyed tokens), and moving one person's rows
to their keyed token.

Read and written through :meth:`LedgerStore.read` / :meth:`LedgerStore.write`; the
orchestration (asking Rocket.Chat first) is :mod:`adapter.ops.rotate`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import bindparam, select, update

from adapter.core.records import DELIVERING, PENDING, REJECTED
from adapter.ledger.schema import deliveries, people, status_is
from adapter.ledger.sqlite_writer import WriteConnection

__all__ = ["UNKEYED_PREFIX", "UnkeyedPerson", "retoken", "unkeyed_people"]

UNKEYED_PREFIX = "oca-"  # keyed tokens start "ocak-", which LIKE 'oca-%' does not match

d = deliveries.c
_UNKEYED = (
    select(d.id, d.token, d.source, d.person_key, d.fields, d.status)
    .where(d.token.like(UNKEYED_PREFIX + "%"), ~status_is(REJECTED))
    .order_by(d.token, d.created_at.desc())
)
_RETOKEN_DELIVERIES = (
    update(deliveries).where(d.token == bindparam("old")).values(token=bindparam("new"))
)
_RETOKEN_PEOPLE = (
    update(people).where(people.c.token == bindparam("old")).values(token=bindparam("new"))
)


@dataclass(frozen=True)
class UnkeyedPerson:
    """One person under an unkeyed token: their latest delivery and whether one of their
    deliveries is waiting or being delivered right now."""

    token: str
    latest_id: str
    source: str
    person_key: str | None
    fields: dict[str, Any]
    busy: bool


async def unkeyed_people(conn: WriteConnection) -> list[UnkeyedPerson]:
    """Everyone whose deliveries still carry an unkeyed token, oldest token first."""
    found: dict[str, UnkeyedPerson] = {}
    busy: set[str] = set()
    for row in (await conn.execute(_UNKEYED)).mappings():
        token = str(row["token"])
        if row["status"] in (PENDING, DELIVERING):
            busy.add(token)
        if token not in found:
            found[token] = UnkeyedPerson(
                token=token,
                latest_id=str(row["id"]),
                source=str(row["source"]),
                person_key=row["person_key"],
                fields=dict(row["fields"] or {}),
                busy=False,
            )
    return [replace(person, busy=person.token in busy) for person in found.values()]


async def retoken(conn: WriteConnection, old: str, new: str) -> int:
    """Every delivery and provider person under ``old`` carries ``new`` from now on: the
    number of deliveries moved."""
    params = {"old": old, "new": new}
    moved = (await conn.execute(_RETOKEN_DELIVERIES, params)).rowcount
    await conn.execute(_RETOKEN_PEOPLE, params)
    return int(moved or 0)
