"""Bulk import: ``contact-adapter import leads.csv``.

Reads a CSV file with a header row, maps its columns to name/email/phone by their
header names (or by the columns the operator names), and hands the rows in batches
to :meth:`~adapter.delivery.DeliveryQueue.submit_many`: the same validation, durable
queue and merging as every channel, so the worker registers them at the pace
Rocket.Chat allows. Every valid row gets an event id that is a hash of its normalised
values, not of its position, so importing the same file again (or a longer export of
it) accepts nothing that is already in. Rows that cannot be registered are written to
``<input>.rejected.csv`` next to the input, one line per row: its row number (the header
is row 1, as in a spreadsheet), the fields and the reasons, then the row's own columns as
they were, so the file can be corrected and imported again. ``--dry-run`` stores nothing
but reads the database, so it counts the rows imported before as duplicates, as a real
run would. The database must have its schema already (``contact-adapter migrate``): an
import never creates one, so a command run in the wrong folder cannot fill a new file.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapter.core.records import Outcome, Submission
    from adapter.delivery.queue import DeliveryQueue
    from adapter.settings import Settings

__all__ = [
    "HEADER_ALIASES",
    "ColumnMapping",
    "Columns",
    "ImportFileError",
    "ImportReport",
    "import_csv",
    "rejected_path_for",
    "resolve_columns",
    "row_event_id",
    "run_import",
]

# Header names recognised by default, compared without case, spaces or punctuation,
# in order of preference ("Phone" wins over "Mobile" when a file has both; a row whose
# preferred column is empty falls back to the next one).
HEADER_ALIASES: dict[str, tuple[str, ...]] = {
    "name": (
        "name",
        "full name",
        "fullname",
        "contact name",
        "display name",
        "customer name",
        "client name",
        "guest name",
        "lead name",
        "visitor name",
        "person",
        "contact",
    ),
    "first_name": ("first name", "firstname", "given name", "forename", "fname", "first"),
    "last_name": ("last name", "lastname", "surname", "family name", "lname", "last"),
    "email": (
        "email",
        "e-mail",
        "email address",
        "e-mail address",
        "mail",
        "work email",
        "contact email",
        "primary email",
    ),
    "phone": (
        "phone",
        "phone number",
        "telephone",
        "telephone number",
        "tel",
        "mobile",
        "mobile phone",
        "mobile number",
        "cell",
        "cell phone",
        "cellphone",
        "contact number",
        "phone no",
        "work phone",
        "home phone",
        "whatsapp",
        "msisdn",
    ),
}
SOURCE_PREFIX = "import:"
_SOURCE_MAX = 64  # deliveries.source is VARCHAR(64)
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
_WHITESPACE = re.compile(r"\s+")


class ImportFileError(ValueError):
    """The file cannot be imported as asked (unreadable, no header, unknown column…)."""


def _key(header: str) -> str:
    return _NOT_ALNUM.sub("", header.casefold())


@dataclass(frozen=True)
class ColumnMapping:
    """Columns the operator named; ``None`` means "recognise it by its header"."""

    name: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    custom_fields: Mapping[str, str] = field(default_factory=dict)  # field id -> column


@dataclass(frozen=True)
class Columns:
    """Column indexes for each field, in order of preference."""

    headers: tuple[str, ...]
    name: tuple[int, ...] = ()
    first_name: tuple[int, ...] = ()
    last_name: tuple[int, ...] = ()
    email: tuple[int, ...] = ()
    phone: tuple[int, ...] = ()
    custom_fields: Mapping[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """``name ← "Full name", email ← "E-mail"`` for the operator."""
        parts = []
        for label, indexes in (
            ("name", self.name),
            ("first name", self.first_name),
            ("last name", self.last_name),
            ("email", self.email),
            ("phone", self.phone),
        ):
            if indexes:
                shown = " or ".join(
                    json.dumps(self.headers[i], ensure_ascii=False) for i in indexes
                )
                parts.append(f"{label} ← {shown}")
        for field_id, index in self.custom_fields.items():
            parts.append(f"{field_id} ← {json.dumps(self.headers[index], ensure_ascii=False)}")
        return ", ".join(parts)

    def fields(self, row: Sequence[str]) -> dict[str, str | None]:
        """The raw name/email/phone of one row (the first non-empty preferred column)."""

        def first(indexes: tuple[int, ...]) -> str | None:
            for i in indexes:
                if i < len(row) and row[i].strip():
                    return row[i]
            return None

        name = first(self.name)
        if name is None and (self.first_name or self.last_name):
            joined = " ".join(p for p in (first(self.first_name), first(self.last_name)) if p)
            name = joined or None
        return {"name": name, "email": first(self.email), "phone": first(self.phone)}

    def custom(self, row: Sequence[str]) -> dict[str, str]:
        return {
            field_id: row[i].strip()
            for field_id, i in self.custom_fields.items()
            if i < len(row) and row[i].strip()
        }


def resolve_columns(
    headers: Sequence[str], mapping: ColumnMapping, *, required: Sequence[str] = ("name",)
) -> Columns:
    """Find each field's columns; :class:`ImportFileError` names what is missing."""
    headers = tuple(h.strip() for h in headers)
    keys = [_key(h) for h in headers]
    shown = ", ".join(json.dumps(h, ensure_ascii=False) for h in headers if h) or "(none)"

    def named(column: str, option: str) -> tuple[int, ...]:
        if column in headers:
            return (headers.index(column),)
        if _key(column) in keys:
            return (keys.index(_key(column)),)
        raise ImportFileError(
            f"{option}: there is no column {column!r}; the header row has {shown}"
        )

    def recognised(fieldname: str) -> tuple[int, ...]:
        found: list[int] = []
        for alias in HEADER_ALIASES[fieldname]:
            for i, key in enumerate(keys):
                if key == _key(alias) and i not in found:
                    found.append(i)
        return tuple(found)

    resolved: dict[str, tuple[int, ...]] = {}
    for fieldname in ("name", "first_name", "last_name", "email", "phone"):
        column = getattr(mapping, fieldname)
        option = "--" + fieldname.replace("_", "-") + "-column"
        resolved[fieldname] = named(column, option) if column else recognised(fieldname)
    if mapping.name is None and (mapping.first_name or mapping.last_name):
        resolved["name"] = ()  # the operator asked for first/last name columns
    if not resolved["name"] and not (resolved["first_name"] or resolved["last_name"]):
        raise ImportFileError(
            f"no name column: the header row has {shown}; name one with --name-column "
            "(or --first-name-column and --last-name-column)"
        )
    for fieldname in ("email", "phone"):
        if fieldname in required and not resolved[fieldname]:
            raise ImportFileError(
                f"no {fieldname} column, and CONTACT_REQUIRED_FIELDS requires one: the header "
                f"row has {shown}; name it with --{fieldname}-column"
            )
    if not resolved["email"] and not resolved["phone"]:
        raise ImportFileError(
            f"no email or phone column: the header row has {shown}; "
            "name one with --email-column or --phone-column"
        )
    custom = {
        field_id: named(column, f"--custom-field {field_id}={column}")[0]
        for field_id, column in mapping.custom_fields.items()
    }
    return Columns(headers=headers, custom_fields=custom, **resolved)


