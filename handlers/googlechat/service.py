"""Answering Google Chat events: ``/contact`` (or a mention), the "Open form" button and
the dialog. Every answer is private to the person who asked and goes out well within
Chat's 30 seconds; an outcome that comes later is posted as a private message through the
Chat API (:mod:`handlers.googlechat.sender`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

import httpx
import structlog

from adapter.channels import Background, ChannelContext, Outcome, Submission, extract_contact
from handlers._chatapps import (
    LABELS,
    check_fields,
    check_text,
    outcome_text,
    submit_within,
)
from handlers.googlechat import cards
from handlers.googlechat.config import GoogleChatConfig
from handlers.googlechat.sender import ChatSender
from handlers.googlechat.tokens import GoogleKeys

__all__ = ["ANSWER_DEADLINE", "SOURCE", "GoogleChatService"]

log = structlog.get_logger("handlers.googlechat")

SOURCE = "googlechat"
ANSWER_DEADLINE = 10.0  # answer by then (Chat waits 30 s), whatever the database does
CALLBACK_VERSION = 1
USAGE = "Type `/contact Chris Doe chris@example.com +1 415 555 2671`, or open the form:"


class GoogleChatService:
    """One service's Google Chat app endpoint."""

    def __init__(self, context: ChannelContext, config: GoogleChatConfig) -> None:
        self.context = context
        self.config = config
        self.settings = context.settings
        self.queue = context.queue
        self.budget = self.settings.fast_path_budget
        self.http = httpx.AsyncClient(timeout=10)
        self.keys = GoogleKeys(config.certs_url, self.http)
        self.sender = ChatSender(config, self.http)
        self.tasks = Background()

    async def shutdown(self) -> None:
        await self.tasks.drain()
        await self.http.aclose()

    def _dialog(
        self, values: Mapping[str, str | None], errors: Mapping[str, str]
    ) -> dict[str, Any]:
        region = self.settings.default_phone_region
        hint = (
            f"Numbers without + are read as {region} numbers"
            if region
            else "Start with + and the country code, e.g. +1 415 555 2671"
        )
        return cards.dialog(values, errors, phone_hint=hint)

    async def answer(self, event: cards.ChatEvent, received_at: float) -> dict[str, Any]:
        """The synchronous answer to a verified event."""
        deadline = received_at + ANSWER_DEADLINE
        if event.type in ("MESSAGE", "APP_COMMAND"):
            return await self._message(event, deadline)
        if event.type == "CARD_CLICKED":
            if event.dialog_event == "CANCEL_DIALOG":
                return cards.close_dialog()
            if event.function == cards.OPEN_FUNCTION:
                values = dict(event.parameters)
                return self._dialog(values, check_fields(values, self.settings) if values else {})
            if event.function == cards.SUBMIT_FUNCTION:
                return await self._submit_dialog(event, deadline)
            return cards.private(event.user, "That button is not one of this app's any more.")
        if event.type == "ADDED_TO_SPACE":
            return {
                "text": "Thanks for adding me! I register guests as Rocket.Chat contacts. "
                + USAGE.split(",")[0]
                + "."
            }
        return {}

    async def _message(self, event: cards.ChatEvent, deadline: float) -> dict[str, Any]:
        if (
            self.config.command_id
            and event.command_id
            and event.command_id != self.config.command_id
        ):
            return cards.private(
                event.user,
                f"This app registers contacts with its command {self.config.command_id}; "
                "this one is not set up here (GOOGLE_CHAT_COMMAND_ID).",
            )
        text = event.text
        if event.dialog_event == "REQUEST_DIALOG":
            extraction = extract_contact(text, self.settings.default_phone_region) if text else None
            values = dict(extraction.fields()) if extraction else {}
            errors = check_text(extraction, self.settings) if extraction else {}
            return self._dialog(values, errors)
        if not text or text.lower() == "help":
            return cards.private(event.user, USAGE, button={})
        extraction = extract_contact(text, self.settings.default_phone_region)
        errors = check_text(extraction, self.settings)
        if errors:
            lines = "\n".join(f"• *{LABELS.get(k, k)}*: {v}" for k, v in errors.items())
            return cards.private(
                event.user, f"Not registered yet:\n{lines}", button=extraction.fields()
            )
        event_id = f"message:{event.message}" if event.message else None
        outcome = await self._register(event, extraction.fields(), event_id, deadline)
        if isinstance(outcome, dict):
            return outcome
        return cards.private(event.user, self._text(outcome, extraction.name))

    async def _submit_dialog(self, event: cards.ChatEvent, deadline: float) -> dict[str, Any]:
        values = event.inputs
        errors = check_fields(values, self.settings)
        if errors:
            return self._dialog(values, errors)
        # A dialog's submissions share the message they came from: the event's time and
        # user make a retry of this one submission the same event, and nothing else.
        digest = hashlib.sha256(
            "\x1f".join([event.message or "", event.user or "", event.event_time]).encode()
        ).hexdigest()[:40]
        outcome = await self._register(event, values, f"dialog:{digest}", deadline)
        if isinstance(outcome, dict):
            return outcome
        return cards.close_dialog(self._text(outcome, values.get("name"), plain=True))

    async def _register(
        self,
        event: cards.ChatEvent,
        values: Mapping[str, str | None],
        event_id: str | None,
        deadline: float,
    ) -> Outcome | dict[str, Any]:
        """The outcome, or the answer to give when there is none to tell yet."""
        callback = {
            "v": CALLBACK_VERSION,
            "space": event.space,
            "thread": event.thread,
            "user": event.user,
            "issued_at": time.time(),
        }
        name = values.get("name")
        submission = Submission(
            source=SOURCE,
            fields=dict(values),
            event_id=event_id,
            callback=callback,
            actor=event.user,
            team=event.space,
        )

        async def late(outcome: Outcome | None) -> None:
            if outcome is None or outcome.status not in ("pending", "delivering"):
                text = (
                    self._text(outcome, name)
                    if outcome is not None
                    else f"⚠ {cards.bold(name or 'The contact')} could not be stored: send it again."
                )
                await self.sender.send(callback, text)

        outcome = await submit_within(
            self.queue,
            submission,
            deadline=deadline,
            budget=self.budget,
            tasks=self.tasks,
            on_late=late,
        )
        if outcome is None:
            text = self._pending_text(name)
            if event.dialog_event == "SUBMIT_DIALOG":
                return cards.close_dialog(text.replace("*", ""))
            return cards.private(event.user, text)
        log.info(
            "googlechat_contact_accepted",
            delivery_id=outcome.delivery_id,
            status=outcome.status,
            duplicate=outcome.duplicate,
        )
        if outcome.status == "invalid":
            if event.dialog_event == "SUBMIT_DIALOG":
                return self._dialog(values, outcome.errors)
            return cards.private(
                event.user, "Not registered: " + "; ".join(outcome.errors.values())
            )
        return outcome

    def _pending_text(self, name: str | None) -> str:
        if self.sender.enabled:
            return outcome_text(status="pending", name=name, bold=cards.bold)
        who = cards.bold(name) if name else "The contact"
        return f"⏳ Registering {who}… Rocket.Chat has not answered yet; it is registered as soon as it does."

    def _text(self, outcome: Outcome, name: str | None, *, plain: bool = False) -> str:
        if outcome.status in ("pending", "delivering") and not outcome.duplicate:
            text = self._pending_text(outcome.contact.name if outcome.contact else name)
            return text.replace("*", "") if plain else text
        return outcome_text(
            status=outcome.status,
            name=outcome.contact.name if outcome.contact else name,
            bold=(lambda s: s.replace("*", "")) if plain else cards.bold,
            contact_url=None if outcome.duplicate or plain else outcome.contact_url,
            last_error=outcome.last_error,
            duplicate=outcome.duplicate,
            link=cards.link,
        )
