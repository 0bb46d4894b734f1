"""``contact-adapter rotate-tokens``: move people registered under an unkeyed visitor
token (releases before keyed tokens, issue 12) to their keyed one, in Rocket.Chat and in
the ledger.

What Rocket.Chat does decides the steps (``registerContact`` in
``apps/meteor/app/livechat/server/lib/contacts/registerContact.ts``, behind
``POST /api/v1/omnichannel/contact``, the same from 6.x to 8.x and on the Contact Center
releases ≥ 7.1, which keep the route): a registration with a token no visitor holds
reuses the visitor holding its email and **overwrites that visitor's token**; without an
email it inserts a new visitor. (The Livechat widget's ``registerGuest``, ``POST
/api/v1/livechat/visitor``, keeps the old token when it matches by phone, so it cannot
move a token either.) The Contact Center API never carries a token: what holds one there
is a visitor made by the legacy route or by a chat. So, per person:

1. ``GET /api/v1/livechat/visitor/<old token>``: no visitor holds it (never registered
   through the legacy route, or moved by an earlier run that stopped before step 3) →
   only the ledger changes;
2. a visitor with an email → the legacy upsert with the keyed token and everything the
   visitor holds sent back unchanged (the route erases what a call leaves out); its answer
   must be the same visitor;
3. the ledger's rows move to the keyed token; the old one is looked up once more (a
   delivery in flight meanwhile would have put it back) and moved again if so.

A visitor without an email cannot be moved (Rocket.Chat would make a second one): that
person keeps the old token, which goes on working. A person with a delivery waiting or
in flight is left for a later run. Each run reports one line per person by their latest
delivery id (no personal data, no token) and is safe to repeat: moved people are no
longer unkeyed, and a half-done person is finished by step 1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from adapter.core.errors import RateLimited, RocketChatError
from adapter.core.keys import DeploymentKey
from adapter.ledger import tokens as sql
from adapter.ledger.store import LedgerStore
from adapter.rocketchat.client import RocketChatClient

__all__ = ["OUTCOMES", "Rotated", "rotate_tokens"]

T = TypeVar("T")

OUTCOMES = {
    "moved": "moved to its keyed token in Rocket.Chat and the ledger",
    "ledger-only": "no Rocket.Chat visitor held the old token: moved in the ledger",
    "kept-no-email": "kept: Rocket.Chat can move only a visitor it finds by email",
    "busy": "skipped: a delivery is waiting or in flight; run again later",
    "would-move": "would move in Rocket.Chat and the ledger (dry run)",
    "would-update-ledger": "would move in the ledger only (dry run)",
    "failed": "failed",
}


@dataclass(frozen=True)
class Rotated:
    """What happened to one person: ``reference`` is their latest delivery's id."""

    reference: str
    outcome: str
    detail: str = ""

    def line(self) -> str:
        text = OUTCOMES[self.outcome] + (f": {self.detail}" if self.detail else "")
        return f"{self.reference}  {self.outcome:<19} {text}"


async def rotate_tokens(
    store: LedgerStore,
    client: RocketChatClient,
    key: DeploymentKey,
    *,
    dry_run: bool = False,
    max_rate_limit_wait: float = 120.0,
) -> list[Rotated]:
    """Rotate every unkeyed person (see the module's docstring); one result each."""
    results: list[Rotated] = []
    for person in await store.read(sql.unkeyed_people):
        if person.busy:
            results.append(Rotated(person.latest_id, "busy"))
            continue
        new = key.visitor_token(
            email=person.fields.get("email"),
            phone=person.fields.get("phone"),
            person_key=f"{person.source}:{person.person_key}" if person.person_key else None,
        )
        try:
            results.append(
                await _rotate_one(store, client, person, new, dry_run, max_rate_limit_wait)
            )
        except RocketChatError as exc:
            # The error's class and status only: Rocket.Chat's text may quote the person.
            status = f" {exc.status}" if getattr(exc, "status", None) else ""
            detail = f"Rocket.Chat answered {type(exc).__name__}{status}"
            results.append(Rotated(person.latest_id, "failed", detail))
    return results


async def _rotate_one(
    store: LedgerStore,
    client: RocketChatClient,
    person: sql.UnkeyedPerson,
    new: str,
    dry_run: bool,
    max_wait: float,
) -> Rotated:
    visitor = await _patient(lambda: client.visitor_by_token(person.token), max_wait)
    if visitor is None:
        if dry_run:
            return Rotated(person.latest_id, "would-update-ledger")
        await store.write(lambda conn: sql.retoken(conn, person.token, new))
        return Rotated(person.latest_id, "ledger-only")
    if not any(e.get("address") for e in visitor.get("visitorEmails") or []):
        return Rotated(person.latest_id, "kept-no-email")
    if dry_run:
        return Rotated(person.latest_id, "would-move")
    for _ in range(2):
        moved_id = await _patient(_rekey(client, visitor, new), max_wait)
        if moved_id != visitor.get("_id"):
            # Another visitor holds the same email: it took the keyed token instead.
            return Rotated(
                person.latest_id, "failed", "Rocket.Chat moved another visitor with this email"
            )
        await store.write(lambda conn: sql.retoken(conn, person.token, new))
        again = await _patient(lambda: client.visitor_by_token(person.token), max_wait)
        if again is None:
            return Rotated(person.latest_id, "moved")
        visitor = again  # a delivery in flight put the old token back: once more
    return Rotated(person.latest_id, "failed", "the old token came back twice")


def _rekey(
    client: RocketChatClient, visitor: dict[str, Any], new: str
) -> Callable[[], Awaitable[str | None]]:
    return lambda: client.rekey_visitor(visitor, new)


async def _patient(call: Callable[[], Awaitable[T]], max_wait: float) -> T:
    """``call()``, waiting out Rocket.Chat's rate limit (up to ``max_wait`` s in all)."""
    deadline = time.time() + max_wait
    while True:
        try:
            return await call()
        except RateLimited as exc:
            wait = exc.reset_at - time.time()
            if time.time() + wait > deadline:
                raise
            await asyncio.sleep(max(wait, 0.05))  # noqa: sleep-ok - Rocket.Chat's window
