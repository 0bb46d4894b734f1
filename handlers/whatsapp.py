"""WhatsApp Business Cloud API: a guest's shared contact card becomes a contact; a text
goes through extraction and the same ask-for-what-is-missing conversation as Telegram
(issue #16; request formats in ``contracts/chat-platforms.md`` §7).

Route: ``/whatsapp/webhook`` (the Callback URL in the app's WhatsApp > Configuration).
``GET`` is Meta's verification handshake: ``hub.mode=subscribe`` and ``hub.verify_token``
equal to ``WHATSAPP_VERIFY_TOKEN`` (constant time) are answered with ``hub.challenge``,
anything else 403. ``POST`` notifications are size-capped (413), their
``X-Hub-Signature-256`` (HMAC-SHA256 of the raw body with ``WHATSAPP_APP_SECRET``)
checked in constant time (401), refused when a message is older than Meta retries (7
days) or from the future (401: a replay), read strictly (400 naming the part), and each
message is handled once (deduplicated on its ``wamid``). Status updates are acknowledged.

The sender's number (``messages[].from``) is their phone and their profile name their
name, so usually only the email is asked, in the language of their number's country.
Replies go out through the Graph API after the webhook's answer, always inside the
24-hour window the guest's message opened; the registration's outcome is sent only while
that window is still open.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
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
    Step,
    Submission,
    constant_time_equal,
    error_response,
    language_of_phone,
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

__all__ = ["WhatsAppChannel", "WhatsAppConfig", "WhatsAppMessage", "channel", "parse_payload"]

log = structlog.get_logger("handlers.whatsapp")

SOURCE = "whatsapp"
DEFAULT_API_URL = "https://graph.facebook.com/v26.0"
RETRY_LIFETIME = 7 * 86400.0  # Meta retries a notification for up to 7 days [unconfirmed]
FUTURE_SKEW = 300.0
KEEP_EVENTS = RETRY_LIFETIME + 3600.0  # the duplicate window covers the replay window
SERVICE_WINDOW = 86400.0  # free-form messages only within 24 h of the guest's last message
_CANCEL = {"/cancel", "cancel", "stop", "cancelar", "annuler", "abbrechen", "отмена"}
_STATE_KEY = "whatsapp"


@dataclass(frozen=True)
class WhatsAppConfig:
    """The WhatsApp channel's settings; ``on`` is False unless WHATSAPP_APP_SECRET is set."""

    app_secret: str | None
    verify_token: str | None
    access_token: str | None
    phone_number_id: str | None
    api_url: str
    ttl: float

    @property
    def on(self) -> bool:
        return bool(self.app_secret)

    @classmethod
    def from_settings(cls, settings: Settings) -> WhatsAppConfig:
        secret = setting(settings, "WHATSAPP_APP_SECRET")
        verify = setting(settings, "WHATSAPP_VERIFY_TOKEN")
        access = setting(settings, "WHATSAPP_ACCESS_TOKEN")
        needs = {
            "WHATSAPP_VERIFY_TOKEN": "the Verify token typed in the app's webhook settings",
            "WHATSAPP_ACCESS_TOKEN": "a system user's token to answer guests",
        }
        if secret:
            for name, value in (
                ("WHATSAPP_VERIFY_TOKEN", verify),
                ("WHATSAPP_ACCESS_TOKEN", access),
            ):
                if not value:
                    raise SettingsError(
                        f"setting WHATSAPP_APP_SECRET is set without {name}: expected both "
                        f"({name} is {needs[name]})"
                    )
        else:
            for name, value in (
                ("WHATSAPP_VERIFY_TOKEN", verify),
                ("WHATSAPP_ACCESS_TOKEN", access),
            ):
                if value:
                    raise SettingsError(
                        f"setting {name} is set without WHATSAPP_APP_SECRET: expected the app "
                        "secret too (App settings > Basic), which verifies every notification"
                    )
        phone_id = setting(settings, "WHATSAPP_PHONE_NUMBER_ID")
        if phone_id is not None and not phone_id.isdigit():
            raise SettingsError(
                f"setting WHATSAPP_PHONE_NUMBER_ID (got {phone_id!r}): expected the numeric "
                "Phone number ID from WhatsApp > API Setup"
            )
        return cls(
            app_secret=secret,
            verify_token=verify,
            access_token=access,
            phone_number_id=phone_id,
            api_url=url_setting(settings, "WHATSAPP_API_URL", DEFAULT_API_URL),
            ttl=duration_setting(
                settings, "WHATSAPP_CONVERSATION_TTL", 3600.0, low=1.0, high=SERVICE_WINDOW
            ),
        )


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``, constant time."""
    if not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return constant_time_equal(header.strip().lower(), expected)


# -- reading a notification (pure) ----------------------------------------------------


@dataclass(frozen=True)
class WhatsAppMessage:
    """One message of a notification, as the conversation needs it."""

    id: str
    sender: str  # the wa_id it came from (digits)
    phone_number_id: str  # our number it was sent to: the replies go out from it
    timestamp: float
    kind: str
    text: str | None = None
    profile_name: str | None = None
    cards: tuple[Mapping[str, str | None], ...] = field(default_factory=tuple)

    @property
    def chat_id(self) -> str:
        """A conversation is between one of our numbers and one guest: ``<ours>:<theirs>``."""
        return f"{self.phone_number_id}:{self.sender}"


_EXPECTED: dict[type, str] = {str: "a string", dict: "an object", list: "a list"}


def _get(obj: Any, key: str, kind: type, where: str, *, needed: bool = True) -> Any:
    if not isinstance(obj, dict):
        raise PayloadError(f"{where or 'body'}: expected an object")
    value = obj.get(key)
    if value is None and not needed:
        return None
    if not isinstance(value, kind):
        expected = _EXPECTED[kind]
        raise PayloadError(
            f"{where}.{key}: expected {expected}" if where else f"{key}: expected {expected}"
        )
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise PayloadError(f"{where}.{key}: not valid Unicode") from None
    return value


def _card(card: Any, where: str) -> dict[str, str | None]:
    """A shared contact card: its name, first phone and first email."""
    if not isinstance(card, dict):
        raise PayloadError(f"{where}: expected an object (a contact card)")
    name = _get(card, "name", dict, where, needed=False) or {}
    formatted = _get(name, "formatted_name", str, f"{where}.name", needed=False)
    parts = [
        _get(name, key, str, f"{where}.name", needed=False) for key in ("first_name", "last_name")
    ]
    phones = _get(card, "phones", list, where, needed=False) or []
    emails = _get(card, "emails", list, where, needed=False) or []
    phone = email = None
    for index, item in enumerate(phones):
        spot = f"{where}.phones[{index}]"
        number = _get(item, "phone", str, spot, needed=False)
        wa_id = _get(item, "wa_id", str, spot, needed=False)
        phone = phone or (number if number and number.strip().startswith("+") else None)
        phone = phone or (f"+{wa_id}" if wa_id else number)
    for index, item in enumerate(emails):
        email = email or _get(item, "email", str, f"{where}.emails[{index}]", needed=False)
    return {
        "name": formatted or " ".join(p for p in parts if p) or None,
        "phone": phone,
        "email": email,
    }


def parse_payload(body: bytes) -> list[WhatsAppMessage]:
    """Every message of a notification, in order (statuses and other fields: none);
    PayloadError naming the part for one Meta would not send."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise PayloadError("body: expected a JSON object in UTF-8") from None
    if not isinstance(data, dict):
        raise PayloadError("body: expected a JSON object")
    if data.get("object") != "whatsapp_business_account":
        raise PayloadError('object: expected "whatsapp_business_account"')
    found: list[WhatsAppMessage] = []
    for e, entry in enumerate(_get(data, "entry", list, "")):
        for c, change in enumerate(_get(entry, "changes", list, f"entry[{e}]")):
            where = f"entry[{e}].changes[{c}]"
            if _get(change, "field", str, where) != "messages":
                continue
            value = _get(change, "value", dict, where)
            messages = _get(value, "messages", list, f"{where}.value", needed=False) or []
            if not messages:
                continue  # statuses of our own messages: acknowledged, ignored
            metadata = _get(value, "metadata", dict, f"{where}.value")
            number_id = _get(metadata, "phone_number_id", str, f"{where}.value.metadata")
            names: dict[str, str] = {}
            for p, person in enumerate(
                _get(value, "contacts", list, f"{where}.value", needed=False) or []
            ):
                spot = f"{where}.value.contacts[{p}]"
                wa_id = _get(person, "wa_id", str, spot, needed=False)
                profile = _get(person, "profile", dict, spot, needed=False) or {}
                name = _get(profile, "name", str, f"{spot}.profile", needed=False)
                if wa_id and name:
                    names[wa_id] = name
            for m, message in enumerate(messages):
                spot = f"{where}.value.messages[{m}]"
                sender = _get(message, "from", str, spot)
                stamp = _get(message, "timestamp", str, spot)
                if not stamp.isdigit():
                    raise PayloadError(f"{spot}.timestamp: expected Unix seconds")
                kind = _get(message, "type", str, spot)
                text = None
                cards: tuple[Mapping[str, str | None], ...] = ()
                if kind == "text":
                    text = _get(_get(message, "text", dict, spot), "body", str, f"{spot}.text")
                elif kind == "contacts":
                    given = _get(message, "contacts", list, spot)
                    cards = tuple(
                        _card(card, f"{spot}.contacts[{i}]") for i, card in enumerate(given)
                    )
                found.append(
                    WhatsAppMessage(
                        id=_get(message, "id", str, spot),
                        sender=sender,
                        phone_number_id=number_id,
                        timestamp=float(stamp),
                        kind=kind,
                        text=text,
                        profile_name=names.get(sender),
                        cards=cards,
                    )
                )
    return found


