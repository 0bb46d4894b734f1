"""The ``contact-adapter`` commands of the data's lifecycle: purge, forget, audit.

Kept apart from :mod:`adapter.ops.cli` (which registers them with :func:`register`) so that
module stays small; docs/privacy.md says what each does.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer

from adapter.ops.cli_help import PlainCommand
from adapter.settings import Settings

__all__ = ["register"]


def register(
    app: typer.Typer,
    _settings: Callable[[], Settings],
    _queue_call: Callable[[Callable[[Any], Awaitable[Any]]], Any],
) -> None:
    """Add ``purge``, ``forget`` and ``audit`` to ``app``."""

    @app.command(cls=PlainCommand)
    def purge(
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Count what is past retention; erase nothing")
        ] = False,
    ) -> None:
        """Erase the personal data of rows past RETAIN_* now (the worker does it every minute).

        Prints counts only. A pending delivery is never touched."""
        settings = _settings()

        async def main(queue: Any) -> dict[str, Any]:
            from adapter.delivery.privacy import RetentionSweep

            sweep = RetentionSweep(queue)
            report = await (
                sweep.dry_run() if dry_run else sweep.run(max_batches=None, actor="cli")
            )
            return report.as_dict()

        if not settings.retention.enabled:
            typer.echo("retention is off (every RETAIN_* is 0 or off): nothing is ever erased")
            return
        counts = _queue_call(main)
        verb = "would erase" if dry_run else "erased"
        per_status = ", ".join(f"{n} {s}" for s, n in counts["deliveries"].items()) or "none"
        typer.echo(
            f"{verb}: deliveries {per_status}; attempts' errors {counts['attempts']}; "
            f"people {counts['people']}"
        )

    @app.command(cls=PlainCommand)
    def forget(
        email: Annotated[str | None, typer.Option(help="The person's email")] = None,
        phone: Annotated[str | None, typer.Option(help="The person's phone (any format)")] = None,
        delivery: Annotated[
            str | None, typer.Option(help="A delivery id: the person it was about")
        ] = None,
        rocketchat: Annotated[
            bool, typer.Option("--rocketchat", help="Also erase them in Rocket.Chat")
        ] = False,
    ) -> None:
        """Erase one person's data everywhere in the ledger (a waiting delivery is cancelled).

        Prints what was erased, never the data. Exit 0 when all of it was erased, 3 naming what
        remains when Rocket.Chat refused part of it (--rocketchat), 1 when the email or phone
        cannot be read, 2 when no person is named."""
        if not (email or phone or delivery):
            typer.echo("error: name the person with --email, --phone or --delivery", err=True)
            raise typer.Exit(2)
        settings = _settings()
        from adapter.core.contact import FieldError
        from adapter.delivery.privacy import person_keys_of

        try:
            email_key, phone_key = person_keys_of(email, phone, settings.default_phone_region)
        except FieldError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

        async def main(queue: Any) -> Any:
            from adapter.delivery.privacy import forget_person

            return await forget_person(
                queue,
                email=email_key,
                phone=phone_key,
                delivery_id=delivery,
                rocketchat=rocketchat,
                actor="cli",
            )

        outcome = _queue_call(main)
        counts = outcome.counts
        typer.echo(
            f"erased: {counts['deliveries']} deliveries ({counts['cancelled']} waiting, cancelled), "
            f"{counts['attempts']} attempts' errors, {counts['events']} event ids (kept as digests), "
            f"{counts['people']} provider people"
        )
        for removal in outcome.rocketchat:
            typer.echo(removal.describe())
        if not outcome.complete:
            typer.echo("not erased in Rocket.Chat: " + "; ".join(outcome.remaining), err=True)
            raise typer.Exit(3)

    @app.command(cls=PlainCommand)
    def audit(limit: Annotated[int, typer.Option(min=1, max=1000)] = 20) -> None:
        """The latest erasures and purges (who, when, how many rows; never the data)."""

        async def entries(queue: Any) -> list[dict[str, Any]]:
            from adapter.ledger.retention import audit_entries

            return await audit_entries(queue.store, limit)

        import datetime

        for entry in _queue_call(entries):
            when = datetime.datetime.fromtimestamp(entry["at"], datetime.UTC).isoformat(
                timespec="seconds"
            )
            typer.echo(
                f"{when}  {entry['action']:<7} by {entry['actor']:<12} rows={entry['rows']}  "
                + json.dumps(entry["summary"], sort_keys=True)
            )
