"""``POST /contacts`` throughput of the service against ``bench/accept_reference.py``, in rounds.

Both servers run side by side (one uvicorn worker each, SQLite WAL, ``synchronous=FULL``;
the service with FAST_PATH_BUDGET=0, INPROCESS_WORKER=false and Rocket.Chat refusing
connections). Each round runs wrk against the reference and then the service at each
concurrency, a new person per request, so the two are measured back to back under the
same load on a shared machine. The table gives each side's median req/s over the rounds,
its spread (min-max), and the median of the per-round ratios.

    .venv/bin/python bench/bench_accept.py [--rounds 5] [--seconds 4] [--clients 1,16,64]
        [--reference PATH/TO/accept_reference.py]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789"
LUA = """
-- a new person per request: RUN is unique per wrk run, each thread has its own id
-- (math.random is not seeded per thread: every thread would repeat the same emails)
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
counter = 0
request = function()
  counter = counter + 1
  local body = string.format(
    '{"name":"Guest %d","email":"gRUN-%d-%d@example.com","phone":"+14155552671"}',
    counter, tid, counter)
  return wrk.format("POST", "/contacts", {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer TOKEN"}, body)
end
""".replace("TOKEN", TOKEN)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(args: list[str], env: dict[str, str] | None, url: str, log: Path) -> Iterator[int]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(url + "/healthz", timeout=1).read()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{args[0]} did not start: see {log}") from None
                    time.sleep(0.1)
            yield proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wrk(url: str, folder: Path, clients: int, seconds: int) -> tuple[float, str]:
    threads = 1 if clients == 1 else 2
    script = folder / f"accept-{uuid.uuid4().hex[:8]}.lua"
    script.write_text(LUA.replace("RUN", script.stem[7:]))
    out = subprocess.run(
        [
            *("wrk", f"-t{threads}", f"-c{clients}", f"-d{seconds}s", "--timeout", "10s"),
            *("-s", str(script), url + "/contacts"),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return float(rate.group(1)) if rate else 0.0, f"{bad.group(1)} non-2xx" if bad else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument(
        "--reference", default=str(ROOT / "bench" / "accept_reference.py"), type=Path
    )
    args = parser.parse_args()
    clients_list = [int(c) for c in args.clients.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="bench-accept-"))
    ref_port, svc_port = free_port(), free_port()
    ref_url, svc_url = f"http://127.0.0.1:{ref_port}", f"http://127.0.0.1:{svc_port}"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(folder),
        "DATABASE_URL": f"sqlite:///{folder / 'service.db'}",
        "ROCKETCHAT_URL": f"http://127.0.0.1:{free_port()}",
        "ROCKETCHAT_USER_ID": "u",
        "ROCKETCHAT_AUTH_TOKEN": "t",
        "API_TOKEN": TOKEN,
        "FAST_PATH_BUDGET": "0",
        "INPROCESS_WORKER": "false",
        "LOG_LEVEL": "WARNING",
        "SQLITE_SYNCHRONOUS": "FULL",
    }
    adapter = str(Path(sys.executable).parent / "contact-adapter")
    rates: dict[tuple[str, int], list[float]] = {}
    ratios: dict[int, list[float]] = {}
    try:
        with ExitStack() as stack:
            ref_args = [sys.executable, str(args.reference), "--port", str(ref_port)]
            ref_args += ["--database", str(folder / "reference.db"), "--sync", "FULL"]
            ref_args += ["--api-token", TOKEN]
            stack.enter_context(server(ref_args, None, ref_url, folder / "reference.log"))
            svc_args = [adapter, "serve", "--host", "127.0.0.1", "--port", str(svc_port)]
            pid = stack.enter_context(server(svc_args, env, svc_url, folder / "service.log"))
            print(f"service pid {pid}; logs in {folder}", flush=True)
            for round_ in range(args.rounds):
                line = []
                for clients in clients_list:
                    ref, ref_bad = wrk(ref_url, folder, clients, args.seconds)
                    svc, svc_bad = wrk(svc_url, folder, clients, args.seconds)
                    rates.setdefault(("reference", clients), []).append(ref)
                    rates.setdefault(("service", clients), []).append(svc)
                    ratios.setdefault(clients, []).append(svc / ref if ref else 0.0)
                    bad = " ".join(b for b in (ref_bad and f"ref {ref_bad}", svc_bad) if b)
                    line.append(f"c={clients}: {ref:.0f}/{svc:.0f} {bad}".strip())
                print(f"round {round_ + 1}: " + "; ".join(line), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\n{'c':>3} {'reference/s (spread)':>24} {'service/s (spread)':>22} {'ratio':>16}")
    summary = {}
    for clients in clients_list:
        ref, svc, ratio = rates["reference", clients], rates["service", clients], ratios[clients]
        print(
            f"{clients:>3} {statistics.median(ref):9.0f} ({min(ref):.0f}-{max(ref):.0f})"
            f" {statistics.median(svc):9.0f} ({min(svc):.0f}-{max(svc):.0f})"
            f" {statistics.median(ratio):7.0%} ({min(ratio):.0%}-{max(ratio):.0%})"
        )
        summary[clients] = {"reference": ref, "service": svc, "ratio": ratio}
    if os.environ.get("BENCH_JSON"):
        Path(os.environ["BENCH_JSON"]).write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
