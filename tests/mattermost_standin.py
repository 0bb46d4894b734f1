"""A loopback stand-in for a Mattermost server, both directions, as
``contracts/chat-platforms.md`` §1 describes it.

Mattermost → the app: :meth:`MattermostStandIn.command` sends a custom slash command the
way ``DoCommandRequest`` does (Go's sorted ``url.Values`` form, ``Authorization: Token``,
a ``trigger_id`` of ``base64(<id>:<user>:<millis>:<sig>)``, a ``response_url`` on this
server); :meth:`submit_dialog` presses a dialog's submit button (the client refuses an
empty required field, as Mattermost's does).

The app → Mattermost: ``POST /hooks/commands/<id>`` (5 uses within 30 minutes, answers
``200 ok``), ``POST /api/v4/actions/dialogs/open`` (no credentials; the trigger must be one
this server issued, at most ``trigger_seconds`` old; the dialog is checked against the
limits in ``model/integration_action.go``) and ``POST /api/v4/posts/ephemeral`` (bot token
as ``Authorization: Bearer``, 201). Where the contract marks a behaviour [unconfirmed],
the choice made here says so.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.rocketchat_standin import StandInServer

__all__ = ["MattermostStandIn", "new_id"]

RESPONSE_URL_SECONDS = 30 * 60
RESPONSE_URL_USES = 5
_ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"  # Mattermost's base32 ids


def new_id() -> str:
    """A 26-character Mattermost id (``model.NewId``)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(26))


def _app_error(status: int, error_id: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"id": error_id, "message": message, "detailed_error": "", "status_code": status},
        status_code=status,
    )


@dataclass
class _Hook:
    issued_at: float
    user_id: str
    channel_id: str
    posts: list[Any] = field(default_factory=list)


@dataclass
class OpenedDialog:
    user_id: str
    channel_id: str
    team_id: str
    url: str
    dialog: dict[str, Any]
    problems: list[str]  # what Mattermost would log as "Interactive dialog is invalid"


