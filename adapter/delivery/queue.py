"""Durable delivery: accept a contact into the ledger, then register it exactly once.

:class:`DeliveryQueue` is what channels call. ``submit`` deduplicates on the source's event
id (or ids: a submission standing for several events is a duplicate only when all were
seen), then accepts it in one committed transaction (:mod:`adapter.delivery.intake`:
validation, merging with what is known of the person) before the caller gets its answer;
it may then try the delivery at once for a short budget (the fast path).
:class:`~adapter.delivery.worker.DeliveryWorker` delivers the rest.

Delivering one row (:meth:`DeliveryQueue.deliver`) is orchestration only: call the client,
ask :func:`adapter.core.policy.after_attempt` what the answer means, tell the store
(:class:`~adapter.ledger.store.LedgerStore`), and update the shared :class:`Gate` (pause and
outage state the worker and the fast path both follow). A request that tries its contact at
once stores it as due only after its budget, so the worker does not take the row from under
it; a caller that waited gets the outcome in its answer, every other callback is told once
(:mod:`adapter.delivery.notify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from adapter.core.errors import ConfigurationError, ContactRejected, RocketChatError
from adapter.core.policy import (
    Decision,
    Delivered,
    Gate,
    GiveUp,
    Pause,
    Reject,
    Retry,
    WaitUntil,
    after_attempt,
)
from adapter.core.records import (
    DELIVERED,
    FAILED,
    FINAL,
    PENDING,
    STATUSES,
    Attempt,
    Callback,
    DeliveryRecord,
    Notifier,
    Outcome,
    Submission,
)
from adapter.delivery import intake, notify
from adapter.delivery.notify import NOTIFY_GRACE
from adapter.ledger.store import LedgerStore
from adapter.ops import metrics
from adapter.rocketchat.client import RocketChatClient
from adapter.rocketchat.sansio import Registration
from adapter.settings import Settings

__all__ = ["DeliveryQueue", "Waiter"]

log = structlog.get_logger("adapter.delivery")

_MAX_HOLD = 2.5  # longest a request's own try keeps the worker off its row (FAST_PATH_BUDGET max)


@dataclass
class Waiter:
    """A caller waiting for its delivery's outcome on the fast path."""

    gone: bool = False  # the caller stopped waiting: report through the callbacks
    record: DeliveryRecord | None = None  # the final outcome, when known in time
    callback: dict[str, Any] | None = None  # the waiting submission's own callback


