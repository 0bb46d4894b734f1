"""The root page (``GET /``): what this service is and how it is doing, for its operator.

Shows the version, whether Rocket.Chat answers and accepts the credentials (the readiness
check ``/readyz`` makes, cached the same way) and which strategy registers contacts, each
channel with whether it is on (and the setting that turns it on) and the URL to paste into
the provider, and links to the hosted form, the admin page and the API description. It
shows no personal data and no secret; everything on it is what ``/readyz`` and the
provider's own set-up screens show anyway. ``Accept: application/json`` gets the same as
JSON.

A channel says whether it is on, and what to set when it is not, through its
``status(settings)`` (the same :class:`~adapter.channels.base.ChannelStatus` the start-up
log line shows), and its display name through an optional ``title``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from adapter.channels.base import Channel, channel_statuses
from adapter.delivery.queue import DeliveryQueue
from adapter.ops.logs import redact_text
from adapter.settings import Settings
from adapter.web.admin_format import env

__all__ = ["channel_rows", "status_route"]

# Routes that are not a URL to paste into a provider (pages, descriptions, OAuth hops).
_NOT_ENDPOINTS = {"/openapi.json", "/slack/install", "/slack/oauth_redirect"}


def channel_rows(
    channels: Sequence[Channel], routes: Mapping[int, Sequence[BaseRoute]], settings: Settings
) -> list[dict[str, Any]]:
    """Each channel: title, on or off (and why), the endpoints a provider posts to."""
    rows = []
    for channel in channels:
        [status] = channel_statuses(settings, [channel])
        paths = [
            route.path_format  # "/forms/{form}", not the converter's "{form:str}"
            for route in routes.get(id(channel), ())
            if isinstance(route, Route)
            and "POST" in (route.methods or ())
            and route.path not in _NOT_ENDPOINTS
        ]
        rows.append(
            {
                "name": channel.name,
                "title": str(getattr(channel, "title", channel.name)),
                "on": status.on,
                "why_off": None if status.on else status.reason,
                "paths": paths,
            }
        )
    return sorted(rows, key=lambda row: (not row["on"], row["title"].lower()))


def status_route(
    settings: Settings,
    queue: DeliveryQueue,
    channels: Sequence[Channel],
    routes: Mapping[int, Sequence[BaseRoute]],
    version: str,
) -> Route:
    """``GET /``: the status page."""

    async def status(request: Request) -> Response:
        report = await queue.client.readiness()
        base = str(request.base_url).rstrip("/")
        rows = channel_rows(channels, routes, settings)
        paused = redact_text(queue.paused_reason) if queue.paused_reason else None
        reachable = report.version is not None
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(
                {
                    "version": version,
                    "rocketchat": {
                        "ok": report.ok and not paused,
                        "reachable": reachable,
                        "reason": f"delivery paused: {paused}" if paused else report.reason,
                        "version": report.version,
                        "strategy": report.strategy,
                    },
                    "channels": [
                        {**row, "urls": [base + path for path in row["paths"]]} for row in rows
                    ],
                }
            )
        nonce = secrets.token_urlsafe(16)
        body = env.get_template("status.html").render(
            nonce=nonce,
            session=None,
            csrf_token="",
            logged_in=False,
            path="/",
            outage=None,
            version=version,
            report=report,
            reachable=reachable,
            reason=redact_text(report.reason),
            paused=paused,
            channels=rows,
            base=base,
            admin_on=bool(settings.admin_token and settings.admin_token.get_secret_value()),
        )
        return HTMLResponse(
            body,
            headers={
                "Content-Security-Policy": (
                    f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; "
                    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
                ),
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "same-origin",
                "X-Robots-Tag": "noindex, nofollow",
            },
        )

    return Route("/", status, methods=["GET"])
