"""A loopback stand-in for Google Chat, both directions, as ``contracts/chat-platforms.md``
§4 describes it.

Chat → the app: :meth:`GoogleChatStandIn.send` POSTs an Event with ``Authorization:
Bearer <token>``, the token minted exactly as google-auth's ``jwt.encode`` mints it (RS256
with the contract's test key, kid ``contract-test-kid-0001``: it reproduces the samples'
bearer byte for byte), and checks the answer as Chat would: JSON within 30 seconds, a
dialog only in answer to a dialog event. Every answer is kept (``answers``).

Google → the app: the signing keys at ``/certs`` (the contract's ``test_certs.json``, with
``Cache-Control: max-age``; ``fetches`` counts them; :meth:`rotate` adds a new key).

The app → Google: ``POST /token`` (a service account's JWT-bearer grant: the assertion's
signature, ``aud`` and scope checked) and ``POST /v1/spaces/{space}/messages`` with the
access token (``spaces.messages.create``; ``messages`` keeps each).
"""

from __future__ import annotations

import base64
import datetime
import itertools
import json
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.rocketchat_standin import StandInServer

__all__ = ["KID", "PROJECT_NUMBER", "SAMPLES", "GoogleChatStandIn", "mint"]

SAMPLES = Path(__file__).resolve().parent / "samples" / "googlechat"  # the contract's
KID = "contract-test-kid-0001"
PROJECT_NUMBER = "123456789012"
CHAT_ISSUER = "chat@system.gserviceaccount.com"
SCOPE = "https://www.googleapis.com/auth/chat.bot"
ANSWER_SECONDS = 30.0


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def mint(key: rsa.RSAPrivateKey, claims: Mapping[str, Any], kid: str = KID) -> str:
    """google-auth's ``jwt.encode(RSASigner(key, key_id=kid), claims)``, step for step."""
    header = {"typ": "JWT", "alg": "RS256", "kid": kid}
    segments = [_b64(json.dumps(header).encode()), _b64(json.dumps(dict(claims)).encode())]
    signing_input = b".".join(segments)
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return b".".join([*segments, _b64(signature)]).decode()


