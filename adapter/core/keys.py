"""Keyed identities: visitor tokens and digests nobody outside the deployment can compute.

In Rocket.Chat a visitor's token is their only credential on the Livechat API (read,
erase, write to agents as them), so a token must not be derivable from public facts such
as an email address. :class:`DeploymentKey` derives every token and every kept digest
with HMAC-SHA256 under the deployment's secret: equal people get equal tokens inside one
deployment, and two deployments (or anyone without the secret) get unrelated ones.

The secret is the ``DEPLOYMENT_SECRET`` setting when set, else one generated on first use
and kept in the ledger, so every process sharing the database reads the same one
(:meth:`adapter.ledger.store.LedgerStore.deployment_key`). It is never logged: the key's
``repr`` hides it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["MIN_SECRET_LENGTH", "DeploymentKey", "identity_basis", "new_secret"]

MIN_SECRET_LENGTH = 32  # characters of a configured secret (token_urlsafe(32) gives 43)


def new_secret() -> str:
    """A fresh random secret (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def identity_basis(*, email: str | None, phone: str | None, person_key: str | None) -> str:
    """What identifies a person: the email (lower-cased), else the phone, else the
    source's own person id."""
    if email:
        return "email:" + email.strip().lower()
    if phone:
        return "phone:" + phone
    if person_key:
        return "person:" + person_key
    raise ValueError("a contact token needs an email, a phone or a person key")


class DeploymentKey:
    """The deployment's secret, and everything derived from it."""

    __slots__ = ("_secret",)

    def __init__(self, secret: str | bytes) -> None:
        raw = secret.encode() if isinstance(secret, str) else secret
        if len(raw) < MIN_SECRET_LENGTH:
            raise ValueError(f"a deployment secret needs at least {MIN_SECRET_LENGTH} characters")
        self._secret = raw

    def __repr__(self) -> str:
        return "DeploymentKey(<secret>)"

    def digest(self, purpose: str, value: str) -> str:
        """HMAC-SHA256 of ``value`` for ``purpose`` (hex): a key that must outlive the data
        it stands for, comparable but not reversible or computable without the secret."""
        message = purpose.encode() + b"\0" + value.encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def visitor_token(self, *, email: str | None, phone: str | None, person_key: str | None) -> str:
        """The person's Rocket.Chat visitor token: ``ocak-`` and 32 hex digits."""
        basis = identity_basis(email=email, phone=phone, person_key=person_key)
        return "ocak-" + self.digest("visitor-token", basis)[:32]
