"""The delivery decisions as pure code (adapter.core.policy, adapter.rocketchat.windows).

Every rule here runs without a database, a network or a real clock: ``now`` is passed in,
randomness comes from a seeded ``random.Random``. These are the rules the worker and the
fast path follow; the end-to-end tests in test_delivery.py show them carried out.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import pytest

from adapter.core.errors import (
    BadCredentials,
    ContactRejected,
    PermissionDenied,
    RateLimited,
    RocketChatUnavailable,
    ServerError,
)
from adapter.core.policy import (
    OUTAGE_MAX_DELAY,
    OUTAGE_THRESHOLD,
    ClaimPlan,
    Delivered,
    Gate,
    GiveUp,
    Pause,
    Reject,
    Retry,
    WaitUntil,
    after_attempt,
    backoff_delay,
)
from adapter.rocketchat.pacer import Pacer
from adapter.rocketchat.sansio import RateLimit
from adapter.rocketchat.windows import REOPEN_MARGIN, RouteWindow

NOW = 1_800_000_000.0
ROUTE = "/api/v1/omnichannel/contactpost"


@dataclass(frozen=True)
class Rules:
    retry_first_delay: float = 2.0
    retry_max_delay: float = 600.0
    retry_give_up_after: float = 86_400.0
    auth_check_interval: float = 30.0


def gate(**changes: float) -> Gate:
    return Gate.from_settings(Rules(**changes))


def decide(result: object, *, attempts: int = 0, queued_at: float = NOW) -> object:
    return after_attempt(
        result,  # type: ignore[arg-type]
        attempts=attempts,
        queued_at=queued_at,
        now=NOW,
        rules=Rules(),
        rng=random.Random(7),
    )


# ----------------------------------------------------------------------------- after_attempt


def test_each_answer_leads_to_its_decision() -> None:
    assert decide(("c1", "visitor")) == Delivered(contact_id="c1", strategy="visitor")
    reset = NOW + 42
    assert decide(RateLimited("slow down", reset_at=reset)) == WaitUntil(
        at=reset, error="slow down"
    )
    assert decide(BadCredentials("token refused")) == Pause("token refused", permission=False)
    assert decide(PermissionDenied("no view-l-room")) == Pause("no view-l-room", permission=True)
    rejected = decide(ContactRejected("phone is not valid", error_type="invalid-phone"))
    assert rejected == Reject(error="Rocket.Chat rejected the contact: phone is not valid")


def test_an_outage_or_5xx_is_retried_with_backoff_and_counts_as_not_answered() -> None:
    decision = decide(RocketChatUnavailable("connection refused"), attempts=2)
    assert isinstance(decision, Retry)
    assert decision.attempts == 3 and decision.error == "connection refused"
    assert not decision.answered
    # the third attempt's backoff: 2 s · 2² = 8 s, spread up to half as much again
    assert NOW + 8 <= decision.at <= NOW + 12
    assert isinstance(decide(ServerError("502 from the proxy", status=502)), Retry)


def test_a_bug_of_ours_is_retried_but_says_nothing_about_rocketchat() -> None:
    decision = decide(KeyError("oops"))
    assert isinstance(decision, Retry)
    assert decision.error == "unexpected error: KeyError" and decision.answered is None


def test_after_the_retry_window_it_gives_up_saying_how_long_and_how_often() -> None:
    decision = decide(RocketChatUnavailable("timed out"), attempts=11, queued_at=NOW - 86_400.0)
    assert isinstance(decision, GiveUp)
    assert decision.attempts == 12
    assert decision.message == "gave up after 24 h and 12 attempts: timed out"


def test_backoff_is_never_earlier_than_stated_and_never_past_the_cap() -> None:
    rng = random.Random(1)
    for attempts in range(1, 30):
        delay = backoff_delay(attempts, first=2.0, cap=600.0, rng=rng)
        base = min(600.0, 2.0 * 2 ** (attempts - 1))
        assert base <= delay <= min(600.0, base * 1.5)


# ----------------------------------------------------------------------------- the gate


def in_outage(g: Gate, now: float = NOW) -> Gate:
    rng = random.Random(3)
    started = [g.unanswered(now, rng) for _ in range(OUTAGE_THRESHOLD)]
    assert started == [False] * (OUTAGE_THRESHOLD - 1) + [True]
    return g


def test_a_few_failures_in_a_row_switch_to_one_probe_at_a_time_spaced_by_backoff() -> None:
    g = gate()
    plan = g.claim_plan(NOW, in_flight=0, concurrency=8, room=16, rate_reopens_at=None)
    assert plan == ClaimPlan(16)
    in_outage(g)
    assert NOW + 2.0 <= g.probe_at <= NOW + OUTAGE_MAX_DELAY
    assert g.claim_plan(NOW, in_flight=0, concurrency=8, room=16, rate_reopens_at=None).limit == 0
    at_probe = g.claim_plan(g.probe_at, in_flight=0, concurrency=8, room=16, rate_reopens_at=None)
    assert at_probe == ClaimPlan(1, probe=True)
    later = random.Random(5)
    for _ in range(20):
        g.unanswered(NOW, later)
    assert g.probe_at <= NOW + OUTAGE_MAX_DELAY  # the probe's spacing is capped


def test_once_a_probe_is_answered_delivery_is_back_at_full_concurrency() -> None:
    g = in_outage(gate())
    assert g.answered() is True  # the outage is over: the queue makes held rows due at once
    plan = g.claim_plan(NOW, in_flight=0, concurrency=8, room=16, rate_reopens_at=None)
    assert plan == ClaimPlan(16, probe=False)
    assert g.answered() is False  # an answer outside an outage ends nothing


def test_idle_with_rocketchat_down_sleeps_until_the_probe_not_a_busy_loop() -> None:
    """Issue 11, defect 2: one contact waiting out a 10-minute backoff, the outage probe's
    30 s wait over: the worker must not wake every 5 ms (it did)."""
    g = in_outage(gate())
    before_probe = g.idle_until(NOW, next_due=NOW + 600, poll_interval=1.0)
    assert before_probe == g.probe_at  # nothing can be called before the probe
    after_probe = g.probe_at + 0.001
    wake = g.idle_until(after_probe, next_due=NOW + 600, poll_interval=1.0)
    assert wake >= after_probe + 1.0  # a probe found nothing to take: poll, never spin


def test_idle_sleeps_until_the_next_due_row_or_the_poll_interval() -> None:
    g = gate()
    assert g.idle_until(NOW, next_due=None, poll_interval=1.0) == NOW + 1.0
    assert g.idle_until(NOW, next_due=NOW + 0.25, poll_interval=1.0) == NOW + 0.25
    assert g.idle_until(NOW, next_due=NOW + 90, poll_interval=1.0) == NOW + 1.0
    # due already but not claimed (its person is being delivered elsewhere): poll
    assert g.idle_until(NOW, next_due=NOW - 5, poll_interval=1.0) == NOW + 1.0
    # a rate-limited window: nothing can be called before it reopens
    assert g.idle_until(NOW, next_due=NOW, poll_interval=1.0, rate_reopens_at=NOW + 40) == (
        NOW + 40
    )


def test_a_pause_is_looked_at_once_per_interval_and_lets_one_delivery_through() -> None:
    g = gate(auth_check_interval=30.0)
    assert g.pause("credentials refused", permission=False) is True
    assert g.pause("credentials refused", permission=False) is False
    assert g.claim_plan(NOW, in_flight=0, concurrency=8, room=16, rate_reopens_at=None).limit == 0
    assert g.auth_check_due(NOW) is True
    assert g.auth_check_due(NOW + 29) is False
    assert g.idle_until(NOW + 1, next_due=NOW, poll_interval=1.0) == NOW + 30
    plan = g.claim_plan(
        NOW, in_flight=0, concurrency=8, room=16, rate_reopens_at=None, pause_probe=True
    )
    assert plan.limit == 1
    assert g.auth_check_due(NOW + 30) is True
    g.resume()
    assert g.claim_plan(NOW, in_flight=0, concurrency=8, room=16, rate_reopens_at=None).limit == 16


def test_claims_come_in_batches_while_every_connection_is_busy() -> None:
    g = gate()
    busy = g.claim_plan(NOW, in_flight=14, concurrency=8, room=16, rate_reopens_at=None)
    assert busy == ClaimPlan(0, wait_for_in_flight=True)  # 2 free < a batch of 4
    assert g.claim_plan(NOW, in_flight=12, concurrency=8, room=16, rate_reopens_at=None) == (
        ClaimPlan(4)
    )
    assert g.claim_plan(NOW, in_flight=0, concurrency=8, room=3, rate_reopens_at=None) == (
        ClaimPlan(3)  # what the rate-limit window has room for
    )


def test_the_fast_path_is_closed_in_an_outage_a_pause_or_a_used_up_window() -> None:
    g = gate()
    assert g.fast_path_open(rate_limited=False, busy=False)
    assert not g.fast_path_open(rate_limited=True, busy=False)
    assert not g.fast_path_open(rate_limited=False, busy=True)
    g.pause("403", permission=True)
    assert not g.fast_path_open(rate_limited=False, busy=False)
    assert g.fast_path_open(rate_limited=False, busy=False, ignore_pause=True)
    g.resume()
    in_outage(g)
    assert not g.fast_path_open(rate_limited=False, busy=False)


# ----------------------------------------------------------------------------- rate limits


def test_a_route_probes_then_paces_its_window_and_probes_again_after_the_reset() -> None:
    w = RouteWindow()
    assert w.room(NOW, 8) == 1  # nothing known: one probe
    w.started()
    assert w.room(NOW, 8) == 0
    w.answered(RateLimit(limit=10, remaining=3, reset_at=NOW + 10), NOW)
    assert w.room(NOW, 8) == 3
    w.answered(RateLimit(limit=10, remaining=0, reset_at=NOW + 10), NOW)
    assert w.room(NOW, 8) == 0 and w.exhausted(NOW)
    assert w.reopens_at(NOW) == NOW + 10 + REOPEN_MARGIN
    reopened = NOW + 10 + REOPEN_MARGIN
    assert w.room(reopened, 8) == 1  # a reopened window: one call learns its budget


def test_a_route_whose_answers_lose_their_headers_is_no_longer_paced() -> None:
    """Issue 11, defect 1: the bot role (or api-bypass-rate-limit) was granted after a
    rate-limited period: answers come back without X-RateLimit-* headers. The route must
    be unpaced from then on, not stuck at one call in flight after every reopened window."""
    w = RouteWindow()
    w.started()
    w.answered(RateLimit(limit=10, remaining=0, reset_at=NOW + 10), NOW)
    later = NOW + 11
    assert w.room(later, 8) == 1
    w.started()
    w.answered(None, later)  # a 2xx without headers
    assert w.room(later, 8) == 8
    assert not w.exhausted(later) and w.reopens_at(later) is None


def test_an_error_answer_without_headers_says_nothing_about_the_limit() -> None:
    w = RouteWindow()
    w.started()
    w.answered(RateLimit(limit=10, remaining=2, reset_at=NOW + 10), NOW)
    w.started()
    w.answered(None, NOW, ok=False)  # e.g. a proxy's 502
    assert w.room(NOW, 8) == 2


def test_a_429_closes_the_window_until_its_reset() -> None:
    w = RouteWindow()
    w.started()
    w.answered(None, NOW, rate_limited_until=NOW + 30)
    assert w.room(NOW, 8) == 0 and w.reopens_at(NOW) == NOW + 30 + REOPEN_MARGIN


def test_the_pacer_unpaces_a_route_whose_answers_lose_their_headers() -> None:
    """The same defect through the pacer every call goes through."""

    async def main() -> None:
        clock = [NOW]
        pacer = Pacer(clock=lambda: clock[0])
        await pacer.acquire(ROUTE)
        await pacer.release(ROUTE, RateLimit(limit=10, remaining=0, reset_at=NOW + 10))
        assert pacer.wait_hint_any() == NOW + 10 + REOPEN_MARGIN
        clock[0] = NOW + 11
        await asyncio.wait_for(pacer.acquire(ROUTE), 1)
        await pacer.release(ROUTE, None)
        assert pacer.room_hint(8) == 8
        await asyncio.wait_for(asyncio.gather(*(pacer.acquire(ROUTE) for _ in range(8))), 1)

    asyncio.run(main())


@pytest.mark.parametrize("remaining", [0, 1, 5])
def test_calls_in_flight_count_against_the_window(remaining: int) -> None:
    w = RouteWindow()
    w.started()
    w.answered(RateLimit(limit=10, remaining=remaining, reset_at=NOW + 10), NOW)
    for _ in range(remaining):
        assert w.may_start(NOW)
        w.started()
    assert not w.may_start(NOW)
