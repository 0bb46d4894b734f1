"""The shared plumbing of webhook channels: one provider = verify + map, the rest is here.

A provider module in ``handlers/`` subclasses :class:`WebhookProvider` with two pure
methods, ``verify`` (exactly as the provider signs) and ``parse`` (its payload to a
:class:`WebhookEvent`), and exposes ``channel = WebhookChannel(Provider())``. The
channel mounts ``POST /webhooks/<name>`` and does what every provider needs:
refuse when the secret is not configured (503, naming the setting), cap the body
(413), verify (401), parse (400 with what was expected), accept durably with
deduplication on the provider's event id, and answer the way the provider counts
success. A provider that batches several events in one request (HubSpot) also
overrides ``parse_all`` (default: ``[parse(request)]``): the whole batch is parsed first
(one bad element is a 400 and nothing is stored), then each event is accepted in order
as if it had come alone — deduplicated on its own id, ignored or kept as rejected on its
own — except that the events of one person (``person_key``) in the request are one
submission carrying all their details and standing for all their event ids: one
delivery, not one per event (the worker could take the first before the next merged
into it), and every one of those events is answered with its outcome. The ids are all
recorded for that delivery, so a retry of the batch or of any one event alone is a
duplicate; an event seen before beside new ones of the same person does not hide them
(see ``Submission.also_event_ids``). The request gets one answer: the event's own when
there is one event, else ``{"ok": true, "events": [<each event's answer>]}``.
A provider whose signature covers more than the body (HubSpot: the URL it called) says
so in the 401 with ``refusal_hint``.
Signed but invalid contact data is answered 2xx and kept as ``rejected``:
the provider would only send the same bad data again. ``<PROVIDER>_REQUIRED_FIELDS``
(same syntax and floor as ``CONTACT_REQUIRED_FIELDS``) overrides the required fields for
one provider, and a field the provider never sends says so in the rejection, with the
setting to change. Events without contact details are answered 2xx and only logged, or
also kept as ``ignored`` rows when ``WEBHOOK_RECORD_IGNORED`` is true. Reading the payload
itself (JSON, text, the ``<PROVIDER>_FIELD_*`` mappings) is done with the pure helpers of
:mod:`adapter.payloads`.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import structlog
from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from adapter.channels.base import ChannelContext, ChannelStatus
from adapter.channels.http import BodyTooLarge, read_body
from adapter.core.payloads import NO_CONTACT, TOO_DEEP, Lookup, PayloadError, no_contact_reason
from adapter.core.records import Outcome, Submission
from adapter.settings import Settings, check_required_fields, setting_error

__all__ = [
    "PayloadError",
    "WebhookChannel",
    "WebhookEvent",
    "WebhookProvider",
    "WebhookRequest",
    "WebhookSettings",
    "body_digest",
    "missing_hints",
    "record_ignored",
    "required_fields",
]

log = structlog.get_logger("adapter.webhooks")


@dataclass(frozen=True)
class WebhookRequest:
    """What a provider's pure functions may look at."""

    body: bytes
    headers: Headers
    query: QueryParams
    method: str = "POST"
    url: str = ""
    content_type: str = "application/json"
    lookup: Callable[[str], str | None] = field(default=lambda _name: None)  # channel settings


@dataclass(frozen=True)
class WebhookEvent:
    """One provider event, mapped to contact fields (or ignored, with the reason)."""

    event_id: str | None
    fields: Mapping[str, str | None] = field(default_factory=dict)
    person_key: str | None = None
    custom_fields: Mapping[str, str] = field(default_factory=dict)
    ignored: str | None = None  # why it carries no contact (stored only if WEBHOOK_RECORD_IGNORED)
    event_type: str | None = None
    never_sends: frozenset[str] = frozenset()  # contact fields this kind of event never carries
    consent: bool | None = None  # see Submission.consent (None: this provider never asks)

    @classmethod
    def unless_unreachable(
        cls,
        event_id: str | None,
        fields: Mapping[str, str | None],
        *,
        event_type: str | None,
        person_key: str | None = None,
        custom_fields: Mapping[str, str] | None = None,
        never_sends: frozenset[str] = frozenset(),
        reason: str = NO_CONTACT,
        consent: bool | None = None,
    ) -> WebhookEvent:
        """The event carrying ``fields``; the same event ignored, with ``reason`` ("the
        visitor left no email or phone"), when they hold neither an email nor a phone (see
        :func:`adapter.core.payloads.no_contact_reason`)."""
        why = no_contact_reason(fields, reason)
        if why is not None:
            return cls(event_id, ignored=why, event_type=event_type)
        return cls(
            event_id,
            fields=fields,
            person_key=person_key,
            custom_fields=custom_fields or {},
            event_type=event_type,
            never_sends=never_sends,
            consent=consent,
        )


