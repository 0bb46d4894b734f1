"""The ``contact-adapter`` command: serve, work, migrate, register, parse, and inspect deliveries.

Every command reads and checks every setting first, the channels' too
(:func:`adapter.ops.startup.checked_settings`): a malformed one exits 2 with one line
naming it. A command that opens the database says which one on stderr when it is not the
default in the home (:func:`adapter.ops.startup.database_note`). Times are shown in ISO
8601 in the operator's time zone (``TZ``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from adapter.core.records import STATUSES
from adapter.ops.cli_help import PlainCommand, PlainGroup
from adapter.settings import Settings, SettingsError

__all__ = ["app", "main"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("omnichannel-contact-adapter")
    except PackageNotFoundError:
        return "0+unknown"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"contact-adapter {_version()}")
        raise typer.Exit()


app = typer.Typer(
    help="Register guests as Rocket.Chat Omnichannel contacts.",
    no_args_is_help=True,
    add_completion=False,
    cls=PlainGroup,
)
deliveries_app = typer.Typer(
    help="Inspect and retry deliveries.", no_args_is_help=True, cls=PlainGroup
)
app.add_typer(deliveries_app, name="deliveries")
discord_app = typer.Typer(help="Set up the Discord channel.", no_args_is_help=True, cls=PlainGroup)
app.add_typer(discord_app, name="discord")
command = app.command
deliveries_command = deliveries_app.command

T = TypeVar("T")


@app.callback()
def _main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="Show the version and exit.",
        ),
    ] = False,
) -> None:
    """Register guests as Rocket.Chat Omnichannel contacts."""


def _settings(*, database: bool = False) -> Settings:
    """The checked settings (exit 2 with one line for a bad one); with ``database``, also
    say on stderr which database the command uses when it is not the home's default."""
    from adapter.ops.startup import checked_settings, database_note

    try:
        settings = checked_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if database and (note := database_note(settings)) is not None:
        typer.echo(note, err=True)
    return settings


def _when(stamp: float | None) -> str:
    """An epoch time in ISO 8601, in the operator's time zone (``TZ``), to the second."""
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="seconds")


def _run(factory: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(factory())  # type: ignore[arg-type]


@command(cls=PlainCommand)
def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on [default: HOST, else 127.0.0.1]")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on [default: PORT, else 8000]")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="uvicorn processes [default: WEB_CONCURRENCY, else 1]")
    ] = None,
) -> None:
    """Run the web service under uvicorn (HOST, PORT from the environment or .env)."""
    import uvicorn

    from adapter.ops.logs import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    # uvicorn re-raises the SIGTERM it shut down for once it is done, which would end the
    # process as "killed by SIGTERM" (exit 143); a clean shutdown exits 0 (Heroku, honcho).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "adapter.app:app",
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.web_concurrency,
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


@command(cls=PlainCommand)
def worker() -> None:
    """Run a delivery worker on its own (a Procfile worker: dyno). SIGTERM stops it cleanly."""
    from adapter.ops.logs import configure_logging

    settings = _settings()  # its output is log lines: the database is in log_start_up's
    configure_logging(settings.log_level, settings.log_format)

    async def main() -> None:
        from adapter.channels import connect_channels
        from adapter.delivery.worker import DeliveryWorker
        from adapter.ops.runtime import open_runtime
        from adapter.ops.startup import log_start_up

        async with open_runtime(settings) as runtime:
            # Slack hears how its commands ended
            _, channels = connect_channels(settings, runtime.queue)
            log_start_up(settings, channels, process="worker")
            runner = DeliveryWorker(runtime.queue)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, runner.stop)
            await runner.run()

    asyncio.run(main())


@command(cls=PlainCommand)
def migrate() -> None:
    """Create or upgrade the database schema (safe to run on every deploy)."""
    settings = _settings(database=True)

    async def main() -> int:
        from adapter.ledger.schema import engine_for
        from adapter.ledger.schema import migrate as run_migrate

        engine = engine_for(settings)
        try:
            return await run_migrate(engine)
        finally:
            await engine.dispose()

    version = asyncio.run(main())
    typer.echo(f"database schema is at version {version}")


@command(cls=PlainCommand)
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


@command(cls=PlainCommand)
def register(
    name: Annotated[str, typer.Option(help="The guest's name")],
    email: Annotated[str | None, typer.Option(help="Email address")] = None,
    phone: Annotated[str | None, typer.Option(help="Phone number")] = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for Rocket.Chat before leaving it queued")
    ] = 10.0,
) -> None:
    """Validate and register one contact (queued durably; delivered now if Rocket.Chat answers)."""
    settings = _settings(database=True)

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
    """``fn(queue)`` on the service's database, which must have its schema (a command run
    in the wrong folder says so rather than showing an empty new database)."""
    from adapter.ops.runtime import NoSchemaError, open_runtime
    from adapter.ops.startup import database_label

    settings = _settings(database=True)

    async def main() -> T:
        label = database_label(settings)
        async with open_runtime(settings, migrate=False, label=label) as runtime:
            return await fn(runtime.queue)

    try:
        return asyncio.run(main())
    except NoSchemaError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _one_of(choices: tuple[str, ...]) -> Callable[[str | None], str | None]:
    """A callback refusing a value outside ``choices`` (exit 2, the choices listed)."""

    def check(value: str | None) -> str | None:
        if value is not None and value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return check


