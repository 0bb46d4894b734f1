"""Delivery decisions as pure code: what an answer leads to, and when to call at all.

Nothing here does I/O or reads a clock: ``now`` (epoch seconds) and a random source are
passed in, so every rule is tested on its own (``tests/test_policy.py``). The queue and the
worker only carry the decisions out (ask here, tell the store, call the client), the way
procrastinate's ``retry.py`` returns a decision its worker acts on.

* :func:`after_attempt`: Rocket.Chat's answer (or the failure to get one) to one
  registration → :class:`Delivered`, :class:`Reject`, :class:`WaitUntil` (rate limited,
  no attempt spent), :class:`Pause` (credentials or permission refused), :class:`Retry`
  (capped exponential backoff with jitter) or :class:`GiveUp` (the retry window is over).
* :class:`Gate`: the state shared by the worker and the fast path — paused, Rocket.Chat
  unreachable (after a few failures in a row: probe with one delivery at a time, spaced
  by backoff) — and what follows from it: :meth:`Gate.claim_plan`, :meth:`Gate.idle_until`,
  :meth:`Gate.fast_path_open`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Protocol

from adapter.core.errors import (
    ConfigurationError,
    ContactRejected,
    PermissionDenied,
    RateLimited,
    RocketChatError,
)

__all__ = [
    "OUTAGE_MAX_DELAY",
    "OUTAGE_THRESHOLD",
    "ClaimPlan",
    "Decision",
    "Delivered",
    "Gate",
    "GiveUp",
    "Pause",
    "Reject",
    "Retry",
    "RetryRules",
    "WaitUntil",
    "after_attempt",
    "backoff_delay",
    "duration_text",
]

# Consecutive failures to reach Rocket.Chat (network trouble, 5xx) after which the worker
# stops trying every due delivery and probes with one at a time, spaced by backoff, until
# an answer comes back: an outage costs one call per backoff step, not one per contact.
OUTAGE_THRESHOLD = 3
OUTAGE_MAX_DELAY = 5.0  # a probe is one call: cheap, and it bounds how late recovery is seen


class RetryRules(Protocol):
    """The settings the retry rules read (``adapter.settings.Settings`` has them)."""

    @property
    def retry_first_delay(self) -> float: ...
    @property
    def retry_max_delay(self) -> float: ...
    @property
    def retry_give_up_after(self) -> float: ...


def backoff_delay(attempts: int, *, first: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: ``min(cap, d·U(1, 1.5))``, ``d = first·2^(n-1)``.

    Never earlier than the stated delay (the first retry comes RETRY_FIRST_DELAY after the
    first attempt at the soonest), spread up to half as much again so that contacts
    failing together do not retry together; never later than ``cap``.
    """
    base = min(cap, first * (2 ** max(attempts - 1, 0)))
    return float(min(cap, base * rng.uniform(1.0, 1.5)))


def duration_text(seconds: float) -> str:
    """``86400`` → ``24 h``, ``90`` → ``90 s``: for messages people read."""
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 120:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


# -- what one answer leads to ------------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    contact_id: str
    strategy: str
    outcome = "delivered"
    answered = True  # Rocket.Chat answered: an outage, if any, is over
    error = None  # every decision has an error (the attempt's), this one none


@dataclass(frozen=True)
class Reject:
    """Rocket.Chat refused the contact (400): final, never retried."""

    error: str
    outcome = "rejected"
    answered = True


@dataclass(frozen=True)
class WaitUntil:
    """Rate limited: back to the queue until the window reopens, no attempt spent."""

    at: float
    error: str
    outcome = "rate_limited"
    answered = True


@dataclass(frozen=True)
class Pause:
    """Credentials (401) or a permission (403) refused: stop delivering until fixed."""

    error: str  # why: the credentials or the permission Rocket.Chat refused
    permission: bool  # 403: only a real call can tell when it is granted
    outcome = "paused"
    answered = True


@dataclass(frozen=True)
class Retry:
    """No usable answer: try again at ``at`` (the attempt is counted)."""

    at: float
    attempts: int
    error: str
    # False: Rocket.Chat could not be reached (counts towards an outage); None: a bug of
    # ours, which says nothing about Rocket.Chat either way
    answered: bool | None
    outcome = "retry"


