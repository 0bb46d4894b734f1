"""Rocket.Chat calls per registered contact, per strategy, and throughput under a rate limit.

Runs the real service (uvicorn on loopback, SQLite) against the Rocket.Chat stand-in:

1. **Calls per registered contact** (bot user, no rate limit): new people (e-mail only,
   e-mail + phone), the same people again, the same people with a new phone, people
   Rocket.Chat already knows but this service does not, and guests who chatted (an
   ``unknown`` contact Rocket.Chat made itself, searched with ``unknown=true`` on 7.10+) —
   for the legacy ``visitor`` strategy and the ``contact-center`` one.
2. **Throughput** (an ordinary user, rate limited: ``--rate-limit`` calls per
   ``--window-ms`` per route): a backlog is delivered for ``--seconds``; every call is
   time-stamped by the stand-in. Prints the calls per route against what the limit allows
   in that time, and the number of 429s (must be 0; the target is ≥ 90 % of the allowance
   on the busiest route).

    .venv/bin/python bench/bench_contact_center.py [--seconds 16] [--strategy contact-center]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapter.settings import load_settings  # noqa: E402
from tests.conftest import ADMIN_TOKEN, AGENT, API_TOKEN, BOT, Service  # noqa: E402
from tests.rocketchat_standin import RocketChatStandIn, StandInServer  # noqa: E402

OMNI = "/api/v1/omnichannel/"


class TimedStandIn(RocketChatStandIn):
    """The stand-in, recording when each answer left and the budget it announced."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.times: list[tuple[float, str, str, int, int | None]] = []

    def _record(self, request: Any, query: Any, body: Any, response: Any) -> None:
        super()._record(request, query, body, response)
        remaining = response.headers.get("x-ratelimit-remaining")
        self.times.append(
            (
                time.monotonic(),
                request.method,
                request.url.path,
                response.status_code,
                int(remaining) if remaining is not None else None,
            )
        )


@dataclass
class Phase:
    name: str
    people: list[dict[str, str]]


def settings_for(url: str, db: Path, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "rocketchat_url": url,
        "rocketchat_user_id": BOT["user_id"],
        "rocketchat_auth_token": BOT["token"],
        "database_url": f"sqlite:///{db}",
        "api_token": API_TOKEN,
        "admin_token": ADMIN_TOKEN,
        "sqlite_synchronous": "NORMAL",
        "log_level": "WARNING",
        "contact_required_fields": "name,email",
    }
    values.update(overrides)
    return load_settings(**values)


def omni_calls(standin: RocketChatStandIn, since: int) -> Counter[str]:
    return Counter(
        f"{c.method} {c.path.removeprefix(OMNI)}"
        for c in standin.calls[since:]
        if c.path.startswith(OMNI)
    )


def calls_per_contact(strategy: str, n: int, tmp: Path) -> list[tuple[str, float, Counter[str]]]:
    standin = RocketChatStandIn(version="8.8", rate_limit=None)
    rows: list[tuple[str, float, Counter[str]]] = []
    with StandInServer(standin.app) as server:
        service = Service(
            settings_for(server.url, tmp / f"calls-{strategy}.db", rocketchat_contact_api=strategy)
        ).start()
        try:
            email_only = [{"name": f"Ana {i}", "email": f"ana{i}@example.com"} for i in range(n)]
            full = [
                {"name": f"Bo {i}", "email": f"bo{i}@example.com", "phone": f"+1415555{i:04d}"}
                for i in range(n)
            ]
            again = [dict(p, name=p["name"] + " B.") for p in full]
            new_phone = [dict(p, phone=f"+1650555{i:04d}") for i, p in enumerate(full)]
            # Known to Rocket.Chat (an agent typed them in), unknown to this service.
            outside = [{"name": f"Cy {i}", "email": f"cy{i}@example.com"} for i in range(n)]
            for person in outside:
                standin.contacts[f"cc{person['email']}"] = {
                    "_id": f"cc{person['email']}",
                    "name": person["name"],
                    "emails": [{"address": person["email"]}],
                    "phones": [],
                    "unknown": False,
                    "createdAt": "2025-01-01T00:00:00.000Z",
                }
            # Chatted on the widget: Rocket.Chat made an *unknown* contact (found with
            # contacts.search?unknown=true, 7.10+), so this is an update, not a new contact.
            chatted = [{"name": f"Di {i}", "email": f"di{i}@example.com"} for i in range(n)]
            for person in chatted:
                standin.seed_unknown_contact(f"Guest {person['email']}", email=person["email"])
            phases = [
                Phase("new person, e-mail only", email_only),
                Phase("new person, e-mail + phone", full),
                Phase("same person again", again),
                Phase("same person, new phone", new_phone),
            ]
            if strategy == "contact-center":
                phases.append(Phase("known to Rocket.Chat only", outside))
                phases.append(Phase("chatted before (unknown)", chatted))
            for phase in phases:
                before = len(standin.calls)
                for person in phase.people:
                    response = service.post_contact(**person)
                    assert response.status_code == 201, response.text
                counts = omni_calls(standin, before)
                rows.append((phase.name, sum(counts.values()) / len(phase.people), counts))
        finally:
            service.stop()
    return rows


