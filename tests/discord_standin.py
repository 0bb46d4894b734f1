"""A loopback stand-in for Discord, both directions, as ``contracts/chat-platforms.md`` §3
describes it.

Discord → the app: :meth:`DiscordStandIn.interact` signs an interaction (Ed25519 over
timestamp + body with the contract's test seed) and POSTs it to the app's Interactions
Endpoint URL, then checks the answer as Discord would: JSON, within 3 seconds, a response
type allowed for that interaction (no modal answering a PING or a modal submission), a
modal's limits (title ≤ 45, 1-5 components, Label ≤ 45 / description ≤ 100, custom_id
≤ 100), a message's ``content`` ≤ 2000. Every answer is kept (``answers``), so tests assert
what the person saw; an answered message becomes the interaction's ``@original``.

The app → Discord: ``PATCH /api/v10/webhooks/{app}/{token}/messages/@original`` (15 minutes
from the interaction; 404 ``Unknown Webhook`` after, 404 ``Unknown Message`` when the
interaction was answered with a modal) and ``PUT /api/v10/applications/{app}/commands``
or ``…/guilds/{guild}/commands`` with ``Authorization: Bot <token>`` (401 otherwise).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.rocketchat_standin import StandInServer

__all__ = ["PUBLIC_KEY", "SAMPLES", "SEED", "DiscordStandIn", "load_http", "sign"]

SEED = "1d131f266833f076122a1fc0c460679f2f558393756c9277da66ad4646569cc2"
PUBLIC_KEY = "d38bc7c7ded4aedba5b22cdd69a1dba54655c3a8a49003790fee83277de50ff1"
APPLICATION_ID = "1300000000000000001"
BOT_TOKEN = "MTMwMDAwMDAwMDAwMDAwMDAwMQ.test.bot-token"
TOKEN_SECONDS = 15 * 60
ANSWER_SECONDS = 3.0
SAMPLES = Path(__file__).resolve().parent / "samples" / "discord"  # the contract's, byte for byte


def load_http(path: Path) -> tuple[str, str, dict[str, str], bytes]:
    """A raw HTTP/1.1 request file (contract §0): method, target, headers, exact body."""
    raw = path.read_bytes()
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    method, target, _ = lines[0].split(" ")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return method, target, headers, body


def sign(body: bytes, timestamp: str, seed: str = SEED) -> str:
    """Discord's X-Signature-Ed25519: hex Ed25519 signature of timestamp + body."""
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed))
    return key.sign(timestamp.encode() + body).hex()


@dataclass
class Answer:
    """What the app answered one interaction, as Discord received it."""

    interaction: dict[str, Any]
    status: int
    body: Any
    seconds: float
    problems: list[str] = field(default_factory=list)


@dataclass
class _Token:
    interaction: dict[str, Any]
    issued_at: float
    original: dict[str, Any] | None = None  # the message answered (None: a modal or nothing)
    edits: list[dict[str, Any]] = field(default_factory=list)


