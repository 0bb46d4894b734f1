"""Redaction of personal data and secrets, as pure functions (logs, public views, errors).

:func:`redact_text` masks emails, phone-like digit runs, bearer tokens and secrets in
query strings inside any text (also percent-decoded), and drops the bound parameters
SQLAlchemy quotes in its exception messages and pydantic's ``input_value``; IPv4
addresses are kept. :func:`redact` is the structlog processor that applies it to every
log line, replacing values under personal or secret keys outright.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import unquote_plus

__all__ = ["REDACTED", "redact", "redact_text"]

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
_BEARER = re.compile(r"(?i)(bearer|token|secret|key)([=:\s]+)[^\s&,;\"']+")
_QUERY_SECRET = re.compile(
    r"(?i)([?&](?:code|state|token|access_token|signature|sig|key|secret|password)=)[^&\s\"']+"
)
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
    value = _PYDANTIC_INPUT.sub("input_value=" + REDACTED, value)
    value = _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, value)
    value = _EMAIL.sub(REDACTED, value)
    value = _PHONE.sub(REDACTED, value)
    return _BEARER.sub(lambda m: m.group(1) + m.group(2) + REDACTED, value)


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
