"""``POST /contacts``: register a contact from JSON or a urlencoded form, with a bearer token.

The endpoint is off (404) unless ``API_TOKEN`` is set. Answers: 201 with the Rocket.Chat
contact id when it was registered within the fast-path budget, 200 for a duplicate
(same ``event_id``) already registered, 202 with the delivery id and a ``Location`` to
poll otherwise, 422 with the field errors (or Rocket.Chat's rejection), 400/401/413 for
a malformed, unauthenticated or oversized request, 502 when the delivery failed for
good. :data:`OPENAPI` documents each of them (tests provoke every one).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from adapter.channels import (
    BodyTooLarge,
    ChannelContext,
    ChannelStatus,
    Outcome,
    Settings,
    Submission,
    bearer_ok,
    consent_given,
    error_response,
    read_body,
)


def _json_answer(description: str, schema: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


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
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "Same as event_id: a key seen before is answered, not stored",
                        "schema": {"type": "string", "maxLength": 255},
                    }
                ],
                "responses": {
                    "201": _json_answer(
                        "Registered in Rocket.Chat within the fast-path budget", "Accepted"
                    ),
                    "200": _json_answer(
                        "Duplicate (same event_id / Idempotency-Key), already registered: "
                        "the first delivery's answer, with duplicate=true",
                        "Accepted",
                    ),
                    "202": {
                        **_json_answer(
                            "Stored durably, delivery to Rocket.Chat pending (outage, rate "
                            "limit or slow answer): poll Location",
                            "Accepted",
                        ),
                        "headers": {
                            "Location": {
                                "description": "/deliveries/{delivery_id}",
                                "schema": {"type": "string"},
                            }
                        },
                    },
                    "400": _json_answer(
                        "Malformed body: not JSON, not an object, or a field of the wrong type",
                        "Error",
                    ),
                    "401": _json_answer("Missing or wrong bearer token (API_TOKEN)", "Error"),
                    "404": _json_answer("The endpoint is off: API_TOKEN is not set", "Error"),
                    "413": _json_answer("Body larger than MAX_BODY_BYTES", "Error"),
                    "422": {
                        "description": "Invalid fields (errors, one message per field), or "
                        "Rocket.Chat rejected the contact (error, its message; not retried)",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Errors"},
                                        {"$ref": "#/components/schemas/Failed"},
                                    ]
                                }
                            }
                        },
                    },
                    "500": _json_answer(
                        "Unexpected error: nothing was stored unless a 2xx came back; try again",
                        "Error",
                    ),
                    "502": _json_answer(
                        "The delivery failed for good, e.g. the same event_id again after "
                        "its retries gave up (RETRY_GIVE_UP_AFTER): see error",
                        "Failed",
                    ),
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
                    "consent": {
                        "type": "boolean",
                        "description": "The guest agreed (required when REQUIRE_CONSENT=true)",
                    },
                    "consent_version": {
                        "type": "string",
                        "description": "Which consent text they agreed to (default: the "
                        "version of FORM_CONSENT_TEXT)",
                    },
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
                    "status": {
                        "type": "string",
                        "description": "delivered (201/200) or pending, delivering, merged (202)",
                    },
                    "contact_id": {"type": ["string", "null"]},
                    "contact_url": {"type": "string"},
                    "duplicate": {"type": "boolean"},
                    "warnings": {"type": "object", "additionalProperties": {"type": "string"}},
                },
                "required": ["delivery_id", "status", "contact_id", "duplicate"],
            },
            "Errors": {
                "type": "object",
                "properties": {
                    "errors": {"type": "object", "additionalProperties": {"type": "string"}},
                    "delivery_id": {"type": ["string", "null"]},
                },
                "required": ["errors"],
            },
            "Failed": {
                "type": "object",
                "properties": {
                    "delivery_id": {"type": "string"},
                    "status": {"const": "failed"},
                    "contact_id": {"type": ["string", "null"]},
                    "duplicate": {"type": "boolean"},
                    "error": {"type": "string"},
                },
                "required": ["delivery_id", "status", "error"],
            },
            "Error": {
                "type": "object",
                "properties": {"error": {"type": "string", "description": "What to do"}},
                "required": ["error"],
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
    title = "REST API"

    def check(self, settings: Settings) -> None:
        """Nothing of its own: ``API_TOKEN`` and ``MAX_BODY_BYTES`` are core settings,
        checked when the settings are read."""

    def status(self, settings: Settings) -> ChannelStatus:
        if settings.api_token and settings.api_token.get_secret_value():
            return ChannelStatus("api", True, "/contacts")
        return ChannelStatus("api", False, "/contacts", "set API_TOKEN to turn POST /contacts on")

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
                except (ValueError, UnicodeDecodeError, RecursionError):
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
                    consent=consent_given(data.get("consent")),
                    consent_version=str(data["consent_version"])[:64]
                    if isinstance(data.get("consent_version"), str)
                    else None,
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
