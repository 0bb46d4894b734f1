"""The Google Chat channel's settings, read once through ``Settings.lookup``.

Every GOOGLE_CHAT_* setting is documented in ``docs/googlechat.md``. The channel is off
until ``GOOGLE_CHAT_AUDIENCE`` is set; a malformed value stops the service at start-up
with one line naming the variable (SettingsError).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapter.channels import Settings, SettingsError
from handlers._chatapps import bytes_setting

__all__ = [
    "CHAT_ISSUER",
    "DEFAULT_API_URL",
    "ID_TOKEN_CERTS_URL",
    "PROJECT_CERTS_URL",
    "GoogleChatConfig",
    "ServiceAccount",
]

CHAT_ISSUER = "chat@system.gserviceaccount.com"
PROJECT_CERTS_URL = "https://www.googleapis.com/service_accounts/v1/metadata/x509/" + CHAT_ISSUER
ID_TOKEN_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
DEFAULT_API_URL = "https://chat.googleapis.com/v1"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
DEFAULT_MAX_BODY = 64 * 1024
_PROJECT_NUMBER = re.compile(r"^[0-9]{6,20}$")


@dataclass(frozen=True)
class ServiceAccount:
    """The Chat app's service account key: what posts the outcome later (Chat API)."""

    client_email: str
    private_key: str  # PEM
    token_uri: str


@dataclass(frozen=True)
class GoogleChatConfig:
    """What the Google Chat channel needs; ``audience`` None means the channel is off."""

    audience: str | None
    certs_url: str
    api_url: str
    command_id: str | None
    service_account: ServiceAccount | None
    max_body_bytes: int

    @property
    def project_number_mode(self) -> bool:
        """Authentication Audience = Project Number (a self-signed JWT from Chat); else the
        HTTP endpoint URL (a Google-signed OIDC ID token)."""
        return bool(self.audience and _PROJECT_NUMBER.match(self.audience))

    @property
    def problem(self) -> str | None:
        if self.audience is None:
            return (
                "the Google Chat channel is off: set GOOGLE_CHAT_AUDIENCE to the app's "
                "Authentication Audience (its project number, or its HTTP endpoint URL)"
            )
        return None

    @classmethod
    def from_settings(cls, settings: Settings) -> GoogleChatConfig:
        def get(name: str) -> str | None:
            value = settings.lookup(name)
            return value.strip() if value is not None and value.strip() else None

        audience = get("GOOGLE_CHAT_AUDIENCE")
        if audience is not None and not (
            _PROJECT_NUMBER.match(audience) or audience.startswith(("https://", "http://"))
        ):
            raise SettingsError(
                f"setting GOOGLE_CHAT_AUDIENCE (got {audience!r}): expected the Cloud "
                "project number (digits) or the exact HTTP endpoint URL configured as the "
                "Chat app's Authentication Audience"
            )
        project = bool(audience and _PROJECT_NUMBER.match(audience))
        certs_url = get("GOOGLE_CHAT_CERTS_URL") or (
            PROJECT_CERTS_URL if project else ID_TOKEN_CERTS_URL
        )
        api_url = (get("GOOGLE_CHAT_API_URL") or DEFAULT_API_URL).rstrip("/")
        for name, url in (("GOOGLE_CHAT_CERTS_URL", certs_url), ("GOOGLE_CHAT_API_URL", api_url)):
            if not url.startswith(("https://", "http://")):
                raise SettingsError(f"setting {name} (got {url!r}): expected an http(s) URL")
        command_id = get("GOOGLE_CHAT_COMMAND_ID")
        if command_id is not None and not re.match(r"^[0-9]{1,4}$", command_id):
            raise SettingsError(
                f"setting GOOGLE_CHAT_COMMAND_ID (got {command_id!r}): expected the "
                "command's Command ID (1-1000) from the Chat API configuration"
            )
        raw_account = get("GOOGLE_CHAT_SERVICE_ACCOUNT")
        return cls(
            audience=audience,
            certs_url=certs_url,
            api_url=api_url,
            command_id=command_id,
            service_account=_service_account(raw_account) if raw_account else None,
            max_body_bytes=bytes_setting(settings, "GOOGLE_CHAT_MAX_BODY_BYTES", DEFAULT_MAX_BODY),
        )


def _service_account(raw: str) -> ServiceAccount:
    """The key file's JSON, given inline or as a path to the file."""
    hint = (
        "expected the JSON key of the Chat app's service account (inline, or the path "
        "of the .json file): IAM > Service accounts > Keys > Add key > JSON"
    )
    text = raw
    if not raw.lstrip().startswith("{"):
        try:
            text = Path(raw).read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(
                "setting GOOGLE_CHAT_SERVICE_ACCOUNT: not JSON, and not a file that can be read "
                f"({exc.strerror}): {hint}"
            ) from None
    try:
        data: Any = json.loads(text)
    except ValueError:
        raise SettingsError(f"setting GOOGLE_CHAT_SERVICE_ACCOUNT: not JSON: {hint}") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), str) for k in ("client_email", "private_key")
    ):
        raise SettingsError(
            f"setting GOOGLE_CHAT_SERVICE_ACCOUNT: no client_email and private_key: {hint}"
        )
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        load_pem_private_key(data["private_key"].encode(), password=None)
    except (ValueError, TypeError):
        raise SettingsError(
            f"setting GOOGLE_CHAT_SERVICE_ACCOUNT: its private_key is not a PEM key: {hint}"
        ) from None
    token_uri = data.get("token_uri")
    return ServiceAccount(
        client_email=data["client_email"],
        private_key=data["private_key"],
        token_uri=token_uri if isinstance(token_uri, str) else DEFAULT_TOKEN_URI,
    )
