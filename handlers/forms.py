"""Plain HTML forms at ``POST /forms/<form>`` and a hosted contact form page at ``GET /form``.

Any ``<form method="post">`` on any site may post here, urlencoded or multipart, with
the fields ``name``, ``email`` and ``phone`` (names configurable per form). Answers:

* ``Accept: application/json`` (a page's script): 201 registered / 202 queued with the
  delivery id, 422 with one message per field, plus ``redirect`` when one applies;
* otherwise, with a ``redirect`` field (or ``FORM_REDIRECT``) allowed by
  ``FORM_REDIRECT_ORIGINS``: ``303 See Other`` to the thank-you page;
* otherwise a small HTML page: the outcome, or the form again with each error next to
  its field, so a visitor without JavaScript still learns what happened.

Forms are unauthenticated, so: a honeypot field (``website``) that bots fill in and
people never see (answered as a success, nothing stored), an ``Origin`` allow-list and
CORS for the origins in ``FORM_ALLOWED_ORIGINS``, the body cap, and a per-IP rate limit.
Every setting can be given per form as ``FORM_<FORM>_<KEY>``, else ``FORM_<KEY>``; see
``docs/forms.md``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jinja2
import phonenumbers
import structlog
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from adapter.channels import (
    BodyTooLarge,
    ChannelContext,
    Outcome,
    Settings,
    SettingsError,
    Submission,
    client_address,
    error_response,
    read_body,
)
from handlers.api import outcome_response

__all__ = ["FormConfig", "FormsChannel", "RateLimiter", "channel", "load_forms", "origin_of"]

log = structlog.get_logger("handlers.forms")

FORM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
OFF = frozenset({"off", "none", "false", "no", "0", "-"})
URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
MAX_FIELDS = 200
MAX_FILES = 10
MAX_CUSTOM_VALUE = 2000
CORS_HEADERS = frozenset({"accept", "accept-language", "content-language", "content-type"})
CORS_MAX_AGE = "600"
DEFAULT_RATE_LIMIT = 10

CONTACT_INPUTS: dict[str, dict[str, str | None]] = {
    "name": {"label": "Name", "type": "text", "autocomplete": "name", "inputmode": None},
    "email": {"label": "Email", "type": "email", "autocomplete": "email", "inputmode": "email"},
    "phone": {"label": "Phone", "type": "tel", "autocomplete": "tel", "inputmode": "tel"},
}
MESSAGES = {
    "heading": "Thank you!",
    "registered": "Your details are registered. We will be in touch soon.",
    "queued": "Your details were received and will be registered shortly.",
    "failed": (
        "Your details were received but could not be registered right now. "
        "Our team has them and will follow up."
    ),
    "again": "Back to the form",
}


# -- configuration -------------------------------------------------------------------------


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an absolute http(s) URL (lower-case, default port dropped).

    ``None`` for anything else: relative URLs, other schemes, user info, backslashes or
    control characters (the tricks that make a URL look like it goes elsewhere).
    """
    text = url.strip()
    if not text or any(ch in text for ch in "\\ ") or any(ord(ch) < 32 for ch in text):
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    default = 80 if scheme == "http" else 443
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


@dataclass(frozen=True)
class FormConfig:
    """One form's settings, resolved once at start-up."""

    name: str
    fields: Mapping[str, str]  # contact field -> form field name
    country_field: str | None  # a field holding an ISO country, used as the phone region
    phone_region: str | None  # region for national numbers when no country field is sent
    honeypot: str | None
    redirect_field: str
    redirect: str | None  # default thank-you page
    redirect_origins: frozenset[str]
    allowed_origins: frozenset[str]
    custom_fields: tuple[tuple[str, str], ...]  # (form field, Rocket.Chat custom field id)
    rate_limit: int  # posts per minute per client IP; 0 = off
    origins_setting: str  # the variable that lists allowed_origins, for messages
    redirect_setting: str


def _env_key(form: str) -> str:
    return form.upper().replace("-", "_")


