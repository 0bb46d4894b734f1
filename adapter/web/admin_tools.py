"""The admin page's tools: the CSV export of what did not arrive, and "Test connection".

``POST /admin/export.csv`` (a form with the session's CSRF token, so the search stays out
of URLs) downloads the failed and rejected deliveries (the list's search
and filters apply) with their reasons. Contact details are masked unless the admin ticks
"include personal data" (``personal=1``); the download is logged (who asked from where,
the filters, how many rows, whether personal data was included), never its contents.
Cells that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``…) are quoted
with a leading ``'``.

``POST /admin/test-connection`` runs the readiness check now (``/api/info`` and
``/api/v1/me``), bypassing its cache, shows the answer, and, while delivery is paused or
Rocket.Chat seemed down, lets this process's worker look again at once.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import structlog
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from adapter.channels import client_address
from adapter.core.plain import reason_of, short_reference
from adapter.core.records import FAILED, REJECTED, DeliveryRecord
from adapter.core.redact import masked_fields
from adapter.ops.logs import redact_text
from adapter.web.admin_format import DAY, search_match

if TYPE_CHECKING:
    from adapter.web.admin import AdminSite

__all__ = ["EXPORT_COLUMNS", "EXPORT_MAX_ROWS", "AdminTools"]

log = structlog.get_logger("adapter.admin")

EXPORT_STATUSES = (FAILED, REJECTED)
EXPORT_MAX_ROWS = 100_000
EXPORT_PAGE = 500
EXPORT_COLUMNS = (
    "delivery_id",
    "reference",
    "received_at",
    "channel",
    "status",
    "attempts",
    "reason",
    "name",
    "email",
    "phone",
    "event_id",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PERIODS = {"24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY}


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def export_row(record: DeliveryRecord, *, personal: bool) -> list[str]:
    """One CSV row: masked contact details unless ``personal``."""
    fields = record.fields if personal else masked_fields(record.fields)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created_at))
    return [
        _cell(v)
        for v in (
            record.id,
            short_reference(record.id),
            created,
            record.source,
            record.status,
            record.attempts,
            reason_of(record.status, record.last_error, record.errors, masked=not personal),
            fields.get("name") or "",
            fields.get("email") or "",
            fields.get("phone") or "",
            record.event_id or "",
        )
    ]


class AdminTools:
    """Export and test connection, on the admin site's plumbing (login, CSRF, pages)."""

    def __init__(self, site: AdminSite) -> None:
        self.site = site

    async def export(self, request: Request, session: dict[str, Any]) -> Response:
        params = await request.form()
        queue = self.site.queue
        status = str(params.get("status") or "")
        statuses = (status,) if status in EXPORT_STATUSES else EXPORT_STATUSES
        channel = str(params.get("channel") or "").strip()[:64] or None
        period = str(params.get("period") or "all")
        span = _PERIODS.get(period)
        since = time.time() - span if span is not None else None
        search = str(params.get("q") or "").strip()[:320]
        match = search_match(search, region=self.site.context.settings.default_phone_region)
        personal = params.get("personal") == "1"

        async def rows() -> AsyncIterator[str]:
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(EXPORT_COLUMNS)
            count = 0
            while count < EXPORT_MAX_ROWS:
                batch = await queue.list(
                    source=channel,
                    since=since,
                    statuses=statuses,
                    match=match,
                    limit=min(EXPORT_PAGE, EXPORT_MAX_ROWS - count),
                    offset=count,
                )
                for record in batch:
                    writer.writerow(export_row(record, personal=personal))
                count += len(batch)
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
                if len(batch) < EXPORT_PAGE:
                    break
            log.info(
                "admin_export",
                client=client_address(request),
                rows=count,
                personal_data=personal,
                statuses=",".join(statuses),
                channel=channel or "",
                period=period,
                searched=bool(search),  # never the search itself: it is an email or a phone
            )

        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        name = f"not-delivered-{stamp}{'-personal' if personal else ''}.csv"
        return StreamingResponse(
            rows(),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{name}"',
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def test_connection(self, request: Request, session: dict[str, Any]) -> Response:
        queue = self.site.queue
        client = queue.client
        client.forget_readiness()  # now, not the answer cached for /readyz
        report = await client.readiness()
        looked_again = queue.paused_reason is not None or queue.gate.in_outage
        if looked_again:
            queue.gate.look_again(time.time())
            queue.wakeup.set()
        log.info("admin_test_connection", ok=report.ok, client=client_address(request))
        return self.site.render(
            request,
            "connection.html",
            session=session,
            report=report,
            reason=redact_text(report.reason),
            url=client.base_url,
            paused=redact_text(queue.paused_reason) if queue.paused_reason else None,
            looked_again=looked_again,
        )