_TIMES = ("created_at", "updated_at", "delivered_at", "next_attempt_at", "started_at")


def _dated(value: Any) -> Any:
    """``value`` with every epoch time (``*_at``) shown as ISO 8601 in the local zone."""
    if isinstance(value, dict):
        return {
            k: (_when(v) if k in _TIMES and isinstance(v, int | float) else _dated(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_dated(v) for v in value]
    return value


@deliveries_command("list", cls=PlainCommand)
def deliveries_list(
    status: Annotated[
        str | None,
        typer.Option(
            metavar="[" + "|".join(STATUSES) + "]",
            callback=_one_of(STATUSES),
            help="Only deliveries in this status",
        ),
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="e.g. slack, api, webhook:tawkto, import:leads.csv")
    ] = None,
    team: Annotated[str | None, typer.Option(help="a Slack workspace id, e.g. T0123")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many, newest first")] = 50,
) -> None:
    """List recent deliveries, newest first: id, status, created, source, attempts, reason
    (no personal data)."""
    from adapter.core.plain import reason_of

    records = _queue_call(lambda q: q.list(status=status, source=source, team=team, limit=limit))
    for r in records:
        reason = reason_of(r.status, r.last_error, r.errors)  # a rejected row's field errors
        typer.echo(
            f"{r.id}  {r.status:<10} {_when(r.created_at)}  {r.source:<20} "
            f"attempts={r.attempts}  {reason}".rstrip()
        )
    if not records:
        typer.echo("no deliveries match")


@deliveries_command("show", cls=PlainCommand)
def deliveries_show(delivery_id: str) -> None:
    """Show one delivery in full (includes the contact's details), times in ISO 8601."""

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
    typer.echo(json.dumps(_dated(found), indent=2, ensure_ascii=False, default=str))


@deliveries_command("retry", cls=PlainCommand)
def deliveries_retry(delivery_id: str) -> None:
    """Queue one failed delivery again."""

    async def retry(queue: Any) -> tuple[str | None, bool]:
        record = await queue.get(delivery_id)
        if record is None:
            return None, False
        return record.status, record.status == "failed" and await queue.retry(delivery_id)

    status, queued = _queue_call(retry)
    if status is None:
        typer.echo(f"no delivery {delivery_id}: check the id (deliveries list)", err=True)
        raise typer.Exit(1)
    if status != "failed":
        typer.echo(
            f"delivery {delivery_id} is {status}, not failed: only failed deliveries are retried",
            err=True,
        )
        raise typer.Exit(1)
    if not queued:
        typer.echo(
            f"delivery {delivery_id} was not queued again: the same person has a delivery "
            "waiting already, which carries their details",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"{delivery_id} queued again")


@deliveries_command("retry-failed", cls=PlainCommand)
def deliveries_retry_failed() -> None:
    """Queue every failed delivery again."""
    count = _queue_call(lambda q: q.retry_failed())
    typer.echo(f"{count} failed deliveries queued again")


@command("rotate-tokens", cls=PlainCommand)
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


@discord_app.command("register-commands", cls=PlainCommand)
def discord_register_commands(
    guild: Annotated[
        str | None,
        typer.Option(
            help="A guild (server) id: register there, instantly (default: DISCORD_GUILD_ID, else globally)"
        ),
    ] = None,
) -> None:
    """Register /contact with Discord (needs DISCORD_APPLICATION_ID and DISCORD_BOT_TOKEN)."""
    import importlib

    settings = _settings()
    discord = importlib.import_module("handlers.discord").channel  # the channel does the work
    try:
        typer.echo(discord.register_commands(settings, guild_id=guild))
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except RuntimeError as exc:  # RegisterError: what Discord said and what to do
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@command("import", cls=PlainCommand)
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
        typer.Option(
            metavar="ID=COLUMN",
            help="Send COLUMN as the custom field ID (repeatable; ID must be listed in "
            "ROCKETCHAT_CUSTOM_FIELDS)",
        ),
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
    from adapter.ops.runtime import NoSchemaError

    settings = _settings(database=True)
    configure_logging(settings.log_level, settings.log_format)  # redacted, like every process
    custom: dict[str, str] = {}
    for item in custom_field or []:
        field_id, sep, column = item.partition("=")
        if not sep or not field_id.strip() or not column.strip():
            typer.echo(f"error: --custom-field expects ID=COLUMN, got {item!r}", err=True)
            raise typer.Exit(2)
        custom[field_id.strip()] = column.strip()
    unsent = [f for f in custom if f not in settings.rocketchat_custom_fields]
    if unsent:
        listed = ",".join(settings.rocketchat_custom_fields)
        typer.echo(
            f"error: --custom-field {unsent[0]}: {unsent[0]!r} is not listed in "
            f"ROCKETCHAT_CUSTOM_FIELDS ({'now ' + repr(listed) if listed else 'unset'}), so "
            "it would be dropped for every row: add it there (the custom field's id in "
            "Rocket.Chat), then import",
            err=True,
        )
        raise typer.Exit(2)
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
    except (ImportFileError, LookupError, NoSchemaError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(report.summary())
    if report.rejected:
        raise typer.Exit(1)


from adapter.ops import cli_privacy  # noqa: E402 - registered after this module's commands

cli_privacy.register(app, _settings, _queue_call)


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
