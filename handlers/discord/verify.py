"""Checking an interaction request, and reading its payload (pure: the clock is passed in).

Signature (contract §3.3): Ed25519 over the ``X-Signature-Timestamp`` header's bytes
followed by the raw body, with the application's public key; anything missing, malformed
or forged is a 401, which Discord requires (it sends invalid signatures on purpose and
removes an endpoint that accepts them). Discord documents no freshness rule; we refuse a
timestamp more than :data:`SIGNATURE_WINDOW` seconds from our clock, and the interaction
id dedupes whatever is replayed inside that window (the ledger keeps event ids for good).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from starlette.datastructures import Headers

__all__ = [
    "PING",
    "SIGNATURE_WINDOW",
    "Interaction",
    "MalformedInteraction",
    "check_signature",
    "parse_interaction",
]

SIGNATURE_WINDOW = 300  # seconds
PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_SIGNATURE = re.compile(r"^[0-9a-fA-F]{128}$")
_SNOWFLAKE = re.compile(r"^[0-9]{1,20}$")


def check_signature(
    public_key: Ed25519PublicKey, headers: Headers, body: bytes, *, now: float
) -> str | None:
    """None when Discord signed ``body`` recently; otherwise why not (answer 401)."""
    timestamp = headers.get("x-signature-timestamp")
    signature = headers.get("x-signature-ed25519")
    if timestamp is None or signature is None:
        return (
            "missing X-Signature-Ed25519 or X-Signature-Timestamp: only interactions "
            "signed by Discord are accepted"
        )
    if not _TIMESTAMP.match(timestamp) or not _SIGNATURE.match(signature):
        return "X-Signature-Ed25519 must be 128 hex digits and X-Signature-Timestamp Unix seconds"
    try:
        public_key.verify(bytes.fromhex(signature), timestamp.encode() + body)
    except InvalidSignature:
        return "X-Signature-Ed25519 does not match: check DISCORD_PUBLIC_KEY"
    if abs(now - int(timestamp)) > SIGNATURE_WINDOW:
        return (
            "X-Signature-Timestamp is more than 5 minutes away from our clock: a replayed "
            "interaction, or a clock out of sync"
        )
    return None


class MalformedInteraction(ValueError):
    """A signed body that is not an interaction of the shape Discord sends (a 400)."""


@dataclass(frozen=True)
class Interaction:
    """The parts of an interaction the channel reads, checked for type."""

    id: str
    type: int
    application_id: str
    token: str
    user_id: str | None = None
    guild_id: str | None = None
    channel_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def custom_id(self) -> str:
        value = self.data.get("custom_id")
        return value if isinstance(value, str) else ""


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedInteraction(f"'{where}' must be an object")
    return value


def _snowflake(value: Any, where: str, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _SNOWFLAKE.match(value):
        raise MalformedInteraction(f"'{where}' must be a Discord id (a string of digits)")
    return value


def _list_of_objects(value: Any, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise MalformedInteraction(f"'{where}' must be a list of objects")
    return value


def parse_interaction(body: bytes) -> Interaction:
    """The interaction in ``body``; MalformedInteraction naming the part otherwise."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise MalformedInteraction("the body is not valid UTF-8") from None
    except (ValueError, RecursionError):
        raise MalformedInteraction("the body is not JSON") from None
    if not isinstance(data, dict):
        raise MalformedInteraction("the body must be a JSON object")
    kind = data.get("type")
    if not isinstance(kind, int) or isinstance(kind, bool):
        raise MalformedInteraction("'type' must be an integer (1 PING … 5 MODAL_SUBMIT)")
    interaction_id = _snowflake(data.get("id"), "id", required=True)
    application_id = _snowflake(data.get("application_id"), "application_id", required=True)
    token = data.get("token")
    if not isinstance(token, str) or not token or len(token) > 500:
        raise MalformedInteraction("'token' must be a non-empty string")
    member = _object(data.get("member"), "member")
    user = _object(member.get("user"), "member.user") or _object(data.get("user"), "user")
    payload = _object(data.get("data"), "data")
    if kind in (APPLICATION_COMMAND, MESSAGE_COMPONENT, MODAL_SUBMIT) and not payload:
        raise MalformedInteraction(f"'data' must be an object for an interaction of type {kind}")
    if kind == APPLICATION_COMMAND:
        if not isinstance(payload.get("name"), str):
            raise MalformedInteraction("'data.name' must be a string")
        for option in _list_of_objects(payload.get("options"), "data.options"):
            if not isinstance(option.get("name"), str):
                raise MalformedInteraction("'data.options[].name' must be a string")
    if kind in (MESSAGE_COMPONENT, MODAL_SUBMIT) and not isinstance(payload.get("custom_id"), str):
        raise MalformedInteraction("'data.custom_id' must be a string")
    if kind == MODAL_SUBMIT:
        for row in _list_of_objects(payload.get("components"), "data.components"):
            _object(row.get("component"), "data.components[].component")
            _list_of_objects(row.get("components"), "data.components[].components")
    channel = _object(data.get("channel"), "channel")
    assert interaction_id is not None and application_id is not None
    return Interaction(
        id=interaction_id,
        type=kind,
        application_id=application_id,
        token=token,
        user_id=_snowflake(user.get("id"), "user.id"),
        guild_id=_snowflake(data.get("guild_id"), "guild_id"),
        channel_id=_snowflake(data.get("channel_id") or channel.get("id"), "channel_id"),
        data=payload,
    )
