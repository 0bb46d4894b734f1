"""Erasing a person and reading the audit log, behind ``Authorization: Bearer $ADMIN_TOKEN``.

``POST /people/forget`` with JSON ``{"email"|"phone"|"delivery": …, "rocketchat": bool}``
erases everything the ledger holds about that person (a waiting delivery is cancelled)
and, with ``"rocketchat": true``, their visitor and Contact Center contact in Rocket.Chat.
It answers what was erased, never the data: 200 when all of it was, 207 naming what
remains when Rocket.Chat refused part of it, 422 when the email or phone cannot be read,
400 when no person is named. ``GET /audit`` lists the latest erasures and purges (who,
when, how many rows). Both answer 404 without ``ADMIN_TOKEN`` (off) and 401 without it.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from adapter.channels.http import BodyTooLarge, bearer_ok, error_response, read_body
from adapter.core.contact import FieldError
from adapter.delivery.privacy import forget_person, person_keys_of
from adapter.delivery.queue import DeliveryQueue
from adapter.ledger.retention import audit_entries
from adapter.settings import Settings

__all__ = ["privacy_routes"]

_FORGET_BODY_LIMIT = 4096


def privacy_routes(settings: Settings, queue: DeliveryQueue) -> list[BaseRoute]:
    """The routes for ``create_app``'s route list."""

    def refused(request: Request) -> Response | None:
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        if not token:
            return error_response(
                404, "the admin endpoints are off: set ADMIN_TOKEN to turn them on"
            )
        if not bearer_ok(request, token):
            return error_response(401, "send Authorization: Bearer <ADMIN_TOKEN>")
        return None

    async def forget(request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        try:
            body = json.loads(await read_body(request, _FORGET_BODY_LIMIT) or b"{}")
        except BodyTooLarge as exc:
            return error_response(413, f"{exc}: send only email, phone, delivery, rocketchat")
        except (ValueError, UnicodeDecodeError):
            return error_response(400, 'expected a JSON object such as {"email": "…"}')
        if not isinstance(body, dict):
            return error_response(400, 'expected a JSON object such as {"email": "…"}')
        given = {k: body.get(k) for k in ("email", "phone", "delivery")}
        if any(v is not None and not isinstance(v, str) for v in given.values()):
            return error_response(400, "email, phone and delivery are strings")
        if not any(given.values()):
            return error_response(400, "name the person: email, phone or delivery")
        try:
            email, phone = person_keys_of(
                given["email"] or None, given["phone"] or None, settings.default_phone_region
            )
        except FieldError as exc:
            field, _, message = str(exc).partition(": ")
            return JSONResponse({"errors": {field: message}}, status_code=422)
        outcome = await forget_person(
            queue,
            email=email,
            phone=phone,
            delivery_id=given["delivery"] or None,
            rocketchat=body.get("rocketchat") is True,
            actor=str(body.get("actor") or "admin api")[:64],
        )
        return JSONResponse(outcome.as_dict(), status_code=200 if outcome.complete else 207)

    async def audit(request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        try:
            limit = int(request.query_params.get("limit", "50"))
        except ValueError:
            return error_response(400, "limit must be a whole number from 1 to 500")
        if not 1 <= limit <= 500:
            return error_response(400, "limit must be a whole number from 1 to 500")
        entries: list[dict[str, Any]] = await audit_entries(queue.store, limit)
        return JSONResponse({"entries": entries})

    return [
        Route("/people/forget", forget, methods=["POST"]),
        Route("/audit", audit, methods=["GET"]),
    ]
