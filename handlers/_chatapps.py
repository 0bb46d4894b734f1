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
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from adapter.channels import (
    Background,
    ContactError,
    DeliveryRecord,
    Extraction,
    Outcome,
    Settings,
    SettingsError,
    Submission,
    submit_by,
    validate_contact,
)
from adapter.channels import outcome_text as chat_outcome_text

__all__ = [
    "LABELS",
    "bytes_setting",
    "check_fields",
    "check_text",
    "outcome_text",
    "record_text",
    "submit_within",
]

log = structlog.get_logger("handlers.chatapps")

LABELS = {"name": "Name", "email": "Email", "phone": "Phone"}


async def submit_within(
    queue: Any,
    submission: Submission,
    *,
    deadline: float,
    budget: float,
    tasks: Background,
    on_late: Callable[[Outcome | None], Awaitable[None]],
) -> Outcome | None:
    """:func:`adapter.channels.submit_by`, with ``on_late(outcome)`` run once a late
    accept has finished (``None`` when it raised): only a final or invalid outcome is worth
    telling there, a pending one is told by the delivery's own notify."""

    async def late(future: asyncio.Future[Outcome]) -> None:
        try:
            outcome: Outcome | None = await future
        except Exception:
            log.exception("chat_late_accept_failed", source=submission.source)
            outcome = None
        await on_late(outcome)

    return await submit_by(
        queue, submission, deadline=deadline, wait=budget, background=tasks, late=late
    )


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
    """:func:`adapter.channels.outcome_text` in the platform's markup (``bold`` escapes
    the name; without ``link`` the contact's URL is left out)."""
    return chat_outcome_text(
        status=status,
        name=name,
        contact_url=contact_url if link is not None else None,
        last_error=last_error,
        duplicate=duplicate,
        final=final,
        later="the outcome follows here",
        bold=bold,
        link=link or (lambda url, text: text),
        escape=lambda text: text,
    )


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
