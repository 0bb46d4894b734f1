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

This module also holds the small helpers the form-tool providers share: reading a
JSON object, and picking name/email/phone out of a list of answers by a configured
mapping, else by field type, else by label.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapter.channels import check_timestamp, verify_hmac
from adapter.webhooks import (
    PayloadError,
    WebhookChannel,
    WebhookEvent,
    WebhookProvider,
    WebhookRequest,
    body_digest,
)

__all__ = [
    "Answer",
    "GenericProvider",
    "channel",
    "custom_value",
    "json_object",
    "map_answers",
    "mapping_setting",
    "member",
    "no_contact_reason",
    "norm",
    "text_value",
]

TIMESTAMP_HEADER = "x-contact-adapter-timestamp"
SIGNATURE_HEADER = "x-contact-adapter-signature"
MAX_CUSTOM_VALUE = 1000

# ---------------------------------------------------------------------------------------------
# Shared helpers (also used by handlers.livechat, handlers.typeform, handlers.tally)

_NON_WORD = re.compile(r"[^0-9a-z]+")

NAME_LABELS = frozenset(
    {
        "name",
        "full name",
        "fullname",
        "your name",
        "your full name",
        "contact name",
        "first and last name",
        "name and surname",
        "what is your name",
        "what s your name",
        "what is your full name",
        "what s your full name",
        "nome",
        "nome completo",
        "nombre",
        "nombre completo",
        "nom",
        "nom complet",
        "vollstandiger name",
    }
)
FIRST_NAME_LABELS = frozenset({"first name", "firstname", "given name", "forename", "first"})
LAST_NAME_LABELS = frozenset({"last name", "lastname", "surname", "family name", "last"})
EMAIL_LABELS = frozenset(
    {
        "email",
        "e mail",
        "email address",
        "e mail address",
        "your email",
        "your email address",
        "your e mail",
        "work email",
        "business email",
        "mail",
        "correo",
        "correo electronico",
    }
)
PHONE_WORDS = frozenset(
    {
        "phone",
        "telephone",
        "tel",
        "mobile",
        "cell",
        "cellphone",
        "whatsapp",
        "telefone",
        "telefono",
        "telefon",
        "celular",
        "handy",
    }
)


def norm(label: object) -> str:
    """A label or id as compared: lower case, accents and punctuation folded to spaces."""
    text = unicodedata.normalize("NFKD", str(label)).encode("ascii", "ignore").decode().lower()
    return _NON_WORD.sub(" ", text).strip()


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def json_object(body: bytes, expected: str) -> dict[str, Any]:
    """The body as a JSON object, or :class:`PayloadError` saying what was expected."""
    try:
        data = json.loads(body.decode("utf-8-sig"))  # JSON on the wire is UTF-8 (RFC 8259)
    except UnicodeDecodeError:
        raise PayloadError(f"expected {expected}; the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"expected {expected}; the body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise PayloadError(f"expected {expected}; got a JSON {_kind(data)}")
    return data


def member(
    parent: Mapping[str, Any], key: str, kind: type[Any], where: str, *, required: bool = True
) -> Any:
    """``parent[key]`` checked to be a ``kind`` (dict, list, str); None when absent and optional."""
    value = parent.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, kind):
        names: dict[type[Any], str] = {dict: "an object", list: "an array", str: "a string"}
        wanted = names.get(kind, kind.__name__)
        got = "missing" if key not in parent else f"a JSON {_kind(value)}"
        raise PayloadError(f"expected {where}.{key} to be {wanted}, got {got}")
    return value


