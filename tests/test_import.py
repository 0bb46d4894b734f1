"""Bulk import: ``contact-adapter import leads.csv``.

The big test writes a 10,000-row file with good rows, bad emails, bad phones, missing
names and duplicates, imports it through the real command, checks the counts and the
rejected rows' report row by row, imports it again (nothing new), then starts the
service on the same database and lets its worker register the good rows at the
Rocket.Chat stand-in, each exactly once.
"""

from __future__ import annotations

import asyncio
import csv
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from adapter.ops.cli import app as cli_app
from adapter.ops.importer import (
    ColumnMapping,
    ImportFileError,
    import_csv,
    rejected_path_for,
    resolve_columns,
    row_event_id,
)
from adapter.settings import Settings
from tests.conftest import BOT, Service, wait_until
from tests.rocketchat_standin import RocketChatStandIn

# Few good rows so that the worker registers them all within the test's time at the
# stand-in (~100/s on a busy 2-core machine); the import itself runs at thousands of rows/s.
GOOD, BAD_EMAIL, BAD_PHONE, NO_NAME, DUPLICATE = 1_500, 2_000, 2_000, 2_000, 2_500
ROWS = GOOD + BAD_EMAIL + BAD_PHONE + NO_NAME + DUPLICATE  # 10,000


def phone(i: int) -> str:
    area = (212, 415, 646, 303, 617, 312)[i % 6]
    return f"+1 {area} {200 + (i * 7) % 700:03d} {i % 10_000:04d}"


def write_leads(path: Path) -> dict[int, tuple[str, str]]:
    """The file; returns the expected report: row number → (field, start of the reason)."""
    rng = random.Random(8)
    good = [
        (f"Lead {i} Person", f"lead{i}@example.com", phone(i), f"Co {i % 7}") for i in range(GOOD)
    ]
    rows: list[tuple[tuple[str, str, str, str], tuple[str, str] | None]] = [(g, None) for g in good]
    for i in range(BAD_EMAIL):
        email = f"bad{i}@" if i % 2 else f"bad{i}.example.com"
        rows.append(
            (
                (f"Bad Email {i}", email, phone(GOOD + i), ""),
                ("email", f"{email!r} is not a valid email address"),
            )
        )
    for i in range(BAD_PHONE):
        number = "+1 555" if i % 2 else f"12-{i}"
        reason = (
            f"{number!r} is not a valid phone number"
            if i % 2
            else f"{number!r} is not a phone number"
        )
        rows.append(((f"Bad Phone {i}", f"badphone{i}@example.com", number, ""), ("phone", reason)))
    for i in range(NO_NAME):
        rows.append(
            (
                ("  ", f"noname{i}@example.com", phone(GOOD + BAD_EMAIL + i), ""),
                ("name", "is required"),
            )
        )
    for i in rng.choices(range(GOOD), k=DUPLICATE):  # the same person, written differently
        name, email, number, company = good[i]
        rows.append(
            (
                (
                    name.upper() if i % 2 else name,
                    f"  {email.upper()} ",
                    number.replace(" ", "-"),
                    company,
                ),
                None,
            )
        )
    rng.shuffle(rows)  # a duplicate may come before its original: one of them is accepted
    expected: dict[int, tuple[str, str]] = {}
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Full Name", "E-mail", "Mobile", "Company", "Notes"])
        for number, (values, problem) in enumerate(rows, start=2):
            writer.writerow([*values, "called twice"])
            if problem is not None:
                expected[number] = problem
    assert len(rows) == ROWS
    return expected


def env_for(settings: Settings) -> dict[str, str]:
    return {
        "DATABASE_URL": settings.database_url,
        "ROCKETCHAT_URL": settings.rocketchat_url,
        "ROCKETCHAT_USER_ID": BOT["user_id"],
        "ROCKETCHAT_AUTH_TOKEN": BOT["token"],
        "SQLITE_SYNCHRONOUS": "NORMAL",
        "CONTACT_REQUIRED_FIELDS": ",".join(settings.contact_required_fields),
    }


def import_command(args: list[str], settings: Settings) -> Any:
    """``contact-adapter import ARGS`` on the database of ``settings``, migrated first (an
    import never creates a schema)."""
    migrated = CliRunner().invoke(cli_app, ["migrate"], env=env_for(settings))
    assert migrated.exit_code == 0, migrated.output
    return CliRunner().invoke(cli_app, ["import", *args], env=env_for(settings))


