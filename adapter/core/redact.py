"""Redaction of personal data and secrets, as pure functions (logs, public views, errors).

:func:`redact_text` masks emails, phone-like digit runs, bearer tokens and secrets in
query strings inside any text (also percent-decoded), and drops the bound parameters
SQLAlchemy quotes in its exception messages and pydantic's ``input_value``; IPv4
addresses are kept. :func:`redact` is the structlog processor that applies it to every
log line, replacing values under personal or secret keys outright. The ``mask_*``
functions show a person's details the way the admin pages do (``C**** D**``,
``c***@example.com``, ``+1 *** *** **71``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import unquote_plus

__all__ = [
    "REDACTED",
    "mask_email",
    "mask_message",
    "mask_name",
    "mask_phone",
    "masked_fields",
    "redact",
    "redact_text",
]

_SENSITIVE_KEYS = re.compile(
    r"(name|email|phone|token|secret|password|authorization|cookie|text|fields|body|"
    r"response_url|trigger_id|custom_fields|contact_manager|person|visitor|x-auth)",
    re.IGNORECASE,
)
_SAFE_KEYS = frozenset(
    {
        "event",
        "level",
        "logger",
        "timestamp",
        "delivery_id",
        "request_id",
        "source",
        "status",
        "method",
        "path",
        "attempt",
        "strategy",
        "channel",
        "error",
        "reason",
        "delay",
        "wait_until",
        "duration_ms",
        "exc_info",
        "exception",
        "filename",
        "func_name",
        "lineno",
        "logger_name",
        "provider",
        "event_type",
        "count",
        "version",
    }
)
_EMAIL = re.compile(r"[^\s@<>\"'(),;:|?&=/\[\]]+@[^\s@<>\"'(),;:|?&=/\[\]]+")
_IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}(?![\d.])"
_PHONE = re.compile(rf"(?<![\w-])(?!{_IPV4})\+?\d[\d\s().-]{{6,}}\d(?![\w-])")
_BEARER = re.compile(r"(?i)(bearer|token|secret|key)([=:\s]+)([^\s&,;\"']+)")
_QUERY_SECRET = re.compile(
    r"(?i)([?&](?:code|state|token|access_token|signature|sig|key|secret|password)=)[^&\s\"']+"
)
# Our visitor tokens (keyed "ocak-", and the unkeyed "oca-" of older releases): a guest's
# only credential on Rocket.Chat's Livechat API, wherever a message might quote one.
_VISITOR_TOKEN = re.compile(r"\bocak?-[0-9a-f]{32}\b")
_SQL_PARAMETERS = re.compile(r"\[parameters: [^\n]*")  # SQLAlchemy: the row's values
_PYDANTIC_INPUT = re.compile(r"input_value=.*?(?=, input_type=|$)", re.MULTILINE)
REDACTED = "[redacted]"


def redact_text(value: str) -> str:
    """Mask emails, phone numbers, tokens and echoed values inside free text."""
    if "%" in value:
        decoded = unquote_plus(value)
        if decoded != value and _redact_plain(decoded) != decoded:
            return _redact_plain(decoded)  # something personal was percent-encoded
    return _redact_plain(value)


def _redact_plain(value: str) -> str:
    value = _SQL_PARAMETERS.sub("[parameters: " + REDACTED + "]", value)
    value = _VISITOR_TOKEN.sub(REDACTED, value)
    value = _PYDANTIC_INPUT.sub("input_value=" + REDACTED, value)
    value = _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, value)
    value = _EMAIL.sub(REDACTED, value)
    value = _PHONE.sub(REDACTED, value)
    return _BEARER.sub(_token_value, value)


# Words that follow "secret", "token" or "key" in our own sentences ("set X_SECRET to the
# secret from Chatwoot", "X_KEY (Developer Portal…)"): not a value, so not masked.
_PROSE = frozenset(
    [
        "to",
        "or",
        "and",
        "from",
        "of",
        "the",
        "a",
        "an",
        "in",
        "is",
        "are",
        "was",
        "for",
        "with",
        "that",
        "this",
        "it",
        "not",
        "set",
        "as",
        "by",
        "on",
        "at",
        "be",
        "you",
        "your",
        "its",
        "their",
        "which",
        "unset",
        "missing",
        "required",
        "empty",
    ]
)


def _token_value(match: re.Match[str]) -> str:
    word, separator, given = (
        match.group(1),
        match.group(2),
        match.group(0)[match.end(2) - match.start(0) :],
    )
    if separator.isspace() and (given.rstrip(":.").lower() in _PROSE or given.startswith("(")):
        return match.group(0)
    return word + separator + REDACTED


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: (REDACTED if _is_sensitive(str(k)) else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _is_sensitive(key: str) -> bool:
    return key not in _SAFE_KEYS and bool(_SENSITIVE_KEYS.search(key))


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: no personal data or secret leaves the process in a log line."""
    for key in list(event_dict):
        if _is_sensitive(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


# -- the admin pages' masks ----------------------------------------------------------


def _mask_word(word: str) -> str:
    return word[:1] + "*" * (len(word) - 1)


def mask_name(name: str | None) -> str:
    """``Chris Doe`` → ``C**** D**``."""
    if not name or not str(name).strip():
        return ""
    return " ".join(_mask_word(w) for w in str(name).split())


def mask_email(email: str | None) -> str:
    """``chris@example.com`` → ``c***@example.com``."""
    if not email or not str(email).strip():
        return ""
    local, at, domain = str(email).strip().rpartition("@")
    if not at:
        return _mask_word(domain[:1]) + "***"
    return f"{local[:1]}***@{domain}"


def mask_phone(phone: str | None) -> str:
    """``+14155552671`` → ``+1 *** *** **71``: country code and the last two digits."""
    if not phone or not str(phone).strip():
        return ""
    import phonenumbers

    text = str(phone).strip()
    prefix = ""
    try:
        number = phonenumbers.parse(text, None)
        digits = phonenumbers.national_significant_number(number)
        prefix = f"+{number.country_code} "
    except phonenumbers.NumberParseException:
        digits = re.sub(r"\D", "", text)
    if len(digits) <= 2:
        return prefix + "*" * len(digits)
    masked = "*" * (len(digits) - 2) + digits[-2:]
    groups = []
    while len(masked) > 4:
        groups.append(masked[:3])
        masked = masked[3:]
    groups.append(masked)
    return prefix + " ".join(groups)


def _mask_other(value: str | None) -> str:
    return _mask_word(value) + "***" if value else ""


_MASKS: dict[str, Callable[[str | None], str]] = {
    "name": mask_name,
    "email": mask_email,
    "phone": mask_phone,
}
_QUOTED = re.compile(r"""^(?P<q>['"])(?P<value>.*?)(?P=q)(?P<rest>.*)$""", re.DOTALL)


def mask_message(fieldname: str, message: str) -> str:
    """A field error names the value as given (``'chris@' is not…``): mask that value."""
    match = _QUOTED.match(message)
    if match is None:
        return redact_text(message)
    mask = _MASKS.get(fieldname, _mask_other)
    return repr(mask(match["value"])) + redact_text(match["rest"])


def masked_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """A delivery's contact fields as the admin page shows them: each one masked."""
    custom = fields.get("custom_fields") or {}
    return {
        "name": mask_name(fields.get("name")),
        "email": mask_email(fields.get("email")),
        "phone": mask_phone(fields.get("phone")),
        "phone_extension": "***" if fields.get("phone_extension") else "",
        "custom_fields": ", ".join(
            f"{key}: {_mask_word(str(value))}" for key, value in sorted(custom.items())
        ),
    }
