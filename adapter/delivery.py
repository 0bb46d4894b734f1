"""Durable delivery: accept a contact into the database, then register it exactly once.

:class:`DeliveryQueue` is what channels call. ``submit`` validates, deduplicates
on the source's event id, merges with what is already known about the person and
commits one row before the caller gets its answer; it may then try the delivery
at once for a short budget (the fast path). :class:`DeliveryWorker` claims due
rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a single writer on SQLite),
registers them through :class:`~adapter.rocketchat.RocketChatClient`, retries
with capped exponential backoff, waits out rate limits without spending attempts,
pauses everything while the credentials are rejected, and reports final outcomes
to the channel that asked (e.g. Slack's ``response_url``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapter import metrics
from adapter.contact import Contact, ContactError, validate_contact
from adapter.db import deliveries, delivery_events, people
from adapter.errors import (
    ConfigurationError,
    ContactRejected,
    RateLimited,
    RocketChatError,
)
from adapter.rocketchat import RocketChatClient
from adapter.sansio import RegisteredContact, Registration, contact_token
from adapter.settings import Settings

__all__ = [
    "DeliveryQueue",
    "DeliveryRecord",
    "DeliveryWorker",
    "Outcome",
    "Submission",
    "backoff_delay",
]

log = structlog.get_logger("adapter.delivery")

PENDING, DELIVERING, DELIVERED, FAILED, REJECTED, MERGED = (
    "pending",
    "delivering",
    "delivered",
    "failed",
    "rejected",
    "merged",  # superseded by a newer delivery for the same person, which carries its details
)
STATUSES = (PENDING, DELIVERING, DELIVERED, FAILED, REJECTED, MERGED)
Notifier = Callable[["DeliveryRecord"], Awaitable[None]]


@dataclass(frozen=True)
class Submission:
    """A contact as a channel received it, before validation."""

    source: str  # "slack", "form:default", "webhook:chatwoot", "api", "cli"
    fields: Mapping[str, str | None]  # raw name / email / phone as given
    event_id: str | None = None  # the source's own event id: the same id is accepted once
    person_key: str | None = None  # the source's own id for the person (session, contact id)
    custom_fields: Mapping[str, str] = field(default_factory=dict)
    callback: Mapping[str, Any] | None = None  # channel data for reporting the outcome later
    actor: str | None = None  # who submitted it (e.g. the Slack user id)
    team: str | None = None  # e.g. the Slack workspace id
    contact_manager: str | None = None  # Rocket.Chat username of the agent in charge
    drop_invalid_optional: bool = False  # register valid fields, warn about bad optional ones
    keep_rejected: bool = (
        False  # store invalid contacts as 'rejected' (channels that must answer 2xx)
    )

    @property
    def channel(self) -> str:
        return self.source.split(":", 1)[0]


@dataclass(frozen=True)
class DeliveryRecord:
    """One row of the deliveries table."""

    id: str
    source: str
    status: str
    attempts: int
    fields: Mapping[str, Any]
    token: str | None
    event_id: str | None
    person_key: str | None
    errors: Mapping[str, str] | None
    warnings: Mapping[str, str] | None
    next_attempt_at: float
    last_error: str | None
    contact_id: str | None
    strategy: str | None
    callback: Mapping[str, Any] | None
    actor: str | None
    team: str | None
    contact_manager: str | None
    created_at: float
    updated_at: float
    delivered_at: float | None
    notified_at: float | None
    lease_owner: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> DeliveryRecord:
        names = cls.__dataclass_fields__
        return cls(**{k: row[k] for k in names if k in row})

    @property
    def contact(self) -> Contact | None:
        if self.status == REJECTED or not self.fields.get("name"):
            return None
        return Contact(
            name=str(self.fields["name"]),
            email=self.fields.get("email"),
            phone=self.fields.get("phone"),
            phone_extension=self.fields.get("phone_extension"),
            custom_fields=dict(self.fields.get("custom_fields") or {}),
        )

    def public(self) -> dict[str, Any]:
        """What anyone holding the id may see: no personal data."""
        return {
            "id": self.id,
            "source": self.source,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "contact_id": self.contact_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "delivered_at": self.delivered_at,
            "next_attempt_at": self.next_attempt_at if self.status == PENDING else None,
        }

    def detail(self) -> dict[str, Any]:
        """Everything, for authenticated operators."""
        return {
            **self.public(),
            "event_id": self.event_id,
            "person_key": self.person_key,
            "token": self.token,
            "fields": dict(self.fields),
            "errors": dict(self.errors or {}),
            "warnings": dict(self.warnings or {}),
            "strategy": self.strategy,
            "actor": self.actor,
            "team": self.team,
            "contact_manager": self.contact_manager,
        }


@dataclass(frozen=True)
class Outcome:
    """What a channel tells its caller after ``submit``."""

    status: str  # pending/delivering/delivered/failed/rejected, or "invalid" (not stored)
    delivery_id: str | None = None
    duplicate: bool = False
    contact: Contact | None = None
    contact_id: str | None = None
    contact_url: str | None = None
    errors: Mapping[str, str] = field(default_factory=dict)
    warnings: Mapping[str, str] = field(default_factory=dict)
    last_error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.delivery_id is not None and self.status not in (REJECTED, "invalid")


def backoff_delay(attempts: int, *, first: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with equal jitter: ``d/2 + U(0, d/2)``, ``d = first·2^(n-1)``, capped."""
    base = min(cap, first * (2 ** max(attempts - 1, 0)))
    return float(base / 2 + rng.uniform(0, base / 2))