class _FormSettings:
    """``FORM_<FORM>_<KEY>``, else ``FORM_<KEY>``, else the default."""

    def __init__(self, settings: Settings, form: str) -> None:
        self.settings = settings
        self.form = form

    def get(self, key: str) -> tuple[str | None, str]:
        """The value (stripped, ``None`` if unset) and the variable it came from."""
        for variable in (f"FORM_{_env_key(self.form)}_{key}", f"FORM_{key}"):
            value = self.settings.lookup(variable)
            if value is not None and value.strip():
                return value.strip(), variable
        return None, f"FORM_{key}"

    def fail(self, variable: str, value: str, expected: str) -> SettingsError:
        return SettingsError(f"setting {variable} (got {value!r}): {expected}")

    def field_name(self, key: str, default: str, *, may_be_off: bool = False) -> str | None:
        value, variable = self.get(key)
        if value is None:
            return default
        if may_be_off and value.lower() in OFF:
            return None
        if len(value) > 100 or any(ord(ch) < 32 for ch in value):
            raise self.fail(variable, value, "expected a form field name")
        return value

    def origins(self, key: str) -> tuple[frozenset[str], str]:
        value, variable = self.get(key)
        found: set[str] = set()
        for item in re.split(r"[\s,]+", value or ""):
            if not item:
                continue
            origin = origin_of(item)
            rest = urlsplit(item.rstrip("/")) if origin else None
            if origin is None or rest is None or rest.path or rest.query or rest.fragment:
                raise self.fail(
                    variable,
                    value or "",
                    "expected comma-separated origins like https://www.example.com "
                    "(scheme and host, optional port, no path)",
                )
            found.add(origin)
        return frozenset(found), f"FORM_{_env_key(self.form)}_{key} or FORM_{key}"


def load_forms(settings: Settings) -> dict[str, FormConfig]:
    """Every form's configuration: ``default`` plus the names in ``FORMS``.

    Raises :class:`SettingsError` naming the variable for a malformed setting, so the
    service stops at start-up instead of misbehaving on the first post.
    """
    names = ["default"]
    listed = settings.lookup("FORMS") or ""
    for item in re.split(r"[\s,]+", listed.strip()):
        if not item:
            continue
        if not FORM_NAME.fullmatch(item):
            raise SettingsError(
                f"setting FORMS (got {listed!r}): expected comma-separated form names of "
                "lower-case letters, digits, - and _ (e.g. 'pricing,newsletter')"
            )
        if item not in names:
            names.append(item)
    forms: dict[str, FormConfig] = {}
    for name in names:
        conf = _FormSettings(settings, name)
        fields = {
            key: conf.field_name(f"FIELD_{key.upper()}", key) or key for key in CONTACT_INPUTS
        }
        country = conf.field_name("FIELD_COUNTRY", "country", may_be_off=True)
        honeypot = conf.field_name("HONEYPOT", "website", may_be_off=True)
        redirect_field = conf.field_name("FIELD_REDIRECT", "redirect") or "redirect"
        used = [*fields.values(), redirect_field, *(f for f in (country, honeypot) if f)]
        if len(set(used)) != len(used):
            raise SettingsError(
                f"the fields of form {name!r} must have distinct names, got {', '.join(used)}: "
                "check the FORM_…FIELD_…, FORM_…HONEYPOT settings"
            )

        region, variable = conf.get("PHONE_REGION")
        if region is not None:
            if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
                raise conf.fail(variable, region, "expected a two-letter ISO country code like US")
            region = region.upper()

        redirect, variable = conf.get("REDIRECT")
        if redirect is not None and origin_of(redirect) is None:
            raise conf.fail(variable, redirect, "expected an absolute http(s) URL")

        limit_text, variable = conf.get("RATE_LIMIT")
        try:
            rate_limit = DEFAULT_RATE_LIMIT if limit_text is None else int(limit_text)
            if rate_limit < 0:
                raise ValueError
        except ValueError:
            raise conf.fail(
                variable,
                limit_text or "",
                "expected posts per minute per client IP, 0 for no limit",
            ) from None

        custom: list[tuple[str, str]] = []
        custom_text, variable = conf.get("CUSTOM_FIELDS")
        for item in re.split(r"[\s,]+", custom_text or ""):
            if not item:
                continue
            source, _, target = item.partition(":")
            if not source or (target == "" and ":" in item):
                raise conf.fail(
                    variable,
                    custom_text or "",
                    "expected field or field:custom_field_id, comma-separated",
                )
            custom.append((source, target or source))

        allowed, origins_setting = conf.origins("ALLOWED_ORIGINS")
        redirect_origins, redirect_setting = conf.origins("REDIRECT_ORIGINS")
        forms[name] = FormConfig(
            name=name,
            fields=fields,
            country_field=country,
            phone_region=region,
            honeypot=honeypot,
            redirect_field=redirect_field,
            redirect=redirect,
            redirect_origins=redirect_origins,
            allowed_origins=allowed,
            custom_fields=tuple(custom),
            rate_limit=rate_limit,
            origins_setting=origins_setting,
            redirect_setting=redirect_setting,
        )
    return forms


