"""What the chat-app channels (Discord, Google Chat) share: answering within the
platform's deadline, the outcome's wording, and the tasks that run after the answer.

A chat platform gives an app a few seconds to answer (Discord 3 s, Google Chat 30 s);
Rocket.Chat may take longer. :func:`submit_within` accepts the contact durably and gives
the fast path what is left of the budget; when the accept itself outlives the deadline it
goes on in the background and ``on_late`` reports its outcome through the platform's
follow-up channel. Not a channel itself (the leading underscore keeps discovery away).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from adapter.channels import (
    ContactError,
    DeliveryRecord,
    Extraction,
    Outcome,
    Settings,
    SettingsError,
    Submission,
    validate_contact,
)

__all__ = [
    "LABELS",
    "Tasks",
    "bytes_setting",
    "check_fields",
    "check_text",
    "outcome_text",
    "record_text",
    "submit_within",
]

log = structlog.get_logger("handlers.chatapps")

LABELS = {"name": "Name", "email": "Email", "phone": "Phone"}


class Tasks:
    """Work started after the answer, referenced until done, awaited at shutdown."""

    def __init__(self) -> None:
        self.running: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return task

    async def drain(self, timeout: float = 5.0) -> None:
        pending = [t for t in self.running if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for task in pending:
            task.cancel()


async def submit_within(
    queue: Any,
    submission: Submission,
    *,
    deadline: float,
    budget: float,
    tasks: Tasks,
    on_late: Callable[[Outcome | None], Awaitable[None]],
) -> Outcome | None:
    """Accept (and maybe register) ``submission``; None when the answer cannot wait longer.

    ``deadline`` is a ``time.monotonic()`` instant by which the platform must have its
    answer; the fast path gets at most ``budget`` seconds of it. When the accept has not
    finished by then it goes on, and ``on_late(outcome)`` runs once it has (``None`` when
    it raised): only a final or invalid outcome is worth telling there, a pending one is
    told by the delivery's own notify.
    """
    remaining = deadline - time.monotonic()
    wait = max(0.0, min(budget, remaining - 0.5))
    task = asyncio.ensure_future(queue.submit(submission, wait=wait))
    try:
        result: Outcome = await asyncio.wait_for(asyncio.shield(task), timeout=max(0.05, remaining))
        return result
    except TimeoutError:
        log.warning("chat_answer_deadline", source=submission.source, waited=round(remaining, 2))

    async def late() -> None:
        try:
            outcome: Outcome | None = await task
        except Exception:
            log.exception("chat_late_accept_failed", source=submission.source)
            outcome = None
        await on_late(outcome)

    tasks.spawn(late())
    return None


def check_text(extraction: Extraction, settings: Settings) -> dict[str, str]:
    """Every problem of free text at once (pure and fast: no database round trip)."""
    _, errors = extraction.check(
        required=settings.contact_required_fields,
        default_region=settings.default_phone_region,
    )
    return errors


def check_fields(fields: Mapping[str, str | None], settings: Settings) -> dict[str, str]:
    """Every problem of a form's fields at once."""
    try:
        validate_contact(
            fields,
            required=settings.contact_required_fields,
            default_region=settings.default_phone_region,
        )
    except ContactError as exc:
        return dict(exc.errors)
    return {}


def outcome_text(
    *,
    status: str,
    name: str | None,
    bold: Callable[[str], str],
    contact_url: str | None = None,
    last_error: str | None = None,
    duplicate: bool = False,
    final: bool = False,
    link: Callable[[str, str], str] | None = None,
) -> str:
    """What the person who asked reads about an accepted contact (``final``: a later report).

    ``bold`` and ``link`` render the platform's markup; user text must be escaped by
    ``bold`` (the name is the only user text here).
    """
    who = bold(name) if name else "The contact"
    where = f": {link(contact_url, 'open the contact')}" if contact_url and link else ""
    if status == "delivered":
        if duplicate:
            return f"✅ {who} was already registered (this request was received before){where}"
        return f"✅ {who} is now a contact in Rocket.Chat{where}"
    if status == "failed":
        return f"❌ {who} could not be registered: {last_error or 'Rocket.Chat did not accept it'}"
    if status == "rejected":
        return f"❌ {who} was not registered: the details are not valid"
    if final:
        return f"⏳ {who} is still waiting for Rocket.Chat ({status}); it will be retried."
    if duplicate:
        return f"⏳ {who} was already received and is being registered; the outcome follows here."
    return f"⏳ Registering {who}… Rocket.Chat has not answered yet; the outcome follows here."


def record_text(
    record: DeliveryRecord,
    contact_url: str | None,
    *,
    bold: Callable[[str], str],
    link: Callable[[str, str], str] | None = None,
) -> str:
    """:func:`outcome_text` for a delivery's final outcome (its notify)."""
    name = (record.fields or {}).get("name")
    return outcome_text(
        status=record.status,
        name=str(name) if name else None,
        bold=bold,
        contact_url=contact_url,
        last_error=record.last_error,
        final=True,
        link=link,
    )


def bytes_setting(settings: Settings, variable: str, default: int) -> int:
    """A body cap in bytes (at least 1024); SettingsError naming ``variable`` otherwise."""
    raw = settings.lookup(variable)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value < 1024:
        raise SettingsError(
            f"setting {variable} (got {raw!r}): expected a number of bytes, at least 1024 "
            f"(default {default})"
        )
    return value
