"""What the Telegram and WhatsApp channels share: one guest message through the conversation
to the queue, replies sent after the webhook's answer, the sweep that forgets expired
conversations, and reading their settings. (A module starting with ``_`` is not a channel.)

Order of one message (:meth:`Messenger.handle`): an update id handled before is a
duplicate and changes nothing; else the conversation is loaded, advanced (pure,
:func:`adapter.channels.advance`), a complete contact is submitted to the queue (its event
id deduplicated there too), and the conversation is saved or deleted together with the
update id. All of it before the webhook is answered, so an answered update is never lost;
the replies go out after the answer (:meth:`Messenger.send_replies`), and the delivery's
final outcome reaches the guest through the channel's ``notify``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import structlog

from adapter.channels import (
    ChannelContext,
    ConversationRules,
    ConversationStore,
    DeliveryRecord,
    Incoming,
    Reply,
    Settings,
    SettingsError,
    Step,
    Submission,
    advance,
)

__all__ = [
    "JsonPoster",
    "Messenger",
    "ReplySender",
    "duration_setting",
    "outcome_reply",
    "send_outcome",
    "setting",
    "url_setting",
]

log = structlog.get_logger("handlers.messenger")


class ReplySender(Protocol):
    """Sends one bot message to a chat through the platform's API: the replies of one step
    as one message (Telegram allows about one message a second per chat), the question last."""

    async def send(self, chat_id: str, replies: Sequence[Reply], language: str) -> bool: ...


class JsonPoster:
    """One keep-alive aiohttp session for a platform's send API (aiohttp: half the CPU per
    call of httpx, see the README's libraries), made on first use inside the event loop."""

    def __init__(self, headers: Mapping[str, str] | None = None, timeout: float = 10.0) -> None:
        self.headers = dict(headers or {})
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        """The answer's status and JSON body (None when it is not JSON); raises
        ``aiohttp.ClientError`` or ``TimeoutError`` when there is no answer."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self.headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        async with self._session.post(url, json=body) as answer:
            try:
                data = await answer.json(content_type=None)
            except ValueError:
                data = None
            return answer.status, data

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def setting(settings: Settings, name: str) -> str | None:
    value = settings.lookup(name)
    return value.strip() if value is not None and value.strip() else None


def url_setting(settings: Settings, name: str, default: str) -> str:
    """An http(s) base URL, without its trailing slash."""
    value = setting(settings, name) or default
    if not value.startswith(("http://", "https://")):
        raise SettingsError(
            f"setting {name} (got {value!r}): expected an http(s) URL such as {default}"
        )
    return value.rstrip("/")


def duration_setting(
    settings: Settings, name: str, default: float, *, low: float, high: float
) -> float:
    """Seconds, between ``low`` and ``high``."""
    raw = setting(settings, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not low <= value <= high:
        raise SettingsError(
            f"setting {name} (got {raw!r}): expected seconds between {low:g} and {high:g} "
            f"(default {default:g})"
        )
    return value


def outcome_reply(record: DeliveryRecord) -> Reply:
    """What the guest hears when their registration finished after the answer."""
    name = str((record.fields or {}).get("name") or "")
    return Reply("delivered" if record.status == "delivered" else "failed", {"name": name})


async def send_outcome(
    context: ChannelContext,
    record: DeliveryRecord,
    chat_id: str,
    language: str,
    *,
    state_key: str,
    make_sender: Callable[[], ReplySender | None],
) -> bool | None:
    """Tell the guest their registration's outcome: in order behind the replies still going
    out when this process serves the channel's routes, else (a worker process) through a
    sender made once from the settings; None when the channel is off here."""
    messenger = context.state.get(state_key)
    if isinstance(messenger, Messenger):
        return await messenger.send_in_order(chat_id, outcome_reply(record), language)
    sender_key = f"{state_key}_sender"
    sender = context.state.get(sender_key)
    if sender is None:
        sender = make_sender()
        if sender is None:
            return None
        context.state[sender_key] = sender
    sent: bool = await sender.send(chat_id, [outcome_reply(record)], language)
    return sent


@dataclass
class Messenger:
    """One messenger channel's conversations, on the service's queue and ledger."""

    context: ChannelContext
    channel: str
    rules: ConversationRules
    sender: ReplySender
    keep_events: float  # seconds an update id is remembered (≥ the channel's replay window)
    sweep_every: float = 60.0

    def __post_init__(self) -> None:
        self.store = ConversationStore.of(self.context)
        self._sweeper: asyncio.Task[None] | None = None
        self._tails: dict[str, asyncio.Future[None]] = {}  # chat → its last replies sent
        self._sending: set[asyncio.Task[bool]] = set()  # replies going out (drained on stop)

    async def handle(
        self,
        incoming: Incoming,
        *,
        event_id: str,
        now: float,
        submission: Callable[[Mapping[str, str], str], Submission],
        fresh: bool = False,
    ) -> Step | None:
        """Advance the guest's conversation by one message; None for an update handled
        before. ``submission(fields, language)`` builds what is queued once complete;
        ``fresh``: start a new conversation (a contact card replaces what was asked)."""
        if await self.store.seen(self.channel, event_id):
            return None
        current = None if fresh else await self.store.load(self.channel, incoming.chat_id, now=now)
        step = advance(current, incoming, channel=self.channel, now=now, rules=self.rules)
        if step.complete is not None:
            outcome = await self.context.queue.submit(
                submission(step.complete, step.language), wait=0
            )
            log.info(
                "messenger_contact_accepted",
                channel=self.channel,
                delivery_id=outcome.delivery_id,
                status=outcome.status,
                duplicate=outcome.duplicate,
            )
        if step.conversation is not None:
            handled = await self.store.save(step.conversation, event_ids=[event_id], now=now)
        else:
            handled = await self.store.delete(
                self.channel, incoming.chat_id, event_ids=[event_id], now=now
            )
        if not handled:  # another process handled the same update meanwhile
            return None
        log.info(
            "messenger_message",
            channel=self.channel,
            asking=step.conversation.asking if step.conversation else None,
            complete=step.complete is not None,
            language=step.language,
        )
        return step

    def send_replies(self, chat_id: str, steps: list[Step]) -> None:
        """Send each step's replies as one message in the background, in order, after what
        is still going out to the chat (see :meth:`send_in_order`). A task rather than the
        response's background: the connection is free for the platform's next update."""
        pending: list[tuple[Sequence[Reply], str]] = [
            (step.replies, step.language) for step in steps if step.replies
        ]
        if not pending:
            return
        task = asyncio.create_task(self._queued(chat_id, pending)())
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def send_in_order(self, chat_id: str, reply: Reply, language: str) -> bool:
        """Send one message (an outcome) after the chat's replies still going out, so the
        guest never reads "registered" before "we are registering"."""
        return await self._queued(chat_id, [((reply,), language)])()

    def _queued(
        self, chat_id: str, pending: list[tuple[Sequence[Reply], str]]
    ) -> Callable[[], Coroutine[Any, Any, bool]]:
        """A sender of ``pending`` that first waits for the sends queued before it to the
        same chat (its place in the queue is taken now, when it is made)."""
        previous = self._tails.get(chat_id)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[chat_id] = done

        async def send_all() -> bool:
            try:
                if previous is not None:
                    await asyncio.wait([previous], timeout=30)
                for replies, language in pending:
                    if not await self.sender.send(chat_id, replies, language):
                        return False  # the platform refused: the next one would fail too
                return True
            except Exception as exc:  # the type only: a URL may carry the bot token
                log.error("messenger_reply_failed", channel=self.channel, error=type(exc).__name__)
                return False
            finally:
                done.set_result(None)
                if self._tails.get(chat_id) is done:
                    del self._tails[chat_id]

        return send_all

    # -- forgetting expired conversations ----------------------------------------------

    async def sweep(self, now: float | None = None) -> int:
        """Delete the expired conversations (and old update ids); how many there were."""
        expired = await self.store.purge(
            self.channel, now=time.time() if now is None else now, keep_events=self.keep_events
        )
        if expired:
            log.info("messenger_conversations_expired", channel=self.channel, count=len(expired))
        return len(expired)

    async def start(self) -> None:
        async def run() -> None:
            while True:
                try:
                    await self.sweep()
                except Exception:
                    log.exception("messenger_sweep_failed", channel=self.channel)
                await asyncio.sleep(self.sweep_every)

        self._sweeper = asyncio.create_task(run())

    async def stop(self) -> None:
        """Stop sweeping; let the replies going out finish (10 s at most)."""
        if self._sending:
            await asyncio.wait(list(self._sending), timeout=10)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
