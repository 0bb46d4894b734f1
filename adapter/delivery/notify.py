"""Telling a delivery's final outcome to the channel that asked, once per callback.

A delivery can carry several callbacks (the submissions merged into it each keep theirs,
e.g. two Slack users who registered the same guest). Whoever records the final outcome
asks :func:`plan` who is told where: a caller still waiting gets it in its own answer, every
other callback through the channel's notifier, once: ``notified_at`` is claimed first (only
one process wins it), and :meth:`Notifications.missed` tells the outcomes whose process
died between recording and telling.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import structlog

from adapter.core.records import Callback, DeliveryRecord, Notifier
from adapter.ledger.store import LedgerStore

__all__ = ["NOTIFY_GRACE", "Notifications", "NotifyPlan", "plan"]

log = structlog.get_logger("adapter.delivery")

NOTIFY_GRACE = 10.0  # an outcome untold this long after it was recorded is told by the sweep


@dataclass(frozen=True)
class NotifyPlan:
    """Who hears a final outcome, and how."""

    others: list[Callback]  # told through the channel's notifier (after claiming notified_at)
    told_here: bool  # nobody else is left to tell: record notified_at with the outcome


def plan(callbacks: Sequence[Callback], own: Callback | None, caller_waiting: bool) -> NotifyPlan:
    """``callbacks``: the delivery's; ``own``: the waiting caller's callback, if any;
    ``caller_waiting``: a caller still waits for this outcome in its answer."""
    others = [cb for cb in callbacks if cb != own] if own is not None else list(callbacks)
    return NotifyPlan(others=others, told_here=not others and (caller_waiting or not callbacks))


class Notifications:
    """The channels' notifiers (by channel name) and the telling of outcomes."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self.notifiers: dict[str, Notifier] = {}

    async def notify(
        self, record: DeliveryRecord, *, callbacks: Sequence[Callback] | None = None
    ) -> None:
        """Tell the channel that asked about a final outcome, once per callback.

        ``notified_at`` is claimed before calling (only one process wins it), so a callback
        is never called twice; a process dying between the outcome's commit and the claim
        leaves the row to :meth:`missed`.
        """
        if not await self.store.claim_notification(record.id, time.time()):
            return
        await self.call(record, record.callbacks if callbacks is None else callbacks)

    async def call(self, record: DeliveryRecord, callbacks: Sequence[Callback]) -> None:
        """Call the channel's notifier for each callback (no claim: the caller has it)."""
        notifier = self.notifiers.get(record.source.split(":", 1)[0])
        if notifier is None:
            return
        for callback in callbacks:
            try:
                await notifier(replace(record, callback=dict(callback), extra_callbacks=None))
            except Exception:
                log.exception("notify_failed", delivery_id=record.id)

    async def missed(self, *, older_than: float = NOTIFY_GRACE, limit: int = 50) -> int:
        """Tell final outcomes whose callbacks were never called (the process died first)."""
        records = await self.store.unnotified(before=time.time() - older_than, limit=limit)
        for record in records:
            await self.notify(record)
        return len(records)
