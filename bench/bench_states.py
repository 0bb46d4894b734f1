"""Delivery in the states users meet, as ratios to baselines run in the same session.

Drives the service from outside only (``contact-adapter serve|worker`` subprocesses with
settings in the environment, HTTP, the Rocket.Chat stand-in's ``/_standin/*`` routes, and
plain SQL on the database), so it keeps working while the ``adapter`` package moves around.
Everything listens on 127.0.0.1. Three parts (``--part``, comma-separated, default all),
each bounded in time:

``drain``   A ``contact-adapter worker`` (ROCKETCHAT_CONCURRENCY=8) drains 1,000 contacts
            queued through ``POST /contacts`` into the stand-in answering in 20 ms, from
            three starting states: (a) steady: stand-in up, no rate limit; (b) after an
            outage: the worker runs ~20 s against a closed port (connection refused), then
            the stand-in starts on it; (c) after a rate-limited period: 10 calls per 2 s
            window for a couple of windows, then the limiter is switched off at run time
            (answers lose their ``X-RateLimit-*`` headers, as for a user granted the bot
            role). Per state: contacts/s (10-90 % delivered, and from the state change),
            the most calls in flight at the stand-in at once (must never exceed 8) and
            whether every contact was registered exactly once. Baseline: ``wrk -c8 -t2``
            POSTing valid registrations straight at a stand-in of its own, for as long as
            the steady drain took.
``idle``    Idle cost with Rocket.Chat refusing connections and 0 (baseline), 1, 3 and 100
            contacts waiting (the four processes of a mode side by side, each on its own
            database; the window starts ``--idle-warmup`` s after the last of them opened its
            database): CPU of the service process (``serve`` with its in-process worker, and
            ``worker`` alone) as % of one core from ``/proc/<pid>/stat``, and
            transactions per second per worker (PostgreSQL: ``pg_stat_database`` deltas, read
            from another database so the readings add none; SQLite: the write transactions,
            each of which takes the WAL write lock, an fcntl that strace logs with timestamps
            while seccomp-bpf lets every other syscall run untraced). Goal: < 1 % of a core
            and <= 1 claim transaction per second per worker.
``accept``  ``POST /contacts`` (FAST_PATH_BUDGET=0, no worker, SQLITE_SYNCHRONOUS=FULL) against
            ``bench/accept_reference.py`` (the same checks, one group-committed SQLite insert,
            202) at 1, 16 and 64 wrk connections, a new person per request.

    .venv/bin/python bench/bench_states.py [--part drain,idle,accept] [--database sqlite|postgres]
        [--idle-seconds 60] [--idle-mode both|serve|worker] [--accept-back-to-back]

The machine is small and shared: the clients, the stand-in, PostgreSQL and the service
compete for the same cores. Read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ADAPTER = str(BIN / "contact-adapter")
WRK = shutil.which("wrk")
STRACE = shutil.which("strace")
BOT = ("botUserId1", "bot-token")
AGENT = ("agentUserId1", "agent-token")  # rate-limited (no api-bypass-rate-limit)
API_TOKEN = "bench-api-token-0123456789"
CONTACT_ROUTE = "/api/v1/omnichannel/contact"
LATENCY = 0.02
CONCURRENCY = 8
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOGS = Path(tempfile.mkdtemp(prefix="bench-states-"))
POLL = 0.05


# ------------------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port() -> str:
    """A loopback URL nobody listens on: connections are refused at once."""
    return f"http://127.0.0.1:{free_port()}"


def wait_until(
    ready: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes] | None
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} (logs in {LOGS})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready within {timeout:g} s (logs in {LOGS})")
        time.sleep(0.005)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def process(
    args: list[str], name: str, env: dict[str, str] | None = None, health: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    log = open(LOGS / f"{name}.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        if health:
            wait_until(lambda: answers(health), 30, name, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def stop_together(stack: ExitStack, pids: list[int]) -> None:
    """On leaving ``stack``, SIGTERM every one of ``pids`` at once and wait until each is
    gone (before each ``process()`` exit waits for its own), so their shutdowns overlap.
    ``pids`` are the services' own: under strace, strace's children (a SIGTERM to strace
    would only detach it)."""

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        stat = Path(f"/proc/{pid}/stat")
        return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"

    def stop() -> None:
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while any(alive(pid) for pid in pids):
            if time.monotonic() > deadline:
                for pid in pids:
                    if alive(pid):
                        os.kill(pid, signal.SIGKILL)
                break
            time.sleep(POLL)

    stack.callback(stop)


def standin_args(port: int, *, rate_limit: int = 0, window_ms: int = 60_000) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "tests" / "rocketchat_standin.py"),
        "--port",
        str(port),
        "--rate-limit",
        str(rate_limit),
        "--window-ms",
        str(window_ms),
        "--latency",
        str(LATENCY),
    ]


def state(url: str) -> dict[str, Any]:
    return dict(httpx.get(url + "/_standin/state", timeout=10).json())


def control(url: str, **payload: Any) -> dict[str, Any]:
    return dict(httpx.post(url + "/_standin/control", json=payload, timeout=10).json())


def service_env(rocketchat_url: str, database_url: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ROCKETCHAT_", "DATABASE_", "API_", "ADMIN_", "SQLITE_"))
    }
    env.update(
        PYTHONUNBUFFERED="1",
        ROCKETCHAT_URL=rocketchat_url,
        ROCKETCHAT_USER_ID=BOT[0],
        ROCKETCHAT_AUTH_TOKEN=BOT[1],
        ROCKETCHAT_CONTACT_API="visitor",
        # One call per contact (the email lookup before a new person's registration would
        # be a second one).
        ROCKETCHAT_LOOKUP_NEW_CONTACTS="false",
        ROCKETCHAT_CONCURRENCY=str(CONCURRENCY),
        DATABASE_URL=database_url,
        API_TOKEN=API_TOKEN,
        LOG_LEVEL="WARNING",
        LOG_FORMAT="json",
    )
    env.update(extra)
    return env


def post_contacts(url: str, count: int, prefix: str) -> None:
    """``count`` new people through ``POST /contacts`` (16 at a time); each must get 202."""

    async def main() -> None:
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(
            base_url=url, headers=headers, limits=limits, timeout=30
        ) as http:
            sem = asyncio.Semaphore(16)

            async def one(i: int) -> None:
                body = {
                    "name": f"Guest {i}",
                    "email": f"{prefix}-{i}@example.com",
                    "phone": "+14155552671",
                }
                async with sem:
                    answer = await http.post("/contacts", json=body)
                if answer.status_code != 202:
                    raise RuntimeError(f"POST /contacts: {answer.status_code} {answer.text}")

            await asyncio.gather(*(one(i) for i in range(count)))

    asyncio.run(main())


def queue_contacts(jobs: list[tuple[str, int, str]]) -> None:
    """For each ``(database_url, count, name)``: queue ``count`` contacts on a ``serve`` that
    only queues (FAST_PATH_BUDGET=0, no in-process worker, Rocket.Chat at a closed port),
    all started side by side, then stop them."""
    with ExitStack() as stack:
        urls = []
        for database_url, _, name in jobs:
            port = free_port()
            env = service_env(
                closed_port(), database_url, FAST_PATH_BUDGET="0", INPROCESS_WORKER="false"
            )
            args = [ADAPTER, "serve", "--port", str(port)]
            url = f"http://127.0.0.1:{port}"
            proc = stack.enter_context(process(args, f"{name}-queue", env=env))
            urls.append((url, proc))
        stop_together(stack, [proc.pid for _, proc in urls])
        for (url, proc), (_, count, name) in zip(urls, jobs, strict=True):
            wait_until(lambda url=url: answers(url + "/healthz"), 30, name, proc)
            if count:
                post_contacts(url, count, f"{name}-{uuid.uuid4().hex[:6]}")


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


@dataclass
class WrkResult:
    rate: float  # requests per second (all answers)
    requests: int
    non_2xx: int = 0
    errors: str = ""


def wrk(
    url: str,
    path: str,
    body_format: str,
    headers: dict[str, str],
    *,
    connections: int,
    seconds: int,
) -> WrkResult:
    """wrk with a Lua script: every request a new person (``%s-%d`` is unique per request)."""
    assert WRK is not None
    lua_headers = "{" + ", ".join(f'["{k}"] = "{v}"' for k, v in headers.items()) + "}"
    script = (
        POST_LUA.replace("BODY", json.dumps(body_format))
        .replace("PATH", json.dumps(path))
        .replace("HEADERS", lua_headers)
    )
    script_path = LOGS / f"wrk-{uuid.uuid4().hex[:6]}.lua"
    script_path.write_text(script)
    threads = 1 if connections == 1 else 2
    out = subprocess.run(
        [
            *(WRK, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"),
            *("-s", str(script_path), url + path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = WrkResult(rate=0.0, requests=0)
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Requests/sec:"):
            result.rate = float(line.split()[1])
        elif "requests in" in line:
            result.requests = int(line.split()[0])
        elif line.startswith("Non-2xx"):
            result.non_2xx = int(line.split()[-1])
        elif line.startswith("Socket errors"):
            result.errors = line
    return result


# ------------------------------------------------------------------------------ databases


class Databases:
    """Fresh databases for the service: SQLite files, or a throw-away PostgreSQL server."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.folder = Path(tempfile.mkdtemp(prefix="bench-states-db-"))
        self.server: Any = None
        if kind == "postgres":
            sys.path.insert(0, str(ROOT))
            from tests.postgres import PostgresServer, available

            reason = available()
            if reason:
                raise SystemExit(f"postgres: {reason}")
            self.server = PostgresServer().start()

    def new(self, name: str) -> str:
        if self.server is not None:
            return str(self.server.create_database())
        return f"sqlite:///{self.folder / (name + '.db')}"

    def scalar(self, url: str, sql: str) -> float:
        """One number from the service's database (after a measuring window: it is a
        transaction of its own there)."""
        if self.server is not None:
            return float(self.server.query(sql, url.rsplit("/", 1)[1]) or 0)
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return float(conn.execute(sql).fetchone()[0] or 0)

    def transactions(self, urls: list[str]) -> dict[str, tuple[int, int]]:
        """PostgreSQL: (committed, rolled back) transactions per database, read from the
        ``postgres`` database (shared catalog), so the reading adds none to theirs."""
        names = {url.rsplit("/", 1)[1]: url for url in urls}
        quoted = ",".join(f"'{n}'" for n in names)
        out = self.server.query(
            "SELECT datname, xact_commit, xact_rollback FROM pg_stat_database "
            f"WHERE datname IN ({quoted})",
            "postgres",
        )
        rows = [line.split("|") for line in out.splitlines()]
        return {names[n]: (int(c), int(r)) for n, c, r in rows}

    def connected(self, url: str, pid: int) -> bool:
        """Has process ``pid`` opened this database yet (its start-up, imports included, is
        over)? SQLite: one of its descriptors is the file; PostgreSQL: a backend serves it."""
        if self.server is not None:
            name = url.rsplit("/", 1)[1]
            sql = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'"
            return int(self.server.query(sql, "postgres") or 0) > 0
        path = url.removeprefix("sqlite:///")
        try:
            return any(os.readlink(fd) == path for fd in Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            return False

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


# ------------------------------------------------------------------------------ part: drain


@dataclass
class Drain:
    name: str
    marks: list[tuple[float, int]] = field(default_factory=list)  # (time.time(), delivered)
    change: tuple[float, int] | None = None  # state change: (when, delivered by then)
    note: str = ""
    final: dict[str, Any] = field(default_factory=dict)
    max_in_flight_after: int = 0  # since the state change
    max_in_flight: int = 0  # over the whole run
    timed_out: bool = False

    def first(self, count: float) -> tuple[float, int] | None:
        return next((m for m in self.marks if m[1] >= count), None)

    def rate(self, start: tuple[float, int] | None, end: tuple[float, int] | None) -> float:
        end = end or (self.marks[-1] if self.marks else None)
        if start is None or end is None or end[0] <= start[0]:
            return 0.0
        return (end[1] - start[1]) / (end[0] - start[0])

    def rates(self, total: int) -> tuple[float, float]:
        """(10-90 % of what was left at the change, from the change to 90 %)."""
        at, done = self.change or (0.0, 0)
        rest = total - done
        middle = self.rate(self.first(done + 0.1 * rest), self.first(done + 0.9 * rest))
        since = self.rate((at, done), self.first(done + 0.9 * rest)) if self.change else 0.0
        return middle, since


def watch(url: str, drain: Drain, until: int, deadline: float) -> None:
    """Sample the stand-in's registrations until ``until`` or the deadline (monotonic)."""
    while True:
        posts = state(url)["contact_posts"]
        drain.marks.append((time.time(), posts))
        if posts >= until:
            return
        if time.monotonic() > deadline:
            drain.timed_out = True
            return
        time.sleep(POLL)


def settle(url: str, drain: Drain, total: int) -> None:
    """After the last registration, a second more for any duplicate, then the final state."""
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        time.sleep(POLL)
    drain.final = state(url)
    if not drain.max_in_flight_after:
        drain.max_in_flight_after = drain.final["max_in_flight"]
    drain.max_in_flight = max(drain.max_in_flight, drain.final["max_in_flight"])


def drain_steady(databases: Databases, count: int, deadline_s: float) -> Drain:
    drain = Drain("a. steady")
    db = databases.new("steady")
    queue_contacts([(db, count, "steady")])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process(standin_args(port), "steady-standin", health=url + "/_standin/state"):
        env = service_env(url, db)
        with process([ADAPTER, "worker"], "steady-worker", env=env):
            drain.change = (time.time(), 0)
            watch(url, drain, count, time.monotonic() + deadline_s)
            settle(url, drain, count)
    drain.note = f"rate between 10 % and 90 % of {count} registered"
    return drain


def drain_outage(databases: Databases, count: int, deadline_s: float, down_s: float) -> Drain:
    drain = Drain("b. after outage")
    db = databases.new("outage")
    queue_contacts([(db, count, "outage")])
    port = free_port()  # reserved: nothing listens on it until the stand-in starts
    url = f"http://127.0.0.1:{port}"
    env = service_env(url, db)
    with process([ADAPTER, "worker"], "outage-worker", env=env) as worker:
        end = time.monotonic() + down_s
        while time.monotonic() < end:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.returncode} (logs in {LOGS})")
            time.sleep(POLL)
        with process(standin_args(port), "outage-standin") as standin:
            wait_until(lambda: answers(url + "/_standin/state"), 30, "stand-in", standin)
            polled_up = time.time()
            first = state(url)
            # Up no later than our first answer, or the worker's first call if that came sooner.
            up = min(polled_up, first["first_call_at"] or polled_up)
            drain.change = (up, 0)
            watch(url, drain, count, time.monotonic() + deadline_s)
            settle(url, drain, count)
    first_post = drain.final.get("first_contact_post_at")
    first_call = drain.final.get("first_call_at")
    drain.note = (
        f"stand-in up → first call {first_call - up:.2f} s, first registration "
        f"{first_post - up:.2f} s"
        if first_post and first_call
        else "no registration after the stand-in came up"
    )
    return drain


