"""The retention sweep's cost: 100,000 delivered rows past retention, erased in batches.

Seeds a fresh database (SQLite file by default; ``--postgres`` starts a throw-away server
with tests/postgres.py) with ``--rows`` delivered rows (each with a source event id) and
1,000 pending ones, all 40 days old, then runs the sweep as ``contact-adapter purge``
does (batches of ``--batch``) and reports rows per second, batches, and the longest
batch's transaction, which is the longest any row lock (PostgreSQL) or the write lock
(SQLite) was held by the sweep. Checks that every delivered row was erased and no
pending one touched.

    .venv/bin/python bench/bench_purge.py [--rows 100000] [--batch 500] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapter.delivery.privacy import RetentionSweep  # noqa: E402
from adapter.ops.runtime import open_runtime  # noqa: E402
from adapter.settings import load_settings  # noqa: E402

SECRET = "bench-deployment-secret-0123456789-abcdef"


async def seed(engine, rows: int) -> None:  # type: ignore[no-untyped-def]
    old = time.time() - 40 * 86_400
    chunk = 5000
    for start in range(0, rows + 1000, chunk):
        batch = []
        for i in range(start, min(start + chunk, rows + 1000)):
            status = "delivered" if i < rows else "pending"
            batch.append(
                {
                    "id": uuid.uuid4().hex,
                    "event_id": f"evt-{i}",
                    "token": f"ocak-{i:032x}",
                    "fields": json.dumps(
                        {
                            "name": f"Person {i}",
                            "email": f"p{i}@example.org",
                            "phone": "+14155552671",
                        }
                    ),
                    "status": status,
                    "email_key": f"p{i}@example.org",
                    "t": old,
                }
            )
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO deliveries (id, source, event_id, token, fields, status, attempts, "
                    "next_attempt_at, contact_id, email_key, phone_key, created_at, updated_at, "
                    "delivered_at) VALUES (:id, 'api', :event_id, :token, :fields, :status, 1, "
                    ":t, 'rc', :email_key, '+14155552671', :t, :t, :t)"
                ),
                batch,
            )
            await conn.execute(
                text(
                    "INSERT INTO delivery_events (source, event_id, delivery_id, created_at) "
                    "VALUES ('api', :event_id, :id, :t)"
                ),
                batch,
            )


async def run(url: str, rows: int, batch: int) -> dict[str, float]:
    settings = load_settings(
        database_url=url,
        deployment_secret=SECRET,
        inprocess_worker=False,
        sqlite_synchronous="FULL",
    )
    async with open_runtime(settings) as runtime:
        await seed(runtime.engine, rows)
        sweep = RetentionSweep(runtime.queue, batch=batch)
        started = time.perf_counter()
        report = await sweep.run(max_batches=None, actor="bench")
        took = time.perf_counter() - started
        async with runtime.engine.connect() as conn:
            left = (
                await conn.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE status = 'delivered' AND erased_at IS NULL), "
                        "count(*) FILTER (WHERE status = 'pending' AND erased_at IS NOT NULL) "
                        "FROM deliveries"
                    )
                )
            ).one()
    assert report.deliveries["delivered"] == rows and tuple(left) == (0, 0), (report, left)
    return {
        "rows": rows,
        "seconds": took,
        "rows_per_second": rows / took,
        "batches": report.batches,
        "longest_batch_ms": report.longest_batch * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    if args.postgres:
        from tests.postgres import PostgresServer

        server = PostgresServer().start()
        try:
            url = str(server.create_database())
            result = asyncio.run(run(url, args.rows, args.batch))
        finally:
            server.stop()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = asyncio.run(run(f"sqlite:///{tmp}/purge.db", args.rows, args.batch))
    kind = "PostgreSQL" if args.postgres else "SQLite (synchronous=FULL)"
    print(
        f"{kind}: {result['rows']:,} delivered rows erased in {result['seconds']:.1f} s = "
        f"{result['rows_per_second']:,.0f} rows/s; {result['batches']} batches of {args.batch}, "
        f"longest {result['longest_batch_ms']:.0f} ms"
    )


if __name__ == "__main__":
    main()
