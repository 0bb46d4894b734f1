"""Telegram: a guest writes to the team's bot, which asks for what is missing and registers
them (issue #16; request formats in ``contracts/chat-platforms.md`` §6).

Route: ``POST /telegram/webhook`` (the URL given to ``setWebhook`` with ``secret_token``).
Each update is size-capped (413), its ``X-Telegram-Bot-Api-Secret-Token`` compared in
constant time with ``TELEGRAM_WEBHOOK_SECRET`` (401), refused when its message is older
than Telegram keeps an update (24 h) or from the future (401: a replay), read strictly
(400 naming the part) and deduplicated on ``update_id``. Private chats only (a
``request_contact`` button works nowhere else); other updates are answered 200 and ignored.

The guest's profile name is taken as their name; the bot asks for the phone with a "share
my phone number" button (a shared card counts only when it is the guest's own,
``contact.user_id == from.id``) and for the email, one question at a time, in the language
of ``from.language_code``. ``/contact Chris Doe chris@example.com +1 …`` gives everything at
once, ``/cancel`` deletes what was given. Replies go out through ``sendMessage`` after the
webhook's answer; the outcome of the registration follows when Rocket.Chat has answered.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from adapter.channels import (
    BodyTooLarge,
    ChannelContext,
    ChannelStatus,
    ConversationRules,
    DeliveryRecord,
    Incoming,
    PayloadError,
    Reply,
    Settings,
    SettingsError,
    Submission,
    constant_time_equal,
    error_response,
    read_body,
)
from handlers._messenger import (
    JsonPoster,
    Messenger,
    duration_setting,
    send_outcome,
    setting,
    url_setting,
)

__all__ = ["TelegramChannel", "TelegramConfig", "TelegramUpdate", "channel", "parse_update"]

log = structlog.get_logger("handlers.telegram")

SOURCE = "telegram"
DEFAULT_API_URL = "https://api.telegram.org"
MAX_BODY = 64 * 1024  # an update with a 4096-character text and its entities is far below
UPDATE_LIFETIME = 86400.0  # Telegram drops an update it could not deliver after a day [code]
FUTURE_SKEW = 300.0
KEEP_EVENTS = UPDATE_LIFETIME + 3600.0  # the duplicate window covers the replay window
_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_COMMANDS = ("start", "cancel", "help", "contact")
_STATE_KEY = "telegram"


@dataclass(frozen=True)
class TelegramConfig:
    """The Telegram channel's settings; ``on`` is False unless both secrets are set."""

    bot_token: str | None
    secret: str | None
    api_url: str
    ttl: float

    @property
    def on(self) -> bool:
        return bool(self.bot_token and self.secret)

    @classmethod
    def from_settings(cls, settings: Settings) -> TelegramConfig:
        token = setting(settings, "TELEGRAM_BOT_TOKEN")
        secret = setting(settings, "TELEGRAM_WEBHOOK_SECRET")
        if token and not secret:
            raise SettingsError(
                "setting TELEGRAM_BOT_TOKEN is set without TELEGRAM_WEBHOOK_SECRET: expected "
                "both, since without a secret anyone could post updates (choose 1-256 of "
                "A-Z a-z 0-9 _ - and pass it to setWebhook as secret_token)"
            )
        if secret and not token:
            raise SettingsError(
                "setting TELEGRAM_WEBHOOK_SECRET is set without TELEGRAM_BOT_TOKEN: expected "
                "both (the bot's token from @BotFather answers the guests)"
            )
        if secret and not _SECRET.match(secret):
            raise SettingsError(
                "setting TELEGRAM_WEBHOOK_SECRET: expected 1-256 characters of A-Z a-z 0-9 _ - "
                "(Telegram refuses any other secret_token)"
            )
        return cls(
            bot_token=token,
            secret=secret,
            api_url=url_setting(settings, "TELEGRAM_API_URL", DEFAULT_API_URL),
            ttl=duration_setting(
                settings, "TELEGRAM_CONVERSATION_TTL", 3600.0, low=1.0, high=7 * 86400.0
            ),
        )


# -- reading an update (pure) ---------------------------------------------------------


@dataclass(frozen=True)
class TelegramUpdate:
    """The parts of a private-chat message the conversation needs."""

    update_id: int
    chat_id: str
    user_id: str
    date: float
    incoming: Incoming


def _member(obj: Mapping[str, Any], key: str, kind: type, where: str, *, needed: bool) -> Any:
    value = obj.get(key)
    if value is None and not needed:
        return None
    if kind is int and isinstance(value, bool):
        value = None
    if not isinstance(value, kind):
        expected = {int: "an integer", str: "a string", dict: "an object"}[kind]
        raise PayloadError(f"{where}{key}: expected {expected}")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise PayloadError(f"{where}{key}: not valid Unicode") from None
    return value