Answered = tuple[Outcome | None, WebhookEvent]  # an event's outcome (None: ignored, not kept)


def body_digest(body: bytes) -> str:
    """An event id for providers that send none but retry byte-identical bodies."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


class WebhookProvider(ABC):
    """A chat widget or form tool that posts webhooks."""

    name: str  # URL segment and source suffix: /webhooks/<name>, source "webhook:<name>"
    secret_setting: str  # e.g. "CHATWOOT_WEBHOOK_SECRET"
    label: str = ""  # the provider's name as people write it ("tawk.to"); default: ``name``
    never_sends: frozenset[str] = frozenset()  # contact fields none of its events carries
    success_status: int = 200
    timestamp_window: float = 300.0
    max_body_bytes: int | None = None  # default: the service's MAX_BODY_BYTES
    answer_errors: bool = True  # False where the provider keeps the answer in view of people
    refusal_hint: str = ""  # added to the 401 text: what else the signature depends on
    # What the provider really sends (its samples in shared/contracts); any other declared
    # type is a 415. ``+json`` types count as JSON; a request without one is read as sent.
    content_types: frozenset[str] = frozenset({"application/json"})
    field_prefix: str | None = None  # "TALLY": reads TALLY_FIELD_NAME / _EMAIL / _PHONE

    def check(self, lookup: Lookup) -> None:
        """Check the provider's own settings (beyond the secrets, ``<PROVIDER>_REQUIRED_FIELDS``
        and ``<PROVIDER>_FIELD_*``), raising :class:`~adapter.settings.SettingsError`."""
        return None

    def stale_by(self, request: WebhookRequest, secret: str, *, now: float) -> float | None:
        """For a request :meth:`verify` refused: how many seconds its timestamp is off
        (positive: in the past) when the signature itself is right, else None. A provider
        with a signed timestamp overrides this, so a clock or a replay is named as the
        cause rather than the secret."""
        return None

    @property
    def secret_settings(self) -> tuple[str, ...]:
        """The settings that enable this provider, any one suffices (Crisp has two)."""
        return (self.secret_setting,)

    @property
    def required_setting(self) -> str:
        """``<PROVIDER>_REQUIRED_FIELDS``: this provider's own CONTACT_REQUIRED_FIELDS."""
        return f"{self.name.upper()}_REQUIRED_FIELDS"

    @abstractmethod
    def verify(self, request: WebhookRequest, secret: str, *, now: float) -> bool:
        """True when the request is authentic (constant-time; timestamp window if signed)."""

    @abstractmethod
    def parse(self, request: WebhookRequest) -> WebhookEvent:
        """Map the payload; raise :class:`PayloadError` for a payload of the wrong shape."""

    def parse_all(self, request: WebhookRequest) -> Sequence[WebhookEvent]:
        """Every event of the request, in the order to accept them: one unless the provider
        batches (then override this); raise :class:`PayloadError` if any has the wrong shape."""
        return [self.parse(request)]

    def answer(self, outcome: Outcome | None, event: WebhookEvent) -> Response:
        """The success answer: the delivery's id and status, small (some providers store it);
        with ``answer_errors``, also the field errors of a contact kept as rejected."""
        return JSONResponse(self.answer_body(outcome, event), status_code=self.success_status)

    def answer_all(self, answered: Sequence[tuple[Outcome | None, WebhookEvent]]) -> Response:
        """The answer to a request of several events (or none): each event's answer body."""
        if len(answered) == 1:
            return self.answer(*answered[0])
        bodies = [self.answer_body(outcome, event) for outcome, event in answered]
        return JSONResponse({"ok": True, "events": bodies}, status_code=self.success_status)

    def answer_body(self, outcome: Outcome | None, event: WebhookEvent) -> dict[str, Any]:
        """The body of :meth:`answer`."""
        body: dict[str, Any] = {"ok": True}
        if event.ignored is not None:
            body["ignored"] = event.ignored
        if outcome is not None:
            body.update(delivery_id=outcome.delivery_id, status=outcome.status)
            if outcome.contact_id:
                body["contact_id"] = outcome.contact_id
            if outcome.duplicate:
                body["duplicate"] = True
            if outcome.errors and self.answer_errors:
                body["errors"] = dict(outcome.errors)
        return body


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def required_fields(lookup: Lookup, variable: str) -> tuple[str, ...] | None:
    """The fields ``variable`` (``<PROVIDER>_REQUIRED_FIELDS``) requires; None when unset.

    Same syntax and floor as ``CONTACT_REQUIRED_FIELDS``: never below name plus one of
    email or phone. A malformed value is a :class:`~adapter.settings.SettingsError` naming
    the variable (the service does not start).
    """
    raw = lookup(variable)
    if raw is None or not raw.strip():
        return None
    value = tuple(dict.fromkeys(p.strip().lower() for p in raw.split(",") if p.strip()))
    try:
        return check_required_fields(value)
    except ValueError as exc:
        raise setting_error(variable, raw, f"{exc}, as for CONTACT_REQUIRED_FIELDS") from None