@dataclass(frozen=True)
class GiveUp:
    """No usable answer and the retry window (RETRY_GIVE_UP_AFTER) is over: failed."""

    attempts: int
    error: str  # the last error, as it was
    message: str  # what the delivery's last_error says
    answered: bool | None  # as for Retry
    outcome = "gave_up"


Decision = Delivered | Reject | WaitUntil | Pause | Retry | GiveUp


def after_attempt(
    result: tuple[str, str] | BaseException,
    *,
    attempts: int,
    queued_at: float,
    now: float,
    rules: RetryRules,
    rng: random.Random,
) -> Decision:
    """What to do with a delivery after one try.

    ``result``: ``(contact_id, strategy)`` when Rocket.Chat registered it, else what the
    call raised. ``attempts``: counted tries before this one; ``queued_at``: the start of
    the current round of attempts (the give-up clock).
    """
    if isinstance(result, tuple):
        return Delivered(contact_id=result[0], strategy=result[1])
    if isinstance(result, RateLimited):
        return WaitUntil(at=result.reset_at, error=str(result))
    if isinstance(result, ConfigurationError):
        return Pause(error=str(result), permission=isinstance(result, PermissionDenied))
    if isinstance(result, ContactRejected):
        return Reject(error=f"Rocket.Chat rejected the contact: {result.message}")
    answered: bool | None
    if isinstance(result, RocketChatError):
        error, answered = str(result), False
    else:  # a bug of ours: retried like an outage, but it says nothing about Rocket.Chat
        error, answered = f"unexpected error: {type(result).__name__}", None
    tries = attempts + 1
    if now - queued_at >= rules.retry_give_up_after:
        message = (
            f"gave up after {duration_text(rules.retry_give_up_after)} "
            f"and {tries} attempts: {error}"
        )
        return GiveUp(attempts=tries, error=error, message=message, answered=answered)
    delay = backoff_delay(tries, first=rules.retry_first_delay, cap=rules.retry_max_delay, rng=rng)
    return Retry(at=now + delay, attempts=tries, error=error, answered=answered)


# -- when to call at all -------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimPlan:
    """How many due deliveries the worker should claim now."""

    limit: int  # 0: claim nothing now
    probe: bool = False  # an outage probe: the one row that finds out whether it is back
    wait_for_in_flight: bool = False  # nothing to claim until a delivery in flight ends


