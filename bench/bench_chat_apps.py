"""Discord and Google Chat: answer latency at 50 requests/s on the production path, and
throughput against a bare Starlette endpoint that only verifies the signature.

Usage: ``python bench/bench_chat_apps.py [--seconds 4] [--latency-seconds 6] [--budget 1.5]``
(about 50 s with start-up; ``--budget 0`` measures the accept alone).

Each server runs in its own process under uvicorn (one worker, same options):

* ``ours``: the service with production defaults (``FAST_PATH_BUDGET=1.5``, the in-process
  worker, SQLite ``synchronous=FULL``), its Rocket.Chat, Discord and Google stand-ins in
  another process. Every request is a new contact, so each answer includes the durable
  accept and, within the fast path, the registration in Rocket.Chat:
  ``/contact text:<name email phone>`` for Discord (Ed25519 signed), a ``/contact …``
  MESSAGE event for Google Chat (a project-number JWT; the service fetched the stand-in's
  keys once and caches them);
* ``api``: ``POST /contacts`` on the same server with the same kind of contacts: the core's
  accept (and fast path) over HTTP without a chat platform, what a channel can approach;
* ``bare``: a Starlette app whose two routes only verify the same signatures (Ed25519 over
  timestamp + body; RS256 of the JWT with the key already loaded) and answer a constant
  JSON: the ceiling of the framework plus the cryptography, no channel logic.

Latency is open-loop at ``--rate`` requests per second, measured from each request's
scheduled send time (queueing counts), against the platform's deadline (Discord 3 s,
Google Chat 30 s). Throughput is closed-loop with ``--concurrency`` connections.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_slack import _alpha, closed_loop, distribution, free_port, open_loop, pct  # noqa: E402

SAMPLES = ROOT / "tests" / "samples"
PUBLIC_KEY = "d38bc7c7ded4aedba5b22cdd69a1dba54655c3a8a49003790fee83277de50ff1"
SEED = "1d131f266833f076122a1fc0c460679f2f558393756c9277da66ad4646569cc2"
APPLICATION_ID = "1300000000000000001"
PROJECT_NUMBER = "123456789012"
API_TOKEN = "bench-api-token-0123456789"
DEADLINES = {"discord": 3.0, "googlechat": 30.0}
PATHS = {"discord": "/discord/interactions", "googlechat": "/googlechat/events"}


# ----------------------------------------------------------------------------- servers


def serve_standins(rc_port: int, google_port: int) -> None:
    from tests.googlechat_standin import GoogleChatStandIn
    from tests.rocketchat_standin import RocketChatStandIn, StandInServer

    rocketchat = RocketChatStandIn()
    google = GoogleChatStandIn()
    with StandInServer(rocketchat.app, port=rc_port), StandInServer(google.app, port=google_port):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


def serve_ours(port: int, db: str, rocketchat: str, google: str, budget: float) -> None:
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
        fast_path_budget=budget,
        api_token=API_TOKEN,  # POST /contacts: the core's accept over HTTP, for reference
        log_level="WARNING",
        channel_settings={
            "DISCORD_PUBLIC_KEY": PUBLIC_KEY,
            "DISCORD_APPLICATION_ID": APPLICATION_ID,
            "DISCORD_API_URL": f"{google}/discord-api",  # never called: answers are inline
            "GOOGLE_CHAT_AUDIENCE": PROJECT_NUMBER,
            "GOOGLE_CHAT_CERTS_URL": f"{google}/certs",
            "GOOGLE_CHAT_API_URL": f"{google}/v1",
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
    """Only the signature checks, in the same framework, answering constant JSON."""
    import uvicorn
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    ed_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(PUBLIC_KEY))
    certs = json.loads((SAMPLES / "googlechat" / "test_certs.json").read_text())
    rsa_keys = {
        k: x509.load_pem_x509_certificate(v.encode()).public_key() for k, v in certs.items()
    }

    async def discord(request: Request) -> Response:
        body = await request.body()
        try:
            ed_key.verify(
                bytes.fromhex(request.headers["x-signature-ed25519"]),
                request.headers["x-signature-timestamp"].encode() + body,
            )
        except Exception:
            return Response(status_code=401)
        return JSONResponse({"type": 4, "data": {"content": "ok", "flags": 64}})

    async def google(request: Request) -> Response:
        await request.body()
        token = request.headers["authorization"].split(" ", 1)[1]
        head, payload, signature = token.split(".")
        kid = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["kid"]
        try:
            rsa_keys[kid].verify(  # type: ignore[union-attr, call-arg]
                base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
                f"{head}.{payload}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except Exception:
            return Response(status_code=401)
        return JSONResponse({"text": "ok"})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/discord/interactions", discord, methods=["POST"]),
            Route("/googlechat/events", google, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


class Process:
    def __init__(self, args: list[str], health: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *args],
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
            time.sleep(0.05)  # noqa: sleep-ok - polling a child process's start-up
        raise TimeoutError(self.health)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ----------------------------------------------------------------------------- load


def discord_requests(start: int, n: int) -> list[tuple[bytes, dict[str, str]]]:
    """``n`` distinct signed ``/contact text:…`` interactions, as Discord sends them."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(SEED))
    ts = str(int(time.time()))
    out = []
    for i in range(start, start + n):
        text = f"Guest {_alpha(i)} guest{i}@example.com +1 415 555 {i % 10000:04d}"
        body = json.dumps(
            {
                "application_id": APPLICATION_ID,
                "id": str(1300000000000100000 + i),
                "token": f"bench-token-{i}",
                "type": 2,
                "version": 1,
                "guild_id": "1300000000000000100",
                "channel_id": "1300000000000000200",
                "member": {"user": {"id": f"13000000000000{i % 50:05d}", "username": "agent"}},
                "data": {
                    "id": "1300000000000000300",
                    "name": "contact",
                    "type": 1,
                    "options": [{"name": "text", "type": 3, "value": text}],
                },
            },
            separators=(",", ":"),
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Signature-Ed25519": key.sign(ts.encode() + body).hex(),
            "X-Signature-Timestamp": ts,
        }
        out.append((body, headers))
    return out


