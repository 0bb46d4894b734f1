"""What the Discord channel sends (interaction responses, the modal, follow-up edits) and
reads (command options, modal values, the "Fix" button), as pure functions.

Shapes from contract §3.4-§3.5 and Discord's components reference: a modal (response
type 9) holds 1-5 Label components (type 18: ``label`` ≤ 45 characters, ``description``
≤ 100) each wrapping a Text Input (type 4, ``value`` ≤ 4000). Discord shows no
validation errors on a modal, so a field's problem is written in its Label's
``description``. A modal cannot answer a modal submission: an invalid submission gets an
ephemeral message listing each problem and a button that opens the modal again, its
``custom_id`` (≤ 100 characters) carrying what was typed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from handlers._chatapps import LABELS

__all__ = [
    "COMMAND",
    "COMMANDS",
    "EPHEMERAL",
    "FIX_PREFIX",
    "MODAL_ID",
    "bold",
    "edit",
    "errors_message",
    "escape",
    "link",
    "message",
    "modal",
    "modal_values",
    "option_values",
    "read_fix",
]

COMMAND = "contact"
MODAL_ID = "contact_modal"
FIX_PREFIX = "contact_fix:"
EPHEMERAL = 64
PONG, CHANNEL_MESSAGE, MODAL = 1, 4, 9
NO_MENTIONS: dict[str, list[str]] = {"parse": []}
STRING = 3
_CUSTOM_ID_MAX = 100
_DESCRIPTION_MAX = 100
_CONTENT_MAX = 2000

COMMANDS = [
    {
        "name": COMMAND,
        "type": 1,
        "description": "Register a guest as a Rocket.Chat contact",
        "options": [
            {
                "name": "text",
                "description": "Name, email and phone in any order, e.g. Chris Doe chris@example.com",
                "type": STRING,
                "required": False,
                "max_length": 500,
            },
            {"name": "name", "description": "Full name", "type": STRING, "required": False},
            {"name": "email", "description": "Email address", "type": STRING, "required": False},
            {"name": "phone", "description": "Phone number", "type": STRING, "required": False},
        ],
    }
]
"""What ``contact-adapter discord register-commands`` registers (option type 3 = STRING)."""

_PLACEHOLDERS = {
    "name": "Chris Doe",
    "email": "chris@example.com",
    "phone": "+1 415 555 2671",
}


def escape(text: str) -> str:
    """User text shown in Discord markdown, inert (no formatting, no masked links)."""
    out = []
    for char in text:
        if char in "\\*_~`|[]()<>":
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def bold(text: str) -> str:
    return f"**{escape(text)}**"


def link(url: str, label: str) -> str:
    return f"[{label}](<{url}>)"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def message(content: str, *, components: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An ephemeral message answering the interaction (response type 4)."""
    data: dict[str, Any] = {
        "content": _clip(content, _CONTENT_MAX),
        "flags": EPHEMERAL,
        "allowed_mentions": NO_MENTIONS,
    }
    if components:
        data["components"] = components
    return {"type": CHANNEL_MESSAGE, "data": data}


def edit(content: str) -> dict[str, Any]:
    """The body of a PATCH to ``@original``: the outcome replaces the first answer."""
    return {
        "content": _clip(content, _CONTENT_MAX),
        "allowed_mentions": NO_MENTIONS,
        "components": [],
    }


def modal(
    values: Mapping[str, str | None],
    errors: Mapping[str, str],
    *,
    required: tuple[str, ...],
    hint: str | None = None,
) -> dict[str, Any]:
    """The contact modal (response type 9), pre-filled, each problem under its field."""
    components = []
    for key in ("name", "email", "phone"):
        text_input: dict[str, Any] = {
            "type": 4,
            "custom_id": key,
            "style": 1,
            "required": key in required,
            "max_length": 200,
            "placeholder": _PLACEHOLDERS[key],
        }
        value = values.get(key)
        if value:
            text_input["value"] = _clip(str(value), 200)
        label: dict[str, Any] = {"type": 18, "label": LABELS[key], "component": text_input}
        description = errors.get(key)
        if description:
            label["description"] = _clip("⚠ " + description, _DESCRIPTION_MAX)
        elif key == "phone" and hint:
            label["description"] = _clip(hint, _DESCRIPTION_MAX)
        components.append(label)
    return {
        "type": MODAL,
        "data": {"custom_id": MODAL_ID, "title": "New contact", "components": components},
    }


def _fix_button(values: Mapping[str, str | None]) -> dict[str, Any]:
    """The "Fix the details" button; its custom_id carries what fits of ``values``."""
    kept = {k: str(v) for k, v in values.items() if v and k in LABELS}
    while True:
        custom_id = FIX_PREFIX + json.dumps(kept, ensure_ascii=False, separators=(",", ":"))
        if len(custom_id) <= _CUSTOM_ID_MAX or not kept:
            break
        kept.pop(max(kept, key=lambda k: len(kept[k])))  # drop the longest value first
    return {"type": 2, "style": 1, "label": "Fix the details", "custom_id": custom_id}


def errors_message(errors: Mapping[str, str], values: Mapping[str, str | None]) -> dict[str, Any]:
    """Each problem by field (ephemeral), and a button that opens the modal again."""
    lines = [f"• **{LABELS.get(k, k)}**: {escape(v)}" for k, v in errors.items()]
    content = "Not registered yet:\n" + "\n".join(lines)
    row = {"type": 1, "components": [_fix_button(values)]}
    return message(content, components=[row])


def read_fix(custom_id: str) -> dict[str, str]:
    """What a "Fix the details" button carried (empty when it is not one of ours)."""
    if not custom_id.startswith(FIX_PREFIX):
        return {}
    try:
        data = json.loads(custom_id[len(FIX_PREFIX) :])
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if k in LABELS and isinstance(v, str)}


def option_values(data: Mapping[str, Any]) -> dict[str, str]:
    """The command's string options by name (``text``, ``name``, ``email``, ``phone``)."""
    out: dict[str, str] = {}
    for option in data.get("options") or []:
        value = option.get("value")
        if isinstance(value, str) and value.strip():
            out[str(option["name"])] = value.strip()
    return out


def modal_values(data: Mapping[str, Any]) -> dict[str, str | None]:
    """The text inputs of a modal submission by custom_id: Label (type 18) wrapping one
    component, or the deprecated Action Row (type 1) listing them."""
    found: dict[str, str | None] = {}
    inputs: list[Any] = []
    for row in data.get("components") or []:
        if isinstance(row.get("component"), dict):
            inputs.append(row["component"])
        inputs.extend(row.get("components") or [])
    for item in inputs:
        if not isinstance(item, dict):
            continue
        key, value = item.get("custom_id"), item.get("value")
        if key in LABELS:
            found[key] = value.strip() if isinstance(value, str) and value.strip() else None
    return found