def _command(text: str) -> tuple[str | None, str]:
    """``/contact@my_bot Chris Doe`` → ``("contact", "Chris Doe")``; unknown commands → None."""
    if not text.startswith("/"):
        return None, text
    word, _, rest = text.partition(" ")
    name = word[1:].split("@", 1)[0].lower()
    return (name, rest.strip()) if name in _COMMANDS else ("other", "")


def parse_update(body: bytes) -> TelegramUpdate | str:
    """The update's private-chat message, or why it is ignored; PayloadError (naming the
    part) for a malformed one."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise PayloadError("body: expected a JSON object (a Telegram Update) in UTF-8") from None
    if not isinstance(data, dict):
        raise PayloadError("body: expected a JSON object (a Telegram Update)")
    update_id = _member(data, "update_id", int, "", needed=True)
    if "message" not in data:
        return 'not a message (set allowed_updates to ["message"])'
    message = _member(data, "message", dict, "", needed=True)
    chat = _member(message, "chat", dict, "message.", needed=True)
    chat_id = _member(chat, "id", int, "message.chat.", needed=True)
    chat_type = _member(chat, "type", str, "message.chat.", needed=True)
    date = _member(message, "date", int, "message.", needed=True)
    sender = _member(message, "from", dict, "message.", needed=False)
    text = _member(message, "text", str, "message.", needed=False)
    contact = _member(message, "contact", dict, "message.", needed=False)
    if chat_type != "private":
        return f"a {chat_type} chat (the bot talks to guests in private chats only)"
    if sender is None or sender.get("is_bot") is True:
        return "not from a person"
    user_id = _member(sender, "id", int, "message.from.", needed=True)
    first = _member(sender, "first_name", str, "message.from.", needed=False) or ""
    last = _member(sender, "last_name", str, "message.from.", needed=False) or ""
    language = _member(sender, "language_code", str, "message.from.", needed=False)
    shared: dict[str, str | None] | None = None
    own = True
    if contact is not None:
        phone = _member(contact, "phone_number", str, "message.contact.", needed=True)
        owner = _member(contact, "user_id", int, "message.contact.", needed=False)
        card_first = _member(contact, "first_name", str, "message.contact.", needed=False)
        card_last = _member(contact, "last_name", str, "message.contact.", needed=False)
        card_name = " ".join(p for p in (card_first, card_last) if p) or None
        shared = {"phone": phone, "name": card_name}
        own = owner == user_id
    command, rest = _command(text.strip()) if text is not None else (None, "")
    incoming = Incoming(
        chat_id=str(chat_id),
        language=language,
        text=rest if command != "other" else None,
        command=command if command != "other" else None,
        shared=shared,
        shared_own=own,
        known={"name": " ".join(p for p in (first.strip(), last.strip()) if p) or None},
    )
    return TelegramUpdate(
        update_id=update_id,
        chat_id=str(chat_id),
        user_id=str(user_id),
        date=float(date),
        incoming=incoming,
    )


# -- the Bot API ----------------------------------------------------------------------


class TelegramSender:
    """``sendMessage`` through the Bot API (a reply keyboard when the phone is asked)."""

    def __init__(self, config: TelegramConfig) -> None:
        self.url = f"{config.api_url}/bot{config.bot_token}/sendMessage"
        self.http = JsonPoster()

    def message(self, chat_id: str, replies: Sequence[Reply], language: str) -> dict[str, Any]:
        """One ``sendMessage``: the replies' texts as paragraphs; the "share my phone number"
        keyboard when the phone is asked, else the keyboard removed once it served."""
        text = "\n\n".join(reply.text(language) for reply in replies)
        body: dict[str, Any] = {"chat_id": int(chat_id), "text": text}
        reply = replies[-1]
        if reply.key == "ask_phone_button":
            button = {"text": Reply("share_button").text(language), "request_contact": True}
            body["reply_markup"] = {
                "keyboard": [[button]],
                "resize_keyboard": True,
                "one_time_keyboard": True,
            }
        elif reply.ask is not None or reply.key in ("registering", "cancelled"):
            body["reply_markup"] = {"remove_keyboard": True}
        return body

    async def send(self, chat_id: str, replies: Sequence[Reply], language: str) -> bool:
        body = self.message(chat_id, replies, language)
        for _ in range(2):
            try:
                status, answer = await self.http.post(self.url, body)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("telegram_send_failed", error=type(exc).__name__)
                return False
            if status == 200:
                return True
            retry_after = _retry_after(status, answer)
            if retry_after is None or retry_after > 5:
                break
            await asyncio.sleep(retry_after)
        log.warning("telegram_send_refused", status=status, reply=replies[-1].key)
        return False

    async def aclose(self) -> None:
        await self.http.aclose()


def _retry_after(status: int, answer: Any) -> float | None:
    """Telegram's 429 says how long to wait in ``parameters.retry_after``."""
    if status != 429 or not isinstance(answer, dict):
        return None
    parameters = answer.get("parameters")
    value = parameters.get("retry_after") if isinstance(parameters, dict) else None
    return float(value) if isinstance(value, int | float) else None


