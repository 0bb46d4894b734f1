"""Telling the outcome later, through the Chat API as the app (contract §4.4).

With ``GOOGLE_CHAT_SERVICE_ACCOUNT`` the channel signs a JWT with the service account's key
(RS256, scope ``chat.bot``), trades it at the key's ``token_uri`` for an access token
(cached until a minute before it expires) and posts a private message
(``privateMessageViewer``) in the space and thread where the person asked
(``spaces.messages.create``). Without it a later outcome is only logged: the person sees
it in Rocket.Chat or asks an admin. Tokens are never logged.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx
import structlog
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from handlers.googlechat.config import GoogleChatConfig, ServiceAccount

__all__ = ["SCOPE", "ChatSender", "signed_jwt"]

log = structlog.get_logger("handlers.googlechat")

SCOPE = "https://www.googleapis.com/auth/chat.bot"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_jwt(key: RSAPrivateKey, claims: Mapping[str, Any], *, kid: str | None = None) -> str:
    """An RS256 JWT of ``claims`` (what the token endpoint takes as an assertion)."""
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if kid:
        header["kid"] = kid
    signing_input = ".".join(
        _b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


class ChatSender:
    """Posts private messages as the Chat app, with a cached access token."""

    def __init__(self, config: GoogleChatConfig, client: httpx.AsyncClient) -> None:
        self.config = config
        self.client = client
        self.account: ServiceAccount | None = config.service_account
        self._token: tuple[str, float] | None = None  # (access token, expires at)

    @property
    def enabled(self) -> bool:
        return self.account is not None

    async def _access_token(self) -> str | None:
        if self._token is not None and time.time() < self._token[1] - 60:
            return self._token[0]
        assert self.account is not None
        key = load_pem_private_key(self.account.private_key.encode(), password=None)
        assert isinstance(key, RSAPrivateKey)
        now = int(time.time())
        assertion = signed_jwt(
            key,
            {
                "iss": self.account.client_email,
                "scope": SCOPE,
                "aud": self.account.token_uri,
                "iat": now,
                "exp": now + 3600,
            },
        )
        try:
            response = await self.client.post(
                self.account.token_uri,
                data={
                    "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                    "assertion": assertion,
                },
            )
        except httpx.HTTPError as exc:
            log.warning("googlechat_token_failed", error=type(exc).__name__)
            return None
        if not response.is_success:
            log.warning(
                "googlechat_token_refused", status=response.status_code, body=response.text[:100]
            )
            return None
        answer = response.json()
        token = answer.get("access_token")
        if not isinstance(token, str):
            return None
        self._token = (token, time.time() + float(answer.get("expires_in") or 3600))
        return token

    async def send(self, callback: Mapping[str, Any], text: str) -> str:
        """Post ``text`` privately to the callback's user; the route used (api or none)."""
        space, user = callback.get("space"), callback.get("user")
        if not self.enabled:
            log.warning(
                "googlechat_report_undelivered", reason="GOOGLE_CHAT_SERVICE_ACCOUNT not set"
            )
            return "none"
        if not space or not user:
            return "none"
        token = await self._access_token()
        if token is None:
            return "none"
        body: dict[str, Any] = {"text": text[:4000], "privateMessageViewer": {"name": user}}
        params = {}
        if callback.get("thread"):
            body["thread"] = {"name": callback["thread"]}
            params["messageReplyOption"] = "REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD"
        try:
            response = await self.client.post(
                f"{self.config.api_url}/{space}/messages",
                params=params,
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            log.warning("googlechat_message_failed", error=type(exc).__name__)
            return "none"
        if response.status_code == 401:
            self._token = None  # fetch a new one next time
        if not response.is_success:
            log.warning(
                "googlechat_message_refused", status=response.status_code, body=response.text[:100]
            )
            return "none"
        return "api"
