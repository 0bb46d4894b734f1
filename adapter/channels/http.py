"""The HTTP helpers every channel and the app share: error answers, bearer tokens, capped
bodies and the client's address."""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = ["BodyTooLarge", "bearer_ok", "client_address", "error_response", "read_body"]


def error_response(status: int, message: str, **extra: Any) -> JSONResponse:
    """Every error a user meets: what happened and what to do, as JSON."""
    return JSONResponse({"error": message, **extra}, status_code=status)


def bearer_ok(request: Request, secret: str | None) -> bool:
    """Constant-time check of an ``Authorization: Bearer …`` header."""
    if not secret:
        return False
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), secret.encode()
    )


class BodyTooLarge(Exception):
    """The request body exceeds the channel's cap."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes")
        self.limit = limit


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (without reading it all) anything over ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge(limit)
        except ValueError:
            pass
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # let request.json()/form() reuse it
    return body


def client_address(request: Request) -> str:
    """Whose request this is, for per-address limits (the forms' rate limit, the admin
    login's throttle).

    Behind a proxy (Heroku's router, nginx…) the peer is the proxy, and the client is the
    address the proxy **appended** to ``X-Forwarded-For``: its last entry. Never the first
    entry: a client writes that one itself, and Heroku's router keeps what the client sent
    in front of the address it appends. (uvicorn, told to trust any proxy as on Heroku,
    takes the first one for ``request.client``: a client could pick a new address for
    each request and never be limited.) Without the header, the peer's address.
    """
    forwarded = [
        entry.strip()
        for value in request.headers.getlist("x-forwarded-for")
        for entry in value.split(",")
        if entry.strip()
    ]
    if forwarded:
        return forwarded[-1]
    return request.client.host if request.client else "?"