class RateLimiter:
    """Posts per client per one-minute window, in memory (per process)."""

    MAX_KEYS = 100_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.window = -1
        self.counts: dict[tuple[str, str], int] = {}

    def hit(self, key: tuple[str, str], limit: int) -> float | None:
        """Count one post; ``None`` when allowed, else the seconds until the next window."""
        if limit <= 0:
            return None
        now = self.clock()
        window = int(now // 60)
        if window != self.window or len(self.counts) >= self.MAX_KEYS:
            self.window = window
            self.counts.clear()
        count = self.counts.get(key, 0) + 1
        self.counts[key] = count
        if count > limit:
            return 60 - (now % 60)
        return None


# -- the page ------------------------------------------------------------------------------


def _asset(name: str) -> str:
    return (files("adapter.web") / "static" / name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


class _Page:
    """The hosted form template, its inline CSS/JS and their Content-Security-Policy."""

    def __init__(self) -> None:
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("adapter.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.template = env.get_template("form.html")
        self.css = _asset("form.css")
        self.js = _asset("form.js")
        self.csp = (
            f"default-src 'none'; script-src {_csp_hash(self.js)}; style-src {_csp_hash(self.css)}; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'"
        )

    def render(
        self,
        status: int,
        *,
        frame_origins: frozenset[str] = frozenset(),
        headers: Mapping[str, str] | None = None,
        **values: Any,
    ) -> HTMLResponse:
        context: dict[str, Any] = {
            "title": "Contact us",
            "intro": "Leave your details and we will get back to you.",
            "notice": "",
            "result": None,
            "fields": [],
            "honeypot": None,
            "hidden": [],
            "action": "",
            "again_url": None,
            "submit": "Send",
            "messages": MESSAGES,
        }
        context.update(values)
        html = self.template.render(css=self.css, js=self.js, **context)
        csp = self.csp
        if frame_origins:
            csp += "; frame-ancestors 'self' " + " ".join(sorted(frame_origins))
        return HTMLResponse(
            html,
            status_code=status,
            headers={
                "Content-Security-Policy": csp,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "strict-origin-when-cross-origin",
                "Cache-Control": "no-store",
                **(headers or {}),
            },
        )


def _field_message(label: str, message: str) -> str:
    """Core messages either quote the value or complete a sentence ("is required")."""
    return f"{label} {message}" if re.match(r"is\b", message) else message


def _phone_hint(region: str | None) -> str:
    if region:
        return f"With the country code, e.g. +1 415 555 2671, or as a {region} number."
    return "With the country code, e.g. +1 415 555 2671."


# -- the channel ---------------------------------------------------------------------------


class _Malformed(ValueError):
    """The body is not a form we can read; the message says what was expected."""


async def _once(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


async def _parse(content_type: str, headers: Headers, body: bytes) -> list[tuple[str, str]]:
    """The text fields of a urlencoded or multipart body, in order (files are ignored)."""
    if content_type == URLENCODED:
        try:
            text = body.decode("utf-8")
            text = "&".join(piece for piece in text.split("&") if piece)
            return parse_qsl(
                text,
                keep_blank_values=True,
                strict_parsing=True,
                encoding="utf-8",
                errors="strict",
                max_num_fields=MAX_FIELDS,
            )
        except ValueError as exc:  # UnicodeDecodeError is one
            reason = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
            raise _Malformed(f"the urlencoded form body could not be read ({reason})") from None
    parser = MultiPartParser(
        headers,
        _once(body),
        max_files=MAX_FILES,
        max_fields=MAX_FIELDS,
        max_part_size=len(body) + 1,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise _Malformed(f"the multipart form body could not be read: {exc.message}") from None
    except Exception as exc:  # python-multipart may raise others on garbage: still the sender's
        raise _Malformed(
            f"the multipart form body could not be read ({type(exc).__name__})"
        ) from None
    try:
        return [(key, value) for key, value in form.multi_items() if isinstance(value, str)]
    finally:
        await form.close()


def _first(pairs: Sequence[tuple[str, str]], name: str | None) -> str | None:
    """The first non-blank value of a field (a form may repeat a name)."""
    if name is None:
        return None
    blank: str | None = None
    for key, value in pairs:
        if key == name:
            if value.strip():
                return value
            blank = value
    return blank


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "").lower()


def _safe_link(url: str | None) -> str | None:
    """A link we may print on a page: an absolute http(s) URL, else nothing."""
    if url and origin_of(url) is not None and len(url) <= 2000:
        return url
    return None


class FormsChannel:
    """``POST /forms/<form>``, its CORS preflight, and the hosted page ``GET /form``."""

    name = "form"  # submissions are "form:<form>"

    def __init__(self) -> None:
        self._page: _Page | None = None

    @property
    def page(self) -> _Page:
        if self._page is None:
            self._page = _Page()
        return self._page

    def routes(self, context: ChannelContext) -> Sequence[BaseRoute]:
        settings = context.settings
        forms = load_forms(settings)
        limiter = RateLimiter()
        page = self.page
        required = set(settings.contact_required_fields)

        def unknown(form: str) -> str:
            return (
                f"there is no form named {form[:40]!r}: the forms here are "
                f"{', '.join(sorted(forms))} (list more in FORMS)"
            )

        def fail(
            request: Request,
            status: int,
            message: str,
            *,
            headers: Mapping[str, str] | None = None,
            config: FormConfig | None = None,
            heading: str = "Your details were not sent",
        ) -> Response:
            if _wants_json(request):
                response: Response = error_response(status, message)
                response.headers.update(headers or {})
                return response
            return page.render(
                status,
                headers=headers,
                title="Sorry",
                result={
                    "kind": "problem",
                    "heading": heading,
                    "message": message[:1].upper() + message[1:] + ".",
                    "reference": None,
                    "again": "Go back",
                },
                again_url=_safe_link(request.headers.get("referer")),
                frame_origins=config.allowed_origins if config else frozenset(),
            )

        def field_views(
            config: FormConfig,
            values: Mapping[str, str | None],
            errors: Mapping[str, str],
        ) -> list[dict[str, Any]]:
            views = []
            first_error = next((k for k in CONTACT_INPUTS if errors.get(k)), None)
            region = config.phone_region or settings.default_phone_region
            for key, spec in CONTACT_INPUTS.items():
                label = str(spec["label"])
                hint = _phone_hint(region) if key == "phone" else None
                error = _field_message(label, errors[key]) if errors.get(key) else ""
                described = [f"f-{key}-hint"] if hint else []
                if error:
                    described.append(f"f-{key}-error")
                views.append(
                    {
                        **spec,
                        "key": key,
                        "input_name": config.fields[key],
                        "value": values.get(key) or "",
                        "error": error,
                        "hint": hint,
                        "required": key in required,
                        "describedby": " ".join(described),
                        "autofocus": key == first_error,
                    }
                )
            return views

        def intro(default: str) -> str:
            if "email" not in required and "phone" not in required:
                return default + " Give an email address or a phone number, or both."
            return default

        def form_page(
            request: Request,
            config: FormConfig,
            *,
            status: int = 200,
            values: Mapping[str, str | None] | None = None,
            errors: Mapping[str, str] | None = None,
            hidden: Sequence[tuple[str, str]] = (),
            headers: Mapping[str, str] | None = None,
        ) -> Response:
            errors = errors or {}
            root = request.scope.get("root_path", "")
            count = sum(1 for k in CONTACT_INPUTS if errors.get(k))
            extra = [f"{k} {v}" for k, v in errors.items() if k not in CONTACT_INPUTS]
            notice = " ".join(
                [
                    *(
                        ["Please correct the field marked below."]
                        if count == 1
                        else [f"Please correct the {count} fields marked below."]
                        if count
                        else []
                    ),
                    *extra,
                ]
            )
            return page.render(
                status,
                headers=headers,
                title="Check your details" if errors else "Contact us",
                intro=intro(
                    "Correct what is marked and send the form again."
                    if errors
                    else "Leave your details and we will get back to you."
                ),
                notice=notice,
                fields=field_views(config, values or {}, errors),
                honeypot=config.honeypot,
                hidden=list(hidden),
                action=f"{root}/forms/{config.name}",
                again_url=f"{root}/form" + ("" if config.name == "default" else f"/{config.name}"),
                frame_origins=config.allowed_origins,
            )

        async def show_form(request: Request) -> Response:
            name = request.path_params.get("form", "default")
            config = forms.get(name)
            if config is None:
                return fail(request, 404, unknown(name), heading="No such form")
            return form_page(request, config)

        async def preflight(request: Request, config: FormConfig) -> Response:
            given = request.headers.get("origin", "")
            origin = origin_of(given)
            method = request.headers.get("access-control-request-method", "POST").upper()
            asked = [
                h.strip().lower()
                for h in request.headers.get("access-control-request-headers", "").split(",")
                if h.strip()
            ]
            if origin is None or origin not in config.allowed_origins:
                return JSONResponse(
                    {
                        "error": f"cross-origin requests from {given[:100]!r} are not allowed for "
                        f"form {config.name!r}: list the origin in {config.origins_setting}"
                    },
                    status_code=403,
                    headers={"Vary": "Origin"},
                )
            not_allowed = [h for h in asked if h not in CORS_HEADERS]
            if method != "POST" or not_allowed:
                return JSONResponse(
                    {
                        "error": f"only POST with the headers {', '.join(sorted(CORS_HEADERS))} "
                        f"is allowed (asked: {method} {', '.join(not_allowed)})".rstrip()
                    },
                    status_code=403,
                    headers={"Vary": "Origin"},
                )
            return Response(
                status_code=204,
                headers={
                    "Access-Control-Allow-Origin": given.strip(),
                    "Access-Control-Allow-Methods": "POST",
                    "Access-Control-Allow-Headers": ", ".join(asked) or "Accept, Content-Type",
                    "Access-Control-Max-Age": CORS_MAX_AGE,
                    "Vary": "Origin",
                },
            )

        def respond(
            request: Request,
            config: FormConfig,
            outcome: Outcome,
            pairs: Sequence[tuple[str, str]],
            values: Mapping[str, str | None],
            redirect: str | None,
            cors: Mapping[str, str],
        ) -> Response:
            api = outcome_response(outcome, url_for_delivery=f"/deliveries/{outcome.delivery_id}")
            ok = api.status_code < 300
            headers = {
                **cors,
                **({"Location": api.headers["location"]} if "location" in api.headers else {}),
            }
            if _wants_json(request):
                if not (redirect and ok):
                    return JSONResponse(
                        json.loads(bytes(api.body)), status_code=api.status_code, headers=headers
                    )
                body = json.loads(bytes(api.body))
                body["redirect"] = redirect
                return JSONResponse(body, status_code=api.status_code, headers=headers)
            if redirect and ok:
                return RedirectResponse(redirect, status_code=303, headers=dict(cors))
            if outcome.errors:
                skip = {*config.fields.values(), config.honeypot}
                hidden = [(k, v) for k, v in pairs if k not in skip][:MAX_FIELDS]
                return form_page(
                    request,
                    config,
                    status=api.status_code,
                    values=values,
                    errors=outcome.errors,
                    hidden=hidden,
                    headers=cors,
                )
            kind = {"delivered": "registered", "failed": "failed"}.get(outcome.status, "queued")
            return page.render(
                api.status_code,
                headers=headers,
                title=MESSAGES["heading"],
                result={
                    "kind": kind,
                    "heading": MESSAGES["heading"],
                    "message": MESSAGES[kind],
                    "reference": outcome.delivery_id,
                    "again": MESSAGES["again"],
                },
                again_url=_safe_link(request.headers.get("referer")),
                frame_origins=config.allowed_origins,
            )

        async def submit(request: Request) -> Response:
            name = request.path_params["form"]
            config = forms.get(name)
            if config is None:
                return fail(request, 404, unknown(name))
            if request.method == "OPTIONS":
                return await preflight(request, config)

            given = request.headers.get("origin")
            if given is None and request.headers.get("referer"):
                given = origin_of(request.headers["referer"]) or "null"
            origin = origin_of(given) if given else None
            # The hosted page posts from this service's own origin; behind a proxy that
            # rewrites Host, X-Forwarded-Host names it (a cross-site form cannot set it).
            hosts = {
                h.strip().lower()
                for header in ("host", "x-forwarded-host")
                for h in request.headers.get(header, "").split(",")
                if h.strip()
            }
            same_site = origin is not None and urlsplit(origin).netloc in hosts
            listed = origin is not None and origin in config.allowed_origins
            vary = {"Vary": "Origin"}
            if config.allowed_origins and given is not None and not (same_site or listed):
                log.warning("form_refused", form=name, reason="origin", origin=(given or "")[:100])
                return fail(
                    request,
                    403,
                    f"form {name!r} does not accept posts from {given[:100]!r}: "
                    f"list that origin in {config.origins_setting}",
                    headers=vary,
                    config=config,
                )
            cors = {
                **vary,
                **(
                    {
                        "Access-Control-Allow-Origin": request.headers.get("origin", ""),
                        "Access-Control-Expose-Headers": "Location, X-Request-ID",
                    }
                    if listed and request.headers.get("origin")
                    else {}
                ),
            }

            wait = limiter.hit((name, client_address(request)), config.rate_limit)
            if wait is not None:
                log.warning("form_refused", form=name, reason="rate limit")
                return fail(
                    request,
                    429,
                    f"too many posts from your address: at most {config.rate_limit} a minute, "
                    f"try again in {int(wait) + 1} s",
                    headers={**cors, "Retry-After": str(int(wait) + 1)},
                    config=config,
                )

            content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type not in (URLENCODED, MULTIPART):
                return fail(
                    request,
                    415,
                    f"send the form as {URLENCODED} or {MULTIPART} "
                    f"(got {content_type[:60] or 'no Content-Type'})",
                    headers=cors,
                    config=config,
                )
            try:
                body = await read_body(request, settings.max_body_bytes)
            except BodyTooLarge as exc:
                return fail(request, 413, f"{exc}: send a short form", headers=cors, config=config)
            try:
                pairs = await _parse(content_type, request.headers, body)
            except _Malformed as exc:
                return fail(request, 400, str(exc), headers=cors, config=config)

            redirect = config.redirect
            asked = _first(pairs, config.redirect_field)
            if asked and asked.strip():
                if origin_of(asked) not in config.redirect_origins:
                    log.warning("form_refused", form=name, reason="redirect")
                    return fail(
                        request,
                        400,
                        f"the redirect to {(origin_of(asked) or asked)[:100]!r} is not allowed: "
                        f"list its origin in {config.redirect_setting}",
                        headers=cors,
                        config=config,
                    )
                redirect = asked.strip()

            values = {key: _first(pairs, field) for key, field in config.fields.items()}
            if config.honeypot and (_first(pairs, config.honeypot) or "").strip():
                log.info("form_honeypot", form=name)
                fake = Outcome(status="pending", delivery_id=uuid.uuid4().hex)
                return respond(request, config, fake, pairs, values, redirect, cors)

            region = config.phone_region
            country = (_first(pairs, config.country_field) or "").strip().upper()
            if country in phonenumbers.SUPPORTED_REGIONS:
                region = country
            custom = {
                target: value[:MAX_CUSTOM_VALUE]
                for source, target in config.custom_fields
                if (value := (_first(pairs, source) or "").strip())
            }
            outcome = await context.queue.submit(
                Submission(
                    source=f"form:{name}",
                    fields=values,
                    custom_fields=custom,
                    phone_region=region,
                )
            )
            log.info(
                "form_accepted" if outcome.accepted else "form_invalid",
                form=name,
                delivery_id=outcome.delivery_id,
                status=outcome.status,
            )
            return respond(request, config, outcome, pairs, values, redirect, cors)

        return [
            Route("/form", show_form, methods=["GET"]),
            Route("/form/{form:str}", show_form, methods=["GET"]),
            Route("/forms/{form:str}", submit, methods=["POST", "OPTIONS"]),
        ]


channel = FormsChannel()