def record_ignored(lookup: Lookup, variable: str = "WEBHOOK_RECORD_IGNORED") -> bool:
    """Whether events without contact details are kept as ``ignored`` rows (default false)."""
    raw = lookup(variable) or ""
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in ("", *_FALSE):
        return False
    raise setting_error(variable, raw, "expected true or false")


def _combined_details(
    events: Sequence[WebhookEvent],
) -> tuple[dict[str, str | None], dict[str, str]]:
    """The contact fields and custom fields of several events of one person, as the
    people table would merge them one after the other: a later non-empty value wins."""
    fields: dict[str, str | None] = {}
    extras: dict[str, str] = {}
    for event in events:
        for name, value in event.fields.items():
            if value is not None and str(value).strip():
                fields[name] = value
            else:
                fields.setdefault(name, None)
        extras.update(event.custom_fields)
    return fields, extras


def missing_hints(
    provider: WebhookProvider, event: WebhookEvent, required: Sequence[str]
) -> dict[str, str]:
    """What to do about each required field that ``event`` can never carry.

    ``{"phone": "tawk.to never sends a phone: set TAWKTO_REQUIRED_FIELDS=name,email"}``;
    nothing when dropping those fields would leave less than name plus email or phone.
    """
    unsent = [f for f in required if f in provider.never_sends | event.never_sends]
    suggested = [f for f in required if f not in unsent]
    if not unsent or "name" not in suggested or len(suggested) < 2:
        return {}
    label = provider.label or provider.name
    hints = {}
    for name in unsent:
        what = label if name in provider.never_sends else f"{label} {event.event_type}"
        article = "an" if name[0] in "aeiou" else "a"
        hints[name] = (
            f"{what} never sends {article} {name}: "
            f"set {provider.required_setting}={','.join(suggested)}"
        )
    return hints


@dataclass(frozen=True)
class WebhookSettings:
    """One provider's settings, read and checked in one place (start-up and routes)."""

    required: tuple[str, ...] | None  # <PROVIDER>_REQUIRED_FIELDS, None when unset
    keep_ignored: bool  # WEBHOOK_RECORD_IGNORED
    field_mappings: Mapping[str, str]  # <PREFIX>_FIELD_NAME … as given (read per request)
    configured: bool  # one of the secret settings is set (else the route answers 503)

    @classmethod
    def read(cls, provider: WebhookProvider, lookup: Lookup) -> WebhookSettings:
        """Raises :class:`~adapter.settings.SettingsError` naming a malformed setting."""
        mappings: dict[str, str] = {}
        if provider.field_prefix:
            for field_name in ("NAME", "EMAIL", "PHONE"):
                variable = f"{provider.field_prefix}_FIELD_{field_name}"
                value = lookup(variable)
                if value is not None and any(ord(ch) < 32 for ch in value):
                    raise setting_error(
                        variable, value, "expected comma-separated field names or keys"
                    )
                if value:
                    mappings[variable] = value
        provider.check(lookup)
        return cls(
            required=required_fields(lookup, provider.required_setting),
            keep_ignored=record_ignored(lookup),
            field_mappings=mappings,
            configured=any([lookup(name) for name in provider.secret_settings]),
        )


