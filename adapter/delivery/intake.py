"""Accepting contacts: one submission, or a batch of them, in one committed transaction.

:func:`accept` is the single path ``DeliveryQueue.submit`` takes: merge with what the
provider's person gave before, validate, find the person's waiting or latest delivery (by
token, else an earlier token of the same email or phone: one person, one contact in
Rocket.Chat), then merge into the waiting row or insert a new one, and record the
source's event ids. :func:`accept_many` is the same for imports, in batches. Statements
come from :mod:`adapter.ledger.intake`; merging rules from :mod:`adapter.core.records`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy.exc import IntegrityError, OperationalError

from adapter.core.changes import CONFLICT_NOTE, conflict_summary, guarded
from adapter.core.contact import Contact, ContactError, validate_contact
from adapter.core.keys import DeploymentKey
from adapter.core.records import (
    IGNORED,
    PENDING,
    REJECTED,
    DeliveryRecord,
    Outcome,
    Submission,
    carried_over,
    contact_of,
    merge_into,
    merge_raw,
    new_row,
    person_keys,
)
from adapter.ledger import intake as sql
from adapter.ledger.store import LedgerStore, WriteConnection
from adapter.ops import metrics
from adapter.rocketchat.sansio import contact_token
from adapter.settings import Settings

__all__ = [
    "Checked",
    "accept",
    "accept_many",
    "check_many",
    "deployment_key",
    "seen_before",
    "submit_many",
    "validate",
]

Checked = tuple[int, Contact, dict[str, str]]  # index in the batch, the contact, its warnings


CONSENT_REQUIRED = (
    "is required: this service registers only guests who agreed (REQUIRE_CONSENT); "
    'tick the consent box, or send "consent": true'
)


def validate(
    raw: Mapping[str, Any], submission: Submission, settings: Settings
) -> tuple[Contact, dict[str, str]]:
    """The submission's contact and warnings, or ContactError naming every bad field
    (``consent`` among them when REQUIRE_CONSENT is on and a channel that asks for it
    brought none)."""
    missing_consent = settings.require_consent and submission.consent is False
    try:
        found = _validate_fields(raw, submission, settings)
    except ContactError as exc:
        if missing_consent:
            exc.errors = {**exc.errors, "consent": CONSENT_REQUIRED}
        raise
    if missing_consent:
        raise ContactError({"consent": CONSENT_REQUIRED})
    return found


def consent_columns(
    submission: Submission, settings: Settings, now: float
) -> tuple[dict[str, Any], dict[str, str]]:
    """The consent's columns for the row, and the custom fields to send it as (only those
    ROCKETCHAT_CUSTOM_FIELDS names: ``consent_version``, ``consent_at``)."""
    if not submission.consent:
        return {}, {}
    version = submission.consent_version or settings.consent_version
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    sent = {
        key: value
        for key, value in (("consent_version", version), ("consent_at", at))
        if value and key in settings.rocketchat_custom_fields
    }
    return {"consent_version": version, "consent_at": now}, sent


def _validate_fields(
    raw: Mapping[str, Any], submission: Submission, settings: Settings
) -> tuple[Contact, dict[str, str]]:
    return validate_contact(
        raw,
        required=submission.required_fields or settings.contact_required_fields,
        default_region=submission.phone_region or settings.default_phone_region,
        check_deliverability=settings.check_email_deliverability,
        custom_fields=raw.get("custom_fields") or {},
        drop_invalid_optional=submission.drop_invalid_optional,
    )


async def seen_before(
    store: LedgerStore, submission: Submission
) -> tuple[Submission, DeliveryRecord | None]:
    """The delivery this submission duplicates (every event id of it seen before), or
    None with the submission left to accept (less the ids seen, when it has several)."""
    if submission.also_event_ids:
        ids = submission.event_ids
        if not ids:
            return replace(submission, also_event_ids=()), None
        seen, record = await store.seen_events(submission.source, ids)
        if record is not None:
            return submission, record
        # (Every id seen but no delivery found cannot happen: deliveries are never deleted.)
        unseen = [i for i in ids if i not in seen] or list(ids)
        return replace(submission, event_id=unseen[0], also_event_ids=tuple(unseen[1:])), None
    if submission.event_id:
        found = await store.find_event(submission.source, submission.event_id)
        return submission, found[0] if found is not None else None
    return submission, None


async def accept(
    store: LedgerStore,
    settings: Settings,
    submission: Submission,
    given: Mapping[str, Any],
    *,
    hold: float = 0.0,
) -> Outcome:
    """Store ``submission`` (its raw fields ``given``) in one committed transaction.

    ``hold``: the caller tries the delivery itself at once, so the row is due only after
    that long (the worker does not take it from under the caller).
    """
    now = time.time()
    key = await deployment_key(store, settings)

    async def _tx(conn: WriteConnection) -> Outcome:
        return await _accept_in(conn, settings, key, submission, dict(given), hold=hold, now=now)

    if settings.check_email_deliverability:
        # Validation asks DNS: not inside a transaction others' writes are batched into.
        return await store.write_apart(_tx)
    return await store.write(_tx)


async def deployment_key(store: LedgerStore, settings: Settings) -> DeploymentKey:
    """The key visitor tokens are derived with (``DEPLOYMENT_SECRET``, else the ledger's)."""
    secret = settings.deployment_secret
    return await store.deployment_key(secret.get_secret_value() if secret else None)


async def _accept_in(
    conn: WriteConnection,
    settings: Settings,
    deployment: DeploymentKey,
    submission: Submission,
    raw: dict[str, Any],
    *,
    hold: float,
    now: float,
) -> Outcome:
    source, key = submission.source, submission.person_key
    if submission.ignored is not None:  # nothing to register: kept for the record only
        delivery_id = uuid.uuid4().hex
        row = new_row(submission, delivery_id, IGNORED, raw, None, now)
        await sql.insert_deliveries(conn, {**row, "last_error": submission.ignored})
        await sql.record_events(conn, source, submission.event_ids, delivery_id, now)
        return Outcome(status=IGNORED, delivery_id=delivery_id)
    token: str | None = None
    person_key = f"{source}:{key}" if key else None
    if key:
        person = await sql.person(conn, source, key)
        if person is not None:
            raw = merge_raw(person["fields"], raw)
            token = person["token"]
    consent, sent_as = consent_columns(submission, settings, now)
    if sent_as:
        raw["custom_fields"] = {**(raw.get("custom_fields") or {}), **sent_as}
    try:
        contact, warnings = validate(raw, submission, settings)
    except ContactError as exc:
        exc.errors = submission.explained(exc.errors)
        if key:
            await sql.save_person(conn, source, key, raw, token, now)
        if not submission.keep_rejected:
            return Outcome(status="invalid", errors=exc.errors)
        row = new_row(submission, uuid.uuid4().hex, REJECTED, raw, None, now)
        incomplete = await sql.incomplete_row(conn, source, key) if key else None
        if incomplete is not None:
            # The same provider person, still incomplete: one row, kept up to date with
            # everything they have given so far (Crisp sends name, email and phone apart).
            delivery_id = incomplete
            changes = {"fields": row["fields"], "errors": exc.errors, "updated_at": now}
            await sql.update_delivery(conn, delivery_id, changes)
        else:
            delivery_id = row["id"]
            await sql.insert_deliveries(conn, {**row, "errors": exc.errors})
        await sql.record_events(conn, source, submission.event_ids, delivery_id, now)
        return Outcome(status=REJECTED, delivery_id=delivery_id, errors=exc.errors)

    if token is None:
        token = deployment.visitor_token(
            email=contact.email, phone=contact.phone, person_key=person_key
        )
    # One look at the person's latest delivery: a waiting one (merged into), else the
    # latest delivered/failed one (whose details and contact id carry over). With nothing
    # under this token, the same person may have come before under another one (phone
    # only then, email now; an invalid email dropped): reuse it, or Rocket.Chat would get
    # a second contact for them. Both are looked up in one statement.
    keys = person_keys(contact.as_dict())
    legacy = contact_token(email=contact.email, phone=contact.phone, person_key=person_key)
    found, earlier = await sql.latest_or_earlier(
        conn, token, keys["email_key"], keys["phone_key"], legacy
    )
    if earlier is not None:
        token = earlier
        found = await sql.latest_for_token(conn, token)
    if key:
        await sql.save_person(conn, source, key, raw, token, now)
    contact, warnings = _guard(found, contact, warnings, submission, settings)
    if found is not None and found["status"] == PENDING:
        merged, values = merge_into(
            found,
            contact,
            callbacks=[submission.callback] if submission.callback else [],
            contact_manager=submission.contact_manager,
            warnings=warnings,
        )
        values.update(consent, updated_at=now)
        await sql.update_delivery(conn, found["id"], values)
        await sql.record_events(conn, source, submission.event_ids, found["id"], now)
        return Outcome(status=PENDING, delivery_id=found["id"], contact=merged, warnings=warnings)

    # Delivered or failed before (or nobody): what we knew carries over.
    merged, carried = carried_over(found, contact, submission.contact_manager)
    row = new_row(submission, uuid.uuid4().hex, PENDING, merged.as_dict(), token, now)
    row.update(carried, next_attempt_at=now + hold, warnings=warnings or None, **consent)
    incomplete = await sql.incomplete_row(conn, source, key) if key else None
    if incomplete is not None:
        # The person was rejected as incomplete before and now is complete: that row
        # becomes their delivery (one row per person, not a stale rejection beside it).
        row["id"] = incomplete
        del row["created_at"]
        await sql.update_delivery(conn, incomplete, {**row, "errors": None, "last_error": None})
    else:
        await sql.insert_deliveries(conn, row)
    await sql.record_events(conn, source, submission.event_ids, row["id"], now)
    return Outcome(status=PENDING, delivery_id=row["id"], contact=merged, warnings=warnings)


def _guard(
    found: Mapping[Any, Any] | None,
    contact: Contact,
    warnings: dict[str, str],
    submission: Submission,
    settings: Settings,
) -> tuple[Contact, dict[str, str]]:
    """What an unauthenticated sender may change of the person's held contact (see
    :mod:`adapter.core.changes`): conflicting values become warnings (the admin page) and,
    with ``ROCKETCHAT_CONFLICTS_FIELD``, a custom field for the agents."""
    held = contact_of(found["fields"]) if found is not None else None
    contact, conflicts = guarded(held, contact, may_change=submission.sender_authenticated)
    if not conflicts:
        return contact, warnings
    notes = {f"{name} (sent)": f"{value!r} {CONFLICT_NOTE}" for name, value in conflicts.items()}
    warnings = {**warnings, **notes}
    field = settings.rocketchat_conflicts_field
    if field:
        custom = {**contact.custom_fields, field: conflict_summary(conflicts)}
        contact = replace(contact, custom_fields=custom)
    return contact, warnings


# -- in bulk (imports) ---------------------------------------------------------------------


def check_many(
    submissions: Sequence[Submission], settings: Settings
) -> tuple[list[Outcome], list[Checked]]:
    """Validate every submission: an outcome slot for each (``invalid`` with its errors,
    or a placeholder) and the valid ones to store."""
    for submission in submissions:
        if (
            submission.person_key is not None
            or submission.keep_rejected
            or submission.callback
            or submission.also_event_ids
        ):
            raise ValueError(
                "submit_many takes no person_key, keep_rejected, callback or "
                "also_event_ids: use submit"
            )
    outcomes: list[Outcome] = []
    checked: list[Checked] = []
    for index, submission in enumerate(submissions):
        raw = {key: submission.fields.get(key) for key in ("name", "email", "phone")}
        try:
            contact, warnings = validate(
                {**raw, "custom_fields": dict(submission.custom_fields)}, submission, settings
            )
        except ContactError as exc:
            outcomes.append(Outcome(status="invalid", errors=exc.errors))
            continue
        outcomes.append(Outcome(status="invalid"))  # replaced once stored
        checked.append((index, contact, warnings))
    return outcomes, checked


async def submit_many(
    store: LedgerStore,
    settings: Settings,
    submissions: Sequence[Submission],
    outcome_of: Callable[..., Outcome],
) -> list[Outcome]:
    """Validate and store a batch (see ``DeliveryQueue.submit_many``): one outcome each."""
    outcomes, checked = check_many(submissions, settings)
    for outcome, submission in zip(outcomes, submissions, strict=True):
        if outcome.errors:
            metrics.CONTACTS.labels(submission.channel, "rejected").inc()
    if not checked:
        return outcomes
    deployment = await deployment_key(store, settings)
    for attempt in range(3):
        try:
            accepted = await accept_many(store, deployment, submissions, checked, outcome_of)
            break
        except (IntegrityError, OperationalError):
            # A race with a concurrent accept rolled the batch back: run it again.
            if attempt == 2:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))  # noqa: sleep-ok - back off a race
    for index, outcome in accepted.items():
        outcomes[index] = outcome
        label = "duplicate" if outcome.duplicate else "accepted"
        metrics.CONTACTS.labels(submissions[index].channel, label).inc()
    return outcomes