class DeliveryQueue:
    """Accept contacts durably and report on them; deliver one claimed row."""

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
        self.store = LedgerStore(engine)
        self.notifications = notify.Notifications(self.store)
        self.owner = f"{uuid.uuid4().hex[:12]}"
        self.rng = rng or random.Random()
        self.gate = Gate.from_settings(settings)  # shared by the worker and the fast path
        self.wakeup = asyncio.Event()  # set when something may be due: the worker looks
        self.fast_tasks: set[asyncio.Task[Any]] = set()  # fast-path tries (drained on stop)
        self._fast_slots = settings.rocketchat_concurrency * 2
        self.active: set[str] = set()  # ids this process is delivering right now

    @property
    def notifiers(self) -> dict[str, Notifier]:
        """The channels' outcome notifiers, by channel name."""
        return self.notifications.notifiers

    @property
    def paused_reason(self) -> str | None:
        """Why delivery is paused (credentials or permission refused), or None."""
        return self.gate.paused_reason

    def close(self) -> None:
        """Release the SQLite writer's connection and thread (before ``engine.dispose()``)."""
        self.store.close()

    # -- accepting -----------------------------------------------------------------------

    async def submit(self, submission: Submission, *, wait: float | None = None) -> Outcome:
        """Validate and durably accept a contact; optionally try it now for ``wait`` seconds."""
        await intake.deployment_key(self.store, self.settings)  # read once: kept event ids
        submission, seen = await intake.seen_before(self.store, submission)
        if seen is not None:
            metrics.CONTACTS.labels(submission.channel, "duplicate").inc()
            return self.outcome_of(seen, duplicate=True)
        raw: dict[str, Any] = {
            "name": submission.fields.get("name"),
            "email": submission.fields.get("email"),
            "phone": submission.fields.get("phone"),
            "custom_fields": dict(submission.custom_fields),
        }
        budget = self.settings.fast_path_budget if wait is None else wait
        # Decided before the insert: a row this request will try at once is stored as due
        # only after the budget, so the worker does not race the request for it.
        fast = budget > 0 and self.fast_path_open()
        probe = False
        if budget > 0 and not fast and self.gate.paused_reason is not None:
            # Paused: every AUTH_CHECK_INTERVAL find out whether it is over, within the budget.
            started = time.monotonic()
            check = asyncio.create_task(self.resume_if_fixed())
            self.fast_tasks.add(check)  # referenced until done; drained on shutdown
            check.add_done_callback(self.fast_tasks.discard)
            with contextlib.suppress(Exception):  # TimeoutError: it goes on without us
                probe = await asyncio.wait_for(asyncio.shield(check), budget)
            budget -= time.monotonic() - started
            fast = probe and budget > 0.05 and self.fast_path_open(ignore_pause=True)
        for attempt in range(3):
            try:
                hold = min(budget, _MAX_HOLD) if fast else 0.0
                outcome = await self._accept(submission, raw, hold=hold)
                break
            except IntegrityError:
                # A concurrent accept for the same event or person won the race: look again.
                # (Of several event ids, one recorded meanwhile is dropped, the rest goes on.)
                submission, seen = await intake.seen_before(self.store, submission)
                if seen is not None:
                    return self.outcome_of(seen, duplicate=True)
                if attempt == 2:
                    raise
        if not outcome.accepted:
            if outcome.status in ("invalid", "rejected"):
                metrics.CONTACTS.labels(submission.channel, "rejected").inc()
            return outcome
        metrics.CONTACTS.labels(submission.channel, "accepted").inc()
        if fast and outcome.delivery_id is not None and outcome.status == PENDING:
            return await self._try_now(outcome, budget, submission.callback, probe=probe)
        self.wakeup.set()
        return outcome

    async def _accept(
        self, submission: Submission, raw: Mapping[str, Any], *, hold: float
    ) -> Outcome:
        return await intake.accept(self.store, self.settings, submission, raw, hold=hold)

    async def find_event(
        self, source: str, event_id: str, *, since: float | None = None
    ) -> DeliveryRecord | None:
        """The delivery that ``source``'s event ``event_id`` led to, if it was recorded
        (at or after ``since``, when given: e.g. Slack's retry window)."""
        found = await self.store.find_event(source, event_id)
        if found is None or (since is not None and found[1] < since):
            return None
        return found[0]

    def outcome_of(self, record: DeliveryRecord, *, duplicate: bool = False) -> Outcome:
        """What a caller hears about a stored delivery."""
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

    async def submit_many(self, submissions: Sequence[Submission]) -> list[Outcome]:
        """Accept many contacts in one transaction: ``submit`` in bulk, without the fast path.

        Same validation (the submissions' own required fields and phone region included),
        dedupe on ``(source, event_id)`` and merging with a waiting or delivered delivery
        of the same person (within the batch too) as ``submit``; one outcome per
        submission, in order. Made for bulk imports: a submission with a ``person_key``,
        ``keep_rejected``, a ``callback`` or ``also_event_ids`` is refused (use ``submit``).
        A race with a concurrent accept rolls the batch back and runs it again.
        """
        outcomes = await intake.submit_many(self.store, self.settings, submissions, self.outcome_of)
        self.wakeup.set()
        return outcomes

    # -- when to call Rocket.Chat ----------------------------------------------------------

    def fast_path_open(self, *, ignore_pause: bool = False) -> bool:
        """Is trying a delivery right now sensible (not paused, no outage, room in the window)?"""
        pacer = self.client.pacer
        return self.gate.fast_path_open(
            rate_limited=pacer.wait_hint_any() is not None or pacer.exhausted(),
            busy=len(self.fast_tasks) >= self._fast_slots,
            ignore_pause=ignore_pause,
        )

    async def resume_if_fixed(self) -> bool:
        """While delivery is paused, at most once per AUTH_CHECK_INTERVAL: is it over?

        Rejected credentials (401) are checked with ``GET /api/v1/me``: if accepted, the
        pause ends here. A missing permission (403) only shows with a real call: the answer
        True lets one delivery through, which ends the pause if it succeeds (and burns no
        attempt if not). Called by the worker and by the fast path, so a web process
        without a worker (INPROCESS_WORKER=false) resumes too.
        """
        if not self.gate.auth_check_due(time.time()):
            return False
        if self.gate.paused_permission:
            return True
        try:
            await self.client.me()
        except ConfigurationError as exc:
            self.gate.pause(str(exc), permission=False)
            return False
        except RocketChatError:
            return False
        self._resumed()
        return True

    def _resumed(self) -> None:
        """The pause is over: deliver again, and let /readyz look afresh."""
        log.info("delivery_resumed")
        self.gate.resume()
        self.client.forget_readiness()

    # -- the fast path -----------------------------------------------------------------

    async def _try_now(
        self, outcome: Outcome, budget: float, callback: Callback | None, *, probe: bool
    ) -> Outcome:
        """Deliver at once; give up waiting after ``budget``.

        The caller gets the final outcome if it is known within the budget; otherwise the
        delivery goes on, and its callback (if any) is told the outcome later, once.
        ``probe``: this delivery finds out whether a 403 pause is over.
        """
        assert outcome.delivery_id is not None
        if not self.fast_path_open(ignore_pause=probe):
            self.wakeup.set()
            return outcome
        waiter = Waiter(callback=dict(callback) if callback else None)
        task = asyncio.create_task(self._deliver_by_id(outcome.delivery_id, waiter))
        self.fast_tasks.add(task)
        task.add_done_callback(self.fast_tasks.discard)
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
                self.wakeup.set()  # not taken, or released for a retry: the worker owns it now
            return outcome
        return self.outcome_of(record)

    async def _deliver_by_id(self, delivery_id: str, waiter: Waiter) -> None:
        record = await self.store.take(
            delivery_id, owner=self.owner, now=time.time(), lease=self.settings.delivery_lease
        )
        if record is not None:
            await self.deliver(record, waiter)

    # -- delivering one claimed row ----------------------------------------------------

    async def deliver(
        self,
        record: DeliveryRecord,
        waiter: Waiter | None = None,
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
        waiter: Waiter | None,
        answered: Callable[[], None] | None,
    ) -> None:
        contact = record.contact
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
            await self.store.remember_contact_id(record.id, contact_id, time.time())

        started, clock = time.time(), time.monotonic()
        result: tuple[str, str] | BaseException
        try:
            try:
                registered = await self.client.register(registration, record_contact_id=remember)
                result = (registered.contact_id, registered.strategy)
            finally:
                if answered is not None:
                    answered()
        except Exception as exc:
            result = exc
        now = time.time()
        decision = after_attempt(
            result,
            attempts=record.attempts,
            queued_at=record.queued_at or record.created_at,
            now=now,
            rules=self.settings,
            rng=self.rng,
        )
        attempt = Attempt(
            started_at=started,
            duration=time.monotonic() - clock,
            outcome=decision.outcome,
            error=decision.error,
            contact_id=decision.contact_id if isinstance(decision, Delivered) else None,
            worker=self.owner,
        )
        await self._learn(decision, now)
        await self._carry_out(record, decision, attempt, result, waiter, now=now)

    async def _learn(self, decision: Decision, now: float) -> None:
        """What the answer says about Rocket.Chat: reachable or not, paused or not."""
        if decision.answered:
            if self.gate.answered():
                log.info("rocketchat_reachable_again")
                # The deliveries the outage held back are due at once, not each after
                # its own backoff (up to RETRY_MAX_DELAY): the worker is back at full
                # concurrency with the next claim.
                await self.store.due_now(now)
                self.wakeup.set()
        elif decision.answered is False and self.gate.unanswered(now, self.rng):
            log.warning("rocketchat_outage", error=decision.error)

    async def _carry_out(
        self,
        record: DeliveryRecord,
        decision: Decision,
        attempt: Attempt,
        result: tuple[str, str] | BaseException,
        waiter: Waiter | None,
        *,
        now: float,
    ) -> None:
        bound = log.bind(delivery_id=record.id, source=record.source, attempt=record.attempts + 1)
        metrics.ATTEMPTS.labels(decision.outcome).inc()
        if decision.answered is None:  # a bug of ours, retried or given up on
            bound.error("delivery_crashed", exc_info=result)
        release = self.store.release
        if isinstance(decision, Delivered):
            if self.gate.paused_reason is not None:
                self._resumed()
            bound.info("delivered", strategy=decision.strategy)
            await self._finish(
                record,
                DELIVERED,
                contact_id=decision.contact_id,
                strategy=decision.strategy,
                waiter=waiter,
                attempt=attempt,
            )
        elif isinstance(decision, WaitUntil):
            bound.info("rate_limited", wait_until=decision.at)
            await release(
                record,
                owner=self.owner,
                now=now,
                next_attempt_at=decision.at,
                last_error=decision.error,
                attempt=attempt,
            )
            await self.store.postpone_due(decision.at)
        elif isinstance(decision, Pause):
            if self.gate.pause(decision.error, permission=decision.permission):
                bound.error("delivery_paused", reason=decision.error)
            await release(
                record,
                owner=self.owner,
                now=now,
                next_attempt_at=now,
                last_error=decision.error,
                attempt=attempt,
            )
        elif isinstance(decision, Reject):
            assert isinstance(result, ContactRejected)
            bound.warning("delivery_rejected", error=result.message)
            await self._finish(
                record, FAILED, last_error=decision.error, waiter=waiter, attempt=attempt
            )
        elif isinstance(decision, GiveUp):
            bound.warning("delivery_gave_up", attempts=decision.attempts, error=decision.error)
            await self._finish(
                record,
                FAILED,
                last_error=decision.message,
                attempts=decision.attempts,
                waiter=waiter,  # a caller still waiting hears "failed", not "pending"
                attempt=attempt,
            )
        elif isinstance(decision, Retry):
            bound.info("delivery_retry", delay=round(decision.at - now, 2), error=decision.error)
            await release(
                record,
                owner=self.owner,
                now=now,
                next_attempt_at=decision.at,
                last_error=decision.error,
                attempts=decision.attempts,
                attempt=attempt,
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
        waiter: Waiter | None = None,
        attempt: Attempt | None = None,
    ) -> None:
        """Record a final outcome and tell whoever must hear it (see adapter.delivery.notify)."""
        now = time.time()
        own = waiter.callback if waiter is not None else None
        caller_waiting = waiter is not None and not waiter.gone
        told = notify.plan(record.callbacks, own, caller_waiting)
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
            "b_notified_at": now if told.told_here else None,
        }
        stored = await self.store.finish(values, attempt)
        if stored is None:
            return  # our lease was taken over; the other worker reports the outcome
        final = replace(
            record,
            status=status,
            attempts=values["b_attempts"],
            last_error=last_error,
            contact_id=stored[0],
            strategy=stored[1],
            updated_at=now,
            delivered_at=values["b_delivered_at"] or record.delivered_at,
            notified_at=values["b_notified_at"],
            lease_owner=None,
        )
        metrics.CONTACTS.labels(record.source.split(":", 1)[0], status).inc()
        if waiter is not None and not waiter.gone:
            waiter.record = final
            if told.others:
                await self.notifications.notify(final, callbacks=told.others)
            return
        if told.told_here:
            if caller_waiting and own is not None:
                # The caller left while we were recording the outcome: tell its callback.
                await self.notifications.call(final, [own])
            return
        await self.notifications.notify(final)

    # -- reading and operating ---------------------------------------------------------

    async def notify(
        self, record: DeliveryRecord, *, callbacks: Sequence[Callback] | None = None
    ) -> None:
        """Tell the channel that asked about a final outcome, once per callback."""
        await self.notifications.notify(record, callbacks=callbacks)

    async def notify_missed(self, *, older_than: float = NOTIFY_GRACE, limit: int = 50) -> int:
        """Tell final outcomes whose callbacks were never called (the process died first)."""
        return await self.notifications.missed(older_than=older_than, limit=limit)

    async def get(self, delivery_id: str) -> DeliveryRecord | None:
        return await self.store.get(delivery_id)

    async def history(self, delivery_id: str, *, limit: int = 200) -> list[Attempt]:
        """The delivery's tries at Rocket.Chat, newest first (at most ``limit``)."""
        return await self.store.history(delivery_id, limit=limit)

    async def list(
        self,
        *,
        status: str | None = None,
        source: str | None = None,
        team: str | None = None,
        limit: int = 50,
        offset: int = 0,
        since: float | None = None,
        **narrower: Any,  # statuses, until, match: see LedgerReads.select_deliveries
    ) -> list[DeliveryRecord]:
        return await self.store.select_deliveries(
            status=status,
            source=source,
            team=team,
            limit=limit,
            offset=offset,
            since=since,
            **narrower,
        )

    async def stats(self) -> metrics.DeliveryStats:
        """The ledger's figures for the metrics gauges (global: every process's work)."""
        return metrics.DeliveryStats(
            counts=await self.store.counts(),
            statuses=STATUSES,
            oldest_pending=await self.store.oldest_pending(),
            outcomes=tuple(Attempt.OUTCOMES),
            recent=await self.store.recent_attempts(time.time() - metrics.RECENT_WINDOW),
            paused=self.gate.paused_reason is not None,
        )

    async def counts(self, *, since: float | None = None) -> dict[str, dict[str, int]]:
        """``{source: {status: n}}``."""
        return await self.store.counts(since=since)

    async def retry(self, delivery_id: str) -> bool:
        """Put a failed delivery back in the queue (attempts reset)."""
        changed = await self.store.retry(delivery_id, time.time())
        self.wakeup.set()
        return changed

    async def retry_failed(self) -> int:
        ids = [r.id for r in await self.list(status=FAILED, limit=100_000)]
        return sum([await self.retry(i) for i in ids])

    async def wait_for_final(self, delivery_id: str, timeout: float) -> DeliveryRecord | None:
        """Poll until the delivery is final (tests and the CLI)."""
        deadline = time.monotonic() + timeout
        while True:
            record = await self.get(delivery_id)
            if record is None or record.status in FINAL:
                return record
            if time.monotonic() >= deadline:
                return record
            await asyncio.sleep(0.05)  # noqa: sleep-ok - the CLI's poll for an outcome
