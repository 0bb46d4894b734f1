"""Workspaces: who the bot is in each one, without a hidden ``auth.test`` per request.

* One workspace (``SLACK_BOT_TOKEN``): :class:`TokenAuthorize` hands bolt the token.
* Many (``SLACK_CLIENT_ID``/``SLACK_CLIENT_SECRET``): the OAuth flow stores installations
  with slack-sdk's async SQLAlchemy stores *in the service's own database* (same async
  engine as the deliveries), and :class:`StoreAuthorize` finds the workspace's bot token
  there, cached briefly and dropped as soon as a new installation is saved.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["InstallationStore", "StateStore", "StoreAuthorize", "TokenAuthorize", "create_tables"]

log = structlog.get_logger("handlers.slack")

_CACHE_SECONDS = 30.0


class InstallationStore(AsyncSQLAlchemyInstallationStore):
    """slack-sdk's store, telling listeners when an installation is saved."""

    def __init__(self, client_id: str, engine: AsyncEngine) -> None:
        super().__init__(client_id=client_id, engine=engine)
        self.on_save: list[Any] = []

    async def async_save(self, installation: Installation) -> None:
        await super().async_save(installation)
        for callback in self.on_save:
            callback()
        log.info(
            "slack_installed",
            team_id=installation.team_id,
            enterprise_id=installation.enterprise_id,
        )


class StateStore(AsyncSQLAlchemyOAuthStateStore):
    """OAuth ``state`` values, in the service's database (any web process can finish a flow)."""


async def create_tables(*stores: Any) -> None:
    """Create the stores' tables; a concurrent creator (another process) is not an error."""
    for store in stores:
        for attempt in range(3):
            try:
                await store.create_tables()
                break
            except Exception:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2)


class TokenAuthorize(AsyncAuthorize):
    """Single workspace: the configured bot token, no Web API call on the request path."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.bot_user_id: str | None = None  # filled in by a background auth.test
        self.bot_id: str | None = None

    async def __call__(
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        actor_enterprise_id: str | None = None,
        actor_team_id: str | None = None,
        actor_user_id: str | None = None,
    ) -> AuthorizeResult | None:
        return AuthorizeResult(
            enterprise_id=enterprise_id,
            team_id=team_id,
            bot_token=self.token,
            bot_user_id=self.bot_user_id,
            bot_id=self.bot_id,
            user_id=user_id,
        )


class StoreAuthorize(AsyncAuthorize):
    """Many workspaces: the bot token saved by the OAuth flow (else ``SLACK_BOT_TOKEN``)."""

    def __init__(self, store: InstallationStore, fallback_token: str | None) -> None:
        self.store = store
        self.fallback_token = fallback_token
        self._cache: dict[tuple[str | None, str | None], tuple[float, Bot]] = {}
        store.on_save.append(self._cache.clear)

    async def __call__(
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        actor_enterprise_id: str | None = None,
        actor_team_id: str | None = None,
        actor_user_id: str | None = None,
    ) -> AuthorizeResult | None:
        org_wide = bool(context.is_enterprise_install)
        key = (enterprise_id, None if org_wide else team_id)
        cached = self._cache.get(key)
        bot: Bot | None = None
        if cached is not None and time.monotonic() - cached[0] < _CACHE_SECONDS:
            bot = cached[1]
        else:
            bot = await self.store.async_find_bot(
                enterprise_id=enterprise_id, team_id=team_id, is_enterprise_install=org_wide
            )
            if bot is not None:
                self._cache[key] = (time.monotonic(), bot)
        if bot is not None:
            return AuthorizeResult(
                enterprise_id=bot.enterprise_id,
                team_id=bot.team_id,
                bot_token=bot.bot_token,
                bot_user_id=bot.bot_user_id,
                bot_id=bot.bot_id,
                bot_scopes=bot.bot_scopes,
                user_id=user_id,
            )
        if self.fallback_token:
            return AuthorizeResult(
                enterprise_id=enterprise_id,
                team_id=team_id,
                bot_token=self.fallback_token,
                user_id=user_id,
            )
        log.warning("slack_not_installed", team_id=team_id, enterprise_id=enterprise_id)
        return None
