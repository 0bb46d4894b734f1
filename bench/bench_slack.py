"""Slack slash commands: acks per second and ack latency, against a minimal bolt app.

Usage: ``python bench/bench_slack.py [--seconds 2] [--latency-seconds 5]`` (30 s of load,
plus a few seconds to start the servers).

Each server runs in its own process under uvicorn (one worker, same options); the load
generator (aiohttp) sends signed ``/contact`` form bodies, each a different contact,
exactly as Slack sends them (``contracts/slack.md`` §1). Measured in the same run:

* ``baseline``: a minimal bolt ``AsyncApp`` that verifies the signature and acks (twice:
  bolt's default mode, which polls for the ack every 10 ms, and
  ``process_before_response=True``; the ratio uses the faster of the two);
* ``ours/ack``: the service's whole ack path — size cap, signature, body parse, bolt,
  extraction, validation, the minute-dedupe lookup, durable accept (an SQLite commit
  with ``synchronous=FULL``) and the ack — with ``FAST_PATH_BUDGET=0`` and no in-process
  worker, i.e. a deployment with a separate ``worker`` dyno;
* ``ours/full``: production defaults: the fast path registers the contact in the
  Rocket.Chat stand-in (another process) before acking, and the in-process worker runs;
* ``api/contacts``: the same contacts as JSON to ``POST /contacts`` on the ``ours/ack``
  server: the core's accept over HTTP without Slack, i.e. the ceiling for ``ours/ack``.

Throughput is closed-loop with ``--concurrency`` connections; latency is open-loop at
``--rate`` commands per second (each send scheduled on a fixed clock, measured from its
scheduled time, so queueing delay counts).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from statistics import median
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECRET = "bench-signing-secret-0123456789"
API_TOKEN = "bench-api-token-0123456789"
BOT_TOKEN_HINT = "xoxb-"


# ----------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_baseline(port: int, process_before_response: bool) -> None:
    """A minimal bolt app: verify the signature, ack the command, nothing else."""
    import uvicorn
    from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
    from slack_bolt.async_app import AsyncApp
    from slack_bolt.authorization import AuthorizeResult
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    async def authorize(enterprise_id: Any, team_id: Any, **_: Any) -> AuthorizeResult:
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token="xoxb-x")

    app = AsyncApp(
        signing_secret=SECRET,
        authorize=authorize,
        process_before_response=process_before_response,
    )

    @app.command("/contact")
    async def contact(ack: Any) -> None:
        await ack()

    handler = AsyncSlackRequestHandler(app)

    async def events(request: Request) -> Response:
        response: Response = await handler.handle(request)
        return response

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    web = Starlette(
        routes=[
            Route("/slack/events", events, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    uvicorn.run(web, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_ours(port: int, db: str, rocketchat: str, slack_api: str, full: bool) -> None:
    import uvicorn

    from adapter.ops.logs import configure_logging
    from adapter.settings import load_settings
    from adapter.web.app import create_app

    settings = load_settings(
        rocketchat_url=rocketchat,
        rocketchat_user_id="botUserId1",
        rocketchat_auth_token="bot-token",
        database_url=f"sqlite:///{db}",
        fast_path_budget=1.5 if full else 0,
        inprocess_worker=full,
        api_token=API_TOKEN,  # POST /contacts: the core's own HTTP path, for reference
        channel_settings={
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_BOT_TOKEN": os.environ["BENCH_SLACK_TOKEN"],
            "SLACK_API_URL": slack_api,
        },
    )
    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        log_config=None,
    )


def serve_standins(rc_port: int, slack_port: int) -> None:
    from tests.rocketchat_standin import RocketChatStandIn, StandInServer
    from tests.slack_standin import SlackStandIn

    rocketchat = RocketChatStandIn()
    slack = SlackStandIn()
    slack.teams["T111"].bot_token = os.environ["BENCH_SLACK_TOKEN"]
    with (
        StandInServer(rocketchat.app, port=rc_port),
        StandInServer(slack.app, port=slack_port),
    ):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


class Process:
    def __init__(self, args: list[str], health: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *args],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=str(ROOT),
        )
        self.health = health

    def wait_ready(self, timeout: float = 30) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"server exited: {err[-2000:]}")
            try:
                if httpx.get(self.health, timeout=1).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(self.health)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ----------------------------------------------------------------------------- load


def _alpha(i: int) -> str:
    out = ""
    for _ in range(4):
        out += chr(97 + i % 26)
        i //= 26
    return out.capitalize()


def signed_commands(start: int, n: int, response_base: str) -> list[tuple[bytes, dict[str, str]]]:
    """``n`` distinct signed ``/contact`` commands, as Slack sends them."""
    return list(command_stream(start, response_base, n))


def command_stream(
    start: int, response_base: str, n: int | None = None
) -> Iterator[tuple[bytes, dict[str, str]]]:
    """Distinct signed ``/contact`` commands, made as they are needed."""
    ts = str(int(time.time()))
    for i in itertools.count(start) if n is None else range(start, start + n):
        body = urlencode(
            {
                "token": "gIkuvaNzQIHg97ATvDxqgjtO",
                "team_id": "T111",
                "team_domain": "acme",
                "channel_id": "C2147483705",
                "channel_name": "sales",
                "user_id": f"U{i % 50:05d}",
                "user_name": "steve",
                "command": "/contact",
                "text": f"Guest {_alpha(i)} guest{i}@example.com +1 415 555 {i % 10000:04d}",
                "api_app_id": "A0CONTACT",
                "is_enterprise_install": "false",
                "response_url": f"{response_base}/commands/T111/{i}/bench",
                "trigger_id": f"{i}.1.{i:032x}",
            }
        ).encode()
        mac = hmac.new(SECRET.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": "v0=" + mac.hexdigest(),
        }
        yield body, headers


def api_stream(start: int) -> Iterator[tuple[bytes, dict[str, str]]]:
    """The same contacts as JSON for ``POST /contacts`` (the API channel)."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_TOKEN}"}
    for i in itertools.count(start):
        body = json.dumps(
            {
                "name": f"Guest {_alpha(i)}",
                "email": f"guest{i}@example.com",
                "phone": f"+1 415 555 {i % 10000:04d}",
            }
        ).encode()
        yield body, headers


