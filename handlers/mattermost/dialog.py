"""The Mattermost interactive dialog, the signed ``state`` it carries, and reading what
Mattermost sends (pure: no I/O, the clock passed in). Shapes: contract §1.6-§1.7.

Mattermost signs nothing it posts to a dialog's ``url``, so the dialog's ``state`` carries
``<user_id>.<channel_id>.<expiry>[.<response_url id>].<HMAC-SHA256 hex>``, the MAC over
everything before it: a submission whose MAC, expiry, user or channel do not match is
refused. The response_url id lets the outcome reach the user after the dialog closes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from adapter.channels import CONTACT_FIELDS, constant_time_equal

__all__ = [
    "CALLBACK_ID",
    "DIALOG_SECONDS",
    "DialogState",
    "StateRefused",
    "Trigger",
    "dialog_definition",
    "dialog_errors",
    "read_hook_id",
    "read_state",
    "read_trigger",
    "sign_state",
]

CALLBACK_ID = "contact_dialog"
DIALOG_SECONDS = 15 * 60  # a dialog's state is good this long (the response_url lives 30 min)
LABELS = {"name": "Name", "email": "Email", "phone": "Phone"}
_ID = re.compile(r"^[a-z0-9]{26}$")
_MAC = re.compile(r"^[0-9a-f]{64}$")
_HELP_MAX = 150  # Mattermost's limit for help_text
_DEFAULT_MAX = 150  # and for a text element's default
_ERROR_MAX = 300


@dataclass(frozen=True)
class Trigger:
    """What a command's ``trigger_id`` says: base64 of ``<id>:<user_id>:<millis>:<sig>``."""

    id: str
    user_id: str
    issued_at: float  # seconds


def read_trigger(value: str) -> Trigger | None:
    """The parts of a trigger_id Mattermost made (its ECDSA signature is not checked: only
    the server has the key); None when it is not one."""
    try:
        decoded = base64.b64decode(value.encode("ascii"), validate=True).decode("utf-8")
    except (UnicodeError, ValueError, binascii.Error):
        return None
    parts = decoded.split(":", 3)
    if len(parts) != 4 or not _ID.match(parts[0]) or not _ID.match(parts[1]):
        return None
    if not parts[2].isdigit() or not 10 <= len(parts[2]) <= 14:
        return None
    return Trigger(id=parts[0], user_id=parts[1], issued_at=int(parts[2]) / 1000)


@dataclass(frozen=True)
class DialogState:
    user_id: str
    channel_id: str
    expires_at: int
    hook_id: str | None  # the command's response_url id, when the dialog came from one


def _mac(secret: bytes, message: str) -> str:
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def sign_state(secret: bytes, state: DialogState) -> str:
    parts = [state.user_id, state.channel_id, str(state.expires_at)]
    if state.hook_id:
        parts.append(state.hook_id)
    message = ".".join(parts)
    return f"{message}.{_mac(secret, message)}"


class StateRefused(Exception):
    """A submission whose state we did not sign, or signed for someone else or long ago."""

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.expired = expired


def read_hook_id(value: str) -> str | None:
    """A response_url's last segment when it is a Mattermost id."""
    return value if _ID.match(value) else None


def read_state(
    secret: bytes, value: Any, *, user_id: Any, channel_id: Any, now: float
) -> DialogState:
    """The state we signed; raises :class:`StateRefused` saying why a submission carrying
    ``value`` is refused."""
    if not isinstance(value, str) or len(value) > 300:
        raise StateRefused("the dialog's state is missing: only dialogs this service opened count")
    message, _, mac = value.rpartition(".")
    parts = message.split(".")
    if len(parts) not in (3, 4) or not _MAC.match(mac) or not parts[2].isdigit():
        raise StateRefused("the dialog's state is not one this service signed")
    if not constant_time_equal(mac, _mac(secret, message)):
        raise StateRefused(
            "the dialog's state does not match its signature: check MATTERMOST_DIALOG_SECRET "
            "(or MATTERMOST_COMMAND_TOKEN) did not change since the dialog opened"
        )
    state = DialogState(parts[0], parts[1], int(parts[2]), parts[3] if len(parts) == 4 else None)
    if state.user_id != user_id or state.channel_id != channel_id:
        raise StateRefused("the dialog was opened for another user or channel")
    if now > state.expires_at:
        raise StateRefused("the form was open too long: type /contact again", expired=True)
    return state


def dialog_definition(
    *,
    url: str,
    state: str,
    prefill: Mapping[str, str],
    problems: Mapping[str, str],
    required: Iterable[str] = CONTACT_FIELDS,
    default_region: str | None = None,
) -> dict[str, Any]:
    """The contact form, pre-filled with what the command's text held and each problem
    of it in the field's help text."""
    needed = set(required)
    phone_hint = (
        f"Without +, read as a number in {default_region}"
        if default_region
        else "Start with + and the country code, e.g. +1 415 555 2671"
    )
    hints = {
        "name": "The guest's full name",
        "email": "e.g. chris@example.com",
        "phone": phone_hint,
    }
    elements = []
    for field in CONTACT_FIELDS:
        element: dict[str, Any] = {
            "display_name": LABELS[field],
            "name": field,
            "type": "text",
            "optional": field not in needed,
        }
        if field == "email":
            element["subtype"] = "email"
        elif field == "phone":
            element["subtype"] = "tel"
        if prefill.get(field):
            element["default"] = prefill[field][:_DEFAULT_MAX]
        help_text = f"⚠ {problems[field]}" if field in problems else hints[field]
        element["help_text"] = help_text[:_HELP_MAX]
        elements.append(element)
    return {
        "url": url,
        "dialog": {
            "callback_id": CALLBACK_ID,
            "title": "New contact",
            "introduction_text": "Register a guest as a Rocket.Chat Omnichannel contact.",
            "submit_label": "Register",
            "notify_on_cancel": False,
            "state": state,
            "elements": elements,
        },
    }


def dialog_errors(errors: Mapping[str, str]) -> dict[str, Any]:
    """A submission's field errors the way Mattermost shows them: ``{"errors": {name: …}}``
    under each element; a problem with no element of its own goes in ``error``."""
    shown = {k: v[:_ERROR_MAX] for k, v in errors.items() if k in CONTACT_FIELDS}
    others = [f"{k}: {v}" for k, v in errors.items() if k not in CONTACT_FIELDS]
    answer: dict[str, Any] = {"errors": shown} if shown else {}
    if others:
        answer["error"] = "; ".join(others)[:_ERROR_MAX]
    return answer
