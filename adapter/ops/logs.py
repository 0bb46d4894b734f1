"""Structured logging: one JSON line per event, with personal data and secrets redacted.

structlog renders every event (ours and the standard library's, e.g. uvicorn's)
as one JSON object on stdout. :func:`redact` runs last before rendering: values
under personal or secret keys are replaced, and emails, phone-like digit runs and
bearer tokens inside any text are masked, so a careless log call cannot leak them.
Text is also checked percent-decoded (query strings), the bound parameters that
SQLAlchemy puts in its exception messages and the ``input_value`` of pydantic's
are dropped, and libraries that log request or SQL data at debug level (httpx,
SQLAlchemy, asyncpg…) are held at WARNING whatever ``LOG_LEVEL`` says. IPv4
addresses are kept: they are not phone numbers (and Heroku's router logs them anyway).

The request id (``X-Request-Id`` from Heroku's router, else a new one) is bound by
``adapter.app.RequestIdMiddleware`` and merged into every line of the request,
including uvicorn's access line; delivery lines carry ``delivery_id``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import unquote_plus

import structlog

__all__ = ["configure_logging", "redact", "redact_text"]

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


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Send structlog and standard-library records to stdout, one JSON object per line."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared[:-2], structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared[:-2],
        processors=[
            structlog.processors.format_exc_info,
            redact,
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # These log request bodies, URLs with query strings or SQL with its parameters at
    # INFO/DEBUG: personal data that no pattern can recognise (names), so never below WARNING.
    for noisy in _NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


_NOISY_LOGGERS = (
    "httpx",
    "httpcore",
    "hpack",
    "aiosqlite",
    "asyncpg",
    "sqlalchemy",
    "asyncio",
    "aiohttp",
    "multipart",
    "python_multipart",
    "urllib3",
    "slack_bolt",
    "slack_sdk",
    "handlers.slack.bolt",  # slack-bolt's logger as the Slack channel names it
    "watchfiles",
)
