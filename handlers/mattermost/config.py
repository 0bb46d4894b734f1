"""The Mattermost channel's settings, read once through ``Settings.lookup``.

Every MATTERMOST_* setting is documented in ``docs/mattermost.md``. The channel is off
until ``MATTERMOST_COMMAND_TOKEN`` is set; a malformed value stops start-up with one line
naming the variable.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from adapter.channels import Settings, SettingsError

__all__ = ["MAX_BODY_BYTES", "MattermostConfig"]

MAX_BODY_BYTES = 64 * 1024  # a command or a dialog submission is a few kilobytes
_STATE_KEY_LABEL = b"contact-adapter mattermost dialog state"


@dataclass(frozen=True)
class MattermostConfig:
    """What the Mattermost channel needs, or why it is off (``problem``)."""

    command_tokens: tuple[str, ...]
    site_url: str | None
    bot_token: str | None
    dialog_url: str | None
    state_secret: bytes

    @property
    def problem(self) -> str | None:
        """Why Mattermost requests cannot be served, naming the setting; None when ready."""
        if not self.command_tokens:
            return (
                "the Mattermost channel is off: set MATTERMOST_COMMAND_TOKEN (Integrations > "
                "Slash Commands > your command > Token)"
            )
        if not self.site_url:
            return (
                "the Mattermost channel needs MATTERMOST_URL: your server's Site URL, e.g. "
                "https://chat.example.com"
            )
        return None

    def response_url_prefix(self) -> str:
        """Every response_url of this server starts with this (``<SiteURL>/hooks/commands/``)."""
        return f"{self.site_url}/hooks/commands/"

    @classmethod
    def from_settings(cls, settings: Settings) -> MattermostConfig:
        def get(name: str) -> str | None:
            value = settings.lookup(name)
            return value.strip() if value is not None and value.strip() else None

        raw_tokens = get("MATTERMOST_COMMAND_TOKEN") or ""
        tokens = tuple(t.strip() for t in raw_tokens.split(",") if t.strip())
        for token in tokens:
            if len(token) < 16 or not token.isalnum():
                raise SettingsError(
                    "setting MATTERMOST_COMMAND_TOKEN: expected the command's Token as "
                    "Mattermost shows it (26 letters and digits), several separated by commas"
                )
        site_url = _url(get("MATTERMOST_URL"), "MATTERMOST_URL", "https://chat.example.com")
        dialog_url = _url(
            get("MATTERMOST_DIALOG_URL"),
            "MATTERMOST_DIALOG_URL",
            "https://contacts.example.com/mattermost/dialog",
        )
        secret = get("MATTERMOST_DIALOG_SECRET")
        if secret is not None and len(secret) < 16:
            raise SettingsError(
                "setting MATTERMOST_DIALOG_SECRET: expected at least 16 characters "
                "(a random string; leave it unset to derive one from the command token)"
            )
        if secret is not None:
            state_secret = secret.encode()
        elif tokens:
            state_secret = hmac.new(tokens[0].encode(), _STATE_KEY_LABEL, hashlib.sha256).digest()
        else:
            state_secret = b""
        return cls(
            command_tokens=tokens,
            site_url=site_url,
            bot_token=get("MATTERMOST_BOT_TOKEN"),
            dialog_url=dialog_url,
            state_secret=state_secret,
        )


def _url(value: str | None, name: str, example: str) -> str | None:
    if value is None:
        return None
    if not value.startswith(("http://", "https://")) or "?" in value or "#" in value:
        raise SettingsError(
            f"setting {name} (got {value!r}): expected an http(s) URL such as {example}"
        )
    return value.rstrip("/")
