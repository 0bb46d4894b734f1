"""Answering interactions: PING, ``/contact``, the modal and its "Fix the details" button.

Every answer goes out within Discord's 3 seconds (:data:`ANSWER_DEADLINE` after arrival):
a contact whose registration takes longer is answered "Registering…" and the outcome
replaces that answer later (PATCH ``@original``, within the token's 15 minutes), from
this process (:meth:`DiscordService.report_late`) or from whichever process records the
delivery's final outcome (the channel's ``notify``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import structlog

from adapter.channels import Background, ChannelContext, Outcome, Submission, extract_contact
from handlers._chatapps import check_fields, check_text, outcome_text, submit_within
from handlers.discord import messages
from handlers.discord.api import TOKEN_MARGIN, TOKEN_TTL, DiscordApi
from handlers.discord.config import DiscordConfig
from handlers.discord.verify import (
    APPLICATION_COMMAND,
    MESSAGE_COMPONENT,
    MODAL_SUBMIT,
    PING,
    Interaction,
)

__all__ = ["ANSWER_DEADLINE", "SOURCE", "DiscordService", "make_callback"]

log = structlog.get_logger("handlers.discord")

SOURCE = "discord"
ANSWER_BUDGET = 1.5  # longest fast-path wait inside Discord's 3 s
ANSWER_DEADLINE = 2.5  # answer by then after the request arrived, whatever the database does
CALLBACK_VERSION = 1


def make_callback(interaction: Interaction, issued_at: float) -> dict[str, Any]:
    """What a delivery carries so its outcome can replace the first answer later."""
    return {
        "v": CALLBACK_VERSION,
        "application_id": interaction.application_id,
        "token": interaction.token,
        "issued_at": issued_at,
        "user_id": interaction.user_id,
    }


def token_usable(callback: Mapping[str, Any], *, now: float) -> bool:
    """True while the interaction token is inside its 15 minutes."""
    try:
        issued = float(callback.get("issued_at") or 0)
    except (TypeError, ValueError):
        return False
    return bool(callback.get("token")) and now - issued < TOKEN_TTL - TOKEN_MARGIN


class DiscordService:
    """One service's Discord interactions endpoint."""

    def __init__(self, context: ChannelContext, config: DiscordConfig) -> None:
        self.context = context
        self.config = config
        self.settings = context.settings
        self.queue = context.queue
        self.budget = min(self.settings.fast_path_budget, ANSWER_BUDGET)
        self.api = DiscordApi(config)
        self.tasks = Background()

    async def shutdown(self) -> None:
        await self.tasks.drain()
        await self.api.aclose()

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(self.settings.contact_required_fields)

    def _hint(self) -> str:
        region = self.settings.default_phone_region
        if region:
            return f"Numbers without + are read as {region} numbers"
        return "Start with + and the country code, e.g. +1 415 555 2671"

    def _modal(self, values: Mapping[str, str | None], errors: Mapping[str, str]) -> dict[str, Any]:
        return messages.modal(values, errors, required=self.required, hint=self._hint())

    async def answer(self, interaction: Interaction, received_at: float) -> dict[str, Any]:
        """The response to an authentic interaction (JSON for the HTTP answer)."""
        deadline = received_at + ANSWER_DEADLINE
        if interaction.type == PING:
            return {"type": messages.PONG}
        if interaction.type == APPLICATION_COMMAND:
            return await self._command(interaction, deadline)
        if interaction.type == MODAL_SUBMIT and interaction.custom_id == messages.MODAL_ID:
            values = messages.modal_values(interaction.data)
            errors = check_fields(values, self.settings)
            if errors:
                return messages.errors_message(errors, values)
            return await self._register(interaction, values, deadline)
        if interaction.type == MESSAGE_COMPONENT and interaction.custom_id.startswith(
            messages.FIX_PREFIX
        ):
            values = dict(messages.read_fix(interaction.custom_id))
            return self._modal(values, check_fields(values, self.settings) if values else {})
        return messages.message(
            "This app only registers contacts with `/contact`: that interaction is not one of "
            "its own. Run `/contact` again."
        )

    async def _command(self, interaction: Interaction, deadline: float) -> dict[str, Any]:
        if interaction.data.get("name") != messages.COMMAND:
            return messages.message(
                "This app registers contacts with `/contact` only: run `contact-adapter "
                "discord register-commands` to refresh its commands."
            )
        options = messages.option_values(interaction.data)
        if not options:
            return self._modal({}, {})
        text = options.pop("text", None)
        extraction = extract_contact(text, self.settings.default_phone_region) if text else None
        values: dict[str, str | None] = dict(extraction.fields()) if extraction else {}
        values.update(options)
        if extraction is not None and not options:
            errors = check_text(extraction, self.settings)
        else:
            errors = check_fields(values, self.settings)
        if errors:
            return self._modal(values, errors)
        return await self._register(interaction, values, deadline)

    async def _register(
        self, interaction: Interaction, values: Mapping[str, str | None], deadline: float
    ) -> dict[str, Any]:
        callback = make_callback(interaction, time.time())
        submission = Submission(
            source=SOURCE,
            fields=dict(values),
            event_id=f"interaction:{interaction.id}",
            callback=callback,
            actor=interaction.user_id,
            team=interaction.guild_id,
        )
        name = values.get("name")

        async def late(outcome: Outcome | None) -> None:
            await self.report_late(outcome, callback, name)

        outcome = await submit_within(
            self.queue,
            submission,
            deadline=deadline,
            budget=self.budget,
            tasks=self.tasks,
            on_late=late,
        )
        if outcome is None:  # still storing at the deadline: it reports when done
            return messages.message(outcome_text(status="pending", name=name, bold=messages.bold))
        if outcome.status == "invalid":
            return messages.errors_message(dict(outcome.errors), values)
        log.info(
            "discord_contact_accepted",
            delivery_id=outcome.delivery_id,
            status=outcome.status,
            duplicate=outcome.duplicate,
        )
        return messages.message(self._text(outcome, name))

    def _text(self, outcome: Outcome, name: str | None) -> str:
        return outcome_text(
            status=outcome.status,
            name=outcome.contact.name if outcome.contact else name,
            bold=messages.bold,
            contact_url=None if outcome.duplicate else outcome.contact_url,
            last_error=outcome.last_error,
            duplicate=outcome.duplicate,
            link=messages.link,
        )

    async def report_late(
        self, outcome: Outcome | None, callback: Mapping[str, Any], name: str | None
    ) -> None:
        """The outcome of an accept that outlived the answer (pending ones report later)."""
        if outcome is None:
            text = (
                f"⚠ {messages.bold(name or 'The contact')} could not be stored: something "
                "went wrong on our side. Run `/contact` again."
            )
        elif outcome.status == "invalid":
            lines = "\n".join(
                f"• **{k.capitalize()}**: {messages.escape(v)}" for k, v in outcome.errors.items()
            )
            text = f"Not registered:\n{lines}"
        elif outcome.status in ("delivered", "failed") or outcome.duplicate:
            text = self._text(outcome, name)
        else:
            return  # pending: the delivery reports its outcome (notify)
        await self.edit(callback, text)

    async def edit(self, callback: Mapping[str, Any], text: str) -> str:
        """Replace the interaction's first answer with ``text``; the route used."""
        if not token_usable(callback, now=time.time()):
            log.warning("discord_report_undelivered", reason="interaction token expired")
            return "none"
        ok = await self.api.edit_original(
            str(callback["application_id"]), str(callback["token"]), messages.edit(text)
        )
        return "edit" if ok else "none"
