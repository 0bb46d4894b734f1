"""The Discord channel's settings, read once through ``Settings.lookup``.

Every DISCORD_* setting is documented in ``docs/discord.md``. The channel is off until
``DISCORD_PUBLIC_KEY`` is set; a malformed value stops the service at start-up with one
line naming the variable (SettingsError).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from adapter.channels import Settings, SettingsError
from handlers._chatapps import bytes_setting

__all__ = ["DEFAULT_API_URL", "DiscordConfig"]

DEFAULT_API_URL = "https://discord.com/api/v10"
DEFAULT_MAX_BODY = 64 * 1024
_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")
_SNOWFLAKE = re.compile(r"^[0-9]{1,20}$")


@dataclass(frozen=True)
class DiscordConfig:
    """What the Discord channel needs; ``public_key`` None means the channel is off."""

    public_key: bytes | None
    application_id: str | None
    bot_token: str | None
    guild_id: str | None
    api_url: str
    max_body_bytes: int

    @property
    def problem(self) -> str | None:
        """Why interactions cannot be served, naming the setting; None when ready."""
        if self.public_key is None:
            return (
                "the Discord channel is off: set DISCORD_PUBLIC_KEY (Discord Developer "
                "Portal > your app > General Information > Public Key)"
            )
        return None

    @classmethod
    def from_settings(cls, settings: Settings) -> DiscordConfig:
        def get(name: str) -> str | None:
            value = settings.lookup(name)
            return value.strip() if value is not None and value.strip() else None

        public_key = None
        raw_key = get("DISCORD_PUBLIC_KEY")
        if raw_key is not None:
            if not _HEX_KEY.match(raw_key):
                raise SettingsError(
                    "setting DISCORD_PUBLIC_KEY: expected the 64 hexadecimal characters "
                    "of General Information > Public Key"
                )
            public_key = bytes.fromhex(raw_key)
        snowflakes = {}
        for name in ("DISCORD_APPLICATION_ID", "DISCORD_GUILD_ID"):
            value = get(name)
            if value is not None and not _SNOWFLAKE.match(value):
                raise SettingsError(
                    f"setting {name} (got {value!r}): expected a Discord id (digits only)"
                )
            snowflakes[name] = value
        api_url = (get("DISCORD_API_URL") or DEFAULT_API_URL).rstrip("/")
        if not api_url.startswith(("http://", "https://")):
            raise SettingsError(
                f"setting DISCORD_API_URL (got {api_url!r}): expected an http(s) URL such as "
                f"{DEFAULT_API_URL}"
            )
        return cls(
            public_key=public_key,
            application_id=snowflakes["DISCORD_APPLICATION_ID"],
            bot_token=get("DISCORD_BOT_TOKEN"),
            guild_id=snowflakes["DISCORD_GUILD_ID"],
            api_url=api_url,
            max_body_bytes=bytes_setting(settings, "DISCORD_MAX_BODY_BYTES", DEFAULT_MAX_BODY),
        )
