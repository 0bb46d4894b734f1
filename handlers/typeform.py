"""``POST /webhooks/typeform``: Typeform's ``form_response`` webhook (widgets.md §6a).

Authentication: ``Typeform-Signature: sha256=<base64 HMAC-SHA256(secret, raw body)>``,
no timestamp (a retry is recognised by its response token instead). The secret is
the one set on the webhook in Typeform (``TYPEFORM_WEBHOOK_SECRET``).

Mapping, unless ``TYPEFORM_FIELD_NAME`` / ``_EMAIL`` / ``_PHONE`` name the questions
(field ``ref`` or ``id``; hidden-field names also work): the email is the answer of an
``email`` question, the phone the answer of a ``phone_number`` question, the name the
question whose ref or title is ``name``/``full name`` (or ``first name`` + ``last
name``), else the first ``short_text`` answer, else a hidden field called ``name``.
Extras kept as custom fields: ``typeform_form_id``, ``typeform_response_id``,
``form_name`` (the form's title) and every hidden field. Partial responses (``form_response_partial``) are answered 200 and
ignored; the submitted response follows.

Typeform disables a webhook for good on 404 or 410, so this channel never answers
them: an unconfigured secret is 503, which Typeform retries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from adapter.channels import (
    Answer,
    PayloadError,
    WebhookChannel,
    WebhookEvent,
    WebhookProvider,
    WebhookRequest,
    consent_answer,
    constant_time_equal,
    custom_value,
    event_kind,
    json_object,
    map_answers,
    member,
    norm,
)

__all__ = ["TypeformProvider", "channel", "typeform_signature"]

SIGNATURE_HEADER = "typeform-signature"
EXPECTED = (
    'a Typeform webhook: {"event_id": …, "event_type": "form_response", '
    '"form_response": {"form_id": …, "token": …, "answers": [ … ]}}'
)


def typeform_signature(secret: str, body: bytes) -> str:
    """The ``Typeform-Signature`` header value for ``body``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode()


def answer_value(answer: dict[str, Any]) -> str | None:
    """The text of one answer, whatever its type (choices by label; files, payments: none)."""
    kind = answer.get("type")
    if not isinstance(kind, str):
        return None
    value = answer.get(kind)
    if kind == "choice" and isinstance(value, dict):
        value = value.get("label") or value.get("other")
    elif kind == "choices" and isinstance(value, dict):
        labels = value.get("labels")
        parts = list(labels) if isinstance(labels, list) else []
        if value.get("other"):
            parts.append(value["other"])
        value = parts
    return custom_value(value)


class TypeformProvider(WebhookProvider):
    name = "typeform"
    label = "Typeform"
    secret_setting = "TYPEFORM_WEBHOOK_SECRET"
    field_prefix = "TYPEFORM"
    success_status = 200  # any 2xx, within 30 s

    def verify(self, request: WebhookRequest, secret: str, *, now: float) -> bool:
        given = request.headers.get(SIGNATURE_HEADER)
        if not given:
            return False
        return constant_time_equal(given.strip(), typeform_signature(secret, request.body))

    def parse(self, request: WebhookRequest) -> WebhookEvent:
        data = json_object(request.body, EXPECTED)
        event_type = event_kind(data, "event_type", EXPECTED)
        delivery = data.get("event_id")
        if event_type != "form_response":
            reason = (
                "a partial response: the submitted one will follow"
                if event_type == "form_response_partial"
                else f"event type {event_type!r} carries no submitted response"
            )
            return WebhookEvent(
                event_id=str(delivery) if delivery else None, ignored=reason, event_type=event_type
            )

        response = member(data, "form_response", dict, "the body")
        answers_in = member(response, "answers", list, "form_response", required=False) or []
        definition = member(response, "definition", dict, "form_response", required=False) or {}
        titles: dict[str, str] = {}
        for item in (
            member(definition, "fields", list, "form_response.definition", required=False) or []
        ):
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                titles[item["id"]] = str(item.get("title") or "")

        answers: list[Answer] = []
        for index, item in enumerate(answers_in):
            where = f"form_response.answers[{index}]"
            if not isinstance(item, dict):
                raise PayloadError(f"expected {where} to be an object with type and field")
            field = member(item, "field", dict, where)
            field_id = str(field.get("id") or "")
            ids = tuple(
                n
                for n in (
                    norm(field.get("ref") or ""),
                    norm(field_id),
                    norm(titles.get(field_id, "")),
                )
                if n
            )
            kind = str(field.get("type") or item.get("type") or "")
            answers.append(Answer(ids, kind, answer_value(item)))

        custom: dict[str, str] = {}
        hidden = member(response, "hidden", dict, "form_response", required=False) or {}
        for key, value in hidden.items():
            text = custom_value(value)
            answers.append(Answer((norm(key),), "hidden", text))
            if text is not None:
                custom[str(key)] = text

        fields = map_answers(
            answers,
            lookup=request.lookup,
            prefix="TYPEFORM",
            email_kinds=("email",),
            phone_kinds=("phone_number",),
            fallback_name_kinds=("short_text",),
        )
        form_id = custom_value(response.get("form_id"))
        token = custom_value(response.get("token"))
        for key, value in (
            ("typeform_form_id", form_id),
            ("form_name", custom_value(definition.get("title"))),
            ("typeform_response_id", token),
        ):
            if value is not None:
                custom[key] = value

        # One submission is one response token, across retries and across several webhooks
        # on the same form; event_id only when a payload has no token.
        if token is not None:
            event_id: str | None = f"{form_id}:{token}" if form_id else token
        else:
            event_id = str(delivery) if delivery else None
        return WebhookEvent.unless_unreachable(
            event_id,
            fields,
            custom_fields=custom,
            event_type=event_type,
            consent=consent_answer(answers, lookup=request.lookup, prefix="TYPEFORM"),
        )


channel = WebhookChannel(TypeformProvider())
