"""What the chat-command channels share (Mattermost, Teams, Rocket.Chat's outgoing webhook):
answering within the platform's deadline with slow work after, the words of an outcome,
markdown that cannot mention anyone, and posting an outcome to a platform's callback URL.

The Slack channel predates this module and keeps its own copies (bolt shapes its answers).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import structlog

from adapter.core.records import Outcome, Submission
from adapter.delivery.queue import DeliveryQueue

__all__ = [
    "Background",
    "escape_markdown",
    "outcome_text",
    "post_json",
    "submit_by",
]

log = structlog.get_logger("adapter.channels")

_MARKDOWN = re.compile(r"([\\`*_\[\]<>|~])")  # emphasis, code, links, HTML, tables
_MENTION = re.compile(r"(?<![\w.])([@#])(?=\w)")  # a mention starts a word, unlike an email's @


def escape_markdown(text: str) -> str:
    """``text`` shown literally in Markdown (Mattermost, Teams, Rocket.Chat): no emphasis,
    links or HTML, and no ``@all``/``@user``/``#channel`` mention (a zero-width space after
    the sign), so a guest's name cannot notify anyone."""
    return _MENTION.sub("\\1\u200b", _MARKDOWN.sub(r"\\\1", text))


class Background:
    """Work a channel starts after answering: referenced until done, awaited at shutdown."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def drain(self, timeout: float = 5.0) -> None:
        pending = [t for t in self.tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for task in pending:
            task.cancel()


async def submit_by(
    queue: DeliveryQueue,
    submission: Submission,
    *,
    deadline: float,
    wait: float,
    background: Background,
    late: Callable[[asyncio.Future[Outcome]], Awaitable[None]],
) -> Outcome | None:
    """Accept ``submission`` (and try it at once for up to ``wait`` seconds) so that the
    answer can go out by ``deadline`` (a ``time.monotonic()`` instant); None when it cannot
    wait longer: the accept then finishes in the background and ``late`` gets its future
    (a pending delivery reports later through the channel's ``notify``)."""
    remaining = deadline - time.monotonic()
    budget = max(0.0, min(wait, remaining - 0.5))
    task = asyncio.ensure_future(queue.submit(submission, wait=budget))
    try:
        return await asyncio.wait_for(asyncio.shield(task), timeout=max(0.05, remaining))
    except TimeoutError:
        log.warning("chat_answer_deadline", source=submission.source, waited=round(remaining, 2))
        background.spawn(late(task))
        return None


def _markdown_bold(text: str) -> str:
    return f"**{escape_markdown(text)}**"


def _markdown_link(url: str, text: str) -> str:
    return f"[{text}]({url})"


def outcome_text(
    *,
    status: str,
    name: str | None,
    contact_url: str | None = None,
    last_error: str | None = None,
    duplicate: bool = False,
    final: bool = False,
    later: str = "you will get the outcome here",
    bold: Callable[[str], str] = _markdown_bold,
    link: Callable[[str, str], str] = _markdown_link,
    escape: Callable[[str], str] = escape_markdown,
) -> str:
    """An accepted contact's state for the person who asked (``final``: a later report;
    ``later``: where the outcome of a pending one will be told). Markdown unless the
    platform's own ``bold``, ``link`` and ``escape`` are given; ``bold`` escapes the name
    and ``escape`` Rocket.Chat's error, the only texts not ours."""
    who = bold(name) if name else "The contact"
    where = f": {link(contact_url, 'open the contact')}" if contact_url else ""
    if status == "delivered":
        if duplicate:
            return f"✅ {who} was already registered (the same request came before){where}"
        return f"✅ {who} is now a contact in Rocket.Chat{where}"
    if status == "failed":
        reason = escape(last_error or "Rocket.Chat did not accept it")
        return f"❌ {who} could not be registered: {reason}"
    if status == "rejected":
        return f"❌ {who} was not registered: the details were refused"
    if final:
        return f"⏳ {who} is still waiting for Rocket.Chat ({status}); it will be retried"
    if duplicate:
        return f"⏳ {who} was submitted already and is being registered; {later}."
    return f"⏳ Registering {who}… Rocket.Chat has not answered yet; {later}."


async def post_json(
    url: str,
    payload: Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> int | None:
    """POST ``payload`` as JSON to a platform's callback URL: its status, or None when it
    could not be reached (logged without the URL, which is a secret)."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.post(url, json=dict(payload), headers=dict(headers or {}))
    except httpx.HTTPError as exc:
        log.warning("chat_callback_unreachable", error=type(exc).__name__)
        return None
    if not response.is_success:
        log.warning("chat_callback_refused", status=response.status_code)
    return response.status_code
