"""The Starlette application: health, readiness, deliveries, and every channel's routes.

``create_app(settings)`` builds it (tests use this); ``adapter.app:app`` is the
instance uvicorn serves (:class:`ServiceApp`), its settings read and checked when
``adapter.app`` is imported, before uvicorn runs the lifespan or binds.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from adapter.channels.base import connect_channels
from adapter.channels.http import bearer_ok, error_response
from adapter.delivery.worker import DeliveryWorker
from adapter.ops import metrics
from adapter.ops.logs import configure_logging
from adapter.ops.runtime import Runtime
from adapter.ops.startup import database_label, log_start_up
from adapter.settings import Settings, load_settings
from adapter.web.admin import admin_routes as admin_page_routes
from adapter.web.admin_api import admin_routes
from adapter.web.privacy_api import privacy_routes
from adapter.web.status_page import status_route

__all__ = ["ServiceApp", "create_app"]

log = structlog.get_logger("adapter.app")


class RequestIdMiddleware:
    """Bind the router's request id (or a new one) to every log line of the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for key, value in scope.get("headers", []):
            if key in (b"x-request-id", b"x-amzn-trace-id"):
                request_id = value.decode("latin-1")[:100]
                break
        request_id = request_id or uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the service for ``settings`` (read from the environment when omitted)."""
    settings = settings or load_settings()
    # Built now (the routes need the queue), migrated at start-up, closed at shutdown.
    runtime = Runtime.build(settings)
    queue, client = runtime.queue, runtime.client
    context, channels = connect_channels(settings, queue)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await runtime.migrate()
            for channel in channels:
                startup = getattr(channel, "startup", None)
                if startup is not None:
                    await startup(context)
            worker: DeliveryWorker | None = None
            task = None
            if settings.inprocess_worker:
                import asyncio

                worker = DeliveryWorker(queue)
                task = asyncio.create_task(worker.run())
                _stop_on_signal(worker.stop)  # no claim after SIGTERM (see its docstring)
            log_start_up(settings, channels, process="web")
            log.info(
                "started",
                version=_version(),
                database=database_label(settings),
                inprocess_worker=settings.inprocess_worker,
            )
            if not _behind_proxy(settings):
                log.warning(
                    "no_proxy_in_front",
                    message="per-address limits (the forms' FORM_RATE_LIMIT, the admin "
                    "login's throttle) trust X-Forwarded-For's last entry, which a client "
                    "reaching the service directly writes itself: they can be bypassed. "
                    "Serve behind a proxy that appends the client's address (Heroku's "
                    "router, nginx, a load balancer) and set BEHIND_PROXY=true",
                )
            try:
                yield
            finally:
                if worker is not None and task is not None:
                    worker.stop()
                    await task
                for channel in channels:
                    shutdown = getattr(channel, "shutdown", None)
                    if shutdown is not None:
                        await shutdown(context)
        finally:
            await runtime.aclose()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        report = await client.readiness()
        body: dict[str, Any] = {
            "status": "ok" if report.ok else "unavailable",
            "reason": report.reason,
            "rocketchat_version": report.version,
            "strategy": report.strategy,
        }
        if queue.paused_reason:
            body.update(status="unavailable", reason=f"delivery paused: {queue.paused_reason}")
            return JSONResponse(body, status_code=503)
        return JSONResponse(body, status_code=200 if report.ok else 503)

    async def delivery(request: Request) -> Response:
        record = await queue.get(request.path_params["delivery_id"])
        if record is None:
            return error_response(
                404, "no delivery with this id: check the id from the Location header"
            )
        admin = settings.admin_token.get_secret_value() if settings.admin_token else None
        if admin and bearer_ok(request, admin):
            history = [asdict(a) for a in await queue.history(record.id)]
            return JSONResponse({**record.detail(), "history": history})
        return JSONResponse(record.public())

    async def metrics_endpoint(request: Request) -> Response:
        token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
        if not token:
            return error_response(404, "metrics are off: set METRICS_TOKEN to turn them on")
        if not bearer_ok(request, token):
            return error_response(401, "send Authorization: Bearer <METRICS_TOKEN>")
        from prometheus_client import generate_latest

        metrics.refresh(await queue.stats())  # the database-backed gauges: global
        return Response(generate_latest(metrics.REGISTRY), media_type="text/plain; version=0.0.4")

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/deliveries/{delivery_id:str}", delivery, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *admin_routes(settings, queue),
        *privacy_routes(settings, queue),
    ]
    by_channel: dict[int, list[BaseRoute]] = {}
    for channel in channels:
        by_channel[id(channel)] = list(channel.routes(context))
        routes.extend(by_channel[id(channel)])
    routes.extend(admin_page_routes(context))  # the /admin page (adapter/web/admin.py)
    routes.append(status_route(settings, queue, channels, by_channel, _version()))  # GET /

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={Exception: _internal_error, 404: _not_found, 405: _not_allowed},
    )
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.queue = queue
    app.state.client = client
    app.state.context = context
    app.state.channels = channels
    return app


def _stop_on_signal(stop: Callable[[], None]) -> None:
    """Call ``stop`` as soon as SIGTERM or SIGINT arrives, then let the server handle it.

    uvicorn shuts down in order: it stops accepting, waits for open requests (up to its
    graceful timeout), and only then runs the lifespan's shutdown. Stopping the in-process
    worker there would let it claim rows all that time and drain on top of it, past
    Heroku's 30 s. So the worker stops at the signal: its drain (up to SHUTDOWN_GRACE)
    runs while uvicorn waits for requests. Only where the server has installed a Python
    handler (uvicorn in the main thread); it restores its own handlers when it is done.
    """
    import asyncio
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue  # the default action (or ignored): not ours to change

        def handler(
            signum: int, frame: Any, previous: Callable[[int, Any], Any] = previous
        ) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(stop)
            previous(signum, frame)

        signal.signal(sig, handler)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled_error", path=request.url.path)
    return error_response(
        500, "the service hit an unexpected error; nothing was lost if you got no 2xx: try again"
    )


def _behind_proxy(settings: Settings) -> bool:
    """BEHIND_PROXY, else whether this is a Heroku dyno (its router appends the address)."""
    if settings.behind_proxy is not None:
        return settings.behind_proxy
    return bool(os.environ.get("DYNO"))


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(404, f"nothing at {request.url.path}: see the README for the endpoints")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    # Starlette's 405 names the route's methods in its headers: keep that Allow header.
    allow = (getattr(exc, "headers", None) or {}).get("Allow")
    response = error_response(
        405,
        f"{request.method} is not allowed on {request.url.path}"
        + (f": use {allow}" if allow else ""),
    )
    if allow:
        response.headers["Allow"] = allow
    return response


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("omnichannel-contact-adapter")
    except PackageNotFoundError:
        return "0+unknown"


class ServiceApp:
    """``adapter.app:app``: the service for ``settings`` (already checked), built on first
    use, i.e. in the server's event loop and after uvicorn configured its own logging."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._app: Starlette | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            configure_logging(self.settings.log_level, self.settings.log_format)
            self._app = create_app(self.settings)
        await self._app(scope, receive, send)
