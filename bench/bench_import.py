"""Bulk import (issue #8): rows per second, as a ratio to the accept path's rate.

Three measurements in one run, each on its own fresh database of the same kind:

``accept``    ``POST /contacts`` with ``FAST_PATH_BUDGET=0`` and no worker (validate, one
              committed insert, 202) against the service under uvicorn in a subprocess, from
              an httpx client with ``--clients`` concurrent requests: contacts per second.
``import``    ``contact-adapter import`` (the library call the command makes, in this
              process) of a generated file of ``--rows`` rows: rows per second, for a file of
              only good rows and for a mixed one (20 % bad emails/phones/names, 10 % duplicates).
``one-by-one`` The same good rows through ``DeliveryQueue.submit(..., wait=0)`` one at a
              time (``--baseline-rows``): what batching (``submit_many``) buys.

    .venv/bin/python bench/bench_import.py [--database sqlite|postgres] [--rows 20000]
        [--accept 2000] [--clients 16] [--sync FULL|NORMAL]

The machine is shared and small: read the ratios, absolute numbers move with the load.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

API_TOKEN = "bench-api-token-0123456789"


def phone(i: int) -> str:
    area = (212, 415, 646, 303, 617, 312)[i % 6]
    return f"+1 {area} {200 + (i * 7) % 700:03d} {i % 10_000:04d}"


def write_file(path: Path, rows: int, *, mixed: bool, seed: int = 8) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Full Name", "Email", "Phone", "Company"])
        for i in range(rows):
            name, email, number = f"Lead {i} Person", f"lead{i}@example.com", phone(i)
            if mixed:
                roll = rng.random()
                if roll < 0.07:
                    email = f"lead{i}@"
                elif roll < 0.14:
                    number = "+1 555"
                elif roll < 0.20:
                    name = ""
                elif roll < 0.30 and i > 0:
                    j = rng.randrange(i)
                    name, email, number = f"Lead {j} Person", f"LEAD{j}@example.com", phone(j)
            writer.writerow([name, email, number, f"Co {i % 13}"])


# ------------------------------------------------------------------------------ databases


@contextmanager
def databases(kind: str) -> Iterator[Callable[[str], str]]:
    """A factory of fresh database URLs of ``kind``."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench-import-") as root:
            yield lambda name: f"sqlite:///{root}/{name}.db"
        return
    from tests.postgres import PostgresServer, available

    reason = available()
    if reason is not None:
        raise SystemExit(f"cannot start PostgreSQL: {reason}")
    server = PostgresServer().start()
    try:
        yield lambda name: str(server.create_database())
    finally:
        server.stop()


def settings_for(url: str, sync: str) -> Any:
    from adapter.settings import load_settings

    return load_settings(
        database_url=url,
        sqlite_synchronous=sync,
        rocketchat_url="http://127.0.0.1:9",
        fast_path_budget=0,
        inprocess_worker=False,
    )


