"""Google Chat: register a guest with ``/contact Chris Doe chris@example.com +1 …``, a
mention of the app, or its dialog (issue #16 item 4; contract ``chat-platforms.md`` §4).

Route: ``POST /googlechat/events`` (the app's HTTP endpoint URL). Each request is
size-capped (``GOOGLE_CHAT_MAX_BODY_BYTES``, 413), its bearer token verified against
Google's published keys (issuer, audience, RS256 signature, expiry; keys cached; 401
otherwise), then parsed (400 naming the part). Without ``GOOGLE_CHAT_AUDIENCE`` the route
answers 503 naming it. Google signs the sender, not the body: the token is the request's
only proof, good until it expires (replays inside that time are deduplicated on the
message's name).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog
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
from handlers.googlechat import cards
from handlers.googlechat.config import GoogleChatConfig
from handlers.googlechat.tokens import KeysUnavailable, TokenRefused, verify_token

__all__ = ["GoogleChatChannel", "channel"]

log = structlog.get_logger("handlers.googlechat")

_STATE_KEY = "googlechat"


class GoogleChatChannel:
    """The Chat app's HTTP endpoint, mounted in the service's Starlette app."""

    name = "googlechat"
    title = "Google Chat"

    def check(self, settings: Settings) -> None:
        """Raise SettingsError naming the variable when a GOOGLE_CHAT_* setting is malformed."""
        GoogleChatConfig.from_settings(settings)

    def status(self, settings: Settings) -> ChannelStatus:
        config = GoogleChatConfig.from_settings(settings)
        on = config.audience is not None
        return ChannelStatus("googlechat", on, "/googlechat/events", None if on else config.problem)

    def routes(self, context: ChannelContext) -> Sequence[BaseRoute]:
        from handlers.googlechat.service import GoogleChatService

        config = GoogleChatConfig.from_settings(context.settings)
        service: GoogleChatService | None = None
        if config.audience is not None:
            service = GoogleChatService(context, config)
            context.state[_STATE_KEY] = service

        async def events(request: Request) -> Response:
            received_at = time.monotonic()
            if service is None or config.audience is None:
                return error_response(503, config.problem or "the Google Chat channel is off")
            try:
                body = await read_body(request, config.max_body_bytes)
            except BodyTooLarge as exc:
                return error_response(413, f"{exc} (GOOGLE_CHAT_MAX_BODY_BYTES)")
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            try:
                if scheme.lower() != "bearer" or not token.strip():
                    raise TokenRefused("send Authorization: Bearer <token>, as Google Chat does")
                keys = await service.keys.for_token(token.strip())
                verify_token(
                    token.strip(),
                    keys,
                    audience=config.audience,
                    project_number_mode=config.project_number_mode,
                    now=time.time(),
                )
            except TokenRefused as exc:
                log.warning("googlechat_request_refused", status=401, reason=str(exc))
                return error_response(401, f"{exc}; only requests from Google Chat are accepted")
            except KeysUnavailable as exc:
                return error_response(503, str(exc))
            try:
                event = cards.parse_event(body)
            except cards.MalformedEvent as exc:
                log.warning("googlechat_request_refused", status=400, reason=str(exc))
                return error_response(
                    400,
                    f"malformed Google Chat event: {exc}; nothing was registered. Google Chat "
                    "never sends this: check what forwards requests to /googlechat/events",
                )
            try:
                answer = await service.answer(event, received_at)
            except Exception:
                log.exception("googlechat_event_failed", type=event.type)
                answer = cards.private(
                    event.user, "⚠ Something went wrong on our side. Send it again in a moment."
                )
            return JSONResponse(answer)

        return [Route("/googlechat/events", events, methods=["POST"])]

    async def shutdown(self, context: ChannelContext) -> None:
        service = context.state.get(_STATE_KEY)
        if service is not None:
            await service.shutdown()

    async def notify(self, context: ChannelContext, record: DeliveryRecord) -> None:
        """A delivery finished after Chat got its answer: tell the person privately."""
        from handlers.googlechat.service import GoogleChatService

        callback = record.callback
        if not callback or callback.get("v") != 1:
            return
        service: Any = context.state.get(_STATE_KEY)
        if service is None:  # the worker process
            service = context.state.get("googlechat_worker")
            if service is None:
                service = GoogleChatService(
                    context, GoogleChatConfig.from_settings(context.settings)
                )
                context.state["googlechat_worker"] = service
        url = context.queue.client.contact_url(record.contact_id) if record.contact_id else None
        text = record_text(record, url, bold=cards.bold, link=cards.link)
        route = await service.sender.send(callback, text)
        log.info(
            "googlechat_outcome_reported",
            delivery_id=record.id,
            status=record.status,
            route=route,
            after=round(time.time() - record.created_at, 1),
        )


channel = GoogleChatChannel()
