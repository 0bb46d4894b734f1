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
import sys
from typing import Any

import structlog

from adapter.core.redact import REDACTED, redact, redact_text

__all__ = ["REDACTED", "configure_logging", "redact", "redact_text"]


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