def _merge_raw(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(old)
    for key, value in new.items():
        if key == "custom_fields":
            merged[key] = {**(old.get(key) or {}), **(value or {})}
        elif value is not None and str(value).strip():
            merged[key] = value
    return merged


class DeliveryQueue:
    """Accept contacts durably and report on them; the in-process try-now path."""

    def __init__(
        self,
        engine: AsyncEngine,
        client: RocketChatClient,
        settings: Settings,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.client = client
        self.settings = settings
        self.notifiers: dict[str, Notifier] = {}
        self.owner = f"{uuid.uuid4().hex[:12]}"
        self.rng = rng or random.Random()
        self.paused_reason: str | None = None
        self._wake = asyncio.Event()
        self._fast_tasks: set[asyncio.Task[Any]] = set()
        self._fast_slots = settings.rocketchat_concurrency * 2
        self.active: set[str] = set()  # ids this process is delivering right now

    # -- accepting -----------------------------------------------------------------

    async def submit(self, submission: Submission, *, wait: float | None = None) -> Outcome:
        """Validate and durably accept a contact; optionally try it now for ``wait`` seconds."""
        if submission.event_id:
            seen = await self._find_event(submission.source, submission.event_id)
            if seen is not None:
                metrics.CONTACTS.labels(submission.channel, "duplicate").inc()
                return self._outcome(seen, duplicate=True)

        raw: dict[str, Any] = {
            "name": submission.fields.get("name"),
            "email": submission.fields.get("email"),
            "phone": submission.fields.get("phone"),
            "custom_fields": dict(submission.custom_fields),
        }
        for attempt in range(3):
            try:
                outcome = await self._accept(submission, raw)
                break
            except IntegrityError:
                # A concurrent accept for the same event or person won the race: look again.
                if submission.event_id:
                    seen = await self._find_event(submission.source, submission.event_id)
                    if seen is not None:
                        return self._outcome(seen, duplicate=True)
                if attempt == 2:
                    raise
        if not outcome.accepted:
            return outcome
        metrics.CONTACTS.labels(submission.channel, "accepted").inc()
        self._wake.set()
        budget = self.settings.fast_path_budget if wait is None else wait
        if budget > 0 and outcome.delivery_id is not None and outcome.status == PENDING:
            return await self._try_now(outcome, budget)
        return outcome

    async def _accept(self, submission: Submission, raw: dict[str, Any]) -> Outcome:
        now = time.time()
        async with self.engine.begin() as conn:
            token: str | None = None
            person_key = (
                f"{submission.source}:{submission.person_key}" if submission.person_key else None
            )
            if person_key is not None:
                person = (
                    (
                        await conn.execute(
                            select(people).where(
                                people.c.source == submission.source,
                                people.c.person_key == submission.person_key,
                            )
                        )
                    )
                    .mappings()
                    .first()
                )
                if person is not None:
                    raw = _merge_raw(person["fields"], raw)
                    token = person["token"]
            try:
                contact, warnings = validate_contact(
                    raw,
                    required=self.settings.contact_required_fields,
                    default_region=self.settings.default_phone_region,
                    check_deliverability=self.settings.check_email_deliverability,
                    custom_fields=raw.get("custom_fields") or {},
                    drop_invalid_optional=submission.drop_invalid_optional,
                )
            except ContactError as exc:
                if person_key is not None:
                    await self._save_person(conn, submission, raw, token, now)
                if not submission.keep_rejected:
                    return Outcome(status="invalid", errors=exc.errors)
                delivery_id = uuid.uuid4().hex
                await conn.execute(
                    deliveries.insert().values(
                        **self._row(submission, delivery_id, REJECTED, raw, None, now),
                        errors=exc.errors,
                    )
                )
                await self._record_event(conn, submission, delivery_id, now)
                metrics.CONTACTS.labels(submission.channel, "rejected").inc()
                return Outcome(status=REJECTED, delivery_id=delivery_id, errors=exc.errors)

            if token is None:
                token = contact_token(
                    email=contact.email, phone=contact.phone, person_key=person_key
                )
            if person_key is not None:
                await self._save_person(conn, submission, raw, token, now)

            waiting = (
                (
                    await conn.execute(
                        select(deliveries)
                        .where(deliveries.c.token == token, deliveries.c.status == PENDING)
                        .with_for_update()
                    )
                )
                .mappings()
                .first()
            )
            if waiting is not None:
                merged = self._contact_of(waiting["fields"]).merged_with(contact)
                values: dict[str, Any] = {"fields": merged.as_dict(), "updated_at": now}
                if submission.callback is not None:
                    values["callback"] = dict(submission.callback)
                if submission.contact_manager:
                    values["contact_manager"] = submission.contact_manager
                if warnings:
                    values["warnings"] = {**(waiting["warnings"] or {}), **warnings}
                await conn.execute(
                    update(deliveries).where(deliveries.c.id == waiting["id"]).values(**values)
                )
                await self._record_event(conn, submission, waiting["id"], now)
                return Outcome(
                    status=PENDING, delivery_id=waiting["id"], contact=merged, warnings=warnings
                )

            known = (
                (
                    await conn.execute(
                        select(
                            deliveries.c.fields,
                            deliveries.c.contact_id,
                            deliveries.c.contact_manager,
                        )
                        .where(
                            deliveries.c.token == token,
                            deliveries.c.status.in_((DELIVERED, DELIVERING, FAILED)),
                        )
                        .order_by(deliveries.c.created_at.desc())
                        .limit(1)
                    )
                )
                .mappings()
                .first()
            )
            merged = contact
            contact_id = None
            manager = submission.contact_manager
            if known is not None:
                merged = self._contact_of(known["fields"]).merged_with(contact)
                contact_id = known["contact_id"]
                manager = manager or known["contact_manager"]
            delivery_id = uuid.uuid4().hex
            row = self._row(submission, delivery_id, PENDING, merged.as_dict(), token, now)
            row["contact_manager"] = manager
            await conn.execute(
                deliveries.insert().values(**row, warnings=warnings or None, contact_id=contact_id)
            )
            await self._record_event(conn, submission, delivery_id, now)
            return Outcome(
                status=PENDING, delivery_id=delivery_id, contact=merged, warnings=warnings
            )

    @staticmethod
    def _contact_of(fields: Mapping[str, Any]) -> Contact:
        return Contact(
            name=str(fields.get("name") or ""),
            email=fields.get("email"),
            phone=fields.get("phone"),
            phone_extension=fields.get("phone_extension"),
            custom_fields=dict(fields.get("custom_fields") or {}),
        )

    @staticmethod
    def _row(
        submission: Submission,
        delivery_id: str,
        status: str,
        fields: Mapping[str, Any],
        token: str | None,
        now: float,
    ) -> dict[str, Any]:
        return {
            "id": delivery_id,
            "source": submission.source,
            "event_id": submission.event_id,
            "person_key": submission.person_key,
            "token": token,
            "fields": dict(fields),
            "status": status,
            "attempts": 0,
            "next_attempt_at": now,
            "callback": dict(submission.callback) if submission.callback is not None else None,
            "actor": submission.actor,
            "team": submission.team,
            "contact_manager": submission.contact_manager,
            "created_at": now,
            "updated_at": now,
        }

    @staticmethod
    async def _save_person(
        conn: AsyncConnection,
        submission: Submission,
        raw: Mapping[str, Any],
        token: str | None,
        now: float,
    ) -> None:
        changed = await conn.execute(
            update(people)
            .where(
                people.c.source == submission.source, people.c.person_key == submission.person_key
            )
            .values(fields=dict(raw), token=token, updated_at=now)
        )
        if changed.rowcount == 0:
            await conn.execute(
                people.insert().values(
                    source=submission.source,
                    person_key=submission.person_key,
                    fields=dict(raw),
                    token=token,
                    updated_at=now,
                )
            )

    @staticmethod
    async def _record_event(
        conn: AsyncConnection, submission: Submission, delivery_id: str, now: float
    ) -> None:
        if submission.event_id:
            await conn.execute(
                delivery_events.insert().values(
                    source=submission.source,
                    event_id=submission.event_id,
                    delivery_id=delivery_id,
                    created_at=now,
                )
            )

    async def _find_event(self, source: str, event_id: str) -> DeliveryRecord | None:
        async with self.engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(deliveries)
                        .join(delivery_events, delivery_events.c.delivery_id == deliveries.c.id)
                        .where(
                            delivery_events.c.source == source,
                            delivery_events.c.event_id == event_id,
                        )
                    )
                )
                .mappings()
                .first()
            )
        return DeliveryRecord.from_row(row) if row is not None else None

    def _outcome(self, record: DeliveryRecord, *, duplicate: bool = False) -> Outcome:
        return Outcome(
            status=record.status,
            delivery_id=record.id,
            duplicate=duplicate,
            contact=record.contact,
            contact_id=record.contact_id,
            contact_url=self.client.contact_url(record.contact_id) if record.contact_id else None,
            errors=dict(record.errors or {}),
            warnings=dict(record.warnings or {}),
            last_error=record.last_error,
        )

    # -- the fast path ---------------------------------------------------------------

    async def _try_now(self, outcome: Outcome, budget: float) -> Outcome:
        """Deliver at once when Rocket.Chat has room for it; give up waiting after ``budget``."""
        assert outcome.delivery_id is not None
        if self.paused_reason or len(self._fast_tasks) >= self._fast_slots:
            return outcome
        if self.client.pacer.wait_hint_any() is not None:
            return outcome
        waiter = _Waiter()
        task = asyncio.create_task(self._deliver_by_id(outcome.delivery_id, waiter))
        self._fast_tasks.add(task)
        task.add_done_callback(self._fast_tasks.discard)
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=budget)
        except TimeoutError:
            waiter.gone = True  # the task reports the outcome through the channel's notifier
            return outcome
        except Exception:
            return outcome
        record = waiter.record
        if record is None:
            return outcome
        return self._outcome(record)

    async def _deliver_by_id(self, delivery_id: str, waiter: _Waiter) -> None:
        now = time.time()
        async with self.engine.begin() as conn:
            row = (
                (
                    await conn.execute(
                        update(deliveries)
                        .where(deliveries.c.id == delivery_id, deliveries.c.status == PENDING)
                        .where(~self._token_busy(now))
                        .values(
                            status=DELIVERING,
                            lease_owner=self.owner,
                            lease_until=now + self.settings.delivery_lease,
                            updated_at=now,
                        )
                        .returning(*deliveries.c)
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            return
        await self.deliver(DeliveryRecord.from_row(row), waiter)

    # -- delivering one claimed row ----------------------------------------------------

    @staticmethod
    def _token_busy(now: float) -> Any:
        other = deliveries.alias("other")
        return exists().where(
            other.c.token == deliveries.c.token,
            other.c.status == DELIVERING,
            other.c.lease_until > now,
            other.c.id != deliveries.c.id,
        )

    async def deliver(self, record: DeliveryRecord, waiter: _Waiter | None = None) -> None:
        """Register one claimed row and record what happened."""
        self.active.add(record.id)
        try:
            await self._deliver(record, waiter)
        finally:
            self.active.discard(record.id)

    async def _deliver(self, record: DeliveryRecord, waiter: _Waiter | None) -> None:
        contact = record.contact
        bound = log.bind(delivery_id=record.id, source=record.source, attempt=record.attempts + 1)
        if contact is None or record.token is None:
            await self._finish(
                record, FAILED, last_error="stored contact is incomplete", waiter=waiter
            )
            return
        registration = Registration(
            token=record.token,
            contact=contact,
            contact_manager=record.contact_manager,
            known_contact_id=record.contact_id,
        )

        async def remember(contact_id: str) -> None:
            async with self.engine.begin() as conn:
                await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id == record.id)
                    .values(contact_id=contact_id, updated_at=time.time())
                )

        try:
            result: RegisteredContact = await self.client.register(
                registration, record_contact_id=remember
            )
        except RateLimited as exc:
            metrics.ATTEMPTS.labels("rate_limited").inc()
            bound.info("rate_limited", wait_until=exc.reset_at)
            await self._release(record, next_attempt_at=exc.reset_at, last_error=str(exc))
            await self._postpone_due(exc.reset_at)
            return
        except ConfigurationError as exc:
            metrics.ATTEMPTS.labels("paused").inc()
            if self.paused_reason is None:
                bound.error("delivery_paused", reason=str(exc))
            self.paused_reason = str(exc)
            await self._release(record, next_attempt_at=time.time(), last_error=str(exc))
            return
        except ContactRejected as exc:
            metrics.ATTEMPTS.labels("rejected").inc()
            bound.warning("delivery_rejected", error=exc.message)
            await self._finish(
                record,
                FAILED,
                last_error=f"Rocket.Chat rejected the contact: {exc.message}",
                waiter=waiter,
            )
            return
        except RocketChatError as exc:
            await self._retry_later(record, str(exc), bound)
            return
        except Exception as exc:
            bound.exception("delivery_crashed")
            await self._retry_later(record, f"unexpected error: {type(exc).__name__}", bound)
            return
        metrics.ATTEMPTS.labels("delivered").inc()
        self.paused_reason = None
        bound.info("delivered", strategy=result.strategy)
        await self._finish(
            record, DELIVERED, contact_id=result.contact_id, strategy=result.strategy, waiter=waiter
        )

    async def _retry_later(self, record: DeliveryRecord, error: str, bound: Any) -> None:
        now = time.time()
        attempts = record.attempts + 1
        if now - record.created_at >= self.settings.retry_give_up_after:
            metrics.ATTEMPTS.labels("gave_up").inc()
            hours = self.settings.retry_give_up_after / 3600
            await self._finish(
                record,
                FAILED,
                last_error=f"gave up after {hours:g} h and {attempts} attempts: {error}",
                attempts=attempts,
            )
            return
        metrics.ATTEMPTS.labels("retry").inc()
        delay = backoff_delay(
            attempts,
            first=self.settings.retry_first_delay,
            cap=self.settings.retry_max_delay,
            rng=self.rng,
        )
        bound.info("delivery_retry", delay=round(delay, 2), error=error)
        await self._release(
            record, next_attempt_at=now + delay, last_error=error, attempts=attempts
        )

    async def _release(
        self,
        record: DeliveryRecord,
        *,
        next_attempt_at: float,
        last_error: str | None,
        attempts: int | None = None,
    ) -> None:
        values: dict[str, Any] = {
            "status": PENDING,
            "lease_owner": None,
            "lease_until": None,
            "next_attempt_at": next_attempt_at,
            "last_error": last_error,
            "updated_at": time.time(),
        }
        if attempts is not None:
            values["attempts"] = attempts
        async with self.engine.begin() as conn:
            # Another pending row for this person may have arrived meanwhile: fold ours into it.
            other = (
                (
                    await conn.execute(
                        select(deliveries.c.id, deliveries.c.fields, deliveries.c.callback)
                        .where(
                            deliveries.c.token == record.token,
                            deliveries.c.status == PENDING,
                            deliveries.c.id != record.id,
                        )
                        .with_for_update()
                    )
                )
                .mappings()
                .first()
            )
            if other is not None and record.contact is not None:
                merged = record.contact.merged_with(self._contact_of(other["fields"]))
                carried: dict[str, Any] = {"fields": merged.as_dict(), "updated_at": time.time()}
                if other["callback"] is None and record.callback is not None:
                    carried["callback"] = dict(record.callback)
                await conn.execute(
                    update(deliveries).where(deliveries.c.id == other["id"]).values(**carried)
                )
                await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id == record.id, deliveries.c.lease_owner == self.owner)
                    .values(
                        status=MERGED,
                        last_error=f"merged into delivery {other['id']}, which carries its details",
                        lease_owner=None,
                        lease_until=None,
                        updated_at=time.time(),
                    )
                )
                return
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.id == record.id, deliveries.c.lease_owner == self.owner)
                .values(**values)
            )

    async def _postpone_due(self, until: float) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.status == PENDING, deliveries.c.next_attempt_at < until)
                .values(next_attempt_at=until)
            )

    async def _finish(
        self,
        record: DeliveryRecord,
        status: str,
        *,
        contact_id: str | None = None,
        strategy: str | None = None,
        last_error: str | None = None,
        attempts: int | None = None,
        waiter: _Waiter | None = None,
    ) -> None:
        now = time.time()
        values: dict[str, Any] = {
            "status": status,
            "lease_owner": None,
            "lease_until": None,
            "updated_at": now,
            "attempts": attempts if attempts is not None else record.attempts + 1,
            "last_error": last_error,
        }
        if contact_id is not None:
            values["contact_id"] = contact_id
            values["strategy"] = strategy
        if status == DELIVERED:
            values["delivered_at"] = now
        caller_waiting = waiter is not None and not waiter.gone
        if caller_waiting or not record.callback:
            values["notified_at"] = now
        async with self.engine.begin() as conn:
            row = (
                (
                    await conn.execute(
                        update(deliveries)
                        .where(deliveries.c.id == record.id, deliveries.c.lease_owner == self.owner)
                        .values(**values)
                        .returning(*deliveries.c)
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            return  # our lease was taken over; the other worker reports the outcome
        final = DeliveryRecord.from_row(row)
        metrics.CONTACTS.labels(record.source.split(":", 1)[0], status).inc()
        if waiter is not None and not waiter.gone:
            waiter.record = final
            return
        await self.notify(final)

    async def notify(self, record: DeliveryRecord) -> None:
        """Tell the channel that asked about a final outcome (once)."""
        if not record.callback:
            return
        notifier = self.notifiers.get(record.source.split(":", 1)[0])
        if notifier is None:
            return
        try:
            await notifier(record)
        except Exception:
            log.exception("notify_failed", delivery_id=record.id)
        async with self.engine.begin() as conn:
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.id == record.id)
                .values(notified_at=time.time())
            )

    # -- reading and operating ---------------------------------------------------------

    async def get(self, delivery_id: str) -> DeliveryRecord | None:
        async with self.engine.connect() as conn:
            row = (
                (await conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)))
                .mappings()
                .first()
            )
        return DeliveryRecord.from_row(row) if row is not None else None

    async def list(
        self,
        *,
        status: str | None = None,
        source: str | None = None,
        limit: int = 50,
        offset: int = 0,
        since: float | None = None,
    ) -> list[DeliveryRecord]:
        query = (
            select(deliveries).order_by(deliveries.c.created_at.desc()).limit(limit).offset(offset)
        )
        if status:
            query = query.where(deliveries.c.status == status)
        if source:
            query = query.where(
                or_(deliveries.c.source == source, deliveries.c.source.like(source + ":%"))
            )
        if since is not None:
            query = query.where(deliveries.c.created_at >= since)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [DeliveryRecord.from_row(r) for r in rows]

    async def counts(self, *, since: float | None = None) -> dict[str, dict[str, int]]:
        """``{source: {status: n}}``."""
        query = select(deliveries.c.source, deliveries.c.status, func.count()).group_by(
            deliveries.c.source, deliveries.c.status
        )
        if since is not None:
            query = query.where(deliveries.c.created_at >= since)
        result: dict[str, dict[str, int]] = {}
        async with self.engine.connect() as conn:
            for source, status, count in (await conn.execute(query)).all():
                result.setdefault(source, {})[status] = int(count)
        return result

    async def retry(self, delivery_id: str) -> bool:
        """Put a failed delivery back in the queue (attempts reset)."""
        now = time.time()
        waiting = deliveries.alias("waiting")
        async with self.engine.begin() as conn:
            changed = await conn.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id, deliveries.c.status == FAILED)
                .where(
                    ~exists().where(
                        waiting.c.token == deliveries.c.token, waiting.c.status == PENDING
                    )
                )
                .values(
                    status=PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                    notified_at=None,
                )
            )
        self._wake.set()
        return bool(changed.rowcount)

    async def retry_failed(self) -> int:
        ids = [r.id for r in await self.list(status=FAILED, limit=100_000)]
        return sum([await self.retry(i) for i in ids])

    async def wait_for_final(self, delivery_id: str, timeout: float) -> DeliveryRecord | None:
        """Poll until the delivery is final (tests and the CLI)."""
        deadline = time.monotonic() + timeout
        while True:
            record = await self.get(delivery_id)
            if record is None or record.status in (DELIVERED, FAILED, REJECTED):
                return record
            if time.monotonic() >= deadline:
                return record
            await asyncio.sleep(0.05)


