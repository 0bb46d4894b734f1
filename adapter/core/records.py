"""The delivery ledger's vocabulary as plain values: submissions, rows, outcomes, attempts.

A channel builds a :class:`Submission`; the queue stores it as one ``deliveries`` row,
read back as a :class:`DeliveryRecord`; the channel's caller hears an :class:`Outcome`;
every try at Rocket.Chat is an :class:`Attempt`. The helpers below build the row of a new
delivery and fold what a person gave into a waiting row: pure, shared by the single and
the bulk accept paths and by folding a taken-over row into a newer one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from adapter.core.contact import Contact, shown_safely
from adapter.core.redact import redact_text

__all__ = [
    "DELIVERED",
    "DELIVERING",
    "FAILED",
    "FINAL",
    "IGNORED",
    "MERGED",
    "PENDING",
    "REJECTED",
    "STATUSES",
    "Attempt",
    "Callback",
    "DeliveryRecord",
    "Notifier",
    "Outcome",
    "Submission",
    "carried_over",
    "contact_of",
    "merge_into",
    "merge_raw",
    "new_row",
    "person_keys",
    "with_callback",
]

PENDING, DELIVERING, DELIVERED, FAILED, REJECTED, MERGED = (
    "pending",
    "delivering",
    "delivered",
    "failed",
    "rejected",
    "merged",  # superseded by a newer delivery for the same person, which carries its details
)
IGNORED = "ignored"  # a webhook event without contact details, kept for WEBHOOK_RECORD_IGNORED
STATUSES = (PENDING, DELIVERING, DELIVERED, FAILED, REJECTED, MERGED, IGNORED)
Notifier = Callable[["DeliveryRecord"], Awaitable[None]]
Callback = Mapping[str, Any]
FINAL = (DELIVERED, FAILED, REJECTED)  # a delivery in one of these is over


@dataclass(frozen=True)
class Attempt:
    """One try at registering a delivery in Rocket.Chat, as the admin page lists it."""

    started_at: float
    duration: float  # seconds until Rocket.Chat's answer, or until giving up on one
    outcome: str  # one of OUTCOMES
    error: str | None = None
    contact_id: str | None = None
    worker: str | None = None  # the lease owner that made the call

    OUTCOMES: ClassVar[dict[str, str]] = {
        "delivered": "Rocket.Chat registered the contact",
        "rejected": "Rocket.Chat refused the contact (not retried)",
        "retry": "no usable answer (network, timeout or 5xx): tried again later",
        "gave_up": "no usable answer, and the retry window is over",
        "rate_limited": "rate limited: waited for the window to reset (not counted)",
        "paused": "credentials or permission refused: delivery paused (not counted)",
        "abandoned": "its worker stopped before recording an answer: taken over",
    }

    @classmethod
    def from_row(cls, row: Any) -> Attempt:
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    def values(self, delivery_id: str) -> dict[str, Any]:
        return {"delivery_id": delivery_id, **asdict(self)}

    def public(self) -> dict[str, Any]:
        """For an authenticated operator; Rocket.Chat's error text may quote what it
        refused, so it is masked like ``last_error`` in the admin list."""
        return {**asdict(self), "error": redact_text(self.error) if self.error else None}


@dataclass(frozen=True)
class Submission:
    """A contact as a channel received it, before validation."""

    source: str  # "slack", "form:default", "webhook:chatwoot", "api", "cli"
    fields: Mapping[str, str | None]  # raw name / email / phone as given
    event_id: str | None = None  # the source's own event id: the same id is accepted once
    # Other event ids of the same source this one submission stands for (a provider's events
    # of one person, combined into one submission): each is recorded like ``event_id``, so a
    # retry of any one of them is a duplicate. The submission is a duplicate only when every
    # id was seen before; otherwise the seen ones are dropped and it goes on with the others.
    also_event_ids: tuple[str, ...] = ()
    person_key: str | None = None  # the source's own id for the person (session, contact id)
    custom_fields: Mapping[str, str] = field(default_factory=dict)
    callback: Mapping[str, Any] | None = None  # channel data for reporting the outcome later
    actor: str | None = None  # who submitted it (e.g. the Slack user id)
    team: str | None = None  # e.g. the Slack workspace id
    contact_manager: str | None = None  # Rocket.Chat username of the agent in charge
    drop_invalid_optional: bool = False  # register valid fields, warn about bad optional ones
    # The channel verified who sent it (signature, token): it may change what a contact
    # holds. Unauthenticated channels (public forms) only add what is missing (core.changes).
    sender_authenticated: bool = True
    keep_rejected: bool = (
        False  # store invalid contacts as 'rejected' (channels that must answer 2xx)
    )
    phone_region: str | None = None  # ISO country for national numbers; else DEFAULT_PHONE_REGION
    required_fields: tuple[str, ...] | None = None  # else CONTACT_REQUIRED_FIELDS
    missing_hints: Mapping[str, str] = field(default_factory=dict)  # field -> what to do
    ignored: str | None = None  # no contact: only kept as an 'ignored' row with this reason
    # The guest's consent, on channels that collect it (forms, the API, the generic webhook,
    # form providers' mapped question): True given, False not given; None: this channel
    # never asks (a chat, an agent's Slack command, an import), so REQUIRE_CONSENT does not
    # apply. ``consent_version``: the text agreed to, when the sender says (else the
    # version of FORM_CONSENT_TEXT).
    consent: bool | None = None
    consent_version: str | None = None

    @property
    def channel(self) -> str:
        return self.source.split(":", 1)[0]

    @property
    def event_ids(self) -> tuple[str, ...]:
        """``event_id`` and ``also_event_ids``: each non-empty id once, in order."""
        return tuple(dict.fromkeys(i for i in (self.event_id, *self.also_event_ids) if i))

    def explained(self, errors: Mapping[str, str]) -> dict[str, str]:
        """``errors``, each missing field's followed by its hint from ``missing_hints``."""
        return {
            key: f"{message} ({self.missing_hints[key]})"
            if message == "is required" and key in self.missing_hints
            else message
            for key, message in errors.items()
        }


