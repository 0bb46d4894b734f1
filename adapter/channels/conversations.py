"""Where messenger channels keep a guest's conversation: :class:`ConversationStore`.

The conversation itself (what is known, what to ask next, in which language, when it
expires) is pure: :mod:`adapter.core.conversation`. This is its durable side, by
``(channel, chat id)`` in the ledger's database, so a conversation survives a restart and
continues in whichever process gets the guest's next message. Personal data does not
outlive the conversation: a completed or cancelled one is deleted, an expired one is
never loaded and is deleted by :meth:`ConversationStore.purge`.
"""

from __future__ import annotations

from collections.abc import Sequence

from adapter.channels.base import ChannelContext
from adapter.core.conversation import Conversation
from adapter.ledger.conversations import ConversationLedger

__all__ = ["ConversationStore"]


class ConversationStore:
    """Load, save and delete conversations; remember which platform updates were handled."""

    def __init__(self, ledger: ConversationLedger) -> None:
        self._ledger = ledger

    @classmethod
    def of(cls, context: ChannelContext) -> ConversationStore:
        """The store in the database of ``context``'s delivery queue."""
        return cls(ConversationLedger(context.queue.store))

    async def seen(self, channel: str, event_id: str) -> bool:
        """Whether the platform's update ``event_id`` was handled before (a retry, a replay)."""
        return bool(await self._ledger.seen(channel, [event_id]))

    async def load(self, channel: str, chat_id: str, *, now: float) -> Conversation | None:
        """The guest's conversation, unless there is none or it expired by ``now``."""
        found = await self._ledger.load(channel, chat_id)
        if found is None:
            return None
        state, expires_at = found
        if now >= expires_at:
            return None
        return Conversation.from_json(channel, chat_id, state, expires_at)

    async def save(
        self, conversation: Conversation, *, event_ids: Sequence[str] = (), now: float
    ) -> bool:
        """Keep ``conversation`` and record ``event_ids`` as handled, together; False when
        one of them was handled meanwhile (then nothing is written)."""
        return await self._ledger.save(
            conversation.channel,
            conversation.chat_id,
            conversation.as_json(),
            expires_at=conversation.expires_at,
            event_ids=event_ids,
            now=now,
        )

    async def delete(
        self, channel: str, chat_id: str, *, event_ids: Sequence[str] = (), now: float
    ) -> bool:
        """Forget the guest's conversation (registered, cancelled) and record ``event_ids``
        as handled, together; False when one of them was handled meanwhile."""
        return await self._ledger.save(
            channel, chat_id, None, expires_at=now, event_ids=event_ids, now=now
        )

    async def purge(self, channel: str, *, now: float, keep_events: float) -> list[str]:
        """Delete ``channel``'s conversations expired by ``now`` (returns their chat ids)
        and its handled update ids older than ``keep_events`` seconds."""
        return await self._ledger.purge(channel, now=now, events_before=now - keep_events)
