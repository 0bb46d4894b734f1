"""Slack: register a guest with ``/contact Chris Doe chris@example.com +1 415 555 2671``
or with a modal form (issue #5; request formats in ``contracts/slack.md``).

Routes: ``POST /slack/events`` (commands, the "Open form" button, the modal) and, with
``SLACK_CLIENT_ID``/``SLACK_CLIENT_SECRET``, ``GET /slack/install`` and
``GET /slack/oauth_redirect``. Each request is size-capped (``SLACK_MAX_BODY_BYTES``,
413), signature-checked (401; 400 for a malformed timestamp) and parsed here before
bolt sees it. Without ``SLACK_SIGNING_SECRET`` the routes answer 503 naming it.

The Slack user is the delivery's ``actor``, their workspace its ``team``, and
``SLACK_CONTACT_MANAGER_MAP`` may name their Rocket.Chat username as contact manager.
A delivery that finishes after the answer is reported to the command's
``response_url`` (5 posts in 30 minutes), else by a DM from the bot: see
:mod:`handlers.slack.sender`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog
from starlette.requests import Request
from starlette.responses import Response
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
from handlers.slack import blocks
from handlers.slack.config import SlackConfig
from handlers.slack.sender import SlackSender
from handlers.slack.verify import MalformedPayload, check_signature, is_ssl_check, parse_body

if TYPE_CHECKING:
    from handlers.slack.service import SlackService

__all__ = ["SlackChannel", "channel"]

log = structlog.get_logger("handlers.slack")

_STATE_KEY = "slack"


class SlackChannel:
    """Slash command + modal, on slack-bolt, mounted in the service's Starlette app."""

    name = "slack"
    title = "Slack"

    def check(self, settings: Settings) -> None:
        """Every SLACK_* setting (:meth:`SlackConfig.from_settings`)."""
        SlackConfig.from_settings(settings)

    def status(self, settings: Settings) -> ChannelStatus:
        problem = SlackConfig.from_settings(settings).problem
        return ChannelStatus("slack", problem is None, "/slack/events", problem)

    def routes(self, context: ChannelContext) -> Sequence[BaseRoute]:
        config = SlackConfig.from_settings(context.settings)
        service: SlackService | None = None
        if config.problem is None:
            from handlers.slack.service import SlackService

            service = SlackService(context, config)
            context.state[_STATE_KEY] = service

        async def events(request: Request) -> Response:
            received_at = time.monotonic()
            if service is None:
                return error_response(503, config.problem or "the Slack channel is off")
            try:
                body = await read_body(request, config.max_body_bytes)
            except BodyTooLarge as exc:
                return error_response(413, f"{exc} (SLACK_MAX_BODY_BYTES)")
            if is_ssl_check(request.headers, body):
                return Response(status_code=200)
            assert config.signing_secret is not None
            refusal = check_signature(config.signing_secret, request.headers, body)
            if refusal is not None:
                log.warning("slack_request_refused", status=refusal.status, reason=refusal.message)
                return error_response(refusal.status, refusal.message)
            try:
                text = body.decode("utf-8")
                parsed = parse_body(text, request.headers)
            except MalformedPayload as exc:
                log.warning("slack_request_refused", status=400, reason=str(exc))
                return error_response(
                    400,
                    f"malformed Slack payload: {exc}; nothing was registered. Slack never "
                    "sends this: check what forwards requests to /slack/events",
                )
            except (UnicodeDecodeError, ValueError):
                return error_response(
                    400,
                    "the body is neither a Slack form (application/x-www-form-urlencoded) "
                    "nor a JSON object",
                )
            if parsed.get("ssl_check") == "1":  # signed this time: still only wants a 200
                return Response(status_code=200)
            return await service.dispatch(request, text, parsed, received_at)

        async def oauth(request: Request) -> Response:
            if service is None:
                return error_response(503, config.problem or "the Slack channel is off")
            if not config.oauth:
                return error_response(
                    404,
                    "installing into other workspaces is off: set SLACK_CLIENT_ID and "
                    "SLACK_CLIENT_SECRET",
                )
            return await service.oauth(request)

        return [
            Route("/slack/events", events, methods=["POST"]),
            Route("/slack/install", oauth, methods=["GET"]),
            Route("/slack/oauth_redirect", oauth, methods=["GET"]),
        ]

    async def startup(self, context: ChannelContext) -> None:
        service = context.state.get(_STATE_KEY)
        if service is not None:
            await service.startup()

    async def shutdown(self, context: ChannelContext) -> None:
        service = context.state.get(_STATE_KEY)
        if service is not None:
            await service.shutdown()

    async def notify(self, context: ChannelContext, record: DeliveryRecord) -> None:
        """A delivery finished after Slack got its answer: tell the person who asked."""
        callback = record.callback
        if not callback or callback.get("v") != 1:
            return
        service: Any = context.state.get(_STATE_KEY)
        if service is not None:
            await service.before_report(record.id)
            sender: SlackSender = service.sender
        else:  # the worker process: no bolt app, just settings and the database
            sender = context.state.get("slack_sender") or SlackSender(
                SlackConfig.from_settings(context.settings), context.queue.engine
            )
            context.state["slack_sender"] = sender
        name = (record.fields or {}).get("name")
        url = context.queue.client.contact_url(record.contact_id) if record.contact_id else None
        message = blocks.outcome_message(
            status=record.status,
            name=str(name) if name else None,
            contact_url=url,
            last_error=record.last_error,
            final=True,
        )
        route = await sender.send(callback, message)
        log.info(
            "slack_outcome_reported",
            delivery_id=record.id,
            status=record.status,
            route=route,
            after=round(time.time() - record.created_at, 1),
        )


channel = SlackChannel()
