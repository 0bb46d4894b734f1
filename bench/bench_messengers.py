"""Telegram and WhatsApp webhooks: answer latency at 50 requests/s and throughput, against a
bare Starlette endpoint that only verifies the platform's authentication, in one run.

Usage: ``python bench/bench_messengers.py [--rate 50] [--latency-seconds 5] [--seconds 2]``
(about 40 s in all).

Processes (each under uvicorn, one worker, on loopback): the stand-ins (Rocket.Chat, the
Telegram Bot API and the Graph API, ``tests/``), the service with both channels on and
production defaults (SQLite with ``synchronous=FULL``, the fast path, the in-process
worker delivering to the Rocket.Chat stand-in, replies sent to the platform stand-ins after
each answer), and ``bare``: a Starlette app whose two routes only compare the Telegram
secret header / verify the WhatsApp HMAC over the raw body and answer 200.

Every request is a new guest whose one message completes the conversation (Telegram:
``/contact Guest … guest<i>@example.com +1 …``; WhatsApp: a text with an email from a new
number), i.e. the heaviest path: dedupe lookup, conversation load, extraction, validation,
a durable accept, the conversation delete with the update id, and the reply after the
answer. Latency is open-loop at ``--rate`` per second (measured from each request's
scheduled time); throughput closed-loop with ``--concurrency`` connections.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_slack import (  # noqa: E402  (after the path set-up)
    Process,
    _alpha,
    closed_loop,
    distribution,
    free_port,
    open_loop,
    pct,
)

TG_TOKEN = "7000000001:AAE-test-bot-token"  # what tests/messenger_standin.py accepts
TG_SECRET = "tg-test_secret-Token-42"
WA_SECRET = "d3adb33fd3adb33fd3adb33fd3adb33f"
WA_ACCESS = "EAAG-test-access-token"
DEADLINES = {"telegram": 60.0, "whatsapp": 3.0}  # s; WhatsApp's is not published (see README)


class Server(Process):
    """``Process`` running this file (not bench_slack.py) with ``--serve``."""

    def __init__(self, args: list[str], health: str) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, __file__, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=str(ROOT),
        )
        self.health = health


def serve_standins(rc_port: int, api_port: int) -> None:
    from tests.messenger_standin import MessengerStandIn
    from tests.rocketchat_standin import RocketChatStandIn, StandInServer

    with (
        StandInServer(RocketChatStandIn().app, port=rc_port),
        StandInServer(MessengerStandIn().app, port=api_port),
    ):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


def serve_ours(port: int, db: str, rocketchat: str, api: str) -> None:
    import uvicorn

    from adapter.ops.logs import configure_logging
    from adapter.settings import load_settings
    from adapter.web.app import create_app

    settings = load_settings(
        rocketchat_url=rocketchat,
        rocketchat_user_id="botUserId1",
        rocketchat_auth_token="bot-token",
        rocketchat_contact_api="visitor",
        database_url=f"sqlite:///{db}",
        log_level="WARNING",
        sqlite_synchronous=os.environ.get("BENCH_SQLITE_SYNCHRONOUS", "FULL"),
        channel_settings={
            "TELEGRAM_BOT_TOKEN": TG_TOKEN,
            "TELEGRAM_WEBHOOK_SECRET": TG_SECRET,
            "TELEGRAM_API_URL": api,
            "WHATSAPP_APP_SECRET": WA_SECRET,
            "WHATSAPP_VERIFY_TOKEN": "bench-verify",
            "WHATSAPP_ACCESS_TOKEN": WA_ACCESS,
            "WHATSAPP_API_URL": f"{api}/v26.0",
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


def serve_bare(port: int) -> None:
    """Only the authentication check of each platform, then 200."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    async def telegram(request: Request) -> Response:
        given = request.headers.get("x-telegram-bot-api-secret-token", "")
        if not hmac.compare_digest(given.encode(), TG_SECRET.encode()):
            return JSONResponse({"error": "secret"}, status_code=401)
        await request.body()
        return JSONResponse({"ok": True})

    async def whatsapp(request: Request) -> Response:
        body = await request.body()
        mac = "sha256=" + hmac.new(WA_SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("x-hub-signature-256", ""), mac):
            return JSONResponse({"error": "signature"}, status_code=401)
        return JSONResponse({"ok": True})

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Route("/telegram/webhook", telegram, methods=["POST"]),
            Route("/whatsapp/webhook", whatsapp, methods=["POST"]),
            Route("/healthz", healthz),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ----------------------------------------------------------------------------- load


def telegram_stream(start: int) -> Iterator[tuple[bytes, dict[str, str]]]:
    headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": TG_SECRET}
    for i in itertools.count(start):
        user = 6_000_000_000 + i
        update = {
            "update_id": 900_000_000 + i,
            "message": {
                "message_id": 1,
                "from": {"id": user, "is_bot": False, "first_name": "Guest", "language_code": "en"},
                "chat": {"id": user, "first_name": "Guest", "type": "private"},
                "date": int(time.time()),
                "text": f"/contact Guest {_alpha(i)} guest{i}@example.com +1 415 555 {i % 10000:04d}",
            },
        }
        yield json.dumps(update).encode(), headers


