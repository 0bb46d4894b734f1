"""What every entry point does before it serves or touches the database.

:func:`checked_settings` reads the settings and runs every channel's ``check``, so a
malformed setting, core or channel, stops ``contact-adapter serve``, ``uvicorn
adapter.app:app``, ``worker``, ``migrate``, ``import``… alike with one line naming it
(:func:`exit_on_bad_settings` prints that line and exits 2). :func:`log_start_up` writes
one line per channel (on, or off and what to set) and warns when the Rocket.Chat
credentials are missing. :func:`database_note` is the line a command prints when the
database it uses is not the default one in the home (``adapter.settings.resolve_home``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import structlog

from adapter.channels.base import Channel, channel_statuses, check_channels, discover_channels
from adapter.settings import HOME_VARIABLE, Settings, SettingsError, load_settings

__all__ = [
    "checked_settings",
    "database_label",
    "database_note",
    "exit_on_bad_settings",
    "log_start_up",
]

log = structlog.get_logger("adapter.startup")


def checked_settings(**overrides: Any) -> Settings:
    """The settings, every channel's settings checked too; :class:`SettingsError` (one line
    naming the variable) for the first malformed one."""
    settings = load_settings(**overrides)
    check_channels(settings, discover_channels())
    return settings


def exit_on_bad_settings() -> Settings:
    """:func:`checked_settings`, or ``error: setting …`` on stderr and exit status 2."""
    try:
        return checked_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def database_label(settings: Settings) -> str:
    """The database as an operator recognises it: the SQLite file's path, else the URL
    without its password."""
    url = settings.database_url
    if url.startswith("sqlite"):
        return url.split(":///", 1)[-1] or url
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if at:
        user = credentials.split(":", 1)[0]
        rest = f"{user}:***@{host}" if ":" in credentials else f"{user}@{host}"
    return f"{scheme.split('+')[0]}://{rest}"


def database_note(settings: Settings) -> str | None:
    """``database: … (why)`` when the database is not the default one in the home, found
    through ``CONTACT_ADAPTER_HOME`` or a ``.env``: the line a command prints so that a
    command run from another folder cannot use another database unnoticed; else None."""
    label = database_label(settings)
    source = settings.database_source
    if source == "environment":
        return f"database: {label} (DATABASE_URL from the environment)"
    if source == ".env":
        return f"database: {label} (DATABASE_URL in {settings.home.env_file})"
    if source == "given":
        return f"database: {label}"
    if settings.home.source == "working directory":
        return (
            f"database: {label} (no .env found here or above, and {HOME_VARIABLE} is unset: "
            "the working directory's)"
        )
    return None


def log_start_up(settings: Settings, channels: Sequence[Channel], *, process: str) -> None:
    """One line per channel (on, or off and what to set), and a warning when contacts
    would wait for ever for want of Rocket.Chat credentials."""
    if (note := database_note(settings)) is not None:
        log.info("database", process=process, note=note)
    for status in channel_statuses(settings, channels):
        fields: dict[str, Any] = {"channel": status.label, "on": status.on}
        if status.path:
            fields["path"] = status.path
        if status.reason:
            fields["reason"] = status.reason
        log.info("channel", **fields)
    if not settings.rocketchat_configured:
        missing = [
            name
            for name, value in (
                ("ROCKETCHAT_USER_ID", settings.rocketchat_user_id),
                ("ROCKETCHAT_AUTH_TOKEN", settings.rocketchat_auth_token.get_secret_value()),
            )
            if not value
        ]
        log.warning(
            "rocketchat_credentials_missing",
            process=process,
            missing=",".join(missing),
            message=f"{' and '.join(missing)} unset: contacts are accepted and stored, but "
            "none is delivered until they are set (the bot user's id and a personal access "
            "token; see the README)",
        )