def row_event_id(fields: Mapping[str, str | None], custom_fields: Mapping[str, str]) -> str:
    """A row's identity, independent of the file and of the row's position.

    A hash of its values, lightly normalised (case, spacing, phone punctuation), so the
    same person with the same details is the same event however the file was sorted.
    """

    def norm(value: str | None) -> str:
        return _WHITESPACE.sub(" ", value or "").strip().casefold()

    phone = re.sub(r"[^\d+x]", "", norm(fields.get("phone")))
    basis = json.dumps(
        [norm(fields.get("name")), norm(fields.get("email")), phone, sorted(custom_fields.items())],
        ensure_ascii=False,
    )
    return "row-" + hashlib.sha256(basis.encode()).hexdigest()[:40]


def rejected_path_for(path: Path) -> Path:
    """``leads.csv`` → ``leads.rejected.csv``, in the same folder."""
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(f"{stem}.rejected.csv")


def source_for(path: Path, name: str | None = None) -> str:
    """The deliveries' ``source``: ``import:<file name>`` (or ``import:<name>``), ≤ 64 chars."""
    label = (name or path.name).strip() or "csv"
    return (SOURCE_PREFIX + label)[:_SOURCE_MAX]


@dataclass
class ImportReport:
    """What an import did."""

    path: Path
    rejected_path: Path | None
    columns: str = ""
    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        verb = "would accept" if self.dry_run else "accepted"
        line = (
            f"{self.path.name}: {self.rows} rows, {self.accepted} {verb}, "
            f"{self.duplicates} duplicates, {self.rejected} rejected"
        )
        if self.rejected and self.rejected_path is not None:
            line += f" (see {self.rejected_path})"
        return line + f" in {self.seconds:.1f} s"