async def accept_many(
    store: LedgerStore,
    deployment: DeploymentKey,
    submissions: Sequence[Submission],
    checked: Sequence[Checked],
    outcome_of: Callable[..., Outcome],
) -> dict[int, Outcome]:
    """Store the ``checked`` submissions in one transaction: ``{index: outcome}``.

    Same dedupe on ``(source, event_id)`` and merging with a waiting or delivered delivery
    of the same person (within the batch too) as :func:`accept`. ``outcome_of(record,
    duplicate=True)`` is the queue's answer for an event seen before.
    """
    tokens = {
        index: deployment.visitor_token(email=contact.email, phone=contact.phone, person_key=None)
        for index, contact, _ in checked
    }
    legacy = {
        index: contact_token(email=contact.email, phone=contact.phone, person_key=None)
        for index, contact, _ in checked
    }

    async def _tx(conn: WriteConnection) -> dict[int, Outcome]:
        await sql.plan_each_batch(conn)
        now = time.time()
        event_ids: dict[str, set[str]] = {}
        for index, _, _ in checked:
            if submissions[index].event_id:
                event_ids.setdefault(submissions[index].source, set()).add(
                    str(submissions[index].event_id)
                )
        seen: dict[tuple[str, str], str] = {}
        for source, ids in event_ids.items():
            found = await sql.events_seen(conn, source, ids)
            seen.update({(source, event): delivery for event, delivery in found.items()})
        seen_records: dict[str, DeliveryRecord] = {}
        if seen:
            seen_records = await sql.records(conn, seen.values())
        wanted = set(tokens.values()) | set(legacy.values())
        waiting = {row["token"]: dict(row) for row in await sql.waiting_for_tokens(conn, wanted)}
        touched: set[str] = set()  # tokens whose waiting row this batch merged into
        known = await sql.known_for_tokens(conn, wanted)
        for index, token in list(tokens.items()):
            # Someone registered before keyed tokens keeps their stored (unkeyed) token.
            old = legacy[index]
            if token not in waiting and token not in known and (old in waiting or old in known):
                tokens[index] = old

        result: dict[int, Outcome] = {}
        new_rows: dict[str, dict[str, Any]] = {}  # token -> row to insert
        events: list[dict[str, Any]] = []
        for index, contact, warnings in checked:
            submission = submissions[index]
            key = (submission.source, str(submission.event_id or ""))
            if submission.event_id and key in seen:
                record = seen_records.get(seen[key])
                result[index] = (
                    outcome_of(record, duplicate=True)
                    if record is not None
                    else Outcome(status=PENDING, delivery_id=seen[key], duplicate=True)
                )
                continue
            token = tokens[index]
            entry = new_rows.get(token)
            if entry is None and token in waiting:
                entry = waiting[token]
                touched.add(token)
            if entry is not None:  # the person waits already (or came earlier in the batch)
                merged, values = merge_into(
                    entry, contact, contact_manager=submission.contact_manager, warnings=warnings
                )
                entry.update(values, updated_at=now)
                delivery_id = str(entry["id"])
            else:
                merged, carried = carried_over(
                    known.get(token), contact, submission.contact_manager
                )
                row = new_row(submission, uuid.uuid4().hex, PENDING, merged.as_dict(), token, now)
                row.update(carried, warnings=warnings or None)
                new_rows[token] = row
                delivery_id = str(row["id"])
            if submission.event_id:
                seen[key] = delivery_id
                events.append(
                    {
                        "source": submission.source,
                        "event_id": submission.event_id,
                        "delivery_id": delivery_id,
                        "created_at": now,
                    }
                )
            result[index] = Outcome(
                status=PENDING, delivery_id=delivery_id, contact=merged, warnings=warnings
            )
        if new_rows:
            await sql.insert_deliveries(conn, list(new_rows.values()))
        for token, entry in waiting.items():
            if token not in touched:
                continue
            columns = ("fields", "email_key", "phone_key", "contact_manager", "warnings")
            values = {c: entry[c] for c in columns if c in entry}
            await sql.update_delivery(conn, entry["id"], {**values, "updated_at": now})
        if events:
            await sql.insert_events(conn, events)
        return result

    return await store.write(_tx)
