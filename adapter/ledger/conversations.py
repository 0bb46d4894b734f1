"""The statements of the messenger conversations: load, save or delete one guest's
conversation together with the update ids it handled, look updates up, purge what expired.

Runs through the :class:`~adapter.ledger.store.LedgerStore`'s transactions (on SQLite, the
process's one writer), on SQLite and PostgreSQL alike. A save records the platform's update
ids in the same transaction as the conversation, so a retried update is either handled
completely or not at all; when another process recorded one of the ids first, nothing is
written and the caller hears it was a duplicate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError

from adapter.ledger.schema import conversation_events, conversations
from adapter.ledger.sqlite_writer import WriteConnection
from adapter.ledger.store import LedgerStore

__all__ = ["ConversationLedger"]

c = conversations.c
e = conversation_events.c

_LOAD = select(c.state, c.expires_at).where(
    c.channel == bindparam("channel"), c.chat_id == bindparam("chat_id")
)
_SEEN = select(e.event_id).where(
    e.channel == bindparam("channel"), e.event_id.in_(bindparam("ids", expanding=True))
)
_DELETE = delete(conversations).where(
    c.channel == bindparam("channel"), c.chat_id == bindparam("chat_id")
)


class ConversationLedger:
    """Conversation rows and handled update ids, in the ledger's database."""

    def __init__(self, store: LedgerStore) -> None:
        self.store = store

    async def seen(self, channel: str, event_ids: Sequence[str]) -> set[str]:
        """Which of ``event_ids`` were handled before."""
        if not event_ids:
            return set()

        async def _read(conn: WriteConnection) -> set[str]:
            rows = await conn.execute(_SEEN, {"channel": channel, "ids": list(event_ids)})
            return {str(row[0]) for row in rows}

        return await self.store.read(_read)

    async def load(self, channel: str, chat_id: str) -> tuple[Mapping[str, Any], float] | None:
        """The stored state of one conversation and when it expires, if there is one."""

        async def _read(conn: WriteConnection) -> Any:
            params = {"channel": channel, "chat_id": chat_id}
            return (await conn.execute(_LOAD, params)).first()

        row = await self.store.read(_read)
        if row is None:
            return None
        state = row[0] if isinstance(row[0], dict) else {}
        return state, float(row[1])

    async def save(
        self,
        channel: str,
        chat_id: str,
        state: Mapping[str, Any] | None,
        *,
        expires_at: float,
        event_ids: Sequence[str],
        now: float,
    ) -> bool:
        """Replace the conversation (``state`` None: delete it) and record ``event_ids``,
        in one transaction; False (nothing written) when one of them was recorded before."""

        async def _tx(conn: WriteConnection) -> bool:
            if event_ids:
                params = {"channel": channel, "ids": list(event_ids)}
                if (await conn.execute(_SEEN, params)).first() is not None:
                    return False
                await conn.execute(
                    conversation_events.insert(),
                    [{"channel": channel, "event_id": i, "seen_at": now} for i in event_ids],
                )
            await conn.execute(_DELETE, {"channel": channel, "chat_id": chat_id})
            if state is not None:
                await conn.execute(
                    conversations.insert().values(
                        channel=channel,
                        chat_id=chat_id,
                        state=dict(state),
                        expires_at=expires_at,
                        updated_at=now,
                    )
                )
            return True

        try:
            return await self.store.write(_tx)
        except IntegrityError:  # another process recorded the same update meanwhile
            return False

    async def purge(self, channel: str, *, now: float, events_before: float) -> list[str]:
        """Delete ``channel``'s conversations that expired by ``now`` (returns their chat
        ids) and its update ids recorded before ``events_before``."""

        async def _tx(conn: WriteConnection) -> list[str]:
            due = (c.channel == channel) & (c.expires_at <= now)
            found = [str(row[0]) for row in await conn.execute(select(c.chat_id).where(due))]
            if found:
                await conn.execute(delete(conversations).where(due))
            old = (e.channel == channel) & (e.seen_at < events_before)
            await conn.execute(delete(conversation_events).where(old))
            return found

        return await self.store.write(_tx)
