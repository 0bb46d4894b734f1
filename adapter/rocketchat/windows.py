"""Rocket.Chat's rate-limit window of one route, as pure state (no I/O, clock passed in).

:class:`RouteWindow` decides whether a call may start now and learns from each answer;
:class:`~adapter.rocketchat.pacer.Pacer` only wraps it in an asyncio condition. Per route:

* no answer seen yet: one probe call at a time, whose answer tells us the rules;
* answers without ``X-RateLimit-*`` headers: not limited (a bot user, a role holding
  ``api-bypass-rate-limit``, or the limiter switched off), no pacing at all;
* answers with headers: at most ``remaining`` calls in flight, none once it reaches 0
  until the window's reset (plus a small margin). When a window reopens a single call
  goes first and its answer gives the new budget: if our clock and the server's disagree,
  that one call is the only one that can meet a 429.

A route that was limited and then answers successfully *without* headers has stopped
being limited (the bot role was granted, the limiter was switched off): it is unpaced from
that answer on, instead of probing one call at a time after every reopened window.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapter.rocketchat.sansio import RateLimit

__all__ = ["MAX_WAIT", "REOPEN_MARGIN", "RouteWindow"]

MAX_WAIT = 300.0  # never trust a reset header further out than this
# Rocket.Chat resets a window on the first call *after* ``X-RateLimit-Reset`` (its clock, in
# whole milliseconds): calling a little later than the header says keeps that call in the new
# window instead of being the 11th of the old one.
REOPEN_MARGIN = 0.05


@dataclass
class RouteWindow:
    """What we know of one route's rate limit, and the calls in flight on it."""

    known: bool = False  # have we seen an answer yet?
    limited: bool = False  # did the last successful answers carry rate-limit headers?
    limit: int = 10
    remaining: int | None = None  # None: unknown (probe with one call)
    reset_at: float | None = None  # epoch seconds
    in_flight: int = 0

    def reopen(self, now: float) -> None:
        """Forget a window whose reset has passed: one probe's answer tells the new budget."""
        if self.reset_at is not None and now >= self.reset_at + REOPEN_MARGIN:
            self.remaining = None
            self.reset_at = None

    def room(self, now: float, wanted: int) -> int:
        """How many new calls may start now (at most ``wanted``)."""
        self.reopen(now)
        if self.known and not self.limited:
            return wanted
        if not self.known or self.remaining is None:
            return min(wanted, 1 if self.in_flight == 0 else 0)
        return min(wanted, max(self.remaining - self.in_flight, 0))

    def may_start(self, now: float) -> bool:
        return self.room(now, 1) > 0

    def wait_timeout(self, now: float) -> float | None:
        """How long a caller that may not start should wait before looking again
        (None: until an answer comes back)."""
        if self.reset_at is None:
            return None
        return min(max(self.reset_at + REOPEN_MARGIN - now, 0.0) + 0.01, MAX_WAIT)

    def reopens_at(self, now: float) -> float | None:
        """When (epoch seconds) the window reopens, if its budget is used up."""
        self.reopen(now)
        if self.remaining == 0 and self.reset_at is not None:
            return self.reset_at + REOPEN_MARGIN
        return None

    def exhausted(self, now: float) -> bool:
        """Is the known budget used up (calls in flight included)? A route still being
        probed is not: its probe answers within one round trip."""
        self.reopen(now)
        return self.limited and self.remaining is not None and self.remaining - self.in_flight <= 0

    def started(self) -> None:
        self.in_flight += 1

    def cancelled(self) -> None:
        """A call ended without an answer (network error)."""
        self.in_flight = max(self.in_flight - 1, 0)

    def answered(
        self,
        limit: RateLimit | None,
        now: float,
        *,
        ok: bool = True,
        rate_limited_until: float | None = None,
    ) -> None:
        """Learn from one answer: its headers, or their absence on a successful one.

        ``ok``: the call succeeded (2xx). An error answer without headers (a proxy's 502,
        an authentication failure answered before the limiter) says nothing about the limit.
        """
        self.in_flight = max(self.in_flight - 1, 0)
        self.known = True
        if rate_limited_until is not None:
            self.limited = True
            self.remaining = 0
            self.reset_at = min(rate_limited_until, now + MAX_WAIT)
        elif limit is not None:
            self.limited = True
            self.limit = limit.limit
            new_window = self.reset_at is None or limit.reset_at > self.reset_at + 0.5
            if new_window or self.remaining is None:
                self.remaining = limit.remaining
            else:
                self.remaining = min(self.remaining, limit.remaining)
            self.reset_at = min(limit.reset_at, now + MAX_WAIT)
        elif ok:
            # Answered successfully without headers: this user is not limited (any more).
            self.limited = False
            self.remaining = None
            self.reset_at = None
