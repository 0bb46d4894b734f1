"""The Slack channel's settings, read once from ``Settings.lookup`` (never from bolt's env).

Every SLACK_* setting is documented in ``docs/slack.md``. A malformed value stops the
service at start-up with one line naming the variable, like the core's settings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from adapter.channels import Settings, setting_error

__all__ = [
    "DEFAULT_API_URL",
    "SlackConfig",
    "parse_manager_map",
]

DEFAULT_API_URL = "https://slack.com/api/"
DEFAULT_COMMAND = "/contact"
DEFAULT_MAX_BODY = 64 * 1024
BOT_SCOPES = ("commands", "chat:write")
_COMMAND = re.compile(r"^/[a-z0-9_\-.]{1,31}$")


@dataclass(frozen=True)
class SlackConfig:
    """What the Slack channel needs, or why it is off (``problem``)."""

    signing_secret: str | None
    bot_token: str | None
    client_id: str | None
    client_secret: str | None
    redirect_uri: str | None
    api_url: str
    command: str
    max_body_bytes: int
    managers: Mapping[str, str] = field(default_factory=dict)

    @property
    def oauth(self) -> bool:
        return bool(self.client_id and self.client_secret)

    @property
    def problem(self) -> str | None:
        """Why Slack requests cannot be served, naming the setting; None when ready."""
        if not self.signing_secret:
            return (
                "the Slack channel is off: set SLACK_SIGNING_SECRET "
                "(Slack app > Basic Information > Signing Secret)"
            )
        if not self.bot_token and not self.oauth:
            return (
                "the Slack channel has no credentials: set SLACK_BOT_TOKEN (one workspace) "
                "or SLACK_CLIENT_ID and SLACK_CLIENT_SECRET (install into many workspaces)"
            )
        return None

    @classmethod
    def from_settings(cls, settings: Settings) -> SlackConfig:
        def get(name: str) -> str | None:
            value = settings.lookup(name)
            return value.strip() if value is not None and value.strip() else None

        api_url = get("SLACK_API_URL") or DEFAULT_API_URL
        if not api_url.startswith(("http://", "https://")):
            raise setting_error(
                "SLACK_API_URL", api_url, f"expected an http(s) URL such as {DEFAULT_API_URL}"
            )
        if not api_url.endswith("/"):
            api_url += "/"  # slack_sdk joins method names with urljoin: keep the last segment

        given_command = get("SLACK_COMMAND")
        command = (given_command or DEFAULT_COMMAND).lower()
        if not command.startswith("/"):
            command = "/" + command
        if not _COMMAND.match(command):
            raise setting_error(
                "SLACK_COMMAND",
                given_command,
                "expected a slash command such as /contact (2-32 characters: letters, "
                "digits, - _ .)",
            )

        raw_limit = get("SLACK_MAX_BODY_BYTES")
        max_body = DEFAULT_MAX_BODY
        if raw_limit is not None:
            try:
                max_body = int(raw_limit)
            except ValueError:
                max_body = 0
            if max_body < 1024:
                raise setting_error(
                    "SLACK_MAX_BODY_BYTES",
                    raw_limit,
                    "expected a number of bytes, at least 1024 (default 65536)",
                )

        signing_secret = get("SLACK_SIGNING_SECRET")
        managers: Mapping[str, str] = {}
        raw_map = get("SLACK_CONTACT_MANAGER_MAP")
        if raw_map is not None:
            try:
                managers = parse_manager_map(raw_map)
            except ValueError as exc:
                raise setting_error("SLACK_CONTACT_MANAGER_MAP", raw_map, str(exc)) from None

        redirect_uri = get("SLACK_REDIRECT_URI")
        if redirect_uri is not None and not redirect_uri.startswith(("https://", "http://")):
            raise setting_error(
                "SLACK_REDIRECT_URI",
                redirect_uri,
                "expected the absolute URL of /slack/oauth_redirect, e.g. "
                "https://contacts.example.com/slack/oauth_redirect",
            )

        return cls(
            signing_secret=signing_secret,
            bot_token=get("SLACK_BOT_TOKEN"),
            client_id=get("SLACK_CLIENT_ID"),
            client_secret=get("SLACK_CLIENT_SECRET"),
            redirect_uri=redirect_uri,
            api_url=api_url,
            command=command,
            max_body_bytes=max_body,
            managers=managers,
        )


def parse_manager_map(value: str) -> dict[str, str]:
    """``{"U123": "alice"}`` (JSON) or ``U123=alice,U456=bob`` → Slack user id → RC username."""
    text = value.strip()
    hint = 'expected JSON like {"U123": "alice"} or U123=alice,U456=bob'
    pairs: dict[str, str] = {}
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            raise ValueError(f"not valid JSON: {hint}") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise ValueError(f"every key and value must be a string: {hint}")
        items = list(data.items())
    else:
        items = []
        for part in re.split(r"[,;\n]", text):
            if not part.strip():
                continue
            user, sep, username = part.partition("=")
            if not sep:
                user, sep, username = part.partition(":")
            if not sep:
                raise ValueError(f"{part.strip()!r} has no '=': {hint}")
            items.append((user, username))
    for user, username in items:
        user, username = user.strip(), username.strip().lstrip("@")
        if not user or not username:
            raise ValueError(f"empty Slack user id or username in {user!r}={username!r}: {hint}")
        pairs[user] = username
    return pairs