def google_requests(start: int, n: int) -> list[tuple[bytes, dict[str, str]]]:
    """``n`` distinct ``/contact …`` MESSAGE events with a project-number bearer token."""
    from tests.googlechat_standin import GoogleChatStandIn, mint

    standin = GoogleChatStandIn()
    now = int(time.time())
    token = mint(
        standin.key,
        {
            "iss": "chat@system.gserviceaccount.com",
            "aud": PROJECT_NUMBER,
            "iat": now,
            "exp": now + 3600,
        },
    )
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    out = []
    for i in range(start, start + n):
        text = f"Guest {_alpha(i)} guest{i}@example.com +1 415 555 {i % 10000:04d}"
        event = standin.slash(text)
        event["message"]["name"] = f"spaces/AAAAcontact1/messages/B{i}.B{i}"
        out.append((json.dumps(event).encode(), headers))
    return out


def api_requests(start: int, n: int) -> list[tuple[bytes, dict[str, str]]]:
    """The same kind of contacts as JSON for ``POST /contacts`` (no chat platform)."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_TOKEN}"}
    return [
        (
            json.dumps(
                {
                    "name": f"Guest {_alpha(i)}",
                    "email": f"guest{i}@example.com",
                    "phone": f"+1 415 555 {i % 10000:04d}",
                }
            ).encode(),
            headers,
        )
        for i in range(start, start + n)
    ]


MAKERS = {"discord": discord_requests, "googlechat": google_requests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per throughput run")
    parser.add_argument("--latency-seconds", type=float, default=6.0)
    parser.add_argument("--rate", type=float, default=50.0, help="requests/s for latency")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--budget", type=float, default=1.5, help="FAST_PATH_BUDGET of ours (0: accept only)"
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port2", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--rc", help=argparse.SUPPRESS)
    parser.add_argument("--google", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "standins":
        return serve_standins(args.port, args.port2)
    if args.serve == "ours":
        return serve_ours(args.port, args.db, args.rc, args.google, args.budget)
    if args.serve == "bare":
        return serve_bare(args.port)

    rc_port, google_port, ours_port, bare_port = (free_port() for _ in range(4))
    tmp = tempfile.mkdtemp(prefix="bench-chat-")
    rc, google = f"http://127.0.0.1:{rc_port}", f"http://127.0.0.1:{google_port}"
    standins = Process(
        ["--serve", "standins", "--port", str(rc_port), "--port2", str(google_port)],
        f"{rc}/api/info",
    )
    standins.wait_ready()
    ours = Process(
        [
            "--serve",
            "ours",
            "--port",
            str(ours_port),
            "--db",
            f"{tmp}/bench.db",
            "--rc",
            rc,
            "--google",
            google,
            "--budget",
            str(args.budget),
        ],
        f"http://127.0.0.1:{ours_port}/healthz",
    )
    bare = Process(
        ["--serve", "bare", "--port", str(bare_port)], f"http://127.0.0.1:{bare_port}/healthz"
    )
    results: dict[str, dict[str, Any]] = {}
    try:
        ours.wait_ready()
        bare.wait_ready()
        counter = itertools.count(0, 100_000)
        for platform, make in MAKERS.items():
            path = PATHS[platform]
            latency_n = int(args.rate * args.latency_seconds) + 10
            latencies, errors = asyncio.run(
                open_loop(
                    f"http://127.0.0.1:{ours_port}{path}",
                    make(next(counter), latency_n),
                    args.rate,
                    args.latency_seconds,
                )
            )
            room = int(1000 * args.seconds) + 200  # more than a closed loop can send here
            ours_rate, ours_errors, _ = asyncio.run(
                closed_loop(
                    f"http://127.0.0.1:{ours_port}{path}",
                    iter(make(next(counter), room)),
                    args.concurrency,
                    args.seconds,
                )
            )
            bare_rate, bare_errors, _ = asyncio.run(
                closed_loop(
                    f"http://127.0.0.1:{bare_port}{path}",
                    iter(make(next(counter), room * 4)),
                    args.concurrency,
                    args.seconds,
                )
            )
            api_rate, api_errors, _ = asyncio.run(
                closed_loop(
                    f"http://127.0.0.1:{ours_port}/contacts",
                    iter(api_requests(next(counter), room)),
                    args.concurrency,
                    args.seconds,
                )
            )
            results[platform] = {
                "p50": pct(latencies, 50),
                "p99": pct(latencies, 99),
                "errors": errors + ours_errors + bare_errors + api_errors,
                "ours": ours_rate,
                "bare": bare_rate,
                "api": api_rate,
            }
            print(
                f"{platform}: {args.rate:.0f}/s for {args.latency_seconds:.0f} s on the production path"
            )
            print(f"  latency {distribution(latencies)}")
            print(
                f"  p99 {pct(latencies, 99) * 1000:.0f} ms = {pct(latencies, 99) / DEADLINES[platform]:.1%} "
                f"of the {DEADLINES[platform]:.0f} s deadline; errors {errors}"
            )
            print(
                f"  throughput ({args.concurrency} connections): ours {ours_rate:.0f}/s, bare signature "
                f"check {bare_rate:.0f}/s = {ours_rate / bare_rate:.2f}x of bare "
                f"(errors {ours_errors}/{bare_errors})"
            )
            print(
                f"  POST /contacts on the same server, same contacts: {api_rate:.0f}/s; "
                f"{platform} = {ours_rate / api_rate:.0%} of the core's own accept over HTTP"
            )
    finally:
        for process in (ours, bare, standins):
            process.stop()
    print(json.dumps(results))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
