"""``POST /contacts``: register a contact from JSON or a urlencoded form, with a bearer token.

The endpoint is off unless ``API_TOKEN`` is set. Answers: 201 with the Rocket.Chat
contact id when it was registered within the fast-path budget, 202 with the
delivery id and a ``Location`` to poll otherwise, 422 with the field errors.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from adapter.app import bearer_ok, error_response
from adapter.channels import BodyTooLarge, ChannelContext, read_body
from adapter.delivery import Outcome, Submission

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Omnichannel Contact Adapter", "version": "1"},
    "paths": {
        "/contacts": {
            "post": {
                "summary": "Register a guest as a Rocket.Chat Omnichannel contact",
                "security": [{"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ContactIn"}},
                        "application/x-www-form-urlencoded": {
                            "schema": {"$ref": "#/components/schemas/ContactIn"}
                        },
                    },
                },
                "responses": {
                    "201": {
                        "description": "Registered",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Accepted"}
                            }
                        },
                    },
                    "202": {
                        "description": "Accepted, delivery pending; poll Location",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Accepted"}
                            }
                        },
                    },
                    "400": {"description": "Malformed body"},
                    "401": {"description": "Missing or wrong bearer token"},
                    "413": {"description": "Body too large"},
                    "422": {
                        "description": "Invalid fields",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}
                        },
                    },
                },
            }
        },
        "/deliveries/{id}": {
            "get": {
                "summary": "Status of one accepted contact",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {"description": "The delivery"},
                    "404": {"description": "Unknown id"},
                },
            }
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "ContactIn": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 255},
                    "email": {"type": "string", "format": "email"},
                    "phone": {
                        "type": "string",
                        "description": "E.164 or national with DEFAULT_PHONE_REGION",
                    },
                    "custom_fields": {"type": "object", "additionalProperties": {"type": "string"}},
                    "event_id": {
                        "type": "string",
                        "description": "Idempotency key: the same id is accepted once",
                    },
                },
                "required": ["name"],
            },
            "Accepted": {
                "type": "object",
                "properties": {
                    "delivery_id": {"type": "string"},
                    "status": {"type": "string"},
                    "contact_id": {"type": ["string", "null"]},
                    "duplicate": {"type": "boolean"},
                },
            },
            "Errors": {
                "type": "object",
                "properties": {
                    "errors": {"type": "object", "additionalProperties": {"type": "string"}}
                },
            },
        },
    },
}


def outcome_response(outcome: Outcome, *, url_for_delivery: str) -> Response:
    """The HTTP answer for a submission's outcome."""
    if outcome.status in ("invalid", "rejected"):
        return JSONResponse(
            {"errors": dict(outcome.errors), "delivery_id": outcome.delivery_id}, status_code=422
        )
    body: dict[str, Any] = {
        "delivery_id": outcome.delivery_id,
        "status": outcome.status,
        "contact_id": outcome.contact_id,
        "duplicate": outcome.duplicate,
    }
    if outcome.contact_url:
        body["contact_url"] = outcome.contact_url
    if outcome.warnings:
        body["warnings"] = dict(outcome.warnings)
    if outcome.status == "delivered":
        return JSONResponse(body, status_code=200 if outcome.duplicate else 201)
    if outcome.status == "failed":
        body["error"] = outcome.last_error
        return JSONResponse(
            body, status_code=422 if "rejected" in (outcome.last_error or "") else 502
        )
    return JSONResponse(body, status_code=202, headers={"Location": url_for_delivery})


class ApiChannel:
    """The authenticated JSON/form API for other systems and scripts."""

    name = "api"

    def routes(self, context: ChannelContext) -> Sequence[BaseRoute]:
        settings = context.settings
        queue = context.queue

        async def create(request: Request) -> Response:
            token = settings.api_token.get_secret_value() if settings.api_token else None
            if not token:
                return error_response(404, "POST /contacts is off: set API_TOKEN to turn it on")
            if not bearer_ok(request, token):
                return error_response(401, "send Authorization: Bearer <API_TOKEN>")
            try:
                body = await read_body(request, settings.max_body_bytes)
            except BodyTooLarge as exc:
                return error_response(413, f"{exc}: send a single contact")
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            data: Any
            if ctype == "application/x-www-form-urlencoded":
                form = await request.form()
                data = {k: v for k, v in form.items() if isinstance(v, str)}
                custom = {
                    k[len("custom_fields[") : -1]: v
                    for k, v in data.items()
                    if k.startswith("custom_fields[") and k.endswith("]")
                }
                data["custom_fields"] = custom
            else:
                try:
                    data = json.loads(body)
                except (ValueError, UnicodeDecodeError):
                    return error_response(
                        400, 'the body is not valid JSON: send {"name": …, "email": …, "phone": …}'
                    )
            if not isinstance(data, dict):
                return error_response(400, "expected a JSON object with name, email and phone")
            fields: dict[str, str | None] = {}
            for key in ("name", "email", "phone"):
                value = data.get(key)
                if value is not None and not isinstance(value, str):
                    return error_response(
                        400, f"{key}: expected a string, got {type(value).__name__}"
                    )
                fields[key] = value
            custom_fields = data.get("custom_fields") or {}
            if not isinstance(custom_fields, dict) or not all(
                isinstance(v, str) for v in custom_fields.values()
            ):
                return error_response(400, "custom_fields: expected an object of strings")
            event_id = data.get("event_id") or request.headers.get("idempotency-key")
            outcome = await queue.submit(
                Submission(
                    source="api",
                    fields=fields,
                    custom_fields=custom_fields,
                    event_id=str(event_id)[:255] if event_id else None,
                )
            )
            return outcome_response(outcome, url_for_delivery=f"/deliveries/{outcome.delivery_id}")

        async def openapi(request: Request) -> Response:
            return JSONResponse(OPENAPI)

        return [
            Route("/contacts", create, methods=["POST"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ]


channel = ApiChannel()