def _stale_text(seconds: float, window: float) -> str:
    when = "in the past" if seconds >= 0 else "in the future"
    return (
        f"the signature is right but its timestamp is {abs(seconds):.0f} s {when}, outside the "
        f"{window:.0f} s window: the sender's clock is off (set it by NTP) or this is a replay "
        "of an old request; nothing was stored"
    )


class WebhookChannel:
    """Mounts one provider at ``POST /webhooks/<name>``."""

    def __init__(self, provider: WebhookProvider) -> None:
        self.provider = provider
        self.name = "webhook"  # outcomes of all webhooks are reported the same way (not at all)
        self.title = provider.label or provider.name  # "tawk.to", "Intercom"

    def check(self, settings: Settings) -> None:
        """Every setting the provider reads (see :class:`WebhookSettings`)."""
        WebhookSettings.read(self.provider, settings.lookup)

    def status(self, settings: Settings) -> ChannelStatus:
        provider = self.provider
        path = f"/webhooks/{provider.name}"
        label = f"webhook:{provider.name}"
        if WebhookSettings.read(provider, settings.lookup).configured:
            return ChannelStatus(label, True, path)
        title = provider.label or provider.name
        wanted = " or ".join(provider.secret_settings)
        return ChannelStatus(label, False, path, f"set {wanted} to the secret from {title}")

    def routes(self, context: ChannelContext) -> Sequence[BaseRoute]:
        provider = self.provider
        settings = context.settings
        source = f"webhook:{provider.name}"
        title = provider.label or provider.name  # "tawk.to", "Intercom"
        a_title = ("an " if title[:1].lower() in "aeiou" else "a ") + title
        limit = provider.max_body_bytes or settings.max_body_bytes
        own = WebhookSettings.read(provider, settings.lookup)
        own_required = own.required
        required = own_required or settings.contact_required_fields
        keep_ignored = own.keep_ignored

        async def receive(request: Request) -> Response:
            setting_names = " or ".join(provider.secret_settings)
            secret = next(filter(None, map(settings.lookup, provider.secret_settings)), None)
            if not secret:
                return JSONResponse(
                    {
                        "error": f"the {title} webhook is not configured: set "
                        f"{setting_names} to the secret from {title}, then "
                        "the provider's retries will get through"
                    },
                    status_code=503,
                )
            try:
                body = await read_body(request, limit)
            except BodyTooLarge as exc:
                return JSONResponse({"error": f"{exc}: not {a_title} event"}, status_code=413)
            hook = WebhookRequest(
                body=body,
                headers=request.headers,
                query=request.query_params,
                method=request.method,
                url=str(request.url),
                content_type=request.headers.get("content-type", "").split(";")[0].strip().lower(),
                lookup=settings.lookup,
            )
            now = time.time()
            try:
                authentic = provider.verify(hook, secret, now=now)
            except Exception:
                authentic = False
            if not authentic:
                try:
                    stale = provider.stale_by(hook, secret, now=now)
                except Exception:
                    stale = None
                if stale is not None:
                    log.warning(
                        "webhook_refused",
                        provider=provider.name,
                        reason="stale timestamp",
                        off_by=round(stale),
                    )
                    return JSONResponse(
                        {"error": _stale_text(stale, provider.timestamp_window)}, status_code=401
                    )
                log.warning("webhook_refused", provider=provider.name, reason="bad signature")
                hint = f"; {provider.refusal_hint}" if provider.refusal_hint else ""
                return JSONResponse(
                    {
                        "error": f"signature or token check failed: make sure {setting_names} "
                        f"matches the secret configured in {title}{hint}"
                    },
                    status_code=401,
                )
            declared = hook.content_type
            json_like = declared.endswith("+json") and "application/json" in provider.content_types
            if declared and declared not in provider.content_types and not json_like:
                expected = " or ".join(sorted(provider.content_types))
                return JSONResponse(
                    {"error": f"{title} sends {expected}, not {declared}: nothing was stored"},
                    status_code=415,
                )
            try:
                events = list(provider.parse_all(hook))
            except PayloadError as exc:
                return JSONResponse(
                    {"error": f"not {a_title} event we understand: {exc}"}, status_code=400
                )
            except RecursionError:
                return JSONResponse(
                    {"error": f"not {a_title} event we understand: {TOO_DEEP}"},
                    status_code=400,
                )
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                return JSONResponse(
                    {"error": f"not {a_title} event we understand ({type(exc).__name__})"},
                    status_code=400,
                )
            if len(events) == 1:
                return provider.answer(await accept(events[0], body_digest(body)), events[0])
            # A batch: in order; the events of one person at the place of their first one.
            groups: dict[str, list[int]] = {}
            for index, event in enumerate(events):
                if event.ignored is None and event.person_key is not None:
                    groups.setdefault(event.person_key, []).append(index)
            answered: dict[int, Answered] = {}
            tally: Counter[str] = Counter()  # a batch logs one line, not one per event
            for index, event in enumerate(events):
                if index in answered:
                    continue
                group = groups.get(event.person_key or "") if event.ignored is None else None
                if group is None or len(group) == 1:
                    # Without an event id, each ignored event of a batch needs its own digest.
                    digest = f"{body_digest(body)}#{index}"
                    answered[index] = (await accept(event, digest, tally=tally), event)
                else:
                    members = [(i, events[i]) for i in group]
                    answered.update(await accept_person(members, tally))
            log.info("webhook_batch", provider=provider.name, events=len(events), **tally)
            return provider.answer_all([answered[i] for i in range(len(events))])

        async def accept_person(
            members: Sequence[tuple[int, WebhookEvent]], tally: Counter[str] | None = None
        ) -> dict[int, Answered]:
            """Several events of one person in one request: their details as one submission
            (one delivery, one registration) standing for every event id of the group, so
            that the provider retrying the batch or any one event alone is answered as a
            duplicate; every event of the group is answered with its outcome."""
            fields, extras = _combined_details([event for _, event in members])
            first = members[0][1]
            whole = replace(first, fields=fields, custom_fields=extras)
            others = tuple(e.event_id for _, e in members[1:] if e.event_id)
            outcome = await accept(whole, "", also_event_ids=others, tally=tally)
            return {index: (outcome, event) for index, event in members}

        async def accept(
            event: WebhookEvent,
            digest: str,
            *,
            also_event_ids: tuple[str, ...] = (),
            tally: Counter[str] | None = None,
        ) -> Outcome | None:
            """One event, as if it had come alone: the outcome to answer with (None when
            it was ignored and not kept). ``also_event_ids``: the other events of the person
            whose details ``event`` carries combined (see Submission.also_event_ids)."""
            if event.ignored is not None:
                if tally is not None:  # one line for the whole batch (see receive)
                    tally["ignored"] += 1
                else:
                    log.info(
                        "webhook_ignored",
                        provider=provider.name,
                        reason=event.ignored,
                        event_type=event.event_type,
                    )
                if not keep_ignored:
                    return None
                kind = event.event_type or "event"
                why = event.ignored if kind in event.ignored else f"{kind}: {event.ignored}"
                return await context.queue.submit(
                    Submission(
                        source=source,
                        fields={},
                        event_id=event.event_id or digest,
                        ignored=why[:300],
                    ),
                    wait=0,
                )
            outcome = await context.queue.submit(
                Submission(
                    source=source,
                    fields=event.fields,
                    event_id=event.event_id,
                    also_event_ids=also_event_ids,
                    person_key=event.person_key,
                    custom_fields=event.custom_fields,
                    keep_rejected=True,
                    drop_invalid_optional=True,
                    required_fields=own_required,
                    missing_hints=missing_hints(provider, event, required),
                    consent=event.consent,
                ),
                wait=0,
            )
            if tally is not None:
                tally[outcome.status] += 1 + len(also_event_ids)
                return outcome
            log.info(
                "webhook_accepted",
                provider=provider.name,
                delivery_id=outcome.delivery_id,
                status=outcome.status,
                event_type=event.event_type,
                **({"combined_events": 1 + len(also_event_ids)} if also_event_ids else {}),
            )
            return outcome

        return [Route(f"/webhooks/{provider.name}", receive, methods=["POST"])]