class _CountingReader(io.RawIOBase):
    """A binary file that counts the bytes read, for a progress bar by size."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


def _dialect(path: Path, encoding: str, delimiter: str | None) -> type[csv.Dialect] | csv.Dialect:
    if delimiter:
        if len(delimiter) != 1:
            raise ImportFileError(f"--delimiter must be one character, got {delimiter!r}")

        class Given(csv.excel):
            pass

        Given.delimiter = delimiter
        return Given
    with path.open(encoding=encoding, errors="replace", newline="") as handle:
        sample = handle.read(64 * 1024)
    try:
        sniffed = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return csv.excel

    class Detected(csv.excel):
        pass

    Detected.delimiter = sniffed.delimiter
    return Detected


def _records(
    path: Path, *, encoding: str, delimiter: str | None
) -> tuple[list[str], Iterator[tuple[int, list[str]]], _CountingReader, IO[str]]:
    """The header, an iterator of ``(row number, values)`` (the header is row 1), the byte
    counter and the open file (the caller closes it)."""
    dialect = _dialect(path, encoding, delimiter)
    counting = _CountingReader(path.open("rb"))
    text = io.TextIOWrapper(io.BufferedReader(counting), encoding=encoding, newline="")
    reader = csv.reader(text, dialect)
    number = 0
    try:
        header: list[str] | None = None
        for values in reader:
            number += 1
            if any(v.strip() for v in values):
                header = values
                break
    except UnicodeDecodeError as exc:
        text.close()
        raise ImportFileError(
            f"{path.name} is not {_encoding_name(encoding)} text (byte "
            f"0x{exc.object[exc.start]:02x}): pass --encoding, e.g. --encoding cp1252 for a file from Excel "
            "on Windows, or latin-1"
        ) from None
    if header is None:
        text.close()
        raise ImportFileError(
            f"{path.name} is empty: expected a header row, then one contact a row"
        )

    def rows() -> Iterator[tuple[int, list[str]]]:
        row_number = number
        try:
            for values in reader:
                row_number += 1
                if any(v.strip() for v in values):
                    yield row_number, values
        except UnicodeDecodeError as exc:
            raise ImportFileError(
                f"row {row_number + 1} of {path.name} is not {_encoding_name(encoding)} text "
                f"(byte 0x{exc.object[exc.start]:02x}): pass --encoding, e.g. --encoding cp1252 "
                "or latin-1 (rows before it are imported; run again after)"
            ) from None
        except csv.Error as exc:
            raise ImportFileError(f"row {row_number + 1} of {path.name}: {exc}") from None

    return header, rows(), counting, text


def _encoding_name(encoding: str) -> str:
    """``utf-8-sig`` → ``UTF-8``: the name a person knows, not the codec's."""
    import codecs

    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        return encoding
    return "UTF-8" if name in ("utf-8", "utf-8-sig") else encoding


