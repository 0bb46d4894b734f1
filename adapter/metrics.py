"""Prometheus metrics for the service, on a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "ATTEMPTS",
    "CONTACTS",
    "QUEUE_DEPTH",
    "REGISTRY",
    "ROCKETCHAT_LATENCY",
]

REGISTRY = CollectorRegistry(auto_describe=True)

CONTACTS = Counter(
    "contact_adapter_contacts",
    "Contacts by channel and outcome (accepted, delivered, failed, rejected, duplicate)",
    ["channel", "outcome"],
    registry=REGISTRY,
)
ATTEMPTS = Counter(
    "contact_adapter_delivery_attempts",
    "Delivery attempts by outcome (delivered, retry, rate_limited, rejected, paused)",
    ["outcome"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "contact_adapter_queue_depth", "Deliveries by status", ["status"], registry=REGISTRY
)
ROCKETCHAT_LATENCY = Histogram(
    "contact_adapter_rocketchat_seconds",
    "Latency of calls to Rocket.Chat",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