@dataclass
class _Waiter:
    gone: bool = False
    record: DeliveryRecord | None = None


class DeliveryWorker:
    """Claims due deliveries and registers them, until stopped."""

    def __init__(self, queue: DeliveryQueue) -> None:
        self.queue = queue
        self.settings = queue.settings
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._last_auth_check = 0.0

    def stop(self) -> None:
        self._stopping.set()
        self.queue._wake.set()

    async def run(self) -> None:
        """The loop: claim what is due, deliver concurrently, sleep until more is due."""
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            while not self._stopping.is_set():
                try:
                    claimed = await self.run_once()
                except Exception:
                    log.exception("worker_loop_error")
                    claimed = 0
                if claimed:
                    continue
                self.queue._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.queue._wake.wait(), timeout=self.settings.worker_poll_interval
                    )
        finally:
            heartbeat.cancel()
            await self._drain()

    async def run_once(self) -> int:
        """Claim and start as many due deliveries as there are free slots; return how many."""
        queue = self.queue
        if queue.paused_reason is not None and not await self._credentials_ok():
            return 0
        hint = queue.client.pacer.wait_hint_any()
        if hint is not None:
            return 0
        free = self.settings.rocketchat_concurrency - len(self._in_flight)
        free = min(free, queue.client.pacer.room_hint(free))
        if free <= 0:
            if self._in_flight:
                await asyncio.wait(
                    set(self._in_flight.values()), return_when=asyncio.FIRST_COMPLETED
                )
            return 0
        records = await self.claim(free)
        for record in records:
            task = asyncio.create_task(queue.deliver(record))
            self._in_flight[record.id] = task
            task.add_done_callback(self._forget(record.id))
        return len(records)

    def _forget(self, delivery_id: str) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._in_flight.pop(delivery_id, None)

        return done

    async def claim(self, limit: int) -> list[DeliveryRecord]:
        now = time.time()
        due = or_(
            and_(deliveries.c.status == PENDING, deliveries.c.next_attempt_at <= now),
            and_(deliveries.c.status == DELIVERING, deliveries.c.lease_until < now),
        )
        candidates = (
            select(deliveries.c.id)
            .where(due)
            .where(~DeliveryQueue._token_busy(now))
            .order_by(deliveries.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        async with self.queue.engine.begin() as conn:
            ids = [r[0] for r in (await conn.execute(candidates)).all()]
            if not ids:
                return []
            rows = (
                (
                    await conn.execute(
                        update(deliveries)
                        .where(deliveries.c.id.in_(ids), due)
                        .values(
                            status=DELIVERING,
                            lease_owner=self.queue.owner,
                            lease_until=now + self.settings.delivery_lease,
                            updated_at=now,
                        )
                        .returning(*deliveries.c)
                    )
                )
                .mappings()
                .all()
            )
        return [DeliveryRecord.from_row(r) for r in rows]

    async def _credentials_ok(self) -> bool:
        now = time.monotonic()
        if now - self._last_auth_check < self.settings.auth_check_interval:
            return False
        self._last_auth_check = now
        try:
            await self.queue.client.me()
        except ConfigurationError as exc:
            self.queue.paused_reason = str(exc)
            return False
        except RocketChatError:
            return False
        log.info("delivery_resumed")
        self.queue.paused_reason = None
        self.queue.client.forget_readiness()
        return True

    async def _heartbeat(self) -> None:
        """Extend the leases of rows still in flight, so nobody else takes them."""
        interval = self.settings.delivery_lease / 3
        while True:
            await asyncio.sleep(interval)
            ids = list(self.queue.active)
            if not ids:
                continue
            with contextlib.suppress(Exception):
                async with self.queue.engine.begin() as conn:
                    await conn.execute(
                        update(deliveries)
                        .where(
                            deliveries.c.id.in_(ids),
                            deliveries.c.lease_owner == self.queue.owner,
                            deliveries.c.status == DELIVERING,
                        )
                        .values(lease_until=time.time() + self.settings.delivery_lease)
                    )

    async def _drain(self, grace: float | None = None) -> None:
        """On stop: let in-flight deliveries finish, then hand back what is left."""
        grace = self.settings.shutdown_grace if grace is None else grace
        tasks = set(self._in_flight.values()) | set(self.queue._fast_tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        async with self.queue.engine.begin() as conn:
            await conn.execute(
                update(deliveries)
                .where(
                    deliveries.c.lease_owner == self.queue.owner, deliveries.c.status == DELIVERING
                )
                .values(status=PENDING, lease_owner=None, lease_until=None, updated_at=time.time())
            )
