"""A malformed setting, core or channel, stops every entry point with one line naming it.

The list of settings is derived from the code (``tests/settings_names.py``: the Settings
model's fields, and every name a channel's ``check`` looks up). In-process, each gets a few
malformed values: a refused one must be one line naming the variable and the value (never
a secret's); a value the checks let through must build the app (so nothing is refused
later, per request); a setting no malformed value upsets must be free text (a secret or
an id). In subprocesses, a representative set runs the real entry points: ``contact-adapter
serve``, ``uvicorn adapter.app:app``, ``worker``, ``migrate`` and ``import``, with the bad
value in the environment or in the ``.env`` a user would write.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapter.ops.startup import checked_settings
from adapter.settings import SettingsError, is_secret_setting
from adapter.web.app import create_app
from tests.settings_names import EXTRA_FORM, channel_setting_names, core_setting_names

ROOT = Path(__file__).resolve().parent.parent
# Tried in turn: a word, punctuation and spaces, a negative number, a control character.
MALFORMED = ("lots", "Lots!? ,:=", "-1", "bad\x01value")
# Settings that take any text: secrets (any token is a token) and a Slack client id.
FREE_TEXT = {"SLACK_CLIENT_ID"}


def test_the_derived_list_covers_core_and_channel_settings() -> None:
    names = set(core_setting_names()) | set(channel_setting_names())
    # The settings the issue saw misread, core and channel, each found by the derivation.
    for name in ("FORM_RATE_LIMIT", "TAWKTO_REQUIRED_FIELDS", "SLACK_CONTACT_MANAGER_MAP"):
        assert name in names
    for name in ("PORT", "HOST", "LOG_LEVEL", "HUBSPOT_WEBHOOK_URL", "CHATWOOT_WEBHOOK_SECRET"):
        assert name in names
    assert len(names) > 100


def test_every_setting_with_a_format_refuses_a_malformed_value_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    problems: list[str] = []
    refused: dict[str, str] = {}
    baseline = {"FORMS": EXTRA_FORM}  # so that the FORM_PRICING_* settings are read
    for name, value in baseline.items():
        monkeypatch.setenv(name, value)
    for name in [*core_setting_names(), *channel_setting_names()]:
        for value in MALFORMED:
            monkeypatch.setenv(name, value)
            try:
                settings = checked_settings()
            except SettingsError as exc:
                message = str(exc)
                refused[name] = message
                if "\n" in message or not message.startswith(f"setting {name}"):
                    problems.append(f"{name}={value!r}: not one line naming it: {message!r}")
                shown = f"(got {value!r})"
                if is_secret_setting(name) and value.strip() in message:
                    problems.append(f"{name}: a secret's value is shown: {message!r}")
                if not is_secret_setting(name) and shown not in message:
                    problems.append(f"{name}={value!r}: the value is not shown: {message!r}")
                if "expected" not in message:
                    problems.append(f"{name}: does not say what it expects: {message!r}")
                break
            try:  # let through at start-up: then nothing may refuse it later
                create_app(settings)
            except Exception as exc:
                problems.append(f"{name}={value!r} passed the checks, then {exc!r}")
        if name in baseline:
            monkeypatch.setenv(name, baseline[name])
        else:
            monkeypatch.delenv(name)
        if name not in refused and not (is_secret_setting(name) or name in FREE_TEXT):
            problems.append(f"{name}: no malformed value is refused at start-up")
    assert not problems, "\n".join(problems)
    assert len(refused) > 80
    # A secret with a format is checked too, without showing its value.
    assert refused["DATABASE_URL"].startswith("setting DATABASE_URL: expected a database URL")


def run_entry_point(
    args: list[str], home: Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=home,
        env={
            **os.environ,
            "CONTACT_ADAPTER_HOME": str(home),
            "PYTHONPATH": str(ROOT),
            "LOG_LEVEL": "INFO",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=timeout,
    )


SERVE = ["-m", "adapter.ops.cli", "serve", "--port", "0"]
UVICORN = ["-m", "uvicorn", "adapter.app:app", "--host", "127.0.0.1", "--port", "0"]
WORKER = ["-m", "adapter.ops.cli", "worker"]
MIGRATE = ["-m", "adapter.ops.cli", "migrate"]
IMPORT = ["-m", "adapter.ops.cli", "import", "leads.csv"]


@pytest.mark.parametrize(
    ("entry_point", "variable", "value", "in_dotenv", "expected"),
    [
        (SERVE, "TAWKTO_REQUIRED_FIELDS", "email", True, "expected a comma-separated list"),
        (UVICORN, "FORM_RATE_LIMIT", "lots", False, "expected posts per minute"),
        (WORKER, "SLACK_CONTACT_MANAGER_MAP", "garbage", True, "has no '='"),
        (MIGRATE, "LOG_LEVEL", "loud", False, "expected one of CRITICAL"),
        (IMPORT, "HUBSPOT_WEBHOOK_URL", "contacts.example.com", True, "absolute target URL"),
        (SERVE, "PORT", "eighty", True, "expected a whole number"),
    ],
    ids=lambda v: v[2] if isinstance(v, list) else None,
)
def test_each_entry_point_exits_with_one_line_before_serving_or_touching_the_database(
    tmp_path: Path,
    entry_point: list[str],
    variable: str,
    value: str,
    in_dotenv: bool,
    expected: str,
) -> None:
    (tmp_path / "leads.csv").write_text("name,email\nChris Doe,chris@example.com\n")
    env = {"ROCKETCHAT_AUTH_TOKEN": "s3cret-token-value"}
    if in_dotenv:
        (tmp_path / ".env").write_text(f"{variable}={value}\nMETRICS_TOKEN=dotenv-secret\n")
    else:
        env[variable] = value
    result = run_entry_point(entry_point, tmp_path, env)
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if line.strip()]
    assert result.returncode == 2, output
    assert lines == [f"error: setting {variable} (got {value!r}): " + lines[0].split("): ", 1)[1]]
    assert expected in lines[0]
    assert "s3cret-token-value" not in output and "dotenv-secret" not in output
    assert not (tmp_path / "contact-adapter.db").exists()  # the database was never opened