# -- the channel ----------------------------------------------------------------------


class TelegramChannel:
    """The Telegram bot webhook."""

    name = SOURCE
    title = "Telegram"

    def check(self, settings: Settings) -> None:
        """Raise SettingsError, naming the variable, for a malformed Telegram setting."""
        TelegramConfig.from_settings(settings)

    def status(self, settings: Settings) -> ChannelStatus:
        on = TelegramConfig.from_settings(settings).on
        why = None if on else "set TELEGRAM_BOT_TOKEN and TELEGRAM_WEBHOOK_SECRET"
        return ChannelStatus(SOURCE, on, "/telegram/webhook", why)

    def routes(self, context: ChannelContext) -> Sequence[BaseRoute]:
        config = TelegramConfig.from_settings(context.settings)
        messenger: Messenger | None = None
        if config.on:
            sender = TelegramSender(config)
            rules = ConversationRules(
                required=context.settings.contact_required_fields,
                region=context.settings.default_phone_region,
                ttl=config.ttl,
                contact_button=True,
            )
            messenger = Messenger(
                context,
                SOURCE,
                rules,
                sender,
                keep_events=KEEP_EVENTS,
                sweep_every=min(60.0, max(0.2, config.ttl / 4)),
            )
            context.state[_STATE_KEY] = messenger
        secret = config.secret or ""
        limit = min(MAX_BODY, context.settings.max_body_bytes)

        async def webhook(request: Request) -> Response:
            if messenger is None:
                return error_response(
                    503,
                    "the Telegram channel is off: set TELEGRAM_BOT_TOKEN and "
                    "TELEGRAM_WEBHOOK_SECRET (Telegram retries this update meanwhile)",
                )
            given = request.headers.get("x-telegram-bot-api-secret-token", "")
            if not constant_time_equal(given, secret):
                log.warning("telegram_refused", reason="secret token")
                return error_response(
                    401,
                    "X-Telegram-Bot-Api-Secret-Token does not match TELEGRAM_WEBHOOK_SECRET: "
                    "call setWebhook again with secret_token set to it",
                )
            try:
                body = await read_body(request, limit)
            except BodyTooLarge as exc:
                return error_response(413, f"{exc}: not a Telegram update")
            try:
                update = parse_update(body)
            except PayloadError as exc:
                return error_response(400, f"not a Telegram update we understand: {exc}")
            if not isinstance(update, TelegramUpdate):
                log.info("telegram_ignored", reason=update)
                return JSONResponse({"ok": True, "ignored": update})
            now = time.time()
            if not now - UPDATE_LIFETIME <= update.date <= now + FUTURE_SKEW:
                log.warning("telegram_refused", reason="stale or future message date")
                return error_response(
                    401,
                    "message.date is more than a day old or in the future: Telegram never "
                    "sends that, so this is a replay (or this server's clock is wrong)",
                )

            def submission(fields: Mapping[str, str], language: str) -> Submission:
                return Submission(
                    source=SOURCE,
                    fields=dict(fields),
                    event_id=f"update:{update.update_id}",
                    callback={"v": 1, "chat_id": update.chat_id, "lang": language},
                    actor=update.user_id,
                )

            step = await messenger.handle(
                update.incoming,
                event_id=str(update.update_id),
                now=now,
                submission=submission,
            )
            if step is None:
                return JSONResponse({"ok": True, "duplicate": True})
            messenger.send_replies(update.chat_id, [step])
            return JSONResponse({"ok": True})

        return [Route("/telegram/webhook", webhook, methods=["POST"])]

    async def startup(self, context: ChannelContext) -> None:
        messenger = context.state.get(_STATE_KEY)
        if isinstance(messenger, Messenger):
            await messenger.start()

    async def shutdown(self, context: ChannelContext) -> None:
        messenger = context.state.get(_STATE_KEY)
        if isinstance(messenger, Messenger):
            await messenger.stop()
            sender = messenger.sender
            if isinstance(sender, TelegramSender):
                await sender.aclose()
        notifier = context.state.pop("telegram_sender", None)
        if isinstance(notifier, TelegramSender):
            await notifier.aclose()

    async def notify(self, context: ChannelContext, record: DeliveryRecord) -> None:
        """The registration finished after the webhook's answer: tell the guest."""
        callback = record.callback
        if not callback or callback.get("v") != 1 or not callback.get("chat_id"):
            return
        chat_id, language = str(callback["chat_id"]), str(callback.get("lang") or "en")

        def make_sender() -> TelegramSender | None:  # a worker process: no routes, just settings
            config = TelegramConfig.from_settings(context.settings)
            return TelegramSender(config) if config.on else None

        sent = await send_outcome(
            context, record, chat_id, language, state_key=_STATE_KEY, make_sender=make_sender
        )
        if sent is None:
            return
        log.info(
            "telegram_outcome_reported", delivery_id=record.id, status=record.status, sent=sent
        )


channel = TelegramChannel()
