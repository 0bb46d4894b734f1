"""``POST /webhooks/generic``: a signed JSON webhook for any sender (Google Forms, Zapier, Make, n8n).

Our own contract (widgets.md §12): the body is a JSON object, the sender signs it
with a shared secret and the current time::

    X-Contact-Adapter-Timestamp: <unix seconds>
    X-Contact-Adapter-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>

and we refuse a timestamp more than 300 s away from now. The body carries the
contact either at the top level (``name``, ``email``, ``phone``) or as ``answers``
keyed by question title (what a Google Forms script sends); ``GENERIC_FIELD_NAME``,
``GENERIC_FIELD_EMAIL`` and ``GENERIC_FIELD_PHONE`` name the questions when the
titles are not the usual ones. The event id is ``event_id`` or ``response_id``
(namespaced by ``source``), else the body's digest (senders retry the same body
with a fresh timestamp).
"""

from __future__ import annotations

from adapter.channels import (
    Answer,
    WebhookChannel,
    WebhookEvent,
    WebhookProvider,
    WebhookRequest,
    body_digest,
    check_timestamp,
    consent_answer,
    consent_given,
    custom_value,
    json_object,
    map_answers,
    member,
    norm,
    text_value,
    timestamp_offset,
    verify_hmac,
)

__all__ = ["GenericProvider", "channel"]

TIMESTAMP_HEADER = "x-contact-adapter-timestamp"
SIGNATURE_HEADER = "x-contact-adapter-signature"

_TOP_LEVEL = ("name", "full_name", "first_name", "last_name", "email", "phone", "phone_number")


class GenericProvider(WebhookProvider):
    """Any sender that signs JSON with our recipe (§12): Google Forms, Zapier, Make, n8n."""

    name = "generic"
    label = "Generic webhook"
    secret_setting = "GENERIC_WEBHOOK_SECRET"
    field_prefix = "GENERIC"
    success_status = 200
    timestamp_window = 300.0

    def verify(self, request: WebhookRequest, secret: str, *, now: float) -> bool:
        stamp = request.headers.get(TIMESTAMP_HEADER)
        signature = request.headers.get(SIGNATURE_HEADER)
        if not stamp or not signature:
            return False
        if not check_timestamp(stamp, window=self.timestamp_window, now=now):
            return False
        message = stamp.encode() + b"." + request.body
        return verify_hmac(secret, message, signature, prefix="sha256=")

    def stale_by(self, request: WebhookRequest, secret: str, *, now: float) -> float | None:
        stamp = request.headers.get(TIMESTAMP_HEADER)
        signature = request.headers.get(SIGNATURE_HEADER)
        offset = timestamp_offset(stamp, now=now)
        if not stamp or not signature or offset is None:
            return None
        message = stamp.encode() + b"." + request.body
        return offset if verify_hmac(secret, message, signature, prefix="sha256=") else None

    def parse(self, request: WebhookRequest) -> WebhookEvent:
        what = (
            'a JSON object like {"response_id": "…", "answers": {"Name": "…", "Email": "…", '
            '"Phone": "…"}} or {"name": "…", "email": "…", "phone": "…"}'
        )
        data = json_object(request.body, what)
        answers: list[Answer] = []
        for key in _TOP_LEVEL:
            if key in data:
                answers.append(Answer((norm(key),), "top-level", text_value(data[key], key)))
        given = member(data, "answers", dict, "the body", required=False) or {}
        for title, value in given.items():
            # Lenient: an answer that is not text (an address object, a file) is just not used.
            answers.append(Answer((norm(title),), "answer", custom_value(value)))
        fields = map_answers(answers, lookup=request.lookup, prefix="GENERIC")

        custom: dict[str, str] = {}
        extra = member(data, "custom_fields", dict, "the body", required=False) or {}
        for key, value in extra.items():
            if (text := custom_value(value)) is not None:
                custom[str(key)] = text
        for key in ("form_id", "form_name", "response_id", "page_url"):
            if (text := custom_value(data.get(key))) is not None:
                custom[key] = text

        source = custom_value(data.get("source"))
        own_id = custom_value(data.get("event_id")) or custom_value(data.get("response_id"))
        if own_id is not None:
            event_id = f"{source}:{own_id}" if source else own_id
        else:
            event_id = body_digest(request.body)
        person = custom_value(data.get("person_id"))
        return WebhookEvent.unless_unreachable(
            event_id,
            fields,
            person_key=f"{source}:{person}" if source and person else person,
            custom_fields=custom,
            event_type=source or "generic",
            consent=consent_given(data.get("consent"))
            or consent_answer(answers, lookup=request.lookup, prefix="GENERIC"),
        )


channel = WebhookChannel(GenericProvider())
