"""Configuration from environment variables and an optional ``.env`` file.

Every setting is documented in the README's settings table. A missing or malformed
setting fails at start-up with :class:`SettingsError`, one line naming the variable,
the value given (never a secret's) and what it expects.

Where the ``.env`` file and the default SQLite database are is the service's *home*
(:func:`resolve_home`): ``CONTACT_ADAPTER_HOME`` when set, else the folder of the nearest
``.env`` (the working directory or one of its parents), else the working directory. A relative SQLite path in ``DATABASE_URL`` is relative to the home too, so
every command run from any folder reaches the database the service uses.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from adapter.core.contact import CONTACT_FIELDS
from adapter.core.keys import MIN_SECRET_LENGTH
from adapter.core.retention import RetentionPolicy, parse_duration

__all__ = [
    "HOME_VARIABLE",
    "Home",
    "Settings",
    "SettingsError",
    "check_required_fields",
    "is_secret_setting",
    "load_settings",
    "resolve_home",
    "setting_error",
]

HOME_VARIABLE = "CONTACT_ADAPTER_HOME"
DEFAULT_DATABASE_FILE = "contact-adapter.db"


class SettingsError(RuntimeError):
    """A setting is missing or malformed; the message names the variable."""


_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "DATABASE_URL", "_KEY", "SERVICE_ACCOUNT")


def is_secret_setting(variable: str) -> bool:
    """Whether a setting's value must never be shown (tokens, secrets, keys, database URLs,
    which may carry a password)."""
    name = variable.upper()
    return any(word in name for word in _SECRET_WORDS)


def setting_error(variable: str, value: object, expected: str) -> SettingsError:
    """``setting VARIABLE (got 'value'): expected …``, one line; a secret's value is left out."""
    shown = "" if value is None or is_secret_setting(variable) else f" (got {str(value)!r})"
    text = " ".join(expected.split())
    return SettingsError(f"setting {variable.upper()}{shown}: {text}")


@dataclass(frozen=True)
class Home:
    """Where the ``.env`` file and the default database are, and how that was decided."""

    path: Path
    source: str  # "CONTACT_ADAPTER_HOME", ".env" or "working directory"

    @property
    def env_file(self) -> Path:
        return self.path / ".env"

    @property
    def default_database_url(self) -> str:
        return "sqlite+aiosqlite:///" + str(self.path / DEFAULT_DATABASE_FILE)


def resolve_home(cwd: Path | None = None) -> Home:
    """``CONTACT_ADAPTER_HOME``, else the folder of the nearest ``.env`` (the working directory
    or one of its parents), else the working directory."""
    here = (cwd or Path.cwd()).resolve()
    given = os.environ.get(HOME_VARIABLE, "").strip()
    if given:
        path = Path(given).expanduser()
        if not path.is_absolute():
            path = here / path
        if not path.is_dir():
            raise setting_error(HOME_VARIABLE, given, "expected the path of an existing folder")
        return Home(path.resolve(), HOME_VARIABLE)
    for folder in (here, *here.parents):
        if (folder / ".env").is_file():
            return Home(folder, ".env")
    return Home(here, "working directory")


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


