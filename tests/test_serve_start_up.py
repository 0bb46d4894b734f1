"""``contact-adapter serve`` as started from a folder with a ``.env``: PORT and HOST come from
it (the environment's PORT, as Heroku sets it, wins), ``make run`` passes neither, and the
start-up log says, one line per channel, whether it is on and what to set when it is off,
and warns when the Rocket.Chat credentials are missing."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapter.channels import discover_channels
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """``contact-adapter serve`` (no --host/--port) in ``folder``, until stopped."""

    def __init__(self, folder: Path, **env: str) -> None:
        base = {k: v for k, v in os.environ.items() if k != "CONTACT_ADAPTER_HOME"}
        self.log = folder / "serve.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "adapter.ops.cli", "serve"],
                cwd=folder,
                env={**base, "PYTHONPATH": str(ROOT), "SHUTDOWN_GRACE": "2", **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def up(self, port: int) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(self.log.read_text())
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                found.append(json.loads(line))
        return found

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[Served] = []

    def start(folder: Path, **env: str) -> Served:
        served = Served(folder, **env)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


def test_port_and_host_from_dotenv_and_one_line_per_channel(tmp_path: Path, serve: Any) -> None:
    port = free_port()
    (tmp_path / ".env").write_text(
        f"PORT={port}\nHOST=127.0.0.1\nTAWKTO_WEBHOOK_SECRET=tawk-secret\nINPROCESS_WORKER=false\n"
    )
    served = serve(tmp_path)
    wait_until(lambda: served.up(port), timeout=60, what=f"serve on PORT={port} from .env")

    lines = wait_until(
        lambda: (found := served.lines()) and any(x["event"] == "started" for x in found) and found,
        timeout=30,
        what="the started line",
    )
    channels = [line for line in lines if line["event"] == "channel"]
    assert len(channels) == len(discover_channels())  # one line per channel
    by_name = {line["channel"]: line for line in channels}
    assert by_name["webhook:tawkto"]["on"] is True
    assert by_name["webhook:tawkto"]["path"] == "/webhooks/tawkto"
    chatwoot = by_name["webhook:chatwoot"]
    assert chatwoot["on"] is False and "set CHATWOOT_WEBHOOK_SECRET" in chatwoot["reason"]
    assert by_name["slack"]["on"] is False and "SLACK_SIGNING_SECRET" in by_name["slack"]["reason"]
    assert by_name["api"]["on"] is False and "API_TOKEN" in by_name["api"]["reason"]
    assert by_name["form"]["on"] is True
    [warning] = [line for line in lines if line["event"] == "rocketchat_credentials_missing"]
    assert warning["level"] == "warning"
    assert warning["missing"] == "ROCKETCHAT_USER_ID,ROCKETCHAT_AUTH_TOKEN"
    assert "none is delivered until they are set" in warning["message"]
    assert "tawk-secret" not in served.log.read_text()


def test_the_environment_port_wins_over_dotenv_as_on_heroku(tmp_path: Path, serve: Any) -> None:
    dotenv_port, heroku_port = free_port(), free_port()
    (tmp_path / ".env").write_text(f"PORT={dotenv_port}\nINPROCESS_WORKER=false\n")
    served = serve(tmp_path, PORT=str(heroku_port))
    wait_until(lambda: served.up(heroku_port), timeout=60, what="serve on the environment's PORT")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{dotenv_port}/healthz", timeout=1)


def test_make_run_passes_no_host_or_port_unless_given() -> None:
    def recipe(*args: str) -> str:
        result = subprocess.run(
            ["make", "-n", "-C", str(ROOT), "run", *args],
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if k not in ("PORT", "HOST")},
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        [serve_line] = [line for line in result.stdout.splitlines() if " serve" in line]
        return serve_line

    assert "--port" not in recipe() and "--host" not in recipe()
    assert "--port 9000" in recipe("PORT=9000")
