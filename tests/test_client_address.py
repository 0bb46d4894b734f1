"""Per-address limits hold behind Heroku's router: a client cannot pick its own address.

The ``web`` process runs as the Procfile starts it (``contact-adapter serve``, which trusts
``X-Forwarded-*`` from any peer, as Heroku's router needs). Heroku's router keeps the
``X-Forwarded-For`` a client sent and appends the address it really connected from, so these
requests carry ``<chosen by the client>, <real address>``. A client that changes the first
part on every request is still one client to the admin login's throttle and to the forms'
rate limit; a second real address has its own allowance.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, csrf_of
from tests.dynos import Dyno, Formation, base_env
from tests.rocketchat_standin import RocketChatStandIn, StandInServer

REAL, OTHER = "198.51.100.7", "198.51.100.8"


def through_router(real: str, chosen: str) -> dict[str, str]:
    """The ``X-Forwarded-For`` Heroku's router sends for a client at ``real`` that wrote
    ``chosen``. (Without the router's ``X-Forwarded-Proto: https``: the session cookie would
    then be ``Secure``, and this plain-HTTP test client would not send it back.)"""
    return {"X-Forwarded-For": f"{chosen}, {real}"}


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Dyno]:
    standin = RocketChatStandIn()
    server = StandInServer(standin.app).start()
    env = base_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'contacts.db'}",
        ROCKETCHAT_URL=server.url,
        ADMIN_TOKEN=ADMIN_TOKEN,
        FORM_RATE_LIMIT="2",
        INPROCESS_WORKER="false",
    )
    formation = Formation(env, tmp_path)
    dyno = formation.start("web")
    try:
        dyno.wait_ready()
        yield dyno
    finally:
        formation.stop_all()
        server.stop()


def test_admin_login_throttle_ignores_the_address_a_client_writes(web: Dyno) -> None:
    with httpx.Client(base_url=web.url, timeout=30) as client:
        csrf = csrf_of(client.get("/admin/login").text)
        statuses = []
        for n in range(11):
            answer = client.post(
                "/admin/login",
                data={"token": f"guess-{n}", "csrf_token": csrf},
                headers=through_router(REAL, f"10.0.{n}.1"),
            )
            statuses.append(answer.status_code)
            csrf = csrf_of(answer.text)
        assert statuses == [401] * 10 + [429]
        right = client.post(
            "/admin/login",
            data={"token": ADMIN_TOKEN, "csrf_token": csrf},
            headers=through_router(REAL, "10.9.9.9"),
        )
        assert right.status_code == 429  # still the same client, still waiting
    with httpx.Client(base_url=web.url, timeout=30) as other:
        csrf = csrf_of(other.get("/admin/login").text)
        answer = other.post(
            "/admin/login",
            data={"token": ADMIN_TOKEN, "csrf_token": csrf, "next": "/admin"},
            headers=through_router(OTHER, "10.0.0.1"),
        )
        assert answer.status_code == 303  # another real address is not throttled


def test_form_rate_limit_ignores_the_address_a_client_writes(web: Dyno) -> None:
    def post(real: str, chosen: str) -> int:
        body = {"name": "Chris Doe", "email": f"chris.{chosen}@example.com"}
        body["phone"] = "+14155552671"
        answer = httpx.post(
            web.url + "/forms/default",
            json=body,
            headers={**through_router(real, chosen), "Accept": "application/json"},
            timeout=30,
        )
        return answer.status_code

    assert [post(REAL, f"10.1.{n}.1") for n in range(3)][2] == 429  # FORM_RATE_LIMIT=2
    assert post(OTHER, "10.1.0.1") != 429
