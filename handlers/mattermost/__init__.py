"""Mattermost: register a guest with a custom slash command, ``/contact Chris Doe
chris@example.com +1 415 555 2671``, or with an interactive dialog (issue #16; request
formats in ``contracts/chat-platforms.md`` §1; set-up in ``docs/mattermost.md``).

Routes: ``POST /mattermost/command`` (the command's Request URL) and ``POST
/mattermost/dialog`` (where Mattermost sends the dialog's submission). A command carries a
static token (compared in constant time with each ``MATTERMOST_COMMAND_TOKEN``), a
``trigger_id`` whose timestamp must be within 5 minutes and whose id makes the event id (a
replay registers nothing twice), and a ``response_url`` on ``MATTERMOST_URL``. A dialog
submission carries nothing but the ``state`` we signed when opening it.

Text with every detail registers at once and answers privately; missing or invalid
details open the dialog pre-filled (each problem under its field) and list the problems in
the answer; the dialog's own errors come back under each field. An outcome known only
after the answer goes to the command's response_url, else (after 30 minutes or 5 posts)
as an ephemeral post of the bot (``MATTERMOST_BOT_TOKEN``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from adapter.channels import (
    ChannelContext,
    ChannelStatus,
    DeliveryRecord,
    Settings,
    error_response,
)
from handlers.mattermost.config import MattermostConfig
from handlers.mattermost.replies import Replies
from handlers.mattermost.service import MattermostService, report

__all__ = ["MattermostChannel", "channel"]

log = structlog.get_logger("handlers.mattermost")

_STATE_KEY = "mattermost"


class MattermostChannel:
    """The slash command and its dialog."""

    name = "mattermost"
    title = "Mattermost"

    def __init__(self) -> None:
        self.clock: Callable[[], float] = time.time  # what freshness checks read

    def check(self, settings: Settings) -> None:
        """Raise SettingsError naming the first malformed MATTERMOST_* setting."""
        MattermostConfig.from_settings(settings)

    def status(self, settings: Settings) -> ChannelStatus:
        problem = MattermostConfig.from_settings(settings).problem
        return ChannelStatus("mattermost", problem is None, "/mattermost/command", problem)

    def routes(self, context: ChannelContext) -> Sequence[BaseRoute]:
        config = MattermostConfig.from_settings(context.settings)
        service: MattermostService | None = None
        if config.problem is None:
            service = MattermostService(context, config, clock=lambda: self.clock())
            context.state[_STATE_KEY] = service

        async def command(request: Request) -> Response:
            if service is None:
                return error_response(503, config.problem or "the Mattermost channel is off")
            return await service.command(request)

        async def submission(request: Request) -> Response:
            if service is None:
                return error_response(503, config.problem or "the Mattermost channel is off")
            return await service.submission(request)

        return [
            Route("/mattermost/command", command, methods=["POST"]),
            Route("/mattermost/dialog", submission, methods=["POST"]),
        ]

    async def shutdown(self, context: ChannelContext) -> None:
        service = context.state.get(_STATE_KEY)
        if isinstance(service, MattermostService):
            await service.background.drain()

    async def notify(self, context: ChannelContext, record: DeliveryRecord) -> None:
        """A delivery finished after Mattermost got its answer: tell the user who asked."""
        callback = record.callback
        if not callback or callback.get("v") != 1:
            return
        service = context.state.get(_STATE_KEY)
        if isinstance(service, MattermostService):
            await service.report(record)
            return
        replies = context.state.get("mattermost_replies")  # the worker: settings only
        if not isinstance(replies, Replies):
            replies = Replies(MattermostConfig.from_settings(context.settings))
            context.state["mattermost_replies"] = replies
        await report(replies, context, record)


channel = MattermostChannel()
