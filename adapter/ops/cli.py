"""The ``contact-adapter`` command: serve, work, migrate, register, parse, and inspect deliveries."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from adapter.settings import Settings, SettingsError, load_settings

__all__ = ["app", "main"]

app = typer.Typer(
    help="Register guests as Rocket.Chat Omnichannel contacts.",
    no_args_is_help=True,
    add_completion=False,
)
deliveries_app = typer.Typer(help="Inspect and retry deliveries.", no_args_is_help=True)
app.add_typer(deliveries_app, name="deliveries")

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _run(factory: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(factory())  # type: ignore[arg-type]


@app.command()
def serve(
    host: Annotated[str, typer.Option(envvar="HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT")] = 8000,
    workers: Annotated[int, typer.Option(envvar="WEB_CONCURRENCY")] = 1,
) -> None:
    """Run the web service under uvicorn."""
    import uvicorn

    from adapter.ops.logs import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    # uvicorn re-raises the SIGTERM it shut down for once it is done, which would end the
    # process as "killed by SIGTERM" (exit 143); a clean shutdown exits 0 (Heroku, honcho).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "adapter.app:app",
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        forwarded_allow_ips="*",
        log_config=None,
        # SIGTERM stops the in-process worker at once (adapter.app._stop_on_signal), whose
        # drain (SHUTDOWN_GRACE from the signal) runs while uvicorn waits for open requests:
        # they wait for Rocket.Chat at most FAST_PATH_BUDGET (2.5 s), so 5 s (less with a
        # short grace) lets them end and the whole shutdown stays within the grace.
        timeout_graceful_shutdown=max(1, int(min(5.0, settings.shutdown_grace - 1))),
    )


def _exit_cleanly(_signum: int, _frame: Any) -> None:
    raise SystemExit(0)


@app.command()
def worker() -> None:
    """Run a delivery worker on its own (a Procfile ``worker:`` dyno). SIGTERM stops it cleanly."""
    from adapter.ops.logs import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)

    async def main() -> None:
        from adapter.channels import connect_channels
        from adapter.delivery.worker import DeliveryWorker
        from adapter.ops.runtime import open_runtime

        async with open_runtime(settings) as runtime:
            connect_channels(settings, runtime.queue)  # Slack hears how its commands ended
            runner = DeliveryWorker(runtime.queue)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, runner.stop)
            await runner.run()

    asyncio.run(main())


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (safe to run on every deploy)."""

    async def main() -> int:
        from adapter.ledger.schema import engine_for
        from adapter.ledger.schema import migrate as run_migrate

        settings = _settings()
        engine = engine_for(settings)
        try:
            return await run_migrate(engine)
        finally:
            await engine.dispose()

    version = asyncio.run(main())
    typer.echo(f"database schema is at version {version}")


@app.command()
def parse(
    text: Annotated[
        str, typer.Argument(help="Free text, e.g. 'Chris Doe chris@example.com +1 415 555 2671'")
    ],
) -> None:
    """Show what would be registered from free text, without sending anything."""
    from adapter.core.extract import extract_contact

    settings = _settings()
    found = extract_contact(text, default_region=settings.default_phone_region)
    contact, errors = found.check(
        required=settings.contact_required_fields, default_region=settings.default_phone_region
    )
    if contact is None:
        for field, message in errors.items():
            typer.echo(f"{field}: {message}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(contact.as_dict(), ensure_ascii=False, indent=2))


@app.command()
def register(
    name: Annotated[str, typer.Option(help="The guest's name")],
    email: Annotated[str | None, typer.Option(help="Email address")] = None,
    phone: Annotated[str | None, typer.Option(help="Phone number")] = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for Rocket.Chat before leaving it queued")
    ] = 10.0,
) -> None:
    """Validate and register one contact (queued durably; delivered now if Rocket.Chat answers)."""
    settings = _settings()

    async def main() -> dict[str, Any]:
        from adapter.core.records import Submission
        from adapter.ops.runtime import open_runtime

        async with open_runtime(settings) as runtime:
            outcome = await runtime.queue.submit(
                Submission(source="cli", fields={"name": name, "email": email, "phone": phone}),
                wait=wait,
            )
        return {
            "status": outcome.status,
            "delivery_id": outcome.delivery_id,
            "contact_id": outcome.contact_id,
            "errors": dict(outcome.errors),
            "error": outcome.last_error,
        }

    result = asyncio.run(main())
    if result["errors"]:
        for field, message in result["errors"].items():
            typer.echo(f"{field}: {message}", err=True)
        raise typer.Exit(1)
    if result["status"] == "delivered":
        typer.echo(
            f"registered: Rocket.Chat contact {result['contact_id']} (delivery {result['delivery_id']})"
        )
        return
    if result["status"] == "failed":
        typer.echo(f"failed: {result['error']}", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"queued: delivery {result['delivery_id']} is {result['status']}"
        + (f" ({result['error']})" if result["error"] else "")
        + "; a running worker delivers it when Rocket.Chat answers"
    )
    raise typer.Exit(3)


def _queue_call(fn: Callable[[Any], Awaitable[T]]) -> T:
    settings = _settings()

    async def main() -> T:
        from adapter.ops.runtime import open_runtime

        async with open_runtime(settings) as runtime:
            return await fn(runtime.queue)

    return asyncio.run(main())


