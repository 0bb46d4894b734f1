"""``POST /webhooks/tally``: Tally's ``FORM_RESPONSE`` webhook (widgets.md §6b).

Authentication: ``Tally-Signature: <base64 HMAC-SHA256(signing secret, payload)>``, no
prefix and no timestamp. Tally's own example signs ``JSON.stringify(req.body)``, so
the raw bytes are checked first and the compact re-serialisation second. The signing
secret is optional in Tally, but not here: set one on the webhook and the same value
in ``TALLY_WEBHOOK_SECRET``.

Mapping, unless ``TALLY_FIELD_NAME`` / ``_EMAIL`` / ``_PHONE`` name the fields (field
``key`` or label): the email is the first ``INPUT_EMAIL`` field, the phone the first
``INPUT_PHONE_NUMBER`` field (else a field labelled with a phone word), the name the
field labelled ``Name``/``Full name`` (or ``First name`` + ``Last name``), else the
first ``INPUT_TEXT`` field. Choice answers are resolved to their option text. Extras
kept as custom fields: ``tally_form_id``, ``tally_response_id``, ``tally_respondent_id``,
``form_name`` and every hidden field. Dedupe on ``eventId``, which Tally
keeps across its retries.
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
    stringified,
)

__all__ = ["TallyProvider", "channel", "tally_signature"]

SIGNATURE_HEADER = "tally-signature"
EXPECTED = (
    'a Tally webhook: {"eventId": …, "eventType": "FORM_RESPONSE", '
    '"data": {"responseId": …, "formId": …, "fields": [{"key", "label", "type", "value"}, …]}}'
)


def tally_signature(secret: str, payload: bytes) -> str:
    """The ``Tally-Signature`` header value for ``payload``."""
    return base64.b64encode(hmac.new(secret.encode(), payload, hashlib.sha256).digest()).decode()


def field_value(item: dict[str, Any]) -> str | None:
    """A field's answer as text: option ids resolved to their text, files/payments: none."""
    value = item.get("value")
    options = item.get("options")
    if isinstance(options, list) and isinstance(value, list | str):
        texts = {
            str(o.get("id")): o.get("text")
            for o in options
            if isinstance(o, dict) and o.get("id") is not None
        }
        chosen = value if isinstance(value, list) else [value]
        value = [texts.get(str(v), v) if isinstance(v, str) else v for v in chosen]
    return custom_value(value)


class TallyProvider(WebhookProvider):
    name = "tally"
    label = "Tally"
    secret_setting = "TALLY_WEBHOOK_SECRET"
    field_prefix = "TALLY"
    success_status = 200  # any 2xx, within 10 s

    def verify(self, request: WebhookRequest, secret: str, *, now: float) -> bool:
        given = request.headers.get(SIGNATURE_HEADER)
        if not given:
            return False
        given = given.strip()
        if constant_time_equal(given, tally_signature(secret, request.body)):
            return True
        compact = stringified(request.body)  # what Tally's documented example signs
        return compact is not None and constant_time_equal(given, tally_signature(secret, compact))

    def parse(self, request: WebhookRequest) -> WebhookEvent:
        data = json_object(request.body, EXPECTED)
        event_type = event_kind(data, "eventType", EXPECTED)
        delivery = custom_value(data.get("eventId"))
        if event_type != "FORM_RESPONSE":
            return WebhookEvent(
                event_id=delivery,
                ignored=f"event type {event_type!r} carries no form response",
                event_type=event_type,
            )
        payload = member(data, "data", dict, "the body")
        items = member(payload, "fields", list, "data")

        answers: list[Answer] = []
        custom: dict[str, str] = {}
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise PayloadError(
                    f"expected data.fields[{index}] to be an object with key and value"
                )
            ids = tuple(
                n for n in (norm(item.get("key") or ""), norm(item.get("label") or "")) if n
            )
            kind = str(item.get("type") or "")
            value = field_value(item)
            answers.append(Answer(ids, kind, value))
            label = item.get("label") or item.get("key")
            if kind == "HIDDEN_FIELDS" and value is not None and label:
                custom[str(label)] = value

        fields = map_answers(
            answers,
            lookup=request.lookup,
            prefix="TALLY",
            email_kinds=("INPUT_EMAIL",),
            phone_kinds=("INPUT_PHONE_NUMBER",),
            fallback_name_kinds=("INPUT_TEXT",),
        )
        response_id = custom_value(payload.get("responseId"))
        for key, source in (
            ("tally_form_id", "formId"),
            ("form_name", "formName"),
            ("tally_response_id", "responseId"),
            ("tally_respondent_id", "respondentId"),
        ):
            if (text := custom_value(payload.get(source))) is not None:
                custom[key] = text

        event_id = delivery or (f"response:{response_id}" if response_id else None)
        return WebhookEvent.unless_unreachable(
            event_id,
            fields,
            custom_fields=custom,
            event_type=event_type,
            consent=consent_answer(answers, lookup=request.lookup, prefix="TALLY"),
        )


channel = WebhookChannel(TallyProvider())
