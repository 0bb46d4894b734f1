"""The one place that talks to Rocket.Chat: a pooled HTTP client that paces itself.

:class:`RocketChatClient` owns one ``aiohttp.ClientSession`` per process (bounded
keep-alive connection pool, timeouts, auth headers that are never logged) and a
:class:`Pacer` that reads ``X-RateLimit-*`` on every answer, so calls wait for
the window to reopen instead of running into 429s. Registration itself is a
:class:`RegistrationStrategy`; :class:`VisitorStrategy` is the legacy
``omnichannel/contact`` upsert that every server version has.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import structlog

from adapter.core.errors import (
    ConfigurationError,
    RateLimited,
    RocketChatError,
    RocketChatUnavailable,
    RouteNotFound,
)
from adapter.ops import metrics
from adapter.rocketchat.sansio import (
    RateLimit,
    RegisteredContact,
    Registration,
    classify_answer,
    keep_what_rocketchat_holds,
    parse_rate_limit,
    parse_version,
    visitor_body,
)
from adapter.settings import Settings

__all__ = [
    "Pacer",
    "ReadyReport",
    "RegistrationStrategy",
    "RocketChatClient",
    "VisitorStrategy",
]

ContactIdRecorder = Callable[[str], Awaitable[None]]
log = structlog.get_logger("adapter.rocketchat")
CONTACT_CENTER_SINCE = (7, 1)  # ``ROCKETCHAT_CONTACT_API=auto`` uses the Contact Center from here
VERSION_RECHECK = 3600.0  # seconds between version checks made to notice an upgrade/rollback
_MAX_WAIT = 300.0  # never trust a reset header further out than this
# Rocket.Chat resets a window on the first call *after* ``X-RateLimit-Reset`` (its clock, in
# whole milliseconds): calling a little later than the header says keeps that call in the new
# window instead of being the 11th of the old one.
_REOPEN_MARGIN = 0.05


class Pacer:
    """Shared rate-limit state per route: wait for the window instead of hitting 429.

    Per route: no answer seen yet ⇒ one probe call at a time; answers without
    ``X-RateLimit-*`` headers ⇒ not limited (a bot user), no pacing; with headers ⇒ at
    most ``remaining`` calls in flight, and none once it reaches 0 until the window's
    reset (plus a small margin). When a window reopens, a single call goes first and
    its answer gives the new budget: if our clock and the server's disagree, that one
    call is the only one that can meet a 429 (whose own reset then decides), instead of
    a whole window's worth of calls.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._routes: dict[str, _RouteState] = {}
        self._cond = asyncio.Condition()

    def _state(self, route: str) -> _RouteState:
        return self._routes.setdefault(route, _RouteState())

    async def acquire(self, route: str) -> None:
        """Wait until a call to ``route`` fits in the server's current window."""
        async with self._cond:
            while True:
                state = self._state(route)
                now = self._clock()
                self._reopen(state, now)
                if state.known and not state.limited:
                    break  # this user bypasses the limiter (no headers seen)
                if not state.known or state.remaining is None:
                    if state.in_flight == 0:
                        break  # probe: learn the limit, or the reopened window's budget
                elif state.remaining - state.in_flight > 0:
                    break
                timeout = None
                if state.reset_at is not None:
                    timeout = min(max(state.reset_at + _REOPEN_MARGIN - now, 0.0) + 0.01, _MAX_WAIT)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), timeout=timeout)
            state.in_flight += 1

    async def release(
        self, route: str, limit: RateLimit | None, *, rate_limited_until: float | None = None
    ) -> None:
        """Record the answer's headers (or their absence) and wake waiting callers."""
        async with self._cond:
            state = self._state(route)
            state.in_flight = max(state.in_flight - 1, 0)
            if rate_limited_until is not None:
                state.limited = True
                state.known = True
                state.remaining = 0
                state.reset_at = min(rate_limited_until, self._clock() + _MAX_WAIT)
            elif limit is not None:
                state.limited = True
                state.known = True
                state.limit = limit.limit
                new_window = state.reset_at is None or limit.reset_at > state.reset_at + 0.5
                if new_window or state.remaining is None:
                    state.remaining = limit.remaining
                else:
                    state.remaining = min(state.remaining, limit.remaining)
                state.reset_at = min(limit.reset_at, self._clock() + _MAX_WAIT)
            elif not state.known:
                state.known = True  # answered without headers: not rate limited
            self._cond.notify_all()

    async def cancel(self, route: str) -> None:
        """A call ended without an answer (network error): free its slot."""
        async with self._cond:
            state = self._state(route)
            state.in_flight = max(state.in_flight - 1, 0)
            self._cond.notify_all()

    @staticmethod
    def _reopen(state: _RouteState, now: float) -> None:
        if state.reset_at is not None and now >= state.reset_at + _REOPEN_MARGIN:
            # The window has reopened: one probe's answer tells us the new budget.
            state.remaining = None
            state.reset_at = None

    def wait_hint_any(self, prefix: str = "/api/v1/omnichannel/") -> float | None:
        """The latest reopening among exhausted routes, or None when all have room."""
        hints = [
            h for r in self._routes if r.startswith(prefix) if (h := self.wait_hint(r)) is not None
        ]
        return max(hints) if hints else None

    def room_hint(self, wanted: int, prefix: str = "/api/v1/omnichannel/") -> int:
        """How many new calls fit in the known windows right now (at most ``wanted``)."""
        room = wanted
        now = self._clock()
        for route, state in self._routes.items():
            if not route.startswith(prefix):
                continue
            self._reopen(state, now)
            if not state.known or (state.limited and state.remaining is None):
                room = min(room, 1 if state.in_flight == 0 else 0)
            elif state.limited and state.remaining is not None:
                room = min(room, max(state.remaining - state.in_flight, 0))
        return room

    def exhausted(self, prefix: str = "/api/v1/omnichannel/") -> bool:
        """Is some route's known budget used up (calls in flight included)? A route still
        being probed is not: its probe answers within one round trip."""
        now = self._clock()
        for route, state in self._routes.items():
            if not route.startswith(prefix):
                continue
            self._reopen(state, now)
            if (
                state.limited
                and state.remaining is not None
                and state.remaining - state.in_flight <= 0
            ):
                return True
        return False

    def wait_hint(self, route: str) -> float | None:
        """When (epoch seconds) the route's window reopens, if it is currently exhausted."""
        state = self._routes.get(route)
        if state is None:
            return None
        now = self._clock()
        self._reopen(state, now)
        if state.remaining == 0 and state.reset_at is not None:
            return state.reset_at + _REOPEN_MARGIN
        return None


