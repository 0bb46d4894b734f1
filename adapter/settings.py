"""Configuration from environment variables and an optional ``.env`` file.

Every setting is documented in the README's settings table. A missing or malformed
setting fails at start-up with :class:`SettingsError`, one line naming the variable
and what it expects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from adapter.core.contact import CONTACT_FIELDS
from adapter.core.keys import MIN_SECRET_LENGTH

__all__ = ["Settings", "SettingsError", "check_required_fields", "load_settings"]


class SettingsError(RuntimeError):
    """A setting is missing or malformed; the message names the variable."""


def _split(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(str(v).strip() for v in value)


REQUIRED_FIELDS_HELP = (
    "expected a comma-separated list of name,email,phone that includes name "
    "and at least one of email or phone (e.g. 'name,email')"
)


def check_required_fields(value: tuple[str, ...]) -> tuple[str, ...]:
    """The floor of every required-fields setting (CONTACT_REQUIRED_FIELDS and each
    ``<PROVIDER>_REQUIRED_FIELDS``): known fields, name, and email or phone."""
    unknown = set(value) - set(CONTACT_FIELDS)
    if unknown or "name" not in value or not ({"email", "phone"} & set(value)):
        raise ValueError(REQUIRED_FIELDS_HELP)
    return value


def _default_database_url() -> str:
    return "sqlite+aiosqlite:///" + str(Path.cwd() / "contact-adapter.db")


class Settings(BaseSettings):
    """All of the service's settings; field names are the environment variables."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # Rocket.Chat
    rocketchat_url: str = Field(
        default="http://127.0.0.1:3000",
        description="Base URL of the Rocket.Chat server, e.g. https://chat.example.com",
    )
    rocketchat_user_id: str = Field(default="", description="X-User-Id of the bot user")
    rocketchat_auth_token: SecretStr = Field(
        default=SecretStr(""), description="Personal access token of the bot user"
    )
    rocketchat_timeout: float = Field(default=10.0, gt=0)
    rocketchat_concurrency: int = Field(default=8, ge=1, le=256)
    rocketchat_contact_api: Literal["auto", "visitor", "contact-center"] = "auto"
    # Legacy route: look a person new to us up by email first, so that a visitor Rocket.Chat
    # already has keeps its contact manager and custom fields (one more call per new person).
    rocketchat_lookup_new_contacts: bool = True

    # Storage and delivery
    database_url: str = Field(default_factory=_default_database_url)
    # PostgreSQL only: the most connections one process opens (docs/heroku.md).
    database_pool_size: int = Field(default=5, ge=1, le=100)
    inprocess_worker: bool = True
    fast_path_budget: float = Field(default=1.5, ge=0, le=2.5)
    retry_first_delay: float = Field(default=2.0, gt=0)
    retry_max_delay: float = Field(default=600.0, gt=0)
    retry_give_up_after: float = Field(default=86_400.0, gt=0)
    delivery_lease: float = Field(default=60.0, gt=0)
    worker_poll_interval: float = Field(default=1.0, gt=0)
    auth_check_interval: float = Field(default=60.0, gt=0)
    shutdown_grace: float = Field(default=25.0, ge=0)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"

    # Contacts
    default_phone_region: str | None = None
    contact_required_fields: Annotated[tuple[str, ...], NoDecode] = CONTACT_FIELDS
    check_email_deliverability: bool = False
    rocketchat_custom_fields: Annotated[tuple[str, ...], NoDecode] = ()
    # A visitor custom field id that receives the values an unauthenticated channel sent
    # but was not allowed to apply (adapter.core.changes), for the agents to see.
    rocketchat_conflicts_field: str | None = None

    # Whether a proxy that appends the client's address to X-Forwarded-For is in front
    # (per-address limits read its last entry); unset: yes on Heroku (DYNO is set).
    behind_proxy: bool | None = None

    # Keys: visitor tokens and kept digests are HMACs under this secret (adapter.core.keys);
    # unset, one is generated once and kept in the ledger.
    deployment_secret: SecretStr | None = None

    # HTTP
    api_token: SecretStr | None = None
    admin_token: SecretStr | None = None
    metrics_token: SecretStr | None = None
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"

    # Channel settings (provider secrets, Slack credentials…) that channels look up by name;
    # tests pass them here instead of touching the environment.
    channel_settings: dict[str, str] = Field(default_factory=dict, exclude=True)

    def lookup(self, name: str) -> str | None:
        """A channel's own setting: ``channel_settings``, else the environment, else ``.env``."""
        name = name.upper()
        if name in self.channel_settings:
            return self.channel_settings[name] or None
        if name in os.environ:
            return os.environ[name] or None
        return _dotenv().get(name) or None

    @field_validator("default_phone_region", mode="before")
    @classmethod
    def _region(cls, value: Any) -> str | None:
        if value is None or str(value).strip() == "":
            return None
        import phonenumbers

        region = str(value).strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError("expected a two-letter ISO country code such as US, GB or DE")
        return region

    @field_validator("contact_required_fields", mode="before")
    @classmethod
    def _split_lower(cls, value: Any) -> tuple[str, ...]:
        return tuple(part.lower() for part in _split(value))

    @field_validator("rocketchat_custom_fields", mode="before")
    @classmethod
    def _split_ids(cls, value: Any) -> tuple[str, ...]:
        return _split(value)  # custom field ids are case-sensitive in Rocket.Chat

    @field_validator("contact_required_fields")
    @classmethod
    def _required(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_required_fields(value)

    @field_validator("deployment_secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"expected at least {MIN_SECRET_LENGTH} random characters, e.g. the output of "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value

    @field_validator("rocketchat_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL, e.g. https://chat.example.com")
        return value

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        from adapter.ledger.engine import normalize_database_url

        return normalize_database_url(value)

    @property
    def rocketchat_configured(self) -> bool:
        return bool(self.rocketchat_user_id and self.rocketchat_auth_token.get_secret_value())


def _dotenv() -> dict[str, str]:
    from dotenv import dotenv_values

    path = Path(".env")
    if not path.is_file():
        return {}
    return {k.upper(): v for k, v in dotenv_values(path).items() if v is not None}


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning a validation failure into one readable line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        variable = str(first["loc"][0]).upper() if first["loc"] else "?"
        given = os.environ.get(variable)
        msg = first["msg"].removeprefix("Value error, ")
        secret = any(word in variable for word in ("TOKEN", "SECRET", "PASSWORD", "DATABASE"))
        shown = f" (got {given!r})" if given is not None and not secret else ""
        raise SettingsError(f"setting {variable}{shown}: {msg}") from None
