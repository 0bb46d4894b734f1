"""Microsoft Teams: register a guest by @mentioning an outgoing webhook in a channel,
``@Contacts Chris Doe chris@example.com +1 415 555 2671`` (issue #16; request format in
``contracts/chat-platforms.md`` §2; set-up and limits in ``docs/teams.md``).

Route: ``POST /teams/outgoing``. Teams signs the raw body: ``Authorization: HMAC
<base64 HMAC-SHA256>`` keyed with the base64-decoded security token, checked in constant
time against each ``TEAMS_WEBHOOK_SECRET``. The activity's own ``timestamp`` (inside the
signed body) must be within 5 minutes, and its ``id`` is the event id: a replayed message
registers nothing twice.

An outgoing webhook can only answer the request, within 5 seconds, in the message's reply
chain where the whole channel sees it: no private answer, no form and no later message.
So the reply lists what is missing or wrong, and a contact Rocket.Chat has not registered
by the deadline is delivered later without telling Teams (the admin page shows it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import json
import re
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

__all__ = ["TeamsChannel", "TeamsConfig", "channel", "message_text", "signature"]

log = structlog.get_logger("handlers.teams")

SOURCE = "teams"
MAX_BODY_BYTES = 64 * 1024
ANSWER_DEADLINE = 4.0  # Teams gives up after 5 s
TIMESTAMP_WINDOW = 300
LABELS = {"name": "Name", "email": "Email", "phone": "Phone"}
_AT = re.compile(r"<at>.*?</at>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]{0,500}>")


def signature(key: bytes, body: bytes) -> str:
    """``HMAC <base64>`` as Teams sends it in ``Authorization`` (contract §2.3)."""
    return "HMAC " + base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()


def message_text(text: str) -> str:
    """The typed text: the ``<at>…</at>`` mention, HTML tags and entities taken out."""
    return " ".join(html.unescape(_TAG.sub(" ", _AT.sub(" ", text))).split())


class TeamsConfig:
    """The outgoing webhooks' keys (``TEAMS_WEBHOOK_SECRET``: one security token per team,
    comma-separated); no key: the channel is off."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self.keys = tuple(keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> TeamsConfig:
        raw = settings.lookup("TEAMS_WEBHOOK_SECRET") or ""
        keys = []
        for token in (t.strip() for t in raw.split(",")):
            if not token:
                continue
            try:
                key = base64.b64decode(token, validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if len(key) < 16:
                raise SettingsError(
                    "setting TEAMS_WEBHOOK_SECRET: expected the security token Teams showed "
                    "when the outgoing webhook was created (base64), several separated by commas"
                )
            keys.append(key)
        return cls(keys)


class _Malformed(ValueError):
    pass


def _read_activity(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Malformed("the body is not a JSON object") from None
    if not isinstance(data, dict):
        raise _Malformed("the body is not a JSON object")
    if data.get("type") != "message":
        raise _Malformed("'type' must be message")
    for part in ("id", "text", "timestamp"):
        if not isinstance(data.get(part), str) or not data[part]:
            raise _Malformed(f"'{part}' must be a non-empty string")
    for part in ("from", "conversation", "channelData"):
        if data.get(part) is not None and not isinstance(data[part], dict):
            raise _Malformed(f"'{part}' must be an object")
    return data


def _timestamp(value: str) -> float:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise _Malformed("'timestamp' must be an ISO 8601 time") from None


def _part(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def reply(text: str) -> JSONResponse:
    """The answer Teams posts in the message's reply chain."""
    return JSONResponse({"type": "message", "text": text})


class TeamsChannel:
    """The outgoing webhook."""

    name = "teams"
    title = "Microsoft Teams"

    def __init__(self) -> None:
        self.clock: Callable[[], float] = time.time  # what the freshness check reads
        self.background = Background()

    def check(self, settings: Settings) -> None:
        """Raise SettingsError naming TEAMS_WEBHOOK_SECRET when it is malformed."""
        TeamsConfig.from_settings(settings)

    def status(self, settings: Settings) -> ChannelStatus:
        on = bool(TeamsConfig.from_settings(settings).keys)
        reason = None if on else "set TEAMS_WEBHOOK_SECRET (the outgoing webhook's security token)"
        return ChannelStatus("teams", on, "/teams/outgoing", reason)

    def routes(self, context: ChannelContext) -> Sequence[BaseRoute]:
        config = TeamsConfig.from_settings(context.settings)

        async def outgoing(request: Request) -> Response:
            received = time.monotonic()
            if not config.keys:
                return error_response(
                    503,
                    "the Teams channel is off: set TEAMS_WEBHOOK_SECRET to the outgoing "
                    "webhook's security token",
                )
            try:
                body = await read_body(request, MAX_BODY_BYTES)
            except BodyTooLarge as exc:
                return error_response(413, f"{exc}: not a Teams message")
            given = request.headers.get("authorization", "")
            authentic = False
            for key in config.keys:  # every one compared: constant time
                authentic |= constant_time_equal(given, signature(key, body))
            if not authentic:
                log.warning("teams_request_refused", status=401, reason="signature")
                return error_response(
                    401,
                    "the HMAC in Authorization does not match: set TEAMS_WEBHOOK_SECRET to the "
                    "webhook's security token",
                )
            try:
                data = _read_activity(body)
                sent_at = _timestamp(data["timestamp"])
            except _Malformed as exc:
                return error_response(400, f"malformed Teams activity: {exc}; nothing was stored")
            if abs(self.clock() - sent_at) > TIMESTAMP_WINDOW:
                log.warning("teams_request_refused", status=401, reason="stale")
                return error_response(
                    401,
                    "the message's timestamp is more than 5 minutes away from our clock: "
                    "replayed request, or a clock out of sync",
                )
            return await self._message(context, data, received + ANSWER_DEADLINE)

        return [Route("/teams/outgoing", outgoing, methods=["POST"])]

    async def _message(
        self, context: ChannelContext, data: Mapping[str, Any], deadline: float
    ) -> Response:
        settings = context.settings
        text = message_text(data["text"])
        example = "@Contacts Chris Doe chris@example.com +1 415 555 2671"
        if not text:
            return reply(f"Type the guest's name, email and phone after the mention: {example}")
        extraction = extract_contact(text, settings.default_phone_region)
        _, errors = extraction.check(
            required=settings.contact_required_fields,
            default_region=settings.default_phone_region,
        )
        if errors:
            return reply(_problems(errors) + f"\n\nSend it again, e.g. {example}")
        sender, conversation = _part(data, "from"), _part(data, "conversation")
        tenant = conversation.get("tenantId") or _part(_part(data, "channelData"), "tenant").get(
            "id"
        )
        team = _part(_part(data, "channelData"), "team").get("id")
        digest = hashlib.sha256(f"{tenant}\x1f{data['id']}".encode()).hexdigest()[:40]
        submission = Submission(
            source=SOURCE,
            fields=extraction.fields(),
            event_id=f"msg:{digest}",
            actor=str(sender.get("aadObjectId") or sender.get("id") or "") or None,
            team=str(team or tenant or "") or None,
        )
        outcome = await submit_by(
            context.queue,
            submission,
            deadline=deadline,
            wait=settings.fast_path_budget,
            background=self.background,
            late=_log_late,
        )
        return reply(_answer(outcome, extraction.name))

    async def shutdown(self, context: ChannelContext) -> None:
        await self.background.drain()


def _problems(errors: Mapping[str, str]) -> str:
    lines = [f"- **{LABELS.get(k, k)}**: {escape_markdown(v)}" for k, v in errors.items()]
    return "I could not register that:\n\n" + "\n".join(lines)


_LATER = "it is delivered as soon as Rocket.Chat answers (Teams cannot be told later)"


def _answer(outcome: Outcome | None, name: str | None) -> str:
    if outcome is None:
        return outcome_text(status="pending", name=name, later=_LATER)
    if outcome.status == "invalid":
        return _problems(outcome.errors)
    return outcome_text(
        status=outcome.status,
        name=outcome.contact.name if outcome.contact else name,
        contact_url=outcome.contact_url,
        last_error=outcome.last_error,
        duplicate=outcome.duplicate,
        later=_LATER,
    )


async def _log_late(task: Any) -> None:
    """An accept that outlived the 5 s answer: Teams cannot be told; log how it ended."""
    try:
        outcome = await task
    except Exception:
        log.exception("teams_late_accept_failed")
        return
    log.info("teams_late_accept", delivery_id=outcome.delivery_id, status=outcome.status)


channel = TeamsChannel()
