"""Telling the Slack user what happened, after the 3-second answer.

A command's ``response_url`` takes 5 posts within 30 minutes (contract §4); later, or
when it refuses, the bot sends a DM (``chat.postMessage`` to the user id). This runs in
the web process and in the separate ``contact-adapter worker``, so it needs nothing but
the delivery's ``callback`` (what the channel stored with it) and the settings.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from handlers.slack.config import SlackConfig

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "RESPONSE_URL_POSTS",
    "RESPONSE_URL_TTL",
    "SlackSender",
    "make_callback",
    "response_url_usable",
]

log = structlog.get_logger("handlers.slack")

RESPONSE_URL_TTL = 30 * 60  # seconds a response_url accepts posts
RESPONSE_URL_POSTS = 5  # posts a response_url accepts
RESPONSE_URL_MARGIN = 60  # stop using it a minute early: its clock started at Slack
CALLBACK_VERSION = 1


def make_callback(
    *,
    response_url: str | None,
    user_id: str | None,
    team_id: str | None,
    enterprise_id: str | None,
    enterprise_install: bool,
    channel_id: str | None,
    issued_at: float,
    posts: int = 0,
    replace: bool = False,
) -> dict[str, Any]:
    """What a delivery carries so a later outcome reaches the person who asked."""
    return {
        "v": CALLBACK_VERSION,
        "response_url": response_url,
        "issued_at": issued_at,
        "posts": posts,  # posts to response_url made before the outcome report
        "replace": replace,  # the URL belongs to our own message: replace it
        "user_id": user_id,
        "team_id": team_id,
        "enterprise_id": enterprise_id,
        "enterprise_install": enterprise_install,
        "channel_id": channel_id,
    }


def response_url_usable(callback: Mapping[str, Any], *, now: float, extra_posts: int = 0) -> bool:
    """True while the callback's response_url is within its 30 minutes and 5 posts."""
    if not callback.get("response_url"):
        return False
    try:
        issued = float(callback.get("issued_at") or 0)
        posts = int(callback.get("posts") or 0) + extra_posts
    except (TypeError, ValueError):
        return False
    return now - issued < RESPONSE_URL_TTL - RESPONSE_URL_MARGIN and posts < RESPONSE_URL_POSTS


class SlackSender:
    """Posts to response_url or DMs the user, with the right workspace's bot token."""

    def __init__(self, config: SlackConfig, engine: AsyncEngine | None) -> None:
        self.config = config
        self.engine = engine
        self._store: Any = None

    def installation_store(self) -> Any:
        """The SQLAlchemy installation store (OAuth mode), on the service's own database."""
        if self._store is None and self.config.oauth and self.engine is not None:
            from handlers.slack.oauth import InstallationStore

            assert self.config.client_id is not None
            self._store = InstallationStore(client_id=self.config.client_id, engine=self.engine)
        return self._store

    async def token_for(self, callback: Mapping[str, Any]) -> str | None:
        store = self.installation_store()
        if store is not None:
            try:
                bot = await store.async_find_bot(
                    enterprise_id=callback.get("enterprise_id"),
                    team_id=callback.get("team_id"),
                    is_enterprise_install=bool(callback.get("enterprise_install")),
                )
            except Exception:
                log.exception("slack_installation_lookup_failed")
                bot = None
            if bot is not None and bot.bot_token:
                return str(bot.bot_token)
        return self.config.bot_token

    async def send(
        self, callback: Mapping[str, Any], message: Mapping[str, Any], *, extra_posts: int = 0
    ) -> str:
        """Deliver ``message``; return the route used: response_url, dm or none."""
        url = callback.get("response_url")
        if url and response_url_usable(callback, now=time.time(), extra_posts=extra_posts):
            payload = dict(message)
            if callback.get("replace"):
                payload["replace_original"] = True
            if await post_response_url(str(url), payload):
                return "response_url"
        user_id = callback.get("user_id")
        token = await self.token_for(callback)
        if user_id and token and await self.direct_message(token, str(user_id), message):
            return "dm"
        log.warning("slack_report_undelivered", user_id=user_id, has_token=bool(token))
        return "none"

    async def direct_message(self, token: str, user_id: str, message: Mapping[str, Any]) -> bool:
        from slack_sdk.errors import SlackApiError
        from slack_sdk.web.async_client import AsyncWebClient

        client = AsyncWebClient(token=token, base_url=self.config.api_url, timeout=10)
        args: dict[str, Any] = {"channel": user_id, "text": message.get("text", "")}
        if message.get("blocks"):
            args["blocks"] = message["blocks"]
        try:
            await client.chat_postMessage(**args)
        except SlackApiError as exc:
            log.warning("slack_dm_failed", error=exc.response.get("error"))
            return False
        except Exception as exc:
            log.warning("slack_dm_failed", error=type(exc).__name__)
            return False
        return True


async def post_response_url(url: str, payload: Mapping[str, Any], *, timeout: float = 10) -> bool:
    """POST a message to a response_url; True when Slack took it."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.post(url, json=dict(payload))
    except httpx.HTTPError as exc:
        log.warning("slack_response_url_failed", error=type(exc).__name__)
        return False
    if response.is_success:
        return True
    log.warning("slack_response_url_refused", status=response.status_code, body=response.text[:100])
    return False
