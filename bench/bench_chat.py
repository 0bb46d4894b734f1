"""Chat commands (Mattermost, Teams, Rocket.Chat's outgoing webhook): answer latency at a
fixed rate against each platform's deadline, and throughput against a bare endpoint.

Usage: ``python bench/bench_chat.py [--platform mattermost|teams|rocketchat-outgoing|all]
[--rate 50] [--latency-seconds 6] [--seconds 3]`` (about 15 s per platform).

Three processes on loopback, each under uvicorn (one worker): the stand-ins (Rocket.Chat,
and a Mattermost server for the response_urls), the service with production defaults
(``FAST_PATH_BUDGET=1.5``: the contact is registered in the Rocket.Chat stand-in before the
answer; in-process worker; SQLite ``synchronous=FULL``), and a bare Starlette app whose
three routes only verify what the platform sends (the command token, the Teams HMAC, the
body's token) and answer 200. Requests are what each platform sends, each a different
contact (``contracts/chat-platforms.md``):

* **latency**: open loop at ``--rate`` requests/s on the service, measured from each
  request's scheduled time (queueing counts), p50/p99 against the platform's deadline;
* **throughput**: closed loop, ``--concurrency`` in flight, the service's answers/s as a
  share of the bare endpoint's, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_slack import closed_loop, distribution, free_port, open_loop, pct  # noqa: E402

MM_TOKEN = "benchmmtoken0123456789abcd"
TEAMS_TOKEN = base64.b64encode(b"bench-teams-outgoing-key-32bytes").decode()
RC_TOKEN = "bench-rc-outgoing-token-0123"
PLATFORMS = {
    # name: (path, the platform's deadline in s, what is stated about it)
    "mattermost": ("/mattermost/command", 30.0, "OutgoingIntegrationRequestsTimeout"),
    "teams": ("/teams/outgoing", 5.0, "Teams' 5 s"),
    "rocketchat-outgoing": ("/rocketchat/outgoing", None, "none enforced"),
}
Request = tuple[bytes, dict[str, str]]

# ----------------------------------------------------------------------------- servers


def serve_ours(port: int, db: str, rocketchat: str, mattermost: str, accept_only: bool) -> None:
    import uvicorn

    from adapter.ops.logs import configure_logging
    from adapter.settings import load_settings
    from adapter.web.app import create_app

    settings = load_settings(
        rocketchat_url=rocketchat,
        rocketchat_user_id="botUserId1",
        rocketchat_auth_token="bot-token",
        database_url=f"sqlite:///{db}",
        log_level="WARNING",
        # --accept-only: FAST_PATH_BUDGET=0 and no in-process worker (a separate worker
        # dyno): what the channel itself costs, without waiting for Rocket.Chat.
        **({"fast_path_budget": 0, "inprocess_worker": False} if accept_only else {}),
        channel_settings={
            "MATTERMOST_COMMAND_TOKEN": MM_TOKEN,
            "MATTERMOST_URL": mattermost,
            "TEAMS_WEBHOOK_SECRET": TEAMS_TOKEN,
            "ROCKETCHAT_OUTGOING_TOKEN": RC_TOKEN,
        },
    )
    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning",
        access_log=False, log_config=None,
    )  # fmt: skip


def serve_bare(port: int) -> None:
    """Verification only: what any endpoint for these platforms must do, then 200."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    teams_key = base64.b64decode(TEAMS_TOKEN)

    async def mattermost(request: StarletteRequest) -> Response:
        await request.body()
        ok = hmac.compare_digest(request.headers.get("authorization", ""), "Token " + MM_TOKEN)
        return JSONResponse({"text": "ok"}, status_code=200 if ok else 401)

    async def teams(request: StarletteRequest) -> Response:
        body = await request.body()
        mac = base64.b64encode(hmac.new(teams_key, body, hashlib.sha256).digest()).decode()
        ok = hmac.compare_digest(request.headers.get("authorization", ""), "HMAC " + mac)
        return JSONResponse({"type": "message", "text": "ok"}, status_code=200 if ok else 401)

    async def rocketchat(request: StarletteRequest) -> Response:
        data = json.loads(await request.body())
        ok = hmac.compare_digest(str(data.get("token")), RC_TOKEN)
        return JSONResponse({"text": "ok"}, status_code=200 if ok else 401)

    async def healthz(request: StarletteRequest) -> Response:
        return PlainTextResponse("ok")

    web = Starlette(
        routes=[
            Route("/mattermost/command", mattermost, methods=["POST"]),
            Route("/teams/outgoing", teams, methods=["POST"]),
            Route("/rocketchat/outgoing", rocketchat, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    uvicorn.run(web, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_standins(rc_port: int, mm_port: int) -> None:
    from tests.mattermost_standin import MattermostStandIn
    from tests.rocketchat_standin import RocketChatStandIn, StandInServer

    with (
        StandInServer(RocketChatStandIn().app, port=rc_port),
        StandInServer(MattermostStandIn().app, port=mm_port),
    ):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


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
                if httpx.get(self.health, timeout=1).status_code < 600:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)  # noqa: sleep-ok - polling a starting server
        raise TimeoutError(self.health)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ----------------------------------------------------------------------------- requests


def _name(i: int) -> str:
    out = ""
    for _ in range(4):
        out += chr(97 + i % 26)
        i //= 26
    return "Guest " + out.capitalize()


def _contact(i: int) -> str:
    return f"{_name(i)} guest{i}@example.com +1 415 555 {i % 10000:04d}"


def _id(i: int) -> str:
    return f"{i:026x}"[-26:].replace("0", "y")


def mattermost_stream(start: int, site: str) -> Iterator[Request]:
    for i in itertools.count(start):
        user = _id(i % 50 + 10**6)
        millis = int(time.time() * 1000)
        trigger = base64.b64encode(f"{_id(i)}:{user}:{millis}:c2ln".encode()).decode()
        body = urlencode(
            sorted(
                {
                    "channel_id": _id(7), "channel_name": "reception", "command": "/contact",
                    "response_url": f"{site}/hooks/commands/{_id(i + 10**9)}", "root_id": "",
                    "team_domain": "front-desk", "team_id": _id(8), "text": _contact(i),
                    "token": MM_TOKEN, "trigger_id": trigger, "user_id": user,
                    "user_name": "alex.agent",
                }.items()
            )
        ).encode()  # fmt: skip
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": f"Token {MM_TOKEN}",
        }
        yield body, headers


def teams_stream(start: int, _site: str) -> Iterator[Request]:
    key = base64.b64decode(TEAMS_TOKEN)
    for i in itertools.count(start):
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        body = json.dumps(
            {
                "type": "message", "id": str(10**12 + i), "timestamp": stamp,
                "channelId": "msteams", "from": {"id": "29:x", "aadObjectId": f"u{i % 50}"},
                "conversation": {"id": f"19:c;messageid={i}", "tenantId": "t1"},
                "text": f"<at>Contacts</at> {_contact(i)}",
                "channelData": {"team": {"id": "19:team"}, "tenant": {"id": "t1"}},
            }
        ).encode()  # fmt: skip
        mac = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
        yield body, {"Content-Type": "application/json", "Authorization": f"HMAC {mac}"}


def rocketchat_stream(start: int, _site: str) -> Iterator[Request]:
    for i in itertools.count(start):
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        body = json.dumps(
            {
                "token": RC_TOKEN, "bot": False, "trigger_word": "!contact",
                "channel_id": "room1", "channel_name": "front-desk", "message_id": f"m{i}",
                "timestamp": stamp, "user_id": f"u{i % 50}", "user_name": "alex.agent",
                "text": f"!contact {_contact(i)}", "siteUrl": "https://chat.example.com",
            }
        ).encode()  # fmt: skip
        yield body, {"Content-Type": "application/json"}


STREAMS = {
    "mattermost": mattermost_stream,
    "teams": teams_stream,
    "rocketchat-outgoing": rocketchat_stream,
}

# ----------------------------------------------------------------------------- main


def bench_platform(
    name: str, ours: str, bare: str, site: str, args: argparse.Namespace, offset: int
) -> dict[str, Any]:
    path, deadline, stated = PLATFORMS[name]
    stream = STREAMS[name]
    n = int(args.rate * args.latency_seconds) + 20
    latency_requests = list(itertools.islice(stream(offset, site), n))
    latencies, lat_errors = asyncio.run(
        open_loop(ours + path, latency_requests, args.rate, args.latency_seconds)
    )
    ours_rate, ours_errors, _ = asyncio.run(
        closed_loop(ours + path, stream(offset + 100_000, site), args.concurrency, args.seconds)
    )
    bare_rate, bare_errors, _ = asyncio.run(
        closed_loop(bare + path, stream(offset + 200_000, site), args.concurrency, args.seconds)
    )
    p50, p99 = pct(latencies, 50), pct(latencies, 99)
    limit = f"{deadline:.0f} s ({stated})" if deadline else f"{stated}; our target 2.5 s"
    print(f"\n== {name}  (deadline {limit})")
    path_name = "accept only (no fast path)" if args.accept_only else "production path"
    print(f"  latency at {args.rate:g}/s, {path_name}: {distribution(latencies)}")
    if deadline:
        print(f"    p99 = {p99 / deadline:.1%} of the deadline; errors {lat_errors}")
    print(
        f"  throughput: ours {ours_rate:7.1f}/s (errors {ours_errors}), bare verify-only "
        f"{bare_rate:7.1f}/s (errors {bare_errors}): ours = {ours_rate / bare_rate:.1%} of bare"
    )
    return {"platform": name, "p50_ms": p50 * 1000, "p99_ms": p99 * 1000, "ours": ours_rate,
            "bare": bare_rate}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--platform", default="all", choices=["all", *PLATFORMS])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=2.0, help="per throughput run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--accept-only", action="store_true",
        help="the service with FAST_PATH_BUDGET=0 and a separate worker (not production)",
    )  # fmt: skip
    parser.add_argument("--serve-ours", nargs=4, metavar=("PORT", "DB", "RC", "MM"))
    parser.add_argument("--serve-bare", type=int)
    parser.add_argument("--serve-standins", nargs=2, type=int)
    args = parser.parse_args()
    if args.serve_ours:
        port, db, rc, mm = args.serve_ours
        return serve_ours(int(port), db, rc, mm, args.accept_only)
    if args.serve_bare:
        return serve_bare(args.serve_bare)
    if args.serve_standins:
        return serve_standins(*args.serve_standins)

    rc_port, mm_port, ours_port, bare_port = (free_port() for _ in range(4))
    rc, mm = f"http://127.0.0.1:{rc_port}", f"http://127.0.0.1:{mm_port}"
    ours, bare = f"http://127.0.0.1:{ours_port}", f"http://127.0.0.1:{bare_port}"
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "bench.db")
        processes = [
            Process(["--serve-standins", str(rc_port), str(mm_port)], rc + "/api/info"),
            Process(
                ["--serve-ours", str(ours_port), db, rc, mm]
                + (["--accept-only"] if args.accept_only else []),
                ours + "/healthz",
            ),
            Process(["--serve-bare", str(bare_port)], bare + "/healthz"),
        ]
        try:
            for process in processes:
                process.wait_ready()
            names = list(PLATFORMS) if args.platform == "all" else [args.platform]
            for index, name in enumerate(names):
                bench_platform(name, ours, bare, mm, args, offset=index * 1_000_000)
        finally:
            for process in reversed(processes):
                process.stop()


if __name__ == "__main__":
    main()
