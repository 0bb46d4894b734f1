"""The statements the accept path runs inside its one transaction (see LedgerStore.write).

:mod:`adapter.delivery.intake` composes these into one accept: look up the provider's
person, the person's waiting or latest delivery (by token, else an earlier token of the
same email or phone), then insert or update one row and record the source's event ids.
The bulk accept of imports reads the same in batches. Every statement here is built once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, case, literal_column, select, union_all, update

from adapter.core.records import DELIVERED, DELIVERING, FAILED, PENDING, REJECTED, DeliveryRecord
from adapter.ledger.schema import deliveries, delivery_events, people, status_is
from adapter.ledger.sqlite_writer import Prepared, WriteConnection

__all__ = [
    "events_seen",
    "incomplete_row",
    "insert_deliveries",
    "insert_events",
    "known_for_tokens",
    "latest_for_token",
    "latest_or_earlier",
    "person",
    "plan_each_batch",
    "record_events",
    "records",
    "save_person",
    "update_delivery",
    "waiting_for_tokens",
]

d = deliveries.c
_INSERT_EVENT = delivery_events.insert()


_LATEST_FOR_TOKEN = (
    select(deliveries)
    # Literals, not IN (…) of parameters: an IN list is an "expanding" parameter that
    # SQLAlchemy renders again on every execution; this runs once per accepted contact.
    .where(
        d.token == bindparam("token"),
        status_is(PENDING, DELIVERED, DELIVERING, FAILED),
    )
    .order_by(case((status_is(PENDING), 0), else_=1), d.created_at.desc())
    .limit(1)
    .with_for_update()
)
_INSERT_DELIVERY = deliveries.insert()  # executed with the row as parameters

# The SET clause comes from the parameters' keys (one compiled form per set of keys, cached);
# b_id is the row.
_UPDATE_DELIVERY = update(deliveries).where(d.id == bindparam("b_id"))

_FIND_PERSON = select(people).where(
    people.c.source == bindparam("source"), people.c.person_key == bindparam("person_key")
)
_UPDATE_PERSON = (
    update(people)
    .where(
        people.c.source == bindparam("b_source"), people.c.person_key == bindparam("b_person_key")
    )
    .values(
        fields=bindparam("b_fields", type_=people.c.fields.type),
        token=bindparam("b_token"),
        updated_at=bindparam("b_now"),
    )
)
_INSERT_PERSON = people.insert()

_INCOMPLETE = (
    select(d.id)
    .where(
        d.source == bindparam("source"),
        d.person_key == bindparam("person_key"),
        status_is(REJECTED),
    )
    .order_by(d.created_at.desc())
    .limit(1)
)


def _earlier_query(column: Any, key: str) -> Any:
    return (
        select(deliveries)
        .where(
            column == bindparam(key),
            d.token.is_not(None),
            d.token != bindparam("token"),
            ~status_is(REJECTED),
        )
        .order_by(d.created_at.desc())
        .limit(1)
    )


# The lookups of a new submission, in one statement (each a statement of its own costs
# some 60 µs of SQLAlchemy's execution on top of SQLite's 10-20 µs): the person's latest
# delivery under the token (tagged "token"), and, for when there is none, the same person
# under another token: the latest delivery with the same email ("email") and the latest
# with the same phone ("phone"); a NULL key finds nothing; and the latest under the
# person's unkeyed token of releases before keyed tokens ("legacy": rows from before
# schema 3 have no email_key/phone_key, and the person keeps that token until
# ``contact-adapter rotate-tokens`` moves them). Each is a subquery so its ORDER BY /
# LIMIT (and the token's FOR UPDATE, on PostgreSQL) applies to it alone.
_LOOKUP_TAGS = ("token", "email", "phone", "legacy")
_LATEST_OR_EARLIER = union_all(
    *(
        select(literal_column(f"'{tag}'").label("lookup"), sub)
        for tag, sub in zip(
            _LOOKUP_TAGS,
            (
                _LATEST_FOR_TOKEN.subquery("by_token"),
                _earlier_query(d.email_key, "email_key").subquery("by_email"),
                _earlier_query(d.phone_key, "phone_key").subquery("by_phone"),
                _earlier_query(d.token, "legacy_token").subquery("by_legacy"),
            ),
            strict=True,
        )
    )
)
_LATEST_OR_EARLIER_SQLITE = Prepared(_LATEST_OR_EARLIER)
_LATEST_FOR_TOKEN_SQLITE = Prepared(_LATEST_FOR_TOKEN)
# A new row's INSERT compiled for the SQLite writer, one per set of columns given.
_INSERT_SQLITE: dict[tuple[str, ...], Prepared] = {}


async def person(conn: WriteConnection, source: str, key: str) -> Mapping[Any, Any] | None:
    """What a provider's person (Crisp session, Chatwoot contact…) gave so far."""
    params = {"source": source, "person_key": key}
    return (await conn.execute(_FIND_PERSON, params)).mappings().first()


async def save_person(
    conn: WriteConnection,
    source: str,
    key: str,
    fields: Mapping[str, Any],
    token: str | None,
    now: float,
) -> None:
    values = {
        "b_source": source,
        "b_person_key": key,
        "b_fields": dict(fields),
        "b_token": token,
        "b_now": now,
    }
    changed = await conn.execute(_UPDATE_PERSON, values)
    if changed.rowcount == 0:
        row = {
            "source": source,
            "person_key": key,
            "fields": dict(fields),
            "token": token,
            "updated_at": now,
        }
        await conn.execute(_INSERT_PERSON, row)


async def latest_for_token(conn: WriteConnection, token: str) -> Mapping[Any, Any] | None:
    """The person's waiting delivery, else their latest delivered/failed one."""
    params = {"token": token}
    rows = _LATEST_FOR_TOKEN_SQLITE.rows(conn, params)
    if rows is not None:
        return rows[0] if rows else None
    return (await conn.execute(_LATEST_FOR_TOKEN, params)).mappings().first()


