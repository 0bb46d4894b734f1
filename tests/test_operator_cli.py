"""The command line as an operator meets it, each command run for real in a subprocess.

Which database a command uses (the home: ``CONTACT_ADAPTER_HOME``, else the folder of the
``.env`` found, else the working directory), ``import`` refusing a database without a
schema, choices validated, times in ISO 8601 in the operator's time zone, ``--version``,
help without placeholders, and ``import``: duplicates in a dry run, custom fields that
would be dropped, a rejected-rows file that can be fixed and imported again, and "not
UTF-8 text".
"""

from __future__ import annotations

import csv
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``contact-adapter ARGS`` in ``cwd``, with no home set unless ``env`` sets one."""
    base = {k: v for k, v in os.environ.items() if k != "CONTACT_ADAPTER_HOME"}
    return subprocess.run(
        [sys.executable, "-m", "adapter.ops.cli", *args],
        cwd=cwd,
        env={**base, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def count_rows(database: Path) -> int:
    with sqlite3.connect(database) as db:
        return int(db.execute("SELECT count(*) FROM deliveries").fetchone()[0])


@pytest.fixture
def service_folder(tmp_path: Path) -> Path:
    """The folder the service runs in (``make run``): a ``.env``, its database migrated."""
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / ".env").write_text("ROCKETCHAT_URL=http://127.0.0.1:9\n")
    migrated = cli(["migrate"], folder)
    assert migrated.returncode == 0, migrated.stderr
    assert "database:" not in migrated.stderr  # the default one, in the folder of the .env
    assert (folder / "contact-adapter.db").exists()
    return folder


def write_leads(path: Path) -> None:
    path.write_text(
        "Name,Email,Phone,Company\n"
        "Chris Doe,chris@example.com,+1 415 555 2671,Acme\n"
        "Ana Lima,ana@@example.com,+55 11 91234 5678,Lima SA\n"
        "Bo Berg,bo@example.com,,Berg AB\n"
    )


def test_import_from_another_folder_refuses_a_database_without_schema_and_finds_the_home(
    tmp_path: Path, service_folder: Path
) -> None:
    leads_folder = tmp_path / "leads"
    leads_folder.mkdir()
    write_leads(leads_folder / "leads.csv")
    relaxed = {"CONTACT_REQUIRED_FIELDS": "name,email"}

    # No .env here or above: the working directory's database, which has no schema.
    lost = cli(["import", "leads.csv"], leads_folder, **relaxed)
    assert lost.returncode == 2, lost.stderr
    assert f"database: {leads_folder / 'contact-adapter.db'} (no .env found" in lost.stderr
    assert "has no schema yet" in lost.stderr and "CONTACT_ADAPTER_HOME" in lost.stderr
    assert not (leads_folder / "contact-adapter.db").exists()  # nothing created there
    assert "accepted" not in lost.stdout

    # The documented way: CONTACT_ADAPTER_HOME names the service's folder.
    home = {"CONTACT_ADAPTER_HOME": str(service_folder), **relaxed}
    imported = cli(["import", "leads.csv"], leads_folder, **home)
    assert imported.returncode == 1, imported.stderr  # one row rejected
    assert "3 rows, 2 accepted, 0 duplicates, 1 rejected" in imported.stdout
    assert "database:" not in imported.stderr  # the service's default database
    assert count_rows(service_folder / "contact-adapter.db") == 2

    # A sub-folder of the service's: the .env above is found, so the same database.
    sub = service_folder / "exports"
    sub.mkdir()
    listed = cli(["deliveries", "list"], sub)
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 2

    # DATABASE_URL from the environment is said, as it may not be the service's.
    other = tmp_path / "other.db"
    explicit = cli(["migrate"], sub, DATABASE_URL=f"sqlite:///{other}")
    assert f"database: {other} (DATABASE_URL from the environment)" in explicit.stderr


def test_deliveries_choices_dates_retry_messages_version_and_help(
    tmp_path: Path, service_folder: Path
) -> None:
    write_leads(service_folder / "leads.csv")
    env = {"CONTACT_REQUIRED_FIELDS": "name,email", "TZ": "America/New_York"}
    assert cli(["import", "leads.csv"], service_folder, **env).returncode == 1

    bogus = cli(["deliveries", "list", "--status", "bogus"], service_folder)
    assert bogus.returncode == 2
    assert "'bogus' is not one of" in bogus.stderr
    assert "merged" in bogus.stderr and "ignored" in bogus.stderr

    listed = cli(["deliveries", "list", "--status", "pending"], service_folder, **env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2
    iso_new_york = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d-0[45]:00"  # EST or EDT
    assert all(re.search(iso_new_york, line) for line in lines), lines
    delivery_id = lines[0].split()[0]

    shown = cli(["deliveries", "show", delivery_id], service_folder, **env)
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf'"created_at": "{iso_new_york}"', shown.stdout), shown.stdout
    assert not re.search(r'_at": \d', shown.stdout)  # no epoch floats left

    missing = cli(["deliveries", "retry", "nope"], service_folder)
    assert missing.returncode == 1
    assert "no delivery nope" in missing.stderr and "not a failed" not in missing.stderr
    pending = cli(["deliveries", "retry", delivery_id], service_folder)
    assert pending.returncode == 1
    assert f"delivery {delivery_id} is pending, not failed" in pending.stderr

    version = cli(["--version"], service_folder)
    assert version.returncode == 0
    assert re.fullmatch(r"contact-adapter \S+\n", version.stdout)

    for command in (["--help"], ["deliveries", "list", "--help"], ["parse", "--help"]):
        text = cli([*command], service_folder, COLUMNS="120").stdout
        assert "<bool>" not in text and "<str>" not in text and "{" not in text, text
    assert "parse [OPTIONS] TEXT" in cli(["parse", "--help"], service_folder).stdout
    listed_help = cli(["deliveries", "list", "--help"], service_folder, COLUMNS="200").stdout
    assert "merged" in listed_help and "ignored" in listed_help


def test_import_dry_run_duplicates_custom_fields_rejected_file_and_encoding(
    service_folder: Path,
) -> None:
    leads = service_folder / "leads.csv"
    write_leads(leads)
    env = {"CONTACT_REQUIRED_FIELDS": "name,email"}
    database = service_folder / "contact-adapter.db"

    # A custom field Rocket.Chat would never get: refused up front, nothing imported.
    dropped = cli(["import", "leads.csv", "--custom-field", "company=Company"], service_folder)
    assert dropped.returncode == 2
    assert "ROCKETCHAT_CUSTOM_FIELDS" in dropped.stderr and "company" in dropped.stderr
    assert count_rows(database) == 0
    listed = cli(
        ["import", "leads.csv", "--custom-field", "company=Company"],
        service_folder,
        ROCKETCHAT_CUSTOM_FIELDS="plan",
        **env,
    )
    assert listed.returncode == 2 and "'company' is not listed" in listed.stderr

    first = cli(["import", "leads.csv"], service_folder, **env)
    assert "3 rows, 2 accepted, 0 duplicates, 1 rejected" in first.stdout
    dry = cli(["import", "leads.csv", "--dry-run"], service_folder, **env)
    assert "3 rows, 0 would accept, 2 duplicates, 1 rejected" in dry.stdout  # as a real run
    assert count_rows(database) == 2

    # The rejected rows keep their own columns: fix the file, import it again.
    rejected = service_folder / "leads.rejected.csv"
    with rejected.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1
    row = rows[0]
    assert row["row"] == "3" and row["field"] == "email"
    assert row["reason"].startswith("'ana@@example.com' is not a valid email address")
    assert (row["Name"], row["Email"], row["Company"]) == (
        "Ana Lima",
        "ana@@example.com",
        "Lima SA",
    )
    rejected.write_text(rejected.read_text().replace("ana@@example.com,", "ana@example.com,"))
    again = cli(["import", "leads.rejected.csv"], service_folder, **env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 rows, 1 accepted, 0 duplicates, 0 rejected" in again.stdout
    assert count_rows(database) == 3

    latin = service_folder / "latin.csv"
    latin.write_bytes("name,email\nJos\xe9 Doe,jose@example.com\n".encode("latin-1"))
    refused = cli(["import", "latin.csv"], service_folder, **env)
    assert refused.returncode == 2
    assert "latin.csv is not UTF-8 text" in refused.stderr
    assert "utf-8-sig" not in refused.stderr and "--encoding" in refused.stderr
