"""``POST /webhooks/livechat``: LiveChat (livechat.com) chat webhooks v3.x (widgets.md §5).

Authentication: LiveChat does **not** sign its webhooks. It puts the ``secret_key``
given when the webhook was registered into the JSON body; we compare it with
``LIVECHAT_WEBHOOK_SECRET`` in constant time. There is no timestamp, so a replay is
only recognised by its event id; serve this endpoint over HTTPS only.

Events with visitor details:

* ``incoming_chat``: the customer (``payload.chat.users[type=customer]``: name, email,
  ``phone_number``) and the pre-chat survey (a ``filled_form`` event in the thread).
* ``incoming_event`` whose event is a ``filled_form`` (a later ask-for-email form).

Every other action is answered 200 and ignored. The pre-chat form has field types
``name`` and ``email`` but no phone type: the phone is a ``question`` whose label has a
phone word, or the field named by ``LIVECHAT_FIELD_PHONE`` (field id or label; also
``LIVECHAT_FIELD_NAME`` / ``_EMAIL``). Extras kept as custom fields: ``livechat_chat_id``,
``livechat_customer_id``, ``page_url`` (the last page the visitor opened) and the
customer's session fields. The customer id is the person key, so a later form for
the same customer updates the same contact. LiveChat wants exactly 200.
"""

from __future__ import annotations

import json
from typing import Any

from adapter.channels import (
    Answer,
    PayloadError,
    WebhookChannel,
    WebhookEvent,
    WebhookProvider,
    WebhookRequest,
    constant_time_equal,
    custom_value,
    dig,
    json_object,
    map_answers,
    member,
    norm,
)

__all__ = ["LiveChatProvider", "channel"]

EXPECTED = (
    'a LiveChat webhook: {"action": "incoming_chat", "secret_key": …, '
    '"payload": {"chat": {"id": …, "users": [ … ], "thread": {"id": …, "events": [ … ]}}}}'
)


def _form_answers(event: dict[str, Any], where: str) -> list[Answer]:
    fields = member(event, "fields", list, where, required=False) or []
    answers: list[Answer] = []
    for index, item in enumerate(fields):
        if not isinstance(item, dict):
            raise PayloadError(f"expected {where}.fields[{index}] to be an object")
        ids = tuple(n for n in (norm(item.get("id") or ""), norm(item.get("label") or "")) if n)
        answer = item.get("answer")
        if isinstance(answer, dict):  # a choice: {id, label}
            answer = answer.get("label")
        elif answer is None and isinstance(item.get("answers"), list):  # checkboxes
            answer = [a.get("label") for a in item["answers"] if isinstance(a, dict)]
        answers.append(Answer(ids, f"form:{item.get('type') or ''}", custom_value(answer)))
    return answers


