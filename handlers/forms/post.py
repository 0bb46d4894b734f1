"""What the forms channel does with a post to ``/forms/<form>``: the CORS preflight, the
``Origin`` allow-list, the per-client rate limit, reading the urlencoded or multipart body,
the redirect allow-list, the honeypot, and the submission to the delivery queue.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from urllib.parse import parse_qsl, urlsplit

import phonenumbers
import structlog
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from adapter.channels import (
    BodyTooLarge,
    ChannelContext,
    Outcome,
    Submission,
    client_address,
    consent_given,
    read_body,
)
from handlers.forms.config import MAX_FIELDS, FormConfig, RateLimiter, origin_of
from handlers.forms.page import FormViews

__all__ = ["FormPosts"]

log = structlog.get_logger("handlers.forms")

URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
MAX_FILES = 10
MAX_CUSTOM_VALUE = 2000
CORS_HEADERS = frozenset({"accept", "accept-language", "content-language", "content-type"})
CORS_MAX_AGE = "600"


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


class FormPosts:
    """The posts to one app's forms."""

    def __init__(
        self, context: ChannelContext, forms: Mapping[str, FormConfig], views: FormViews
    ) -> None:
        self.context = context
        self.forms = forms
        self.views = views
        self.limiter = RateLimiter()

    async def preflight(self, request: Request, config: FormConfig) -> Response:
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

    async def submit(self, request: Request) -> Response:
        """``POST /forms/<form>`` (and its ``OPTIONS`` preflight)."""
        views = self.views
        name = request.path_params["form"]
        config = self.forms.get(name)
        if config is None:
            return views.fail(request, 404, views.unknown(name))
        if not config.enabled:
            return views.turned_off(request, config)
        if request.method == "OPTIONS":
            return await self.preflight(request, config)

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
            return views.fail(
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

        wait = self.limiter.hit((name, client_address(request)), config.rate_limit)
        if wait is not None:
            log.warning("form_refused", form=name, reason="rate limit")
            return views.fail(
                request,
                429,
                f"too many posts from your address: at most {config.rate_limit} a minute, "
                f"try again in {int(wait) + 1} s",
                headers={**cors, "Retry-After": str(int(wait) + 1)},
                config=config,
            )

        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in (URLENCODED, MULTIPART):
            return views.fail(
                request,
                415,
                f"send the form as {URLENCODED} or {MULTIPART} "
                f"(got {content_type[:60] or 'no Content-Type'})",
                headers=cors,
                config=config,
            )
        try:
            body = await read_body(request, self.context.settings.max_body_bytes)
        except BodyTooLarge as exc:
            return views.fail(
                request, 413, f"{exc}: send a short form", headers=cors, config=config
            )
        try:
            pairs = await _parse(content_type, request.headers, body)
        except _Malformed as exc:
            return views.fail(request, 400, str(exc), headers=cors, config=config)

        redirect = config.redirect
        asked = _first(pairs, config.redirect_field)
        if asked and asked.strip():
            if origin_of(asked) not in config.redirect_origins:
                log.warning("form_refused", form=name, reason="redirect")
                return views.fail(
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
            return views.respond(request, config, fake, pairs, values, redirect, cors)

        region = config.phone_region
        country = (_first(pairs, config.country_field) or "").strip().upper()
        if country in phonenumbers.SUPPORTED_REGIONS:
            region = country
        custom = {
            target: value[:MAX_CUSTOM_VALUE]
            for source, target in config.custom_fields
            if (value := (_first(pairs, source) or "").strip())
        }
        outcome = await self.context.queue.submit(
            Submission(
                source=f"form:{name}",
                fields=values,
                custom_fields=custom,
                phone_region=region,
                sender_authenticated=config.trust_sender,
                consent=consent_given(_first(pairs, "consent")),
            )
        )
        log.info(
            "form_accepted" if outcome.accepted else "form_invalid",
            form=name,
            delivery_id=outcome.delivery_id,
            status=outcome.status,
        )
        return views.respond(request, config, outcome, pairs, values, redirect, cors)
