"""What an input channel is, and how the app finds them.

Each module in the ``handlers`` package defines ``channel``: an object with a
``name`` and a ``routes(context)`` method returning Starlette routes. Optional:
``notify(context, record)`` to report a delivery's final outcome to the person who
asked, and ``startup``/``shutdown`` coroutines. Adding a channel means adding one
module there; nothing else changes.
"""

from __future__ import annotations

import hmac
import importlib
import pkgutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import structlog
from starlette.requests import Request
from starlette.routing import BaseRoute

from adapter.core.records import DeliveryRecord
from adapter.delivery.queue import DeliveryQueue
from adapter.settings import Settings

__all__ = [
    "BodyTooLarge",
    "Channel",
    "ChannelContext",
    "check_timestamp",
    "client_address",
    "constant_time_equal",
    "discover_channels",
    "read_body",
    "verify_hmac",
]

log = structlog.get_logger("adapter.channels")


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


class BodyTooLarge(Exception):
    """The request body exceeds the channel's cap."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes")
        self.limit = limit


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (without reading it all) anything over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge(limit)
        except ValueError:
            pass
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # let request.json()/form() reuse it
    return body


def client_address(request: Request) -> str:
    """Whose request this is, for per-address limits (the forms' rate limit, the admin
    login's throttle).

    Behind a proxy (Heroku's router, nginx…) the peer is the proxy, and the client is the
    address the proxy **appended** to ``X-Forwarded-For``: its last entry. Never the first
    entry: a client writes that one itself, and Heroku's router keeps what the client sent
    in front of the address it appends. (uvicorn, told to trust any proxy as on Heroku,
    takes the first one for ``request.client``: a client could pick a new address for
    each request and never be limited.) Without the header, the peer's address.
    """
    forwarded = [
        entry.strip()
        for value in request.headers.getlist("x-forwarded-for")
        for entry in value.split(",")
        if entry.strip()
    ]
    if forwarded:
        return forwarded[-1]
    return request.client.host if request.client else "?"


def constant_time_equal(given: str | bytes, expected: str | bytes) -> bool:
    """Compare secrets without leaking where they differ."""
    a = given.encode() if isinstance(given, str) else given
    b = expected.encode() if isinstance(expected, str) else expected
    return hmac.compare_digest(a, b)


def verify_hmac(
    secret: str | bytes, message: bytes, signature: str, *, digest: str = "sha256", prefix: str = ""
) -> bool:
    """True when ``signature`` (hex, optionally prefixed like ``v0=``) signs ``message``."""
    key = secret.encode() if isinstance(secret, str) else secret
    expected = prefix + hmac.new(key, message, digest).hexdigest()
    return constant_time_equal(signature.strip().lower(), expected.lower())


def check_timestamp(value: str | None, *, window: float = 300.0, now: float | None = None) -> bool:
    """True when ``value`` (epoch seconds or milliseconds) is within ``window`` of now."""
    if value is None:
        return False
    try:
        stamp = float(value.strip())
    except ValueError:
        return False
    if stamp > 1e11:  # milliseconds
        stamp /= 1000.0
    current = time.time() if now is None else now
    return abs(current - stamp) <= window


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
