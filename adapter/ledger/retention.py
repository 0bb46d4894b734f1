"""The SQL of the data's lifecycle: the retention sweep, erasing one person, the audit log.

:func:`purge` erases, in place, the personal columns of final rows past their retention
(:class:`adapter.core.retention.RetentionPolicy` says which), in batches of one short
transaction each: the rows of a batch are picked with ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL through the partial index ``ix_deliveries_retention`` (``erased_at IS NULL``),
so several workers sweeping at once take disjoint batches, erase each row once and never
wait on each other or on deliveries (a pending or delivering row is never picked). On
SQLite every batch is one job of the process's writer.

:func:`forget` finds every row about one person (by email key, phone key, visitor tokens,
a delivery id, and rejected rows or providers' people whose raw fields mention the email
or phone), erases them the same way in one transaction, cancels a waiting delivery and
records the erasure in ``audit_log`` (counts only). Which values are kept and what a row
becomes are decided in :mod:`adapter.core.retention`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, bindparam, delete, exists, func, null, or_, select, update

from adapter.core.records import DELIVERING, FAILED, IGNORED, PENDING, REJECTED
from adapter.core.retention import (
    DIGEST_PREFIX,
    RetentionPolicy,
    erased_columns,
    hashed_event_id,
)
from adapter.ledger.schema import (
    audit_log,
    deliveries,
    delivery_attempts,
    delivery_events,
    people,
    status_is,
)
from adapter.ledger.sqlite_writer import WriteConnection
from adapter.ledger.store import LedgerStore

__all__ = [
    "ForgetReport",
    "PurgeReport",
    "audit_entries",
    "due_counts",
    "find_person",
    "forget",
    "purge",
    "record_purge",
]

d = deliveries.c
Digest = Callable[[str, str], str]
CANCELLED = "cancelled: the person's data was erased on request"

# What erasing a row sets (executemany: one compiled statement for a whole batch).
_ERASE_VALUES: dict[str, Any] = {
    "fields": bindparam("b_fields", type_=d.fields.type),
    "errors": bindparam("b_errors", type_=d.errors.type),
    "warnings": bindparam("b_warnings", type_=d.warnings.type),
    "person_key": None,
    "token": bindparam("b_token"),
    "event_id": None,
    "email_key": None,
    "phone_key": None,
    "callback": null(),  # SQL NULL, not JSON null
    "extra_callbacks": null(),
    "actor": None,
    "contact_manager": None,
    "last_error": bindparam("b_last_error"),
    "erased_at": bindparam("b_now"),
}
# On purge, only while it still holds data, so two sweeps never erase (and count) a row twice.
_ERASE = (
    update(deliveries)
    .where(d.id == bindparam("b_id"), d.erased_at.is_(None))
    .values(**_ERASE_VALUES)
)
# On forget, even when retention erased it before (its kept token digest goes too).
_FORGET = update(deliveries).where(d.id == bindparam("b_id")).values(**_ERASE_VALUES)
_DELETE_PERSON = delete(people).where(
    people.c.source == bindparam("b_source"), people.c.person_key == bindparam("b_key")
)
_HASH_EVENT = (
    update(delivery_events)
    .where(
        delivery_events.c.source == bindparam("b_source"),
        delivery_events.c.event_id == bindparam("b_old"),
    )
    .values(event_id=bindparam("b_new"))
)


@dataclass
class PurgeReport:
    """What one sweep erased (or, dry run, would erase): counts only."""

    deliveries: dict[str, int] = field(default_factory=dict)  # per status
    attempts: int = 0
    people: int = 0
    events: int = 0
    batches: int = 0
    longest_batch: float = 0.0  # seconds the longest batch's transaction (its locks) lasted

    @property
    def total(self) -> int:
        return sum(self.deliveries.values()) + self.attempts + self.people

    def as_dict(self) -> dict[str, Any]:
        return {
            "deliveries": dict(self.deliveries),
            "attempts": self.attempts,
            "people": self.people,
            "events": self.events,
        }


@dataclass
class ForgetReport:
    """What erasing one person touched. ``tokens`` and ``contacts`` are what Rocket.Chat
    knows them by (for ``--rocketchat``); they are never printed or stored."""

    deliveries: int = 0
    cancelled: int = 0
    attempts: int = 0
    events: int = 0
    people: int = 0
    tokens: set[str] = field(default_factory=set)
    contacts: set[tuple[str, str | None]] = field(default_factory=set)  # (contact id, strategy)

    @property
    def rows(self) -> int:
        return self.deliveries + self.attempts + self.events + self.people

    def as_dict(self) -> dict[str, int]:
        return {
            "deliveries": self.deliveries,
            "cancelled": self.cancelled,
            "attempts": self.attempts,
            "events": self.events,
            "people": self.people,
        }


def _erase_params(row: Mapping[Any, Any], now: float, token: str | None) -> dict[str, Any]:
    erased = erased_columns(row, now=now, token=token)
    return {
        "b_id": row["id"],
        "b_fields": erased["fields"],
        "b_errors": erased["errors"],
        "b_warnings": erased["warnings"],
        "b_token": erased["token"],
        "b_last_error": erased["last_error"],
        "b_now": now,
    }


def _kept_token(token: str | None, digest: Digest) -> str | None:
    if not token or token.startswith(DIGEST_PREFIX):
        return token
    return DIGEST_PREFIX + digest("visitor-token", token)[:62]  # fits String(64)


async def _hash_events(conn: WriteConnection, ids: Sequence[str], digest: Digest) -> int:
    """The source event ids that led to ``ids`` become kept digests (duplicates of them are
    still recognised: :meth:`LedgerStore.find_event` looks for both forms)."""
    events = delivery_events.c
    query = select(events.source, events.event_id).where(
        events.delivery_id.in_(list(ids)), ~events.event_id.startswith(DIGEST_PREFIX)
    )
    params = [
        {"b_source": source, "b_old": old, "b_new": hashed_event_id(old, digest)}
        for source, old in (await conn.execute(query)).all()
    ]
    if params:
        await conn.execute(_HASH_EVENT, params)
    return len(params)


async def due_counts(store: LedgerStore, policy: RetentionPolicy, now: float) -> PurgeReport:
    """What a sweep at ``now`` would erase (``purge --dry-run``)."""
    report = PurgeReport()

    async def _read(conn: WriteConnection) -> None:
        for status, cutoff in policy.cutoffs(now).items():
            query = select(func.count()).where(
                status_is(status), d.erased_at.is_(None), d.updated_at < cutoff
            )
            report.deliveries[status] = int((await conn.execute(query)).scalar() or 0)
        attempts_cutoff = policy.attempts_cutoff(now)
        if attempts_cutoff is not None:
            query = select(func.count()).where(_attempts_due(attempts_cutoff))
            report.attempts = int((await conn.execute(query)).scalar() or 0)
        people_cutoff = policy.people_cutoff(now)
        if people_cutoff is not None:
            query = select(func.count()).select_from(people).where(_people_due(people_cutoff))
            report.people = int((await conn.execute(query)).scalar() or 0)

    await store.read(_read)
    return report


def _attempts_due(cutoff: float) -> Any:
    attempts = delivery_attempts.c
    parent = deliveries.alias("parent")
    return and_(
        attempts.error.is_not(None),
        attempts.started_at < cutoff,
        # never a waiting delivery's history: it may still be needed to understand it
        ~exists().where(
            parent.c.id == attempts.delivery_id,
            status_is(PENDING, DELIVERING, column=parent.c.status),
        ),
    )


def _people_due(cutoff: float) -> Any:
    waiting = deliveries.alias("waiting")
    return and_(
        people.c.updated_at < cutoff,
        ~exists().where(
            waiting.c.token == people.c.token,
            status_is(PENDING, DELIVERING, column=waiting.c.status),
        ),
    )


async def purge(
    store: LedgerStore,
    policy: RetentionPolicy,
    digest: Digest,
    now: float,
    *,
    batch: int = 500,
    max_batches: int | None = None,
) -> PurgeReport:
    """Erase what is past retention at ``now``, ``batch`` rows per transaction, until
    nothing is due (or ``max_batches`` ran: the worker's sweep leaves the rest for later)."""
    report = PurgeReport()

    def more() -> bool:
        return max_batches is None or report.batches < max_batches

    for status, cutoff in policy.cutoffs(now).items():
        report.deliveries.setdefault(status, 0)
        while more():
            done = await _timed(
                store, report, _purge_deliveries(status, cutoff, digest, now, batch)
            )
            report.deliveries[status] += done[0]
            report.events += done[1]
            if done[2] < batch:
                break
    attempts_cutoff = policy.attempts_cutoff(now)
    while attempts_cutoff is not None and more():
        erased, seen = await _timed(store, report, _purge_attempts(attempts_cutoff, batch))
        report.attempts += erased
        if seen < batch:
            break
    people_cutoff = policy.people_cutoff(now)
    while people_cutoff is not None and more():
        removed, seen = await _timed(store, report, _purge_people(people_cutoff, batch))
        report.people += removed
        if seen < batch:
            break
    return report


async def _timed(store: LedgerStore, report: PurgeReport, job: Any) -> Any:
    started = time.perf_counter()

    async def _tx(conn: WriteConnection) -> Any:
        nonlocal started
        started = time.perf_counter()  # from the batch's first statement (its locks)
        return await job(conn)

    result = await store.write(_tx)
    report.batches += 1
    report.longest_batch = max(report.longest_batch, time.perf_counter() - started)
    return result


def _purge_deliveries(
    status: str, cutoff: float, digest: Digest, now: float, batch: int
) -> Callable[[WriteConnection], Any]:
    async def job(conn: WriteConnection) -> tuple[int, int, int]:
        query = (
            select(d.id, d.token, d.errors, d.warnings, d.last_error)
            .where(status_is(status), d.erased_at.is_(None), d.updated_at < cutoff)
            .order_by(d.updated_at)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
        rows = (await conn.execute(query)).mappings().all()
        if not rows:
            return 0, 0, 0
        params = [_erase_params(r, now, _kept_token(r["token"], digest)) for r in rows]
        # Every row picked is erased: locked (PostgreSQL) or read in the writer's own
        # transaction (SQLite) while still unerased. (executemany's rowcount is not reliable
        # on every driver.)
        await conn.execute(_ERASE, params)
        events = await _hash_events(conn, [r["id"] for r in rows], digest)
        return len(rows), events, len(rows)

    return job


def _purge_attempts(cutoff: float, batch: int) -> Callable[[WriteConnection], Any]:
    attempts = delivery_attempts.c

    async def job(conn: WriteConnection) -> tuple[int, int]:
        query = (
            select(attempts.id)
            .where(_attempts_due(cutoff))
            .order_by(attempts.started_at)
            .limit(batch)
            .with_for_update(of=delivery_attempts, skip_locked=True)
        )
        ids = [r[0] for r in (await conn.execute(query)).all()]
        if not ids:
            return 0, 0
        changed = await conn.execute(
            update(delivery_attempts)
            .where(attempts.id.in_(ids), attempts.error.is_not(None))
            .values(error=None)
        )
        return int(changed.rowcount), len(ids)

    return job


def _purge_people(cutoff: float, batch: int) -> Callable[[WriteConnection], Any]:
    async def job(conn: WriteConnection) -> tuple[int, int]:
        query = (
            select(people.c.source, people.c.person_key)
            .where(_people_due(cutoff))
            .order_by(people.c.updated_at)
            .limit(batch)
            .with_for_update(of=people, skip_locked=True)
        )
        keys = (await conn.execute(query)).all()
        if not keys:
            return 0, 0
        await conn.execute(_DELETE_PERSON, [{"b_source": s, "b_key": k} for s, k in keys])
        return len(keys), len(keys)

    return job


# -- erasing one person ----------------------------------------------------------------


_DIGITS = re.compile(r"\D+")


def _mentions(value: Any, email: str | None, phone_digits: str | None) -> bool:
    """Do raw fields as given (``value``) hold the email (any case) or the phone (in any
    formatting: a run of 7+ digits that the E.164 number ends with, or that ends with it)?"""
    text = json.dumps(value, ensure_ascii=False).lower()
    if email and email in text:
        return True
    if not phone_digits:
        return False
    for part in _strings(value):
        digits = _DIGITS.sub("", part)
        if len(digits) >= 7 and (phone_digits.endswith(digits) or digits.endswith(phone_digits)):
            return True
    return False


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


async def forget(
    store: LedgerStore,
    digest: Digest,
    *,
    email: str | None = None,
    phone: str | None = None,
    tokens: Iterable[str] = (),
    delivery_id: str | None = None,
    actor: str,
    now: float,
) -> ForgetReport:
    """Erase every row about one person (``email`` lower-cased, ``phone`` in E.164, the
    ``tokens`` they may be known by, or ``delivery_id`` and everyone of its person), in one
    transaction; recorded in ``audit_log``. Then, on SQLite, the WAL is checkpointed into
    the file (whose freed bytes ``secure_delete`` zeroed), so no copy is left behind."""
    report = ForgetReport(tokens=set(tokens))
    email = email.strip().lower() if email else None
    phone_digits = _DIGITS.sub("", phone) if phone else None

    async def _tx(conn: WriteConnection) -> ForgetReport:
        ids = await _rows_of_person(conn, report, email, phone, phone_digits, delivery_id)
        if ids:
            await _erase_person_rows(conn, report, sorted(ids), digest, now)
        await _forget_people(conn, report, email, phone_digits)
        summary = {
            **report.as_dict(),
            "found_by": [
                name
                for name, given in (("email", email), ("phone", phone), ("delivery", delivery_id))
                if given
            ],
        }
        await conn.execute(
            audit_log.insert().values(
                at=now, actor=actor, action="forget", rows=report.rows, summary=summary
            )
        )
        return report

    await store.write(_tx)
    await store.checkpoint()
    return report


async def find_person(
    store: LedgerStore,
    *,
    email: str | None = None,
    phone: str | None = None,
    tokens: Iterable[str] = (),
    delivery_id: str | None = None,
) -> ForgetReport:
    """What :func:`forget` would erase (``deliveries`` counted), changing nothing: the
    tokens and contact ids Rocket.Chat knows the person by, asked for before erasing."""
    report = ForgetReport(tokens=set(tokens))
    email = email.strip().lower() if email else None
    phone_digits = _DIGITS.sub("", phone) if phone else None

    async def _read(conn: WriteConnection) -> None:
        ids = await _rows_of_person(conn, report, email, phone, phone_digits, delivery_id)
        report.deliveries = len(ids)

    await store.read(_read)
    return report


async def _rows_of_person(
    conn: WriteConnection,
    report: ForgetReport,
    email: str | None,
    phone: str | None,
    phone_digits: str | None,
    delivery_id: str | None,
) -> set[str]:
    """Every delivery id about the person; ``report.tokens`` grows with theirs."""
    found: set[str] = set()
    conditions = []
    if email:
        conditions.append(d.email_key == email)
    if phone:
        conditions.append(d.phone_key == phone)
    if delivery_id:
        conditions.append(d.id == delivery_id)
    if email or phone_digits:
        # Rows whose keys are not set (rejected, ignored, merged before schema 3): their raw
        # fields, read here, not matched in SQL (a phone may be written in any format).
        query = select(d.id, d.fields, d.errors, d.token).where(
            status_is(REJECTED, IGNORED) | d.email_key.is_(None), d.erased_at.is_(None)
        )
        for row in (await conn.execute(query)).mappings():
            if _mentions([row["fields"], row["errors"]], email, phone_digits):
                found.add(row["id"])
                if row["token"]:
                    report.tokens.add(row["token"])
    # The person's rows under any of their tokens, found by keys or earlier rows: twice, so
    # a token found through one row brings in the rows of the other.
    for _ in range(2):
        where = [*conditions]
        if report.tokens:
            where.append(d.token.in_(sorted(report.tokens)))
        if found:
            where.append(d.id.in_(sorted(found)))
        if not where:
            break
        query = select(d.id, d.token, d.contact_id, d.strategy).where(or_(*where))
        for row in (await conn.execute(query)).mappings():
            found.add(row["id"])
            if row["token"] and not row["token"].startswith(DIGEST_PREFIX):
                report.tokens.add(row["token"])
            if row["contact_id"]:
                report.contacts.add((row["contact_id"], row["strategy"]))
    return found


async def _erase_person_rows(
    conn: WriteConnection, report: ForgetReport, ids: list[str], digest: Digest, now: float
) -> None:
    query = (
        select(d.id, d.status, d.errors, d.warnings, d.last_error)
        .where(d.id.in_(ids))
        .with_for_update()
    )
    rows = (await conn.execute(query)).mappings().all()
    waiting = [r["id"] for r in rows if r["status"] in (PENDING, DELIVERING)]
    if waiting:
        # Cancelled: never delivered now. A worker holding one in flight loses its lease,
        # so its outcome is not recorded over this (docs/privacy.md: run forget again with
        # --rocketchat if it had reached Rocket.Chat).
        await conn.execute(
            update(deliveries)
            .where(d.id.in_(waiting))
            .values(
                status=FAILED,
                lease_owner=None,
                lease_until=None,
                updated_at=now,
                notified_at=now,
                last_error=CANCELLED,
            )
        )
        report.cancelled = len(waiting)
    params = []
    for row in rows:
        values = _erase_params(row, now, None)
        values["b_last_error"] = CANCELLED if row["id"] in waiting else values["b_last_error"]
        params.append(values)
    await conn.execute(_FORGET, params)
    report.deliveries = len(params)
    report.events = await _hash_events(conn, ids, digest)
    attempts = delivery_attempts.c
    changed = await conn.execute(
        update(delivery_attempts)
        .where(attempts.delivery_id.in_(ids), attempts.error.is_not(None))
        .values(error=None)
    )
    report.attempts = int(changed.rowcount)


async def _forget_people(
    conn: WriteConnection, report: ForgetReport, email: str | None, phone_digits: str | None
) -> None:
    """Providers' people (what they gave so far) under the person's tokens, or whose raw
    fields mention the email or phone: deleted."""
    query = select(people.c.source, people.c.person_key, people.c.token, people.c.fields)
    doomed = [
        {"b_source": row["source"], "b_key": row["person_key"]}
        for row in (await conn.execute(query)).mappings()
        if (row["token"] and row["token"] in report.tokens)
        or _mentions(row["fields"], email, phone_digits)
    ]
    if doomed:
        await conn.execute(_DELETE_PERSON, doomed)
        report.people = len(doomed)


async def audit_entries(store: LedgerStore, limit: int = 50) -> list[dict[str, Any]]:
    """The latest audit log entries, newest first."""

    async def _read(conn: WriteConnection) -> list[dict[str, Any]]:
        query = select(audit_log).order_by(audit_log.c.at.desc(), audit_log.c.id.desc())
        rows = (await conn.execute(query.limit(limit))).mappings().all()
        return [dict(row) for row in rows]

    return await store.read(_read)


async def record_purge(store: LedgerStore, report: PurgeReport, actor: str, now: float) -> None:
    """A purge that erased something is written to the audit log (counts only)."""
    if not report.total:
        return

    async def _tx(conn: WriteConnection) -> None:
        await conn.execute(
            audit_log.insert().values(
                at=now, actor=actor, action="purge", rows=report.total, summary=report.as_dict()
            )
        )

    await store.write(_tx)
