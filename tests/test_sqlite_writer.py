"""The SQLite writer: batched commits, failures isolated to their caller, a free event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, make_url, select
from sqlalchemy.exc import IntegrityError

from adapter.ledger.schema import create_engine, normalize_database_url, sqlite_writer_engine
from adapter.ledger.sqlite_writer import SQLiteWriter, WriteConnection
from adapter.settings import Settings
from tests.conftest import API_TOKEN, Service, wait_until

metadata = MetaData()
people = Table("people", metadata, Column("id", Integer, primary_key=True), Column("name", String))


def _writer(path: Path) -> SQLiteWriter:
    engine = create_engine(f"sqlite:///{path}")
    sync = sqlite_writer_engine(engine)
    assert sync is not None
    metadata.create_all(sync)
    return SQLiteWriter(sync)


def test_concurrent_jobs_commit_and_a_failing_one_fails_alone(tmp_path: Path) -> None:
    writer = _writer(tmp_path / "w.db")

    def add(i: int) -> Callable[[WriteConnection], Any]:
        async def job(conn: WriteConnection) -> int:
            await conn.execute(insert(people).values(id=i, name=f"p{i}"))
            return i

        return job

    async def main() -> list[Any]:
        jobs = [writer.run(add(i)) for i in range(50)]
        jobs.insert(25, writer.run(add(7)))  # the same primary key twice: only it fails
        results = await asyncio.gather(*jobs, return_exceptions=True)

        async def count(conn: WriteConnection) -> Any:
            return (await conn.execute(select(people.c.id))).all()

        stored = await writer.read(count)
        return [results, len(stored)]

    results, stored = asyncio.run(main())
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and isinstance(failures[0], IntegrityError)
    assert sorted(r for r in results if isinstance(r, int)) == list(range(50))
    assert stored == 50  # every other job committed, none twice
    writer.close()

    # Committed for real: another connection (another process, as it were) sees the rows.
    with sqlite3.connect(tmp_path / "w.db") as other:
        assert other.execute("SELECT count(*) FROM people").fetchone() == (50,)


def test_the_service_answers_while_another_process_holds_the_write_lock(
    make_settings: Callable[..., Settings], start_service: Callable[[Settings], Service]
) -> None:
    """Waiting for SQLite's write lock happens off the event loop: health checks and reads
    are answered meanwhile, and the contact is accepted once the lock is free."""
    settings = make_settings(fast_path_budget=0, inprocess_worker=False)
    service = start_service(settings)
    path = make_url(normalize_database_url(settings.database_url)).database
    assert path
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # the write lock, as a CLI import or worker would hold it
    answers: list[httpx.Response] = []

    def post() -> None:
        answers.append(
            httpx.post(
                f"{service.url}/contacts",
                json={"name": "Lia Moss", "email": "lia@example.com", "phone": "+14155552671"},
                headers={"Authorization": f"Bearer {API_TOKEN}"},
                timeout=30,
            )
        )

    sender = threading.Thread(target=post)
    sender.start()
    try:
        for _ in range(5):  # the loop is free while the accept waits for the lock
            assert service.client.get("/healthz", timeout=2).status_code == 200
        assert not answers  # still waiting: the lock is held
    finally:
        other.execute("COMMIT")
        other.close()
    sender.join(30)
    assert answers and answers[0].status_code == 202, answers
    delivery = wait_until(lambda: service.delivery(answers[0].json()["delivery_id"]))
    assert delivery["status"] == "pending"
