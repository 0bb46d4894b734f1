"""Checks done before a request reaches bolt, where bolt 1.30 answers wrongly or not at all.

* Signatures: v0 HMAC-SHA256 over ``v0:<timestamp>:<raw body>``, 5-minute window,
  constant-time compare. Bolt answers a non-numeric timestamp header with a 500; we
  answer 400, and 401 for anything missing, stale or forged.
* Bodies: bolt's parser treats any form body containing the *substring* ``payload``
  as an interactivity payload and loses a slash command whose text says "payload"
  (contract §3.8.1); :func:`parse_body` only decodes JSON when the *field* exists.
* Shapes: bolt indexes into a payload's parts without checking their types, so a signed
  payload whose ``actions`` is a string (say) is an empty 500 from inside its middleware;
  :func:`parse_body` raises :class:`MalformedPayload` (a 400 naming the part) instead.
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

__all__ = [
    "SIGNATURE_WINDOW",
    "MalformedPayload",
    "Refusal",
    "check_shape",
    "check_signature",
    "is_ssl_check",
    "parse_body",
]

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


class MalformedPayload(ValueError):
    """A well-formed body whose parts are not of the types Slack sends (a 400)."""


# Parts bolt or our listeners read, and the JSON type Slack sends them as (None is fine).
_OBJECTS = (
    "user",
    "team",
    "enterprise",
    "channel",
    "container",
    "message",
    "event",
    "view",
    "state",
)
_STRINGS = (
    "type",
    "command",
    "callback_id",
    "action_id",
    "trigger_id",
    "response_url",
    "text",
    "user_id",
    "team_id",
    "enterprise_id",
    "channel_id",
    "api_app_id",
)
_LISTS_OF_OBJECTS = ("actions", "response_urls", "authorizations")


def _present(data: dict[str, Any], key: str) -> bool:
    return data.get(key) is not None


def check_shape(data: dict[str, Any]) -> str | None:
    """None when every part bolt reads has the JSON type Slack sends; otherwise what not."""
    for key in _STRINGS:
        if _present(data, key) and not isinstance(data[key], str):
            return f"'{key}' must be a string"
    for key in _OBJECTS:
        if _present(data, key) and not isinstance(data[key], dict):
            return f"'{key}' must be an object"
    for key in _LISTS_OF_OBJECTS:
        value = data.get(key)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(item, dict) for item in value)
        ):
            return f"'{key}' must be a list of objects"
    kind = data.get("type")
    if kind == "block_actions":
        actions = data.get("actions")
        if not actions or not all(isinstance(a.get("action_id"), str) for a in actions):
            return "'actions' must be a non-empty list of objects, each with an action_id"
    if kind in ("view_submission", "view_closed"):
        view = data.get("view")
        if view is None:
            return "'view' is missing"
        for key in ("callback_id", "type"):
            if not isinstance(view.get(key), str):
                return f"'view.{key}' must be a string"
        if _present(view, "private_metadata") and not isinstance(view["private_metadata"], str):
            return "'view.private_metadata' must be a string"
    if kind == "view_submission":
        state = data["view"].get("state")
        if not isinstance(state, dict):
            return "'view.state' must be an object"
        values = state.get("values")
        if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
            return "'view.state.values' must be an object of objects"
    event = data.get("event")
    if isinstance(event, dict) and not isinstance(event.get("type"), str):
        return "'event.type' must be a string"
    return None


def _loads(text: str) -> Any:
    """``json.loads`` whose every failure is a ValueError (a 400, never a 500)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


def parse_body(text: str, headers: Headers) -> dict[str, Any]:
    """What bolt's ``parse_body`` should return; raises ValueError on malformed input.

    :class:`MalformedPayload` (a ValueError) says which part of a parsed payload has a
    type Slack never sends.
    """
    if not text:
        return {}
    data: Any
    if _content_type(headers) == "application/json" or text.startswith("{"):
        data = _loads(text)
    else:
        fields = dict(parse_qsl(text, keep_blank_values=True, strict_parsing=False))
        data = _loads(fields["payload"]) if "payload" in fields else fields
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    problem = check_shape(data)
    if problem is not None:
        raise MalformedPayload(problem)
    return data