def text_value(value: object, where: str = "") -> str | None:
    """A scalar answer as text (lists joined); None when empty; objects are refused."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, list):
        parts = [text_value(item, where) for item in value]
        joined = ", ".join(p for p in parts if p)
        return joined or None
    raise PayloadError(f"expected {where or 'the answer'} to be text, got a JSON {_kind(value)}")


@dataclass(frozen=True)
class Answer:
    """One answered question, as the mapping sees it."""

    ids: tuple[str, ...]  # normalised identifiers: key / ref / id, then label / title
    kind: str  # the provider's field type ("INPUT_EMAIL", "email", "short_text", …)
    value: str | None


def mapping_setting(lookup: Callable[[str], str | None], name: str) -> tuple[tuple[str, ...], ...]:
    """A field-mapping setting: comma-separated alternatives, each one id or several joined by
    ``+`` (``first_name+last_name``), normalised; empty when not set."""
    raw = lookup(name) or ""
    alternatives = (
        tuple(n for n in (norm(part) for part in alternative.split("+")) if n)
        for alternative in raw.split(",")
    )
    return tuple(a for a in alternatives if a)


def _has_phone_word(ids: Iterable[str]) -> bool:
    return any(PHONE_WORDS & set(i.split()) for i in ids)


def map_answers(
    answers: Sequence[Answer],
    *,
    lookup: Callable[[str], str | None],
    prefix: str,
    name_kinds: Iterable[str] = (),
    email_kinds: Iterable[str] = (),
    phone_kinds: Iterable[str] = (),
    fallback_name_kinds: Iterable[str] = (),
) -> dict[str, str | None]:
    """Pick name, email and phone from ``answers``.

    ``<PREFIX>_FIELD_NAME`` / ``_EMAIL`` / ``_PHONE`` come first when set: comma-separated
    alternatives (ids, keys, refs or labels), the first one answered wins; ``a+b`` joins
    several answers with a space (first name + last name). When none of them is answered,
    the defaults: by field type (``*_kinds``), then by label (``Name``/``Full name``,
    ``First name`` + ``Last name``, ``Email``, a label with a phone word), then, for the
    name, the first answer of a ``fallback_name_kinds`` type.
    """
    answered = [a for a in answers if a.value is not None]
    name_kinds, email_kinds = frozenset(name_kinds), frozenset(email_kinds)
    phone_kinds, fallback_name_kinds = frozenset(phone_kinds), frozenset(fallback_name_kinds)

    def value_of(key: str) -> str | None:
        return next((a.value.strip() for a in answered if a.value and key in a.ids), None)

    def configured(setting: str) -> str | None:
        for parts in mapping_setting(lookup, f"{prefix}_FIELD_{setting}"):
            values = [v for v in map(value_of, parts) if v]
            if values:
                return " ".join(values)
        return None

    def first(predicate: Callable[[Answer], bool]) -> str | None:
        return next((a.value for a in answered if predicate(a)), None)

    name = configured("NAME") or first(lambda a: a.kind in name_kinds)
    name = name or first(lambda a: bool(NAME_LABELS & set(a.ids)))
    if name is None:
        given = first(lambda a: bool(FIRST_NAME_LABELS & set(a.ids)))
        family = first(lambda a: bool(LAST_NAME_LABELS & set(a.ids)))
        if given or family:
            name = " ".join(v.strip() for v in (given, family) if v)
    if name is None:
        name = first(lambda a: a.kind in fallback_name_kinds)

    email = configured("EMAIL") or first(lambda a: a.kind in email_kinds)
    email = email or first(lambda a: bool(EMAIL_LABELS & set(a.ids)))
    phone = configured("PHONE") or first(lambda a: a.kind in phone_kinds)
    phone = phone or first(lambda a: _has_phone_word(a.ids))
    return {"name": name, "email": email, "phone": phone}


def custom_value(value: object) -> str | None:
    """An extra kept as a custom field: short text, or nothing."""
    try:
        text = text_value(value)
    except PayloadError:
        return None
    if text is None:
        return None
    return text.strip()[:MAX_CUSTOM_VALUE] or None


def no_contact_reason(fields: Mapping[str, str | None]) -> str | None:
    """Why an event is ignored: it carries neither an email nor a phone."""
    if fields.get("email") or fields.get("phone"):
        return None
    return "no email or phone in the event"


# ---------------------------------------------------------------------------------------------
# The generic provider

_TOP_LEVEL = ("name", "full_name", "first_name", "last_name", "email", "phone", "phone_number")


class GenericProvider(WebhookProvider):
    """Any sender that signs JSON with our recipe (§12): Google Forms, Zapier, Make, n8n."""

    name = "generic"
    secret_setting = "GENERIC_WEBHOOK_SECRET"
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
        event = WebhookEvent(
            event_id=event_id,
            fields=fields,
            person_key=f"{source}:{person}" if source and person else person,
            custom_fields=custom,
            event_type=source or "generic",
        )
        reason = no_contact_reason(fields)
        if reason is not None:
            return WebhookEvent(event_id=event_id, ignored=reason, event_type=event.event_type)
        return event


channel = WebhookChannel(GenericProvider())
