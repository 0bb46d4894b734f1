"""The ``contact-adapter`` command as a person runs it: exit codes and messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import BOT
from tests.rocketchat_standin import RocketChatStandIn, StandInServer


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapter.ops.cli", *args],
        cwd=cwd,
        env={**os.environ, "LOG_LEVEL": "WARNING", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_parse_shows_what_would_be_registered(tmp_path: Path) -> None:
    result = run(
        ["parse", "Chris Doe <mailto:chris@example.com|chris@example.com> (415) 555-2671"],
        tmp_path,
        DEFAULT_PHONE_REGION="US",
    )
    assert result.returncode == 0, result.stderr
    assert '"phone": "+14155552671"' in result.stdout
    assert '"name": "Chris Doe"' in result.stdout


def test_parse_reports_each_bad_field_and_fails(tmp_path: Path) -> None:
    result = run(["parse", "Chris Doe chris@ +1 555"], tmp_path)
    assert result.returncode == 1
    assert "phone: '+1 555' is not a valid phone number" in result.stderr
    assert "email:" in result.stderr


def test_register_delivers_and_lists(tmp_path: Path) -> None:
    standin = RocketChatStandIn()
    with StandInServer(standin.app) as server:
        env = {
            "ROCKETCHAT_URL": server.url,
            "ROCKETCHAT_USER_ID": BOT["user_id"],
            "ROCKETCHAT_AUTH_TOKEN": BOT["token"],
            "ROCKETCHAT_CONTACT_API": "visitor",  # "auto" picks the Contact Center on 8.8
            "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        }
        result = run(
            [
                "register",
                "--name",
                "Chris Doe",
                "--email",
                "chris@example.com",
                "--phone",
                "+14155552671",
            ],
            tmp_path,
            **env,
        )
        assert result.returncode == 0, result.stderr
        assert "registered: Rocket.Chat contact" in result.stdout
        assert len(standin.visitors) == 1
        bad = run(["register", "--name", "Chris", "--email", "nope"], tmp_path, **env)
        assert bad.returncode == 1
        assert "email: 'nope' is not a valid email address" in bad.stderr
        listed = run(["deliveries", "list"], tmp_path, **env)
        assert "delivered" in listed.stdout
        standin.down = True
        queued = run(
            [
                "register",
                "--name",
                "Ana",
                "--email",
                "ana@example.com",
                "--phone",
                "+14155552672",
                "--wait",
                "0.5",
            ],
            tmp_path,
            **env,
        )
        assert queued.returncode == 3
        assert "queued" in queued.stdout


def test_deliveries_show_and_retry_failed(tmp_path: Path) -> None:
    standin = RocketChatStandIn()
    standin.add_custom_field("company", label="Company", required=True)
    with StandInServer(standin.app) as server:
        env = {
            "ROCKETCHAT_URL": server.url,
            "ROCKETCHAT_USER_ID": BOT["user_id"],
            "ROCKETCHAT_AUTH_TOKEN": BOT["token"],
            "ROCKETCHAT_CONTACT_API": "visitor",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        }
        args = ["register", "--name", "Chris Doe", "--email", "chris@example.com"]
        args += ["--phone", "+14155552671"]
        rejected = run(args, tmp_path, **env)
        assert rejected.returncode == 1
        assert "failed: Rocket.Chat rejected the contact: " in rejected.stderr
        listed = run(["deliveries", "list", "--status", "failed"], tmp_path, **env)
        delivery_id = listed.stdout.split()[0]

        shown = run(["deliveries", "show", delivery_id], tmp_path, **env)
        assert shown.returncode == 0, shown.stderr
        record = json.loads(shown.stdout)
        assert record["id"] == delivery_id
        assert record["status"] == "failed"
        assert record["attempts"] == 1
        assert record["fields"]["email"] == "chris@example.com"  # operators see the details
        assert "Invalid value for Company field" in record["last_error"]
        [attempt] = record["history"]  # the one try, with Rocket.Chat's own words
        assert attempt["outcome"] == "rejected"
        assert "Invalid value for Company field" in attempt["error"]
        missing = run(["deliveries", "show", "nope"], tmp_path, **env)
        assert missing.returncode == 1
        assert "no delivery nope" in missing.stderr

        standin.add_custom_field("company", label="Company", required=False)
        retried = run(["deliveries", "retry-failed"], tmp_path, **env)
        assert retried.returncode == 0, retried.stderr
        assert "1 failed deliveries queued again" in retried.stdout
        again = json.loads(run(["deliveries", "show", delivery_id], tmp_path, **env).stdout)
        assert again["status"] == "pending"
        assert again["attempts"] == 0
        assert again["last_error"] is not None  # kept until the next attempt says otherwise
        assert [a["outcome"] for a in again["history"]] == ["rejected"]  # the history stays
        nothing = run(["deliveries", "retry-failed"], tmp_path, **env)
        assert "0 failed deliveries queued again" in nothing.stdout