@dataclass(frozen=True)
class DeliveryRecord:
    """One row of the deliveries table."""

    id: str
    source: str
    status: str
    attempts: int
    fields: Mapping[str, Any]
    token: str | None
    event_id: str | None
    person_key: str | None
    errors: Mapping[str, str] | None
    warnings: Mapping[str, str] | None
    next_attempt_at: float
    last_error: str | None
    contact_id: str | None
    strategy: str | None
    callback: Mapping[str, Any] | None
    actor: str | None
    team: str | None
    contact_manager: str | None
    created_at: float
    updated_at: float
    delivered_at: float | None
    notified_at: float | None
    lease_owner: str | None = None
    extra_callbacks: Sequence[Callback] | None = None  # of submissions merged into this one
    queued_at: float | None = None  # start of the current round of attempts (give-up clock)

    @classmethod
    def from_row(cls, row: Any) -> DeliveryRecord:
        """The record of a stored row; text stored before intake refused lone surrogates
        is shown with U+FFFD (every view, page and CLI reads rows through here)."""
        names = cls.__dataclass_fields__
        return cls(**{k: _displayable(row[k]) for k in names if k in row})

    @property
    def callbacks(self) -> list[Callback]:
        """Every callback to tell the outcome: this submission's, then merged ones'."""
        found = [self.callback] if self.callback else []
        return found + [dict(c) for c in self.extra_callbacks or () if c and c not in found]

    @property
    def contact(self) -> Contact | None:
        if self.status == REJECTED or not self.fields.get("name"):
            return None
        return Contact(
            name=str(self.fields["name"]),
            email=self.fields.get("email"),
            phone=self.fields.get("phone"),
            phone_extension=self.fields.get("phone_extension"),
            custom_fields=dict(self.fields.get("custom_fields") or {}),
        )

    def public(self) -> dict[str, Any]:
        """What anyone holding the id may see: no personal data (Rocket.Chat's error text
        may quote the email or phone it refused: masked)."""
        return {
            "id": self.id,
            "source": self.source,
            "team": self.team,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": redact_text(self.last_error) if self.last_error else self.last_error,
            "contact_id": self.contact_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "delivered_at": self.delivered_at,
            "next_attempt_at": self.next_attempt_at if self.status == PENDING else None,
        }

    def detail(self) -> dict[str, Any]:
        """Everything, for authenticated operators, but the visitor token (the guest's
        credential on Rocket.Chat's Livechat API, which no operator needs to see)."""
        return {
            **self.public(),
            "last_error": self.last_error,
            "event_id": self.event_id,
            "person_key": self.person_key,
            "fields": dict(self.fields),
            "errors": dict(self.errors or {}),
            "warnings": dict(self.warnings or {}),
            "strategy": self.strategy,
            "actor": self.actor,
            "team": self.team,
            "contact_manager": self.contact_manager,
        }


@dataclass(frozen=True)
class Outcome:
    """What a channel tells its caller after ``submit``."""

    status: str  # pending/delivering/delivered/failed/rejected, or "invalid" (not stored)
    delivery_id: str | None = None
    duplicate: bool = False
    contact: Contact | None = None
    contact_id: str | None = None
    contact_url: str | None = None
    errors: Mapping[str, str] = field(default_factory=dict)
    warnings: Mapping[str, str] = field(default_factory=dict)
    last_error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.delivery_id is not None and self.status not in (REJECTED, IGNORED, "invalid")