def whatsapp_stream(start: int) -> Iterator[tuple[bytes, dict[str, str]]]:
    for i in itertools.count(start):
        sender = f"3461{i:07d}"
        value = {
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": "15550783881",
                "phone_number_id": "106540352242922",
            },
            "contacts": [{"profile": {"name": f"Jos\u00e9 {_alpha(i)}"}, "wa_id": sender}],
            "messages": [
                {
                    "from": sender,
                    "id": f"wamid.BENCH{i:012d}",
                    "timestamp": str(int(time.time())),
                    "text": {"body": f"Hola, soy Jos\u00e9, jose{i}@example.com"},
                    "type": "text",
                }
            ],
        }
        payload = {
            "object": "whatsapp_business_account",
            "entry": [
                {"id": "102290129340398", "changes": [{"value": value, "field": "messages"}]}
            ],
        }
        body = json.dumps(payload, separators=(",", ":")).encode()  # ASCII, \u escapes
        mac = "sha256=" + hmac.new(WA_SECRET.encode(), body, hashlib.sha256).hexdigest()
        yield body, {"Content-Type": "application/json", "X-Hub-Signature-256": mac}


STREAMS = {"telegram": telegram_stream, "whatsapp": whatsapp_stream}


def registered(db: str, source: str) -> int:
    import sqlite3

    with sqlite3.connect(db, timeout=5) as conn:
        query = "SELECT count(*) FROM deliveries WHERE source = ? AND status = 'delivered'"
        return int(conn.execute(query, (source,)).fetchone()[0])


def drained(db: str, timeout: float = 60.0) -> None:
    """Wait until the worker has registered (and reported) every accepted contact, so one
    measurement does not pay for the previous one's backlog."""
    import sqlite3

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(db, timeout=5) as conn:
            waiting = conn.execute(
                "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'delivering')"
                " OR (status = 'delivered' AND notified_at IS NULL)"
            ).fetchone()[0]
        if not waiting:
            time.sleep(0.5)  # the last outcomes' messages going out
            return
        time.sleep(0.2)
    print(f"# still {waiting} deliveries in flight after {timeout:g} s")


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per throughput run")
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s for latency")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port2", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--rc", help=argparse.SUPPRESS)
    parser.add_argument("--api", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "standins":
        return serve_standins(args.port, args.port2)
    if args.serve == "ours":
        return serve_ours(args.port, args.db, args.rc, args.api)
    if args.serve == "bare":
        return serve_bare(args.port)

    tmp = tempfile.mkdtemp(prefix="bench-messengers-")
    rc_port, api_port, ours_port, bare_port = (free_port() for _ in range(4))
    rc, api = f"http://127.0.0.1:{rc_port}", f"http://127.0.0.1:{api_port}"
    started: list[Server] = []
    try:
        standins = Server(
            ["--serve", "standins", "--port", str(rc_port), "--port2", str(api_port)],
            f"{rc}/api/info",
        )
        started.append(standins)
        standins.wait_ready(90)
        ours = Server(
            [
                "--serve",
                "ours",
                "--port",
                str(ours_port),
                "--db",
                f"{tmp}/ours.db",
                "--rc",
                rc,
                "--api",
                api,
            ],
            f"http://127.0.0.1:{ours_port}/healthz",
        )
        bare = Server(
            ["--serve", "bare", "--port", str(bare_port)],
            f"http://127.0.0.1:{bare_port}/healthz",
        )
        started += [ours, bare]
        ours.wait_ready(90)
        bare.wait_ready(90)
        bases = {"ours": f"http://127.0.0.1:{ours_port}", "bare": f"http://127.0.0.1:{bare_port}"}
        offset = itertools.count(0, 1_000_000)
        print(
            f"# {os.cpu_count()} CPUs; rate {args.rate:g}/s for {args.latency_seconds:g} s; "
            f"throughput with {args.concurrency} connections for {args.seconds:g} s"
        )
        for platform, stream in STREAMS.items():
            path = f"/{platform}/webhook"
            n = int(args.rate * args.latency_seconds) + 10
            requests = list(itertools.islice(stream(next(offset)), n))
            latencies, errors = asyncio.run(
                open_loop(bases["ours"] + path, requests, args.rate, args.latency_seconds)
            )
            deadline = DEADLINES[platform]
            print(
                f"{platform:9s} ours latency at {args.rate:g}/s: {distribution(latencies)}  "
                f"errors {errors}"
            )
            print(
                f"{platform:9s} p50 {pct(latencies, 50) * 1000:.1f} ms, p99 "
                f"{pct(latencies, 99) * 1000:.1f} ms = {pct(latencies, 99) / deadline:.2%} of "
                f"the {deadline:g} s deadline"
            )
            drained(f"{tmp}/ours.db")
            rates = {}
            for kind, base in bases.items():
                rate, errors, _ = asyncio.run(
                    closed_loop(base + path, stream(next(offset)), args.concurrency, args.seconds)
                )
                rates[kind] = rate
                print(f"{platform:9s} {kind:5s} throughput {rate:7.0f}/s  errors {errors}")
                drained(f"{tmp}/ours.db")
            print(f"{platform:9s} ours/bare throughput ratio {rates['ours'] / rates['bare']:.2f}")
            print(
                f"{platform:9s} registered {registered(f'{tmp}/ours.db', platform)} contacts "
                "(every request a new guest whose message completes the conversation)"
            )
    finally:
        for server in reversed(started):
            server.stop()


if __name__ == "__main__":
    main()
