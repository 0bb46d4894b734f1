"""Durable delivery: accept a contact into the database, then register it exactly once.

:class:`DeliveryQueue` is what channels call. ``submit`` validates, deduplicates
on the source's event id (or ids: a submission standing for several events is a
duplicate only when all were seen), merges with what is already known about the person
and commits one row before the caller gets its answer; it may then try the delivery
at once for a short budget (the fast path). :class:`DeliveryWorker` claims due
rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a single writer on SQLite),
registers them through :class:`~adapter.rocketchat.RocketChatClient`, retries
with capped exponential backoff, waits out rate limits without spending attempts,
pauses everything while the credentials are rejected, and reports final outcomes
to the channel that asked (e.g. Slack's ``response_url``).

Details that matter:

* A request that tries its contact at once stores it as due only after its budget,
  so the worker does not take the row from under it; a caller that waited gets the
  outcome in its answer, every other callback of the delivery (merged submissions
  each keep theirs) is called once: ``notified_at`` is claimed before calling, and a
  sweep tells outcomes whose process died before telling them.
* A worker claims up to twice ROCKETCHAT_CONCURRENCY rows (leased, heartbeated) so a
  freed connection is used at once; calls stay bounded by ROCKETCHAT_CONCURRENCY. On
  stop, rows not yet sent are handed back. A dead worker's rows are taken over when
  their lease expires, or folded into a newer pending delivery of the same person.
* A few failures in a row to reach Rocket.Chat (network, 5xx) switch to probing with
  one delivery at a time, spaced by backoff, instead of trying every due row.
* On SQLite every write of the process goes through one queue that commits whatever
  queued up in one transaction (group commit: one fsync for many accepts/outcomes).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, TypeVar

import structlog
from sqlalchemy import and_, bindparam, case, exists, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from adapter.core.contact import Contact, ContactError, validate_contact
from adapter.core.errors import (
    ConfigurationError,
    ContactRejected,
    PermissionDenied,
    RateLimited,
    RocketChatError,
)
from adapter.ledger.schema import (
    deliveries,
    delivery_attempts,
    delivery_events,
    people,
    sqlite_writer_engine,
)
from adapter.ledger.sqlite_writer import SQLiteWriter, WriteConnection
from adapter.ops import metrics
from adapter.ops.logs import redact_text
from adapter.rocketchat.client import RocketChatClient
from adapter.rocketchat.sansio import RegisteredContact, Registration, contact_token
from adapter.settings import Settings

__all__ = [
    "Attempt",
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
IGNORED = "ignored"  # a webhook event without contact details, kept for WEBHOOK_RECORD_IGNORED
STATUSES = (PENDING, DELIVERING, DELIVERED, FAILED, REJECTED, MERGED, IGNORED)
Notifier = Callable[["DeliveryRecord"], Awaitable[None]]
Callback = Mapping[str, Any]
T = TypeVar("T")

# Consecutive failures to reach Rocket.Chat (network trouble, 5xx) after which the worker
# stops trying every due delivery and probes with one at a time, spaced by backoff, until
# an answer comes back: an outage costs one call per backoff step, not one per contact.
_OUTAGE_THRESHOLD = 3
_OUTAGE_MAX_DELAY = 30.0
# Final outcomes whose callback was never called (the process died between recording the
# outcome and calling it) are looked for this often, once they are this old.
_NOTIFY_SWEEP_INTERVAL = 5.0
_MAX_HOLD = 2.5  # longest a request's own try keeps the worker off its row (FAST_PATH_BUDGET max)
_NOTIFY_GRACE = 10.0
_UNNOTIFIED = text("notified_at IS NULL AND status IN ('delivered', 'failed')")  # partial index


# Statements of the accept path, built once (building them per call costs as much as running
# them on SQLite).
_LATEST_FOR_TOKEN = (
    select(deliveries)
    .where(
        deliveries.c.token == bindparam("token"),
        deliveries.c.status.in_((PENDING, DELIVERED, DELIVERING, FAILED)),
    )
    .order_by(case((deliveries.c.status == PENDING, 0), else_=1), deliveries.c.created_at.desc())
    .limit(1)
    .with_for_update()
)
_INSERT_DELIVERY = deliveries.insert()  # executed with the row as parameters
# The SET clause comes from the parameters' keys (one compiled form per set of keys, cached);
# b_id is the row. Building ``update(...).values(...)`` per call costs more than running it.
_UPDATE_DELIVERY = update(deliveries).where(deliveries.c.id == bindparam("b_id"))
# Recording an outcome (only while we hold the lease); the contact id may have been
# recorded meanwhile (contact-center strategy), so it and the strategy are kept if not given.
_FINISH = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"), deliveries.c.lease_owner == bindparam("b_owner"))
    .values(
        status=bindparam("b_status"),
        lease_owner=None,
        lease_until=None,
        updated_at=bindparam("b_now"),
        attempts=bindparam("b_attempts"),
        last_error=bindparam("b_error"),
        contact_id=func.coalesce(bindparam("b_contact_id"), deliveries.c.contact_id),
        strategy=func.coalesce(bindparam("b_strategy"), deliveries.c.strategy),
        delivered_at=func.coalesce(bindparam("b_delivered_at"), deliveries.c.delivered_at),
        notified_at=bindparam("b_notified_at"),
    )
    .returning(deliveries.c.contact_id, deliveries.c.strategy)
)
_INSERT_EVENT = delivery_events.insert()


@dataclass(frozen=True)
class Attempt:
    """One try at registering a delivery in Rocket.Chat, as the admin page lists it."""

    started_at: float
    duration: float  # seconds until Rocket.Chat's answer, or until giving up on one
    outcome: str  # one of OUTCOMES
    error: str | None = None
    contact_id: str | None = None
    worker: str | None = None  # the lease owner that made the call

    OUTCOMES: ClassVar[dict[str, str]] = {
        "delivered": "Rocket.Chat registered the contact",
        "rejected": "Rocket.Chat refused the contact (not retried)",
        "retry": "no usable answer (network, timeout or 5xx): tried again later",
        "gave_up": "no usable answer, and the retry window is over",
        "rate_limited": "rate limited: waited for the window to reset (not counted)",
        "paused": "credentials or permission refused: delivery paused (not counted)",
        "abandoned": "its worker stopped before recording an answer: taken over",
    }

    @classmethod
    def from_row(cls, row: Any) -> Attempt:
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    def values(self, delivery_id: str) -> dict[str, Any]:
        return {"delivery_id": delivery_id, **asdict(self)}

    def public(self) -> dict[str, Any]:
        """For an authenticated operator; Rocket.Chat's error text may quote what it
        refused, so it is masked like ``last_error`` in the admin list."""
        return {**asdict(self), "error": redact_text(self.error) if self.error else None}


_INSERT_ATTEMPT = delivery_attempts.insert()


@dataclass(frozen=True)
class Submission:
    """A contact as a channel received it, before validation."""

    source: str  # "slack", "form:default", "webhook:chatwoot", "api", "cli"
    fields: Mapping[str, str | None]  # raw name / email / phone as given
    event_id: str | None = None  # the source's own event id: the same id is accepted once
    # Other event ids of the same source this one submission stands for (a provider's events
    # of one person, combined into one submission): each is recorded like ``event_id``, so a
    # retry of any one of them is a duplicate. The submission is a duplicate only when every
    # id was seen before; otherwise the seen ones are dropped and it goes on with the others.
    also_event_ids: tuple[str, ...] = ()
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
    phone_region: str | None = None  # ISO country for national numbers; else DEFAULT_PHONE_REGION
    required_fields: tuple[str, ...] | None = None  # else CONTACT_REQUIRED_FIELDS
    missing_hints: Mapping[str, str] = field(default_factory=dict)  # field -> what to do
    ignored: str | None = None  # no contact: only kept as an 'ignored' row with this reason

    @property
    def channel(self) -> str:
        return self.source.split(":", 1)[0]

    @property
    def event_ids(self) -> tuple[str, ...]:
        """``event_id`` and ``also_event_ids``: each non-empty id once, in order."""
        return tuple(dict.fromkeys(i for i in (self.event_id, *self.also_event_ids) if i))

    def explained(self, errors: Mapping[str, str]) -> dict[str, str]:
        """``errors``, each missing field's followed by its hint from ``missing_hints``."""
        return {
            key: f"{message} ({self.missing_hints[key]})"
            if message == "is required" and key in self.missing_hints
            else message
            for key, message in errors.items()
        }


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
    extra_callbacks: Sequence[Callback] | None = None  # of submissions merged into this one
    queued_at: float | None = None  # start of the current round of attempts (give-up clock)

    @classmethod
    def from_row(cls, row: Any) -> DeliveryRecord:
        names = cls.__dataclass_fields__
        return cls(**{k: row[k] for k in names if k in row})

    @property
    def callbacks(self) -> list[Callback]:
        """Every callback to tell the outcome: this submission's, then merged ones'."""
        found = [self.callback] if self.callback else []
        return found + [dict(c) for c in self.extra_callbacks or () if c and c not in found]

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
        """What anyone holding the id may see: no personal data (Rocket.Chat's error text
        may quote the email or phone it refused: masked)."""
        return {
            "id": self.id,
            "source": self.source,
            "team": self.team,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": redact_text(self.last_error) if self.last_error else self.last_error,
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
            "last_error": self.last_error,
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
        return self.delivery_id is not None and self.status not in (REJECTED, IGNORED, "invalid")


def backoff_delay(attempts: int, *, first: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: ``min(cap, d·U(1, 1.5))``, ``d = first·2^(n-1)``.

    Never earlier than the stated delay (the first retry comes RETRY_FIRST_DELAY after the
    first attempt at the soonest), spread up to half as much again so that contacts
    failing together do not retry together; never later than ``cap``.
    """
    base = min(cap, first * (2 ** max(attempts - 1, 0)))
    return float(min(cap, base * rng.uniform(1.0, 1.5)))


def _duration(seconds: float) -> str:
    """``86400`` → ``24 h``, ``90`` → ``90 s``: for messages people read."""
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 120:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _with_callback(
    callback: Callback | None, extra: Sequence[Callback] | None, new: Callback | None
) -> dict[str, Any]:
    """Column values that add ``new`` to a row's callbacks (nothing if already there)."""
    if not new:
        return {}
    new = dict(new)
    if not callback:
        return {"callback": new}
    extras = [dict(c) for c in extra or ()]
    if new == dict(callback) or new in extras:
        return {}
    return {"extra_callbacks": [*extras, new]}


def _merge_raw(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(old)
    for key, value in new.items():
        if key == "custom_fields":
            merged[key] = {**(old.get(key) or {}), **(value or {})}
        elif value is not None and str(value).strip():
            merged[key] = value
    return merged


def _person_keys(fields: Mapping[str, Any]) -> dict[str, str | None]:
    """The ``email_key``/``phone_key`` columns of a row with these (validated) fields."""
    email = fields.get("email")
    phone = fields.get("phone")
    return {
        "email_key": str(email).strip().lower() if email else None,
        "phone_key": str(phone) if phone else None,
    }


# Built once: statements made per call spend more time building their cache key than
# SQLite spends running them.
_FIND_EVENT = (
    select(deliveries, delivery_events.c.created_at.label("event_created_at"))
    .join(delivery_events, delivery_events.c.delivery_id == deliveries.c.id)
    .where(
        delivery_events.c.source == bindparam("source"),
        delivery_events.c.event_id == bindparam("event_id"),
    )
)
# Which of a submission's event ids (see Submission.also_event_ids) were seen before.
_SEEN_EVENTS = select(delivery_events.c.event_id).where(
    delivery_events.c.source == bindparam("source"),
    delivery_events.c.event_id.in_(bindparam("event_ids", expanding=True)),
)
_GET = select(deliveries).where(deliveries.c.id == bindparam("id"))
# A provider's person (Crisp session, Chatwoot contact…): what they gave so far.
_FIND_PERSON = select(people).where(
    people.c.source == bindparam("source"), people.c.person_key == bindparam("person_key")
)
_UPDATE_PERSON = (
    update(people)
    .where(
        people.c.source == bindparam("b_source"),
        people.c.person_key == bindparam("b_person_key"),
    )
    .values(
        fields=bindparam("b_fields", type_=people.c.fields.type),
        token=bindparam("b_token"),
        updated_at=bindparam("b_now"),
    )
)
_INSERT_PERSON = people.insert()
_INCOMPLETE = (
    select(deliveries.c.id)
    .where(
        deliveries.c.source == bindparam("source"),
        deliveries.c.person_key == bindparam("person_key"),
        deliveries.c.status == REJECTED,
    )
    .order_by(deliveries.c.created_at.desc())
    .limit(1)
)


def _earlier_query(column: Any) -> Any:
    return (
        select(deliveries.c.token, deliveries.c.created_at, deliveries.c.email_key)
        .where(
            column == bindparam("key"),
            deliveries.c.token.is_not(None),
            deliveries.c.token != bindparam("token"),
            deliveries.c.status != REJECTED,
        )
        .order_by(deliveries.c.created_at.desc())
        .limit(1)
    )


# The same person under another token: the latest delivery with the same email, or with
# the same phone (see DeliveryQueue._earlier_token).
_EARLIER_BY_EMAIL = _earlier_query(deliveries.c.email_key)
_EARLIER_BY_PHONE = _earlier_query(deliveries.c.phone_key)


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
        # 403: /api/v1/me cannot tell when the permission is back, only a real call can.
        self._paused_permission = False
        # time.monotonic() of the last look whether a pause is over (credentials re-checked,
        # or one delivery let through), shared by the worker and the fast path: a web process
        # without a worker (INPROCESS_WORKER=false) must find out on its own.
        self._last_auth_check = 0.0
        self._wake = asyncio.Event()
        self._fast_tasks: set[asyncio.Task[Any]] = set()
        self._fast_slots = settings.rocketchat_concurrency * 2
        self.active: set[str] = set()  # ids this process is delivering right now
        # SQLite has one writer at a time: this process's writes go through one queue and
        # share transactions (one commit, one fsync, for everything that queued meanwhile).
        writer_engine = sqlite_writer_engine(engine)
        self._writer = SQLiteWriter(writer_engine) if writer_engine is not None else None
        # Outage detection shared by the worker and the fast path (see _OUTAGE_THRESHOLD).
        self._outage_failures = 0
        self._outage_until = 0.0  # time.monotonic() before which nobody calls Rocket.Chat

    def close(self) -> None:
        """Release the SQLite writer's connection and thread (before ``engine.dispose()``)."""
        if self._writer is not None:
            self._writer.close()

    async def read(self, job: Callable[[WriteConnection], Awaitable[T]]) -> T:
        """Run a read-only ``job``: inline on SQLite (see adapter.sqlite_writer), else on a
        pooled connection."""
        if self._writer is not None:
            return await self._writer.read(job)
        async with self.engine.connect() as conn:
            return await job(conn)

    async def _write(self, job: Callable[[WriteConnection], Awaitable[T]]) -> T:
        """Run ``job`` in a write transaction and commit before returning its result."""
        if self._writer is not None:
            return await self._writer.run(job)
        async with self.engine.begin() as conn:
            return await job(conn)

    # -- accepting -----------------------------------------------------------------

    async def submit(self, submission: Submission, *, wait: float | None = None) -> Outcome:
        """Validate and durably accept a contact; optionally try it now for ``wait`` seconds."""
        submission, seen = await self._seen_before(submission)
        if seen is not None:
            metrics.CONTACTS.labels(submission.channel, "duplicate").inc()
            return self._outcome(seen, duplicate=True)

        raw: dict[str, Any] = {
            "name": submission.fields.get("name"),
            "email": submission.fields.get("email"),
            "phone": submission.fields.get("phone"),
            "custom_fields": dict(submission.custom_fields),
        }
        budget = self.settings.fast_path_budget if wait is None else wait
        # Decided before the insert: a row this request will try at once is stored as due
        # only after the budget, so the worker does not race the request for it.
        fast = budget > 0 and self._fast_path_open()
        probe = False
        if budget > 0 and not fast and self.paused_reason is not None:
            # Paused: every AUTH_CHECK_INTERVAL find out whether it is over, within the budget.
            started = time.monotonic()
            check = asyncio.create_task(self.resume_if_fixed())
            self._fast_tasks.add(check)  # referenced until done; drained on shutdown
            check.add_done_callback(self._fast_tasks.discard)
            with contextlib.suppress(Exception):  # TimeoutError: it goes on without us
                probe = await asyncio.wait_for(asyncio.shield(check), budget)
            budget -= time.monotonic() - started
            fast = probe and budget > 0.05 and self._fast_path_open(ignore_pause=True)
        for attempt in range(3):
            try:
                hold = min(budget, _MAX_HOLD) if fast else 0.0
                outcome = await self._accept(submission, raw, hold=hold)
                break
            except IntegrityError:
                # A concurrent accept for the same event or person won the race: look again.
                # (Of several event ids, one recorded meanwhile is dropped, the rest goes on.)
                submission, seen = await self._seen_before(submission)
                if seen is not None:
                    return self._outcome(seen, duplicate=True)
                if attempt == 2:
                    raise
        if not outcome.accepted:
            if outcome.status == "invalid":  # answered with the field errors, not stored
                metrics.CONTACTS.labels(submission.channel, "rejected").inc()
            return outcome
        metrics.CONTACTS.labels(submission.channel, "accepted").inc()
        if fast and outcome.delivery_id is not None and outcome.status == PENDING:
            return await self._try_now(outcome, budget, submission.callback, probe=probe)
        self._wake.set()
        return outcome

    def _fast_path_open(self, *, ignore_pause: bool = False) -> bool:
        """Is trying a delivery right now sensible (not paused, no outage, room in the window)?"""
        pacer = self.client.pacer
        return (
            (self.paused_reason is None or ignore_pause)
            and len(self._fast_tasks) < self._fast_slots
            and self._outage_failures < _OUTAGE_THRESHOLD
            and pacer.wait_hint_any() is None
            and not pacer.exhausted()
        )

    async def resume_if_fixed(self) -> bool:
        """While delivery is paused, at most once per AUTH_CHECK_INTERVAL: is it over?

        Rejected credentials (401) are checked with ``GET /api/v1/me``: if accepted, the
        pause ends here. A missing permission (403) only shows with a real call: the answer
        True lets one delivery through, which ends the pause if it succeeds (and burns no
        attempt if not). Called by the worker and by the fast path, so a web process
        without a worker (INPROCESS_WORKER=false) resumes too.
        """
        if self.paused_reason is None:
            return False
        now = time.monotonic()
        if now - self._last_auth_check < self.settings.auth_check_interval:
            return False
        self._last_auth_check = now
        if self._paused_permission:
            return True
        try:
            await self.client.me()
        except ConfigurationError as exc:
            self.paused_reason = str(exc)
            return False
        except RocketChatError:
            return False
        self._resumed()
        return True

    def _resumed(self) -> None:
        """The pause is over: deliver again, and let /readyz look afresh."""
        log.info("delivery_resumed")
        self.paused_reason = None
        self.client.forget_readiness()

    async def _accept(
        self, submission: Submission, given: dict[str, Any], *, hold: float = 0.0
    ) -> Outcome:
        now = time.time()

        async def _tx(conn: WriteConnection) -> Outcome:
            raw = dict(given)
            token: str | None = None
            if submission.ignored is not None:  # nothing to register: kept for the record only
                delivery_id = uuid.uuid4().hex
                row = self._row(submission, delivery_id, IGNORED, raw, None, now)
                await conn.execute(_INSERT_DELIVERY, {**row, "last_error": submission.ignored})
                await self._record_event(conn, submission, delivery_id, now)
                return Outcome(status=IGNORED, delivery_id=delivery_id)
            person_key = (
                f"{submission.source}:{submission.person_key}" if submission.person_key else None
            )
            if person_key is not None:
                params = {"source": submission.source, "person_key": submission.person_key}
                person = (await conn.execute(_FIND_PERSON, params)).mappings().first()
                if person is not None:
                    raw = _merge_raw(person["fields"], raw)
                    token = person["token"]
            try:
                contact, warnings = validate_contact(
                    raw,
                    required=submission.required_fields or self.settings.contact_required_fields,
                    default_region=submission.phone_region or self.settings.default_phone_region,
                    check_deliverability=self.settings.check_email_deliverability,
                    custom_fields=raw.get("custom_fields") or {},
                    drop_invalid_optional=submission.drop_invalid_optional,
                )
            except ContactError as exc:
                exc.errors = submission.explained(exc.errors)
                if person_key is not None:
                    await self._save_person(conn, submission, raw, token, now)
                if not submission.keep_rejected:
                    return Outcome(status="invalid", errors=exc.errors)
                row = self._row(submission, uuid.uuid4().hex, REJECTED, raw, None, now)
                incomplete = await self._incomplete_row(conn, submission)
                if incomplete is not None:
                    # The same provider person, still incomplete: one row, kept up to date
                    # with everything they have given so far (Crisp sends name, email and
                    # phone in separate events).
                    delivery_id = incomplete
                    changes = {"fields": row["fields"], "errors": exc.errors, "updated_at": now}
                    await conn.execute(_UPDATE_DELIVERY, {"b_id": delivery_id, **changes})
                else:
                    delivery_id = row["id"]
                    await conn.execute(_INSERT_DELIVERY, {**row, "errors": exc.errors})
                await self._record_event(conn, submission, delivery_id, now)
                metrics.CONTACTS.labels(submission.channel, "rejected").inc()
                return Outcome(status=REJECTED, delivery_id=delivery_id, errors=exc.errors)

            if token is None:
                token = contact_token(
                    email=contact.email, phone=contact.phone, person_key=person_key
                )
            # One look at the person's latest delivery: a waiting one (merged into), else
            # the latest delivered/failed one (whose details and contact id carry over).
            found = (await conn.execute(_LATEST_FOR_TOKEN, {"token": token})).mappings().first()
            if found is None:
                # Nothing under this token: the same person may have come before under
                # another one (phone only then, email now; an invalid email dropped).
                # Reuse it, or Rocket.Chat would get a second contact for them.
                earlier = await self._earlier_token(conn, contact, token)
                if earlier is not None:
                    token = earlier
                    found = (
                        (await conn.execute(_LATEST_FOR_TOKEN, {"token": token})).mappings().first()
                    )
            if person_key is not None:
                await self._save_person(conn, submission, raw, token, now)
            waiting = found if found is not None and found["status"] == PENDING else None
            if waiting is not None:
                merged = self._contact_of(waiting["fields"]).merged_with(contact)
                values: dict[str, Any] = {"fields": merged.as_dict(), "updated_at": now}
                values.update(_person_keys(values["fields"]))
                # Every merged submission's callback is told the outcome, once.
                values.update(
                    _with_callback(
                        waiting["callback"], waiting.get("extra_callbacks"), submission.callback
                    )
                )
                if submission.contact_manager:
                    values["contact_manager"] = submission.contact_manager
                if warnings:
                    values["warnings"] = {**(waiting["warnings"] or {}), **warnings}
                await conn.execute(_UPDATE_DELIVERY, {"b_id": waiting["id"], **values})
                await self._record_event(conn, submission, waiting["id"], now)
                return Outcome(
                    status=PENDING, delivery_id=waiting["id"], contact=merged, warnings=warnings
                )

            known = found
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
            row["next_attempt_at"] = now + hold
            row.update(warnings=warnings or None, contact_id=contact_id)
            incomplete = await self._incomplete_row(conn, submission)
            if incomplete is not None:
                # The person was rejected as incomplete before and now is complete: that row
                # becomes their delivery (one row per person, not a stale rejection beside it).
                delivery_id = row["id"] = incomplete
                del row["created_at"]
                changes = {**row, "errors": None, "last_error": None}
                await conn.execute(_UPDATE_DELIVERY, {"b_id": delivery_id, **changes})
            else:
                await conn.execute(_INSERT_DELIVERY, row)
            await self._record_event(conn, submission, delivery_id, now)
            return Outcome(
                status=PENDING, delivery_id=delivery_id, contact=merged, warnings=warnings
            )

        if self.settings.check_email_deliverability:
            # Validation asks DNS: not inside a transaction others' writes are batched into.
            async with self.engine.begin() as conn:
                return await _tx(conn)
        return await self._write(_tx)

    @staticmethod
    async def _incomplete_row(conn: WriteConnection, submission: Submission) -> str | None:
        """The rejected row of this provider person, if their details were incomplete."""
        if not submission.person_key:
            return None
        params = {"source": submission.source, "person_key": submission.person_key}
        found = (await conn.execute(_INCOMPLETE, params)).first()
        return str(found[0]) if found is not None else None

    @staticmethod
    async def _earlier_token(conn: WriteConnection, contact: Contact, token: str) -> str | None:
        """The token of the person's most recent earlier delivery under another token:
        same email, or same phone unless that delivery has another email (two emails on one
        phone may well be two people: a shared office or family number)."""
        keys = _person_keys(contact.as_dict())
        email = keys["email_key"]
        found: list[Any] = []
        if email:
            found += (await conn.execute(_EARLIER_BY_EMAIL, {"key": email, "token": token})).all()
        if keys["phone_key"]:
            found += [
                row
                for row in await conn.execute(
                    _EARLIER_BY_PHONE, {"key": keys["phone_key"], "token": token}
                )
                if not (email and row.email_key and row.email_key != email)
            ]
        if not found:
            return None
        return str(max(found, key=lambda row: row.created_at).token)

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
            "queued_at": now,
            "extra_callbacks": None,
            **_person_keys(fields if status != REJECTED else {}),
        }

    @staticmethod
    async def _save_person(
        conn: WriteConnection,
        submission: Submission,
        raw: Mapping[str, Any],
        token: str | None,
        now: float,
    ) -> None:
        values = {
            "b_source": submission.source,
            "b_person_key": submission.person_key,
            "b_fields": dict(raw),
            "b_token": token,
            "b_now": now,
        }
        changed = await conn.execute(_UPDATE_PERSON, values)
        if changed.rowcount == 0:
            await conn.execute(
                _INSERT_PERSON,
                {
                    "source": submission.source,
                    "person_key": submission.person_key,
                    "fields": dict(raw),
                    "token": token,
                    "updated_at": now,
                },
            )

    @staticmethod
    async def _record_event(
        conn: WriteConnection, submission: Submission, delivery_id: str, now: float
    ) -> None:
        """Every event id of ``submission`` leads to ``delivery_id`` from now on."""
        if submission.also_event_ids:
            source = submission.source
            await conn.execute(
                _INSERT_EVENT,
                [
                    {"source": source, "event_id": i, "delivery_id": delivery_id, "created_at": now}
                    for i in submission.event_ids
                ],
            )
        elif submission.event_id:
            await conn.execute(
                _INSERT_EVENT,
                {
                    "source": submission.source,
                    "event_id": submission.event_id,
                    "delivery_id": delivery_id,
                    "created_at": now,
                },
            )

    async def find_event(
        self, source: str, event_id: str, *, since: float | None = None
    ) -> DeliveryRecord | None:
        """The delivery that ``source``'s event ``event_id`` led to, if it was recorded
        (at or after ``since``, when given: e.g. Slack's retry window)."""

        async def _read(conn: WriteConnection) -> Any:
            params = {"source": source, "event_id": event_id}
            return (await conn.execute(_FIND_EVENT, params)).mappings().first()

        row = await self.read(_read)
        if row is None or (since is not None and row["event_created_at"] < since):
            return None
        return DeliveryRecord.from_row(row)

    async def _seen_before(
        self, submission: Submission
    ) -> tuple[Submission, DeliveryRecord | None]:
        """The delivery this submission duplicates (every event id of it seen before), or
        None with the submission left to accept (less the ids seen, when it has several)."""
        if submission.also_event_ids:
            return await self._unseen_events(submission)
        if submission.event_id:
            return submission, await self.find_event(submission.source, submission.event_id)
        return submission, None

    async def _unseen_events(
        self, submission: Submission
    ) -> tuple[Submission, DeliveryRecord | None]:
        """A submission of several event ids, less those seen before (the first unseen id
        becomes ``event_id``), and None; or, when every id was seen, the submission and the
        delivery the first id leads to (the submission is a duplicate)."""
        ids = submission.event_ids
        if not ids:
            return replace(submission, also_event_ids=()), None

        async def _read(conn: WriteConnection) -> tuple[set[str], Any]:
            params = {"source": submission.source, "event_ids": list(ids)}
            seen = {str(row[0]) for row in await conn.execute(_SEEN_EVENTS, params)}
            if len(seen) < len(ids):
                return seen, None
            params = {"source": submission.source, "event_id": ids[0]}
            return seen, (await conn.execute(_FIND_EVENT, params)).mappings().first()

        seen, row = await self.read(_read)
        if row is not None:
            return submission, DeliveryRecord.from_row(row)
        # (Every id seen but no delivery found cannot happen: deliveries are never deleted.)
        unseen = [i for i in ids if i not in seen] or list(ids)
        return replace(submission, event_id=unseen[0], also_event_ids=tuple(unseen[1:])), None

    def _outcome(self, record: DeliveryRecord, *, duplicate: bool = False) -> Outcome:
        return Outcome(
            status=record.status,
            delivery_id=record.id,
            duplicate=duplicate,
            contact=record.contact,
            contact_id=record.contact_id,
            contact_url=(
                self.client.contact_url(record.contact_id, record.strategy)
                if record.contact_id
                else None
            ),
            errors=dict(record.errors or {}),
            warnings=dict(record.warnings or {}),
            last_error=record.last_error,
        )

    # -- accepting in bulk (imports) ---------------------------------------------------

    async def submit_many(self, submissions: Sequence[Submission]) -> list[Outcome]:
        """Accept many contacts in one transaction: ``submit`` in bulk, without the fast path.

        Same validation, dedupe on ``(source, event_id)`` and merging with a waiting or
        delivered delivery of the same person (within the batch too) as ``submit``; one
        outcome per submission, in order. Made for bulk imports: a submission with a
        ``person_key``, ``keep_rejected``, a ``callback`` or ``also_event_ids`` is refused (use
        ``submit``). A race with a concurrent accept rolls the batch back and runs it again.
        """
        for submission in submissions:
            if (
                submission.person_key is not None
                or submission.keep_rejected
                or submission.callback
                or submission.also_event_ids
            ):
                raise ValueError(
                    "submit_many takes no person_key, keep_rejected, callback or "
                    "also_event_ids: use submit"
                )
        outcomes: list[Outcome] = []
        checked: list[tuple[int, Contact, dict[str, str]]] = []
        for index, submission in enumerate(submissions):
            try:
                contact, warnings = validate_contact(
                    {key: submission.fields.get(key) for key in ("name", "email", "phone")},
                    required=self.settings.contact_required_fields,
                    default_region=submission.phone_region or self.settings.default_phone_region,
                    check_deliverability=self.settings.check_email_deliverability,
                    custom_fields=dict(submission.custom_fields),
                    drop_invalid_optional=submission.drop_invalid_optional,
                )
            except ContactError as exc:
                outcomes.append(Outcome(status="invalid", errors=exc.errors))
                metrics.CONTACTS.labels(submission.channel, "rejected").inc()
                continue
            outcomes.append(Outcome(status="invalid"))  # replaced below
            checked.append((index, contact, warnings))
        if not checked:
            return outcomes
        for attempt in range(3):
            try:
                accepted = await self._accept_many(submissions, checked)
                break
            except (IntegrityError, OperationalError):
                if attempt == 2:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))
        for index, outcome in accepted.items():
            outcomes[index] = outcome
            label = "duplicate" if outcome.duplicate else "accepted"
            metrics.CONTACTS.labels(submissions[index].channel, label).inc()
        self._wake.set()
        return outcomes

    async def _accept_many(
        self, submissions: Sequence[Submission], checked: list[tuple[int, Contact, dict[str, str]]]
    ) -> dict[int, Outcome]:
        tokens = {
            index: contact_token(email=contact.email, phone=contact.phone, person_key=None)
            for index, contact, _ in checked
        }

        async def _tx(conn: WriteConnection) -> dict[int, Outcome]:
            if conn.dialect.name == "postgresql":
                # Same-sized batches reuse one prepared statement; PostgreSQL's generic plan
                # for "IN (500 values)" scans the whole table as it grows: plan each batch.
                await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
            now = time.time()
            result: dict[int, Outcome] = {}
            event_ids: dict[str, set[str]] = {}
            for index, _, _ in checked:
                if submissions[index].event_id:
                    event_ids.setdefault(submissions[index].source, set()).add(
                        str(submissions[index].event_id)
                    )
            seen: dict[tuple[str, str], str] = {}
            for source, ids in event_ids.items():
                found = await conn.execute(
                    select(delivery_events.c.event_id, delivery_events.c.delivery_id).where(
                        delivery_events.c.source == source, delivery_events.c.event_id.in_(ids)
                    )
                )
                seen.update({(source, event): delivery for event, delivery in found.all()})
            seen_records: dict[str, DeliveryRecord] = {}
            if seen:
                found_rows = await conn.execute(
                    select(deliveries).where(deliveries.c.id.in_(set(seen.values())))
                )
                for found_row in found_rows.mappings():
                    seen_records[found_row["id"]] = DeliveryRecord.from_row(found_row)
            wanted = set(tokens.values())
            waiting: dict[str, dict[str, Any]] = {}
            for found_row in (
                await conn.execute(
                    select(
                        deliveries.c.id,
                        deliveries.c.token,
                        deliveries.c.fields,
                        deliveries.c.warnings,
                    )
                    .where(deliveries.c.token.in_(wanted), deliveries.c.status == PENDING)
                    .with_for_update()
                )
            ).mappings():
                waiting[found_row["token"]] = {
                    "id": found_row["id"],
                    "contact": self._contact_of(found_row["fields"]),
                    "warnings": dict(found_row["warnings"] or {}),
                    "values": {},
                }
            known: dict[str, Mapping[str, Any]] = {}
            for found_row in (
                await conn.execute(
                    select(
                        deliveries.c.token,
                        deliveries.c.fields,
                        deliveries.c.contact_id,
                        deliveries.c.contact_manager,
                    )
                    .where(
                        deliveries.c.token.in_(wanted),
                        deliveries.c.status.in_((DELIVERED, DELIVERING, FAILED)),
                    )
                    .order_by(deliveries.c.created_at.desc())
                )
            ).mappings():
                known.setdefault(found_row["token"], dict(found_row))

            new_rows: dict[str, dict[str, Any]] = {}  # token -> row to insert
            events: list[dict[str, Any]] = []
            for index, contact, warnings in checked:
                submission = submissions[index]
                key = (submission.source, str(submission.event_id or ""))
                if submission.event_id and key in seen:
                    record = seen_records.get(seen[key])
                    result[index] = (
                        self._outcome(record, duplicate=True)
                        if record is not None
                        else Outcome(status=PENDING, delivery_id=seen[key], duplicate=True)
                    )
                    continue
                token = tokens[index]
                if token in new_rows:  # a second row for the same person in this batch
                    row = new_rows[token]
                    merged = self._contact_of(row["fields"]).merged_with(contact)
                    row["fields"] = merged.as_dict()
                    row.update(_person_keys(row["fields"]))
                    if submission.contact_manager:
                        row["contact_manager"] = submission.contact_manager
                    if warnings:
                        row["warnings"] = {**(row["warnings"] or {}), **warnings}
                    delivery_id = str(row["id"])
                elif token in waiting:
                    entry = waiting[token]
                    merged = entry["contact"].merged_with(contact)
                    entry["contact"] = merged
                    values = entry["values"]
                    values.update(fields=merged.as_dict(), updated_at=now)
                    values.update(_person_keys(values["fields"]))
                    if submission.contact_manager:
                        values["contact_manager"] = submission.contact_manager
                    if warnings:
                        entry["warnings"] = {**entry["warnings"], **warnings}
                        values["warnings"] = entry["warnings"]
                    delivery_id = str(entry["id"])
                else:
                    merged = contact
                    contact_id = None
                    manager = submission.contact_manager
                    previous = known.get(token)
                    if previous is not None:
                        merged = self._contact_of(previous["fields"]).merged_with(contact)
                        contact_id = previous["contact_id"]
                        manager = manager or previous["contact_manager"]
                    delivery_id = uuid.uuid4().hex
                    row = self._row(submission, delivery_id, PENDING, merged.as_dict(), token, now)
                    row.update(
                        contact_manager=manager, warnings=warnings or None, contact_id=contact_id
                    )
                    new_rows[token] = row
                if submission.event_id:
                    seen[key] = delivery_id
                    events.append(
                        {
                            "source": submission.source,
                            "event_id": submission.event_id,
                            "delivery_id": delivery_id,
                            "created_at": now,
                        }
                    )
                result[index] = Outcome(
                    status=PENDING, delivery_id=delivery_id, contact=merged, warnings=warnings
                )
            if new_rows:
                await conn.execute(deliveries.insert(), list(new_rows.values()))
            for entry in waiting.values():
                if entry["values"]:
                    await conn.execute(
                        update(deliveries)
                        .where(deliveries.c.id == entry["id"])
                        .values(**entry["values"])
                    )
            if events:
                await conn.execute(delivery_events.insert(), events)
            return result

        return await self._write(_tx)

    # -- the fast path ---------------------------------------------------------------

    async def _try_now(
        self,
        outcome: Outcome,
        budget: float,
        callback: Callback | None = None,
        *,
        probe: bool = False,
    ) -> Outcome:
        """Deliver at once when Rocket.Chat has room for it; give up waiting after ``budget``.

        The caller gets the final outcome if it is known within the budget; otherwise the
        delivery goes on, and its callback (if any) is told the outcome later, once.
        ``probe``: this delivery finds out whether a 403 pause is over (see
        :meth:`resume_if_fixed`).
        """
        assert outcome.delivery_id is not None
        if not self._fast_path_open(ignore_pause=probe):
            self._wake.set()
            return outcome
        waiter = _Waiter(callback=dict(callback) if callback else None)
        task = asyncio.create_task(self._deliver_by_id(outcome.delivery_id, waiter))
        self._fast_tasks.add(task)
        task.add_done_callback(self._fast_tasks.discard)
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=budget)
        except Exception:  # noqa: S110 - TimeoutError, or the task failed: the worker takes over
            pass
        finally:
            # No await between reading ``record`` and setting ``gone``: _finish sees one or the
            # other, so the outcome reaches the caller here or the callback later, never neither.
            if waiter.record is None:
                waiter.gone = True
        record = waiter.record
        if record is None:
            if task.done():
                self._wake.set()  # not taken, or released for a retry: the worker owns it now
            return outcome
        return self._outcome(record)

    async def _deliver_by_id(self, delivery_id: str, waiter: _Waiter) -> None:
        now = time.time()

        async def _tx(conn: WriteConnection) -> Any:
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
            return row

        row = await self._write(_tx)
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

    async def deliver(
        self,
        record: DeliveryRecord,
        waiter: _Waiter | None = None,
        *,
        answered: Callable[[], None] | None = None,
    ) -> None:
        """Register one claimed row and record what happened.

        ``answered`` is called as soon as Rocket.Chat's answer (or the failure to get one)
        is in, before the outcome is written.
        """
        self.active.add(record.id)
        try:
            await self._deliver(record, waiter, answered)
        finally:
            self.active.discard(record.id)

    async def _deliver(
        self,
        record: DeliveryRecord,
        waiter: _Waiter | None,
        answered: Callable[[], None] | None = None,
    ) -> None:
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
            async def _tx(conn: WriteConnection) -> None:
                await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id == record.id)
                    .values(contact_id=contact_id, updated_at=time.time())
                )

            await self._write(_tx)

        started, clock = time.time(), time.monotonic()

        def attempt(
            outcome: str, error: str | None = None, contact_id: str | None = None
        ) -> Attempt:
            return Attempt(
                started_at=started,
                duration=time.monotonic() - clock,
                outcome=outcome,
                error=error,
                contact_id=contact_id,
                worker=self.owner,
            )

        try:
            try:
                result: RegisteredContact = await self.client.register(
                    registration, record_contact_id=remember
                )
            finally:
                if answered is not None:
                    answered()
        except RateLimited as exc:
            self._reachable()
            metrics.ATTEMPTS.labels("rate_limited").inc()
            bound.info("rate_limited", wait_until=exc.reset_at)
            await self._release(
                record,
                next_attempt_at=exc.reset_at,
                last_error=str(exc),
                attempt=attempt("rate_limited", str(exc)),
            )
            await self._postpone_due(exc.reset_at)
            return
        except ConfigurationError as exc:
            self._reachable()
            metrics.ATTEMPTS.labels("paused").inc()
            if self.paused_reason is None:
                bound.error("delivery_paused", reason=str(exc))
            self.paused_reason = str(exc)
            self._paused_permission = isinstance(exc, PermissionDenied)
            await self._release(
                record,
                next_attempt_at=time.time(),
                last_error=str(exc),
                attempt=attempt("paused", str(exc)),
            )
            return
        except ContactRejected as exc:
            self._reachable()
            metrics.ATTEMPTS.labels("rejected").inc()
            bound.warning("delivery_rejected", error=exc.message)
            error = f"Rocket.Chat rejected the contact: {exc.message}"
            await self._finish(
                record, FAILED, last_error=error, waiter=waiter, attempt=attempt("rejected", error)
            )
            return
        except RocketChatError as exc:
            self._unreachable(str(exc))
            await self._retry_later(record, str(exc), bound, waiter, attempt=attempt)
            return
        except Exception as exc:
            bound.exception("delivery_crashed")
            await self._retry_later(
                record, f"unexpected error: {type(exc).__name__}", bound, waiter, attempt=attempt
            )
            return
        metrics.ATTEMPTS.labels("delivered").inc()
        if self.paused_reason is not None:
            self._resumed()
        self._reachable()
        bound.info("delivered", strategy=result.strategy)
        await self._finish(
            record,
            DELIVERED,
            contact_id=result.contact_id,
            strategy=result.strategy,
            waiter=waiter,
            attempt=attempt("delivered", contact_id=result.contact_id),
        )

    async def _retry_later(
        self,
        record: DeliveryRecord,
        error: str,
        bound: Any,
        waiter: _Waiter | None = None,
        *,
        attempt: Callable[[str, str], Attempt],
    ) -> None:
        now = time.time()
        attempts = record.attempts + 1
        started = record.queued_at or record.created_at
        if now - started >= self.settings.retry_give_up_after:
            metrics.ATTEMPTS.labels("gave_up").inc()
            bound.warning("delivery_gave_up", attempts=attempts, error=error)
            await self._finish(
                record,
                FAILED,
                last_error=(
                    f"gave up after {_duration(self.settings.retry_give_up_after)} "
                    f"and {attempts} attempts: {error}"
                ),
                attempts=attempts,
                waiter=waiter,  # a caller still waiting hears "failed", not "pending"
                attempt=attempt("gave_up", error),
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
            record,
            next_attempt_at=now + delay,
            last_error=error,
            attempts=attempts,
            attempt=attempt("retry", error),
        )

    def _reachable(self) -> None:
        """Rocket.Chat answered (whatever it said): the outage, if any, is over."""
        if self._outage_failures >= _OUTAGE_THRESHOLD:
            log.info("rocketchat_reachable_again")
        self._outage_failures = 0
        self._outage_until = 0.0

    def _unreachable(self, error: str) -> None:
        """One more failure to get an answer; after a few in a row, probe with backoff."""
        self._outage_failures += 1
        n = self._outage_failures - _OUTAGE_THRESHOLD + 1
        if n <= 0:
            return
        if n == 1:
            log.warning("rocketchat_outage", error=error)
        delay = backoff_delay(
            n,
            first=self.settings.retry_first_delay,
            cap=min(self.settings.retry_max_delay, _OUTAGE_MAX_DELAY),
            rng=self.rng,
        )
        self._outage_until = max(self._outage_until, time.monotonic() + delay)

    async def _release(
        self,
        record: DeliveryRecord,
        *,
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
            "updated_at": time.time(),
        }
        if attempts is not None:
            values["attempts"] = attempts

        async def _tx(conn: WriteConnection) -> None:
            # Another pending row for this person may have arrived meanwhile: it carries
            # everything we know, so fold ours into it.
            other = await self._pending_sibling(conn, record)
            if other is not None:
                await self._fold_into(conn, record, other, owned=True)
            else:
                changed = await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id == record.id, deliveries.c.lease_owner == self.owner)
                    .values(**values)
                )
                if changed.rowcount == 0:
                    return  # our lease was taken over: the attempt is not ours to tell
            if attempt is not None:
                await conn.execute(_INSERT_ATTEMPT, attempt.values(record.id))

        for tries in range(3):
            try:
                await self._write(_tx)
                return
            except IntegrityError:
                # A pending row for this person was inserted between our look and our
                # update (SQLite reads outside the write transaction): look again.
                if tries == 2:
                    raise

    @staticmethod
    async def _pending_sibling(
        conn: WriteConnection, record: DeliveryRecord
    ) -> Mapping[Any, Any] | None:
        if record.token is None:
            return None
        return (
            (
                await conn.execute(
                    select(deliveries)
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

    async def _fold_into(
        self,
        conn: WriteConnection,
        record: DeliveryRecord,
        other: Mapping[Any, Any],
        *,
        owned: bool,
    ) -> bool:
        """Mark ``record`` merged into the pending delivery ``other`` of the same person.

        ``other`` is newer: its fields win, ours fill the gaps. It takes over our callbacks
        (each still told the outcome once) and our source events (a retried event gets its
        answer). ``owned``: we hold ``record``'s lease; else it must be an expired one.
        """
        now = time.time()
        condition = (
            deliveries.c.lease_owner == self.owner
            if owned
            else and_(deliveries.c.status == DELIVERING, deliveries.c.lease_until < now)
        )
        changed = await conn.execute(
            update(deliveries)
            .where(deliveries.c.id == record.id, condition)
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
        newer = self._contact_of(other["fields"])
        merged = record.contact.merged_with(newer) if record.contact is not None else newer
        carried: dict[str, Any] = {"fields": merged.as_dict(), "updated_at": now}
        carried.update(_person_keys(carried["fields"]))
        callback, extras = other["callback"], list(other.get("extra_callbacks") or ())
        for cb in record.callbacks:
            added = _with_callback(callback, extras, cb)
            callback = added.get("callback", callback)
            extras = added.get("extra_callbacks", extras)
            carried.update(added)
        if not other["contact_manager"] and record.contact_manager:
            carried["contact_manager"] = record.contact_manager
        if not other["contact_id"] and record.contact_id:
            carried["contact_id"] = record.contact_id
        await conn.execute(
            update(deliveries).where(deliveries.c.id == other["id"]).values(**carried)
        )
        await conn.execute(
            update(delivery_events)
            .where(delivery_events.c.delivery_id == record.id)
            .values(delivery_id=other["id"])
        )
        return True

    async def _postpone_due(self, until: float) -> None:
        async def _tx(conn: WriteConnection) -> None:
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.status == PENDING, deliveries.c.next_attempt_at < until)
                .values(next_attempt_at=until)
            )

        await self._write(_tx)

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
        attempt: Attempt | None = None,
    ) -> None:
        now = time.time()
        values: dict[str, Any] = {
            "b_id": record.id,
            "b_owner": self.owner,
            "b_status": status,
            "b_now": now,
            "b_attempts": attempts if attempts is not None else record.attempts + 1,
            "b_error": last_error,
            "b_contact_id": contact_id,
            "b_strategy": strategy if contact_id is not None else None,
            "b_delivered_at": now if status == DELIVERED else None,
            "b_notified_at": None,
        }
        callbacks = record.callbacks
        own = waiter.callback if waiter is not None else None
        # The waiting caller gets the outcome in its answer; every other callback is told
        # once, through notify() (which claims notified_at first, so only one process does).
        others = [cb for cb in callbacks if cb != own] if own is not None else callbacks
        caller_waiting = waiter is not None and not waiter.gone
        told_here = not others and (caller_waiting or not callbacks)
        if told_here:
            values["b_notified_at"] = now

        async def _tx(conn: WriteConnection) -> Any:
            row = (await conn.execute(_FINISH, values)).first()
            if row is not None and attempt is not None:
                await conn.execute(_INSERT_ATTEMPT, attempt.values(record.id))
            return row

        row = await self._write(_tx)
        if row is None:
            return  # our lease was taken over; the other worker reports the outcome
        final = replace(
            record,
            status=status,
            attempts=values["b_attempts"],
            last_error=last_error,
            contact_id=row.contact_id,
            strategy=row.strategy,
            updated_at=now,
            delivered_at=values["b_delivered_at"] or record.delivered_at,
            notified_at=values["b_notified_at"],
            lease_owner=None,
        )
        metrics.CONTACTS.labels(record.source.split(":", 1)[0], status).inc()
        if waiter is not None and not waiter.gone:
            waiter.record = final
            if others:
                await self.notify(final, callbacks=others)
            return
        if told_here:
            if caller_waiting and own is not None:
                # The caller left while we were recording the outcome: tell its callback.
                await self._call_notifier(final, [own])
            return
        await self.notify(final)

    async def notify(
        self, record: DeliveryRecord, *, callbacks: Sequence[Callback] | None = None
    ) -> None:
        """Tell the channel that asked about a final outcome, once per callback.

        ``notified_at`` is claimed before calling (only one process wins it), so a callback
        is never called twice; a process dying between the outcome's commit and the claim
        leaves the row to the worker's sweep.
        """

        async def _tx(conn: WriteConnection) -> int:
            claimed = await conn.execute(
                update(deliveries)
                .where(deliveries.c.id == record.id, deliveries.c.notified_at.is_(None))
                .values(notified_at=time.time())
            )
            return claimed.rowcount

        claimed = await self._write(_tx)
        if not claimed:
            return
        await self._call_notifier(record, record.callbacks if callbacks is None else callbacks)

    async def _call_notifier(self, record: DeliveryRecord, callbacks: Sequence[Callback]) -> None:
        notifier = self.notifiers.get(record.source.split(":", 1)[0])
        if notifier is None:
            return
        for callback in callbacks:
            try:
                await notifier(replace(record, callback=dict(callback), extra_callbacks=None))
            except Exception:
                log.exception("notify_failed", delivery_id=record.id)

    async def notify_missed(self, *, older_than: float = _NOTIFY_GRACE, limit: int = 50) -> int:
        """Tell final outcomes whose callbacks were never called (the process died first)."""
        async with self.engine.connect() as conn:
            rows = (
                (
                    await conn.execute(
                        select(deliveries)
                        .where(_UNNOTIFIED)
                        .where(deliveries.c.updated_at < time.time() - older_than)
                        .order_by(deliveries.c.updated_at)
                        .limit(limit)
                    )
                )
                .mappings()
                .all()
            )
        for row in rows:
            await self.notify(DeliveryRecord.from_row(row))
        return len(rows)

    # -- reading and operating ---------------------------------------------------------

    async def get(self, delivery_id: str) -> DeliveryRecord | None:
        async def _read(conn: WriteConnection) -> Any:
            return (await conn.execute(_GET, {"id": delivery_id})).mappings().first()

        row = await self.read(_read)
        return DeliveryRecord.from_row(row) if row is not None else None

    async def history(self, delivery_id: str, *, limit: int = 200) -> list[Attempt]:
        """The delivery's tries at Rocket.Chat, newest first (at most ``limit``)."""

        async def _read(conn: WriteConnection) -> Any:
            query = (
                select(delivery_attempts)
                .where(delivery_attempts.c.delivery_id == delivery_id)
                .order_by(delivery_attempts.c.started_at.desc(), delivery_attempts.c.id.desc())
                .limit(limit)
            )
            return (await conn.execute(query)).mappings().all()

        return [Attempt.from_row(row) for row in await self.read(_read)]

    async def list(
        self,
        *,
        status: str | None = None,
        source: str | None = None,
        team: str | None = None,
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
        if team:  # a Slack workspace (or Enterprise Grid org) id
            query = query.where(deliveries.c.team == team)
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

        async def _tx(conn: WriteConnection) -> int:
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
                    queued_at=now,  # the give-up clock starts again; created_at stays
                    updated_at=now,
                    notified_at=None,
                )
            )
            return changed.rowcount

        changed = await self._write(_tx)
        self._wake.set()
        return bool(changed)

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
    gone: bool = False  # the caller stopped waiting: report through the callbacks
    record: DeliveryRecord | None = None  # the final outcome, when known in time
    callback: dict[str, Any] | None = None  # the waiting submission's own callback


