"""What a submission may change of a contact already held (issue 12, item 2).

A channel that authenticates its sender (a signature, a bearer token, Slack's signing)
speaks for the person, so what it sends wins. A channel that does not (the public forms
and the hosted page: anyone may type anyone's email) may create a contact and add what is
missing, but must not change what the contact already holds: a conflicting value is kept
aside for an agent to see, never applied. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import replace

from adapter.core.contact import Contact

__all__ = ["CONFLICT_NOTE", "conflict_summary", "guarded"]

CONFLICT_NOTE = "not applied: an unauthenticated channel sent another value, kept for an agent"
_FIELDS = ("name", "email", "phone")


def guarded(
    held: Contact | None, incoming: Contact, *, may_change: bool
) -> tuple[Contact, dict[str, str]]:
    """The contact to merge into what is held, and the conflicting values not applied
    (``{field: value sent}``). With ``may_change`` the incoming contact is returned as is;
    otherwise every field the held contact has keeps its value (custom fields too) and
    the incoming one only fills gaps."""
    if may_change or held is None:
        return incoming, {}
    conflicts = {
        name: str(getattr(incoming, name))
        for name in _FIELDS
        if getattr(held, name)
        and getattr(incoming, name)
        and getattr(held, name) != getattr(incoming, name)
    }
    custom = {**incoming.custom_fields, **held.custom_fields}
    kept = incoming.merged_with(held)  # held wins, incoming fills gaps
    return replace(kept, custom_fields=custom), conflicts


def conflict_summary(conflicts: dict[str, str]) -> str:
    """One line for a Rocket.Chat custom field: ``name: Mallory; phone: +1…``."""
    return "; ".join(f"{name}: {value}" for name, value in sorted(conflicts.items()))[:500]
