"""What an input channel is, and how the app finds them.

Each module in the ``handlers`` package defines ``channel``: an object with a
``name`` and a ``routes(context)`` method returning Starlette routes. Optional:
``notify(context, record)`` to report a delivery's final outcome to the person who
asked, and ``startup``/``shutdown`` coroutines. Adding a channel means adding one
module there; nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from starlette.routing import BaseRoute

from adapter.core.records import DeliveryRecord
from adapter.delivery.queue import DeliveryQueue
from adapter.settings import Settings

__all__ = [
    "Channel",
    "ChannelContext",
    "connect_channels",
    "discover_channels",
    "notify_channel",
]


@dataclass
class ChannelContext:
    """What the core offers a channel: settings, the delivery queue, shared state."""

    settings: Settings
    queue: DeliveryQueue
    state: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Channel(Protocol):
    """An input channel: turns requests into submissions for the delivery queue."""

    name: str

    def routes(self, context: ChannelContext) -> Sequence[BaseRoute]: ...


def discover_channels(package: str = "handlers") -> list[Channel]:
    """Import every module of ``package`` that defines ``channel``, in name order."""
    found: list[Channel] = []
    module = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(module.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        sub = importlib.import_module(f"{package}.{info.name}")
        channel = getattr(sub, "channel", None)
        if channel is not None and isinstance(channel, Channel):
            found.append(channel)
    return found


async def notify_channel(
    channels: Sequence[Channel], context: ChannelContext, record: DeliveryRecord
) -> None:
    """Route a final outcome to the channel that accepted the contact."""
    for channel in channels:
        if channel.name == record.source.split(":", 1)[0]:
            notify = getattr(channel, "notify", None)
            if notify is not None:
                await notify(context, record)
            return


def connect_channels(
    settings: Settings, queue: DeliveryQueue, package: str = "handlers"
) -> tuple[ChannelContext, list[Channel]]:
    """The channels of ``package`` and their context, each final outcome of ``queue``
    routed back to the channel that accepted it (what the app and the worker both do)."""
    context = ChannelContext(settings=settings, queue=queue)
    channels = discover_channels(package)
    notify = _notifier(channels, context)
    for channel in channels:
        queue.notifiers[channel.name] = notify
    return context, channels


def _notifier(
    channels: Sequence[Channel], context: ChannelContext
) -> Callable[[DeliveryRecord], Awaitable[None]]:
    async def notify(record: DeliveryRecord) -> None:
        await notify_channel(channels, context, record)

    return notify