def _earlier_token(found: Sequence[Mapping[Any, Any]], email_key: str | None) -> str | None:
    """The token of the person's most recent earlier delivery under another token, of
    those found by email and by phone: same email, or same phone unless that delivery has
    another email (two emails on one phone may well be two people: a shared office or
    family number)."""
    found = [
        row
        for row in sorted(found, key=lambda row: _LOOKUP_TAGS.index(row["lookup"]))  # email 1st
        if not (email_key and row["email_key"] and row["email_key"] != email_key)
    ]
    if not found:
        return None
    return str(max(found, key=lambda row: row["created_at"])["token"])


async def latest_or_earlier(
    conn: WriteConnection,
    token: str,
    email_key: str | None,
    phone_key: str | None,
    legacy_token: str | None = None,
) -> tuple[Mapping[Any, Any] | None, str | None]:
    """The person's waiting or latest delivery under ``token`` (as :func:`latest_for_token`),
    or else None and the token of their most recent earlier delivery under another one
    by ``email_key``, ``phone_key`` or their unkeyed ``legacy_token`` (None when there is
    none): one statement."""
    params = {
        "token": token,
        "email_key": email_key or None,
        "phone_key": phone_key or None,
        "legacy_token": legacy_token or None,
    }
    inline = _LATEST_OR_EARLIER_SQLITE.rows(conn, params)
    rows: Sequence[Mapping[Any, Any]] = (
        inline
        if inline is not None
        else (await conn.execute(_LATEST_OR_EARLIER, params)).mappings().all()
    )
    for row in rows:
        if row["lookup"] == "token":
            found = dict(row)
            del found["lookup"]
            return found, None
    return None, _earlier_token(rows, email_key)


async def incomplete_row(conn: WriteConnection, source: str, person_key: str) -> str | None:
    """The rejected row of this provider person, if their details were incomplete."""
    params = {"source": source, "person_key": person_key}
    found = (await conn.execute(_INCOMPLETE, params)).first()
    return str(found[0]) if found is not None else None


async def insert_deliveries(
    conn: WriteConnection, rows: Mapping[str, Any] | Sequence[Mapping[str, Any]]
) -> None:
    if isinstance(rows, Mapping):
        columns = tuple(rows)
        prepared = _INSERT_SQLITE.get(columns)
        if prepared is None and len(_INSERT_SQLITE) < 32:
            prepared = _INSERT_SQLITE[columns] = Prepared(_INSERT_DELIVERY, list(columns))
        if prepared is not None and prepared.run(conn, rows):
            return
    await conn.execute(_INSERT_DELIVERY, rows)


async def update_delivery(
    conn: WriteConnection, delivery_id: str, values: Mapping[str, Any]
) -> None:
    await conn.execute(_UPDATE_DELIVERY, {"b_id": delivery_id, **values})


async def insert_events(conn: WriteConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """``delivery_events`` rows (source, event_id, delivery_id, created_at), in one go."""
    await conn.execute(_INSERT_EVENT, list(rows))


async def record_events(
    conn: WriteConnection,
    source: str,
    event_ids: Iterable[str],
    delivery_id: str,
    now: float,
) -> None:
    """Every one of ``event_ids`` leads to ``delivery_id`` from now on."""
    rows = [
        {"source": source, "event_id": i, "delivery_id": delivery_id, "created_at": now}
        for i in event_ids
    ]
    if rows:
        await conn.execute(_INSERT_EVENT, rows if len(rows) > 1 else rows[0])


# -- the bulk accept (imports) --


async def plan_each_batch(conn: WriteConnection) -> None:
    """PostgreSQL: same-sized batches reuse one prepared statement, and its generic
    plan for "IN (500 values)" scans the whole table as it grows: plan each batch."""
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")


async def events_seen(
    conn: WriteConnection, source: str, event_ids: Iterable[str]
) -> dict[str, str]:
    """``{event_id: delivery_id}`` of those of ``event_ids`` recorded before."""
    query = select(delivery_events.c.event_id, delivery_events.c.delivery_id).where(
        delivery_events.c.source == source, delivery_events.c.event_id.in_(set(event_ids))
    )
    return {str(event): str(delivery) for event, delivery in (await conn.execute(query)).all()}


async def records(conn: WriteConnection, ids: Iterable[str]) -> dict[str, DeliveryRecord]:
    rows = await conn.execute(select(deliveries).where(d.id.in_(set(ids))))
    return {row["id"]: DeliveryRecord.from_row(row) for row in rows.mappings()}


async def waiting_for_tokens(
    conn: WriteConnection, tokens: Iterable[str]
) -> list[Mapping[Any, Any]]:
    """The pending deliveries of these people (locked for the transaction)."""
    query = (
        select(d.id, d.token, d.fields, d.warnings, d.contact_manager)
        .where(d.token.in_(set(tokens)), status_is(PENDING))
        .with_for_update()
    )
    return list((await conn.execute(query)).mappings())


async def known_for_tokens(
    conn: WriteConnection, tokens: Iterable[str]
) -> dict[str, Mapping[Any, Any]]:
    """Each person's latest delivered/delivering/failed delivery."""
    query = (
        select(d.token, d.fields, d.contact_id, d.contact_manager)
        .where(
            d.token.in_(set(tokens)),
            status_is(DELIVERED, DELIVERING, FAILED),
        )
        .order_by(d.created_at.desc())
    )
    known: dict[str, Mapping[Any, Any]] = {}
    for row in (await conn.execute(query)).mappings():
        known.setdefault(row["token"], dict(row))
    return known
