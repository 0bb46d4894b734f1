"""Discord: register a guest with the ``/contact`` application command or its modal
(issue #16 item 3; request formats in ``contracts/chat-platforms.md`` §3).

Route: ``POST /discord/interactions`` (the app's Interactions Endpoint URL). Each request
is size-capped (``DISCORD_MAX_BODY_BYTES``, 413), Ed25519-verified with
``DISCORD_PUBLIC_KEY`` over timestamp + body and refused when its timestamp is more than
5 minutes off (401, which Discord requires), then parsed (400 naming the part). Without
``DISCORD_PUBLIC_KEY`` the route answers 503 naming it.

Answers are ephemeral (only the person who ran the command sees them) and go out within
3 seconds; an outcome that comes later replaces the first answer through the interaction
token (15 minutes; :mod:`handlers.discord.service`). ``contact-adapter discord
register-commands`` registers the command (:meth:`DiscordChannel.register_commands`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from adapter.channels import (
    BodyTooLarge,
    ChannelContext,
    ChannelStatus,
    DeliveryRecord,
    Settings,
    error_response,
    read_body,
)
from handlers._chatapps import record_text
from handlers.discord import messages
from handlers.discord.config import DiscordConfig
from handlers.discord.verify import MalformedInteraction, check_signature, parse_interaction

__all__ = ["DiscordChannel", "channel"]

log = structlog.get_logger("handlers.discord")

_STATE_KEY = "discord"


class DiscordChannel:
    """The Interactions endpoint, mounted in the service's Starlette app."""

    name = "discord"
    title = "Discord"

    def check(self, settings: Settings) -> None:
        """Raise SettingsError naming the variable when a DISCORD_* setting is malformed."""
        DiscordConfig.from_settings(settings)

    def status(self, settings: Settings) -> ChannelStatus:
        config = DiscordConfig.from_settings(settings)
        on = config.public_key is not None
        return ChannelStatus("discord", on, "/discord/interactions", None if on else config.problem)

    def routes(self, context: ChannelContext) -> Sequence[BaseRoute]:
        from handlers.discord.service import DiscordService

        config = DiscordConfig.from_settings(context.settings)
        service: DiscordService | None = None
        public_key: Ed25519PublicKey | None = None
        if config.public_key is not None:
            public_key = Ed25519PublicKey.from_public_bytes(config.public_key)
            service = DiscordService(context, config)
            context.state[_STATE_KEY] = service

        async def interactions(request: Request) -> Response:
            received_at = time.monotonic()
            if service is None or public_key is None:
                return error_response(503, config.problem or "the Discord channel is off")
            try:
                body = await read_body(request, config.max_body_bytes)
            except BodyTooLarge as exc:
                return error_response(413, f"{exc} (DISCORD_MAX_BODY_BYTES)")
            refusal = check_signature(public_key, request.headers, body, now=time.time())
            if refusal is not None:
                log.warning("discord_request_refused", status=401, reason=refusal)
                return error_response(401, refusal)
            try:
                interaction = parse_interaction(body)
            except MalformedInteraction as exc:
                log.warning("discord_request_refused", status=400, reason=str(exc))
                return error_response(
                    400,
                    f"malformed Discord interaction: {exc}; nothing was registered. Discord "
                    "never sends this: check what forwards requests to /discord/interactions",
                )
            if config.application_id and interaction.application_id != config.application_id:
                return error_response(
                    400,
                    "this interaction is for another application: check DISCORD_APPLICATION_ID "
                    "and DISCORD_PUBLIC_KEY belong to the same app",
                )
            try:
                answer = await service.answer(interaction, received_at)
            except Exception:
                log.exception("discord_interaction_failed", type=interaction.type)
                answer = messages.message(
                    "⚠ Something went wrong on our side. Run `/contact` again in a moment "
                    "(a repeat is not registered twice)."
                )
            return JSONResponse(answer)

        return [Route("/discord/interactions", interactions, methods=["POST"])]

    async def shutdown(self, context: ChannelContext) -> None:
        service = context.state.get(_STATE_KEY)
        if service is not None:
            await service.shutdown()

    async def notify(self, context: ChannelContext, record: DeliveryRecord) -> None:
        """A delivery finished after Discord got its answer: replace that answer."""
        from handlers.discord.service import DiscordService

        callback = record.callback
        if not callback or callback.get("v") != 1:
            return
        service: Any = context.state.get(_STATE_KEY)
        if service is None:  # the worker process: no routes, just settings
            service = context.state.get("discord_worker")
            if service is None:
                service = DiscordService(context, DiscordConfig.from_settings(context.settings))
                context.state["discord_worker"] = service
        url = context.queue.client.contact_url(record.contact_id) if record.contact_id else None
        text = record_text(record, url, bold=messages.bold, link=messages.link)
        route = await service.edit(callback, text)
        log.info(
            "discord_outcome_reported",
            delivery_id=record.id,
            status=record.status,
            route=route,
            after=round(time.time() - record.created_at, 1),
        )

    def register_commands(self, settings: Settings, *, guild_id: str | None = None) -> str:
        """Register ``/contact`` with Discord (what the CLI runs); a line saying where."""
        import asyncio

        from handlers.discord.api import register_commands

        config = DiscordConfig.from_settings(settings)
        commands = asyncio.run(register_commands(config, messages.COMMANDS, guild_id=guild_id))
        names = ", ".join(f"/{c.get('name')} ({c.get('id')})" for c in commands)
        where = (
            f"guild {guild_id or config.guild_id}" if guild_id or config.guild_id else "globally"
        )
        return (
            f"registered {names or 'no commands'} {where} for application {config.application_id}"
        )


channel = DiscordChannel()