class DeliveryWorker:
    """Claims due deliveries and registers them, until stopped."""

    def __init__(self, queue: DeliveryQueue) -> None:
        self.queue = queue
        self.settings = queue.settings
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._calls = asyncio.Semaphore(self.settings.rocketchat_concurrency)
        self._progressed = False  # run_once waited for a delivery to finish: claim again
        self._next_takeover = 0.0  # time.monotonic() of the next look for expired leases
        self._next_sweep = time.monotonic() + _NOTIFY_SWEEP_INTERVAL

    def stop(self) -> None:
        self._stopping.set()
        self.queue._wake.set()

    async def run(self) -> None:
        """The loop: claim what is due, deliver concurrently, sleep until more is due."""
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            while not self._stopping.is_set():
                # Cleared before looking, so a submit during the look is not missed.
                self.queue._wake.clear()
                self._progressed = False
                try:
                    claimed = await self.run_once()
                    if time.monotonic() >= self._next_sweep:
                        self._next_sweep = time.monotonic() + _NOTIFY_SWEEP_INTERVAL
                        await self.queue.notify_missed()
                except Exception:
                    log.exception("worker_loop_error")
                    claimed = 0
                if claimed or self._progressed:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.queue._wake.wait(), timeout=self._idle_timeout())
        finally:
            try:
                await self._drain()  # leases are still extended while in-flight calls finish
            finally:
                heartbeat.cancel()

    def _idle_timeout(self) -> float:
        """How long to sleep with nothing to claim: the poll interval, or less when the rate
        limit window or the outage backoff ends sooner."""
        timeout = self.settings.worker_poll_interval
        hint = self.queue.client.pacer.wait_hint_any()
        if hint is not None:
            timeout = min(timeout, hint - time.time())
        if self.queue._outage_failures >= _OUTAGE_THRESHOLD:
            timeout = min(timeout, self.queue._outage_until - time.monotonic())
        return max(timeout, 0.005)

    async def run_once(self) -> int:
        """Claim and start as many due deliveries as there are free slots; return how many."""
        queue = self.queue
        # Twice the connections: while one delivery records its outcome, the next one
        # already waits for the freed connection. Calls to Rocket.Chat stay bounded by
        # ROCKETCHAT_CONCURRENCY (the client's semaphore and connection pool).
        limit = 2 * self.settings.rocketchat_concurrency
        if queue.paused_reason is not None:
            # Every AUTH_CHECK_INTERVAL, shared with the fast path: rejected credentials are
            # re-checked with /me; for a missing permission one real delivery finds out
            # whether it was granted (it burns no attempt if not).
            if queue._paused_permission and self._in_flight:
                return 0
            if not await queue.resume_if_fixed():
                return 0
            if queue.paused_reason is not None:  # still paused: the one delivery that looks
                limit = 1
        hint = queue.client.pacer.wait_hint_any()
        if hint is not None:
            return 0
        if queue._outage_failures >= _OUTAGE_THRESHOLD:
            if time.monotonic() < queue._outage_until:
                return 0
            limit = 1  # Rocket.Chat looks down: one delivery at a time finds out when it is back
        free = limit - len(self._in_flight)
        if free > 0:
            free = min(free, queue.client.pacer.room_hint(free))
        # While enough claimed rows wait to keep every connection busy, claim in batches
        # (one claim transaction for several rows) rather than one row per freed slot.
        batch = max(1, self.settings.rocketchat_concurrency // 2)
        busy = len(self._in_flight) >= self.settings.rocketchat_concurrency
        if free <= 0 or (free < batch and busy):
            if self._in_flight:
                # Also wake on stop(): SHUTDOWN_GRACE counts from SIGTERM, not from a free slot.
                stopping = asyncio.ensure_future(self._stopping.wait())
                await asyncio.wait(
                    {*self._in_flight.values(), stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                stopping.cancel()
                self._progressed = True
            return 0
        records = await self.claim(free)
        for record in records:
            task = asyncio.create_task(self._deliver_one(record))
            self._in_flight[record.id] = task
            task.add_done_callback(self._forget(record.id))
        return len(records)

    async def _deliver_one(self, record: DeliveryRecord) -> None:
        """Wait for one of ROCKETCHAT_CONCURRENCY call slots, then deliver. The slot is
        free again as soon as Rocket.Chat answered, so the next claimed row calls while
        this one writes its outcome. A row still waiting when the worker stops is never
        sent: _drain hands it back."""
        self.queue.active.add(record.id)  # the heartbeat keeps its lease while it waits
        held = False

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self._calls.release()

        try:
            await self._calls.acquire()
            held = True
            if self._stopping.is_set():
                return
            await self.queue.deliver(record, answered=release)
        finally:
            release()
            self.queue.active.discard(record.id)

    def _forget(self, delivery_id: str) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._in_flight.pop(delivery_id, None)

        return done

    async def claim(self, limit: int) -> list[DeliveryRecord]:
        """Lease up to ``limit`` due deliveries to this worker (none whose person is busy)."""
        now = time.time()
        expired = and_(deliveries.c.status == DELIVERING, deliveries.c.lease_until < now)
        waiting = and_(deliveries.c.status == PENDING, deliveries.c.next_attempt_at <= now)
        due = or_(waiting, expired)
        not_busy = ~DeliveryQueue._token_busy(now)
        # Two index range scans rather than one OR: the pending one walks
        # ix_deliveries_due in next_attempt_at order and stops at the limit, so a claim
        # costs the same with 10 or 100,000 contacts queued.
        stale_query = (
            select(deliveries)
            .where(expired)
            .where(not_busy)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )

        async def _tx(conn: WriteConnection) -> Any:
            ids: list[str] = []
            if time.monotonic() >= self._next_takeover:
                # Leases expire no faster than this: no need to look on every claim.
                self._next_takeover = time.monotonic() + min(self.settings.delivery_lease / 4, 1.0)
                ids = await self._take_over_expired(conn, stale_query)
            if len(ids) < limit:
                pending_query = (
                    select(deliveries.c.id)
                    .where(waiting)
                    .where(not_busy)
                    .order_by(deliveries.c.next_attempt_at)
                    .limit(limit - len(ids))
                    .with_for_update(skip_locked=True)
                )
                ids += [r[0] for r in (await conn.execute(pending_query)).all()]
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
            return rows

        rows = await self.queue._write(_tx)
        return [DeliveryRecord.from_row(r) for r in rows]

    async def _take_over_expired(self, conn: WriteConnection, query: Any) -> list[str]:
        """Rows whose worker died (lease expired): the ids to deliver again. One whose
        person has a newer pending delivery is folded into that one instead, since it
        carries everything and must not be overwritten by older details afterwards."""
        ids: list[str] = []
        for row in (await conn.execute(query)).mappings().all():
            record = DeliveryRecord.from_row(row)
            lost = Attempt(
                started_at=record.updated_at,  # when that worker claimed it
                duration=time.time() - record.updated_at,
                outcome="abandoned",
                error="the worker delivering it stopped before recording Rocket.Chat's answer "
                "(lease expired); delivered again, by the same contact token",
                worker=record.lease_owner,
            )
            await conn.execute(_INSERT_ATTEMPT, lost.values(record.id))
            other = await self.queue._pending_sibling(conn, record)
            if other is None:
                ids.append(record.id)
            else:
                await self.queue._fold_into(conn, record, other, owned=False)
        return ids

    async def _heartbeat(self) -> None:
        """Extend the leases of rows still in flight, so nobody else takes them."""
        interval = self.settings.delivery_lease / 3
        while True:
            await asyncio.sleep(interval)
            ids = list(self.queue.active)
            if not ids:
                continue
            with contextlib.suppress(Exception):

                async def _tx(conn: WriteConnection, ids: list[str] = ids) -> None:
                    await conn.execute(
                        update(deliveries)
                        .where(
                            deliveries.c.id.in_(ids),
                            deliveries.c.lease_owner == self.queue.owner,
                            deliveries.c.status == DELIVERING,
                        )
                        .values(lease_until=time.time() + self.settings.delivery_lease)
                    )

                await self.queue._write(_tx)

    async def _drain(self, grace: float | None = None) -> None:
        """On stop: let in-flight deliveries finish, then hand back what is left."""
        grace = self.settings.shutdown_grace if grace is None else grace
        tasks = set(self._in_flight.values()) | set(self.queue._fast_tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=1.0)
        for attempt in range(3):
            try:
                await self._hand_back()
                return
            except IntegrityError:
                if attempt == 2:
                    raise

    async def _hand_back(self) -> None:
        """Our claimed rows become pending again (or fold into a newer pending sibling)."""
        queue = self.queue

        async def _tx(conn: WriteConnection) -> None:
            rows = (
                (
                    await conn.execute(
                        select(deliveries).where(
                            deliveries.c.lease_owner == queue.owner,
                            deliveries.c.status == DELIVERING,
                        )
                    )
                )
                .mappings()
                .all()
            )
            for row in rows:
                record = DeliveryRecord.from_row(row)
                other = await queue._pending_sibling(conn, record)
                if other is not None:
                    await queue._fold_into(conn, record, other, owned=True)
                    continue
                await conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id == record.id, deliveries.c.lease_owner == queue.owner)
                    .values(
                        status=PENDING, lease_owner=None, lease_until=None, updated_at=time.time()
                    )
                )

        await queue._write(_tx)
