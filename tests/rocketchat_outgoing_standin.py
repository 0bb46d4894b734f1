"""A stand-in for Rocket.Chat's outgoing webhook integration (``triggerHandler.ts``), as
``contracts/chat-platforms.md`` §5 describes it.

:meth:`OutgoingIntegration.say` is an agent typing a message in a room: when it starts
with a trigger word (or, with ``anywhere``, contains one) the integration posts the
payload ``mapEventArgsToData`` builds, JSON, with Rocket.Chat's fixed User-Agent. The
answer is handled like ``executeTriggerUrl``: a 200/201/202 with a non-empty body whose
Content-Type is JSON and which carries ``text`` or ``attachments`` becomes a message in
the room (or the answer's ``channel``, in its ``tmid`` thread) posted by the *Post as*
user, marked ``bot`` (:attr:`room_messages`); an empty body or another status is an
error, retried (``retry_count`` times, powers of ten) except 410 (disables the
integration) and 500. A reply that itself starts with a trigger word triggers the
integration again, marked ``bot: true`` (the loop the contract warns of).
"""

from __future__ import annotations

import itertools
import json
import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

__all__ = ["OutgoingIntegration", "meteor_id"]

USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/41.0.2227.0 Safari/537.36"
)
SUCCESS = (200, 201, 202)
_JSON_TYPES = ("application/json", "text/javascript", "application/javascript")


def meteor_id() -> str:
    alphabet = "23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz"
    return "".join(secrets.choice(alphabet) for _ in range(17))


@dataclass
class Sent:
    payload: dict[str, Any]
    status: int | None
    answer: Any
    tries: int = 1


@dataclass
class OutgoingIntegration:
    """One outgoing integration on ``#front-desk``, trigger word ``!contact``."""

    url: str = ""
    token: str = field(default_factory=lambda: "rc-" + secrets.token_urlsafe(18))
    trigger_words: tuple[str, ...] = ("!contact",)
    anywhere: bool = False
    retry_count: int = 0  # "Retry Failed URL Calls" off unless set
    post_as: str = "contact.bot"
    room_id: str = field(default_factory=meteor_id)
    room_name: str = "front-desk"
    site_url: str = "https://chat.example.com"
    room_messages: list[dict[str, Any]] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    enabled: bool = True
    _clock: itertools.count[int] = field(default_factory=lambda: itertools.count())

    def payload(
        self,
        text: str,
        *,
        user: str = "alex.agent",
        bot: bool = False,
        message_id: str | None = None,
        tmid: str | None = None,
        edited: bool = False,
        ts: datetime | None = None,
    ) -> dict[str, Any] | None:
        """What the integration posts for ``text`` (None: no trigger word matches)."""
        word = next(
            (w for w in self.trigger_words if (w in text if self.anywhere else text.startswith(w))),
            None,
        )
        if self.trigger_words and word is None:
            return None
        data: dict[str, Any] = {"token": self.token, "bot": False}
        if word:
            data["trigger_word"] = word
        stamp = (ts or datetime.now(UTC)).isoformat(timespec="milliseconds")
        data.update(
            channel_id=self.room_id,
            channel_name=self.room_name,
            message_id=message_id or meteor_id(),
            timestamp=stamp.replace("+00:00", "Z"),
            user_id="u" + "".join(secrets.choice(string.ascii_letters) for _ in range(16)),
            user_name=user,
            text=text,
            siteUrl=self.site_url,
        )
        if bot:
            data["bot"] = True
        if edited:
            data["isEdited"] = True
        if tmid:
            data["tmid"] = tmid
        return data

    def post(self, payload: dict[str, Any], *, tries: int = 0) -> Sent:
        """One call of ``executeTriggerUrl`` for ``payload`` (with its retries)."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            answer = httpx.post(
                self.url,
                content=body,
                headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
                timeout=60,  # Rocket.Chat sets none: a long bound keeps the test finite
            )
        except httpx.HTTPError:
            sent = Sent(payload, None, None, tries + 1)  # a network error is never retried
            self.sent.append(sent)
            return sent
        content = answer.text
        ctype = answer.headers.get("content-type", "").split(";")[0].strip()
        data: Any = None
        if ctype in _JSON_TYPES:
            try:
                data = json.loads(content)
            except ValueError:
                data = None
        sent = Sent(payload, answer.status_code, data if data is not None else content, tries + 1)
        self.sent.append(sent)
        if not content or answer.status_code not in SUCCESS:
            if content and answer.status_code == 410:
                self.enabled = False
            elif content and answer.status_code == 500:
                pass
            elif tries < self.retry_count:
                return self.post(payload, tries=tries + 1)  # (without the 10^n ms wait)
            return sent
        if isinstance(data, dict) and (data.get("text") or data.get("attachments")):
            self.room_messages.append(
                {
                    "room": data.get("channel") or f"#{self.room_id}",
                    "text": data.get("text"),
                    "tmid": data.get("tmid"),
                    "user": self.post_as,
                    "bot": True,
                }
            )
            again = self.payload(str(data.get("text") or ""), user=self.post_as, bot=True)
            if again is not None:
                self.post(again)
        return sent

    def say(self, text: str, **kwargs: Any) -> Sent | None:
        """An agent types ``text`` in the room: what the integration sent and got back."""
        if not self.enabled:
            return None
        payload = self.payload(text, **kwargs)
        return None if payload is None else self.post(payload)
