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
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from adapter.channels import ChannelContext, client_address
from adapter.core.plain import plain_error
from adapter.core.records import STATUSES, Attempt
from adapter.core.redact import mask_message
from adapter.ops.logs import redact_text
from adapter.web.admin_format import DAY, env, row_view, search_match
from adapter.web.admin_privacy import forget_routes
from adapter.web.admin_session import Sessions, Throttle, safe_next, same_secret
from adapter.web.admin_tools import AdminTools

__all__ = ["PAGE_SIZE", "PERIODS", "AdminSite", "admin_routes"]

PAGE_SIZE = 50
PERIODS = {"24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY, "all": None}
NOTICES = {
    "retried": "The delivery is queued again; the worker delivers it shortly.",
    "retried-one": "The failed delivery is queued again; the worker delivers it shortly.",
    "not-retried": (
        "Nothing to retry: the delivery is not failed any more, or the same person "
        "already has a delivery waiting."
    ),
    "logged-out": "You are logged out.",
}
IN_PROGRESS = ("pending", "delivering")
REFRESH_SECONDS = 2

# -- the pages --------------------------------------------------------------------------

Handler = Callable[[Request], Awaitable[Response]]


class AdminSite:
    """The admin pages' plumbing (login, rendering, CSRF) and the pages themselves."""

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
        logged_in = bool(session and session.get("auth"))
        body = env.get_template(template).render(
            request=request,
            nonce=nonce,
            session=session,
            csrf_token=session["csrf"] if session else "",
            logged_in=logged_in,
            path=request.url.path,
            outage=self.outage() if logged_in else None,
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

    def outage(self) -> dict[str, Any] | None:
        """Rocket.Chat not answering (as this process saw it): since when, the next probe."""
        gate = self.queue.gate
        if not gate.in_outage:
            return None
        return {"since": gate.unanswered_since, "probe_at": gate.probe_at}

    async def deliveries(self, request: Request, session: dict[str, Any]) -> Response:
        """The list (GET): filters in the URL, so it can be bookmarked; never a search."""
        return await self._list(request, session, request.query_params, search="")

    async def find(self, request: Request, session: dict[str, Any]) -> Response:
        """The list form posted: a search is answered here, so the email or phone typed
        stays out of URLs (history, proxies' and routers' logs); filters alone go back to
        the GET list."""
        form = await request.form()
        search = str(form.get("q") or "").strip()[:320]
        if not search:
            query = {k: str(form.get(k) or "") for k in ("status", "channel", "period")}
            query = {k: v for k, v in query.items() if v and not (k == "period" and v == "all")}
            target = "/admin/deliveries" + ("?" + urlencode(query) if query else "")
            return RedirectResponse(target, status_code=303)
        return await self._list(request, session, form, search=search)

    async def _list(
        self, request: Request, session: dict[str, Any], params: Any, *, search: str
    ) -> Response:
        status = params.get("status") or None
        if status not in (None, *STATUSES):
            status = None
        channel = (str(params.get("channel") or "")).strip()[:64] or None
        period = params.get("period") or "all"
        if period not in PERIODS:
            period = "all"
        try:
            page = 1 if search else max(1, min(int(params.get("page") or 1), 100_000))
        except ValueError:
            page = 1
        span = PERIODS[period]
        since = time.time() - span if span is not None else None
        region = self.context.settings.default_phone_region
        records = await self.queue.list(
            status=status,
            source=channel,
            limit=PAGE_SIZE + 1,
            offset=(page - 1) * PAGE_SIZE,
            since=since,
            match=search_match(search, region=region),
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

        notice_key = str(params.get("notice") or "")
        notice = NOTICES.get(notice_key) if notice_key != "retried" else None
        if notice_key == "retried-all":
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
            rows=[row_view(r) for r in records],
            search=search,
            filters=filters,
            channels=channels,
            periods=list(PERIODS),
            page=page,
            first_index=(page - 1) * PAGE_SIZE + 1,
            this_url=page_url(page),
            previous_url=page_url(page - 1) if page > 1 and not search else None,
            next_url=page_url(page + 1) if has_next and not search else None,
            more_matches=has_next and bool(search),
            failed_all=failed_all,
            notice=notice,
        )

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
                "error": redact_text(plain_error(attempt.error)) if attempt.error else None,
                "meaning": Attempt.OUTCOMES.get(attempt.outcome, attempt.outcome),
            }
            for attempt in await self.queue.history(record.id)
        ]
        refresh = REFRESH_SECONDS if record.status in IN_PROGRESS else None
        notice = request.query_params.get("notice", "")  # "queued again" is news until done
        return self.render(
            request,
            "delivery.html",
            session=session,
            record=record,
            row=row_view(record),
            errors={k: mask_message(k, str(v)) for k, v in (record.errors or {}).items()},
            warnings={k: mask_message(k, str(v)) for k, v in (record.warnings or {}).items()},
            contact_url=contact_url,
            history=history,
            refresh=refresh,
            notice=None if notice == "retried" and not refresh else NOTICES.get(notice),
        )

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
        back = str((await request.form()).get("back") or "")
        if back.startswith("/admin/deliveries?") or back == "/admin/deliveries":
            target = safe_next(back)
            joiner = "&" if "?" in target else "?"
            notice = "retried-one" if done else "not-retried"
            return RedirectResponse(f"{target}{joiner}notice={notice}", status_code=303)
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
    admin = AdminSite(context)
    tools = AdminTools(admin)
    return [
        Route("/admin", admin.page(admin.dashboard), methods=["GET"]),
        Route("/admin/", admin.slash, methods=["GET"]),
        Route("/admin/login", admin.login_form, methods=["GET"]),
        Route("/admin/login", admin.login, methods=["POST"]),
        Route("/admin/logout", admin.action(admin.logout), methods=["POST"]),
        Route("/admin/deliveries", admin.page(admin.deliveries), methods=["GET"]),
        Route("/admin/deliveries", admin.action(admin.find), methods=["POST"]),
        Route("/admin/retry-failed", admin.action(admin.retry_failed), methods=["POST"]),
        Route("/admin/export.csv", admin.action(tools.export), methods=["POST"]),
        Route("/admin/test-connection", admin.action(tools.test_connection), methods=["POST"]),
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