def with_callback(
    callback: Callback | None, extra: Sequence[Callback] | None, new: Callback | None
) -> dict[str, Any]:
    """Column values that add ``new`` to a row's callbacks (nothing if already there)."""
    if not new:
        return {}
    new = dict(new)
    if not callback:
        return {"callback": new}
    extras = [dict(c) for c in extra or ()]
    if new == dict(callback) or new in extras:
        return {}
    return {"extra_callbacks": [*extras, new]}


def merge_raw(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(old)
    for key, value in new.items():
        if key == "custom_fields":
            merged[key] = {**(old.get(key) or {}), **(value or {})}
        elif value is not None and str(value).strip():
            merged[key] = value
    return merged


def person_keys(fields: Mapping[str, Any]) -> dict[str, str | None]:
    """The ``email_key``/``phone_key`` columns of a row with these (validated) fields."""
    email = fields.get("email")
    phone = fields.get("phone")
    return {
        "email_key": str(email).strip().lower() if email else None,
        "phone_key": str(phone) if phone else None,
    }


def contact_of(fields: Mapping[str, Any]) -> Contact:
    """The contact a stored row's ``fields`` hold (validated when it was stored)."""
    return Contact(
        name=str(fields.get("name") or ""),
        email=fields.get("email"),
        phone=fields.get("phone"),
        phone_extension=fields.get("phone_extension"),
        custom_fields=dict(fields.get("custom_fields") or {}),
    )


def new_row(
    submission: Submission,
    delivery_id: str,
    status: str,
    fields: Mapping[str, Any],
    token: str | None,
    now: float,
) -> dict[str, Any]:
    """The ``deliveries`` row of a new delivery for ``submission``."""
    return {
        "id": delivery_id,
        "source": submission.source,
        "event_id": submission.event_id,
        "person_key": submission.person_key,
        "token": token,
        "fields": dict(fields),
        "status": status,
        "attempts": 0,
        "next_attempt_at": now,
        "callback": dict(submission.callback) if submission.callback is not None else None,
        "actor": submission.actor,
        "team": submission.team,
        "contact_manager": submission.contact_manager,
        "created_at": now,
        "updated_at": now,
        "queued_at": now,
        "extra_callbacks": None,
        **person_keys(fields if status != REJECTED else {}),
    }


def carried_over(
    previous: Mapping[Any, Any] | None, contact: Contact, contact_manager: str | None
) -> tuple[Contact, dict[str, Any]]:
    """A new delivery for a person: what their latest delivered or failed one (``previous``)
    held carries over, ``contact`` winning; so do its contact id and, unless this
    submission names one, its contact manager. Returns the contact and the row's columns."""
    if previous is None:
        return contact, {"contact_id": None, "contact_manager": contact_manager}
    merged = contact_of(previous["fields"]).merged_with(contact)
    fields = merged.as_dict()
    return merged, {
        "fields": fields,
        **person_keys(fields),
        "contact_id": previous["contact_id"],
        "contact_manager": contact_manager or previous["contact_manager"],
    }


def merge_into(
    waiting: Mapping[Any, Any],
    contact: Contact,
    *,
    callbacks: Sequence[Callback] = (),
    contact_manager: str | None = None,
    warnings: Mapping[str, str] | None = None,
    contact_id: str | None = None,
    newer_wins: bool = True,
) -> tuple[Contact, dict[str, Any]]:
    """Fold a person's ``contact`` into the waiting row ``waiting`` of the same person.

    Returns the merged contact and the column values to update. ``newer_wins``: the
    contact is newer than the row (a submission merged into a waiting delivery), so its
    fields win; otherwise (an older row folded into a newer one) the row's fields win and
    the contact only fills the gaps. Every callback is added once (each is told the
    outcome once); a contact manager or contact id is taken when given (and, for an older
    row, only when the waiting row has none); warnings add up.
    """
    held = contact_of(waiting["fields"])
    merged = held.merged_with(contact) if newer_wins else contact.merged_with(held)
    values: dict[str, Any] = {"fields": merged.as_dict()}
    values.update(person_keys(values["fields"]))
    callback, extras = waiting.get("callback"), list(waiting.get("extra_callbacks") or ())
    for cb in callbacks:
        added = with_callback(callback, extras, cb)
        callback = added.get("callback", callback)
        extras = added.get("extra_callbacks", extras)
        values.update(added)
    if contact_manager and (newer_wins or not waiting.get("contact_manager")):
        values["contact_manager"] = contact_manager
    if contact_id and not waiting.get("contact_id"):
        values["contact_id"] = contact_id
    if warnings:
        values["warnings"] = {**(waiting.get("warnings") or {}), **warnings}
    return merged, values


def _displayable(value: Any) -> Any:
    if isinstance(value, str):
        return shown_safely(value)
    if isinstance(value, dict):
        return {_displayable(k): _displayable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_displayable(v) for v in value]
    return value