class DiscordStandIn:
    """Discord: sends signed interactions, keeps the answers and the follow-up edits."""

    def __init__(self, *, application_id: str = APPLICATION_ID) -> None:
        self.application_id = application_id
        self.bot_token = BOT_TOKEN
        self.endpoint = ""  # <service>/discord/interactions
        self.base_url = ""
        self.answers: list[Answer] = []
        self.edits: list[tuple[str, dict[str, Any]]] = []  # (token, body) of each PATCH
        self.refused_edits: list[tuple[str, int]] = []
        self.registrations: list[dict[str, Any]] = []  # each PUT of commands
        self.commands: dict[str, list[dict[str, Any]]] = {}  # scope -> registered commands
        self._tokens: dict[str, _Token] = {}
        self._ids = itertools.count(1300000000000010000)
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route(
                    "/api/v10/webhooks/{app}/{token}/messages/@original",
                    self._edit_original,
                    methods=["PATCH"],
                ),
                Route("/api/v10/applications/{app}/commands", self._put_commands, methods=["PUT"]),
                Route(
                    "/api/v10/applications/{app}/guilds/{guild}/commands",
                    self._put_commands,
                    methods=["PUT"],
                ),
            ]
        )

    @contextmanager
    def serve(self) -> Iterator[DiscordStandIn]:
        with StandInServer(self.app) as server:
            self.base_url = server.url
            yield self

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v10"

    def channel_settings(self, **extra: str) -> dict[str, str]:
        values = {
            "DISCORD_PUBLIC_KEY": PUBLIC_KEY,
            "DISCORD_APPLICATION_ID": self.application_id,
            "DISCORD_API_URL": self.api_url,
        }
        values.update(extra)
        return values

    # ----------------------------------------------------------------- Discord → the app

    def interaction(
        self, kind: int, data: Mapping[str, Any] | None, *, user_id: str = "1300000000000000777"
    ) -> dict[str, Any]:
        """An interaction of ``kind`` from a guild member (contract §3.4), with a fresh
        id and token."""
        interaction_id = str(next(self._ids))
        body: dict[str, Any] = {
            "app_permissions": "562949953601536",
            "application_id": self.application_id,
            "channel": {"id": "1300000000000000200", "name": "front-desk", "type": 0},
            "channel_id": "1300000000000000200",
            "entitlements": [],
            "guild_id": "1300000000000000100",
            "id": interaction_id,
            "locale": "en-US",
            "member": {
                "user": {
                    "id": user_id,
                    "username": "alex.agent",
                    "global_name": "Alex Agent",
                    "discriminator": "0",
                },
                "roles": [],
                "permissions": "2248473465835073",
            },
            "token": f"interaction-token-{interaction_id}-secret",
            "type": kind,
            "version": 1,
        }
        if data is not None:
            body["data"] = dict(data)
        return body

    def command(self, **options: str) -> dict[str, Any]:
        """``/contact`` with string options (``text``, ``name``, ``email``, ``phone``)."""
        data = {
            "id": "1300000000000000300",
            "name": "contact",
            "type": 1,
            "options": [{"name": k, "type": 3, "value": v} for k, v in options.items()],
        }
        if not options:
            del data["options"]
        return self.interaction(2, data)

    def modal_submit(
        self, values: Mapping[str, str], custom_id: str = "contact_modal"
    ) -> dict[str, Any]:
        """Submit the contact modal with ``values`` (Label/Text Input components, §3.4)."""
        components = [
            {
                "type": 18,
                "id": 2 * n + 1,
                "component": {"type": 4, "id": 2 * n + 2, "custom_id": k, "value": v},
            }
            for n, (k, v) in enumerate(values.items())
        ]
        return self.interaction(5, {"custom_id": custom_id, "components": components})

    def click(self, answer: Answer) -> dict[str, Any]:
        """Click the first button of an answered message (a MESSAGE_COMPONENT interaction)."""
        rows = answer.body["data"]["components"]
        button = rows[0]["components"][0]
        interaction = self.interaction(3, {"custom_id": button["custom_id"], "component_type": 2})
        interaction["message"] = {"id": "1300000000000000999", "components": rows}
        return interaction

    def post(
        self,
        body: bytes,
        *,
        timestamp: str | None = None,
        signature: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """POST raw ``body`` to the endpoint, signed now unless told otherwise."""
        stamp = timestamp if timestamp is not None else str(int(time.time()))
        sent = {
            "Content-Type": "application/json",
            "User-Agent": "Discord-Interactions/1.0 (+https://discord.com)",
            "X-Signature-Ed25519": signature if signature is not None else sign(body, stamp),
            "X-Signature-Timestamp": stamp,
        }
        sent.update(headers or {})
        return httpx.post(self.endpoint, content=body, headers=sent, timeout=30)

    def interact(self, interaction: Mapping[str, Any], **kwargs: Any) -> Answer:
        """Send ``interaction`` as Discord does and keep the answer, checked as Discord would."""
        body = json.dumps(interaction, separators=(",", ":")).encode()
        with self._lock:  # the token exists from now; its message once the answer is in
            self._tokens[str(interaction.get("token"))] = _Token(dict(interaction), time.time())
        started = time.monotonic()
        response = self.post(body, **kwargs)
        seconds = time.monotonic() - started
        try:
            answer_body: Any = response.json()
        except ValueError:
            answer_body = response.text
        answer = Answer(dict(interaction), response.status_code, answer_body, seconds)
        if response.status_code == 200:
            answer.problems = self._check_answer(interaction, response, answer_body, seconds)
            with self._lock:
                token = self._tokens[str(interaction.get("token"))]
                if isinstance(answer_body, dict) and answer_body.get("type") in (4, 5):
                    token.original = dict(answer_body.get("data") or {})
        with self._lock:
            self.answers.append(answer)
        return answer

    def _check_answer(
        self, interaction: Mapping[str, Any], response: httpx.Response, body: Any, seconds: float
    ) -> list[str]:
        problems = []
        if seconds > ANSWER_SECONDS:
            problems.append(f"answered after {seconds:.1f}s: the interaction failed")
        if not response.headers.get("content-type", "").startswith("application/json"):
            problems.append("the answer is not application/json")
        if not isinstance(body, dict) or not isinstance(body.get("type"), int):
            return [*problems, "the answer is not an interaction response"]
        kind, data = body["type"], body.get("data") or {}
        if interaction.get("type") == 1 and kind != 1:
            problems.append("a PING must be answered with type 1 (PONG)")
        if kind == 9:
            if interaction.get("type") in (1, 5):
                problems.append("a modal cannot answer a PING or a modal submission")
            if not 1 <= len(data.get("title", "")) <= 45:
                problems.append("modal title must be 1-45 characters")
            if not 1 <= len(data.get("custom_id", "")) <= 100:
                problems.append("modal custom_id must be 1-100 characters")
            components = data.get("components") or []
            if not 1 <= len(components) <= 5:
                problems.append("a modal holds 1-5 components")
            for label in components:
                if label.get("type") != 18 or label.get("component", {}).get("type") != 4:
                    problems.append("modal components must be Labels wrapping Text Inputs")
                if len(label.get("label", "")) > 45 or len(label.get("description", "")) > 100:
                    problems.append("a Label's label is ≤ 45 and its description ≤ 100 characters")
                text_input = label.get("component", {})
                if len(text_input.get("value", "")) > 4000:
                    problems.append("a Text Input's value is ≤ 4000 characters")
        if kind == 4:
            if len(data.get("content", "")) > 2000:
                problems.append("content is ≤ 2000 characters")
            for row in data.get("components") or []:
                for button in row.get("components") or []:
                    if not 1 <= len(button.get("custom_id", "")) <= 100:
                        problems.append("a button's custom_id must be 1-100 characters")
        return problems

    # ----------------------------------------------------------------- the app → Discord

    async def _edit_original(self, request: Request) -> Response:
        app, token = request.path_params["app"], request.path_params["token"]
        body = await request.json()
        with self._lock:
            known = self._tokens.get(token)
            if app != self.application_id or known is None:
                self.refused_edits.append((token, 404))
                return JSONResponse({"message": "Unknown Webhook", "code": 10015}, status_code=404)
            if time.time() - known.issued_at > TOKEN_SECONDS:
                self.refused_edits.append((token, 401))
                return JSONResponse(
                    {"message": "Invalid Webhook Token", "code": 50027}, status_code=401
                )
            if known.original is None:
                self.refused_edits.append((token, 404))
                return JSONResponse({"message": "Unknown Message", "code": 10008}, status_code=404)
            if len(body.get("content") or "") > 2000:
                return JSONResponse(
                    {"message": "Invalid Form Body", "code": 50035}, status_code=400
                )
            known.original.update(body)
            known.edits.append(body)
            self.edits.append((token, body))
            message = {"id": "1300000000000000998", **known.original}
        return JSONResponse(message)

    async def _put_commands(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bot {self.bot_token}":
            return JSONResponse({"message": "401: Unauthorized", "code": 0}, status_code=401)
        if not re.match(r"^DiscordBot \(\S+, \S+\)$", request.headers.get("user-agent", "")):
            return JSONResponse({"message": "bad User-Agent", "code": 0}, status_code=400)
        if request.path_params["app"] != self.application_id:
            return JSONResponse({"message": "Unknown Application", "code": 10002}, status_code=404)
        commands = await request.json()
        scope = request.path_params.get("guild", "global")
        for command in commands:
            optional = False
            for option in command.get("options") or []:
                if option.get("required") and optional:
                    return JSONResponse(
                        {
                            "message": "Invalid Form Body",
                            "code": 50035,
                            "errors": {
                                "options": "Required options must be placed before non-required options"
                            },
                        },
                        status_code=400,
                    )
                optional = optional or not option.get("required")
        saved = [
            {**c, "id": str(next(self._ids)), "application_id": self.application_id, "version": "1"}
            for c in commands
        ]
        with self._lock:
            self.registrations.append(
                {"scope": scope, "commands": commands, "headers": dict(request.headers)}
            )
            self.commands[scope] = saved
        return JSONResponse(saved)

    # ----------------------------------------------------------------- for assertions

    def edits_for(self, interaction: Mapping[str, Any]) -> list[dict[str, Any]]:
        with self._lock:
            known = self._tokens.get(str(interaction.get("token")))
            return list(known.edits) if known else []

    def asked(self, interaction: Mapping[str, Any]) -> None:
        """``interaction`` was sent and its answer is not in yet (its token works, there is
        no message to edit)."""
        with self._lock:
            self._tokens[str(interaction.get("token"))] = _Token(dict(interaction), time.time())

    def answered(self, interaction: Mapping[str, Any], message: Mapping[str, Any]) -> None:
        """The answer to ``interaction`` arrived: ``message`` is now its ``@original``."""
        with self._lock:
            self._tokens[str(interaction.get("token"))].original = dict(message)

    def age_token(self, interaction: Mapping[str, Any], seconds: float) -> None:
        """Pretend ``interaction`` happened ``seconds`` earlier (its token expires at 15 min)."""
        with self._lock:
            self._tokens[str(interaction.get("token"))].issued_at -= seconds
