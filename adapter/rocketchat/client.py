"""The one place that talks to Rocket.Chat: a pooled HTTP client that paces itself.

:class:`RocketChatClient` owns one ``aiohttp.ClientSession`` per process (bounded
keep-alive connection pool, timeouts, auth headers that are never logged) and a
:class:`~adapter.rocketchat.pacer.Pacer` that reads ``X-RateLimit-*`` on every answer, so
calls wait for the window to reopen instead of running into 429s. Registration itself is a
strategy (:mod:`adapter.rocketchat.strategies`: the legacy visitor upsert every server has;
:mod:`adapter.rocketchat.contact_center` from 7.1), chosen by the server's version.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog

from adapter.core.errors import (
    ConfigurationError,
    ContactRejected,
    RateLimited,
    RocketChatError,
    RocketChatUnavailable,
    RouteNotFound,
)
from adapter.ops import metrics
from adapter.rocketchat.contact_center import ContactCenterStrategy
from adapter.rocketchat.erasure_sansio import (
    CONTACTS_DELETE,
    ERASED,
    Removal,
    contact_removal_body,
    removal_from_error,
    visitor_path,
)
from adapter.rocketchat.pacer import Pacer
from adapter.rocketchat.sansio import (
    RateLimit,
    RegisteredContact,
    Registration,
    classify_answer,
    parse_rate_limit,
    parse_version,
    rekey_body,
)
from adapter.rocketchat.strategies import ContactIdRecorder, RegistrationStrategy, VisitorStrategy
from adapter.settings import Settings

__all__ = ["ReadyReport", "RocketChatClient"]

log = structlog.get_logger("adapter.rocketchat")
CONTACT_CENTER_SINCE = (7, 1)  # ``ROCKETCHAT_CONTACT_API=auto`` uses the Contact Center from here
_VISITOR_ROUTE = "/api/v1/livechat/visitor/:token"  # the Livechat API: no login, the token is it
VERSION_RECHECK = 3600.0  # seconds between version checks made to notice an upgrade/rollback


@dataclass(frozen=True)
class ReadyReport:
    """The outcome of a readiness check, shown by ``/readyz``."""

    ok: bool
    reason: str
    version: str | None = None
    strategy: str | None = None


StrategyFactory = Callable[["RocketChatClient", tuple[int, int] | None], RegistrationStrategy]


class RocketChatClient:
    """A pooled, paced client for one Rocket.Chat server."""

    def __init__(
        self,
        base_url: str,
        user_id: str,
        auth_token: str,
        *,
        timeout: float = 10.0,
        concurrency: int = 8,
        contact_api: str = "auto",
        custom_field_ids: tuple[str, ...] = (),
        lookup_new_contacts: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.lookup_new_contacts = lookup_new_contacts
        self.configured = bool(user_id and auth_token)
        self.contact_api = contact_api
        self.custom_field_ids = custom_field_ids
        self._clock = clock
        self._headers = {
            "X-User-Id": user_id,
            "X-Auth-Token": auth_token,
            "User-Agent": "contact-adapter",
        }
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 5.0))
        self._concurrency = concurrency
        # Made on first use, inside the event loop that uses it (aiohttp's rule).
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self.pacer = Pacer(clock)
        self._strategy: RegistrationStrategy | None = None
        self._init_strategy_state()
        self._version: tuple[int, int] | None = None
        self._version_text: str | None = None
        self._ready: tuple[float, ReadyReport] | None = None
        self._me_known: tuple[float, ReadyReport] | None = None  # last answer /me gave
        self._ready_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> RocketChatClient:
        """The client for the server, credentials and limits ``settings`` name."""
        return cls(
            settings.rocketchat_url,
            settings.rocketchat_user_id,
            settings.rocketchat_auth_token.get_secret_value(),
            timeout=settings.rocketchat_timeout,
            concurrency=settings.rocketchat_concurrency,
            contact_api=settings.rocketchat_contact_api,
            custom_field_ids=settings.rocketchat_custom_fields,
            lookup_new_contacts=settings.rocketchat_lookup_new_contacts,
        )

    def _visitor_strategy(self) -> VisitorStrategy:
        return VisitorStrategy(self.custom_field_ids, lookup_new_contacts=self.lookup_new_contacts)

    def _http(self) -> aiohttp.ClientSession:
        """The keep-alive pool: at most ROCKETCHAT_CONCURRENCY connections, ever.

        aiohttp rather than httpx: the same pool, limits and timeouts for less than half
        the CPU per call (bench/bench_delivery.py), which is what bounds a worker's rate.
        """
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session_loop = loop
            connector = aiohttp.TCPConnector(
                limit=self._concurrency, limit_per_host=0, keepalive_timeout=30.0
            )
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, timeout=self._timeout
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    # -- raw calls -------------------------------------------------------------

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        auth: bool = True,
        paced: bool = True,
        route_path: str | None = None,
    ) -> dict[str, Any]:
        """One call: paced, bounded, classified. Raises :mod:`adapter.errors`.
        ``route_path`` names the route of a path with a parameter (its rate-limit bucket)."""
        route = (route_path or path) + method.lower()
        if paced:
            await self.pacer.acquire(route)
        answered = False
        limit: RateLimit | None = None
        limited_until: float | None = None
        try:
            async with self._slots:
                started = time.perf_counter()
                try:
                    async with self._http().request(
                        method,
                        self.base_url + path,
                        json=json,
                        params=params,
                        headers=None if auth else {"X-User-Id": "", "X-Auth-Token": ""},
                    ) as response:
                        status, headers = response.status, response.headers
                        content = await response.read()
                except TimeoutError as exc:
                    raise RocketChatUnavailable(
                        f"Rocket.Chat at {self.base_url} did not answer in time ({type(exc).__name__})"
                    ) from None
                except aiohttp.ClientError as exc:
                    raise RocketChatUnavailable(
                        f"Rocket.Chat at {self.base_url} is unreachable ({type(exc).__name__}: {exc})"
                    ) from None
                finally:
                    metrics.ROCKETCHAT_LATENCY.observe(time.perf_counter() - started)
            answered = True
            limit = parse_rate_limit(headers)
            try:
                return classify_answer(
                    status,
                    headers,
                    content,
                    now=self._clock(),
                    where=f"Rocket.Chat at {self.base_url}",
                )
            except RateLimited as exc:
                limited_until = exc.reset_at
                raise
        finally:
            if paced:
                if answered:
                    await self.pacer.release(
                        route, limit, ok=200 <= status < 300, rate_limited_until=limited_until
                    )
                else:
                    await self.pacer.cancel(route)

    async def server_info(self) -> dict[str, Any]:
        """``GET /api/info``: unauthenticated, not rate limited."""
        return await self.call("GET", "/api/info", auth=False, paced=False)

    async def me(self, *, paced: bool = True) -> dict[str, Any]:
        """``GET /api/v1/me``: are the credentials accepted? (rate limited: use sparingly)

        ``paced=False`` asks at once, even when the pacer says the window is used up
        (readiness must answer promptly; a 429 then says so instead of waiting).
        """
        return await self.call("GET", "/api/v1/me", paced=paced)

    # -- strategy --------------------------------------------------------------

    def _init_strategy_state(self) -> None:
        """What the strategy choice needs, and what must outlive a strategy refresh."""
        self.version_recheck = VERSION_RECHECK
        self.monotonic: Callable[[], float] = time.monotonic
        self._strategy_version: tuple[int, int] | None = None  # the version it was chosen for
        self._version_checked_at = float("-inf")
        # The contact manager's user id per username (``users.info``): kept on the client so
        # that choosing the strategy again (a 404, an upgrade) does not look it up again.
        self.manager_ids: dict[str, str] = {}
        self.manager_lock = asyncio.Lock()

    async def server_version(self, *, refresh: bool = False) -> tuple[int, int] | None:
        if self._version is None or refresh:
            self._version_checked_at = self.monotonic()
            try:
                info = await self.server_info()
                self._version = parse_version(info)
                self._version_text = str(info.get("version"))
            except (RocketChatError, ValueError):
                return self._version
        return self._version

    def _crossed_contact_center_line(self) -> bool:
        """Has the server's version moved across 7.1 since the strategy was chosen?

        A version check (``/readyz``'s readiness check, the hourly re-check) may have seen
        an upgrade or a rollback: the legacy route still answers on 7.1+, so no 404 would
        ever tell us.
        """
        chosen, now = self._strategy_version, self._version
        if chosen is None or now is None:
            return False
        return (chosen >= CONTACT_CENTER_SINCE) != (now >= CONTACT_CENTER_SINCE)

    async def strategy(self, *, refresh: bool = False) -> RegistrationStrategy:
        """The registration strategy for this server.

        Chosen once; chosen again on a 404 (``refresh``) and, with
        ``ROCKETCHAT_CONTACT_API=auto``, when a version check sees the server cross 7.1
        (the version is re-read at most every ``version_recheck`` seconds, one
        unauthenticated, unlimited ``/api/info`` call).
        """
        if self._strategy is not None and not refresh:
            if self.contact_api != "auto":
                return self._strategy
            if self.monotonic() - self._version_checked_at >= self.version_recheck:
                await self.server_version(refresh=True)
            if not self._crossed_contact_center_line():
                return self._strategy
        previous = self._strategy
        wanted = self.contact_api
        version = None
        if wanted != "visitor":
            version = await self.server_version(refresh=refresh)
        if wanted == "auto" and version is None:
            # /api/info did not answer: use the legacy route now, detect again next time.
            return self._visitor_strategy()
        contact_center = wanted == "contact-center" or (
            wanted == "auto" and version is not None and version >= CONTACT_CENTER_SINCE
        )
        strategy: RegistrationStrategy = self._visitor_strategy()
        if contact_center:
            strategy = ContactCenterStrategy(self.custom_field_ids)
        if previous is not None and previous.name != strategy.name:
            log.info(
                "rocketchat_strategy_changed",
                old=previous.name,
                new=strategy.name,
                rocketchat_version=self._version_text,
            )
        self._strategy = strategy
        self._strategy_version = version
        if version is not None:  # known now: the next re-check is due in version_recheck
            self._version_checked_at = max(self._version_checked_at, self.monotonic())
        return strategy

    async def register(
        self, registration: Registration, *, record_contact_id: ContactIdRecorder | None = None
    ) -> RegisteredContact:
        """Register (upsert) one contact with the strategy this server supports."""
        strategy = await self.strategy()
        try:
            return await strategy.register(self, registration, record_contact_id=record_contact_id)
        except RouteNotFound:
            if self.contact_api != "auto":
                raise
            strategy = await self.strategy(refresh=True)
            return await strategy.register(self, registration, record_contact_id=record_contact_id)

    async def visitor_by_token(self, token: str) -> dict[str, Any] | None:
        """The livechat visitor holding ``token`` (``GET /api/v1/livechat/visitor/:token``,
        the whole document), or None when no visitor holds it."""
        try:
            answer = await self.call(
                "GET",
                _VISITOR_ROUTE.replace(":token", quote(token, safe="")),
                route_path=_VISITOR_ROUTE,
            )
        except ContactRejected as exc:
            if exc.error_type == "invalid-token":
                return None
            raise
        visitor = answer.get("visitor")
        return visitor if isinstance(visitor, dict) else None

    async def rekey_visitor(self, visitor: dict[str, Any], new_token: str) -> str | None:
        """Move ``visitor`` to ``new_token`` with the legacy upsert (which overwrites the
        token of the visitor it finds by email): the visitor id Rocket.Chat answered, or
        None when the visitor has no email (Rocket.Chat would make a second visitor)."""
        body = rekey_body(visitor, new_token)
        if body is None:
            return None
        answer = await self.call("POST", "/api/v1/omnichannel/contact", json=body)
        return str(answer.get("contact") or "")

    async def remove_visitor(self, token: str) -> Removal:
        """Erase the livechat visitor registered under ``token`` (erasure_sansio)."""
        try:
            await self.call("DELETE", visitor_path(token))
        except RocketChatError as exc:
            return removal_from_error("visitor", exc)
        return Removal("visitor", ERASED)

    async def remove_contact(self, contact_id: str) -> Removal:
        """Erase (disable) a Contact Center contact, where this server offers the route."""
        try:
            await self.call("POST", CONTACTS_DELETE, json=contact_removal_body(contact_id))
        except RocketChatError as exc:
            return removal_from_error("contact", exc)
        return Removal("contact", ERASED)

    def contact_url(self, contact_id: str, strategy: str | None = None) -> str:
        """Where a person finds the contact in Rocket.Chat's web app.

        ``strategy`` is the one that registered it (default: the one in use). The web
        app's route is ``/omnichannel-directory/:tab?/:context?/:id?``: Contact Center
        contacts (7.x+) open under ``contacts/details``, visitors (≤ 6.x) ``contacts/info``.
        """
        if strategy is None and self._strategy is not None:
            strategy = self._strategy.name
        context = "details" if strategy == "contact-center" else "info"
        return f"{self.base_url}/omnichannel-directory/contacts/{context}/{contact_id}"

    # -- readiness ---------------------------------------------------------------

    async def readiness(self, *, max_age: float = 60.0) -> ReadyReport:
        """Reachable (``/api/info``) and credentials accepted (``/api/v1/me``), cached."""
        async with self._ready_lock:
            now = time.monotonic()
            if self._ready is not None and now - self._ready[0] < max_age:
                return self._ready[1]
            report = await self._check_ready()
            self._ready = (now, report)
            return report

    def _rate_limited_report(self, exc: RateLimited, version: str, strategy: str) -> ReadyReport:
        """``/me`` answered 429: keep the last known result instead of blaming the credentials.

        Rocket.Chat checks the credentials before the rate limit (every era), so a 429
        also means they were accepted.
        """
        wait = max(math.ceil(exc.reset_at - self._clock()), 0)
        note = f"Rocket.Chat rate-limited GET /api/v1/me (429) for about {wait} s more"
        last = self._me_known
        if last is not None and last[1].ok:
            age = int(time.monotonic() - last[0])
            return ReadyReport(
                True,
                f"ok (last known result, {age} s old; {note})",
                version=version,
                strategy=strategy,
            )
        # No earlier success (or an earlier 401 since fixed): the 429 itself vouches for them.
        return ReadyReport(
            True,
            f"ok (credentials accepted: Rocket.Chat checks them before its rate limit; {note})",
            version=version,
            strategy=strategy,
        )

    def forget_readiness(self) -> None:
        self._ready = None

    async def _check_ready(self) -> ReadyReport:
        try:
            info = await self.server_info()
            version = str(info.get("version", "?"))
            self._version = parse_version(info)
            self._version_text = version
        except RocketChatError as exc:
            return ReadyReport(False, f"{exc}: check ROCKETCHAT_URL and that the server is up")
        except ValueError as exc:
            return ReadyReport(
                False,
                f"{self.base_url} does not look like Rocket.Chat ({exc}): check ROCKETCHAT_URL",
            )
        if not self.configured:
            return ReadyReport(
                False,
                "ROCKETCHAT_USER_ID / ROCKETCHAT_AUTH_TOKEN are not set: create a bot user with a "
                "personal access token and set both",
                version=version,
            )
        try:
            # Unpaced: the pacer would hold the readiness lock until the window reopens.
            await self.me(paced=False)
        except RateLimited as exc:
            return self._rate_limited_report(exc, version, (await self.strategy()).name)
        except ConfigurationError as exc:
            report = ReadyReport(False, str(exc), version=version)
            self._me_known = (time.monotonic(), report)
            return report
        except RocketChatError as exc:
            return ReadyReport(False, f"checking credentials failed: {exc}", version=version)
        strategy = await self.strategy()
        report = ReadyReport(True, "ok", version=version, strategy=strategy.name)
        self._me_known = (time.monotonic(), report)
        return report