async def closed_loop(
    url: str, commands: Iterator[tuple[bytes, dict[str, str]]], concurrency: int, seconds: float
) -> tuple[float, int, list[float]]:
    """Acks per second with ``concurrency`` requests in flight."""
    import aiohttp

    it = commands
    done = 0
    errors = 0
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        # warm up: connections, bolt's first-request work, SQLite pages
        for _ in range(20):
            body, headers = next(it)
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < deadline:
                body, headers = next(it)
                sent = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        done += 1
                        latencies.append(time.perf_counter() - sent)
                    else:
                        errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return done / elapsed, errors, latencies


async def open_loop(
    url: str, commands: list[tuple[bytes, dict[str, str]]], rate: float, seconds: float
) -> tuple[list[float], int]:
    """Send at a fixed ``rate``; latency from each command's scheduled time to its ack."""
    import aiohttp

    n = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for body, headers in commands[:10]:  # warm up
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
        start = time.perf_counter() + 0.05

        async def one(i: int) -> None:
            nonlocal errors
            scheduled = start + i / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            body, headers = commands[10 + i]
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if not 200 <= response.status < 300:
                    errors += 1
            latencies.append(time.perf_counter() - scheduled)

        await asyncio.gather(*(one(i) for i in range(n)))
    return latencies, errors


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[k]