def _self_signed(key: rsa.RSAPrivateKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chat test key (rotated)")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class ChatAnswer:
    event: dict[str, Any]
    status: int
    body: Any
    seconds: float
    problems: list[str] = field(default_factory=list)


class GoogleChatStandIn:
    """Google Chat and Google's key and token endpoints, on loopback."""

    def __init__(self) -> None:
        self.key = serialization.load_pem_private_key(
            (SAMPLES / "test_signing_key.pem").read_bytes(), password=None
        )
        assert isinstance(self.key, rsa.RSAPrivateKey)
        self.certs: dict[str, str] = json.loads((SAMPLES / "test_certs.json").read_text())
        self.max_age = 3600
        self.fetches = 0
        self.account_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.endpoint = ""
        self.base_url = ""
        self.answers: list[ChatAnswer] = []
        self.messages: list[dict[str, Any]] = []  # spaces.messages.create calls
        self.token_grants = 0
        self._access_tokens: set[str] = set()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/certs", self._certs, methods=["GET"]),
                Route("/token", self._token, methods=["POST"]),
                Route("/v1/spaces/{space}/messages", self._create_message, methods=["POST"]),
            ]
        )

    @contextmanager
    def serve(self) -> Iterator[GoogleChatStandIn]:
        with StandInServer(self.app) as server:
            self.base_url = server.url
            yield self

    def service_account(self) -> str:
        """The JSON key of the Chat app's service account (token_uri: this stand-in)."""
        pem = self.account_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return json.dumps(
            {
                "type": "service_account",
                "client_email": "contacts@test-project.iam.gserviceaccount.com",
                "private_key": pem,
                "token_uri": f"{self.base_url}/token",
            }
        )

    def channel_settings(self, *, service_account: bool = True, **extra: str) -> dict[str, str]:
        values = {
            "GOOGLE_CHAT_AUDIENCE": PROJECT_NUMBER,
            "GOOGLE_CHAT_CERTS_URL": f"{self.base_url}/certs",
            "GOOGLE_CHAT_API_URL": f"{self.base_url}/v1",
        }
        if service_account:
            values["GOOGLE_CHAT_SERVICE_ACCOUNT"] = self.service_account()
        values.update(extra)
        return values

    # ----------------------------------------------------------------- tokens

    def token(self, **claims: Any) -> str:
        """A project-number token as Chat sends it, issued now (claims override)."""
        now = int(time.time())
        values = {"iss": CHAT_ISSUER, "aud": PROJECT_NUMBER, "iat": now, "exp": now + 3600}
        values.update(claims)
        return mint(self.key, values)

    def rotate(self) -> tuple[rsa.RSAPrivateKey, str]:
        """Google publishes a new key (and keeps the old one): its private key and kid."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        kid = f"rotated-kid-{secrets.token_hex(4)}"
        with self._lock:
            self.certs[kid] = _self_signed(key)
        return key, kid

    # ----------------------------------------------------------------- Chat → the app

    def event(self, kind: str, **parts: Any) -> dict[str, Any]:
        """An Event of ``kind`` from Alex Agent in the Front desk space (contract §4.2)."""
        n = next(self._ids)
        space = {"name": "spaces/AAAAcontact1", "type": "ROOM", "displayName": "Front desk"}
        user = {
            "name": "users/112233445566778899001",
            "displayName": "Alex Agent",
            "type": "HUMAN",
        }
        body: dict[str, Any] = {
            "type": kind,
            "eventTime": datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
            "user": user,
            "space": space,
            "common": {"userLocale": "en", "hostApp": "CHAT"},
        }
        body["message"] = {
            "name": f"spaces/AAAAcontact1/messages/M{n}.M{n}",
            "sender": user,
            "thread": {"name": f"spaces/AAAAcontact1/threads/M{n}"},
            "space": space,
        }
        body.update(parts)
        return body

    def slash(self, text: str, *, command_id: str = "1", dialog: bool = False) -> dict[str, Any]:
        event = self.event("MESSAGE")
        event["message"].update(
            {
                "text": f"/contact {text}".strip(),
                "argumentText": f" {text}" if text else "",
                "slashCommand": {"commandId": command_id},
            }
        )
        if dialog:
            event.update(isDialogEvent=True, dialogEventType="REQUEST_DIALOG")
        return event

    def mention(self, text: str) -> dict[str, Any]:
        event = self.event("MESSAGE")
        event["message"].update({"text": f"@Contacts {text}", "argumentText": f" {text}"})
        return event

    def click_open_form(self, answer: ChatAnswer) -> dict[str, Any]:
        """Click the "Open form" button of an answered message (a dialog request)."""
        button = answer.body["cardsV2"][0]["card"]["sections"][0]["widgets"][0]["buttonList"][
            "buttons"
        ][0]
        action = button["onClick"]["action"]
        assert action["interaction"] == "OPEN_DIALOG"
        event = self.event("CARD_CLICKED", isDialogEvent=True, dialogEventType="REQUEST_DIALOG")
        event["common"].update(
            invokedFunction=action["function"],
            parameters={p["key"]: p["value"] for p in action.get("parameters", [])},
        )
        event["action"] = {"actionMethodName": action["function"]}
        return event

    def submit_dialog(self, answer: ChatAnswer, values: Mapping[str, str]) -> dict[str, Any]:
        """Type ``values`` (by input name) in the dialog of ``answer`` and press Register."""
        widgets = answer.body["actionResponse"]["dialogAction"]["dialog"]["body"]["sections"][0][
            "widgets"
        ]
        inputs = {w["textInput"]["name"]: w["textInput"] for w in widgets if "textInput" in w}
        button = next(w for w in widgets if "buttonList" in w)["buttonList"]["buttons"][0]
        form = {}
        for name, widget in inputs.items():
            value = values.get(name, widget.get("value", ""))
            form[name] = {"stringInputs": {"value": [value]}}
        event = self.event("CARD_CLICKED", isDialogEvent=True, dialogEventType="SUBMIT_DIALOG")
        function = button["onClick"]["action"]["function"]
        event["common"].update(invokedFunction=function, formInputs=form)
        event["action"] = {"actionMethodName": function}
        return event

    def post(self, body: bytes, *, token: str | None = None) -> httpx.Response:
        headers = {"Content-Type": "application/json", "User-Agent": "Google-Dynamite"}
        if token != "":  # "": no Authorization header at all
            headers["Authorization"] = f"Bearer {token if token is not None else self.token()}"
        return httpx.post(self.endpoint, content=body, headers=headers, timeout=60)

    def send(self, event: Mapping[str, Any], *, token: str | None = None) -> ChatAnswer:
        body = json.dumps(event).encode()
        started = time.monotonic()
        response = self.post(body, token=token)
        seconds = time.monotonic() - started
        try:
            answered: Any = response.json()
        except ValueError:
            answered = response.text
        answer = ChatAnswer(dict(event), response.status_code, answered, seconds)
        if response.status_code == 200:
            answer.problems = self._check(event, answered, seconds)
        with self._lock:
            self.answers.append(answer)
        return answer

    @staticmethod
    def _check(event: Mapping[str, Any], body: Any, seconds: float) -> list[str]:
        problems = []
        if seconds > ANSWER_SECONDS:
            problems.append(f"answered after {seconds:.1f}s: Chat gave up")
        if not isinstance(body, dict):
            return [*problems, "the answer is not a JSON object"]
        action = body.get("actionResponse") or {}
        if action.get("type") == "DIALOG" and not event.get("isDialogEvent"):
            problems.append("a dialog can only answer a dialog event")
        dialog = (action.get("dialogAction") or {}).get("dialog")
        if dialog is not None:
            for section in dialog["body"]["sections"]:
                for widget in section["widgets"]:
                    if set(widget) - {"textInput", "textParagraph", "buttonList"}:
                        problems.append(f"unexpected widget {sorted(widget)}")
        viewer = body.get("privateMessageViewer")
        if viewer is not None and not str(viewer.get("name", "")).startswith("users/"):
            problems.append("privateMessageViewer must name a user (users/…)")
        return problems

    # ----------------------------------------------------------------- the app → Google

    async def _certs(self, request: Request) -> Response:
        with self._lock:
            self.fetches += 1
            certs = dict(self.certs)
        return JSONResponse(certs, headers={"Cache-Control": f"public, max-age={self.max_age}"})

    async def _token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        assertion = form.get("assertion", "")
        try:
            head, payload, signature = assertion.split(".")
            self.account_key.public_key().verify(
                base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
                f"{head}.{payload}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (ValueError, InvalidSignature):
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if claims.get("aud") != f"{self.base_url}/token" or claims.get("scope") != SCOPE:
            return JSONResponse({"error": "invalid_scope"}, status_code=400)
        if claims.get("exp", 0) - claims.get("iat", 0) > 3600:
            return JSONResponse({"error": "invalid_grant", "detail": "exp"}, status_code=400)
        token = "ya29." + secrets.token_urlsafe(16)
        with self._lock:
            self._access_tokens.add(token)
            self.token_grants += 1
        return JSONResponse({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    async def _create_message(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self._lock:
            known = token in self._access_tokens
        if scheme != "Bearer" or not known:
            return JSONResponse(
                {"error": {"code": 401, "status": "UNAUTHENTICATED"}}, status_code=401
            )
        body = await request.json()
        space = "spaces/" + request.path_params["space"]
        record = {"space": space, "body": body, "params": dict(request.query_params)}
        with self._lock:
            self.messages.append(record)
        return JSONResponse({"name": f"{space}/messages/{secrets.token_hex(4)}", **body})
