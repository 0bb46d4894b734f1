"""Run the Procfile's processes the way Heroku runs dynos, and watch the Rocket.Chat stand-in.

``Formation`` reads the ``Procfile`` and starts each process type as Heroku does: the
command line through ``bash -c`` (so ``$PORT`` expands) in a process group of its own, with
``PORT`` set per ``web`` process. ``Dyno.terminate()`` sends SIGTERM to the whole group,
as the dyno manager does on a restart, and ``kill()`` SIGKILL. ``RecordingStandIn`` wraps
the stand-in's ASGI app to time-stamp every contact registration (token, start, end,
status), which tells what was in flight at a given instant.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.delivery_support import healthy, read_body, wait_for

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's bin: contact-adapter lives here
CONTACT_POST_PATHS = ("/api/v1/omnichannel/contact", "/api/v1/omnichannel/contacts")


def read_procfile(path: Path = ROOT / "Procfile") -> dict[str, str]:
    """``{process type: command}``, parsed like Heroku and honcho do."""
    processes: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line)
        if match:
            processes[match.group(1)] = match.group(2).strip()
    return processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(**settings: str) -> dict[str, str]:
    """The environment of a dyno: this venv first on PATH, JSON logs, and ``settings``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ROCKETCHAT_", "DATABASE_", "PYTEST_"))
    }
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        LOG_FORMAT="json",
        WEB_CONCURRENCY="1",
    )
    env.update(settings)
    return env


class Dyno:
    """One running process of the formation (``web.1``, ``worker.2``…)."""

    def __init__(self, name: str, command: str, env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.cwd = cwd
        self.log_path = cwd / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = int(env["PORT"]) if "PORT" in env else None
        self.returncode: int | None = None
        self.exited_at: float | None = None

    @property
    def url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Dyno:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            ["bash", "-c", self.command],
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, like a dyno
        )
        log.close()
        self.returncode = None
        self.exited_at = None
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> float:
        assert self.process is not None
        sent = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        return sent

    def terminate(self) -> float:
        """SIGTERM to every process of the dyno; returns when it was sent (monotonic)."""
        return self.signal(signal.SIGTERM)

    def kill(self) -> float:
        return self.signal(signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        self.returncode = self.process.wait(timeout)
        self.exited_at = time.monotonic()
        return self.returncode

    def exit_code(self, timeout: float, after: str = "the signal") -> int:
        """Like :meth:`wait`, but a process still running fails the test, saying so."""
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running {timeout:.1f}s after {after}:\n{self.output()[-2000:]}"
            ) from None

    def stop(self, timeout: float = 35.0) -> None:
        """Clean-up: SIGTERM, then SIGKILL if it does not go within ``timeout``."""
        if not self.running:
            return
        self.terminate()
        try:
            self.wait(max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait(10)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """For web dynos: until ``/healthz`` answers."""

        def answering() -> bool:
            if not self.running:
                raise RuntimeError(f"{self.name} exited during start-up:\n{self.output()[-3000:]}")
            return healthy(self.url)

        wait_for(answering, timeout, f"{self.name} answering /healthz", show=self.output)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_lines(self) -> list[dict[str, Any]]:
        """Every line of output as JSON (raises on a line that is not JSON)."""
        lines = []
        for number, line in enumerate(self.output().splitlines(), 1):
            if not line.strip():
                continue
            try:
                lines.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"{self.name}:{number} is not JSON: {line!r}") from None
        return lines


class Formation:
    """The Procfile's process types, started as numbered dynos in one working directory."""

    def __init__(self, env: dict[str, str], cwd: Path, procfile: Path = ROOT / "Procfile") -> None:
        self.processes = read_procfile(procfile)
        self.env = env
        self.cwd = cwd
        self.dynos: list[Dyno] = []
        self._counts: Counter[str] = Counter()

    def dyno(self, kind: str, **env: str) -> Dyno:
        """A new (not yet started) dyno of process type ``kind``; web dynos get a ``PORT``."""
        self._counts[kind] += 1
        name = f"{kind}.{self._counts[kind]}"
        dyno_env = {**self.env, "DYNO": name, **env}
        if kind == "web":
            dyno_env.setdefault("PORT", str(free_port()))
        dyno = Dyno(name, self.processes[kind], dyno_env, self.cwd)
        self.dynos.append(dyno)
        return dyno

    def start(self, kind: str, **env: str) -> Dyno:
        return self.dyno(kind, **env).start()

    def restart(self, dyno: Dyno) -> Dyno:
        """Start a dyno again after it stopped (same name, same port, new process)."""
        assert not dyno.running
        return dyno.start()

    def run(self, kind: str, timeout: float = 60.0, **env: str) -> subprocess.CompletedProcess[str]:
        """A one-off process such as ``release``, to completion."""
        return subprocess.run(
            ["bash", "-c", self.processes[kind]],
            env={**self.env, "DYNO": f"{kind}.1", **env},
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def stop_all(self, timeout: float = 35.0) -> None:
        """SIGTERM to every running dyno at once; SIGKILL to those still running after
        ``timeout`` seconds in all."""
        end = time.monotonic() + timeout
        for dyno in self.dynos:
            if dyno.running:
                dyno.terminate()
        for dyno in self.dynos:
            dyno.stop(end - time.monotonic())


@dataclass
class ContactPost:
    """One registration call the stand-in received."""

    token: str | None
    started: float  # time.monotonic()
    ended: float | None = None
    status: int | None = None


class RecordingStandIn:
    """ASGI wrapper around the stand-in's app: times every contact registration."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.posts: list[ContactPost] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in CONTACT_POST_PATHS
        ):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        try:
            token = json.loads(body).get("token")
        except (ValueError, AttributeError):
            token = None
        post = ContactPost(token=token, started=time.monotonic())
        with self._lock:
            self.posts.append(post)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def watch(message: Any) -> None:
            if message["type"] == "http.response.start":
                post.status = int(message["status"])
            if message["type"] == "http.response.body" and not message.get("more_body"):
                post.ended = time.monotonic()
            await send(message)

        await self.app(scope, replay, watch)

    def snapshot(self) -> list[ContactPost]:
        with self._lock:
            return list(self.posts)

    def in_flight(self) -> int:
        return sum(1 for p in self.snapshot() if p.ended is None)

    def successes_per_token(self) -> Counter[str]:
        return Counter(p.token for p in self.snapshot() if p.status == 200 and p.token)


class Deadline:
    """One time budget for a whole test, from which every wait takes what is left.

    pytest-timeout kills a test without saying what it was waiting for; a test whose waits
    all come out of one deadline well inside that timeout fails instead, naming the step
    that ran out (``left(cap, what)``: at most ``cap`` seconds, never past the deadline).
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self, cap: float = float("inf"), what: str = "the next step") -> float:
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"the test's {self.seconds:.0f}s deadline passed before {what} could start"
            )
        return min(cap, remaining)


def iter_json_lines(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        if line.strip():
            yield json.loads(line)
