"""Checking the bearer token Google Chat sends, against Google's published keys (cached).

Two kinds (contract §4.3), chosen by the app's *Authentication Audience*:

* project number: a JWT with ``iss = chat@system.gserviceaccount.com`` and ``aud`` = the
  project number, signed by keys at ``…/metadata/x509/chat@system.gserviceaccount.com``;
* HTTP endpoint URL: a Google OIDC ID token, ``iss`` accounts.google.com, ``aud`` = the URL
  exactly, ``email`` = chat@system.gserviceaccount.com with ``email_verified``, signed by
  Google's OAuth keys (``https://www.googleapis.com/oauth2/v1/certs``).

Both must be RS256 (any other ``alg``, ``none`` included, is refused), signed by a key of
the certificate map named by the token's ``kid``, unexpired (10 s of clock skew, as
google-auth is advised to allow) and not issued in the future. :func:`verify_token` is
pure (keys and clock passed in); :class:`GoogleKeys` fetches the map (``{kid: PEM
certificate}``, or a JWKS), keeps it for its ``Cache-Control: max-age``, and fetches again
early when a token names a key it does not know (Google rotates keys); such early
fetches happen at most every :data:`REFETCH_AFTER` seconds, so tokens naming made-up
keys cannot make us fetch in a loop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Mapping
from typing import Any

import httpx
import structlog
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers

from handlers.googlechat.config import CHAT_ISSUER

__all__ = ["CLOCK_SKEW", "GoogleKeys", "KeysUnavailable", "TokenRefused", "verify_token"]

log = structlog.get_logger("handlers.googlechat")

CLOCK_SKEW = 10  # seconds
ID_TOKEN_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
REFETCH_AFTER = 30.0  # an unknown kid fetches the keys again at most this often
DEFAULT_MAX_AGE = 3600.0
_MAX_AGE = re.compile(r"max-age=([0-9]+)")


class TokenRefused(ValueError):
    """The bearer token is not one Google Chat signed for this app (a 401)."""


class KeysUnavailable(RuntimeError):
    """Google's keys could not be fetched, so no token can be checked (a 503)."""


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def token_header(token: str) -> dict[str, Any]:
    """The JWT's header (unverified), or TokenRefused."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenRefused("the bearer token is not a JWT (three dot-separated parts)")
    try:
        header = json.loads(_b64(parts[0]))
    except (ValueError, UnicodeDecodeError):
        raise TokenRefused("the bearer token's header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise TokenRefused("the bearer token's header is not a JSON object")
    return header


def verify_token(
    token: str,
    keys: Mapping[str, RSAPublicKey],
    *,
    audience: str,
    project_number_mode: bool,
    now: float,
) -> dict[str, Any]:
    """The token's claims when Google Chat signed it for ``audience``; TokenRefused otherwise."""
    header = token_header(token)
    if header.get("alg") != "RS256":
        raise TokenRefused(f"the bearer token's alg must be RS256, not {header.get('alg')!r}")
    key = keys.get(str(header.get("kid")))
    if key is None:
        raise TokenRefused("the bearer token is signed by a key Google does not publish")
    head, payload, signature = token.split(".")
    try:
        key.verify(
            _b64(signature),
            f"{head}.{payload}".encode("ascii"),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except (InvalidSignature, ValueError, UnicodeEncodeError):
        raise TokenRefused("the bearer token's signature does not verify") from None
    try:
        claims = json.loads(_b64(payload))
    except (ValueError, UnicodeDecodeError):
        raise TokenRefused("the bearer token's claims are not base64url JSON") from None
    if not isinstance(claims, dict):
        raise TokenRefused("the bearer token's claims are not a JSON object")
    aud = claims.get("aud")
    if aud != audience and not (isinstance(aud, list) and audience in aud):
        raise TokenRefused(
            f"the bearer token is for audience {aud!r}: GOOGLE_CHAT_AUDIENCE must be the "
            "app's Authentication Audience exactly"
        )
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise TokenRefused("the bearer token has no expiry (exp)")
    if now > exp + CLOCK_SKEW:
        raise TokenRefused(
            "the bearer token has expired: a replayed request, or a clock out of sync"
        )
    if isinstance(iat, int | float) and iat > now + CLOCK_SKEW:
        raise TokenRefused("the bearer token was issued in the future: check the server's clock")
    if project_number_mode:
        if claims.get("iss") != CHAT_ISSUER:
            raise TokenRefused(f"the bearer token's issuer must be {CHAT_ISSUER}")
    else:
        if claims.get("iss") not in ID_TOKEN_ISSUERS:
            raise TokenRefused("the bearer token's issuer must be accounts.google.com")
        if claims.get("email") != CHAT_ISSUER or claims.get("email_verified") is not True:
            raise TokenRefused(f"the bearer token's email must be {CHAT_ISSUER}, verified")
    return claims


def parse_keys(data: Any) -> dict[str, RSAPublicKey]:
    """``{kid: PEM certificate}`` (x509 endpoints) or a JWKS (``{"keys": [...]}``)."""
    found: dict[str, RSAPublicKey] = {}
    if isinstance(data, dict) and isinstance(data.get("keys"), list):
        for jwk in data["keys"]:
            if isinstance(jwk, dict) and jwk.get("kty") == "RSA" and "kid" in jwk:
                n = int.from_bytes(_b64(str(jwk["n"])), "big")
                e = int.from_bytes(_b64(str(jwk["e"])), "big")
                found[str(jwk["kid"])] = RSAPublicNumbers(e, n).public_key()
        return found
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object of key id to certificate")
    for kid, pem in data.items():
        certificate = x509.load_pem_x509_certificate(str(pem).encode())
        key = certificate.public_key()
        if isinstance(key, RSAPublicKey):
            found[str(kid)] = key
    return found


class GoogleKeys:
    """Google's signing keys, fetched from ``url`` and cached for their max-age."""

    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self.url = url
        self.client = client
        self.keys: dict[str, RSAPublicKey] = {}
        self.expires_at = 0.0
        self.refetched_at = -REFETCH_AFTER  # the last fetch an unknown kid caused
        self.fetches = 0
        self._lock = asyncio.Lock()

    async def for_token(self, token: str) -> dict[str, RSAPublicKey]:
        """The keys to check ``token`` with: the cached ones, fetched again when stale or
        when the token names a kid they lack (rotation)."""
        kid = str(token_header(token).get("kid"))
        now = time.monotonic()
        if now < self.expires_at and kid in self.keys:
            return self.keys
        async with self._lock:
            now = time.monotonic()
            stale = now >= self.expires_at
            unknown = kid not in self.keys and now - self.refetched_at >= REFETCH_AFTER
            if unknown and not stale:
                self.refetched_at = now
            if stale or unknown:
                await self._fetch()
        return self.keys

    async def _fetch(self) -> None:
        self.fetches += 1
        try:
            response = await self.client.get(self.url)
            response.raise_for_status()
            keys = parse_keys(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("googlechat_keys_unavailable", error=type(exc).__name__, url=self.url)
            if not self.keys:
                raise KeysUnavailable(
                    f"could not fetch Google's keys from {self.url} ({type(exc).__name__}): "
                    "check GOOGLE_CHAT_CERTS_URL and the network; Google Chat retries"
                ) from None
            self.expires_at = time.monotonic() + REFETCH_AFTER  # keep the old ones a little
            return
        match = _MAX_AGE.search(response.headers.get("cache-control", ""))
        max_age = float(match.group(1)) if match else DEFAULT_MAX_AGE
        self.keys = keys
        self.expires_at = time.monotonic() + min(max(max_age, 60.0), 86400.0)
