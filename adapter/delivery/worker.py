"""The delivery worker: claims due deliveries and registers them, until stopped.

It only orchestrates. :meth:`Gate.claim_plan <adapter.core.policy.Gate.claim_plan>` says
how many rows to claim (none while paused, rate limited or before the next outage probe;
one at a time while probing), the store leases them (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, the single writer on SQLite), :meth:`DeliveryQueue.deliver` registers each, and
:meth:`Gate.idle_until <adapter.core.policy.Gate.idle_until>` says how long to sleep when
nothing could be claimed: until the earliest of the next due row, the next probe or the
window's reopening (at most the poll interval), or sooner when a submission or a stop wakes
it. An idle worker with Rocket.Chat down costs nothing.

A worker claims up to twice ROCKETCHAT_CONCURRENCY rows (leased, heartbeated) so a freed
connection is used at once; calls stay bounded by ROCKETCHAT_CONCURRENCY. On stop, rows not
yet sent are handed back. A dead worker's rows are taken over when their lease expires, or
folded into a newer pending delivery of the same person. Between claims it
also runs the retention sweep every minute, a few batches at a time (adapter.delivery.privacy).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from adapter.core.records import DeliveryRecord
from adapter.delivery.privacy import RetentionSweep
from adapter.delivery.queue import DeliveryQueue

__all__ = ["DeliveryWorker"]

log = structlog.get_logger("adapter.delivery")

# Final outcomes whose callback was never called (the process died between recording the
# outcome and calling it) are looked for this often.
_NOTIFY_SWEEP_INTERVAL = 5.0
_MIN_SLEEP = 0.005


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
        self._next_due: float | None = None  # the earliest pending row, after an empty claim
        # Personal data past retention is erased every minute, a few batches at a time (every
        # worker may: batches are disjoint, see adapter.ledger.retention).
        self.retention = RetentionSweep(queue)

    @property
    def in_flight(self) -> int:
        """Deliveries claimed by this worker and not finished yet."""
        return len(self._in_flight)

    def stop(self) -> None:
        self._stopping.set()
        self.queue.wakeup.set()

    async def run(self) -> None:
        """The loop: claim what is due, deliver concurrently, sleep until more is due."""
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            while not self._stopping.is_set():
                # Cleared before looking, so a submit during the look is not missed.
                self.queue.wakeup.clear()
                self._progressed = False
                try:
                    claimed = await self.run_once()
                    if time.monotonic() >= self._next_sweep:
                        self._next_sweep = time.monotonic() + _NOTIFY_SWEEP_INTERVAL
                        await self.queue.notify_missed()
                    if self.retention.due():
                        await self.retention.run()
                except Exception:
                    log.exception("worker_loop_error")
                    claimed = 0
                if claimed or self._progressed:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.queue.wakeup.wait(), timeout=self.idle_seconds())
        finally:
            try:
                await self._drain()  # leases are still extended while in-flight calls finish
            finally:
                heartbeat.cancel()

    def idle_seconds(self) -> float:
        """How long to sleep with nothing to claim (see Gate.idle_until)."""
        now = time.time()
        until = self.queue.gate.idle_until(
            now,
            next_due=self._next_due,
            poll_interval=self.settings.worker_poll_interval,
            rate_reopens_at=self.queue.client.pacer.wait_hint_any(),
        )
        return max(until - now, _MIN_SLEEP)

    async def run_once(self) -> int:
        """Claim and start as many due deliveries as the gate allows; return how many."""
        queue, gate = self.queue, self.queue.gate
        self._next_due = None
        pause_probe = False
        if gate.paused_reason is not None:
            # Every AUTH_CHECK_INTERVAL, shared with the fast path: rejected credentials are
            # re-checked with /me; for a missing permission one real delivery finds out
            # whether it was granted (it burns no attempt if not).
            if gate.paused_permission and self._in_flight:
                return 0
            if not await queue.resume_if_fixed():
                return 0
            pause_probe = gate.paused_reason is not None
        pacer = queue.client.pacer
        concurrency = self.settings.rocketchat_concurrency
        plan = gate.claim_plan(
            time.time(),
            in_flight=len(self._in_flight),
            concurrency=concurrency,
            room=pacer.room_hint(2 * concurrency),
            rate_reopens_at=pacer.wait_hint_any(),
            pause_probe=pause_probe,
        )
        if plan.limit <= 0:
            if plan.wait_for_in_flight and self._in_flight:
                # Also wake on stop(): SHUTDOWN_GRACE counts from SIGTERM, not from a free slot.
                stopping = asyncio.ensure_future(self._stopping.wait())
                await asyncio.wait(
                    {*self._in_flight.values(), stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                stopping.cancel()
                self._progressed = True
            return 0
        records, self._next_due = await self._claim(plan.limit)
        for record in records:
            task = asyncio.create_task(self._deliver_one(record))
            self._in_flight[record.id] = task
            task.add_done_callback(self._forget(record.id))
        return len(records)

    async def claim(self, limit: int) -> list[DeliveryRecord]:
        """Lease up to ``limit`` due deliveries to this worker (none whose person is busy)."""
        records, _ = await self._claim(limit)
        return records

    async def _claim(self, limit: int) -> tuple[list[DeliveryRecord], float | None]:
        """``claim``, and the earliest pending row's due time when none was due."""
        take_over = time.monotonic() >= self._next_takeover
        if take_over:
            # Leases expire no faster than this: no need to look on every claim.
            self._next_takeover = time.monotonic() + min(self.settings.delivery_lease / 4, 1.0)
        return await self.queue.store.claim(
            owner=self.queue.owner,
            limit=limit,
            now=time.time(),
            lease=self.settings.delivery_lease,
            take_over=take_over,
        )

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

    async def _heartbeat(self) -> None:
        """Extend the leases of rows still in flight, so nobody else takes them."""
        interval = self.settings.delivery_lease / 3
        while True:
            await asyncio.sleep(interval)  # noqa: sleep-ok - the heartbeat's period
            ids = list(self.queue.active)
            if not ids:
                continue
            with contextlib.suppress(Exception):
                await self.queue.store.heartbeat(
                    owner=self.queue.owner,
                    ids=ids,
                    until=time.time() + self.settings.delivery_lease,
                )

    async def _drain(self, grace: float | None = None) -> None:
        """On stop: let in-flight deliveries finish, then hand back what is left."""
        grace = self.settings.shutdown_grace if grace is None else grace
        tasks = set(self._in_flight.values()) | set(self.queue.fast_tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=1.0)
        await self.queue.store.hand_back(owner=self.queue.owner, now=time.time())
