"""What the Google Chat channel reads (the Event) and answers (private messages, the
dialog), as pure functions. Shapes from contract §4.2-§4.5 and Google's contact-form-app
sample: a private answer carries ``privateMessageViewer``; a dialog is an
``actionResponse`` of type DIALOG, opened only in answer to a dialog request (a command
set to "Open a dialog", or a button with ``interaction: OPEN_DIALOG``), and a submission
answered with another DIALOG updates it in place, which is how each field's problem is
shown under it (``hintText``); ``actionStatus`` OK closes it with a notice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from handlers._chatapps import LABELS

__all__ = [
    "INPUTS",
    "OPEN_FUNCTION",
    "SUBMIT_FUNCTION",
    "ChatEvent",
    "MalformedEvent",
    "bold",
    "close_dialog",
    "dialog",
    "link",
    "parse_event",
    "private",
]

OPEN_FUNCTION = "openContactDialog"
SUBMIT_FUNCTION = "submitContact"
INPUTS = {"name": "contactName", "email": "contactEmail", "phone": "contactPhone"}
_TEXT_MAX = 4000


class MalformedEvent(ValueError):
    """A verified body that is not an Event of the shape Google Chat sends (a 400)."""


@dataclass(frozen=True)
class ChatEvent:
    """The parts of a Chat interaction event the channel reads, checked for type."""

    type: str
    event_time: str
    user: str | None  # users/…
    space: str | None  # spaces/…
    message: str | None  # spaces/…/messages/…
    thread: str | None
    text: str
    command_id: str | None
    dialog_event: str | None  # REQUEST_DIALOG / SUBMIT_DIALOG / CANCEL_DIALOG
    function: str | None
    inputs: dict[str, str | None] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedEvent(f"'{where}' must be an object")
    return value


def _string(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedEvent(f"'{where}' must be a string")
    return value


def parse_event(body: bytes) -> ChatEvent:
    """The event in ``body``; MalformedEvent naming the part otherwise."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise MalformedEvent("the body is not valid UTF-8") from None
    except (ValueError, RecursionError):
        raise MalformedEvent("the body is not JSON") from None
    if not isinstance(data, dict):
        raise MalformedEvent("the body must be a JSON object (a Chat Event)")
    kind = _string(data.get("type"), "type")
    if not kind:
        raise MalformedEvent("'type' is missing (MESSAGE, CARD_CLICKED, …)")
    message = _object(data.get("message"), "message")
    user = _object(data.get("user"), "user")
    space = _object(data.get("space"), "space") or _object(message.get("space"), "message.space")
    common = _object(data.get("common"), "common")
    slash = _object(message.get("slashCommand"), "message.slashCommand")
    app_command = _object(data.get("appCommandMetadata"), "appCommandMetadata")
    command_id = slash.get("commandId", app_command.get("appCommandId"))
    if command_id is not None and not isinstance(command_id, str | int):
        raise MalformedEvent("'message.slashCommand.commandId' must be a string")
    text = _string(message.get("argumentText"), "message.argumentText")
    if text is None:
        text = _string(message.get("text"), "message.text") or ""
    inputs: dict[str, str | None] = {}
    form = _object(common.get("formInputs"), "common.formInputs")
    for key, widget in INPUTS.items():
        entry = _object(form.get(widget), f"common.formInputs.{widget}")
        values = _object(entry.get("stringInputs"), f"common.formInputs.{widget}.stringInputs")
        listed = values.get("value")
        if listed is not None and not (
            isinstance(listed, list) and all(isinstance(v, str) for v in listed)
        ):
            raise MalformedEvent(f"'common.formInputs.{widget}.stringInputs.value' must be strings")
        if widget in form:
            inputs[key] = listed[0].strip() if listed and listed[0].strip() else None
    parameters = _object(common.get("parameters"), "common.parameters")
    if not all(isinstance(v, str) for v in parameters.values()):
        raise MalformedEvent("'common.parameters' must map names to strings")
    return ChatEvent(
        type=kind,
        event_time=_string(data.get("eventTime"), "eventTime") or "",
        user=_string(user.get("name"), "user.name"),
        space=_string(space.get("name"), "space.name"),
        message=_string(message.get("name"), "message.name"),
        thread=_string(_object(message.get("thread"), "message.thread").get("name"), "thread"),
        text=text.strip(),
        command_id=str(command_id) if command_id is not None else None,
        dialog_event=_string(data.get("dialogEventType"), "dialogEventType")
        if data.get("isDialogEvent")
        else None,
        function=_string(common.get("invokedFunction"), "common.invokedFunction"),
        inputs=inputs,
        parameters={k: v for k, v in parameters.items() if k in LABELS},
    )


def _plain(text: str) -> str:
    """User text inside Chat's markup: no formatting marks, no <…> links or mentions."""
    return text.replace("*", "").replace("<", "‹").replace(">", "›")


def bold(text: str) -> str:
    return f"*{_plain(text)}*"


def link(url: str, label: str) -> str:
    return f"<{url}|{label}>"


def private(
    user: str | None, text: str, *, button: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A message only ``user`` (and the app) can see; with an "Open form" button that
    opens the dialog pre-filled with ``button``'s values."""
    body: dict[str, Any] = {"text": text[:_TEXT_MAX]}
    if user:
        body["privateMessageViewer"] = {"name": user}
    if button is not None:
        parameters = [{"key": k, "value": v} for k, v in button.items() if v]
        body["cardsV2"] = [
            {
                "cardId": "contactForm",
                "card": {
                    "sections": [
                        {
                            "widgets": [
                                {
                                    "buttonList": {
                                        "buttons": [
                                            {
                                                "text": "Open form",
                                                "onClick": {
                                                    "action": {
                                                        "function": OPEN_FUNCTION,
                                                        "interaction": "OPEN_DIALOG",
                                                        "parameters": parameters,
                                                    }
                                                },
                                            }
                                        ]
                                    }
                                }
                            ]
                        }
                    ]
                },
            }
        ]
    return body


def dialog(
    values: Mapping[str, str | None], errors: Mapping[str, str], *, phone_hint: str
) -> dict[str, Any]:
    """The contact dialog, pre-filled, each problem as its field's hint."""
    widgets: list[dict[str, Any]] = []
    if errors:
        widgets.append(
            {"textParagraph": {"text": "Please fix the fields marked ⚠ and register again."}}
        )
    for key, name in INPUTS.items():
        text_input: dict[str, Any] = {"name": name, "label": LABELS[key], "type": "SINGLE_LINE"}
        value = values.get(key)
        if value:
            text_input["value"] = str(value)[:_TEXT_MAX]
        if key in errors:
            text_input["hintText"] = "⚠ " + errors[key]
        elif key == "phone":
            text_input["hintText"] = phone_hint
        widgets.append({"textInput": text_input})
    widgets.append(
        {
            "buttonList": {
                "buttons": [
                    {"text": "Register", "onClick": {"action": {"function": SUBMIT_FUNCTION}}}
                ]
            }
        }
    )
    body = {"sections": [{"header": "New contact", "widgets": widgets}]}
    return {"actionResponse": {"type": "DIALOG", "dialogAction": {"dialog": {"body": body}}}}


def close_dialog(notice: str | None = None) -> dict[str, Any]:
    """Close the dialog (``actionStatus`` OK), showing ``notice`` to the user."""
    status: dict[str, Any] = {"statusCode": "OK"}
    if notice:
        status["userFacingMessage"] = notice[:1000]
    return {"actionResponse": {"type": "DIALOG", "dialogAction": {"actionStatus": status}}}
