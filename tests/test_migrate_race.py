"""Two processes starting together on one SQLite file both migrate: neither may fail.

SQLite has no advisory lock, so both can find no ``schema_version`` row and both insert one;
the loser's insert breaks the unique id. It must look again and start, not exit (seen in CI:
two web processes of the metrics test, one of them "Application startup failed").
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import event

from adapter.ledger.engine import create_engine
from adapter.ledger.schema import SCHEMA_VERSION, migrate, schema_version


def test_a_migration_that_loses_the_race_for_the_version_row_looks_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"

    async def main() -> None:
        winner = create_engine(url)
        await migrate(winner)
        async with winner.begin() as conn:  # as if the winner had not recorded it yet
            await conn.execute(schema_version.delete())
        loser = create_engine(url)
        won = False

        @event.listens_for(loser.sync_engine, "before_cursor_execute")
        def the_winner_commits_first(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            nonlocal won
            if statement.startswith("INSERT INTO schema_version") and not won:
                won = True
                cursor.execute(  # the same row, committed first by "the other process"
                    "INSERT INTO schema_version (id, version, applied_at) VALUES (1, ?, 0)",
                    (SCHEMA_VERSION,),
                )

        assert await migrate(loser) == SCHEMA_VERSION
        assert won
        async with loser.connect() as conn:
            rows = (await conn.execute(schema_version.select())).all()
        assert [(r.id, r.version) for r in rows] == [(1, SCHEMA_VERSION)]
        await loser.dispose()
        await winner.dispose()

    asyncio.run(main())