@deliveries_app.command("list")
def deliveries_list(
    status: Annotated[
        str | None, typer.Option(help="pending, delivering, delivered, failed, rejected")
    ] = None,
    source: Annotated[str | None, typer.Option(help="e.g. slack, api, webhook")] = None,
    team: Annotated[str | None, typer.Option(help="a Slack workspace id, e.g. T0123")] = None,
    limit: int = 50,
) -> None:
    """List recent deliveries (no personal data)."""
    records = _queue_call(lambda q: q.list(status=status, source=source, team=team, limit=limit))
    for r in records:
        typer.echo(
            f"{r.id}  {r.status:<10} {r.source:<20} attempts={r.attempts}  {r.last_error or ''}"
        )
    if not records:
        typer.echo("no deliveries match")


@deliveries_app.command("show")
def deliveries_show(delivery_id: str) -> None:
    """Show one delivery in full (includes the contact's details)."""

    async def detail(queue: Any) -> dict[str, Any] | None:
        record = await queue.get(delivery_id)
        if record is None:
            return None
        history = [asdict(a) for a in await queue.history(delivery_id)]
        return {**record.detail(), "history": history}

    found = _queue_call(detail)
    if found is None:
        typer.echo(f"no delivery {delivery_id}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(found, indent=2, ensure_ascii=False, default=str))


@deliveries_app.command("retry")
def deliveries_retry(delivery_id: str) -> None:
    """Queue one failed delivery again."""
    if not _queue_call(lambda q: q.retry(delivery_id)):
        typer.echo(
            f"{delivery_id} is not a failed delivery (or the person has one waiting already)",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"{delivery_id} queued again")


@deliveries_app.command("retry-failed")
def deliveries_retry_failed() -> None:
    """Queue every failed delivery again."""
    count = _queue_call(lambda q: q.retry_failed())
    typer.echo(f"{count} failed deliveries queued again")


@app.command("rotate-tokens")
def rotate_tokens(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would change; change nothing.")
    ] = False,
) -> None:
    """Move people registered under an unkeyed visitor token (releases before keyed
    tokens) to their keyed one, in Rocket.Chat and the ledger. Safe to run again."""
    settings = _settings()

    async def main() -> list[Any]:
        from adapter.delivery.intake import deployment_key
        from adapter.ops.rotate import rotate_tokens as run
        from adapter.ops.runtime import open_runtime

        async with open_runtime(settings) as runtime:
            key = await deployment_key(runtime.queue.store, settings)
            return await run(runtime.queue.store, runtime.client, key, dry_run=dry_run)

    results = asyncio.run(main())
    for result in results:
        typer.echo(result.line())
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
    typer.echo(f"{len(results)} people under unkeyed tokens" + (f": {summary}" if summary else ""))
    if counts.get("failed"):
        raise typer.Exit(1)


@app.command("import")
def import_csv(
    path: Annotated[
        Path,
        typer.Argument(
            help="CSV file with a header row", exists=True, dir_okay=False, readable=True
        ),
    ],
    name_column: Annotated[
        str | None, typer.Option(help="Column with the full name (default: Name, Full name…)")
    ] = None,
    first_name_column: Annotated[
        str | None, typer.Option(help="Column with the first name, joined with the last name")
    ] = None,
    last_name_column: Annotated[str | None, typer.Option(help="Column with the last name")] = None,
    email_column: Annotated[
        str | None, typer.Option(help="Column with the email (default: Email, E-mail…)")
    ] = None,
    phone_column: Annotated[
        str | None, typer.Option(help="Column with the phone (default: Phone, Mobile, Tel…)")
    ] = None,
    custom_field: Annotated[
        list[str] | None,
        typer.Option(help="ID=COLUMN: send COLUMN as the custom field ID (repeatable)"),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            help="Country (e.g. US) of numbers written without +; else DEFAULT_PHONE_REGION"
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            help="Name the import (source 'import:NAME'; dedupe is per name) (default: the file name)"
        ),
    ] = None,
    delimiter: Annotated[
        str | None, typer.Option(help="Field separator (default: detected among , ; tab |)")
    ] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the file")] = "utf-8-sig",
    rejected: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the rejected rows (default: NAME.rejected.csv next to the file)"
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and write the report; store nothing")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=5000, help="Rows per transaction")] = 500,
) -> None:
    """Import contacts from a CSV file into the delivery queue (rejected rows: NAME.rejected.csv).

    Exit 0 when every row was accepted or already imported, 1 when some were rejected,
    2 when the file cannot be imported as asked.
    """
    from adapter.ops.importer import ColumnMapping, ImportFileError, progress_wanted, run_import
    from adapter.ops.logs import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)  # redacted, like every process
    custom: dict[str, str] = {}
    for item in custom_field or []:
        field_id, sep, column = item.partition("=")
        if not sep or not field_id.strip() or not column.strip():
            typer.echo(f"error: --custom-field expects ID=COLUMN, got {item!r}", err=True)
            raise typer.Exit(2)
        custom[field_id.strip()] = column.strip()
    if region is not None:
        import phonenumbers

        region = region.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            typer.echo(
                f"error: --region expects a country code such as US, got {region!r}", err=True
            )
            raise typer.Exit(2)
    mapping = ColumnMapping(
        name=name_column,
        first_name=first_name_column,
        last_name=last_name_column,
        email=email_column,
        phone=phone_column,
        custom_fields=custom,
    )
    try:
        report = run_import(
            path,
            settings,
            mapping=mapping,
            source=source,
            region=region,
            delimiter=delimiter,
            encoding=encoding,
            rejected_path=rejected,
            batch_size=batch_size,
            dry_run=dry_run,
            progress=progress_wanted(),
            on_columns=lambda described: typer.echo(f"columns: {described}", err=True),
        )
    except (ImportFileError, LookupError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(report.summary())
    if report.rejected:
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        app()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
