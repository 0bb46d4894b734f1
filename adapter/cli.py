"""The ``contact-adapter`` command: serve, work, migrate, register, parse, and inspect deliveries."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
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

    from adapter.logs import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        "adapter.app:app",
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        forwarded_allow_ips="*",
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace) + 2,
    )


@app.command()
def worker() -> None:
    """Run a delivery worker on its own (a Procfile ``worker:`` dyno). SIGTERM stops it cleanly."""
    from adapter.logs import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)

    async def main() -> None:
        from adapter.app import build_client
        from adapter.channels import ChannelContext, discover_channels, notify_channel
        from adapter.db import create_engine, migrate
        from adapter.delivery import DeliveryQueue, DeliveryRecord, DeliveryWorker

        engine = create_engine(
            settings.database_url, sqlite_synchronous=settings.sqlite_synchronous
        )
        await migrate(engine)
        client = build_client(settings)
        queue = DeliveryQueue(engine, client, settings)
        context = ChannelContext(settings=settings, queue=queue)
        channels = discover_channels()

        async def notify(record: DeliveryRecord) -> None:
            await notify_channel(channels, context, record)

        for channel in channels:
            queue.notifiers[channel.name] = notify
        runner = DeliveryWorker(queue)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.stop)
        try:
            await runner.run()
        finally:
            await client.aclose()
            await engine.dispose()

    asyncio.run(main())


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (safe to run on every deploy)."""

    async def main() -> int:
        from adapter.db import create_engine
        from adapter.db import migrate as run_migrate

        settings = _settings()
        engine = create_engine(settings.database_url)
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
    from adapter.contact import ContactError, validate_contact
    from adapter.extract import extract_contact

    settings = _settings()
    found = extract_contact(text, default_region=settings.default_phone_region)
    errors = dict(found.errors)
    contact = None
    if not errors:
        try:
            contact, _ = validate_contact(
                found.fields(),
                required=settings.contact_required_fields,
                default_region=settings.default_phone_region,
            )
        except ContactError as exc:
            errors = exc.errors
    if errors:
        for field, message in errors.items():
            typer.echo(f"{field}: {message}", err=True)
        raise typer.Exit(1)
    assert contact is not None
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
        from adapter.app import build_client
        from adapter.db import create_engine
        from adapter.db import migrate as run_migrate
        from adapter.delivery import DeliveryQueue, Submission

        engine = create_engine(settings.database_url)
        await run_migrate(engine)
        client = build_client(settings)
        queue = DeliveryQueue(engine, client, settings)
        try:
            outcome = await queue.submit(
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
        finally:
            await client.aclose()
            await engine.dispose()

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
        from adapter.app import build_client
        from adapter.db import create_engine
        from adapter.db import migrate as run_migrate
        from adapter.delivery import DeliveryQueue

        engine = create_engine(settings.database_url)
        await run_migrate(engine)
        client = build_client(settings)
        try:
            return await fn(DeliveryQueue(engine, client, settings))
        finally:
            await client.aclose()
            await engine.dispose()

    return asyncio.run(main())


@deliveries_app.command("list")
def deliveries_list(
    status: Annotated[
        str | None, typer.Option(help="pending, delivering, delivered, failed, rejected")
    ] = None,
    source: Annotated[str | None, typer.Option(help="e.g. slack, api, webhook")] = None,
    limit: int = 50,
) -> None:
    """List recent deliveries (no personal data)."""
    records = _queue_call(lambda q: q.list(status=status, source=source, limit=limit))
    for r in records:
        typer.echo(
            f"{r.id}  {r.status:<10} {r.source:<20} attempts={r.attempts}  {r.last_error or ''}"
        )
    if not records:
        typer.echo("no deliveries match")


@deliveries_app.command("show")
def deliveries_show(delivery_id: str) -> None:
    """Show one delivery in full (includes the contact's details)."""
    record = _queue_call(lambda q: q.get(delivery_id))
    if record is None:
        typer.echo(f"no delivery {delivery_id}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(record.detail(), indent=2, ensure_ascii=False, default=str))


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
