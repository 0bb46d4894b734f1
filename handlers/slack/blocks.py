"""What the Slack channel shows: messages and the modal, as plain Block Kit dicts (pure)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from adapter.channels import CONTACT_FIELDS

__all__ = [
    "BLOCK_IDS",
    "MODAL_CALLBACK_ID",
    "OPEN_FORM_ACTION_ID",
    "errors_message",
    "escape",
    "modal_view",
    "outcome_message",
    "read_modal",
]

MODAL_CALLBACK_ID = "contact_form"
OPEN_FORM_ACTION_ID = "open_contact_form"
BLOCK_IDS = {"name": "name_block", "email": "email_block", "phone": "phone_block"}
LABELS = {"name": "Name", "email": "Email", "phone": "Phone"}
_MAX_PREFILL = 255
_BUTTON_VALUE_MAX = 2000
_METADATA_MAX = 3000


def escape(text: str) -> str:
    """Slack mrkdwn control characters (so a name cannot @channel anyone)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def outcome_message(
    *,
    status: str,
    name: str | None,
    contact_url: str | None = None,
    last_error: str | None = None,
    duplicate: bool = False,
    final: bool = False,
) -> dict[str, Any]:
    """The ephemeral message for an accepted contact's state (``final``: a later report)."""
    who = f"*{escape(name)}*" if name else "The contact"
    link = f": <{contact_url}|open the contact>" if contact_url else ""
    if status == "delivered":
        text = (
            f":white_check_mark: {who} was already registered a moment ago (same command "
            f"within a minute){link}"
            if duplicate
            else f":white_check_mark: {who} is now a contact in Rocket.Chat{link}"
        )
    elif status == "failed":
        reason = escape(last_error or "Rocket.Chat did not accept it")
        again = " (you sent the same thing a moment ago)" if duplicate else ""
        text = f":x: {who} could not be registered{again}: {reason}"
    elif final:
        text = f":hourglass_flowing_sand: {who} is still waiting for Rocket.Chat ({status})"
    elif duplicate:
        text = (
            f":hourglass_flowing_sand: {who} was already submitted a moment ago and is being "
            "registered; you will get the outcome here."
        )
    else:
        text = (
            f":hourglass_flowing_sand: Registering {who}… Rocket.Chat has not answered yet; "
            "you will get the outcome here."
        )
    return {"response_type": "ephemeral", "text": text}


def errors_message(
    errors: Mapping[str, str], found: Mapping[str, str], *, command: str
) -> dict[str, Any]:
    """Each problem by field, an example, and an "Open form" button pre-filled with ``found``."""
    lines = [
        f"• *{LABELS.get(key, key.capitalize())}*: {escape(msg)}" for key, msg in errors.items()
    ]
    example = f"`{command} Chris Doe chris@example.com +1 415 555 2671`"
    text = "I could not register that:\n" + "\n".join(lines)
    return {
        "response_type": "ephemeral",
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"Type it again, e.g. {example}, or:"}],
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "action_id": OPEN_FORM_ACTION_ID,
                        "text": _plain("Open form"),
                        "style": "primary",
                        "value": prefill_value(found),
                    }
                ],
            },
        ],
    }


def prefill_value(found: Mapping[str, str]) -> str:
    """The button value carrying what was understood (Slack allows 2000 characters)."""
    kept = {k: str(v)[:_MAX_PREFILL] for k, v in found.items() if k in CONTACT_FIELDS and v}
    value = json.dumps(kept, ensure_ascii=False, separators=(",", ":"))
    while len(value) > _BUTTON_VALUE_MAX and kept:
        kept.popitem()
        value = json.dumps(kept, ensure_ascii=False, separators=(",", ":"))
    return value


def read_prefill(value: str | None) -> dict[str, str]:
    try:
        data = json.loads(value or "{}")
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if k in CONTACT_FIELDS and isinstance(v, str)}


def modal_view(
    *,
    prefill: Mapping[str, str] | None = None,
    valid_email: bool = True,
    required: Iterable[str] = CONTACT_FIELDS,
    default_region: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The contact form. ``valid_email``: the prefilled email may go into email_text_input."""
    values = dict(prefill or {})
    needed = set(required)
    if default_region:
        phone_hint = (
            "International format with +, e.g. +1 415 555 2671; a number without + is "
            f"read as a {default_region} number"
        )
    else:  # no DEFAULT_PHONE_REGION: a national number cannot be read
        phone_hint = "Start with + and the country code, e.g. +1 415 555 2671"

    def input_block(key: str, element: dict[str, Any], hint: str | None = None) -> dict[str, Any]:
        block: dict[str, Any] = {
            "type": "input",
            "block_id": BLOCK_IDS[key],
            "label": _plain(LABELS[key]),
            "optional": key not in needed,
            "element": element,
        }
        if hint:
            block["hint"] = _plain(hint)
        return block

    name_el: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": "name",
        "max_length": 255,
        "placeholder": _plain("Chris Doe"),
    }
    email_el: dict[str, Any] = {
        "type": "email_text_input",
        "action_id": "email",
        "placeholder": _plain("chris@example.com"),
    }
    phone_el: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": "phone",
        "max_length": 64,
        "placeholder": _plain("+1 415 555 2671"),
    }
    if values.get("name"):
        name_el["initial_value"] = values["name"][:255]
    if values.get("phone"):
        phone_el["initial_value"] = values["phone"][:64]
    blocks: list[dict[str, Any]] = []
    email_hint = None
    if values.get("email"):
        if valid_email:
            email_el["initial_value"] = values["email"]
        else:
            email_hint = f"You typed {values['email'][:100]!r}, which is not a valid address"
    blocks.append(input_block("name", name_el))
    blocks.append(input_block("email", email_el, email_hint))
    blocks.append(input_block("phone", phone_el, phone_hint))
    if not ({"email", "phone"} & needed):
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": "Give an email or a phone number."}],
            }
        )
    view: dict[str, Any] = {
        "type": "modal",
        "callback_id": MODAL_CALLBACK_ID,
        "title": _plain("New contact"),
        "submit": _plain("Register"),
        "close": _plain("Cancel"),
        "blocks": blocks,
    }
    if metadata:
        encoded = json.dumps(dict(metadata), separators=(",", ":"))
        if len(encoded) <= _METADATA_MAX:
            view["private_metadata"] = encoded
    return view


def read_modal(view: Mapping[str, Any]) -> dict[str, str | None]:
    """The raw name/email/phone from a ``view_submission``'s ``state.values``."""
    values = (view.get("state") or {}).get("values") or {}
    fields: dict[str, str | None] = {}
    for key, block_id in BLOCK_IDS.items():
        element = (values.get(block_id) or {}).get(key) or {}
        value = element.get("value") if isinstance(element, dict) else None
        fields[key] = value if isinstance(value, str) else None
    return fields


def read_metadata(view: Mapping[str, Any]) -> dict[str, Any]:
    raw = view.get("private_metadata") or ""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def modal_errors(errors: Mapping[str, str]) -> dict[str, str]:
    """Core field errors → ``response_action: errors`` keyed by input block id."""
    out: dict[str, str] = {}
    for key, message in errors.items():
        block = BLOCK_IDS.get(key, BLOCK_IDS["name"])
        if key not in BLOCK_IDS:
            text = f"{key}: {message}"
        elif message.startswith("is "):
            text = f"{LABELS[key]} {message}"
        else:
            text = message
        out[block] = (out[block] + "; " + text) if block in out else text
    return out
