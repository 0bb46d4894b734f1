"""``POST /contacts``: register a contact from JSON or a urlencoded form, with a bearer token.

The endpoint is off (404) unless ``API_TOKEN`` is set. Answers: 201 with the Rocket.Chat
contact id when it was registered within the fast-path budget, 200 for a duplicate
(same ``event_id``) already registered, 202 with the delivery id and a ``Location`` to
poll otherwise, 422 with the field errors (or Rocket.Chat's rejection), 400/401/413 for
a malformed, unauthenticated or oversized request, 502 when the delivery failed for
good. :data:`OPENAPI` documents each of them (tests provoke every one).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from adapter.channels import (
    BodyTooLarge,
    ChannelContext,
    ChannelStatus,
    ContactError,
    Outcome,
    Settings,
    Submission,
    bearer_ok,
    consent_given,
    error_response,
    read_body,
    validate_contact,
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
            "ContactIn": {},  # from contact_model(): see openapi_for()
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


class _ContactFields(BaseModel):
    """What ``POST /contacts`` takes, every field optional (see :func:`contact_model`)."""

    model_config = ConfigDict(strict=True, extra="ignore", title="ContactIn")

    name: str | None = Field(default=None, max_length=255)
    email: str | None = Field(default=None, json_schema_extra={"format": "email"})
    phone: str | None = Field(
        default=None, description="E.164 or national with DEFAULT_PHONE_REGION"
    )
    custom_fields: dict[str, str] = Field(default_factory=dict)
    consent: bool | str | None = Field(
        default=None, description="The guest agreed (required when REQUIRE_CONSENT=true)"
    )
    consent_version: str | None = Field(
        default=None,
        description="Which consent text they agreed to (default: the version of FORM_CONSENT_TEXT)",
    )
    event_id: str | None = Field(
        default=None, description="Idempotency key: the same id is accepted once"
    )


def contact_model(required: Iterable[str]) -> type[BaseModel]:
    """The request model the handler validates with, for ``CONTACT_REQUIRED_FIELDS``:
    each required field a non-blank string. ``/openapi.json`` is generated from the same
    model, so the document and the service cannot disagree."""
    base = _ContactFields.model_fields
    fields: dict[str, Any] = {
        name: (
            str,
            Field(
                pattern=r"\S",
                max_length=255 if name == "name" else None,
                description=base[name].description,
                json_schema_extra=base[name].json_schema_extra,
            ),
        )
        for name in required
    }
    return create_model("ContactIn", __base__=_ContactFields, **fields)


def openapi_for(model: type[BaseModel]) -> dict[str, Any]:
    """:data:`OPENAPI` with the request schema of ``model``."""
    document = copy.deepcopy(OPENAPI)
    schema = model.model_json_schema()
    for prop in schema.get("properties", {}).values():  # JSON Schema 2020-12, OpenAPI 3.1
        prop.pop("title", None)
    schema.pop("title", None)
    document["components"]["schemas"]["ContactIn"] = schema
    return document


def _field_errors(exc: ValidationError) -> tuple[int, dict[str, str]]:
    """A missing required field is a 422 like the core's (the core names it with every
    other problem); text that is not Unicode a 421 (answered 422 at once); a wrong type
    a 400."""
    errors: dict[str, str] = {}
    status = 422
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "body"
        if error["type"] == "missing" or (
            error["type"] == "string_pattern_mismatch" and len(error["loc"]) == 1
        ):
            errors.setdefault(where, "is required")
        elif error["type"] == "string_unicode":
            # A lone UTF-16 surrogate (JSON's \ud800): refused like the core refuses it.
            status = 400 if status == 400 else 421
            errors.setdefault(
                where,
                "contains text that is not valid Unicode (a lone UTF-16 surrogate such as "
                "\\ud800): send the text as UTF-8",
            )
        else:
            status = 400
            if error["type"] == "string_type":
                why = f"expected a string, got {type(error['input']).__name__}"
            elif error["loc"][0] == "custom_fields":
                why = "expected an object of strings"
            else:
                why = str(error["msg"])
            errors.setdefault(where, why)
    return status, errors


def _another_contact(outcome: Outcome, fields: dict[str, Any], settings: Settings) -> bool:
    """Whether a duplicate's stored contact is someone else than the request's: the key
    was reused for another person (a payment API's 422), not sent again."""
    if outcome.contact is None:
        return False
    try:
        contact, _ = validate_contact(
            fields,
            required=settings.contact_required_fields,
            default_region=settings.default_phone_region,
        )
    except ContactError:
        return True
    stored = outcome.contact
    return any(
        getattr(contact, name) and getattr(contact, name) != getattr(stored, name)
        for name in ("name", "email", "phone")
    )


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
        model = contact_model(settings.contact_required_fields)
        document = openapi_for(model)

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
                try:
                    pairs = parse_qsl(
                        body.decode("utf-8"),
                        keep_blank_values=True,
                        encoding="utf-8",
                        errors="strict",
                    )
                except UnicodeDecodeError:
                    return error_response(
                        400, "the form is not valid UTF-8: percent-encode UTF-8 text"
                    )
                data = dict(pairs)
                data["custom_fields"] = {
                    k[len("custom_fields[") : -1]: v
                    for k, v in pairs
                    if k.startswith("custom_fields[") and k.endswith("]")
                }
            else:
                try:
                    data = json.loads(body)
                except (ValueError, UnicodeDecodeError, RecursionError):
                    return error_response(
                        400, 'the body is not valid JSON: send {"name": …, "email": …, "phone": …}'
                    )
            if not isinstance(data, dict):
                return error_response(400, "expected a JSON object with name, email and phone")
            data = {k: v for k, v in data.items() if v is not None}  # null: not given
            given: BaseModel
            try:
                given = model.model_validate(data)
            except ValidationError as exc:
                status, errors = _field_errors(exc)
                if status == 400:
                    where, why = next(iter(errors.items()))
                    return error_response(400, f"{where}: {why}", errors=errors)
                if status == 421:
                    return JSONResponse({"errors": errors, "delivery_id": None}, status_code=422)
                # Only required fields missing: the core names them with every other
                # problem of the contact at once (a 422, as the document says).
                given = _ContactFields.model_validate(data)
            fields: dict[str, str | None] = {
                key: getattr(given, key) for key in ("name", "email", "phone")
            }
            custom_fields: dict[str, str] = dict(getattr(given, "custom_fields", {}))
            event_id = getattr(given, "event_id", None) or request.headers.get("idempotency-key")
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
            if outcome.duplicate and _another_contact(outcome, dict(fields), settings):
                key = "event_id" if getattr(given, "event_id", None) else "Idempotency-Key"
                return JSONResponse(
                    {
                        "errors": {
                            key: "was used before for another contact: send a new key "
                            "for each new contact"
                        },
                        "delivery_id": None,
                    },
                    status_code=422,
                )
            return outcome_response(outcome, url_for_delivery=f"/deliveries/{outcome.delivery_id}")

        async def openapi(request: Request) -> Response:
            return JSONResponse(document)

        return [
            Route("/contacts", create, methods=["POST"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ]


channel = ApiChannel()
