"""Rocket.Chat's own outgoing webhook: agents type ``!contact Chris Doe chris@example.com
+1 415 555 2671`` in a Rocket.Chat room and the answer is posted back into it (issue #16;
request format in ``contracts/chat-platforms.md`` §5; set-up in
``docs/rocketchat-outgoing.md``).

Route: ``POST /rocketchat/outgoing``. Rocket.Chat signs nothing: the integration's
``token`` travels in the body and is compared in constant time with each
``ROCKETCHAT_OUTGOING_TOKEN``. The message's ``timestamp`` must be within 15 minutes
(Rocket.Chat's retries resend the original payload: 0.1 s, 1 s, 10 s, 100 s apart), and
its ``message_id`` (with the text, for an edit) is the event id, so a retry or a replay
registers nothing twice. Messages posted by bots (``bot: true``, our own answers
included) are ignored, and no answer starts with the trigger word.

Rocket.Chat posts a JSON answer's ``text`` as a message in the room (in the thread, with
``tmid``). An outcome known only after the answer is posted with ``chat.postMessage`` by
the service's own Rocket.Chat user (``ROCKETCHAT_USER_ID``), who must be able to write
in that room.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from adapter.channels import (
    Background,
    BodyTooLarge,
    ChannelContext,
    ChannelStatus,
    DeliveryRecord,
    Outcome,
    Settings,
    SettingsError,
    Submission,
    constant_time_equal,
    error_response,
    escape_markdown,
    extract_contact,
    outcome_text,
    read_body,
    submit_by,
)

__all__ = ["RocketChatOutgoingChannel", "channel", "command_text"]

log = structlog.get_logger("handlers.rocketchat_outgoing")

SOURCE = "rocketchat_outgoing"
MAX_BODY_BYTES = 64 * 1024
ANSWER_DEADLINE = 2.5  # Rocket.Chat waits, but the agent looks at the room
TIMESTAMP_WINDOW = 15 * 60  # covers Rocket.Chat's retries (0.1 + 1 + 10 + 100 s)
LABELS = {"name": "Name", "email": "Email", "phone": "Phone"}
_LATER = "I will post the outcome here"


class _Malformed(ValueError):
    pass


def command_text(text: str, trigger_word: str | None) -> str:
    """The text after the trigger word (where it is, with *Trigger Word Anywhere*)."""
    if trigger_word and trigger_word in text:
        before, _, after = text.partition(trigger_word)
        text = f"{before} {after}"
    return " ".join(text.split())


def _tokens(settings: Settings) -> tuple[str, ...]:
    raw = settings.lookup("ROCKETCHAT_OUTGOING_TOKEN") or ""
    tokens = tuple(t.strip() for t in raw.split(",") if t.strip())
    if any(len(t) < 16 for t in tokens):
        raise SettingsError(
            "setting ROCKETCHAT_OUTGOING_TOKEN: expected the Token typed into the outgoing "
            "integration, at least 16 characters (several separated by commas)"
        )
    return tokens


def _read(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Malformed("the body is not a JSON object") from None
    if not isinstance(data, dict):
        raise _Malformed("the body is not a JSON object")
    return data


def _check(data: Mapping[str, Any]) -> float:
    """The message's time; raises _Malformed naming a part Rocket.Chat always sends."""
    for part in ("message_id", "channel_id", "user_id", "text", "timestamp"):
        if not isinstance(data.get(part), str) or not data[part]:
            raise _Malformed(f"'{part}' must be a non-empty string")
    for part in ("trigger_word", "tmid", "user_name"):
        if data.get(part) is not None and not isinstance(data[part], str):
            raise _Malformed(f"'{part}' must be a string")
    try:
        return datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise _Malformed("'timestamp' must be an ISO 8601 time") from None


def _problems(errors: Mapping[str, str]) -> str:
    lines = [f"• *{LABELS.get(k, k)}*: {escape_markdown(v)}" for k, v in errors.items()]
    return "I could not register that:\n" + "\n".join(lines)


