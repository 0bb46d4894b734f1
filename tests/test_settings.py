"""Settings: defaults, Heroku's URL forms, and one readable line for a bad setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapter.settings import SettingsError, load_settings


def test_defaults_use_an_embedded_sqlite_file() -> None:
    settings = load_settings()
    assert settings.database_url.startswith("sqlite+aiosqlite:///")
    assert settings.contact_required_fields == ("name", "email", "phone")


def test_heroku_postgres_url_is_accepted() -> None:
    settings = load_settings(database_url="postgres://u:p@host:5432/db?sslmode=require")
    assert settings.database_url == "postgresql+asyncpg://u:p@host:5432/db?sslmode=require"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"contact_required_fields": "name"}, "CONTACT_REQUIRED_FIELDS"),
        ({"contact_required_fields": "email,phone"}, "includes name"),
        ({"default_phone_region": "XX"}, "DEFAULT_PHONE_REGION"),
        ({"rocketchat_url": "chat.example.com"}, "ROCKETCHAT_URL"),
        ({"database_url": "mysql://x"}, "DATABASE_URL"),
    ],
)
def test_bad_settings_fail_with_the_variable_named(overrides: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(**overrides)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_relaxed_required_fields() -> None:
    assert load_settings(contact_required_fields="name, Email").contact_required_fields == (
        "name",
        "email",
    )


def test_cli_start_up_fails_with_one_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DEFAULT_PHONE_REGION": "Atlantis",
        "ROCKETCHAT_AUTH_TOKEN": "s3cret-token",
    }
    result = subprocess.run(
        [sys.executable, "-m", "adapter.ops.cli", "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]]
    assert lines[0].startswith("error: setting DEFAULT_PHONE_REGION (got 'Atlantis')")
    assert "s3cret-token" not in result.stderr


def test_channel_settings_are_looked_up_without_touching_the_environment() -> None:
    settings = load_settings(channel_settings={"CHATWOOT_WEBHOOK_SECRET": "abc"})
    assert settings.lookup("chatwoot_webhook_secret") == "abc"
    assert settings.lookup("SOMETHING_UNSET_HERE_123") is None


def test_uvicorn_start_up_fails_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    """``uvicorn adapter.app:app`` with a bad setting exits instead of serving 500s."""
    env = {
        **os.environ,
        "DEFAULT_PHONE_REGION": "Atlantis",
        "ROCKETCHAT_AUTH_TOKEN": "s3cret-token",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "adapter.app:app", "--host", "127.0.0.1", "--port", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    wanted = "setting DEFAULT_PHONE_REGION (got 'Atlantis'): expected a two-letter ISO country code"
    assert [line for line in output.splitlines() if wanted in line], output
    assert "Traceback" not in output
    assert "lifespan' protocol appears unsupported" not in output
    assert "s3cret-token" not in output