def incoming_of(message: WhatsAppMessage, card: Mapping[str, str | None] | None = None) -> Incoming:
    """The conversation's view of a message (or of one of its contact cards)."""
    language = language_of_phone(message.sender)
    chat = message.chat_id
    if card is not None:
        return Incoming(chat_id=chat, language=language, known=card)
    text = (message.text or "").strip()
    if text.casefold() in _CANCEL:
        return Incoming(chat_id=chat, language=language, command="cancel")
    return Incoming(
        chat_id=chat,
        language=language,
        text=text or None,
        known={"name": message.profile_name, "phone": f"+{message.sender}"},
    )


# -- the Graph API --------------------------------------------------------------------


class WhatsAppSender:
    """Text messages through ``POST /<phone number id>/messages``."""

    def __init__(self, config: WhatsAppConfig) -> None:
        self.api_url = config.api_url
        self.http = JsonPoster({"Authorization": f"Bearer {config.access_token}"})

    async def send(self, chat_id: str, replies: Sequence[Reply], language: str) -> bool:
        """``chat_id`` is ``<our phone number id>:<the guest's wa_id>``."""
        number_id, _, to = chat_id.partition(":")
        if not number_id or not to:
            log.warning("whatsapp_send_skipped", reason="no phone number id")
            return False
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"body": "\n\n".join(reply.text(language) for reply in replies)},
        }
        try:
            status, _ = await self.http.post(f"{self.api_url}/{number_id}/messages", body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("whatsapp_send_failed", error=type(exc).__name__)
            return False
        if status != 200:
            log.warning("whatsapp_send_refused", status=status, reply=replies[-1].key)
            return False
        return True

    async def aclose(self) -> None:
        await self.http.aclose()


# -- the channel ----------------------------------------------------------------------


class WhatsAppChannel:
    """The WhatsApp Cloud API webhook."""

    name = SOURCE
    title = "WhatsApp"

    def check(self, settings: Settings) -> None:
        """Raise SettingsError, naming the variable, for a malformed WhatsApp setting."""
        WhatsAppConfig.from_settings(settings)

    def status(self, settings: Settings) -> ChannelStatus:
        on = WhatsAppConfig.from_settings(settings).on
        why = (
            None
            if on
            else ("set WHATSAPP_APP_SECRET, WHATSAPP_VERIFY_TOKEN and WHATSAPP_ACCESS_TOKEN")
        )
        return ChannelStatus(SOURCE, on, "/whatsapp/webhook", why)

    def routes(self, context: ChannelContext) -> Sequence[BaseRoute]:
        config = WhatsAppConfig.from_settings(context.settings)
        messenger: Messenger | None = None
        sender: WhatsAppSender | None = None
        if config.on:
            sender = WhatsAppSender(config)
            rules = ConversationRules(
                required=context.settings.contact_required_fields,
                region=context.settings.default_phone_region,
                ttl=config.ttl,
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

        def off() -> Response:
            return error_response(
                503,
                "the WhatsApp channel is off: set WHATSAPP_APP_SECRET, WHATSAPP_VERIFY_TOKEN "
                "and WHATSAPP_ACCESS_TOKEN (Meta retries notifications meanwhile)",
            )

        limit = context.settings.max_body_bytes

        async def verify(request: Request) -> Response:
            if messenger is None:
                return off()
            query = request.query_params
            token = query.get("hub.verify_token", "")
            if query.get("hub.mode") != "subscribe" or not constant_time_equal(
                token, config.verify_token or ""
            ):
                log.warning("whatsapp_verification_refused")
                return error_response(
                    403,
                    "hub.verify_token does not match WHATSAPP_VERIFY_TOKEN (or hub.mode is not "
                    "subscribe): type the same Verify token in the app's webhook settings",
                )
            return PlainTextResponse(query.get("hub.challenge", ""))

        async def notification(request: Request) -> Response:
            if messenger is None or sender is None:
                return off()
            try:
                body = await read_body(request, limit)
            except BodyTooLarge as exc:
                return error_response(413, f"{exc}: not a WhatsApp notification")
            assert config.app_secret is not None
            if not signature_ok(
                config.app_secret, body, request.headers.get("x-hub-signature-256")
            ):
                log.warning("whatsapp_refused", reason="signature")
                return error_response(
                    401,
                    "X-Hub-Signature-256 does not sign this body with WHATSAPP_APP_SECRET: "
                    "copy the App secret from App settings > Basic",
                )
            try:
                messages = parse_payload(body)
            except PayloadError as exc:
                return error_response(400, f"not a WhatsApp notification we understand: {exc}")
            now = time.time()
            if any(not now - RETRY_LIFETIME <= m.timestamp <= now + FUTURE_SKEW for m in messages):
                log.warning("whatsapp_refused", reason="stale or future message timestamp")
                return error_response(
                    401,
                    "a message's timestamp is more than 7 days old or in the future: Meta "
                    "never sends that, so this is a replay (or this server's clock is wrong)",
                )
            wanted = config.phone_number_id
            steps: dict[str, list[Step]] = {}
            handled = 0
            for message in messages:
                if wanted and message.phone_number_id != wanted:
                    continue  # another number of the same business account
                for step in await self._handle(messenger, message, now):
                    steps.setdefault(message.chat_id, []).append(step)
                    handled += 1
            for chat, chat_steps in steps.items():
                messenger.send_replies(chat, chat_steps)
            return JSONResponse({"ok": True, "handled": handled})

        return [
            Route("/whatsapp/webhook", verify, methods=["GET"]),
            Route("/whatsapp/webhook", notification, methods=["POST"]),
        ]

    @staticmethod
    async def _handle(messenger: Messenger, message: WhatsAppMessage, now: float) -> list[Step]:
        """One message: each complete card registered; an incomplete card (or a text) a
        step of the conversation. Nothing for a message handled before."""

        def submission_for(event_id: str) -> Any:
            def submission(fields: Mapping[str, str], language: str) -> Submission:
                return Submission(
                    source=SOURCE,
                    fields=dict(fields),
                    event_id=event_id,
                    callback={
                        "v": 1,
                        "to": message.sender,
                        "pn": message.phone_number_id,
                        "lang": language,
                        "at": message.timestamp,
                    },
                    actor=message.sender,
                )

            return submission

        if not message.cards:
            step = await messenger.handle(
                incoming_of(message),
                event_id=message.id,
                now=now,
                submission=submission_for(message.id),
            )
            return [step] if step is not None else []
        steps = []
        for index, card in enumerate(message.cards):
            event_id = message.id if index == 0 else f"{message.id}#{index}"
            step = await messenger.handle(
                incoming_of(message, card),
                event_id=event_id,
                now=now,
                submission=submission_for(event_id),
                fresh=True,
            )
            if step is not None:
                steps.append(step)
        return steps

    async def startup(self, context: ChannelContext) -> None:
        messenger = context.state.get(_STATE_KEY)
        if isinstance(messenger, Messenger):
            await messenger.start()

    async def shutdown(self, context: ChannelContext) -> None:
        messenger = context.state.get(_STATE_KEY)
        if isinstance(messenger, Messenger):
            await messenger.stop()
            if isinstance(messenger.sender, WhatsAppSender):
                await messenger.sender.aclose()
        notifier = context.state.pop("whatsapp_sender", None)
        if isinstance(notifier, WhatsAppSender):
            await notifier.aclose()

    async def notify(self, context: ChannelContext, record: DeliveryRecord) -> None:
        """The registration finished after the webhook's answer: tell the guest, while the
        24-hour window their message opened is still open (else only log it)."""
        callback = record.callback
        if not callback or callback.get("v") != 1 or not callback.get("to"):
            return
        if time.time() - float(callback.get("at") or 0) >= SERVICE_WINDOW:
            log.info("whatsapp_outcome_not_sent", delivery_id=record.id, reason="24 h window")
            return
        chat_id = f"{callback.get('pn') or ''}:{callback['to']}"
        language = str(callback.get("lang") or "en")

        def make_sender() -> WhatsAppSender | None:  # a worker process: no routes, just settings
            config = WhatsAppConfig.from_settings(context.settings)
            return WhatsAppSender(config) if config.on else None

        sent = await send_outcome(
            context, record, chat_id, language, state_key=_STATE_KEY, make_sender=make_sender
        )
        if sent is None:
            return
        log.info(
            "whatsapp_outcome_reported", delivery_id=record.id, status=record.status, sent=sent
        )


channel = WhatsAppChannel()
