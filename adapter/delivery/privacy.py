"""The data's lifecycle, orchestrated: the retention sweep and erasing one person.

:class:`RetentionSweep` is what the worker runs every ``RETENTION_SWEEP_INTERVAL`` (60 s) (and
``contact-adapter purge`` once, to the end): it asks :mod:`adapter.ledger.retention` to
erase what :class:`~adapter.core.retention.RetentionPolicy` says is due, a few batches per
turn so delivery is never held up, and logs the counts (never data). :func:`forget_person`
erases one person from the ledger and, when asked, from Rocket.Chat (the visitor under
each of their tokens, and their Contact Center contact where the server allows it),
Rocket.Chat first, so a refusal there can be retried with the same command.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog

from adapter.core.contact import FieldError, normalize_email, normalize_phone
from adapter.delivery import intake
from adapter.delivery.queue import DeliveryQueue
from adapter.ledger import retention as sql
from adapter.rocketchat.erasure_sansio import Removal
from adapter.rocketchat.sansio import contact_token

__all__ = ["ForgetOutcome", "RetentionSweep", "forget_person", "person_keys_of"]

log = structlog.get_logger("adapter.privacy")

SWEEP_BATCHES = 10  # batches of 500 rows a worker's sweep does per turn at most


class RetentionSweep:
    """Erases personal data past retention, in batches (see the module doc)."""

    def __init__(self, queue: DeliveryQueue, *, batch: int | None = None) -> None:
        self.queue = queue
        # On SQLite a batch runs inline on the event loop, holding the one write lock: 100
        # rows (tens of ms) keep requests answering meanwhile; PostgreSQL locks only the
        # batch's rows (FOR UPDATE SKIP LOCKED), so it takes larger ones.
        self.batch = batch or (500 if queue.engine.dialect.name == "postgresql" else 100)
        self._next = time.monotonic()  # the first sweep runs soon after start

    @property
    def enabled(self) -> bool:
        return self.queue.settings.retention.enabled

    def due(self) -> bool:
        return self.enabled and time.monotonic() >= self._next

    async def run(
        self, *, max_batches: int | None = SWEEP_BATCHES, actor: str = "worker"
    ) -> sql.PurgeReport:
        """One sweep: up to ``max_batches`` batches (None: until nothing is due)."""
        self._next = time.monotonic() + self.queue.settings.retention_sweep_interval
        store, settings = self.queue.store, self.queue.settings
        key = await intake.deployment_key(store, settings)
        now = time.time()
        report = await sql.purge(
            store, settings.retention, key.digest, now, batch=self.batch, max_batches=max_batches
        )
        if report.total:
            if max_batches is not None and report.batches >= max_batches:
                self._next = time.monotonic() + 1.0  # more is due: again soon
            await sql.record_purge(store, report, actor, now)
            log.info(
                "retention_sweep",
                count=report.total,
                erased_deliveries=sum(report.deliveries.values()),
                erased_attempts=report.attempts,
                removed_people=report.people,
                hashed_events=report.events,
                batches=report.batches,
                longest_batch_ms=round(report.longest_batch * 1000, 1),
            )
        return report

    async def dry_run(self) -> sql.PurgeReport:
        return await sql.due_counts(self.queue.store, self.queue.settings.retention, time.time())


@dataclass
class ForgetOutcome:
    """What erasing a person did, without the person: counts and Rocket.Chat's answers."""

    counts: dict[str, int]
    rocketchat: list[Removal] = field(default_factory=list)
    asked_rocketchat: bool = False

    @property
    def complete(self) -> bool:
        """Everything asked for was erased (Rocket.Chat included, when asked)."""
        return all(r.done for r in self.rocketchat)

    @property
    def remaining(self) -> list[str]:
        return [r.describe() for r in self.rocketchat if not r.done]

    def as_dict(self) -> dict[str, object]:
        return {
            "erased": self.counts,
            "rocketchat": [
                {"what": r.what, "outcome": r.outcome, "reason": r.reason} for r in self.rocketchat
            ]
            if self.asked_rocketchat
            else None,
            "complete": self.complete,
            "remaining": self.remaining,
        }


def person_keys_of(
    email: str | None, phone: str | None, default_region: str | None
) -> tuple[str | None, str | None]:
    """The email and phone as the ledger keys them (lower-cased; E.164). Raises FieldError
    naming the field when one cannot be read (``forget`` must not miss a person because a
    number was written differently)."""
    email_key = None
    if email is not None:
        try:
            email_key = normalize_email(email).strip().lower()
        except FieldError as exc:
            raise FieldError(f"email: {exc}") from None
    phone_key = None
    if phone is not None:
        try:
            phone_key, _ = normalize_phone(phone, default_region=default_region)
        except FieldError as exc:
            raise FieldError(f"phone: {exc}") from None
    return email_key, phone_key


async def forget_person(
    queue: DeliveryQueue,
    *,
    email: str | None = None,
    phone: str | None = None,
    delivery_id: str | None = None,
    rocketchat: bool = False,
    actor: str,
) -> ForgetOutcome:
    """Erase one person everywhere in the ledger (and in Rocket.Chat with ``rocketchat``).

    ``email`` and ``phone`` are keys as :func:`person_keys_of` gives them. The person's
    visitor tokens are those of their rows plus the ones derived from the email or phone
    (today's keyed ones and the unkeyed ones of earlier releases), so running it again
    after Rocket.Chat refused still reaches Rocket.Chat."""
    store, settings = queue.store, queue.settings
    key = await intake.deployment_key(store, settings)
    derived: set[str] = set()
    for basis in ({"email": email}, {"phone": phone}):
        if any(basis.values()):
            args = {"email": None, "phone": None, "person_key": None, **basis}
            derived.add(key.visitor_token(**args))
            derived.add(contact_token(**args))
    removals: list[Removal] = []
    if rocketchat:
        found = await sql.find_person(
            store, email=email, phone=phone, tokens=derived, delivery_id=delivery_id
        )
        removals = await _erase_in_rocketchat(queue, found)
    report = await sql.forget(
        store,
        key.digest,
        email=email,
        phone=phone,
        tokens=derived,
        delivery_id=delivery_id,
        actor=actor,
        now=time.time(),
    )
    outcome = ForgetOutcome(report.as_dict(), removals, asked_rocketchat=rocketchat)
    log.info(
        "person_forgotten",
        count=report.rows,
        erased_deliveries=report.deliveries,
        cancelled=report.cancelled,
        rocketchat_complete=outcome.complete if rocketchat else None,
    )
    return outcome


async def _erase_in_rocketchat(queue: DeliveryQueue, found: sql.ForgetReport) -> list[Removal]:
    """The visitor under each token (an unknown token is simply absent), then each Contact
    Center contact the person was registered as."""
    client = queue.client
    removals = [await client.remove_visitor(token) for token in sorted(found.tokens)]
    # Only one of the derived tokens is in Rocket.Chat at most: "absent" for the others.
    visitors = [r for r in removals if r.outcome != "absent"] or removals[:1]
    contacts = [
        await client.remove_contact(contact_id)
        for contact_id, strategy in sorted(found.contacts, key=lambda c: c[0])
        if strategy == "contact-center"
    ]
    return [*visitors, *contacts]
