"""Durable delivery (issue #4), measured as ratios to baselines run in the same session.

Four parts, each bounded to well under a minute (``--part`` picks one, default all):

``throughput``  A worker (``contact-adapter worker``, ROCKETCHAT_CONCURRENCY=8) drains a
                queue of contacts into the Rocket.Chat stand-in answering after 20 ms with
                its rate limiter off (as for a bot user). Compared with the physical limit
                (8 / 20 ms = 400/s), with wrk (8 keep-alive connections straight at the
                stand-in's contact route: the ideal client) and with a naive client (a new
                connection per contact, one at a time).
``ratelimit``   The same worker with a rate-limited user against a short window (10 calls per
                2 s instead of per minute) for ``--ratelimit-seconds``: calls made ÷ calls the
                limit allows over the same span, and how many 429s.
``accept``      ``POST /contacts`` with ``FAST_PATH_BUDGET=0`` (validate + one committed
                insert + 202; no worker) against a bare Starlette endpoint that parses the
                same JSON and answers 202, both under uvicorn subprocesses, at 1, 16 and 64
                concurrent clients, with wrk (Lua script, a new person per request) and an
                httpx client.
``rss``         The service's RSS while 10,000 contacts wait for an unreachable Rocket.Chat.

    .venv/bin/python bench/bench_delivery.py [--part all|throughput|ratelimit|accept|rss]
        [--database sqlite|postgres] [--sync FULL|NORMAL]

The machine is shared and small: the clients, the stand-in and the service compete for two
cores. Read the ratios; absolute numbers move with the load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
WRK = shutil.which("wrk")
BOT = ("botUserId1", "bot-token")
AGENT = ("agentUserId1", "agent-token")
API_TOKEN = "bench-api-token-0123456789"
CONTACT_ROUTE = "/api/v1/omnichannel/contact"
LATENCY = 0.02
CONCURRENCY = 8
WRK_TOTALS: list[int] = []  # 2xx answers of each wrk run


# ------------------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bare_app() -> Any:
    """The baseline: parse the same JSON, answer 202, store nothing."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def contacts(request: Request) -> Response:
        data = json.loads(await request.body())
        return JSONResponse(
            {"delivery_id": uuid.uuid4().hex, "status": "pending", "name": data.get("name")},
            status_code=202,
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/contacts", contacts, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


@contextmanager
def process(
    args: list[str], env: dict[str, str] | None = None, health: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        args,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if health:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{args[:3]} exited with {proc.returncode}")
                try:
                    if httpx.get(health, timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{args[:3]} did not start")
                time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def standin(*, rate_limit: int = 0, window_ms: int = 60_000, latency: float = 0.0) -> Iterator[str]:
    port = free_port()
    args = [
        sys.executable,
        str(ROOT / "tests" / "rocketchat_standin.py"),
        "--port",
        str(port),
        "--rate-limit",
        str(rate_limit),
        "--window-ms",
        str(window_ms),
        "--latency",
        str(latency),
    ]
    url = f"http://127.0.0.1:{port}"
    with process(args, health=url + "/_standin/state"):  # not recorded as a call
        yield url


def standin_state(url: str) -> dict[str, Any]:
    return dict(httpx.get(url + "/_standin/state", timeout=10).json())


def service_env(rocketchat_url: str, database_url: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ROCKETCHAT_", "DATABASE_", "API_", "ADMIN_"))
    }
    env.update(
        PYTHONUNBUFFERED="1",
        ROCKETCHAT_URL=rocketchat_url,
        ROCKETCHAT_USER_ID=BOT[0],
        ROCKETCHAT_AUTH_TOKEN=BOT[1],
        ROCKETCHAT_CONTACT_API="visitor",
        # One call per contact, as the physical limit counts them: the email lookup before a
        # new person's registration (on by default) is a second call, measured elsewhere.
        ROCKETCHAT_LOOKUP_NEW_CONTACTS="false",
        ROCKETCHAT_CONCURRENCY=str(CONCURRENCY),
        DATABASE_URL=database_url,
        API_TOKEN=API_TOKEN,
        LOG_LEVEL="WARNING",
        LOG_FORMAT="json",
    )
    env.update(extra)
    return env


def seed(database_url: str, count: int) -> None:
    """``count`` pending deliveries, inserted in one transaction (the bench's setup)."""
    from adapter.core.contact import Contact
    from adapter.core.records import PENDING, Submission, new_row
    from adapter.ledger.engine import create_engine
    from adapter.ledger.schema import deliveries, migrate
    from adapter.rocketchat.sansio import contact_token

    async def main() -> None:
        engine = create_engine(database_url)
        await migrate(engine)
        now = time.time()
        rows = []
        for i in range(count):
            email = f"bench{i}-{uuid.uuid4().hex[:6]}@example.com"
            contact = Contact(name=f"Guest {i}", email=email, phone="+14155552671")
            token = contact_token(email=email, phone=None, person_key=None)
            submission = Submission(source="api", fields={})
            rows.append(
                new_row(submission, uuid.uuid4().hex, PENDING, contact.as_dict(), token, now)
            )
        async with engine.begin() as conn:
            await conn.execute(deliveries.insert(), rows)
        await engine.dispose()

    asyncio.run(main())


# ------------------------------------------------------------------------------ wrk


POST_LUA = """
local counter = 0
local prefix = "x"
function setup(thread)
  thread:set("id", tostring(math.random(1, 1000000000)))
end
function init(args)
  prefix = id or tostring(math.random(1, 1000000000))
end
request = function()
  counter = counter + 1
  local body = string.format(BODY, prefix, counter, prefix, counter)
  return wrk.format("POST", PATH, HEADERS, body)
end
"""


def wrk(
    url: str,
    path: str,
    body_format: str,
    headers: dict[str, str],
    *,
    connections: int,
    seconds: int,
) -> float:
    """Requests per second wrk achieves (every request with a unique person)."""
    assert WRK is not None
    lua_headers = "{" + ", ".join(f'["{k}"] = "{v}"' for k, v in headers.items()) + "}"
    script = (
        POST_LUA.replace("BODY", json.dumps(body_format))
        .replace("PATH", json.dumps(path))
        .replace("HEADERS", lua_headers)
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        threads = 1 if connections == 1 else 2
        result = subprocess.run(
            [
                WRK,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{seconds}s",
                "--timeout",
                "10s",
                "-s",
                handle.name,
                url + path,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(handle.name)
    rate = 0.0
    for line in result.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            rate = float(line.split()[1])
        if "requests in" in line:
            WRK_TOTALS.append(int(line.split()[0]))
        if "Non-2xx" in line:
            print(f"      wrk: {line.strip()}")
            WRK_TOTALS[-1] -= int(line.split()[-1])
    return rate


# ------------------------------------------------------------------------------ parts


def part_throughput(database: str, count: int) -> None:
    print(
        f"\n[1] delivery throughput: stand-in answers after {LATENCY * 1000:.0f} ms, no rate "
        f"limit, concurrency {CONCURRENCY}"
    )
    limit = CONCURRENCY / LATENCY
    with standin(latency=LATENCY) as rc:
        headers = {"X-User-Id": BOT[0], "X-Auth-Token": BOT[1], "Content-Type": "application/json"}
        ideal = 0.0
        if WRK:
            body = '{"token":"wrk-%s-%d","name":"Guest","email":"w%s-%d@example.com"}'
            ideal = wrk(rc, CONTACT_ROUTE, body, headers, connections=CONCURRENCY, seconds=6)
        # The naive client: a new connection per contact, one after the other.
        started = time.perf_counter()
        naive_n = 60
        for i in range(naive_n):
            with httpx.Client(base_url=rc, headers=headers, timeout=10) as client:
                client.post(CONTACT_ROUTE, json={"token": f"naive-{i}", "name": "Guest"})
        naive = naive_n / (time.perf_counter() - started)
        client_only = asyncio.run(client_alone(rc, 1600))

        with database_url(database) as db:
            seed(db, count)
            before = standin_state(rc)["contact_posts"]
            env = service_env(rc, db)
            marks: list[tuple[float, int]] = []
            with process([str(BIN / "contact-adapter"), "worker"], env=env):
                deadline = time.monotonic() + 50
                while time.monotonic() < deadline:
                    done = standin_state(rc)["contact_posts"] - before
                    marks.append((time.perf_counter(), done))
                    if done >= count:
                        break
                    time.sleep(0.1)
            first = next((t, n) for t, n in marks if n >= count * 0.1)
            last = next(((t, n) for t, n in marks if n >= count * 0.9), marks[-1])
            ours = (last[1] - first[1]) / (last[0] - first[0])
            posts = standin_state(rc)["contact_posts"] - before
    print(f"    ours ({database}): {ours:7.1f}/s  ({posts} of {count} delivered)")
    print(f"    physical limit:  {limit:7.1f}/s  → ours {ours / limit:6.1%}")
    if ideal:
        print(f"    wrk -c{CONCURRENCY}:         {ideal:7.1f}/s  → ours {ours / ideal:6.1%}")
    print(f"    our client only: {client_only:7.1f}/s  → ours {ours / client_only:6.1%}")
    print("      (RocketChatClient.register, 8 at a time, no database: the HTTP client's own cost)")
    print(f"    naive client:    {naive:7.1f}/s  → ours {ours / naive:5.1f}×")


async def client_alone(url: str, count: int) -> float:
    from adapter.core.contact import Contact
    from adapter.rocketchat.client import RocketChatClient
    from adapter.rocketchat.sansio import Registration

    client = RocketChatClient(
        url,
        BOT[0],
        BOT[1],
        contact_api="visitor",
        concurrency=CONCURRENCY,
        lookup_new_contacts=False,
    )
    prefix = uuid.uuid4().hex[:8]

    async def one_lane(lane: int) -> None:
        for i in range(lane, count, CONCURRENCY):
            contact = Contact(name="Guest", email=f"c{prefix}-{i}@example.com")
            await client.register(Registration(token=f"c-{prefix}-{i}", contact=contact))

    started = time.perf_counter()
    await asyncio.gather(*(one_lane(lane) for lane in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    await client.aclose()
    return count / elapsed


def part_ratelimit(database: str, seconds: float, window_ms: int = 2000) -> None:
    calls = 10
    shortened = "" if window_ms == 60_000 else " (the default 10/min, shortened)"
    print(
        f"\n[2] against the rate limit: {calls} calls per {window_ms / 1000:g} s"
        f"{shortened}, for {seconds:g} s"
    )
    with standin(rate_limit=calls, window_ms=window_ms) as rc, database_url(database) as db:
        seed(db, 400)
        env = service_env(rc, db, ROCKETCHAT_USER_ID=AGENT[0], ROCKETCHAT_AUTH_TOKEN=AGENT[1])
        with process([str(BIN / "contact-adapter"), "worker"], env=env):
            deadline = time.monotonic() + 30
            while standin_state(rc)["calls"] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            started = time.perf_counter()
            time.sleep(seconds)
            state = standin_state(rc)
            elapsed = time.perf_counter() - started
    registered = state["contact_posts"]
    made = state["calls"]  # contact registrations only (legacy route, no /me needed)
    rejected = made - registered
    allowed = calls * (int(elapsed * 1000) // window_ms + 1)
    print(f"    calls made {made}, registered {registered}, 429s {rejected}")
    print(f"    allowed over {elapsed:.1f} s: {allowed} → made/allowed {made / allowed:6.1%}")


def part_accept(database: str, seconds: int, sync: str) -> None:
    print(
        f"\n[3] accept cost: POST /contacts (FAST_PATH_BUDGET=0, SQLITE_SYNCHRONOUS={sync}, "
        "no worker) vs a bare Starlette endpoint, both under uvicorn"
    )
    body = '{"name":"Guest","email":"g%s-%d@example.com","phone":"+14155552671","x":"%s-%d"}'
    headers = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"}
    results: dict[str, dict[str, float]] = {}
    with database_url(database) as db:
        env = service_env(
            "http://127.0.0.1:9",
            db,
            FAST_PATH_BUDGET="0",
            INPROCESS_WORKER="false",
            SQLITE_SYNCHRONOUS=sync,
        )
        port = free_port()
        serve = [str(BIN / "contact-adapter"), "serve", "--port", str(port)]
        bare_port = free_port()
        bare = [sys.executable, __file__, "--serve-bare", str(bare_port)]
        with (
            process(serve, env=env, health=f"http://127.0.0.1:{port}/healthz"),
            process(bare, health=f"http://127.0.0.1:{bare_port}/healthz"),
        ):
            for name, target in (
                ("service", f"http://127.0.0.1:{port}"),
                ("bare", f"http://127.0.0.1:{bare_port}"),
            ):
                for clients in (1, 16, 64):
                    if WRK:
                        rate = wrk(
                            target, "/contacts", body, headers, connections=clients, seconds=seconds
                        )
                        results.setdefault(f"wrk c={clients}", {})[name] = rate
                    rate = asyncio.run(httpx_load(target, clients, seconds / 2))
                    results.setdefault(f"httpx c={clients}", {})[name] = rate
    for key, pair in results.items():
        ratio = pair["service"] / pair["bare"] if pair.get("bare") else 0.0
        print(
            f"    {key:<12} service {pair['service']:8.1f}/s   bare {pair['bare']:8.1f}/s"
            f"   → {ratio:6.1%}"
        )


async def httpx_load(url: str, clients: int, seconds: float) -> float:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    done = 0
    stop = time.perf_counter() + seconds
    prefix = uuid.uuid4().hex[:8]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as http:

        async def client(n: int) -> None:
            nonlocal done
            i = 0
            while time.perf_counter() < stop:
                i += 1
                body = {
                    "name": "Guest",
                    "email": f"h{prefix}-{n}-{i}@example.com",
                    "phone": "+14155552671",
                }
                answer = await http.post("/contacts", json=body)
                if answer.status_code == 202:
                    done += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(n) for n in range(clients)))
        return done / (time.perf_counter() - started)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def part_rss(database: str, count: int) -> None:
    print(
        f"\n[4] memory: {count} contacts wait for an unreachable Rocket.Chat "
        "(connection refused; in-process worker on, FAST_PATH_BUDGET=0)"
    )
    with database_url(database) as db:
        env = service_env("http://127.0.0.1:9", db, FAST_PATH_BUDGET="0")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        serve = [str(BIN / "contact-adapter"), "serve", "--port", str(port)]
        with process(serve, env=env, health=url + "/healthz") as proc:
            samples: list[tuple[int, int]] = [(0, rss_kib(proc.pid))]
            started = time.perf_counter()
            if WRK:
                # wrk in 2-second runs (a new person per request) until enough are accepted.
                body = '{"name":"Guest","email":"r%s-%d@example.com","phone":"+14155552671","x":"%s-%d"}'
                headers = {
                    "Authorization": f"Bearer {API_TOKEN}",
                    "Content-Type": "application/json",
                }
                accepted = 0
                while accepted < count:
                    WRK_TOTALS.clear()
                    wrk(url, "/contacts", body, headers, connections=16, seconds=2)
                    accepted += sum(WRK_TOTALS)
                    samples.append((accepted, rss_kib(proc.pid)))
            else:
                accepted = asyncio.run(httpx_rss_load(url, count, proc.pid, samples))
            elapsed = time.perf_counter() - started
            for _ in range(10):  # the worker keeps probing Rocket.Chat meanwhile
                time.sleep(0.5)
                samples.append((accepted, rss_kib(proc.pid)))
            health = httpx.get(url + "/healthz").status_code
    base = next(kib for n, kib in samples if n >= min(1000, accepted))
    peak = max(kib for n, kib in samples if n >= min(1000, accepted))
    end = samples[-1][1]
    print(f"    accepted {accepted} in {elapsed:.1f} s (healthz {health})")
    print(
        f"    RSS KiB: before {samples[0][1]}, after ~1,000 {base}, peak {peak}, "
        f"5 s after the last {end}"
    )
    print(f"    growth from ~1,000 to {accepted:,} waiting: {(peak - base) / base:+.1%}")
    step = max(len(samples) // 8, 1)
    trace = ", ".join(f"{n}:{kib / 1024:.0f}M" for n, kib in samples[::step])
    print(f"    trace (contacts accepted:RSS) {trace}")


async def httpx_rss_load(url: str, count: int, pid: int, samples: list[tuple[int, int]]) -> int:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as http:

        async def one(i: int) -> None:
            body = {"name": f"Guest {i}", "email": f"rss{i}@example.com", "phone": "+14155552671"}
            answer = await http.post("/contacts", json=body)
            assert answer.status_code == 202, answer.text

        for start in range(0, count, 500):
            await asyncio.gather(*(one(i) for i in range(start, start + 500)))
            samples.append((start + 500, rss_kib(pid)))
    return count


# ------------------------------------------------------------------------------ databases


@contextmanager
def database_url(kind: str) -> Iterator[str]:
    if kind == "postgres":
        from tests.postgres import PostgresServer, available

        reason = available()
        if reason:
            raise SystemExit(f"postgres: {reason}")
        server = PostgresServer().start()
        try:
            yield server.create_database()
        finally:
            server.stop()
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-delivery-"))
    try:
        yield f"sqlite:///{folder / 'contacts.db'}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--part", default="all")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--sync", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--count", type=int, default=4000, help="contacts for [1]")
    parser.add_argument("--ratelimit-seconds", type=float, default=30.0)
    parser.add_argument(
        "--ratelimit-window-ms",
        type=int,
        default=2000,
        help="the limiter's window (60000 is Rocket.Chat's default; try --ratelimit-seconds 300)",
    )
    parser.add_argument("--accept-seconds", type=int, default=4)
    parser.add_argument("--rss-count", type=int, default=10_000)
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        import uvicorn

        uvicorn.run(
            bare_app(), host="127.0.0.1", port=args.serve_bare, log_config=None, access_log=False
        )
        return
    parts = (
        args.part.split(",") if args.part != "all" else ["throughput", "ratelimit", "accept", "rss"]
    )
    os.environ.setdefault("SQLITE_SYNCHRONOUS", args.sync)
    print(f"bench_delivery: database {args.database}, wrk {'yes' if WRK else 'no'}")
    for part in parts:
        started = time.perf_counter()
        if part == "throughput":
            part_throughput(args.database, args.count)
        elif part == "ratelimit":
            part_ratelimit(args.database, args.ratelimit_seconds, args.ratelimit_window_ms)
        elif part == "accept":
            part_accept(args.database, args.accept_seconds, args.sync)
        elif part == "rss":
            part_rss(args.database, args.rss_count)
        else:
            raise SystemExit(f"unknown part {part!r}")
        print(f"    ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
