"""The admin page's "Forget this person": a confirmation page, then the erasure.

``GET /admin/deliveries/{id}/forget`` says how many deliveries the person of that delivery
has and what erasing them means; its form (CSRF-checked, like every admin action) posts
to the same address, which erases them (:func:`adapter.delivery.privacy.forget_person`,
recorded in the audit log as "admin page") and says what was erased, never the data, and
what Rocket.Chat refused, if anything.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from adapter.delivery.privacy import forget_person
from adapter.delivery.queue import DeliveryQueue
from adapter.ledger.retention import find_person

__all__ = ["forget_routes"]


class AdminPages(Protocol):
    """What these pages use of the admin page's plumbing (adapter.web.admin)."""

    queue: DeliveryQueue

    def page(self, handler: Any) -> Any: ...
    def action(self, handler: Any) -> Any: ...
    def render(
        self, request: Request, template: str, status_code: int = 200, **values: Any
    ) -> HTMLResponse: ...
    def message(
        self, request: Request, status_code: int, title: str, text: str, **values: Any
    ) -> HTMLResponse: ...


def forget_routes(admin: AdminPages) -> list[BaseRoute]:
    async def confirm(request: Request, session: dict[str, Any]) -> Response:
        delivery_id = request.path_params["delivery_id"]
        back = f"/admin/deliveries/{quote(delivery_id, safe='')}"
        if await admin.queue.get(delivery_id) is None:
            return admin.message(
                request,
                404,
                "No such delivery",
                "There is no delivery with this id.",
                link=("/admin/deliveries", "All deliveries"),
                session=session,
            )
        found = await find_person(admin.queue.store, delivery_id=delivery_id)
        return admin.render(
            request,
            "forget.html",
            session=session,
            delivery_id=delivery_id,
            found=found.deliveries,
            back=back,
            action=back + "/forget",
        )

    async def forget(request: Request, session: dict[str, Any]) -> Response:
        delivery_id = request.path_params["delivery_id"]
        form = await request.form(max_files=0, max_fields=20)
        outcome = await forget_person(
            admin.queue,
            delivery_id=delivery_id,
            rocketchat=form.get("rocketchat") == "yes",
            actor="admin page",
        )
        counts = outcome.counts
        text = (
            f"Erased {counts['deliveries']} deliveries ({counts['cancelled']} waiting, "
            f"cancelled), {counts['attempts']} attempts' error texts and {counts['people']} "
            "provider records. The erasure is in the audit log."
        )
        if outcome.rocketchat:
            text += " " + "; ".join(r.describe() for r in outcome.rocketchat) + "."
        title = "Person forgotten" if outcome.complete else "Forgotten here, not all in Rocket.Chat"
        return admin.message(
            request,
            200,
            title,
            text,
            link=(f"/admin/deliveries/{quote(delivery_id, safe='')}", "Back to the delivery"),
            session=session,
        )

    path = "/admin/deliveries/{delivery_id:str}/forget"
    return [
        Route(path, admin.page(confirm), methods=["GET"]),
        Route(path, admin.action(forget), methods=["POST"]),
    ]
