"""Loopback stand-ins of the Telegram Bot API and the WhatsApp Cloud (Graph) API, as
``contracts/chat-platforms.md`` §6.5 and §7.4 describe them, plus helpers that send what
Telegram and Meta send (raw bodies, the samples' header sets).

Telegram: ``POST /bot<token>/sendMessage`` (JSON): a wrong token is 401 ``Unauthorized``,
an empty text or a malformed keyboard 400 ``Bad Request: …``, else ``{"ok": true,
"result": <Message>}``. Graph: ``POST /<version>/<phone number id>/messages`` with
``Authorization: Bearer``: a wrong token is 401 with Graph's error object, a body that is
not a WhatsApp text message 400, else ``{"messaging_product": "whatsapp", "contacts":
[…], "messages": [{"id": "wamid…"}]}``. Every accepted message is kept in ``sent``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.rocketchat_standin import StandInServer

__all__ = [
    "GRAPH_VERSION",
    "SAMPLES",
    "MessengerStandIn",
    "Sent",
    "load_http",
    "sign_whatsapp",
]

SAMPLES = Path("/work/shared/contracts/samples")
GRAPH_VERSION = "v26.0"
TG_TOKEN = "7000000001:AAE-test-bot-token"
TG_SECRET = "tg-test_secret-Token-42"
WA_SECRET = "d3adb33fd3adb33fd3adb33fd3adb33f"
WA_VERIFY = "wa-test-verify-token"
WA_ACCESS = "EAAG-test-access-token"


def load_http(path: Path) -> tuple[str, str, dict[str, str], bytes]:
    """A sample: method, target, headers, the exact body (contract §0)."""
    raw = path.read_bytes()
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    method, target, _ = lines[0].split(" ")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return method, target, headers, body


def sign_whatsapp(body: bytes, secret: str = WA_SECRET) -> str:
    """``X-Hub-Signature-256`` of ``body`` (contract §7.2)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Sent:
    """One message the app sent through a platform's API."""

    platform: str  # "telegram" / "whatsapp"
    chat: str  # Telegram chat_id, or WhatsApp "<phone number id>:<to>"
    text: str
    body: dict[str, Any]


class MessengerStandIn:
    """Both APIs in one loopback app."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.refused: list[tuple[str, int]] = []
        self._ids = itertools.count(500)
        self._lock = threading.Lock()
        self.server: StandInServer | None = None
        self.app = Starlette(
            routes=[
                Route("/bot{token}/sendMessage", self._telegram, methods=["POST"]),
                Route("/{version}/{number}/messages", self._graph, methods=["POST"]),
            ]
        )

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @contextmanager
    def serve(self) -> Iterator[MessengerStandIn]:
        with StandInServer(self.app) as server:
            self.server = server
            yield self

    def telegram_settings(self, **extra: str) -> dict[str, str]:
        return {
            "TELEGRAM_BOT_TOKEN": TG_TOKEN,
            "TELEGRAM_WEBHOOK_SECRET": TG_SECRET,
            "TELEGRAM_API_URL": self.url,
            **extra,
        }

    def whatsapp_settings(self, **extra: str) -> dict[str, str]:
        return {
            "WHATSAPP_APP_SECRET": WA_SECRET,
            "WHATSAPP_VERIFY_TOKEN": WA_VERIFY,
            "WHATSAPP_ACCESS_TOKEN": WA_ACCESS,
            "WHATSAPP_API_URL": f"{self.url}/{GRAPH_VERSION}",
            **extra,
        }

    def to(self, chat: str) -> list[Sent]:
        with self._lock:
            return [s for s in self.sent if s.chat == chat]

    def texts(self, chat: str) -> list[str]:
        return [s.text for s in self.to(chat)]

    # -- Telegram Bot API ------------------------------------------------------------

    def _tg_error(self, status: int, description: str) -> Response:
        with self._lock:
            self.refused.append(("telegram", status))
        body = {"ok": False, "error_code": status, "description": description}
        return JSONResponse(body, status_code=status)

    async def _telegram(self, request: Request) -> Response:
        if request.path_params["token"] != TG_TOKEN:
            return self._tg_error(401, "Unauthorized")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return self._tg_error(400, "Bad Request: can't parse JSON")
        chat_id, text = body.get("chat_id"), body.get("text")
        if not isinstance(chat_id, int | str) or not str(chat_id).lstrip("-").isdigit():
            return self._tg_error(400, "Bad Request: chat not found")
        if not isinstance(text, str) or not text.strip():
            return self._tg_error(400, "Bad Request: message text is empty")
        if len(text) > 4096:
            return self._tg_error(400, "Bad Request: message is too long")
        markup = body.get("reply_markup")
        if markup is not None and not self._markup_ok(markup):
            return self._tg_error(400, "Bad Request: can't parse reply keyboard markup JSON")
        with self._lock:
            self.sent.append(Sent("telegram", str(chat_id), text, body))
        message = {
            "message_id": next(self._ids),
            "from": {"id": 7000000001, "is_bot": True, "first_name": "Contacts"},
            "chat": {"id": int(chat_id), "type": "private"},
            "date": 0,
            "text": text,
        }
        return JSONResponse({"ok": True, "result": message})

    @staticmethod
    def _markup_ok(markup: Any) -> bool:
        if not isinstance(markup, dict):
            return False
        if "remove_keyboard" in markup:
            return markup["remove_keyboard"] is True
        rows = markup.get("keyboard")
        return (
            isinstance(rows, list)
            and all(isinstance(row, list) for row in rows)
            and all(isinstance(b, dict) and isinstance(b.get("text"), str) for r in rows for b in r)
        )

    # -- WhatsApp Cloud API ----------------------------------------------------------

    def _graph_error(self, status: int, message: str, code: int) -> Response:
        with self._lock:
            self.refused.append(("whatsapp", status))
        error = {"message": message, "type": "OAuthException", "code": code}
        return JSONResponse({"error": error}, status_code=status)

    async def _graph(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {WA_ACCESS}":
            return self._graph_error(401, "Invalid OAuth access token.", 190)
        try:
            body = json.loads(await request.body())
        except ValueError:
            return self._graph_error(400, "Invalid JSON", 100)
        text = (body.get("text") or {}).get("body") if isinstance(body, dict) else None
        to = body.get("to") if isinstance(body, dict) else None
        if (
            body.get("messaging_product") != "whatsapp"
            or body.get("type") != "text"
            or not isinstance(to, str)
            or not isinstance(text, str)
            or not text
        ):
            return self._graph_error(400, "(#100) Invalid parameter", 100)
        number = request.path_params["number"]
        with self._lock:
            self.sent.append(Sent("whatsapp", f"{number}:{to}", text, body))
        wamid = f"wamid.OUT{next(self._ids)}"
        return JSONResponse(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": wamid}],
            }
        )
