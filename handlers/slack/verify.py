"""Checks done before a request reaches bolt, where bolt 1.30 answers wrongly or not at all.

* Signatures: v0 HMAC-SHA256 over ``v0:<timestamp>:<raw body>``, 5-minute window,
  constant-time compare. Bolt answers a non-numeric timestamp header with a 500; we
  answer 400, and 401 for anything missing, stale or forged.
* Bodies: bolt's parser treats any form body containing the *substring* ``payload``
  as an interactivity payload and loses a slash command whose text says "payload"
  (contract §3.8.1); :func:`parse_body` only decodes JSON when the *field* exists.
* ``ssl_check=1`` requests are unsigned and only want a 200.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import Headers

from adapter.channels import verify_hmac

__all__ = ["SIGNATURE_WINDOW", "Refusal", "check_signature", "is_ssl_check", "parse_body"]

SIGNATURE_WINDOW = 300  # seconds, as Slack documents
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str


def check_signature(
    secret: str, headers: Headers, body: bytes, *, now: float | None = None
) -> Refusal | None:
    """None when Slack signed ``body``; otherwise the status and why."""
    timestamp = headers.get("x-slack-request-timestamp")
    signature = headers.get("x-slack-signature")
    if timestamp is None or signature is None:
        if headers.get("authorization", "").lower().startswith("token "):
            return Refusal(
                401,
                "this endpoint takes Slack requests only (signed with X-Slack-Signature); "
                "Mattermost-style token requests are not supported",
            )
        return Refusal(
            401,
            "missing X-Slack-Request-Timestamp or X-Slack-Signature: only requests signed "
            "by Slack are accepted",
        )
    stamp = timestamp.strip()
    if not _TIMESTAMP.match(stamp):
        return Refusal(400, "X-Slack-Request-Timestamp must be a Unix time in whole seconds")
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > SIGNATURE_WINDOW:
        return Refusal(
            401,
            "X-Slack-Request-Timestamp is more than 5 minutes away from our clock: "
            "replayed request, or a clock out of sync",
        )
    if not signature.strip().startswith("v0="):
        return Refusal(401, "X-Slack-Signature must be v0=<hex HMAC-SHA256>")
    message = b"v0:" + stamp.encode() + b":" + body
    if not verify_hmac(secret, message, signature, prefix="v0="):
        return Refusal(401, "X-Slack-Signature does not match: check SLACK_SIGNING_SECRET")
    return None


def _content_type(headers: Headers) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def is_ssl_check(headers: Headers, body: bytes) -> bool:
    """Slack's unsigned certificate check: ``ssl_check=1&token=…``."""
    if b"ssl_check" not in body or _content_type(headers) == "application/json":
        return False
    try:
        fields = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        return False
    return fields.get("ssl_check") == "1"


def parse_body(text: str, headers: Headers) -> dict[str, Any]:
    """What bolt's ``parse_body`` should return; raises ValueError on malformed input."""
    if not text:
        return {}
    if _content_type(headers) == "application/json" or text.startswith("{"):
        data = json.loads(text)
    else:
        fields = dict(parse_qsl(text, keep_blank_values=True, strict_parsing=False))
        if "payload" in fields:
            data = json.loads(fields["payload"])
        else:
            return fields
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data
