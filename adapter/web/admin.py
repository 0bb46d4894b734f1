"""The admin page at ``/admin``: what happened to every contact, and "retry" for what failed.

Behind ``ADMIN_TOKEN`` (off, with a 404 naming it, when unset). Logging in posts the
token to a form; the answer is a signed session cookie (itsdangerous, keyed from the
token, so every web process accepts it and changing the token ends every session)
scoped to ``/admin``: HttpOnly, SameSite=Strict, Secure on https, 8 hours (the cookies
and the login throttle: :mod:`adapter.web.admin_session`). Every POST carries the
session's CSRF token in a hidden field (compared in constant time) and, when the browser
sends one, an ``Origin`` that must be this site.

Pages are rendered on the server with Jinja2 (autoescaped), with inline CSS under a
per-response CSP nonce and no script at all. Contact details are always shown
redacted (``C**** D**``, ``c***@example.com``, ``+1 *** *** **71``:
:mod:`adapter.core.redact`); the full record is ``GET /deliveries/{id}`` with
``Authorization: Bearer $ADMIN_TOKEN``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from adapter.channels import ChannelContext, client_address
from adapter.core.records import STATUSES, Attempt, DeliveryRecord
from adapter.core.redact import mask_message, masked_fields
from adapter.ops.logs import redact_text
from adapter.web.admin_privacy import forget_routes
from adapter.web.admin_session import Sessions, Throttle, safe_next, same_secret

__all__ = ["PAGE_SIZE", "admin_routes"]

PAGE_SIZE = 50
DAY = 86_400.0
PERIODS = {"24h": DAY, "7d": 7 * DAY, "all": None}
NOTICES = {
    "retried": "The delivery is queued again; the worker delivers it shortly.",
    "not-retried": (
        "Nothing to retry: the delivery is not failed any more, or the same person "
        "already has a delivery waiting."
    ),
    "logged-out": "You are logged out.",
}
IN_PROGRESS = ("pending", "delivering")
REFRESH_SECONDS = 2

_TEMPLATES = Path(__file__).parent / "templates" / "admin"
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

# -- formatting -----------------------------------------------------------------------


def _when(stamp: float | None) -> str:
    if stamp is None:
        return ""
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(stamp: float | None) -> str:
    if stamp is None:
        return ""
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")


def _ago(stamp: float | None) -> str:
    if stamp is None:
        return ""
    seconds = time.time() - stamp
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        text = f"{seconds:.0f} s"
    elif seconds < 3600:
        text = f"{seconds / 60:.0f} min"
    elif seconds < DAY:
        text = f"{seconds / 3600:.0f} h"
    else:
        text = f"{seconds / DAY:.0f} d"
    return f"in {text}" if future else f"{text} ago"


def _took(seconds: float) -> str:
    """How long an attempt took: "85 ms", "2.4 s", "3 min"."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.0f} min"


_env.filters.update(when=_when, iso=_iso, ago=_ago, took=_took)
_env.globals.update(statuses=STATUSES)


# -- the pages --------------------------------------------------------------------------

Handler = Callable[[Request], Awaitable[Response]]


