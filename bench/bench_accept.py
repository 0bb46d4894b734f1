"""``POST /contacts`` throughput of the service against ``bench/accept_reference.py``, in rounds.

Both servers run side by side (one uvicorn worker each, SQLite WAL, ``synchronous=FULL``;
the service with FAST_PATH_BUDGET=0, INPROCESS_WORKER=false and Rocket.Chat refusing
connections). Each round runs wrk against the reference and then the service at each
concurrency, a new person per request, so the two are measured back to back under the
same load on a shared machine. The table gives each side's median req/s over the rounds,
its spread (min-max), and the median of the per-round ratios.

    .venv/bin/python bench/bench_accept.py [--rounds 5] [--seconds 4] [--clients 1,16,64]
        [--reference PATH/TO/accept_reference.py] [--baseline SOURCE_TREE]

``--baseline``: also measure the service from another source tree (e.g. ``git archive
main | tar -x -C /tmp/base``) in the same rounds, for a before/after under the same load.
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
from typing import Any

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
    parser.add_argument("--baseline", type=Path, help="another source tree of the service")
    args = parser.parse_args()
    clients_list = [int(c) for c in args.clients.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="bench-accept-"))
    ref_port, svc_port, base_port = free_port(), free_port(), free_port()
    ref_url, svc_url = f"http://127.0.0.1:{ref_port}", f"http://127.0.0.1:{svc_port}"
    base_url = f"http://127.0.0.1:{base_port}"
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
            if args.baseline:
                base_env = {**env, "PYTHONPATH": str(args.baseline.resolve())}
                base_env["DATABASE_URL"] = f"sqlite:///{folder / 'baseline.db'}"
                base_args = [*svc_args[:-1], str(base_port)]
                log = folder / "baseline.log"
                stack.enter_context(server(base_args, base_env, base_url, log))
            for round_ in range(args.rounds):
                line = []
                for clients in clients_list:
                    ref, ref_bad = wrk(ref_url, folder, clients, args.seconds)
                    svc, svc_bad = wrk(svc_url, folder, clients, args.seconds)
                    if args.baseline:
                        base, _ = wrk(base_url, folder, clients, args.seconds)
                        rates.setdefault(("baseline", clients), []).append(base)
                        ratios.setdefault(-clients, []).append(base / ref if ref else 0.0)
                    rates.setdefault(("reference", clients), []).append(ref)
                    rates.setdefault(("service", clients), []).append(svc)
                    ratios.setdefault(clients, []).append(svc / ref if ref else 0.0)
                    bad = " ".join(b for b in (ref_bad and f"ref {ref_bad}", svc_bad) if b)
                    base_text = f"/{base:.0f}" if args.baseline else ""
                    line.append(f"c={clients}: {ref:.0f}/{svc:.0f}{base_text} {bad}".strip())
                print(f"round {round_ + 1}: " + "; ".join(line), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    names = ["service", "baseline"] if args.baseline else ["service"]
    print(
        f"\n{'c':>3} {'reference/s (spread)':>22}"
        + "".join(f"{n + '/s (spread)':>22} {'÷ reference':>16}" for n in names)
    )
    summary: dict[str, Any] = {}
    for clients in clients_list:
        ref = rates["reference", clients]
        line = f"{clients:>3} {statistics.median(ref):9.0f} ({min(ref):.0f}-{max(ref):.0f})"
        for name in names:
            got = rates[name, clients]
            ratio = ratios[clients if name == "service" else -clients]
            line += f" {statistics.median(got):11.0f} ({min(got):.0f}-{max(got):.0f})"
            line += f" {statistics.median(ratio):7.0%} ({min(ratio):.0%}-{max(ratio):.0%})"
            summary[f"{name} c={clients}"] = {"rates": got, "ratios": ratio}
        summary[f"reference c={clients}"] = {"rates": ref}
        print(line)
    if os.environ.get("BENCH_JSON"):
        Path(os.environ["BENCH_JSON"]).write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