def drain_ratelimited(
    databases: Databases, count: int, deadline_s: float, windows: int, window_ms: int
) -> Drain:
    drain = Drain("c. after rate limit")
    db = databases.new("ratelimited")
    queue_contacts([(db, count, "ratelimited")])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    limit = 10
    args = standin_args(port, rate_limit=limit, window_ms=window_ms)
    with process(args, "ratelimit-standin", health=url + "/_standin/state"):
        # The agent user is rate-limited (the bot user bypasses the limiter).
        env = service_env(url, db, ROCKETCHAT_USER_ID=AGENT[0], ROCKETCHAT_AUTH_TOKEN=AGENT[1])
        with process([ADAPTER, "worker"], "ratelimit-worker", env=env):
            # Through `windows` full windows: more than windows × limit registered.
            limited_deadline = time.monotonic() + windows * window_ms / 1000 + 20
            watch(url, drain, windows * limit + 1, limited_deadline)
            limited = state(url)
            drain.max_in_flight = limited["max_in_flight"]
            before = time.time()
            after = control(url, rate_limit=0, reset_max_in_flight=True)
            drain.change = ((before + time.time()) / 2, after["contact_posts"])
            watch(url, drain, count, time.monotonic() + deadline_s)
            drain.max_in_flight_after = state(url)["max_in_flight"]
            settle(url, drain, count)
    drain.note = (
        f"limiter off after {limited['contact_posts']} registered "
        f"(max {limited['max_in_flight']} in flight while limited)"
    )
    return drain


