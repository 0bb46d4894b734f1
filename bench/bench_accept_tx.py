"""CPU per accept, in process: ``adapter.delivery.intake.accept`` without HTTP, in µs.

Times the accept path alone (merge, validation, the ledger lookups, the insert, the
group-committed transaction) on a fresh SQLite file (WAL, ``synchronous=FULL``), a new
person per call, ``--concurrency`` calls in flight so commits are grouped as under load.
Reports wall µs per accept and the main thread's CPU µs per accept (``time.thread_time``:
the writer thread's fsync wait is not in it), the median of ``--rounds`` rounds. Steadier
than wrk on a shared machine, for comparing one change to the accept path with another.

    .venv/bin/python bench/bench_accept_tx.py [--count 3000] [--rounds 5] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from adapter.core.records import Submission
from adapter.delivery import intake
from adapter.ledger.schema import create_engine, migrate
from adapter.ledger.store import LedgerStore
from adapter.settings import Settings


def settings(database: str) -> Settings:
    return Settings(
        database_url=database,
        rocketchat_url="http://127.0.0.1:1",
        rocketchat_user_id="u",
        rocketchat_auth_token="t",
        fast_path_budget=0,
        inprocess_worker=False,
        sqlite_synchronous="FULL",
    )


async def run(count: int, rounds: int, concurrency: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-accept-tx-"))
    url = f"sqlite:///{folder / 'c.db'}"
    config = settings(url)
    engine = create_engine(url, sqlite_synchronous="FULL")
    await migrate(engine)
    store = LedgerStore(engine)
    run_id = uuid.uuid4().hex[:8]
    walls, cpus = [], []
    try:
        for round_ in range(rounds + 1):  # the first round warms up
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(count):
                queue.put_nowait(i)

            async def client(queue: asyncio.Queue[int] = queue, round_: int = round_) -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    email = f"g{run_id}-{round_}-{i}@example.com"
                    raw = {"name": f"Guest {i}", "email": email, "phone": "+14155552671"}
                    submission = Submission(source="api", fields=raw)
                    outcome = await intake.accept(
                        store, config, submission, {**raw, "custom_fields": {}}
                    )
                    assert outcome.status == "pending", outcome

            wall, cpu = time.perf_counter(), time.thread_time()
            await asyncio.gather(*(client() for _ in range(concurrency)))
            wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            if round_:
                walls.append(wall / count * 1e6)
                cpus.append(cpu / count * 1e6)
    finally:
        store.close()
        await engine.dispose()
    print(
        f"accept: {statistics.median(walls):.0f} µs wall ({min(walls):.0f}-{max(walls):.0f}), "
        f"{statistics.median(cpus):.0f} µs main-thread CPU ({min(cpus):.0f}-{max(cpus):.0f}) "
        f"per accept, {concurrency} in flight, {count} per round"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(run(args.count, args.rounds, args.concurrency))


if __name__ == "__main__":
    main()