class LiveChatProvider(WebhookProvider):
    name = "livechat"
    label = "LiveChat"
    secret_setting = "LIVECHAT_WEBHOOK_SECRET"
    field_prefix = "LIVECHAT"
    success_status = 200  # LiveChat counts exactly 200 as delivered

    def verify(self, request: WebhookRequest, secret: str, *, now: float) -> bool:
        # No signature: the registered secret_key travels in the body.
        try:
            data = json.loads(request.body)
        except (ValueError, RecursionError):
            return False
        given = data.get("secret_key") if isinstance(data, dict) else None
        return isinstance(given, str) and constant_time_equal(given, secret)

    def parse(self, request: WebhookRequest) -> WebhookEvent:
        data = json_object(request.body, EXPECTED)
        action = data.get("action")
        if not isinstance(action, str):
            raise PayloadError(f"expected {EXPECTED}; action is missing or not a string")
        payload = member(data, "payload", dict, "the body")
        if action == "incoming_chat":
            return self._incoming_chat(request, payload)
        if action == "incoming_event":
            return self._incoming_event(request, payload)
        return WebhookEvent(
            event_id=None,
            ignored=f"action {action!r} carries no visitor details",
            event_type=action,
        )

    def _incoming_chat(self, request: WebhookRequest, payload: dict[str, Any]) -> WebhookEvent:
        chat = member(payload, "chat", dict, "payload")
        users = member(chat, "users", list, "payload.chat")
        thread = member(chat, "thread", dict, "payload.chat", required=False) or {}
        events = member(thread, "events", list, "payload.chat.thread", required=False) or []
        chat_id = custom_value(chat.get("id"))
        thread_id = custom_value(thread.get("id"))
        if chat_id is None:
            raise PayloadError("expected payload.chat.id, the chat's id")
        customer = next(
            (u for u in users if isinstance(u, dict) and u.get("type") == "customer"), None
        )

        answers: list[Answer] = []
        custom: dict[str, str] = {}
        for index, event in enumerate(events):
            if isinstance(event, dict) and event.get("type") == "filled_form":
                answers += _form_answers(event, f"payload.chat.thread.events[{index}]")
        person: str | None = None
        if customer is not None:
            person = custom_value(customer.get("id"))
            answers += [
                Answer(("customer name",), "customer:name", custom_value(customer.get("name"))),
                Answer(("customer email",), "customer:email", custom_value(customer.get("email"))),
                Answer(
                    ("customer phone",),
                    "customer:phone",
                    custom_value(customer.get("phone_number")),
                ),
            ]
            for entry in customer.get("session_fields") or []:
                if isinstance(entry, dict):
                    for key, value in entry.items():
                        if (text := custom_value(value)) is not None:
                            custom[str(key)] = text
            pages = dig(customer, "visit", "last_pages")
            last = pages[-1] if isinstance(pages, list) and pages else None
            if isinstance(last, dict) and (url := custom_value(last.get("url"))) is not None:
                custom["page_url"] = url

        event_id = f"incoming_chat:{chat_id}:{thread_id or ''}"
        return self._event(request, "incoming_chat", event_id, answers, chat_id, person, custom)

    def _incoming_event(self, request: WebhookRequest, payload: dict[str, Any]) -> WebhookEvent:
        event = member(payload, "event", dict, "payload")
        if event.get("type") != "filled_form":
            return WebhookEvent(
                event_id=None,
                ignored=f"a {event.get('type')!r} event carries no visitor details",
                event_type="incoming_event",
            )
        event_key = custom_value(event.get("id"))
        chat_id = custom_value(payload.get("chat_id"))
        if event_key is None:
            raise PayloadError("expected payload.event.id, the event's id")
        answers = _form_answers(event, "payload.event")
        person = custom_value(event.get("author_id"))
        event_id = f"incoming_event:{chat_id or ''}:{event_key}"
        return self._event(request, "incoming_event", event_id, answers, chat_id, person, {})

    @staticmethod
    def _event(
        request: WebhookRequest,
        action: str,
        event_id: str,
        answers: list[Answer],
        chat_id: str | None,
        person: str | None,
        custom: dict[str, str],
    ) -> WebhookEvent:
        """The contact the answers make (ignored without email and phone), with the chat and
        customer ids added to ``custom``; the customer is the person."""
        # Form answers (what the visitor just typed) before the customer's stored profile,
        # except the phone: the profile's phone_number is typed, the form's is a free question.
        fields = map_answers(
            answers,
            lookup=request.lookup,
            prefix="LIVECHAT",
            name_kinds=("form:name", "customer:name"),
            email_kinds=("form:email", "customer:email"),
            phone_kinds=("customer:phone",),
        )
        for key, value in (("livechat_chat_id", chat_id), ("livechat_customer_id", person)):
            if value is not None:
                custom[key] = value
        return WebhookEvent.unless_unreachable(
            event_id, fields, person_key=person, custom_fields=custom, event_type=action
        )


channel = WebhookChannel(LiveChatProvider())