def distribution(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    cols = [("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("p99.9", 99.9)]
    parts = [f"{name} {pct(ms, p):6.1f}" for name, p in cols]
    return f"n={len(ms)}  min {min(ms):5.1f}  " + "  ".join(parts) + f"  max {max(ms):6.1f} ms"


def histogram(values: list[float]) -> str:
    edges = [5, 10, 20, 50, 100, 250, 500, 1000, 3000, float("inf")]
    counts = [0] * len(edges)
    for v in values:
        ms = v * 1000
        for i, edge in enumerate(edges):
            if ms <= edge:
                counts[i] += 1
                break
    lines = []
    low = 0.0
    for edge, count in zip(edges, counts, strict=True):
        label = f"{low:>5g}-{edge:<5g}ms" if edge != float("inf") else f"{low:>5g}+      ms"
        share = count / max(1, len(values))
        lines.append(f"    {label} {count:6d} {share:6.1%} {'#' * round(share * 50)}")
        low = edge
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per throughput run")
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=50.0, help="commands/s for latency")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port2", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--rc", help=argparse.SUPPRESS)
    parser.add_argument("--slack-api", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve == "baseline":
        return serve_baseline(args.port, process_before_response=False)
    if args.serve == "baseline-pbr":
        return serve_baseline(args.port, process_before_response=True)
    if args.serve in ("ours-ack", "ours-full"):
        return serve_ours(args.port, args.db, args.rc, args.slack_api, args.serve == "ours-full")
    if args.serve == "standins":
        return serve_standins(args.port, args.port2)

    token = BOT_TOKEN_HINT + "bench-" + os.urandom(6).hex()
    env = {"BENCH_SLACK_TOKEN": token}
    tmp = tempfile.mkdtemp(prefix="bench-slack-")
    rc_port, slack_port = free_port(), free_port()
    rc_url, slack_url = f"http://127.0.0.1:{rc_port}", f"http://127.0.0.1:{slack_port}"
    standins = Process(
        ["--serve", "standins", "--port", str(rc_port), "--port2", str(slack_port)],
        f"{rc_url}/api/info",
        env,
    )
    standins.wait_ready()
    servers: dict[str, Process] = {}
    try:
        for kind in ("baseline", "baseline-pbr", "ours-ack", "ours-full"):
            port = free_port()
            extra = []
            if kind.startswith("ours"):
                extra = [
                    "--db",
                    f"{tmp}/{kind}.db",
                    "--rc",
                    rc_url,
                    "--slack-api",
                    slack_url + "/api/",
                ]
            servers[kind] = Process(
                ["--serve", kind, "--port", str(port), *extra],
                f"http://127.0.0.1:{port}/healthz",
                env,
            )
        for server in servers.values():
            server.wait_ready()

        def url(kind: str) -> str:
            return servers[kind].health.replace("/healthz", "/slack/events")

        offset = 0

        def batch(n: int) -> list[tuple[bytes, dict[str, str]]]:
            nonlocal offset
            offset += n
            return signed_commands(offset - n, n, slack_url)

        def stream() -> Iterator[tuple[bytes, dict[str, str]]]:
            nonlocal offset
            offset += 10_000_000  # each run its own contacts
            return command_stream(offset - 10_000_000, slack_url)

        print(
            f"Slack /contact, {os.cpu_count()} CPUs shared with the load generator and the "
            f"stand-ins; {args.concurrency} connections, {args.seconds:g} s per run, two rounds"
        )
        kinds = [*servers, "api/contacts"]
        rates: dict[str, list[float]] = {k: [] for k in kinds}
        lat: dict[str, list[float]] = {k: [] for k in kinds}
        for _round in range(2):
            for kind in kinds:
                if kind == "api/contacts":  # the core's generic HTTP accept, same server
                    offset += 10_000_000
                    target = url("ours-ack").replace("/slack/events", "/contacts")
                    load = api_stream(offset - 10_000_000)
                else:
                    target, load = url(kind), stream()
                rate, errors, latencies = asyncio.run(
                    closed_loop(target, load, args.concurrency, args.seconds)
                )
                rates[kind].append(rate)
                lat[kind].extend(latencies)
                if errors:
                    print(f"  {kind}: {errors} non-200 answers")
        print("\nThroughput (acks/s, median of rounds; latency under that load)")
        for kind in kinds:
            print(
                f"  {kind:13s} {median(rates[kind]):7.0f}/s   rounds {[round(r) for r in rates[kind]]}"
            )
            print(f"  {'':13s} {distribution(lat[kind])}")
        best_baseline = max(median(rates["baseline"]), median(rates["baseline-pbr"]))
        for kind in ("ours-ack", "ours-full"):
            ratio = median(rates[kind]) / best_baseline
            print(f"  ratio {kind} / best minimal bolt app: {ratio:.0%}  (target ≥ 70%)")
        core = median(rates["api/contacts"])
        print(
            f"  ratio ours-ack / POST /contacts (the core's accept over HTTP, no Slack): "
            f"{median(rates['ours-ack']) / core:.0%}"
        )

        print(
            f"\nAck latency, open loop at {args.rate:g} commands/s for {args.latency_seconds:g} s"
        )
        for kind in ("ours-full", "ours-ack"):
            n = int(args.rate * args.latency_seconds) + 10
            latencies, errors = asyncio.run(
                open_loop(url(kind), batch(n), args.rate, args.latency_seconds)
            )
            verdict = "ok" if pct(latencies, 99) <= 0.250 else "OVER"
            print(f"  {kind:13s} {distribution(latencies)}  p99 ≤ 250 ms: {verdict}")
            if errors:
                print(f"  {kind}: {errors} non-200 answers")
            if kind == "ours-full":
                print(histogram(latencies))
    finally:
        for server in servers.values():
            server.stop()
        standins.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
