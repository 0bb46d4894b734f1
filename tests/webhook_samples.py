"""The provider webhook samples of the contract (widgets.md §0), as exact bytes and headers.

``load_sample("crisp", "session_set_email")`` returns the body bytes (never re-serialised)
and the request headers. Signatures in the samples were made with :data:`SECRETS` at the
fixed instant :data:`SAMPLE_INSTANT`; :func:`sign` re-signs a body with a provider's own
recipe (e.g. with the current time, for a replay through the real service, whose window
is 300 s). Add a provider's recipe to :data:`SIGNERS` to use it here.

The samples are looked for in ``$WEBHOOK_SAMPLES_DIR``, then ``tests/samples`` (a vendored
copy), then ``../shared/contracts/samples`` next to the checkout; tests that need them
are skipped, saying where they looked, when none exists.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

__all__ = [
    "SAMPLE_INSTANT",
    "SECRETS",
    "SIGNERS",
    "load_sample",
    "sample_events",
    "samples_dir",
    "sign",
    "tamper",
]

SAMPLE_INSTANT = 1795514400  # 2026-11-24T10:00:00Z, the timestamp in every signed sample

# The secrets the samples were signed with (widgets.md §0).
SECRETS: dict[str, str] = {
    "chatwoot": "cw-test-webhook-secret-6f1d2a9b",
    "rocketchat": "rc-livechat-secret-token-2b7e",
    "tawkto": "tawk-test-webhook-secret-9c4e1f",
    "crisp": "crisp-plugin-signing-secret-5e8a",
    "livechat": "lc-test-secret-key-3d8f",
    "typeform": "tf-test-secret-8e1c7b",
    "tally": "tally-test-signing-secret-1a2b",
    "googleforms": "gforms-test-hmac-secret-4d2c",
    "intercom": "ic-test-client-secret-5a7b",
    "zendesk": "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ==",  # Zendesk's static test secret
}
SECRETS["generic"] = SECRETS["googleforms"]  # the Google Forms recipe is the generic webhook's

_HERE = Path(__file__).resolve().parent


def samples_dir() -> Path:
    """Where the samples are; skips the calling test when they are nowhere."""
    candidates = [_HERE / "samples", _HERE.parent.parent / "shared" / "contracts" / "samples"]
    if override := os.environ.get("WEBHOOK_SAMPLES_DIR"):
        candidates.insert(0, Path(override))
    for path in candidates:
        if path.is_dir():
            return path
    pytest.skip("webhook samples not found in: " + ", ".join(str(p) for p in candidates))


def sample_events(provider: str) -> list[str]:
    """The event names of a provider's samples, sorted (``chat_start``, ``chat_end`` …)."""
    folder = samples_dir() / provider
    return sorted(p.name.removesuffix(".headers.json") for p in folder.glob("*.headers.json"))


def load_sample(provider: str, event: str) -> tuple[bytes, dict[str, str]]:
    """The exact body bytes and the headers of one sample."""
    folder = samples_dir() / provider
    headers = json.loads((folder / f"{event}.headers.json").read_text(encoding="utf-8"))
    for suffix in (".json", ".txt"):
        body = folder / f"{event}{suffix}"
        if body.is_file():
            return body.read_bytes(), {str(k): str(v) for k, v in headers.items()}
    raise FileNotFoundError(f"no body for sample {provider}/{event} in {folder}")


def tamper(body: bytes, index: int | None = None) -> bytes:
    """The same body with one byte changed (by default a byte in the middle)."""
    at = len(body) // 2 if index is None else index
    return body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1 :]


# -- signing recipes: (body, secret, now) -> the headers that authenticate it ------------------


def _hex(secret: str, message: bytes, digest: str = "sha256") -> str:
    return hmac.new(secret.encode(), message, digest).hexdigest()


def _b64(secret: str, message: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def _chatwoot(body: bytes, secret: str, now: float) -> dict[str, str]:
    stamp = str(int(now))
    return {
        "X-Chatwoot-Timestamp": stamp,
        "X-Chatwoot-Signature": "sha256=" + _hex(secret, stamp.encode() + b"." + body),
    }


def _crisp(body: bytes, secret: str, now: float) -> dict[str, str]:
    stamp = str(int(now * 1000))
    message = b"[" + stamp.encode() + b";" + body + b"]"
    return {"X-Crisp-Request-Timestamp": stamp, "X-Crisp-Signature": _hex(secret, message)}


def _googleforms(body: bytes, secret: str, now: float) -> dict[str, str]:
    stamp = str(int(now))
    return {
        "X-Contact-Adapter-Timestamp": stamp,
        "X-Contact-Adapter-Signature": "sha256=" + _hex(secret, stamp.encode() + b"." + body),
    }


def _zendesk(body: bytes, secret: str, now: float) -> dict[str, str]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    return {
        "X-Zendesk-Webhook-Signature-Timestamp": stamp,
        "X-Zendesk-Webhook-Signature": _b64(secret, stamp.encode() + body),
    }


SIGNERS: dict[str, Callable[[bytes, str, float], dict[str, str]]] = {
    "chatwoot": _chatwoot,
    "crisp": _crisp,
    "tawkto": lambda body, secret, _now: {"X-Tawk-Signature": _hex(secret, body, "sha1")},
    "rocketchat": lambda _body, secret, _now: {"X-RocketChat-Livechat-Token": secret},
    "typeform": lambda body, secret, _now: {"Typeform-Signature": "sha256=" + _b64(secret, body)},
    "tally": lambda body, secret, _now: {"Tally-Signature": _b64(secret, body)},
    "googleforms": _googleforms,
    "generic": _googleforms,
    "intercom": lambda body, secret, _now: {
        "X-Hub-Signature": "sha1=" + _hex(secret, body, "sha1")
    },
    "zendesk": _zendesk,
}


def sign(
    provider: str,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    secret: str | None = None,
    now: float | None = None,
) -> dict[str, str]:
    """``headers`` (default: JSON content type) with the provider's authentication redone.

    ``now`` defaults to the current time; ``secret`` to the one the samples use.
    """
    signed = dict(headers or {"Content-Type": "application/json"})
    fresh = SIGNERS[provider](
        body, SECRETS[provider] if secret is None else secret, time.time() if now is None else now
    )
    lower = {k.lower() for k in fresh}
    signed = {k: v for k, v in signed.items() if k.lower() not in lower}
    signed.update(fresh)
    return signed
