"""The reference for a durable accept: the least work a correct ``POST /contacts`` must do.

A raw ASGI app under the same uvicorn as the service (one process, one worker) that, per
request, checks the bearer token, parses the JSON ``{name, email, phone}``, runs the same
checks as the service (``email_validator.validate_email(..., check_deliverability=False)``,
``phonenumbers.parse`` + ``is_valid_number`` + E.164), derives the contact token (sha256 of
the normalised email, as the service does) and answers 202 with an id only once its row is
committed to SQLite (WAL, ``synchronous=FULL``). Commits are grouped: requests append their
row to a pending list; one writer task takes the whole list, inserts it and commits it in a
thread (one fsync for the batch) and then resolves every waiter. No dedupe, no people table,
no events, no metrics: what is left is what no correct durable accept can skip.

    .venv/bin/python bench/accept_reference.py --port 8100 [--database /tmp/ref.db]
        [--sync FULL|NORMAL] [--api-token TOKEN]

``bench/bench_states.py --part accept`` starts it and compares the service with it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import sqlite3
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import email_validator
import phonenumbers

SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    phone TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""
INSERT = "INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, 'pending', ?)"
JSON_HEADERS = [(b"content-type", b"application/json")]
MAX_BODY = 256 * 1024


class GroupCommit:
    """One writer: every pending row goes into the next transaction, one commit per batch."""

    def __init__(self, path: str, synchronous: str) -> None:
        self.path = path
        self.synchronous = synchronous
        self.pending: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self.batches = 0
        self.rows = 0
        self._wake = asyncio.Event()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute(SCHEMA)
        self._conn = conn

    def _commit(self, rows: list[tuple[Any, ...]]) -> None:
        assert self._conn is not None
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(INSERT, rows)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")  # the fsync (WAL, synchronous=FULL)

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._open)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._conn is not None:
            self._conn.close()
        self._thread.shutdown(wait=True)

    def insert(self, row: tuple[Any, ...]) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((row, waiter))
        self._wake.set()
        return waiter

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.pending:
                batch, self.pending = self.pending, []
                try:
                    await loop.run_in_executor(self._thread, self._commit, [r for r, _ in batch])
                except Exception as exc:  # every waiter of the batch hears it
                    for _, waiter in batch:
                        if not waiter.done():
                            waiter.set_exception(exc)
                    continue
                self.batches += 1
                self.rows += len(batch)
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_result(None)


def check(data: Any) -> tuple[dict[str, str], dict[str, str]]:
    """The service's checks on ``{name, email, phone}`` (all three required, its default)."""
    errors: dict[str, str] = {}
    if not isinstance(data, dict):
        return {}, {"body": "expected a JSON object"}
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        errors["name"] = "required"
    email = data.get("email")
    normalized = ""
    if not isinstance(email, str) or not email.strip():
        errors["email"] = "required"
    else:
        try:
            normalized = email_validator.validate_email(
                email.strip(), check_deliverability=False
            ).normalized
        except email_validator.EmailNotValidError as exc:
            errors["email"] = str(exc)
    phone = data.get("phone")
    e164 = ""
    if not isinstance(phone, str) or not phone.strip():
        errors["phone"] = "required"
    else:
        try:
            number = phonenumbers.parse(phone, None)
        except phonenumbers.NumberParseException as exc:
            errors["phone"] = str(exc)
        else:
            if phonenumbers.is_valid_number(number):
                e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            else:
                errors["phone"] = "not a valid phone number"
    if errors:
        return {}, errors
    assert isinstance(name, str)
    return {"name": name.strip(), "email": normalized, "phone": e164}, {}


def contact_token(email: str) -> str:
    return "oca-" + hashlib.sha256(("email:" + email.lower()).encode()).hexdigest()[:32]


class ReferenceApp:
    def __init__(self, database: str, synchronous: str, api_token: str) -> None:
        self.writer = GroupCommit(database, synchronous)
        self.authorization = f"Bearer {api_token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        assert scope["type"] == "http"
        path, method = scope["path"], scope["method"]
        if path == "/contacts" and method == "POST":
            status, body = await self._contacts(scope, receive)
        elif path == "/healthz" and method == "GET":
            status, body = 200, {"status": "ok"}
        elif path == "/stats" and method == "GET":
            status, body = 200, {"batches": self.writer.batches, "rows": self.writer.rows}
        else:
            status, body = 404, {"error": "not found"}
        payload = json.dumps(body, separators=(",", ":")).encode()
        await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS})
        await send({"type": "http.response.body", "body": payload})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.writer.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.writer.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _contacts(self, scope: dict[str, Any], receive: Any) -> tuple[int, dict[str, Any]]:
        given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        if not hmac.compare_digest(given, self.authorization):
            return 401, {"error": "unauthorized"}
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                return 413, {"error": "body too large"}
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        try:
            data = json.loads(b"".join(chunks))
        except ValueError:
            return 400, {"error": "invalid JSON"}
        contact, errors = check(data)
        if errors:
            return 422, {"errors": errors}
        delivery_id = uuid.uuid4().hex
        row = (
            delivery_id,
            contact_token(contact["email"]),
            contact["name"],
            contact["email"],
            contact["phone"],
            time.time(),
        )
        await self.writer.insert(row)
        return 202, {"delivery_id": delivery_id, "status": "pending"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--database", help="SQLite file (default: a new temporary one)")
    parser.add_argument("--sync", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--api-token", default="bench-api-token-0123456789")
    args = parser.parse_args()
    import uvicorn

    database = args.database or str(
        Path(tempfile.mkdtemp(prefix="accept-reference-")) / "reference.db"
    )
    app = ReferenceApp(database, args.sync, args.api_token)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        workers=1,
        log_config=None,
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