class MattermostStandIn:
    """A Mattermost server: the hooks and REST routes the app calls, and its requests."""

    def __init__(self, *, token: str | None = None, bot_token: str | None = None) -> None:
        self.token = token or new_id()
        self.bot_token = bot_token or new_id()
        self.trigger_seconds = 3.0  # InteractiveDialogTriggerTimeoutMilliseconds (older servers)
        self.base_url = ""
        self.request_url = ""  # where commands go: <service>/mattermost/command
        self.team_id = new_id()
        self.user_id = new_id()
        self.channel_id = new_id()
        self.hook_posts: list[tuple[str, Any]] = []  # (hook id, body) for every accepted post
        self.refused_hook_posts: list[str] = []
        self.dialogs: list[OpenedDialog] = []
        self.dialog_opens: list[dict[str, Any]] = []  # every call, accepted or not
        self.ephemeral_posts: list[dict[str, Any]] = []
        self._hooks: dict[str, _Hook] = {}
        self._triggers: dict[str, tuple[float, str, str]] = {}  # id -> (monotonic, user, chan)
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/hooks/commands/{hook}", self._hook, methods=["POST"]),
                Route("/api/v4/actions/dialogs/open", self._open_dialog, methods=["POST"]),
                Route("/api/v4/posts/ephemeral", self._ephemeral, methods=["POST"]),
            ]
        )

    @contextmanager
    def serve(self) -> Iterator[MattermostStandIn]:
        with StandInServer(self.app) as server:
            self.base_url = server.url
            yield self

    def channel_settings(self, **extra: str) -> dict[str, str]:
        values = {
            "MATTERMOST_COMMAND_TOKEN": self.token,
            "MATTERMOST_URL": self.base_url,
            "MATTERMOST_BOT_TOKEN": self.bot_token,
        }
        values.update(extra)
        return values

    # ----------------------------------------------------------------- Mattermost → the app

    def new_trigger(self, user_id: str, channel_id: str, *, millis: int | None = None) -> str:
        client_id = new_id()
        stamp = int(time.time() * 1000) if millis is None else millis
        signature = base64.b64encode(secrets.token_bytes(70)).decode()  # ECDSA: opaque to apps
        with self._lock:
            self._triggers[client_id] = (time.monotonic(), user_id, channel_id)
        data = f"{client_id}:{user_id}:{stamp}:{signature}"
        return base64.b64encode(data.encode()).decode()

    def command_body(
        self,
        text: str,
        *,
        command: str = "/contact",
        user_id: str | None = None,
        channel_id: str | None = None,
        token: str | None = None,
        trigger_millis: int | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """The form body of a slash command (sorted keys, like Go's ``url.Values``)."""
        user = user_id or self.user_id
        channel = channel_id or self.channel_id
        hook = new_id()
        with self._lock:
            self._hooks[hook] = _Hook(time.time(), user, channel)
        fields = {
            "channel_id": channel,
            "channel_name": "reception",
            "command": command,
            "response_url": f"{self.base_url}/hooks/commands/{hook}",
            "root_id": "",
            "team_domain": "front-desk",
            "team_id": self.team_id,
            "text": text,
            "token": token if token is not None else self.token,
            "trigger_id": self.new_trigger(user, channel, millis=trigger_millis),
            "user_id": user,
            "user_name": "alex.agent",
        }
        return urlencode(sorted(fields.items())).encode(), fields

    def post(
        self, body: bytes, *, token: str | None = None, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        sent = {
            "Accept": "application/json",
            "Authorization": f"Token {token if token is not None else self.token}",
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "Mattermost-Bot/1.1",
        }
        sent.update(headers or {})
        return httpx.post(self.request_url, content=body, headers=sent, timeout=35)

    def command(self, text: str, **kwargs: Any) -> tuple[httpx.Response, dict[str, str]]:
        """Type ``/contact <text>``: the app's answer and the fields sent."""
        token = kwargs.pop("token", None)
        body, fields = self.command_body(text, token=token, **kwargs)
        return self.post(body, token=token), fields

    def submit_dialog(
        self,
        values: Mapping[str, str | None] | None = None,
        *,
        cancelled: bool = False,
        dialog_index: int = -1,
        state: str | None = None,
        user_id: str | None = None,
    ) -> httpx.Response:
        """Press submit (or cancel) on an opened dialog with ``values`` typed."""
        opened = self.dialogs[dialog_index]
        typed = dict(values or {})
        submission: dict[str, Any] = {}
        if not cancelled:
            for element in opened.dialog["elements"]:
                name = element["name"]
                value = typed[name] if name in typed else element.get("default")
                if not value and not element.get("optional"):
                    raise AssertionError(f"Mattermost would not submit: {name} is required")
                if value:
                    submission[name] = value
        payload = {
            "type": "dialog_submission",
            "callback_id": opened.dialog.get("callback_id", ""),
            "state": opened.dialog.get("state", "") if state is None else state,
            "user_id": user_id or opened.user_id,
            "channel_id": opened.channel_id,
            "team_id": opened.team_id,
            "submission": submission,
            "cancelled": cancelled,
        }
        response = httpx.post(
            opened.url,
            content=json.dumps(payload, separators=(",", ":")).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            timeout=35,
        )
        if response.status_code == 200 and response.content:
            answer = response.json()
            names = {e["name"] for e in opened.dialog["elements"]}
            unknown = set(answer.get("errors") or {}) - names
            assert not unknown, f"errors for elements the dialog does not have: {unknown}"
        return response

    # ----------------------------------------------------------------- what the app sent

    def posts_to(self, response_url: str) -> list[Any]:
        hook = urlsplit(response_url).path.rsplit("/", 1)[-1]
        with self._lock:
            return [body for h, body in self.hook_posts if h == hook]

    def age_hook(self, response_url: str, seconds: float) -> None:
        hook = urlsplit(response_url).path.rsplit("/", 1)[-1]
        with self._lock:
            self._hooks[hook].issued_at -= seconds

    # ----------------------------------------------------------------- the server's routes

    async def _hook(self, request: Request) -> Response:
        hook_id = request.path_params["hook"]
        raw = await request.body()
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        body: Any = raw.decode()
        if ctype == "application/json":
            try:
                body = json.loads(raw)
            except ValueError:
                return _app_error(400, "web.command_webhook.parse.app_error", "Unable to parse")
        with self._lock:
            hook = self._hooks.get(hook_id)
            alive = hook is not None and time.time() - hook.issued_at < RESPONSE_URL_SECONDS
            if not alive or hook is None or len(hook.posts) >= RESPONSE_URL_USES:
                self.refused_hook_posts.append(hook_id)
                # [unconfirmed] the exact id/message of an expired or used-up hook's error.
                return _app_error(400, "web.command_webhook.invalid.app_error", "Invalid webhook")
            hook.posts.append(body)
            self.hook_posts.append((hook_id, body))
        return PlainTextResponse("ok")

    async def _open_dialog(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _app_error(400, "api.context.invalid_body_param.app_error", "Invalid body")
        with self._lock:
            self.dialog_opens.append(body)
        if not isinstance(body, dict) or not body.get("url"):
            return _app_error(400, "api.context.invalid_param.app_error", "Invalid url parameter")
        trigger = body.get("trigger_id")
        try:
            decoded = base64.b64decode(str(trigger)).decode()
            client_id, user_id, _millis, _sig = decoded.split(":", 3)
        except (ValueError, UnicodeDecodeError):
            return _app_error(400, "interactive_message.decode_trigger_id.base64_decode_failed", "")
        with self._lock:
            known = self._triggers.get(client_id)
        if known is None or known[1] != user_id:  # not signed by this server's key
            return _app_error(
                400, "interactive_message.decode_trigger_id.verify_signature_failed", ""
            )
        if time.monotonic() - known[0] > self.trigger_seconds:
            return _app_error(400, "interactive_message.decode_trigger_id.expired", "")
        dialog = body.get("dialog") or {}
        opened = OpenedDialog(
            user_id=user_id,
            channel_id=known[2],
            team_id=self.team_id,
            url=str(body["url"]),
            dialog=dialog,
            problems=_dialog_problems(dialog),
        )
        with self._lock:
            self.dialogs.append(opened)  # published even when invalid (only logged)
        return JSONResponse({"status": "OK"})

    async def _ephemeral(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or not secrets.compare_digest(
            auth[7:].strip(), self.bot_token
        ):
            return _app_error(401, "api.context.session_expired.app_error", "Invalid session")
        body = json.loads(await request.body())
        if not body.get("user_id"):
            return _app_error(400, "api.context.invalid_param.app_error", "Invalid user_id")
        if not isinstance(body.get("post"), dict):
            return _app_error(400, "api.context.invalid_param.app_error", "Invalid post")
        with self._lock:
            self.ephemeral_posts.append(body)
        return JSONResponse({"id": new_id(), **body["post"]}, status_code=201)


def _dialog_problems(dialog: Mapping[str, Any]) -> list[str]:
    """What ``Dialog.IsValid`` would complain about (model/integration_action.go)."""
    problems = []
    title = dialog.get("title") or ""
    if not title or len(title) > 24:
        problems.append("title: required, at most 24 characters")
    names = set()
    for element in dialog.get("elements") or []:
        name = element.get("name") or ""
        if not name or len(name) > 300 or name in names:
            problems.append(f"{name}: name required, unique, at most 300 characters")
        names.add(name)
        if not element.get("display_name") or len(element["display_name"]) > 24:
            problems.append(f"{name}: display_name required, at most 24 characters")
        if len(element.get("help_text") or "") > 150:
            problems.append(f"{name}: help_text at most 150 characters")
        if len(element.get("default") or "") > 150:
            problems.append(f"{name}: default at most 150 characters")
        if element.get("type") not in ("text", "textarea", "select", "bool", "radio"):
            problems.append(f"{name}: unknown type {element.get('type')!r}")
        if element.get("subtype", "text") not in (
            "text", "email", "number", "tel", "url", "password",
        ):  # fmt: skip
            problems.append(f"{name}: unknown subtype")
    return problems
