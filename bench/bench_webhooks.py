"""Webhook events accepted per second, as a ratio to a bare Starlette endpoint, same run.

What is measured: ``POST /webhooks/generic`` (or another ``--provider``) through the whole
path, verify (HMAC, timestamp window) → map → validate (email-validator, phonenumbers) →
durable accept (one SQLite transaction, ``SQLITE_SYNCHRONOUS=FULL`` by default) → 200.
Every event is a new one (its own response id, freshly signed), so none is answered from
the dedupe table. Delivery to Rocket.Chat is off (``INPROCESS_WORKER=false``): the fast path
is never taken for webhooks anyway, and this measures what the provider waits for.

The baseline is a bare Starlette app under the same uvicorn settings whose endpoint reads
the same body and answers 200. Both run in their own subprocess; the load comes from this
process (httpx.AsyncClient, keep-alive, 16 concurrent requests) and, when ``/usr/bin/wrk``
exists, from wrk with a Lua script replaying pre-signed unique events (also 16 connections).
p50/p99 latency are printed against the shortest provider timeout in the contract
(Chatwoot: 5 s). The machine is shared: client and servers compete for its cores, so read
the ratios, not the absolute numbers.

    .venv/bin/python bench/bench_webhooks.py [--seconds 4]
        [--provider generic|typeform|intercom|zendesk]
        [--sync FULL|NORMAL] [--clients httpx,wrk] [--write-lock-experiment]

``--write-lock-experiment`` adds a phase where the service's accept transaction is serialised
in-process by a monkeypatch (bench-only): it shows how much of the p99 is SQLite writers racing
through SQLite's busy handler rather than work.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-webhook-secret-0123456789"
CONCURRENCY = 16
SHORTEST_PROVIDER_TIMEOUT = 5.0  # Chatwoot gives up after 5 s (widgets.md §1)
WRK = Path("/usr/bin/wrk")


# ---------------------------------------------------------------------------------------------
# The two servers (this file re-invoked with --serve)


def bare_app() -> object:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def receive(request: Request) -> Response:
        await request.body()
        return Response(b'{"ok":true}', status_code=200, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(
        routes=[
            Route("/webhooks/{provider}", receive, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def serialise_sqlite_accepts() -> None:
    """EXPERIMENT (``--write-lock-experiment``), not the product: one accept transaction at a
    time per process, so SQLite writers queue in order instead of racing through SQLite's
    busy handler (which sleeps and lets later writers overtake: the long tail)."""
    import asyncio as aio
    from typing import Any

    from adapter.delivery import queue as delivery

    original = delivery.DeliveryQueue._accept
    lock: aio.Lock | None = None

    async def accept(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal lock
        lock = lock or aio.Lock()
        async with lock:
            return await original(self, *args, **kwargs)

    delivery.DeliveryQueue._accept = accept  # type: ignore[method-assign]


def serve(kind: str, port: int) -> None:
    import uvicorn

    if kind == "service+lock":
        serialise_sqlite_accepts()
    app: object = "adapter.app:app" if kind.startswith("service") else bare_app()
    uvicorn.run(
        app,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    kind: str
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start(kind: str, env: dict[str, str]) -> Server:
    import httpx

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--port", str(port)],
        cwd=env.get("BENCH_CWD", str(ROOT)),
        env=env,
        stdout=subprocess.DEVNULL,  # the service's JSON log lines are written, then dropped
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{kind} exited: {process.stderr.read().decode() if process.stderr else ''}"
            )
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return Server(kind, url, process)
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{kind} did not start within 20 s")


# ---------------------------------------------------------------------------------------------
# Events


def generic_event(seq: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "source": "bench",
            "form_id": "bench-form",
            "response_id": f"r-{seq}",
            "answers": {
                "Name": "Kim Min-jun",
                "Email": f"minjun.{seq}@example.com",
                "Phone": "+82 10-1234-5678",
            },
        },
        separators=(",", ":"),
    ).encode()
    stamp = str(int(time.time()))
    mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return body, {
        "content-type": "application/json",
        "x-contact-adapter-timestamp": stamp,
        "x-contact-adapter-signature": f"sha256={mac}",
    }


def typeform_event(seq: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "event_id": f"ev-{seq}",
            "event_type": "form_response",
            "form_response": {
                "form_id": "lT4Z3j",
                "token": f"tok-{seq}",
                "hidden": {"utm_source": "bench"},
                "answers": [
                    {
                        "type": "text",
                        "text": "Ana Beatriz Souza",
                        "field": {"id": "a", "type": "short_text", "ref": "full_name"},
                    },
                    {
                        "type": "email",
                        "email": f"ana.{seq}@example.org",
                        "field": {"id": "b", "type": "email", "ref": "email"},
                    },
                    {
                        "type": "phone_number",
                        "phone_number": "+5511987654321",
                        "field": {"id": "c", "type": "phone_number", "ref": "phone"},
                    },
                ],
            },
        },
        separators=(",", ":"),
    ).encode()
    mac = hmac.new(SECRET.encode(), body, hashlib.sha256).digest()
    return body, {
        "content-type": "application/json",
        "typeform-signature": "sha256=" + base64.b64encode(mac).decode(),
    }


def intercom_event(seq: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "type": "notification_event",
            "id": f"notif_{seq}",
            "topic": "contact.lead.created",
            "app_id": "bench",
            "data": {
                "type": "notification_event_data",
                "item": {
                    "type": "contact",
                    "id": f"lead-{seq}",
                    "role": "lead",
                    "name": "Fatima Al-Sayed",
                    "email": f"fatima.{seq}@example.com",
                    "phone": "+971501234567",
                },
            },
            "delivery_attempts": 1,
        },
        separators=(",", ":"),
    ).encode()
    mac = hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    return body, {"content-type": "application/json", "x-hub-signature": f"sha1={mac}"}


def zendesk_event(seq: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "event": "ticket.created",
            "ticket_id": f"t-{seq}",
            "requester_id": f"u-{seq}",
            "requester_name": "Kwame Mensah",
            "requester_email": f"kwame.{seq}@example.com",
            "requester_phone": "+14155552671",
        },
        separators=(",", ":"),
    ).encode()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    mac = hmac.new(SECRET.encode(), stamp.encode() + body, hashlib.sha256).digest()
    return body, {
        "content-type": "application/json",
        "x-zendesk-webhook-signature-timestamp": stamp,
        "x-zendesk-webhook-signature": base64.b64encode(mac).decode(),
    }


EVENTS: dict[str, Callable[[str], tuple[bytes, dict[str, str]]]] = {
    "generic": generic_event,
    "typeform": typeform_event,
    "intercom": intercom_event,
    "zendesk": zendesk_event,
}


# ---------------------------------------------------------------------------------------------
# Load: httpx/asyncio and wrk


@dataclass
class Result:
    client: str
    target: str
    requests: int
    errors: int
    seconds: float
    p50: float
    p99: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def httpx_load(url: str, provider: str, seconds: float, warmup: float, tag: str) -> Result:
    import httpx

    make = EVENTS[provider]
    path = f"/webhooks/{provider}"
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    latencies: list[float] = []
    errors = 0
    counter = 0
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        stop_at = time.monotonic() + warmup + seconds
        start_at = time.monotonic() + warmup

        async def user(n: int) -> None:
            nonlocal errors, counter
            while (now := time.monotonic()) < stop_at:
                counter += 1
                body, headers = make(f"{tag}-{n}-{counter}")
                sent = time.perf_counter()
                try:
                    response = await client.post(path, content=body, headers=headers)
                except httpx.HTTPError:
                    errors += 1
                    continue
                took = time.perf_counter() - sent
                if response.status_code != 200 or b'"duplicate"' in response.content:
                    errors += 1  # also during the warm-up: every answer must be a fresh 200
                if now >= start_at:
                    latencies.append(took)

        await asyncio.gather(*(user(n) for n in range(CONCURRENCY)))
    latencies.sort()
    return Result(
        "httpx",
        tag,
        len(latencies),
        errors,
        seconds,
        latencies[len(latencies) // 2] if latencies else 0.0,
        latencies[int(len(latencies) * 0.99)] if latencies else 0.0,
    )


WRK_SCRIPT = r"""
local lines = {}
local counter = 0
local thread_id = 0
local threads = 1
function setup(thread)
  thread:set("thread_id", thread_id)
  thread_id = thread_id + 1
