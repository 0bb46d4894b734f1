"""The data's lifecycle on a real PostgreSQL server: forget leaves the person in no text
column of any table, retention erases exactly the personal columns, and two workers
sweeping at once erase each row once without either waiting for a lock."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from adapter.delivery.privacy import RetentionSweep
from adapter.ops.runtime import open_runtime
from adapter.settings import Settings
from tests.conftest import ADMIN_TOKEN, Service

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NAME, EMAIL, PHONE = "Zelda Quintavalle", "zelda.quintavalle@example.org", "+14155552671"
NEEDLES = ["zelda", "quintavalle", "4155552671"]


async def _text_columns_holding(engine: Any, needles: list[str]) -> list[str]:
    """Every (table.column) of every table whose text holds one of ``needles``."""
    found = []
    async with engine.connect() as conn:
        columns = (
            await conn.execute(
                text(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND data_type IN "
                    "('text', 'character varying', 'json', 'jsonb')"
                )
            )
        ).all()
        for table, column in columns:
            for needle in needles:
                hits = (
                    await conn.execute(
                        text(
                            f'SELECT count(*) FROM "{table}" '
                            f"WHERE lower(\"{column}\"::text) LIKE '%' || :needle || '%'"
                        ),
                        {"needle": needle},
                    )
                ).scalar()
                if hits:
                    found.append(f"{table}.{column}: {needle}")
    return found


def test_forget_leaves_no_text_column_holding_the_person(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    postgres_url: str,
) -> None:
    settings = make_settings(database_url=postgres_url)
    service = start_service(settings)
    first = service.post_contact(name=NAME, email=EMAIL, phone=PHONE).json()
    service.settled(first["delivery_id"])
    second = service.post_contact(name=NAME + " Jr", email=EMAIL, phone="+1 415 555 2671").json()
    service.settled(second["delivery_id"])
    assert service.post_contact(name=NAME, email="nope", phone="(415) 555-2671").status_code == 422
    other = service.post_contact(name="Otto Other", email="otto@example.org", phone="+442071838750")
    service.settled(other.json()["delivery_id"])

    async def scan() -> list[str]:
        async with open_runtime(settings, migrate=False) as runtime:
            return await _text_columns_holding(runtime.engine, [*NEEDLES, "otto other"])

    assert any("zelda" in hit for hit in asyncio.run(scan()))
    answer = service.client.post(
        "/people/forget", json={"phone": "+1 (415) 555-2671"}, headers=ADMIN
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["erased"]["deliveries"] == 2
    left = asyncio.run(scan())
    assert left == ["deliveries.fields: otto other"]  # only the other person remains


def _settings_for_sweep(make_settings: Callable[..., Settings], url: str) -> Settings:
    return make_settings(database_url=url, inprocess_worker=False)


async def _seed(engine: Any, n: int, *, age: float) -> None:
    """``n`` delivered rows and one pending row, all ``age`` seconds old."""
    old = time.time() - age
    rows = [
        {
            "id": uuid.uuid4().hex,
            "source": "api",
            "event_id": f"evt-{i}",
            "token": f"ocak-{i:032x}",
            "fields": json.dumps({"name": f"Person {i}", "email": f"p{i}@example.org"}),
            "status": "delivered",
            "email_key": f"p{i}@example.org",
            "contact_id": f"rc-{i}",
            "t": old,
        }
        for i in range(n)
    ]
    rows.append({**rows[0], "id": "pending-one", "status": "pending", "token": "ocak-pending"})
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO deliveries (id, source, event_id, token, fields, status, attempts, "
                "next_attempt_at, contact_id, email_key, created_at, updated_at, delivered_at) "
                "VALUES (:id, :source, :event_id, :token, CAST(:fields AS json), :status, 1, :t, "
                ":contact_id, :email_key, :t, :t, :t)"
            ),
            rows,
        )
        await conn.execute(
            text(
                "INSERT INTO delivery_events (source, event_id, delivery_id, created_at) "
                "VALUES ('api', :event_id, :id, :t)"
            ),
            [r for r in rows if r["status"] == "delivered"],
        )


def test_two_workers_sweeping_at_once_erase_each_row_once_and_wait_for_nothing(
    make_settings: Callable[..., Settings], postgres_url: str
) -> None:
    settings = _settings_for_sweep(make_settings, postgres_url)
    total = 3000

    async def main() -> tuple[list[int], list[int], dict[str, Any]]:
        async with (
            open_runtime(settings) as one,
            open_runtime(settings, migrate=False) as two,
            open_runtime(settings, migrate=False) as watcher,
        ):
            await _seed(one.engine, total, age=40 * 86_400)
            sweeps = [RetentionSweep(r.queue, batch=100) for r in (one, two)]
            waits: list[int] = []
            done = asyncio.Event()

            async def watch() -> None:
                # Anyone waiting for a lock while the sweeps run?
                async with watcher.engine.connect() as conn:
                    while not done.is_set():
                        waiting = (
                            await conn.execute(
                                text(
                                    "SELECT count(*) FROM pg_stat_activity "
                                    "WHERE wait_event_type = 'Lock'"
                                )
                            )
                        ).scalar()
                        waits.append(int(waiting or 0))
                        await conn.commit()
                        await asyncio.sleep(0.005)  # noqa: sleep-ok - the watcher's sampling

            watching = asyncio.create_task(watch())
            reports = await asyncio.gather(
                *(s.run(max_batches=None, actor=f"worker-{i}") for i, s in enumerate(sweeps))
            )
            done.set()
            await watching
            async with one.engine.connect() as conn:
                state = dict(
                    (
                        await conn.execute(
                            text(
                                "SELECT count(*) FILTER (WHERE erased_at IS NOT NULL) AS erased, "
                                "count(*) FILTER (WHERE fields::text <> '{}' "
                                "AND status = 'delivered') AS holding, "
                                "(SELECT fields::text FROM deliveries WHERE id = 'pending-one') "
                                "AS pending_fields, "
                                "(SELECT count(*) FROM delivery_events WHERE event_id LIKE 'evt-%')"
                                " AS clear_events FROM deliveries"
                            )
                        )
                    )
                    .mappings()
                    .one()
                )
            return [r.deliveries["delivered"] for r in reports], waits, state

    per_worker, waits, state = asyncio.run(main())
    assert sum(per_worker) == total  # each row erased (and counted) once
    assert all(n > 0 for n in per_worker), per_worker  # both took part
    assert state["erased"] == total and state["holding"] == 0
    assert "Person 0" in state["pending_fields"]  # the pending row is untouched
    assert state["clear_events"] == 0  # every event id kept as a digest only
    assert waits and max(waits) == 0  # nobody ever waited for a lock
