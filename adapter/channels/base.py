"""What an input channel is, and how the app finds them.

Each module in the ``handlers`` package defines ``channel``: an object with a
``name`` and a ``routes(context)`` method returning Starlette routes. Optional:

* ``check(settings) -> None``: read and check every setting the channel reads, raising
  :class:`~adapter.settings.SettingsError` (one line naming the variable, the value and
  what it expects) for a malformed one. Every entry point (the web app, ``uvicorn
  adapter.app:app``, the worker, ``migrate``, ``import``…) calls it for every channel
  before it serves or touches the database (:func:`check_channels`), so a bad setting
  stops start-up instead of failing each request. Parse the settings in one place and
  call that from both ``check`` and ``routes``.
* ``status(settings) -> ChannelStatus``: whether the channel is on, and why not (naming
  the setting to set); logged once per channel at start-up (:func:`channel_statuses`).
* ``notify(context, record)`` to report a delivery's final outcome to the person who
  asked, and ``startup``/``shutdown`` coroutines.

Adding a channel means adding one module there; nothing else changes.
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
    "ChannelStatus",
    "channel_statuses",
    "check_channels",
    "connect_channels",
    "discover_channels",
    "notify_channel",
]


@dataclass(frozen=True)
class ChannelStatus:
    """Whether one channel is on: ``label`` names it (``webhook:tawkto``), ``path`` is the
    URL path a provider posts to, ``reason`` says why it is off (what to set)."""

    label: str
    on: bool
    path: str | None = None
    reason: str | None = None


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


def check_channels(settings: Settings, channels: Sequence[Channel]) -> None:
    """Every channel's ``check(settings)``: the first malformed setting raises
    :class:`~adapter.settings.SettingsError` naming it."""
    for channel in channels:
        check = getattr(channel, "check", None)
        if check is not None:
            check(settings)


def channel_statuses(settings: Settings, channels: Sequence[Channel]) -> list[ChannelStatus]:
    """Each channel's ``status(settings)``; a channel without one is reported on, as it
    serves its routes whatever the settings."""
    found = []
    for channel in channels:
        status = getattr(channel, "status", None)
        found.append(status(settings) if status is not None else ChannelStatus(channel.name, True))
    return found


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
    routed back to the channel that accepted it (what the app and the worker both do).
    Every channel's settings are checked first (:func:`check_channels`)."""
    context = ChannelContext(settings=settings, queue=queue)
    channels = discover_channels(package)
    check_channels(settings, channels)
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