class RocketChatOutgoingChannel:
    """The outgoing webhook integration's URL."""

    name = SOURCE
    title = "Rocket.Chat !contact"

    def __init__(self) -> None:
        self.clock: Callable[[], float] = time.time  # what the freshness check reads
        self.background = Background()

    def check(self, settings: Settings) -> None:
        """Raise SettingsError naming ROCKETCHAT_OUTGOING_TOKEN when it is malformed."""
        _tokens(settings)

    def status(self, settings: Settings) -> ChannelStatus:
        on = bool(_tokens(settings))
        reason = None if on else "set ROCKETCHAT_OUTGOING_TOKEN (the outgoing integration's Token)"
        return ChannelStatus(SOURCE, on, "/rocketchat/outgoing", reason)

    def routes(self, context: ChannelContext) -> Sequence[BaseRoute]:
        tokens = _tokens(context.settings)

        async def outgoing(request: Request) -> Response:
            received = time.monotonic()
            if not tokens:
                return error_response(
                    503,
                    "the Rocket.Chat outgoing webhook is off: set ROCKETCHAT_OUTGOING_TOKEN to "
                    "the integration's Token",
                )
            try:
                body = await read_body(request, MAX_BODY_BYTES)
            except BodyTooLarge as exc:
                return error_response(413, f"{exc}: not a Rocket.Chat outgoing webhook")
            try:
                data = _read(body)
            except _Malformed as exc:
                return error_response(400, f"malformed outgoing webhook: {exc}")
            given = data.get("token")
            authentic = False
            for token in tokens:  # every one compared: constant time
                authentic |= isinstance(given, str) and constant_time_equal(given, token)
            if not authentic:
                log.warning("rocketchat_outgoing_refused", status=401, reason="token")
                return error_response(
                    401,
                    "the integration's token does not match: set ROCKETCHAT_OUTGOING_TOKEN to "
                    "the Token of the outgoing webhook (a token is required)",
                )
            if data.get("bot") is True:  # our own answers, other bots: never answered
                return JSONResponse({})  # a non-empty 2xx: Rocket.Chat does not retry
            try:
                sent_at = _check(data)
            except _Malformed as exc:
                return error_response(400, f"malformed outgoing webhook: {exc}; nothing stored")
            if abs(self.clock() - sent_at) > TIMESTAMP_WINDOW:
                log.warning("rocketchat_outgoing_refused", status=401, reason="stale")
                return error_response(
                    401,
                    "the message is more than 15 minutes old: a replay, a retry long after, "
                    "or an edit of an old message (type it again as a new message)",
                )
            return await self._message(context, data, received + ANSWER_DEADLINE)

        return [Route("/rocketchat/outgoing", outgoing, methods=["POST"])]

    async def _message(
        self, context: ChannelContext, data: Mapping[str, Any], deadline: float
    ) -> Response:
        settings = context.settings
        trigger = data.get("trigger_word") or "!contact"
        tmid = data.get("tmid") or None

        def answer(text: str) -> JSONResponse:
            message: dict[str, Any] = {"text": text}
            if tmid:
                message["tmid"] = tmid
            return JSONResponse(message)

        example = f"`{trigger} Chris Doe chris@example.com +1 415 555 2671`"
        text = command_text(data["text"], data.get("trigger_word"))
        if not text or text.lower() == "help":
            return answer(f"Type the guest's name, email and phone, e.g. {example}")
        extraction = extract_contact(text, settings.default_phone_region)
        _, errors = extraction.check(
            required=settings.contact_required_fields,
            default_region=settings.default_phone_region,
        )
        if errors:
            return answer(f"{_problems(errors)}\nSend it again, e.g. {example}")
        event_id = f"msg:{data['message_id']}"
        if data.get("isEdited") is True:  # each edit counts once, its retries not again
            event_id += ":" + hashlib.sha256(data["text"].encode()).hexdigest()[:16]
        callback = {"v": 1, "room_id": data["channel_id"], "tmid": tmid}
        submission = Submission(
            source=SOURCE,
            fields=extraction.fields(),
            event_id=event_id,
            callback=callback,
            actor=data.get("user_name") or data["user_id"],
            team=data.get("channel_name") or data["channel_id"],
        )
        outcome = await submit_by(
            context.queue,
            submission,
            deadline=deadline,
            wait=settings.fast_path_budget,
            background=self.background,
            late=lambda task: self._late(context, task, callback, extraction.name),
        )
        return answer(_answer(outcome, extraction.name))

    async def _late(
        self,
        context: ChannelContext,
        task: Any,
        callback: Mapping[str, Any],
        name: str | None,
    ) -> None:
        """An accept that outlived the answer: its outcome (a pending one reports later)."""
        try:
            outcome: Outcome = await task
        except Exception:
            log.exception("rocketchat_outgoing_late_accept_failed")
            text = f"⚠ {escape_markdown(name or 'The contact')} could not be stored. Send it again."
        else:
            if outcome.status == "pending" and not outcome.duplicate:
                return
            text = _answer(outcome, name)
        await post_message(context, callback, text)

    async def shutdown(self, context: ChannelContext) -> None:
        await self.background.drain()

    async def notify(self, context: ChannelContext, record: DeliveryRecord) -> None:
        """A delivery finished after the answer: post its outcome in the room."""
        callback = record.callback
        if not callback or callback.get("v") != 1 or not callback.get("room_id"):
            return
        name = (record.fields or {}).get("name")
        url = context.queue.client.contact_url(record.contact_id) if record.contact_id else None
        text = outcome_text(
            status=record.status,
            name=str(name) if name else None,
            contact_url=url,
            last_error=record.last_error,
            final=True,
        )
        posted = await post_message(context, callback, _single_stars(text))
        log.info(
            "rocketchat_outgoing_outcome_reported",
            delivery_id=record.id,
            status=record.status,
            posted=posted,
        )


def _single_stars(text: str) -> str:
    """Rocket.Chat's bold is ``*text*``."""
    return text.replace("**", "*")


def _answer(outcome: Outcome | None, name: str | None) -> str:
    if outcome is None:
        return _single_stars(outcome_text(status="pending", name=name, later=_LATER))
    if outcome.status == "invalid":
        return _problems(outcome.errors)
    return _single_stars(
        outcome_text(
            status=outcome.status,
            name=outcome.contact.name if outcome.contact else name,
            contact_url=outcome.contact_url,
            last_error=outcome.last_error,
            duplicate=outcome.duplicate,
            later=_LATER,
        )
    )


async def post_message(context: ChannelContext, callback: Mapping[str, Any], text: str) -> bool:
    """``chat.postMessage`` into the callback's room (and thread) as the service's user."""
    message: dict[str, Any] = {"roomId": callback["room_id"], "text": text}
    if callback.get("tmid"):
        message["tmid"] = callback["tmid"]
    try:
        await context.queue.client.call("POST", "/api/v1/chat.postMessage", json=message)
    except Exception as exc:  # the client's errors say what Rocket.Chat answered
        log.warning("rocketchat_outgoing_post_failed", error=str(exc)[:200])
        return False
    return True


channel = RocketChatOutgoingChannel()