class _Admin:
    def __init__(self, context: ChannelContext) -> None:
        self.context = context
        self.queue = context.queue
        self.throttle = Throttle()
        self._sessions: tuple[str, Sessions] | None = None

    # plumbing

    @property
    def token(self) -> str | None:
        secret = self.context.settings.admin_token
        value = secret.get_secret_value() if secret is not None else ""
        return value or None

    def sessions(self) -> Sessions:
        token = self.token
        assert token is not None
        if self._sessions is None or self._sessions[0] != token:
            self._sessions = (token, Sessions(token))
        return self._sessions[1]

    def render(
        self,
        request: Request,
        template: str,
        status_code: int = 200,
        *,
        session: dict[str, Any] | None = None,
        **values: Any,
    ) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        body = _env.get_template(template).render(
            request=request,
            nonce=nonce,
            session=session,
            csrf_token=session["csrf"] if session else "",
            logged_in=bool(session and session.get("auth")),
            path=request.url.path,
            **values,
        )
        response = HTMLResponse(body, status_code=status_code)
        headers = response.headers
        headers["Content-Security-Policy"] = (
            f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self' data:; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
        headers["Cache-Control"] = "no-store"
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Frame-Options"] = "DENY"
        headers["Referrer-Policy"] = "same-origin"  # "no-referrer" would make Origin "null"
        headers["X-Robots-Tag"] = "noindex, nofollow"
        return response

    def message(
        self, request: Request, status_code: int, title: str, text: str, **values: Any
    ) -> HTMLResponse:
        return self.render(request, "message.html", status_code, title=title, text=text, **values)

    def off(self, request: Request) -> HTMLResponse:
        return self.message(
            request,
            404,
            "The admin page is off",
            "Set ADMIN_TOKEN (a long random secret) to turn on the admin page, then log in "
            "here with it.",
        )

    def page(self, handler: Callable[[Request, dict[str, Any]], Awaitable[Response]]) -> Handler:
        """A GET page that needs a login (else a redirect to the login form)."""

        async def endpoint(request: Request) -> Response:
            if self.token is None:
                return self.off(request)
            session = self.sessions().load(request)
            if session is None or not session.get("auth"):
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(
                    "/admin/login?" + urlencode({"next": target}), status_code=303
                )
            return await handler(request, session)

        return endpoint

    def action(self, handler: Callable[[Request, dict[str, Any]], Awaitable[Response]]) -> Handler:
        """A POST that needs a login, a valid CSRF token and, if sent, our own Origin."""

        async def endpoint(request: Request) -> Response:
            if self.token is None:
                return self.off(request)
            refused = self.cross_site(request)
            if refused is not None:
                return refused
            session = self.sessions().load(request)
            if session is None or not session.get("auth"):
                return self.message(
                    request,
                    403,
                    "Please log in again",
                    "Your session has ended (or this browser did not send its cookie). "
                    "Nothing was changed.",
                    link=("/admin/login", "Log in"),
                )
            form = await request.form(max_files=0, max_fields=20)
            refused = self.check_csrf(request, session, form.get("csrf_token"))
            if refused is not None:
                return refused
            return await handler(request, session)

        return endpoint

    def cross_site(self, request: Request) -> HTMLResponse | None:
        origin = request.headers.get("origin")
        if origin is None:
            return None
        own = f"{request.url.scheme}://{request.url.netloc}".lower()
        if origin.lower() != own:
            return self.message(
                request,
                403,
                "Request refused",
                "This form was sent from another site. Nothing was changed.",
                link=("/admin", "Back to the admin page"),
            )
        return None

    def check_csrf(
        self, request: Request, session: dict[str, Any], given: Any
    ) -> HTMLResponse | None:
        if isinstance(given, str) and same_secret(given, session["csrf"]):
            return None
        return self.message(
            request,
            403,
            "Request refused",
            "The form was out of date or did not come from this page (its CSRF token did not "
            "match). Nothing was changed: reload the page and try again.",
            link=("/admin", "Back to the admin page"),
            session=session,
        )

    # login and logout

    async def login_form(self, request: Request) -> Response:
        if self.token is None:
            return self.off(request)
        sessions = self.sessions()
        next_path = safe_next(request.query_params.get("next"))
        if sessions.load(request) is not None:  # logged in already
            return RedirectResponse(next_path, status_code=303)
        session = sessions.load(request, login=True)
        fresh = session is None
        session = session or Sessions.new(auth=False)
        notice = NOTICES.get(request.query_params.get("notice", ""))
        response = self.render(
            request, "login.html", session=session, next_path=next_path, notice=notice, error=None
        )
        if fresh:
            sessions.save(request, response, session)
        return response

    async def login(self, request: Request) -> Response:
        if self.token is None:
            return self.off(request)
        refused = self.cross_site(request)
        if refused is not None:
            return refused
        sessions = self.sessions()
        form = await request.form(max_files=0, max_fields=20)
        next_path = safe_next(str(form.get("next") or ""))
        session = sessions.load(request, login=True)

        def again(status_code: int, error: str) -> Response:
            fresh = Sessions.new(auth=False)
            response = self.render(
                request,
                "login.html",
                status_code,
                session=fresh,
                next_path=next_path,
                notice=None,
                error=error,
            )
            sessions.save(request, response, fresh)
            return response

        if session is None:
            return again(
                403,
                "The login form had expired, or this browser did not send its cookie: "
                "allow cookies for this site and try again.",
            )
        given_csrf = form.get("csrf_token")
        if not isinstance(given_csrf, str) or not same_secret(given_csrf, session["csrf"]):
            return again(403, "The login form was out of date: try again.")
        client = client_address(request)
        wait = self.throttle.blocked(client)
        if wait > 0:
            response = again(
                429, f"Too many wrong tokens: try again in {int(wait // 60) + 1} minutes."
            )
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        given = form.get("token")
        token = self.token
        if not isinstance(given, str) or not same_secret(given.strip(), token):
            self.throttle.failed(client)
            return again(401, "That is not the admin token (ADMIN_TOKEN).")
        self.throttle.succeeded(client)
        response = RedirectResponse(next_path, status_code=303)
        sessions.save(request, response, Sessions.new(auth=True))  # a new id: no fixation
        sessions.clear(request, response, login=True)
        return response

    async def logout(self, request: Request, session: dict[str, Any]) -> Response:
        response = RedirectResponse("/admin/login?notice=logged-out", status_code=303)
        self.sessions().clear(request, response)
        return response

    # pages

    async def dashboard(self, request: Request, session: dict[str, Any]) -> Response:
        now = time.time()
        counts = await self.queue.counts(since=now - DAY)
        per_channel: dict[str, dict[str, int]] = {}
        for source, by_status in counts.items():
            row = per_channel.setdefault(source.split(":", 1)[0], {})
            for status, n in by_status.items():
                row[status] = row.get(status, 0) + n
        totals = {s: sum(r.get(s, 0) for r in per_channel.values()) for s in STATUSES}
        failed_all = await self._failed_total()
        return self.render(
            request,
            "dashboard.html",
            session=session,
            channels=sorted(per_channel.items()),
            totals=totals,
            total=sum(totals.values()),
            failed_all=failed_all,
            paused=redact_text(self.queue.paused_reason) if self.queue.paused_reason else None,
            now=now,
        )

    async def _failed_total(self) -> int:
        counts = await self.queue.counts()
        return sum(by_status.get("failed", 0) for by_status in counts.values())

    async def deliveries(self, request: Request, session: dict[str, Any]) -> Response:
        params = request.query_params
        status = params.get("status") or None
        if status not in (None, *STATUSES):
            status = None
        channel = (params.get("channel") or "").strip()[:64] or None
        period = params.get("period") or "all"
        if period not in PERIODS:
            period = "all"
        try:
            page = max(1, min(int(params.get("page") or 1), 100_000))
        except ValueError:
            page = 1
        span = PERIODS[period]
        since = time.time() - span if span is not None else None
        records = await self.queue.list(
            status=status,
            source=channel,
            limit=PAGE_SIZE + 1,
            offset=(page - 1) * PAGE_SIZE,
            since=since,
        )
        has_next = len(records) > PAGE_SIZE
        records = records[:PAGE_SIZE]
        counts = await self.queue.counts()
        channels = sorted(
            {source.split(":", 1)[0] for source in counts} | ({channel} if channel else set())
        )
        failed_all = sum(by_status.get("failed", 0) for by_status in counts.values())
        filters = {"status": status or "", "channel": channel or "", "period": period}

        def page_url(number: int) -> str:
            query = {k: v for k, v in filters.items() if v and not (k == "period" and v == "all")}
            if number > 1:
                query["page"] = str(number)
            return "/admin/deliveries" + ("?" + urlencode(query) if query else "")

        notice = None
        if params.get("notice") == "retried-all":
            try:
                count = int(params.get("count") or 0)
            except ValueError:
                count = 0
            notice = (
                f"{count} failed {'delivery is' if count == 1 else 'deliveries are'} queued again."
            )
        return self.render(
            request,
            "deliveries.html",
            session=session,
            rows=[self._row(r) for r in records],
            filters=filters,
            channels=channels,
            periods=list(PERIODS),
            page=page,
            first_index=(page - 1) * PAGE_SIZE + 1,
            previous_url=page_url(page - 1) if page > 1 else None,
            next_url=page_url(page + 1) if has_next else None,
            failed_all=failed_all,
            notice=notice,
        )

    @staticmethod
    def _row(record: DeliveryRecord) -> dict[str, Any]:
        return {
            "id": record.id,
            "url": "/admin/deliveries/" + quote(record.id, safe=""),
            "source": record.source,
            "status": record.status,
            "attempts": record.attempts,
            "created_at": record.created_at,
            "last_error": redact_text(record.last_error or ""),
            **masked_fields(record.fields),
        }

    async def delivery(self, request: Request, session: dict[str, Any]) -> Response:
        record = await self.queue.get(request.path_params["delivery_id"])
        if record is None:
            return self.message(
                request,
                404,
                "No such delivery",
                "There is no delivery with this id.",
                link=("/admin/deliveries", "All deliveries"),
                session=session,
            )
        contact_url = None
        if record.contact_id:
            try:
                contact_url = self.queue.client.contact_url(record.contact_id, record.strategy)
            except Exception:  # a link is a nicety
                contact_url = None
        history = [
            {
                **attempt.public(),
                "meaning": Attempt.OUTCOMES.get(attempt.outcome, attempt.outcome),
            }
            for attempt in await self.queue.history(record.id)
        ]
        refresh = REFRESH_SECONDS if record.status in IN_PROGRESS else None
        notice = request.query_params.get("notice", "")  # "queued again" is news until done
        response = self.render(
            request,
            "delivery.html",
            session=session,
            record=record,
            row=self._row(record),
            errors={k: mask_message(k, str(v)) for k, v in (record.errors or {}).items()},
            warnings={k: mask_message(k, str(v)) for k, v in (record.warnings or {}).items()},
            contact_url=contact_url,
            history=history,
            refresh=refresh,
            notice=None if notice == "retried" and not refresh else NOTICES.get(notice),
        )
        return response

    async def retry(self, request: Request, session: dict[str, Any]) -> Response:
        delivery_id = request.path_params["delivery_id"]
        if await self.queue.get(delivery_id) is None:
            return self.message(
                request,
                404,
                "No such delivery",
                "There is no delivery with this id.",
                link=("/admin/deliveries", "All deliveries"),
                session=session,
            )
        done = await self.queue.retry(delivery_id)
        notice = "retried" if done else "not-retried"
        return RedirectResponse(
            f"/admin/deliveries/{quote(delivery_id, safe='')}?notice={notice}", status_code=303
        )

    async def retry_failed(self, request: Request, session: dict[str, Any]) -> Response:
        count = await self.queue.retry_failed()
        return RedirectResponse(
            f"/admin/deliveries?notice=retried-all&count={count}", status_code=303
        )

    async def slash(self, request: Request) -> Response:
        return RedirectResponse("/admin", status_code=308)


def admin_routes(context: ChannelContext) -> list[BaseRoute]:
    """The admin page's routes, all under ``/admin``."""
    admin = _Admin(context)
    return [
        Route("/admin", admin.page(admin.dashboard), methods=["GET"]),
        Route("/admin/", admin.slash, methods=["GET"]),
        Route("/admin/login", admin.login_form, methods=["GET"]),
        Route("/admin/login", admin.login, methods=["POST"]),
        Route("/admin/logout", admin.action(admin.logout), methods=["POST"]),
        Route("/admin/deliveries", admin.page(admin.deliveries), methods=["GET"]),
        Route("/admin/retry-failed", admin.action(admin.retry_failed), methods=["POST"]),
        Route(
            "/admin/deliveries/{delivery_id:str}",
            admin.page(admin.delivery),
            methods=["GET"],
        ),
        Route(
            "/admin/deliveries/{delivery_id:str}/retry",
            admin.action(admin.retry),
            methods=["POST"],
        ),
        *forget_routes(admin),  # "Forget this person" (adapter.web.admin_privacy)
    ]