# ------------------------------------------------------------------------------ accept path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure_accept(url: str, count: int, clients: int, sync: str) -> float:
    """Contacts per second through ``POST /contacts`` (202, no worker)."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "API_TOKEN": API_TOKEN,
        "FAST_PATH_BUDGET": "0",
        "INPROCESS_WORKER": "false",
        "ROCKETCHAT_URL": "http://127.0.0.1:9",
        "SQLITE_SYNCHRONOUS": sync,
        "LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "adapter.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the service did not start")
            time.sleep(0.1)

        async def run() -> float:
            headers = {"Authorization": f"Bearer {API_TOKEN}"}
            limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
            async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as http:
                for i in range(20):  # warm up (connections, first queries)
                    await http.post(
                        "/contacts",
                        json={"name": "Warm Up", "email": f"w{i}@example.org", "phone": phone(i)},
                    )
                numbers = iter(range(count))
                failures: list[int] = []

                async def client() -> None:
                    for i in numbers:
                        answer = await http.post(
                            "/contacts",
                            json={
                                "name": f"Lead {i} Person",
                                "email": f"lead{i}@example.com",
                                "phone": phone(i),
                            },
                        )
                        if answer.status_code != 202:
                            failures.append(answer.status_code)

                started = time.perf_counter()
                await asyncio.gather(*(client() for _ in range(clients)))
                took = time.perf_counter() - started
                if failures:
                    raise SystemExit(f"accept path answered {failures[:5]}…")
                return count / took

        return asyncio.run(run())
    finally:
        server.terminate()
        server.wait(30)


# ------------------------------------------------------------------------------ import


def measure_import(url: str, path: Path, sync: str) -> tuple[float, str]:
    from adapter.ops.importer import run_import
    from adapter.ops.runtime import open_runtime

    settings = settings_for(url, sync)

    async def migrate() -> None:  # an import never creates the schema (not timed)
        async with open_runtime(settings):
            pass

    asyncio.run(migrate())
    report = run_import(path, settings)
    return report.rate, report.summary()


def measure_one_by_one(url: str, rows: int, sync: str) -> float:
    """Good rows through ``submit(wait=0)`` one at a time: the path without batching."""
    from adapter.core.records import Submission
    from adapter.ops.runtime import open_runtime

    settings = settings_for(url, sync)  # its engine: SQLITE_SYNCHRONOUS=sync

    async def run() -> float:
        async with open_runtime(settings) as runtime:
            started = time.perf_counter()
            for i in range(rows):
                fields = {"name": f"Lead {i} Person", "email": f"lead{i}@example.com"}
                await runtime.queue.submit(
                    Submission(
                        source="import:baseline",
                        fields={**fields, "phone": phone(i)},
                        event_id=f"row-{i}",
                    ),
                    wait=0,
                )
            return rows / (time.perf_counter() - started)

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--accept", type=int, default=2_000, help="contacts for the accept path")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--baseline-rows", type=int, default=1_000)
    parser.add_argument("--sync", choices=["FULL", "NORMAL"], default="FULL")
    args = parser.parse_args()

    with databases(args.database) as fresh, tempfile.TemporaryDirectory() as work:
        good, mixed = Path(work) / "good.csv", Path(work) / "mixed.csv"
        write_file(good, args.rows, mixed=False)
        write_file(mixed, args.rows, mixed=True)
        accept = measure_accept(fresh("accept"), args.accept, args.clients, args.sync)
        print(
            f"accept path  POST /contacts, FAST_PATH_BUDGET=0, {args.clients} clients: "
            f"{accept:8.0f} contacts/s",
            flush=True,
        )
        good_rate, good_summary = measure_import(fresh("good"), good, args.sync)
        print(f"import good  {good_summary}: {good_rate:8.0f} rows/s", flush=True)
        mixed_rate, mixed_summary = measure_import(fresh("mixed"), mixed, args.sync)
        print(f"import mixed {mixed_summary}: {mixed_rate:8.0f} rows/s", flush=True)
        one = measure_one_by_one(fresh("one"), args.baseline_rows, args.sync)
        print(f"submit() one row at a time: {one:8.0f} rows/s", flush=True)
    result = {
        "bench": "import",
        "database": args.database,
        "sqlite_synchronous": args.sync if args.database == "sqlite" else None,
        "accept_per_s": round(accept),
        "import_good_rows_per_s": round(good_rate),
        "import_mixed_rows_per_s": round(mixed_rate),
        "one_by_one_rows_per_s": round(one),
        "ratio_import_to_accept": round(good_rate / accept, 2),
        "ratio_mixed_import_to_accept": round(mixed_rate / accept, 2),
        "ratio_batched_to_one_by_one": round(good_rate / one, 2),
    }
    print(
        f"import ÷ accept path: {result['ratio_import_to_accept']}× (good rows), "
        f"{result['ratio_mixed_import_to_accept']}× (mixed); "
        f"batched ÷ one by one: {result['ratio_batched_to_one_by_one']}×"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