@dataclass
class Gate:
    """Pause and outage state, shared by the worker and the fast path of one process.

    Times are epoch seconds passed in by the caller. Rate limits are the pacer's; the
    methods that need them take the pacer's answer as an argument.
    """

    first_delay: float
    max_delay: float
    auth_check_interval: float
    failures: int = 0  # consecutive failures to reach Rocket.Chat
    probe_at: float = 0.0  # in an outage: no call before this
    unanswered_since: float | None = None  # the first of the current run of failures
    paused_reason: str | None = None
    paused_permission: bool = False  # 403: a real delivery finds out when it is granted
    last_auth_check: float = -math.inf  # last look whether a pause is over

    @classmethod
    def from_settings(cls, settings: GateSettings) -> Gate:
        return cls(
            first_delay=settings.retry_first_delay,
            max_delay=settings.retry_max_delay,
            auth_check_interval=settings.auth_check_interval,
        )

    # -- outage ----------------------------------------------------------------------

    @property
    def in_outage(self) -> bool:
        return self.failures >= OUTAGE_THRESHOLD

    def answered(self) -> bool:
        """Rocket.Chat answered (whatever it said). True when this ends an outage: the
        deliveries it held back are due at once."""
        ended = self.in_outage
        self.failures = 0
        self.probe_at = 0.0
        self.unanswered_since = None
        return ended

    def unanswered(self, now: float, rng: random.Random) -> bool:
        """One more failure to get an answer. True when this starts an outage; from then on
        one probe at a time, spaced by backoff (capped at OUTAGE_MAX_DELAY)."""
        self.failures += 1
        if self.unanswered_since is None:
            self.unanswered_since = now
        n = self.failures - OUTAGE_THRESHOLD + 1
        if n <= 0:
            return False
        cap = min(self.max_delay, OUTAGE_MAX_DELAY)
        delay = backoff_delay(n, first=self.first_delay, cap=cap, rng=rng)
        self.probe_at = max(self.probe_at, now + delay)
        return n == 1

    # -- pause -----------------------------------------------------------------------

    def pause(self, reason: str, *, permission: bool) -> bool:
        """Credentials or a permission were refused. True when this starts the pause."""
        started = self.paused_reason is None
        self.paused_reason = reason
        self.paused_permission = permission
        return started

    def resume(self) -> None:
        self.paused_reason = None
        self.paused_permission = False

    def auth_check_due(self, now: float) -> bool:
        """While paused, at most once per AUTH_CHECK_INTERVAL: time to look whether the
        pause is over? (Counts as the look: the next one is an interval later.)"""
        if self.paused_reason is None or now - self.last_auth_check < self.auth_check_interval:
            return False
        self.last_auth_check = now
        return True

    def look_again(self, now: float) -> None:
        """An operator asked to check the connection now: the next claim looks whether a
        pause is over, and probes at once in an outage (instead of waiting out the interval
        or the backoff)."""
        self.last_auth_check = -math.inf
        if self.in_outage:
            self.probe_at = min(self.probe_at, now)

    # -- what follows ----------------------------------------------------------------

    def opens_at(self, now: float, *, rate_reopens_at: float | None = None) -> float | None:
        """When a call may next start, if not now: the next outage probe, the next look
        whether a pause is over, the rate-limit window's reopening (the latest of them)."""
        times = []
        if self.paused_reason is not None:
            times.append(self.last_auth_check + self.auth_check_interval)
        if self.in_outage:
            times.append(self.probe_at)
        if rate_reopens_at is not None:
            times.append(rate_reopens_at)
        latest = max(times, default=now)
        return latest if latest > now else None

    def claim_plan(
        self,
        now: float,
        *,
        in_flight: int,
        concurrency: int,
        room: int,
        rate_reopens_at: float | None,
        pause_probe: bool = False,
    ) -> ClaimPlan:
        """How many rows to claim. ``room``: calls the known rate-limit windows allow now;
        ``pause_probe``: paused, and one delivery may go to see whether it is over."""
        # Twice the connections: while one delivery records its outcome, the next one
        # already waits for the freed connection (calls stay bounded by the client).
        limit = 2 * concurrency
        if self.paused_reason is not None:
            if not pause_probe:
                return ClaimPlan(0)
            limit = 1
        if rate_reopens_at is not None:
            return ClaimPlan(0)
        probe = False
        if self.in_outage:
            if now < self.probe_at:
                return ClaimPlan(0)
            limit, probe = 1, True  # one delivery at a time finds out when it is back
        free = min(limit - in_flight, room)
        # While enough claimed rows wait to keep every connection busy, claim in batches
        # (one claim transaction for several rows) rather than one row per freed slot.
        batch = max(1, concurrency // 2)
        if free <= 0 or (free < batch and in_flight >= concurrency):
            return ClaimPlan(0, wait_for_in_flight=in_flight > 0)
        return ClaimPlan(free, probe=probe)

    def idle_until(
        self,
        now: float,
        *,
        next_due: float | None,
        poll_interval: float,
        rate_reopens_at: float | None = None,
    ) -> float:
        """When a worker that found nothing to claim should look again (a new submission
        of this process, or a stop, wakes it sooner).

        ``next_due``: the earliest ``next_attempt_at`` among pending rows (None: none, or
        not looked). No call can start before the gate opens, so until then it sleeps;
        after that, until the next row is due, at most ``poll_interval`` (other processes
        queue rows too). A row due yet not claimed (its person busy elsewhere) is polled
        for, never spun on.
        """
        opens = self.opens_at(now, rate_reopens_at=rate_reopens_at)
        if opens is not None:
            return opens
        latest = now + poll_interval
        if next_due is None or next_due <= now:
            return latest
        return min(next_due, latest)

    def fast_path_open(
        self,
        *,
        rate_limited: bool,
        busy: bool,
        ignore_pause: bool = False,
    ) -> bool:
        """Is trying a delivery at once sensible: not paused (unless this is the pause's
        probe), no outage, room in the rate-limit window, a free fast-path slot?"""
        return (
            (self.paused_reason is None or ignore_pause)
            and not self.in_outage
            and not rate_limited
            and not busy
        )


class GateSettings(RetryRules, Protocol):
    @property
    def auth_check_interval(self) -> float: ...
