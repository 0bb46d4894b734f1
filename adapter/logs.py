"""Structured logging: one JSON line per event, with personal data and secrets redacted.

structlog renders every event (ours and the standard library's, e.g. uvicorn's)
as one JSON object on stdout. :func:`redact` runs last before rendering: values
under personal or secret keys are replaced, and emails, phone-like digit runs and
bearer tokens inside any text are masked, so a careless log call cannot leak them.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

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
_EMAIL = re.compile(r"[^\s@<>\"'(),;:|]+@[^\s@<>\"'(),;:|]+")
_PHONE = re.compile(r"(?<![\w-])\+?\d[\d\s().-]{6,}\d(?![\w-])")
_BEARER = re.compile(r"(?i)(bearer|token|secret|key)([=:\s]+)[^\s&,;\"']+")
REDACTED = "[redacted]"


def redact_text(value: str) -> str:
    """Mask emails, phone numbers and tokens inside free text."""
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
    for noisy in ("httpx", "httpcore", "aiosqlite", "asyncio", "slack_bolt", "slack_sdk"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
