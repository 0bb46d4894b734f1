"""Prometheus metrics for the service, on a registry of its own (``GET /metrics``).

It imports nothing of the project: the ledger's figures come in as a :class:`DeliveryStats`.

Two kinds, and the difference matters once there is more than one process:

* **Counters and the latency histogram are per process.** ``contact_adapter_contacts_total``
  (accepted, duplicate, rejected, delivered, failed per channel),
  ``contact_adapter_delivery_attempts_total`` (delivered, retry, rate_limited, rejected,
  paused, gave_up) and ``contact_adapter_rocketchat_seconds`` count what *this* process
  did since it started. Every web dyno (and every uvicorn worker in it) has its own; a
  ``worker`` dyno has no HTTP server, so its own counters are not scraped. Sum over the
  scraped processes with ``sum by (channel, outcome) (rate(...))``, and read what every
  process did, worker dynos included, from the gauges below.
* **Gauges refreshed from the database on every scrape are global.**
  ``contact_adapter_queue_depth`` (deliveries per status),
  ``contact_adapter_deliveries`` (per channel and status) and
  ``contact_adapter_oldest_pending_seconds`` (how long the oldest waiting contact has
  waited) say the same on every process, whichever dyno the router picked. So do
  ``contact_adapter_recent_attempts`` (tries at Rocket.Chat in the last
  ``RECENT_WINDOW`` seconds, by outcome, made by any process) and
  ``contact_adapter_recent_attempt_seconds`` (their mean and longest duration), read
  from the attempts every delivery keeps.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "ATTEMPTS",
    "CONTACTS",
    "DELIVERIES",
    "OLDEST_PENDING",
    "PAUSED",
    "QUEUE_DEPTH",
    "RECENT_ATTEMPTS",
    "RECENT_ATTEMPT_SECONDS",
    "RECENT_WINDOW",
    "REGISTRY",
    "ROCKETCHAT_LATENCY",
    "DeliveryStats",
    "refresh",
]

REGISTRY = CollectorRegistry(auto_describe=True)

CONTACTS = Counter(
    "contact_adapter_contacts",
    "Contacts handled by this process, by channel and outcome "
    "(accepted, duplicate, rejected, delivered, failed)",
    ["channel", "outcome"],
    registry=REGISTRY,
)
ATTEMPTS = Counter(
    "contact_adapter_delivery_attempts",
    "Delivery attempts made by this process, by outcome "
    "(delivered, retry, rate_limited, rejected, paused, gave_up)",
    ["outcome"],
    registry=REGISTRY,
)
ROCKETCHAT_LATENCY = Histogram(
    "contact_adapter_rocketchat_seconds",
    "Latency of this process's calls to Rocket.Chat",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "contact_adapter_queue_depth",
    "Deliveries by status, from the database (the same on every process)",
    ["status"],
    registry=REGISTRY,
)
DELIVERIES = Gauge(
    "contact_adapter_deliveries",
    "Deliveries by channel and status, from the database (the same on every process)",
    ["channel", "status"],
    registry=REGISTRY,
)
OLDEST_PENDING = Gauge(
    "contact_adapter_oldest_pending_seconds",
    "Age of the oldest contact still waiting to be delivered (0 when none), from the database",
    registry=REGISTRY,
)
RECENT_WINDOW = 300.0
RECENT_ATTEMPTS = Gauge(
    "contact_adapter_recent_attempts",
    "Tries at Rocket.Chat in the last 5 minutes by any process (worker dynos included), "
    "by outcome, from the database",
    ["outcome"],
    registry=REGISTRY,
)
RECENT_ATTEMPT_SECONDS = Gauge(
    "contact_adapter_recent_attempt_seconds",
    "Mean and longest duration of the last 5 minutes' tries at Rocket.Chat, by outcome "
    "(stat=mean|max), from the database",
    ["outcome", "stat"],
    registry=REGISTRY,
)
PAUSED = Gauge(
    "contact_adapter_delivery_paused",
    "1 while this process pauses delivery because Rocket.Chat refuses the credentials",
    registry=REGISTRY,
)


@dataclass(frozen=True)
class DeliveryStats:
    """What the database-backed gauges show, read from the ledger (by every process)."""

    counts: Mapping[str, Mapping[str, int]]  # {source: {status: n}}
    statuses: Sequence[str]  # every status, shown as 0 when none is in it
    oldest_pending: float | None  # created_at of the oldest pending delivery
    outcomes: Sequence[str]  # every attempt outcome, shown as 0 when none happened
    recent: Sequence[tuple[str, int, float, float]]  # outcome, count, mean s, longest s
    paused: bool  # this process pauses delivery (credentials or permission refused)


def refresh(stats: DeliveryStats, *, now: float | None = None) -> None:
    """Set the database-backed gauges (and this process's pause flag) before a scrape."""
    now = time.time() if now is None else now
    totals = dict.fromkeys(stats.statuses, 0)
    per_channel: dict[tuple[str, str], int] = {}
    for source, per_status in stats.counts.items():
        channel = source.split(":", 1)[0]
        for status, n in per_status.items():
            totals[status] = totals.get(status, 0) + n
            per_channel[(channel, status)] = per_channel.get((channel, status), 0) + n
    for status, n in totals.items():
        QUEUE_DEPTH.labels(status).set(n)
    DELIVERIES.clear()  # a channel whose rows are gone should not linger
    for (channel, status), n in per_channel.items():
        DELIVERIES.labels(channel, status).set(n)
    RECENT_ATTEMPTS.clear()
    RECENT_ATTEMPT_SECONDS.clear()
    for outcome in stats.outcomes:
        RECENT_ATTEMPTS.labels(outcome).set(0)
    for outcome, count, mean, longest in stats.recent:
        RECENT_ATTEMPTS.labels(outcome).set(count)
        RECENT_ATTEMPT_SECONDS.labels(outcome, "mean").set(mean)
        RECENT_ATTEMPT_SECONDS.labels(outcome, "max").set(longest)
    oldest = stats.oldest_pending
    OLDEST_PENDING.set(max(0.0, now - oldest) if oldest is not None else 0.0)
    PAUSED.set(1 if stats.paused else 0)
