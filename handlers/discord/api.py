"""Calls to Discord's HTTP API: editing an interaction's first answer (the outcome, within
the token's 15 minutes) and registering ``/contact`` (``register-commands``).

The interaction webhooks need no bot token (contract §3.5); registering needs
``DISCORD_BOT_TOKEN``. Every request carries ``User-Agent: DiscordBot (url, version)``
as Discord asks. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import structlog

from adapter.channels import SettingsError
from handlers.discord.config import DiscordConfig

__all__ = ["TOKEN_TTL", "DiscordApi", "RegisterError", "register_commands"]

log = structlog.get_logger("handlers.discord")

TOKEN_TTL = 15 * 60  # an interaction token's life, from the interaction's creation
TOKEN_MARGIN = 30  # stop using it a little early: its clock started at Discord
UNKNOWN_MESSAGE = 10008
USER_AGENT = "DiscordBot (https://github.com/omnichannel-contact-adapter, 1.0)"


class RegisterError(RuntimeError):
    """Discord refused the commands; the message says why and what to do."""


class DiscordApi:
    """One pooled client for the channel's calls to Discord."""

    def __init__(self, config: DiscordConfig, *, timeout: float = 10.0) -> None:
        self.config = config
        self.client = httpx.AsyncClient(
            base_url=config.api_url + "/",
            timeout=timeout,
            headers={"User-Agent": USER_AGENT},
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def edit_original(self, application_id: str, token: str, body: Mapping[str, Any]) -> bool:
        """PATCH ``/webhooks/{app}/{token}/messages/@original``; True when Discord took it."""
        path = f"webhooks/{application_id}/{token}/messages/@original"
        for attempt in range(3):
            try:
                response = await self.client.patch(path, json=dict(body))
            except httpx.HTTPError as exc:
                log.warning("discord_edit_failed", error=type(exc).__name__)
                return False
            if response.is_success:
                return True
            if attempt < 2 and response.status_code == 429:
                await asyncio.sleep(min(_retry_after(response), 5.0))
                continue
            if attempt < 2 and _code(response) == UNKNOWN_MESSAGE:
                # An outcome quicker than Discord's handling of our first answer: the
                # message to edit is not there yet. It is a moment later.
                await asyncio.sleep(1.0)
                continue
            log.warning(
                "discord_edit_refused", status=response.status_code, body=response.text[:100]
            )
            return False
        return False


def _code(response: httpx.Response) -> int | None:
    """Discord's JSON error code (10008 Unknown Message, …), if the answer has one."""
    try:
        code = response.json().get("code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, int) else None


def _retry_after(response: httpx.Response) -> float:
    try:
        return float(response.json().get("retry_after") or response.headers.get("retry-after") or 1)
    except (ValueError, AttributeError):
        return 1.0


async def register_commands(
    config: DiscordConfig, commands: Sequence[Mapping[str, Any]], *, guild_id: str | None = None
) -> list[dict[str, Any]]:
    """Bulk-overwrite the application's commands (global, or one guild's: instant)."""
    if not config.application_id:
        raise SettingsError(
            "setting DISCORD_APPLICATION_ID is missing: copy General Information > "
            "Application ID from the Discord Developer Portal"
        )
    if not config.bot_token:
        raise SettingsError(
            "setting DISCORD_BOT_TOKEN is missing: Bot > Reset Token in the Discord "
            "Developer Portal (needed to register commands only)"
        )
    guild = guild_id or config.guild_id
    path = f"applications/{config.application_id}"
    path += f"/guilds/{guild}/commands" if guild else "/commands"
    async with httpx.AsyncClient(
        base_url=config.api_url + "/",
        timeout=15,
        headers={"User-Agent": USER_AGENT, "Authorization": f"Bot {config.bot_token}"},
    ) as client:
        for attempt in range(3):
            try:
                response = await client.put(path, json=list(commands))
            except httpx.HTTPError as exc:
                raise RegisterError(
                    f"could not reach Discord at {config.api_url} ({type(exc).__name__}): "
                    "check the network and DISCORD_API_URL"
                ) from None
            if response.status_code == 429 and attempt < 2:
                await asyncio.sleep(min(_retry_after(response), 10.0))
                continue
            break
    if response.is_success:
        answer = response.json()
        return answer if isinstance(answer, list) else []
    try:
        detail = str(response.json().get("message") or "")
    except ValueError:
        detail = response.text[:200]
    hints = {
        401: "DISCORD_BOT_TOKEN was refused: reset it under Bot > Reset Token",
        403: (
            "the bot may not manage this guild's commands: invite it with the "
            "applications.commands scope (OAuth2 > URL Generator)"
        ),
        404: "unknown application or guild: check DISCORD_APPLICATION_ID and DISCORD_GUILD_ID",
    }
    hint = hints.get(response.status_code, "see the message above")
    raise RegisterError(f"Discord answered {response.status_code} ({detail}): {hint}")