@dataclass
class _RouteState:
    known: bool = False  # have we seen an answer yet?
    limited: bool = False  # did answers carry rate-limit headers?
    limit: int = 10
    remaining: int | None = None
    reset_at: float | None = None
    in_flight: int = 0


@dataclass(frozen=True)
class ReadyReport:
    """The outcome of a readiness check, shown by ``/readyz``."""

    ok: bool
    reason: str
    version: str | None = None
    strategy: str | None = None


class RegistrationStrategy(Protocol):
    """How a contact is registered on a given Rocket.Chat server."""

    name: str

    async def register(
        self,
        client: RocketChatClient,
        registration: Registration,
        *,
        record_contact_id: ContactIdRecorder | None = None,
    ) -> RegisteredContact: ...


class VisitorStrategy:
    """The legacy ``POST /api/v1/omnichannel/contact`` upsert, keyed by the token."""

    name = "visitor"

    def __init__(
        self, custom_field_ids: tuple[str, ...] = (), *, lookup_new_contacts: bool = True
    ) -> None:
        self.custom_field_ids = custom_field_ids
        self.lookup_new_contacts = lookup_new_contacts

    async def register(
        self,
        client: RocketChatClient,
        registration: Registration,
        *,
        record_contact_id: ContactIdRecorder | None = None,
    ) -> RegisteredContact:
        body = visitor_body(registration, custom_field_ids=self.custom_field_ids)
        # Rocket.Chat unsets what a call leaves out: read what it holds about the person
        # first, so that what agents added there is sent back. Registered before: by the
        # id it gave us. New to us: by email, because a known email makes Rocket.Chat reuse
        # that visitor (a phone never does). Each lookup route has its own rate-limit
        # bucket, so the registrations' pace is unchanged.
        found: dict[str, Any] | None = None
        if registration.known_contact_id:
            found = await client.call(
                "GET",
                "/api/v1/omnichannel/contact",
                params={"contactId": registration.known_contact_id},
            )
        elif self.lookup_new_contacts and registration.contact.email:
            found = await client.call(
                "GET",
                "/api/v1/omnichannel/contact.search",
                params={"email": registration.contact.email.strip().lower()},
            )
        if found is not None:
            stored = found.get("contact")
            body = keep_what_rocketchat_holds(body, stored if isinstance(stored, dict) else None)
        data = await client.call("POST", "/api/v1/omnichannel/contact", json=body)
        contact_id = data.get("contact")
        if not isinstance(contact_id, str) or not contact_id:
            raise RocketChatError("Rocket.Chat answered 200 without a contact id")
        return RegisteredContact(contact_id=contact_id, strategy=self.name)


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
    ) -> dict[str, Any]:
        """One call: paced, bounded, classified. Raises :mod:`adapter.errors`."""
        route = path + method.lower()
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
                    await self.pacer.release(route, limit, rate_limited_until=limited_until)
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
            try:
                from adapter.rocketchat.contact_center import (  # type: ignore[import-not-found,unused-ignore]
                    ContactCenterStrategy,
                )
            except ModuleNotFoundError:
                if wanted == "contact-center":
                    raise ConfigurationError(
                        "ROCKETCHAT_CONTACT_API=contact-center is not available in this build"
                    ) from None
            else:
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
