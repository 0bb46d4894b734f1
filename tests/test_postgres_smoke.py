"""The core end to end on a real PostgreSQL server, with Heroku's URL forms."""

from __future__ import annotations

from collections.abc import Callable

from adapter.settings import Settings
from tests.conftest import Service
from tests.rocketchat_standin import RocketChatStandIn


def test_contact_round_trip_on_postgres(
    postgres_url: str,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    service = start_service(make_settings(database_url=postgres_url + "?sslmode=disable"))
    response = service.post_contact(
        name="Chris Doe", email="chris@example.com", phone="+14155552671"
    )
    assert response.status_code == 201, response.text
    assert response.json()["contact_id"] in standin.visitors
    assert service.delivery(response.json()["delivery_id"])["status"] == "delivered"
