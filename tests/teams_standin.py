"""A stand-in for Microsoft Teams' side of an outgoing webhook, as
``contracts/chat-platforms.md`` §2 describes it.

:meth:`TeamsStandIn.mention` is a user @mentioning the webhook in a channel: Teams posts
the message as a Bot Framework activity, ``Authorization: HMAC <base64 HMAC-SHA256 of the
raw UTF-8 body>`` keyed with the base64-decoded security token, and waits 5 seconds for
the answer. An answer that is 200 with a ``message`` activity becomes a reply in the
message's chain, seen by the whole channel (:attr:`replies`); anything else is an error
shown to the user (:attr:`errors`; [unconfirmed] the exact error text Teams shows).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

__all__ = ["TeamsStandIn", "teams_signature"]

ANSWER_SECONDS = 5.0  # "your code gets five seconds to respond"


def teams_signature(token: str, body: bytes) -> str:
    key = base64.b64decode(token)
    return "HMAC " + base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()


class TeamsStandIn:
    """One team's outgoing webhook named "Contacts"."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token or base64.b64encode(secrets.token_bytes(32)).decode()
        self.callback_url = ""  # <service>/teams/outgoing
        self.replies: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.tenant = str(uuid.uuid4())
        self.user = {"id": "29:1cGx-user", "name": "Alex Agent", "aadObjectId": str(uuid.uuid4())}
        self._ids = itertools.count(int(time.time() * 1000))

    def activity(
        self, text: str, *, message_id: str | None = None, sent_at: float | None = None
    ) -> dict[str, Any]:
        """The activity Teams posts for ``@Contacts <text>`` (the sample's shape)."""
        mid = message_id or str(next(self._ids))
        stamp = datetime.fromtimestamp(sent_at if sent_at is not None else time.time(), UTC)
        channel = "19:3f1c2e4d5a6b7c8d9e0f@thread.tacv2"
        return {
            "type": "message",
            "id": mid,
            "timestamp": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "serviceUrl": "https://smba.trafficmanager.net/emea/",
            "channelId": "msteams",
            "from": self.user,
            "conversation": {
                "isGroup": True,
                "id": f"{channel};messageid={mid}",
                "conversationType": "channel",
                "tenantId": self.tenant,
            },
            "recipient": None,
            "textFormat": "plain",
            "locale": "en-US",
            "text": f"<at>Contacts</at> {text}",
            "attachments": [{"contentType": "text/html", "content": f"<div>{text}</div>"}],
            "channelData": {
                "teamsChannelId": channel,
                "teamsTeamId": "19:9a8b7c6d5e4f3a2b1c0d@thread.tacv2",
                "team": {"id": "19:9a8b7c6d5e4f3a2b1c0d@thread.tacv2"},
                "tenant": {"id": self.tenant},
            },
        }

    def send(
        self, body: bytes, *, token: str | None = None, authorization: str | None = None
    ) -> httpx.Response:
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Authorization": authorization or teams_signature(token or self.token, body),
        }
        answer = httpx.post(
            self.callback_url, content=body, headers=headers, timeout=ANSWER_SECONDS
        )
        if answer.status_code == 200 and answer.headers.get("content-type", "").startswith(
            "application/json"
        ):
            data = answer.json()
            if data.get("type") == "message":
                self.replies.append(data)
                return answer
        self.errors.append(f"HTTP {answer.status_code}")
        return answer

    def mention(self, text: str, **kwargs: Any) -> tuple[httpx.Response, dict[str, Any]]:
        """``@Contacts <text>`` typed in the channel: the answer and the activity sent."""
        activity = self.activity(text, **kwargs)
        body = json.dumps(activity, ensure_ascii=False, separators=(",", ":")).encode()
        return self.send(body), activity
