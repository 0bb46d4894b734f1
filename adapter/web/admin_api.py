"""Operator endpoints for deliveries, behind ``Authorization: Bearer $ADMIN_TOKEN``.

``GET /deliveries`` lists deliveries (filter by ``status``, ``source``, ``since``;
page with ``limit``/``offset``) with per-status counts; ``POST /deliveries/{id}/retry``
queues one failed delivery again; ``POST /deliveries/retry-failed`` queues every failed
one. Without ``ADMIN_TOKEN`` configured they answer 404 (off); with a missing or wrong
token 401. Listings carry no personal data (``GET /deliveries/{id}`` with the token
shows one delivery in full).
"""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from adapter.channels.http import bearer_ok, error_response
from adapter.core.records import FAILED, PENDING, STATUSES
from adapter.delivery.queue import DeliveryQueue
from adapter.settings import Settings

__all__ = ["admin_routes"]

MAX_LIMIT = 500
MAX_OFFSET = 10_000_000  # SQLite and PostgreSQL take a 64-bit OFFSET; nobody pages that far


def admin_routes(settings: Settings, queue: DeliveryQueue) -> list[BaseRoute]:
    """The admin routes for ``create_app``'s route list."""

    def refused(request: Request) -> Response | None:
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        if not token:
            return error_response(
                404, "the admin endpoints are off: set ADMIN_TOKEN to turn them on"
            )
        if not bearer_ok(request, token):
            return error_response(401, "send Authorization: Bearer <ADMIN_TOKEN>")
        return None

    async def list_deliveries(request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        query = request.query_params
        status = query.get("status") or None
        if status is not None and status not in STATUSES:
            return error_response(
                400, f"status: expected one of {', '.join(STATUSES)}, got {status!r}"
            )
        try:
            limit = int(query.get("limit", "50"))
            offset = int(query.get("offset", "0"))
            since = float(query["since"]) if query.get("since") else None
        except ValueError:
            return error_response(
                400, "limit and offset must be whole numbers, since epoch seconds"
            )
        if not 1 <= limit <= MAX_LIMIT or not 0 <= offset <= MAX_OFFSET:
            return error_response(400, f"limit must be 1-{MAX_LIMIT} and offset 0-{MAX_OFFSET}")
        if since is not None and not math.isfinite(since):
            return error_response(400, "since must be a finite number of epoch seconds")
        source = query.get("source") or None
        team = query.get("team") or None
        records = await queue.list(
            status=status, source=source, team=team, limit=limit, offset=offset, since=since
        )
        counts: dict[str, int] = {}
        for per_status in (await queue.counts(since=since)).values():
            for name, n in per_status.items():
                counts[name] = counts.get(name, 0) + n
        body: dict[str, Any] = {
            "deliveries": [r.public() for r in records],
            "counts": counts,
            "limit": limit,
            "offset": offset,
        }
        return JSONResponse(body)

    async def retry_one(request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        delivery_id = request.path_params["delivery_id"]
        if await queue.retry(delivery_id):
            record = await queue.get(delivery_id)
            return JSONResponse(
                record.public() if record is not None else {"id": delivery_id, "status": PENDING}
            )
        record = await queue.get(delivery_id)
        if record is None:
            return error_response(404, f"no delivery {delivery_id}")
        if record.status != FAILED:
            return error_response(
                409,
                f"delivery {delivery_id} is {record.status}: only failed deliveries are retried",
                delivery_status=record.status,
            )
        return error_response(
            409,
            f"delivery {delivery_id} was not queued again: a newer delivery for the same "
            "person is already waiting and carries everything known",
            delivery_status=record.status,
        )

    async def retry_failed(request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        return JSONResponse({"retried": await queue.retry_failed()})

    return [
        Route("/deliveries", list_deliveries, methods=["GET"]),
        Route("/deliveries/retry-failed", retry_failed, methods=["POST"]),
        Route("/deliveries/{delivery_id:str}/retry", retry_one, methods=["POST"]),
    ]