def wrk_baseline(seconds: int) -> tuple[WrkResult, dict[str, Any]]:
    """wrk -c8 -t2 POSTing valid registrations (a new token and email each) with the bot's
    credentials straight at a stand-in of its own (20 ms, limiter off)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process(standin_args(port), "wrk-standin", health=url + "/_standin/state"):
        body = '{"token":"wrk-%s-%d","name":"Guest","email":"w%s-%d@example.com"}'
        headers = {"X-User-Id": BOT[0], "X-Auth-Token": BOT[1], "Content-Type": "application/json"}
        result = wrk(url, CONTACT_ROUTE, body, headers, connections=CONCURRENCY, seconds=seconds)
        return result, state(url)


def part_drain(database: str, count: int, deadline_s: float, down_s: float) -> None:
    print(
        f"\n[drain] a worker (concurrency {CONCURRENCY}) drains {count} queued contacts into "
        f"the stand-in answering in {LATENCY * 1000:.0f} ms ({database}); each state is followed "
        "by its wrk baseline"
    )
    if not WRK:
        print("    (no wrk: run `bash tests/system-deps.sh wrk` for the baselines)")
    databases = Databases(database)
    baselines: list[WrkResult] = []
    drains: list[Drain] = []
    seconds = 0
    try:
        for run in (
            lambda: drain_steady(databases, count, deadline_s),
            lambda: drain_outage(databases, count, deadline_s, down_s),
            lambda: drain_ratelimited(databases, count, deadline_s, 2, 2000),
        ):
            drains.append(run())
            if not seconds:
                # The baselines last as long as the steady drain took, from its first
                # registration to its last (3 to 6 s: ~4 s on an idle machine).
                steady = drains[0]
                started = next((t for t, n in steady.marks if n > 0), steady.marks[0][0])
                seconds = min(6, max(3, round(steady.marks[-1][0] - started)))
            if WRK:
                result, after = wrk_baseline(seconds)
                baselines.append(result)
                print(
                    f"    wrk -c{CONCURRENCY} -t2 for {seconds} s after {drains[-1].name}: "
                    f"{result.rate:.1f}/s ({after['contact_posts']} registered, max "
                    f"{after['max_in_flight']} in flight"
                    + (f", {result.non_2xx} non-2xx" if result.non_2xx else "")
                    + ")"
                )
            else:
                baselines.append(WrkResult(0.0, 0))
    finally:
        databases.close()

    print(
        f"    {'state':<20} {'10-90 %/s':>9} {'÷ wrk':>6} {'change→90 %/s':>13} {'÷ wrk':>6}"
        f" {'max in flight':>13} {'after':>5} {'registered once':>16}"
    )
    for drain, ideal in zip(drains, baselines, strict=True):

        def pct(rate: float, ideal: WrkResult = ideal) -> str:
            return f"{rate / ideal.rate:6.1%}" if ideal.rate else "     -"

        middle, since = drain.rates(count)
        final = drain.final
        once = (
            final.get("contact_posts") == count
            and final.get("contact_tokens") == count
            and final.get("max_posts_per_token") == 1
        )
        registered = (
            f"{'yes' if once else 'NO'} {final.get('contact_tokens', 0)}/{count}"
            f" max×{final.get('max_posts_per_token', 0)}"
        )
        steady = drain.name.startswith("a")
        since_text = f"{'(=10-90 %)':>13}" if steady else f"{since:13.1f}"
        print(
            f"    {drain.name:<20} {middle:9.1f} {pct(middle)} {since_text}"
            f" {'     -' if steady else pct(since)}"
            f" {drain.max_in_flight:13d} {drain.max_in_flight_after:5d}"
            f" {registered:>16}" + ("  TIMED OUT" if drain.timed_out else "")
        )
    for drain in drains:
        print(f"      {drain.name}: {drain.note}")
    print(
        "      10-90 %: between 10 % and 90 % of what was left at the state change registered;"
        " change→90 %: from the change (stand-in up, limiter off) to 90 %; ÷ wrk: of the wrk"
        " run right after that state; 'after': max in flight after the change"
    )


# ------------------------------------------------------------------------------ part: idle


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` (``/proc/<pid>/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# SQLite in WAL mode takes the write lock (byte 120 of the ``-shm`` file, an fcntl F_WRLCK)
# at each ``BEGIN IMMEDIATE``: every write transaction, empty or not, the claim's included.
WRITE_LOCK = re.compile(
    r"^\d+\s+(\d+\.\d+) fcntl\(\d+, F_SETLKW?, \{l_type=F_WRLCK, l_whence=SEEK_SET, "
    r"l_start=120, l_len=1\}\) = 0",
    re.MULTILINE,
)


def traced(args: list[str], name: str) -> tuple[list[str], Path | None]:
    """On SQLite, run the service under strace, stopping only at fcntl (seccomp-bpf: every
    other syscall runs untraced), with timestamps; without strace, as it is."""
    if not STRACE:
        return args, None
    out = LOGS / f"{name}.strace"
    prefix = [STRACE, "-f", "--seccomp-bpf", "-qq", "-ttt", "-e", "trace=fcntl", "-o", str(out)]
    return [*prefix, *args], out


def traced_pid(proc: subprocess.Popen[bytes]) -> int:
    """The service's pid under strace: strace's child once it runs ``contact-adapter`` (strace
    may fork a short-lived child of its own first, to check that seccomp-bpf works)."""
    found: list[int] = []

    def running() -> bool:
        try:
            pids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            for pid in pids:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if not argv[0].endswith(b"strace") and any(b"contact-adapter" in a for a in argv):
                    found.append(int(pid))
                    return True
        except OSError:
            pass
        return False

    wait_until(running, 20, "the service under strace", proc)
    return found[0]


def write_transactions(trace: Path, t0: float, t1: float) -> int:
    text = trace.read_text() if trace.exists() else ""
    return sum(1 for m in WRITE_LOCK.finditer(text) if t0 <= float(m.group(1)) < t1)


@dataclass
class Idle:
    mode: str
    waiting: int
    database: str
    proc: subprocess.Popen[bytes] | None = None
    pid: int = 0  # the service's (proc's, or its child's under strace)
    trace: Path | None = None  # SQLite: the strace output
    cpu: float = 0.0  # fraction of one core over the window
    slices: list[float] = field(default_factory=list)  # the same per sixth of the window
    tx_per_s: float | None = None
    rollbacks_per_s: float | None = None  # PostgreSQL: the part of tx_per_s rolled back
    attempts_per_s: float = 0.0
    still_waiting: int = 0
    window: tuple[float, float] = (0.0, 0.0)  # time.time() at its start and end

    def launch(self, stack: ExitStack, args: list[str], env: dict[str, str]) -> None:
        name = f"idle-{self.mode}-{self.waiting}"
        if self.database.startswith("sqlite"):
            args, self.trace = traced(args, name)
        self.proc = stack.enter_context(process(args, name, env=env))
        self.pid = traced_pid(self.proc) if self.trace else self.proc.pid
        stop_together(stack, [self.pid])  # stopped even if a later launch fails


def start_idle(
    stack: ExitStack, databases: Databases, mode: str, counts: tuple[int, ...]
) -> list[Idle]:
    """One process per count, started side by side, with its contacts queued."""
    runs = [Idle(mode, n, databases.new(f"idle-{mode}-{n}")) for n in counts]
    if mode == "worker":
        queue_contacts([(run.database, run.waiting, f"idle-worker-{run.waiting}") for run in runs])
        for run in runs:
            run.launch(stack, [ADAPTER, "worker"], service_env(closed_port(), run.database))
        stop_together(stack, [run.pid for run in runs])
        return runs
    # serve: the default web process, its in-process worker delivering; it queues at once.
    urls = []
    for run in runs:
        port = free_port()
        env = service_env(closed_port(), run.database, FAST_PATH_BUDGET="0")
        run.launch(stack, [ADAPTER, "serve", "--port", str(port)], env)
        urls.append(f"http://127.0.0.1:{port}")
    stop_together(stack, [run.pid for run in runs])
    for run, url in zip(runs, urls, strict=True):
        wait_until(lambda url=url: answers(url + "/healthz"), 30, "serve", run.proc)
        if run.waiting:
            post_contacts(url, run.waiting, f"idle-serve-{run.waiting}-{uuid.uuid4().hex[:6]}")
    return runs


def measure_idle(databases: Databases, runs: list[Idle], seconds: float, warmup: float) -> None:
    procs = [run.proc for run in runs if run.proc is not None]
    for run in runs:  # the warm-up counts from the end of the slowest start-up
        wait_until(
            lambda run=run: databases.connected(run.database, run.pid), 60, run.mode, run.proc
        )
    warm_end = time.monotonic() + warmup
    while time.monotonic() < warm_end:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[:2]} exited (logs in {LOGS})")
        time.sleep(POLL)
    urls = [run.database for run in runs]
    postgres = databases.kind == "postgres"
    tx0 = databases.transactions(urls) if postgres else {}
    t0 = time.time()
    pids = [run.pid for run in runs]
    marks = [(time.monotonic(), {pid: cpu_seconds(pid) for pid in pids})]
    for i in range(1, 7):
        end = marks[0][0] + seconds * i / 6
        while time.monotonic() < end:
            time.sleep(min(0.5, max(end - time.monotonic(), 0.001)))
        marks.append((time.monotonic(), {pid: cpu_seconds(pid) for pid in pids}))
    t1 = time.time()
    tx1 = databases.transactions(urls) if postgres else {}
    span = marks[-1][0] - marks[0][0]
    for run in runs:
        pid = run.pid
        run.cpu = (marks[-1][1][pid] - marks[0][1][pid]) / span
        run.slices = [(b[1][pid] - a[1][pid]) / (b[0] - a[0]) for a, b in itertools.pairwise(marks)]
        if postgres:
            (c0, r0), (c1, r1) = tx0[run.database], tx1[run.database]
            run.tx_per_s = (c1 - c0 + r1 - r0) / (t1 - t0)
            run.rollbacks_per_s = (r1 - r0) / (t1 - t0)
        run.window = (t0, t1)  # SQLite: the trace is read once strace has exited
        # Read after the window (on PostgreSQL it is a transaction of its own there).
        made = databases.scalar(
            run.database,
            "SELECT count(*) FROM delivery_attempts "
            f"WHERE started_at >= {t0} AND started_at < {t1}",
        )
        run.attempts_per_s = made / (t1 - t0)
        run.still_waiting = int(
            databases.scalar(
                run.database,
                "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'delivering')",
            )
        )


def part_idle(database: str, seconds: float, warmup: float, modes: list[str]) -> None:
    counts = (0, 1, 3, 100)
    print(
        f"\n[idle] Rocket.Chat refusing connections, 0 (baseline) / 1 / 3 / 100 contacts "
        f"waiting; {warmup:g} s warm-up, {seconds:g} s window ({database}); the four "
        "processes of one mode run side by side"
    )
    databases = Databases(database)
    results: list[Idle] = []
    try:
        for mode in modes:
            with ExitStack() as stack:
                runs = start_idle(stack, databases, mode, counts)
                measure_idle(databases, runs, seconds, warmup)
                results.extend(runs)
            for run in runs:  # strace has flushed its output and exited with the service
                if run.trace is not None:
                    t0, t1 = run.window
                    run.tx_per_s = write_transactions(run.trace, t0, t1) / (t1 - t0)
    finally:
        databases.close()
    tx_label = "tx/s" if database == "postgres" else "write tx/s"
    print(
        f"    {'process':<8} {'waiting':>7} {'CPU % core':>10} {'sixths min-max':>15} "
        f"{tx_label:>10} {'(rollback)':>10} {'attempts/s':>10}  goal: CPU < 1 %, <= 1 tx/s"
    )
    for run in results:
        tx = f"{run.tx_per_s:10.2f}" if run.tx_per_s is not None else f"{'-':>10}"
        rb = f"{run.rollbacks_per_s:10.2f}" if run.rollbacks_per_s is not None else f"{'':>10}"
        cpu_ok = "met" if run.cpu < 0.01 else "MISSED"
        tx_ok = "-" if run.tx_per_s is None else "met" if run.tx_per_s <= 1.0 else "MISSED"
        spread = f"{min(run.slices):.1%}-{max(run.slices):.1%}"
        waiting = (
            f"  ({run.still_waiting} waiting at the end)"
            if run.still_waiting != run.waiting
            else ""
        )
        print(
            f"    {run.mode:<8} {run.waiting:>7} {run.cpu:10.2%} {spread:>15} {tx} {rb}"
            f" {run.attempts_per_s:10.2f}  {cpu_ok:<6} {tx_ok:<6}{waiting}"
        )
    if database == "postgres":
        print(
            "      tx/s: xact_commit + xact_rollback of the service's database in pg_stat_database"
            " (every transaction its pool runs: claims, heartbeats, sweeps), read from the"
            " postgres database"
        )
    else:
        print(
            "      write tx/s: SQLite write transactions (BEGIN IMMEDIATE takes the WAL write"
            " lock, an fcntl strace logs with --seccomp-bpf, every other syscall untraced);"
            " read-only ones are not counted (--database postgres counts all)"
        )
    print(
        "      sixths: CPU of each sixth of the window; attempts/s: delivery_attempts rows"
        " started within the window"
    )


# ------------------------------------------------------------------------------ part: accept


def part_accept(seconds: int, back_to_back: bool) -> None:
    order = "back to back" if back_to_back else "interleaved per concurrency"
    print(
        "\n[accept] POST /contacts (FAST_PATH_BUDGET=0, no worker, SQLITE_SYNCHRONOUS=FULL) vs "
        f"bench/accept_reference.py, wrk {seconds} s per run, a new person per request ({order})"
    )
    if not WRK:
        print("    (no wrk: run `bash tests/system-deps.sh wrk`)")
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-states-accept-"))
    body = '{"name":"Guest","email":"a%s-%d@example.com","phone":"+14155552671"}'
    headers = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"}
    service_port, reference_port = free_port(), free_port()
    servers = {
        "reference": (
            [
                *(sys.executable, str(ROOT / "bench" / "accept_reference.py")),
                *("--port", str(reference_port), "--database", str(folder / "reference.db")),
                *("--sync", "FULL", "--api-token", API_TOKEN),
            ],
            None,
            f"http://127.0.0.1:{reference_port}",
        ),
        "service": (
            [ADAPTER, "serve", "--port", str(service_port)],
            service_env(
                closed_port(),
                f"sqlite:///{folder / 'service.db'}",
                FAST_PATH_BUDGET="0",
                INPROCESS_WORKER="false",
                SQLITE_SYNCHRONOUS="FULL",
            ),
            f"http://127.0.0.1:{service_port}",
        ),
    }
    results: dict[tuple[str, int], WrkResult] = {}
    batch_sizes: dict[int, float] = {}

    def run(name: str, clients: int) -> None:
        url = servers[name][2]
        before = httpx.get(url + "/stats").json() if name == "reference" else None
        results[name, clients] = wrk(
            url, "/contacts", body, headers, connections=clients, seconds=seconds
        )
        if before is not None:
            after = httpx.get(url + "/stats").json()
            batches = after["batches"] - before["batches"]
            batch_sizes[clients] = (after["rows"] - before["rows"]) / batches if batches else 0

    def start(stack: ExitStack, name: str) -> None:
        args, env, url = servers[name]
        stack.enter_context(process(args, f"accept-{name}", env=env, health=url + "/healthz"))

    clients_list = (1, 16, 64)
    try:
        if back_to_back:
            for name in ("reference", "service"):
                with ExitStack() as stack:
                    start(stack, name)
                    for clients in clients_list:
                        run(name, clients)
        else:
            with ExitStack() as stack:
                start(stack, "reference")
                start(stack, "service")
                for clients in clients_list:
                    run("reference", clients)
                    run("service", clients)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"    {'wrk -c':>6} {'reference/s':>11} {'rows/commit':>11} {'service/s':>10} "
        f"{'service ÷ reference':>20}"
    )
    for clients in clients_list:
        ref, ours = results["reference", clients], results["service", clients]
        bad = [
            f"{name}: {r.non_2xx} non-2xx {r.errors}".strip()
            for name, r in (("reference", ref), ("service", ours))
            if r.non_2xx or r.errors
        ]
        print(
            f"    {clients:>6} {ref.rate:11.1f} {batch_sizes.get(clients, 0):11.1f} "
            f"{ours.rate:10.1f} {ours.rate / ref.rate if ref.rate else 0:20.1%}"
            + (f"  ({'; '.join(bad)})" if bad else "")
        )


# ------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--part", default="all", help="drain, idle, accept (comma-separated)")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--count", type=int, default=1000, help="contacts to drain")
    parser.add_argument(
        "--drain-deadline", type=float, default=60.0, help="seconds after a state change"
    )
    parser.add_argument("--outage-seconds", type=float, default=20.0)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--idle-warmup", type=float, default=10.0)
    parser.add_argument("--idle-mode", choices=["both", "serve", "worker"], default="both")
    parser.add_argument("--accept-seconds", type=int, default=5)
    parser.add_argument(
        "--accept-back-to-back",
        action="store_true",
        help="the reference's whole series, then the service's (default: interleaved)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    args = parser.parse_args()
    parts = args.part.split(",") if args.part != "all" else ["drain", "idle", "accept"]
    unknown = set(parts) - {"drain", "idle", "accept"}
    if unknown:
        raise SystemExit(f"unknown part(s): {', '.join(sorted(unknown))}")
    print(
        f"bench_states: wrk {'yes' if WRK else 'no'}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    try:
        for part in parts:
            started = time.perf_counter()
            if part == "drain":
                part_drain(args.database, args.count, args.drain_deadline, args.outage_seconds)
            elif part == "idle":
                modes = ["serve", "worker"] if args.idle_mode == "both" else [args.idle_mode]
                part_idle(args.database, args.idle_seconds, args.idle_warmup, modes)
            else:
                part_accept(args.accept_seconds, args.accept_back_to_back)
            print(f"    ({time.perf_counter() - started:.0f} s)")
    finally:
        if args.keep_logs:
            print(f"logs: {LOGS}")
        else:
            shutil.rmtree(LOGS, ignore_errors=True)


if __name__ == "__main__":
    main()