end
function init(args)
  threads = tonumber(args[2])
  for line in io.lines(args[1]) do lines[#lines + 1] = line end
  counter = thread_id
end
-- A line: "name\2value\1name\2value\t<body>" (the event's own headers, then its body).
local function decode(line)
  local packed, body = line:match("^([^\t]*)\t(.*)$")
  local headers = {["Content-Type"] = "application/json"}
  for pair in packed:gmatch("[^\1]+") do
    local name, value = pair:match("^([^\2]*)\2(.*)$")
    headers[name] = value
  end
  return headers, body
end
request = function()
  local line = lines[(counter % #lines) + 1]
  counter = counter + threads
  local headers, body = decode(line)
  return wrk.format("POST", PATH, headers, body)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %.0f %.0f\n", summary.requests,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_load(url: str, provider: str, seconds: float, tag: str, workdir: Path) -> Result:
    make = EVENTS[provider]
    count = 40_000  # more than wrk can send here in `seconds`; each one a new event
    data = workdir / f"events-{tag}.tsv"
    with data.open("w") as out:
        for n in range(count):
            body, headers = make(f"wrk-{tag}-{n}")
            packed = "\x01".join(
                f"{name}\x02{value}" for name, value in headers.items() if name != "content-type"
            )
            out.write(f"{packed}\t{body.decode()}\n")
    script = workdir / "events.lua"
    script.write_text(f'PATH = "/webhooks/{provider}"\n' + WRK_SCRIPT, encoding="utf-8")
    completed = subprocess.run(
        [
            str(WRK),
            "-t1",
            "--timeout",
            "10s",
            f"-c{CONCURRENCY}",
            f"-d{int(seconds)}s",
            "-s",
            str(script),
            url,
            "--",
            str(data),
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    )
    line = next(x for x in completed.stdout.splitlines() if x.startswith("RESULT"))
    total, bad_status, socket_errors, p50_us, p99_us = (float(x) for x in line.split()[1:])
    if total > count and tag != "bare":  # (the bare endpoint does not care)
        print(f"  note: wrk sent {int(total)} requests for {count} events: some were replays")
    return Result(
        "wrk", tag, int(total), int(bad_status + socket_errors), seconds, p50_us / 1e6, p99_us / 1e6
    )


# ---------------------------------------------------------------------------------------------


def stored_deliveries(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("select count(*) from deliveries").fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--provider", choices=sorted(EVENTS), default="generic")
    parser.add_argument("--sync", choices=("FULL", "NORMAL"), default="FULL")
    parser.add_argument(
        "--clients", default="httpx,wrk", help="load generators, comma-separated: httpx,wrk"
    )
    parser.add_argument(
        "--write-lock-experiment",
        action="store_true",
        help="also measure the service with SQLite accepts serialised in-process (an experiment)",
    )
    parser.add_argument(
        "--serve", choices=("service", "service+lock", "bare"), help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return

    workdir = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    db = workdir / "contacts.db"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BENCH_CWD": str(workdir),  # no .env of the developer's
        "DATABASE_URL": f"sqlite:///{db}",
        "SQLITE_SYNCHRONOUS": args.sync,
        "INPROCESS_WORKER": "false",
        "ROCKETCHAT_URL": "http://127.0.0.1:9",
        "GENERIC_WEBHOOK_SECRET": SECRET,
        "TYPEFORM_WEBHOOK_SECRET": SECRET,
        "INTERCOM_WEBHOOK_SECRET": SECRET,
        "ZENDESK_WEBHOOK_SECRET": SECRET,
        "LOG_LEVEL": "INFO",
    }
    clients = {c.strip() for c in args.clients.split(",") if c.strip()}
    if "wrk" in clients and not WRK.exists():
        print(f"note: {WRK} not found, measuring with httpx only")
        clients = (clients - {"wrk"}) or {"httpx"}
    kinds = ["bare", "service"] + (["service+lock"] if args.write_lock_experiment else [])
    print(
        f"webhook accept path: POST /webhooks/{args.provider}, {CONCURRENCY} concurrent, "
        f"keep-alive, {args.seconds:g} s per phase, SQLITE_SYNCHRONOUS={args.sync}, "
        f"{os.cpu_count()} CPUs shared by client and server"
    )
    results: list[Result] = []
    try:
        for kind in kinds:
            server = start(kind, env)
            try:
                if "httpx" in clients:
                    results.append(
                        asyncio.run(
                            httpx_load(server.url, args.provider, args.seconds, args.warmup, kind)
                        )
                    )
                if "wrk" in clients:
                    results.append(wrk_load(server.url, args.provider, args.seconds, kind, workdir))
            finally:
                server.stop()
        stored = stored_deliveries(db)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(
        f"{'client':6} {'endpoint':12} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  "
        "ratio to bare"
    )
    by = {(r.client, r.target): r for r in results}
    for r in results:
        bare = by.get((r.client, "bare"))
        ratio = f"{r.rate / bare.rate:.3f}" if bare and bare.rate else "-"
        print(
            f"{r.client:6} {r.target:12} {r.rate:9.0f} {r.p50 * 1000:8.1f} {r.p99 * 1000:8.1f} "
            f"{r.errors:6d}  {ratio}"
        )
    print()
    for r in results:
        if r.target != "bare":
            print(
                f"{r.client} {r.target}: p99 {r.p99 * 1000:.1f} ms = {r.p99 / SHORTEST_PROVIDER_TIMEOUT:.2%} of "
                f"Chatwoot's {SHORTEST_PROVIDER_TIMEOUT:g} s timeout (the shortest in the contract); "
                f"p50 {r.p50 * 1000:.1f} ms"
            )
    sent = sum(r.requests for r in results if r.target != "bare")
    print(
        f"durably stored deliveries: {stored} (measured requests to the service: {sent}; "
        "warm-up requests are stored too)"
    )


if __name__ == "__main__":
    main()
