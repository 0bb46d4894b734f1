"""A stale timestamp under a right signature names the clock or a replay, not the secret.

The generic and Chatwoot webhooks sign ``timestamp.body``: a request whose signature is
right but whose timestamp is outside the 5-minute window is refused (401, nothing stored)
with how far off it was; a wrong signature still points at the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable

import pytest

from adapter.settings import Settings
from tests.conftest import Service

SECRET = "shared-webhook-secret"
HEADERS = {
    "generic": ("X-Contact-Adapter-Timestamp", "X-Contact-Adapter-Signature"),
    "chatwoot": ("X-Chatwoot-Timestamp", "X-Chatwoot-Signature"),
}
BODIES = {
    "generic": {"event_id": "ev-1", "name": "Chris Doe", "email": "chris@example.com"},
    "chatwoot": {
        "event": "contact_created",
        "id": 7,
        "name": "Chris Doe",
        "email": "chris@example.com",
        "account": {"id": 1},
    },
}


def signed(provider: str, stamp: int, secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(BODIES[provider]).encode()
    mac = hmac.new(secret.encode(), str(stamp).encode() + b"." + body, hashlib.sha256)
    stamp_header, signature_header = HEADERS[provider]
    headers = {
        "Content-Type": "application/json",
        stamp_header: str(stamp),
        signature_header: f"sha256={mac.hexdigest()}",
    }
    return body, headers


@pytest.mark.parametrize("provider", ["generic", "chatwoot"])
def test_a_stale_timestamp_names_the_clock_and_how_far_off_it_was(
    provider: str,
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    setting = f"{provider.upper()}_WEBHOOK_SECRET"
    service = start_service(make_settings(channel_settings={setting: SECRET}))
    path = f"/webhooks/{provider}"

    body, headers = signed(provider, int(time.time()) - 1000)
    late = service.client.post(path, content=body, headers=headers)
    assert late.status_code == 401
    error = late.json()["error"]
    assert "signature is right" in error
    assert "in the past" in error and "clock" in error and "replay" in error
    off_by = int(error.split("timestamp is ")[1].split(" s ")[0])
    assert 995 <= off_by <= 1060, error  # how far off it was, in seconds
    assert setting not in error  # the secret is not the cause

    body, headers = signed(provider, int(time.time()) + 900)
    assert "in the future" in service.client.post(path, content=body, headers=headers).text

    body, headers = signed(provider, int(time.time()) - 1000, secret="another-secret")
    forged = service.client.post(path, content=body, headers=headers)
    assert forged.status_code == 401
    assert f"make sure {setting} matches" in forged.json()["error"]
    assert service.stored_rows() == 0

    body, headers = signed(provider, int(time.time()))
    assert service.client.post(path, content=body, headers=headers).status_code == 200
    assert service.stored_rows() == 1