class _Progress:
    """A progress bar on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, total: int, label: str, enabled: bool) -> None:
        self._progress: Any = None
        self._task: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rows]} rows"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task(label, total=max(total, 1), rows=0)
        self._progress.start()

    def update(self, done: int, rows: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done, rows=rows)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


async def _validate_only(
    submissions: Sequence[Submission], queue: DeliveryQueue, seen: set[str]
) -> list[Outcome]:
    """``--dry-run``: what ``submit_many`` would say, storing nothing: the same validation,
    and a row whose event id is in the database already (imported before) or earlier in
    the file is a duplicate."""
    from adapter.core.contact import ContactError, validate_contact
    from adapter.core.records import Outcome

    settings = queue.settings
    outcomes = []
    for submission in submissions:
        try:
            validate_contact(
                dict(submission.fields),
                required=settings.contact_required_fields,
                default_region=submission.phone_region or settings.default_phone_region,
                check_deliverability=settings.check_email_deliverability,
                custom_fields=dict(submission.custom_fields),
            )
        except ContactError as exc:
            outcomes.append(Outcome(status="invalid", errors=exc.errors))
            continue
        event_id = str(submission.event_id)
        duplicate = event_id in seen or (
            await queue.find_event(submission.source, event_id) is not None
        )
        seen.add(event_id)
        outcomes.append(Outcome(status="pending", delivery_id="-", duplicate=duplicate))
    return outcomes


async def import_csv(
    path: Path,
    queue: DeliveryQueue,
    *,
    mapping: ColumnMapping | None = None,
    source: str | None = None,
    region: str | None = None,
    delimiter: str | None = None,
    encoding: str = "utf-8-sig",
    rejected_path: Path | None = None,
    batch_size: int = 500,
    dry_run: bool = False,
    progress: bool = False,
    on_columns: Callable[[str], None] | None = None,
) -> ImportReport:
    """Import ``path`` into ``queue``; write the rejected rows' report; return the counts."""
    from adapter.core.records import Submission

    settings = queue.settings
    started = time.perf_counter()
    header, rows, counting, text = _records(path, encoding=encoding, delimiter=delimiter)
    try:
        columns = resolve_columns(
            header, mapping or ColumnMapping(), required=settings.contact_required_fields
        )
    except ImportFileError:
        text.close()
        raise
    if on_columns is not None:
        on_columns(columns.describe())
    report_path = rejected_path or rejected_path_for(path)
    report = ImportReport(
        path=path, rejected_path=report_path, columns=columns.describe(), dry_run=dry_run
    )
    origin = source_for(path, source)
    total = path.stat().st_size
    bar = _Progress(total, f"importing {path.name}", progress)
    seen: set[str] = set()
    with report_path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["row", "field", "reason", *header])
        try:
            batch: list[tuple[int, Submission, list[str]]] = []

            async def flush() -> None:
                submissions = [s for _, s, _ in batch]
                if dry_run:
                    outcomes = await _validate_only(submissions, queue, seen)
                else:
                    outcomes = await queue.submit_many(submissions)
                for (number, _, values), outcome in zip(batch, outcomes, strict=True):
                    if outcome.errors and not outcome.accepted:
                        report.rejected += 1
                        names = ", ".join(outcome.errors)
                        reasons = "; ".join(outcome.errors.values())
                        writer.writerow([number, names, reasons, *values])
                    elif outcome.duplicate:
                        report.duplicates += 1
                    else:
                        report.accepted += 1
                report.rows += len(batch)
                batch.clear()
                bar.update(counting.count, report.rows)

            for number, values in rows:
                fields = columns.fields(values)
                custom = columns.custom(values)
                submission = Submission(
                    source=origin,
                    fields=fields,
                    event_id=row_event_id(fields, custom),
                    custom_fields=custom,
                    phone_region=region,
                )
                batch.append((number, submission, values))
                if len(batch) >= batch_size:
                    await flush()
            if batch:
                await flush()
        finally:
            text.close()
            bar.close()
    report.seconds = time.perf_counter() - started
    return report


def run_import(path: Path, settings: Settings, **options: Any) -> ImportReport:
    """Open the database named by ``settings`` and import ``path`` into it (the CLI's way)."""

    async def main() -> ImportReport:
        from adapter.ops.runtime import open_runtime
        from adapter.ops.startup import database_label

        # Never a new schema: in the wrong folder, that would be a new, unseen database.
        label = database_label(settings)
        async with open_runtime(settings, migrate=False, label=label) as runtime:
            return await import_csv(path, runtime.queue, **options)

    return asyncio.run(main())


def progress_wanted() -> bool:
    """A progress bar only for a person at a terminal."""
    return sys.stderr.isatty()
