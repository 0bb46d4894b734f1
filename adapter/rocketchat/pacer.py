"""Shared rate-limit pacing of calls to Rocket.Chat: wait for the window instead of a 429.

The decisions are :class:`~adapter.rocketchat.windows.RouteWindow`'s (pure, tested with an
injected clock); :class:`Pacer` keeps one per route and makes callers wait on an asyncio
condition until theirs says a call may start.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from adapter.rocketchat.sansio import RateLimit
from adapter.rocketchat.windows import RouteWindow

__all__ = ["CONTACT_ROUTES", "Pacer"]

CONTACT_ROUTES = "/api/v1/omnichannel/"  # the routes whose windows delivery is paced by


class Pacer:
    """One :class:`RouteWindow` per route (path + method), shared by every caller."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._routes: dict[str, RouteWindow] = {}
        self._cond = asyncio.Condition()

    def window(self, route: str) -> RouteWindow:
        return self._routes.setdefault(route, RouteWindow())

    async def acquire(self, route: str) -> None:
        """Wait until a call to ``route`` fits in the server's current window."""
        async with self._cond:
            while True:
                window = self.window(route)
                now = self._clock()
                if window.may_start(now):
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), timeout=window.wait_timeout(now))
            window.started()

    async def release(
        self,
        route: str,
        limit: RateLimit | None,
        *,
        ok: bool = True,
        rate_limited_until: float | None = None,
    ) -> None:
        """Record the answer's headers (or their absence) and wake waiting callers."""
        async with self._cond:
            self.window(route).answered(
                limit, self._clock(), ok=ok, rate_limited_until=rate_limited_until
            )
            self._cond.notify_all()

    async def cancel(self, route: str) -> None:
        """A call ended without an answer (network error): free its slot."""
        async with self._cond:
            self.window(route).cancelled()
            self._cond.notify_all()

    def _windows(self, prefix: str) -> list[RouteWindow]:
        return [w for r, w in self._routes.items() if r.startswith(prefix)]

    def wait_hint_any(self, prefix: str = CONTACT_ROUTES) -> float | None:
        """The latest reopening among exhausted routes, or None when all have room."""
        now = self._clock()
        hints = [h for w in self._windows(prefix) if (h := w.reopens_at(now)) is not None]
        return max(hints) if hints else None

    def room_hint(self, wanted: int, prefix: str = CONTACT_ROUTES) -> int:
        """How many new calls fit in the known windows right now (at most ``wanted``)."""
        now = self._clock()
        return min([wanted, *(w.room(now, wanted) for w in self._windows(prefix))])

    def exhausted(self, prefix: str = CONTACT_ROUTES) -> bool:
        """Is some route's known budget used up (calls in flight included)?"""
        now = self._clock()
        return any(w.exhausted(now) for w in self._windows(prefix))

    def wait_hint(self, route: str) -> float | None:
        """When (epoch seconds) the route's window reopens, if it is currently exhausted."""
        window = self._routes.get(route)
        return window.reopens_at(self._clock()) if window is not None else None
