"""Talking back to Mattermost after (or beside) the command's answer: opening the dialog,
posting to the command's ``response_url`` (5 posts within 30 minutes, contract §1.5) and,
once that is spent, an ephemeral post with the bot's token (``POST /api/v4/posts/ephemeral``).

Runs in the web process and in ``contact-adapter worker``: it needs only the delivery's
``callback`` and the settings.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx
import structlog

from adapter.channels import post_json
from handlers.mattermost.config import MattermostConfig

__all__ = ["RESPONSE_URL_POSTS", "RESPONSE_URL_TTL", "Replies", "make_callback", "usable"]

log = structlog.get_logger("handlers.mattermost")

RESPONSE_URL_TTL = 30 * 60  # CommandWebhookLifetime
RESPONSE_URL_POSTS = 5  # TryUse(hook.Id, 5)
RESPONSE_URL_MARGIN = 60  # stop a minute early: its clock started at Mattermost
DIALOG_OPEN_TIMEOUT = 2.0  # the trigger_id may live only 3 s (older servers)
CALLBACK_VERSION = 1


def make_callback(
    *,
    response_url: str | None,
    user_id: str,
    channel_id: str,
    issued_at: float,
    posts: int = 0,
) -> dict[str, Any]:
    """What a delivery carries so that its outcome reaches the user who asked."""
    return {
        "v": CALLBACK_VERSION,
        "response_url": response_url,
        "issued_at": issued_at,
        "posts": posts,  # posts to response_url made before the outcome report
        "user_id": user_id,
        "channel_id": channel_id,
    }


def usable(callback: Mapping[str, Any], *, now: float, extra_posts: int = 0) -> bool:
    """True while the callback's response_url is within its 30 minutes and 5 posts."""
    if not callback.get("response_url"):
        return False
    try:
        issued = float(callback.get("issued_at") or 0)
        posts = int(callback.get("posts") or 0) + extra_posts
    except (TypeError, ValueError):
        return False
    return now - issued < RESPONSE_URL_TTL - RESPONSE_URL_MARGIN and posts < RESPONSE_URL_POSTS


def ephemeral(text: str) -> dict[str, Any]:
    """A ``CommandResponse`` only the user sees, with Slack-style ``<!channel>`` left alone."""
    return {"response_type": "ephemeral", "text": text, "skip_slack_parsing": True}


class Replies:
    """Dialog opens, response_url posts and the bot's ephemeral posts, for one server."""

    def __init__(self, config: MattermostConfig) -> None:
        self.config = config

    async def open_dialog(self, trigger_id: str, definition: Mapping[str, Any]) -> str | None:
        """Open the dialog (no credentials: the server-signed trigger_id is the
        authorisation, contract §1.6); None when opened, else what Mattermost said."""
        url = f"{self.config.site_url}/api/v4/actions/dialogs/open"
        try:
            async with httpx.AsyncClient(timeout=DIALOG_OPEN_TIMEOUT) as client:
                answer = await client.post(url, json={"trigger_id": trigger_id, **definition})
        except httpx.HTTPError as exc:
            log.warning("mattermost_dialog_open_failed", error=type(exc).__name__)
            return f"Mattermost could not be reached ({type(exc).__name__})"
        if answer.status_code == 200:
            return None
        try:
            body = answer.json()
            reason = str(body.get("message") or body.get("id") or answer.status_code)
        except ValueError:
            reason = f"HTTP {answer.status_code}"
        log.warning("mattermost_dialog_open_refused", status=answer.status_code, reason=reason)
        return reason[:200]

    async def send(self, callback: Mapping[str, Any], text: str, *, extra_posts: int = 0) -> str:
        """Tell the user ``text`` privately; the route used: response_url, ephemeral or none."""
        url = callback.get("response_url")
        fresh = bool(url) and usable(callback, now=time.time(), extra_posts=extra_posts)
        if fresh and await post_json(str(url), ephemeral(text)) == 200:
            return "response_url"
        user_id, channel_id = callback.get("user_id"), callback.get("channel_id")
        if self.config.bot_token and user_id and channel_id:
            status = await post_json(
                f"{self.config.site_url}/api/v4/posts/ephemeral",
                {"user_id": user_id, "post": {"channel_id": channel_id, "message": text}},
                headers={"Authorization": f"Bearer {self.config.bot_token}"},
            )
            if status == 201:
                return "ephemeral"
        log.warning("mattermost_report_undelivered", has_bot_token=bool(self.config.bot_token))
        return "none"