_HOST = re.compile(
    r"^(\[[0-9a-fA-F:.]+\]|[0-9a-fA-F:]*:[0-9a-fA-F:.]*|[A-Za-z0-9]([A-Za-z0-9.-]{0,252}))$"
)
_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


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
    database_url: str = ""  # empty: contact-adapter.db in the home (see resolve_home)
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

    # The data's lifecycle (docs/privacy.md): seconds each final row keeps its personal data,
    # None for ever; written 30d, 12h, 15m, 90s, or 0 / off.
    retain_delivered: Annotated[float | None, NoDecode] = 30 * 86_400.0
    retain_failed: Annotated[float | None, NoDecode] = 90 * 86_400.0
    retain_rejected: Annotated[float | None, NoDecode] = 30 * 86_400.0
    retain_attempts: Annotated[float | None, NoDecode] = 30 * 86_400.0
    retention_sweep_interval: float = Field(default=60.0, gt=0)  # a worker's sweeps, apart
    # Consent: required on the channels that can collect it (forms, the API, the generic
    # webhook, Typeform/Tally/Jotform/HubSpot's mapped field); the hosted form's checkbox text.
    require_consent: bool = False
    form_consent_text: str | None = None

    # HTTP
    api_token: SecretStr | None = None
    admin_token: SecretStr | None = None
    metrics_token: SecretStr | None = None
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"

    # The web server (`contact-adapter serve`; Heroku sets PORT and WEB_CONCURRENCY)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    web_concurrency: int = Field(default=1, ge=1, le=64)

    # Channel settings (provider secrets, Slack credentials…) that channels look up by name;
    # tests pass them here instead of touching the environment.
    channel_settings: dict[str, str] = Field(default_factory=dict, exclude=True)

    _home: Home = PrivateAttr(default_factory=lambda: Home(Path.cwd(), "working directory"))
    _dotenv_values: dict[str, str] | None = PrivateAttr(default=None)
    _database_from: str = PrivateAttr(default="default")

    @property
    def home(self) -> Home:
        """Where this process looked for ``.env`` and keeps the default database."""
        return self._home

    @property
    def database_source(self) -> str:
        """``"default"`` (contact-adapter.db in the home), else where DATABASE_URL was set:
        ``"environment"``, ``".env"`` or ``"given"``."""
        return self._database_from

    def lookup(self, name: str) -> str | None:
        """A channel's own setting: ``channel_settings``, else the environment, else ``.env``."""
        name = name.upper()
        if name in self.channel_settings:
            return self.channel_settings[name] or None
        if name in os.environ:
            return os.environ[name] or None
        if self._dotenv_values is None:
            self._dotenv_values = _dotenv(self._home.env_file)
        return self._dotenv_values.get(name) or None

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

    @field_validator("rocketchat_user_id", "rocketchat_auth_token", mode="before")
    @classmethod
    def _one_word(cls, value: Any) -> Any:
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        if any(ch.isspace() or ord(ch) < 32 for ch in text.strip()):
            raise ValueError("expected one word without spaces (copy it again from Rocket.Chat)")
        return text.strip()

    @field_validator("contact_required_fields", mode="before")
    @classmethod
    def _split_lower(cls, value: Any) -> tuple[str, ...]:
        return tuple(part.lower() for part in _split(value))

    @field_validator("rocketchat_custom_fields", mode="before")
    @classmethod
    def _split_ids(cls, value: Any) -> tuple[str, ...]:
        ids = _split(value)  # custom field ids are case-sensitive in Rocket.Chat
        if any(ch.isspace() or ord(ch) < 32 for field_id in ids for ch in field_id):
            raise ValueError("expected comma-separated custom field ids, e.g. company,plan")
        return ids

    @field_validator("rocketchat_conflicts_field")
    @classmethod
    def _conflicts_field(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        if not re.fullmatch(r"[A-Za-z0-9_-]+", value.strip()):
            raise ValueError("expected one custom field id (letters, digits, _ or -), e.g. notes")
        return value.strip()

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

    @field_validator(
        "retain_delivered", "retain_failed", "retain_rejected", "retain_attempts", mode="before"
    )
    @classmethod
    def _duration(cls, value: Any) -> float | None:
        return parse_duration(value)

    @field_validator("form_consent_text", mode="before")
    @classmethod
    def _consent_text(cls, value: Any) -> str | None:
        text = str(value).strip() if value is not None else ""
        if len(text) > 1000 or any(ord(ch) < 32 and ch not in "\t\n" for ch in text):
            raise ValueError(
                "expected the consent sentence the form shows: text of at most 1000 "
                "characters, without control characters"
            )
        return text or None

    @property
    def retention(self) -> RetentionPolicy:
        return RetentionPolicy(
            delivered=self.retain_delivered,
            failed=self.retain_failed,
            rejected=self.retain_rejected,
            attempts=self.retain_attempts,
        )

    @property
    def consent_version(self) -> str | None:
        """The version of ``FORM_CONSENT_TEXT``: the first 12 hex digits of its SHA-256, so
        a changed text is a new version without anyone remembering to bump it."""
        if not self.form_consent_text:
            return None
        import hashlib

        return hashlib.sha256(self.form_consent_text.encode()).hexdigest()[:12]

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

        if not value.strip():
            return ""  # the default, resolved against the home in load_settings
        return normalize_database_url(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> str:
        level = str(value).strip().upper()
        if level not in _LOG_LEVELS:
            raise ValueError("expected one of " + ", ".join(_LOG_LEVELS))
        return level

    @field_validator("host", mode="before")
    @classmethod
    def _host(cls, value: Any) -> str:
        host = str(value).strip()
        if not _HOST.match(host):
            raise ValueError(
                "expected an interface to listen on: 127.0.0.1, 0.0.0.0, :: or a host name"
            )
        return host

    @property
    def rocketchat_configured(self) -> bool:
        return bool(self.rocketchat_user_id and self.rocketchat_auth_token.get_secret_value())


def _dotenv(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    if not path.is_file():
        return {}
    return {k.upper(): v for k, v in dotenv_values(path).items() if v is not None}


def _in_home(url: str, home: Path) -> str:
    """A relative SQLite path (``sqlite:///./x.db``) made absolute against the home."""
    prefix = "sqlite+aiosqlite:///"
    if not url.startswith(prefix):
        return url
    path, sep, query = url[len(prefix) :].partition("?")
    if not path or path == ":memory:" or Path(path).is_absolute():
        return url
    return prefix + str((home / path).resolve()) + sep + query


_EXPECTED = {
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_parsing": "expected a number",
    "bool_parsing": "expected true or false",
}


def _expected(kind: str, message: str) -> str:
    """pydantic's message as what the setting expects."""
    if kind in _EXPECTED:
        return _EXPECTED[kind]
    message = message.removeprefix("Value error, ")
    if message.startswith("Input should be "):
        rest = message.removeprefix("Input should be ").split(", unable")[0]
        message = (
            "expected a number " if rest.startswith(("greater", "less")) else "expected "
        ) + rest
    return message


def load_settings(**overrides: Any) -> Settings:
    """Read the settings (the environment, then the home's ``.env``), turning a validation
    failure into one readable line naming the variable, the value and what it expects."""
    home = resolve_home()
    try:
        settings = Settings(_env_file=home.env_file, **overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        variable = str(first["loc"][0]).upper() if first["loc"] else "?"
        msg = _expected(first["type"], first["msg"])
        given = first.get("input")
        if isinstance(given, SecretStr):
            given = None
        raise setting_error(
            variable, given if isinstance(given, str | int | float) else None, msg
        ) from None
    settings._home = home
    if "database_url" in overrides:
        settings._database_from = "given"
    elif os.environ.get("DATABASE_URL", "").strip():
        settings._database_from = "environment"
    elif settings.database_url:
        settings._database_from = ".env"
    if not settings.database_url:
        settings.database_url = home.default_database_url
    else:
        settings.database_url = _in_home(settings.database_url, home.path)
    return settings