def test_ten_thousand_rows_counts_report_reimport_and_delivery(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    leads = tmp_path / "leads.csv"
    expected = write_leads(leads)
    settings = make_settings(rocketchat_concurrency=32)

    started = time.perf_counter()
    first = import_command([str(leads)], settings)
    took = time.perf_counter() - started
    assert first.exit_code == 1, first.output  # some rows were rejected
    summary = first.stdout.strip().splitlines()[-1]
    rejected = BAD_EMAIL + BAD_PHONE + NO_NAME
    assert summary.startswith(
        f"leads.csv: {ROWS} rows, {GOOD} accepted, {DUPLICATE} duplicates, {rejected} rejected"
    ), summary
    assert 'name ← "Full Name", email ← "E-mail", phone ← "Mobile"' in first.stderr
    print(f"imported {ROWS} rows in {took:.1f} s ({ROWS / took:.0f} rows/s)")

    # The report: one line per bad row, with its row number, field and reason.
    report = rejected_path_for(leads)
    assert report == tmp_path / "leads.rejected.csv"
    with report.open(newline="", encoding="utf-8") as handle:
        lines = list(csv.DictReader(handle))
    assert len(lines) == rejected
    found = {int(line["row"]): (line["field"], line["reason"]) for line in lines}
    assert found.keys() == expected.keys()
    for row, (field, reason) in expected.items():
        assert found[row][0] == field, (row, found[row])
        assert found[row][1].startswith(reason), (row, found[row])

    database = settings.database_url.split("///", 1)[1]

    def stored() -> dict[str, int]:
        with sqlite3.connect(database) as db:
            return dict(
                db.execute("SELECT status, count(*) FROM deliveries GROUP BY status").fetchall()
            )

    assert stored() == {"pending": GOOD}

    # Again: nothing new (the rejected rows are reported again).
    again = import_command([str(leads)], settings)
    assert again.exit_code == 1
    assert (
        f"{ROWS} rows, 0 accepted, {GOOD + DUPLICATE} duplicates, {rejected} rejected"
        in again.stdout
    )
    assert stored() == {"pending": GOOD}

    # The service's worker on the same database registers every good row, once.
    service = start_service(settings)
    wait_until(lambda: len(standin.contact_posts_per_token()) >= GOOD, timeout=120, interval=0.5)
    wait_until(lambda: stored() == {"delivered": GOOD}, timeout=15, interval=0.2)
    per_token = standin.contact_posts_per_token()
    assert len(per_token) == GOOD and set(per_token.values()) == {1}
    assert len(standin.visitors) == GOOD
    assert service.client.get("/healthz").status_code == 200


def test_columns_are_recognised_by_header_and_can_be_named() -> None:
    columns = resolve_columns(
        ["Given Name", "Surname", "EMAIL ADDRESS", "Tel.", "Mobile"], ColumnMapping()
    )
    assert columns.first_name == (0,) and columns.last_name == (1,)
    assert columns.email == (2,) and columns.phone == (3, 4)
    row = ["Chris", "Doe", "chris@example.com", "", "+1 415 555 2671"]
    assert columns.fields(row) == {
        "name": "Chris Doe",
        "email": "chris@example.com",
        "phone": "+1 415 555 2671",  # "Tel." is empty in this row: "Mobile" is next
    }
    named = resolve_columns(
        ["who", "contact", "where"],
        ColumnMapping(name="who", email="Where", custom_fields={"company": "contact"}),
    )
    assert named.name == (0,) and named.email == (2,) and named.custom_fields == {"company": 1}
    assert named.custom(["a", " Acme ", "b"]) == {"company": "Acme"}
    with pytest.raises(ImportFileError, match="--phone-column: there is no column 'Cell'"):
        resolve_columns(["name", "email"], ColumnMapping(phone="Cell"))
    with pytest.raises(ImportFileError, match="no name column"):
        resolve_columns(["email", "phone"], ColumnMapping())
    with pytest.raises(ImportFileError, match="no phone column, and CONTACT_REQUIRED_FIELDS"):
        resolve_columns(["name", "email"], ColumnMapping(), required=("name", "email", "phone"))


def test_row_identity_ignores_position_case_and_punctuation() -> None:
    one = row_event_id(
        {"name": "Chris  Doe", "email": "Chris@Example.com ", "phone": "+1 415 555 2671"}, {}
    )
    two = row_event_id(
        {"name": "chris doe", "email": "chris@example.com", "phone": "+1-415-555-2671"}, {}
    )
    other = row_event_id(
        {"name": "Chris Doe", "email": "chris@example.com", "phone": "+1 415 555 2672"}, {}
    )
    assert one == two != other
    assert row_event_id(
        {"name": "a", "email": "b", "phone": None}, {"company": "x"}
    ) != row_event_id({"name": "a", "email": "b", "phone": None}, {})


def test_semicolons_bom_first_and_last_names_and_merging_in_one_file(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    leads = tmp_path / "export.csv"
    leads.write_bytes(
        "\ufeffFirst name;Last name;Email;Phone\n"
        "Chris;Doe;chris@example.com;+1 415 555 2671\n"
        "\n"
        "Christopher;Doe;chris@example.com;\n"
        "Ana;Lima;ana@@example.com;+55 11 91234 5678\n".encode()
    )
    settings = make_settings(contact_required_fields="name,email")
    result = import_command([str(leads)], settings)
    assert "export.csv: 3 rows, 2 accepted, 0 duplicates, 1 rejected" in result.stdout
    with (tmp_path / "export.rejected.csv").open(encoding="utf-8") as handle:
        assert handle.read().splitlines()[1].startswith("5,email,'ana@@example.com' is not a valid")
    database = settings.database_url.split("///", 1)[1]
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT source, status, fields FROM deliveries").fetchall()
    # Both rows for Chris merged into one waiting delivery carrying everything known.
    assert len(rows) == 1
    source, status, fields = rows[0]
    assert (source, status) == ("import:export.csv", "pending")
    assert '"name": "Christopher Doe"' in fields and '"phone": "+14155552671"' in fields


def test_dry_run_stores_nothing_and_errors_are_clear(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    leads = tmp_path / "leads.csv"
    leads.write_text("name,email,phone\nChris Doe,chris@example.com,+1 415 555 2671\n")
    settings = make_settings()
    dry = import_command([str(leads), "--dry-run"], settings)
    assert dry.exit_code == 0, dry.output
    assert "1 rows, 1 would accept, 0 duplicates, 0 rejected" in dry.stdout
    with sqlite3.connect(settings.database_url.split("///", 1)[1]) as db:
        assert db.execute("SELECT count(*) FROM deliveries").fetchone() == (0,)
    report = (tmp_path / "leads.rejected.csv").read_text().strip()
    assert report == "row,field,reason,name,email,phone"

    wrong = import_command([str(leads), "--email-column", "mail"], settings)
    assert wrong.exit_code == 2
    assert "--email-column: there is no column 'mail'" in wrong.stderr
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "empty.csv is empty" in import_command([str(empty)], settings).stderr
    latin = tmp_path / "latin.csv"
    latin.write_bytes(
        "name,email,phone\nJos\xe9 Doe,jose@example.com,+1 415 555 2671\n".encode("latin-1")
    )
    refused = import_command([str(latin)], settings)
    assert refused.exit_code == 2 and "--encoding" in refused.stderr
    accepted = import_command([str(latin), "--encoding", "latin-1"], settings)
    assert accepted.exit_code == 0 and "1 accepted" in accepted.stdout


def test_import_csv_in_batches_matches_one_big_batch(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """Batch boundaries change nothing: duplicates and merges across batches count the same."""
    from adapter.ops.runtime import open_runtime

    leads = tmp_path / "leads.csv"
    with leads.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "email", "phone"])
        for i in range(60):
            writer.writerow(
                [f"P {i % 20}", f"p{i % 20}@example.com", phone(i % 20)]
            )  # 20 people x3
        for i in range(20):
            writer.writerow([f"P {i} Renamed", f"p{i}@example.com", phone(i)])  # merged, not new

    async def run(batch_size: int, name: str) -> tuple[int, int, int, int]:
        settings = make_settings(database_url=f"sqlite:///{tmp_path / name}")
        async with open_runtime(settings) as runtime:
            report = await import_csv(leads, runtime.queue, batch_size=batch_size)
            pending = await runtime.queue.list(status="pending", limit=1000)
            assert all(r.fields["name"].endswith("Renamed") for r in pending)
            return report.accepted, report.duplicates, report.rejected, len(pending)

    assert asyncio.run(run(7, "small.db")) == asyncio.run(run(500, "big.db")) == (40, 40, 0, 20)


@pytest.mark.postgres
def test_import_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """The same batch statements on PostgreSQL (``FOR UPDATE``, multi-row inserts)."""
    from adapter.ops.runtime import open_runtime
    from adapter.settings import load_settings

    leads = tmp_path / "leads.csv"
    with leads.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Name", "Email", "Phone"])
        for i in range(1_200):
            writer.writerow([f"P {i}", f"p{i % 1_000}@example.com", phone(i % 1_000)])
        writer.writerow(["", "x@example.com", phone(1)])
    settings = load_settings(database_url=postgres_url)

    async def run() -> list[tuple[int, int, int]]:
        async with open_runtime(settings) as runtime:
            counts = []
            for _ in range(2):
                report = await import_csv(leads, runtime.queue, batch_size=250)
                counts.append((report.accepted, report.duplicates, report.rejected))
            assert await runtime.queue.counts() == {"import:leads.csv": {"pending": 1_000}}
            return counts

    # Rows 1,001-1,200 are new names for people already waiting: merged, not new deliveries.
    assert asyncio.run(run()) == [(1_200, 0, 1), (0, 1_200, 1)]