def throughput(
    strategy: str, seconds: float, rate_limit: int, window_ms: int, tmp: Path
) -> dict[str, Any]:
    standin = TimedStandIn(version="8.8", rate_limit=rate_limit, window_ms=window_ms)
    window = window_ms / 1000
    backlog = int(seconds / window * rate_limit * 1.3) + 10
    with StandInServer(standin.app) as server:
        service = Service(
            settings_for(
                server.url,
                tmp / f"throughput-{strategy}.db",
                rocketchat_contact_api=strategy,
                rocketchat_user_id=AGENT["user_id"],
                rocketchat_auth_token=AGENT["token"],
                fast_path_budget=0,
            )
        ).start()
        try:
            for i in range(backlog):
                response = service.post_contact(name=f"Guest {i}", email=f"guest{i}@example.com")
                assert response.status_code == 202, response.text
            start = time.monotonic()
            time.sleep(seconds)
            end = time.monotonic()
        finally:
            service.stop()
    calls = [
        (t, f"{m} {p.removeprefix(OMNI)}", status, remaining)
        for t, m, p, status, remaining in standin.times
        if p.startswith(OMNI) and start <= t < end
    ]
    per_route: dict[str, dict[str, float]] = {}
    for route in sorted({route for _, route, _, _ in calls}):
        mine = [(t, remaining) for t, r, _, remaining in calls if r == route]
        # A window opens with the call the server answers with remaining = limit - 1: between
        # the first and the last opening, the limit allows rate_limit per window length.
        opened = [t for t, remaining in mine if remaining == rate_limit - 1]
        if len(opened) < 2:
            continue
        span = opened[-1] - opened[0]
        used = sum(1 for t, _ in mine if opened[0] <= t < opened[-1])
        allowed = rate_limit * span / window
        per_route[route] = {
            "windows": len(opened) - 1,
            "span": span,
            "calls": used,
            "allowed": allowed,
            "ratio": used / allowed,
            "total": len(mine),
        }
    return {
        "backlog": backlog,
        "seconds": end - start,
        "per_route": per_route,
        "status_429": sum(1 for _, _, _, status, _ in standin.times if status == 429),
        "registered": sum(
            1
            for _, r, status, _ in calls
            if r in ("POST contacts", "POST contact") and status == 200
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=10, help="people per phase (calls part)")
    parser.add_argument("--seconds", type=float, default=16.0, help="throughput run length")
    parser.add_argument("--rate-limit", type=int, default=10)
    parser.add_argument("--window-ms", type=int, default=2000)
    parser.add_argument(
        "--strategy",
        action="append",
        choices=["contact-center", "visitor"],
        help="throughput for these strategies (default: contact-center)",
    )
    args = parser.parse_args(argv)
    ok = True
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        print("Rocket.Chat calls per registered contact (omnichannel routes):")
        for strategy in ("visitor", "contact-center"):
            for name, per_contact, counts in calls_per_contact(strategy, args.contacts, tmp):
                detail = ", ".join(
                    f"{route} {n / args.contacts:g}" for route, n in sorted(counts.items())
                )
                print(f"  {strategy:<15} {name:<28} {per_contact:4.2f}   ({detail})")
        for strategy in args.strategy or ["contact-center"]:
            result = throughput(strategy, args.seconds, args.rate_limit, args.window_ms, tmp)
            print(
                f"\nThroughput, {strategy}: limit {args.rate_limit} calls / {args.window_ms} ms"
                f" per route, {result['seconds']:.1f} s, backlog {result['backlog']}"
            )
            busiest = 0.0
            for route, r in result["per_route"].items():
                busiest = max(busiest, r["ratio"])
                print(
                    f"  {route:<20} {r['calls']:4.0f} calls in {r['windows']:.0f} windows "
                    f"({r['span']:.2f} s), {r['allowed']:.1f} allowed = {r['ratio']:6.1%}"
                    f"   [{r['total']:.0f} calls in the run]"
                )
            print(
                f"  contacts/s {result['registered'] / result['seconds']:.2f}  "
                f"429s {result['status_429']}  busiest route {busiest:.1%}"
            )
            ok = ok and result["status_429"] == 0 and busiest >= 0.9
    print("\nOK" if ok else "\nBELOW TARGET (a 429, or < 90 % of the allowance)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
