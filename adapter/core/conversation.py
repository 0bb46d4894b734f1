"""Asking a guest in a messenger for what is missing, one question at a time (pure).

Telegram and WhatsApp guests write to a bot; the bot knows what the platform says about
them (the profile name, on WhatsApp the number they write from) and asks for the rest:
the name, the phone (Telegram: a "share my phone number" button) or the email, one
question per message, in the guest's language. :func:`advance` takes the conversation so
far (``None`` for a new one), one incoming message and the time, and returns a
:class:`Step`: the conversation to keep (``None``: delete it), the replies to send, and,
once everything required is known and valid, the contact to register.

No I/O and no clock of its own: the channel loads and saves the :class:`Conversation`
(``adapter.channels.ConversationStore``), passes ``now`` and sends the replies. A
conversation expires ``ttl`` seconds after the guest's last message; an expired one is
treated as absent, so what the guest gave is forgotten (and the store deletes it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import phonenumbers

from adapter.core.contact import (
    ContactError,
    FieldError,
    normalize_email,
    normalize_name,
    normalize_phone,
    validate_contact,
)
from adapter.core.conversation_text import LANGUAGES, render
from adapter.core.extract import extract_contact

__all__ = [
    "ASK_ORDER",
    "LANGUAGES",
    "Conversation",
    "ConversationRules",
    "Incoming",
    "Reply",
    "Step",
    "advance",
    "language_of",
    "language_of_phone",
]

ASK_ORDER = ("name", "phone", "email")  # what is asked first when several are missing


def language_of(code: str | None, default: str = "en") -> str:
    """The language to speak for an IETF tag such as ``pt-br`` or ``ru``: one of
    :data:`LANGUAGES`, else ``default``."""
    primary = (code or "").strip().lower().replace("_", "-").split("-", 1)[0]
    return primary if primary in LANGUAGES else default


# Where a platform says nothing about the guest's language (WhatsApp), their number's
# country is the best guess: the countries where one of LANGUAGES is the main language.
_REGION_LANGUAGE = {
    **dict.fromkeys(
        [
            "ES",
            "MX",
            "AR",
            "CO",
            "CL",
            "PE",
            "VE",
            "EC",
            "GT",
            "CU",
            "BO",
            "DO",
            "HN",
            "PY",
            "SV",
            "NI",
            "CR",
            "PA",
            "UY",
            "PR",
            "GQ",
        ],
        "es",
    ),
    **dict.fromkeys(["BR", "PT", "AO", "MZ", "CV", "GW", "ST", "TL"], "pt"),
    **dict.fromkeys(
        ["FR", "MC", "SN", "CI", "ML", "BF", "NE", "TG", "BJ", "GA", "CG", "CD", "CM", "MG", "HT"],
        "fr",
    ),
    **dict.fromkeys(["DE", "AT", "LI"], "de"),
    **dict.fromkeys(["RU", "BY", "KZ", "KG"], "ru"),
}


def language_of_phone(number: str | None, default: str = "en") -> str:
    """The language most people speak in the country of ``number`` (E.164, or digits
    as WhatsApp gives them), if it is one of :data:`LANGUAGES`; else ``default``."""
    digits = "".join(ch for ch in number or "" if ch.isdigit())
    if not digits:
        return default
    try:
        parsed = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return default
    region = phonenumbers.region_code_for_number(parsed)
    return _REGION_LANGUAGE.get(region or "", default)


@dataclass(frozen=True)
class ConversationRules:
    """What a channel asks for and how long it remembers."""

    required: tuple[str, ...] = ("name", "email", "phone")
    region: str | None = None  # ISO country for numbers typed without +
    ttl: float = 3600.0  # seconds after the guest's last message
    contact_button: bool = False  # the phone is asked with a "share my number" button


@dataclass(frozen=True)
class Conversation:
    """What one guest has given so far, and what was asked last."""

    channel: str
    chat_id: str
    language: str
    fields: Mapping[str, str]  # normalised name / email / phone (E.164)
    asking: str | None
    started_at: float
    updated_at: float
    expires_at: float

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def as_json(self) -> dict[str, Any]:
        return {
            "language": self.language,
            "fields": dict(self.fields),
            "asking": self.asking,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_json(
        cls, channel: str, chat_id: str, data: Mapping[str, Any], expires_at: float
    ) -> Conversation:
        fields = data.get("fields") if isinstance(data.get("fields"), dict) else {}
        asking = data.get("asking")
        return cls(
            channel=channel,
            chat_id=chat_id,
            language=language_of(str(data.get("language") or "")),
            fields={str(k): str(v) for k, v in (fields or {}).items() if v},
            asking=str(asking) if asking in ASK_ORDER else None,
            started_at=float(data.get("started_at") or 0.0),
            updated_at=float(data.get("updated_at") or 0.0),
            expires_at=expires_at,
        )


@dataclass(frozen=True)
class Incoming:
    """One message from the guest, as the channel read it."""

    chat_id: str
    language: str | None = None  # the platform's language tag, if it says
    text: str | None = None  # what they typed (a command's arguments, without the command)
    command: str | None = None  # "start", "cancel", "help", "contact" or None
    shared: Mapping[str, str | None] | None = None  # a contact card: name / phone / email
    shared_own: bool = True  # the card is the guest's own (Telegram: user_id == from.id)
    known: Mapping[str, str | None] = field(default_factory=dict)  # profile name, WA number


@dataclass(frozen=True)
class Reply:
    """A message to send: a text key of :mod:`adapter.core.conversation_text` and its
    values; ``ask`` names the field this message asks for (Telegram adds the button)."""

    key: str
    values: Mapping[str, str] = field(default_factory=dict)
    ask: str | None = None

    def text(self, language: str) -> str:
        return render(self.key, language, self.values)


@dataclass(frozen=True)
class Step:
    """What one message leads to."""

    conversation: Conversation | None  # to keep; None: delete what was kept
    replies: tuple[Reply, ...]
    language: str
    complete: Mapping[str, str] | None = None  # the contact to register, once valid


def _normalised(name: str, value: str, region: str | None) -> str:
    if name == "email":
        return normalize_email(value)
    if name == "phone":
        return normalize_phone(_plus(value), default_region=region)[0]
    return normalize_name(value)


def _plus(value: str) -> str:
    """A number a platform gives as digits only (Telegram's ``14155552671``, WhatsApp's
    ``wa_id``) is international: give it its ``+``."""
    text = value.strip()
    return "+" + text if text.isdigit() and len(text) > 6 else text


def _take_known(
    fields: dict[str, str], given: Mapping[str, str | None], region: str | None, *, force: bool
) -> list[str]:
    """Add what the platform knows (``force``: what a card says, replacing); the fields
    whose value could not be used."""
    bad = []
    for name in ASK_ORDER:
        value = given.get(name)
        if not value or not str(value).strip() or (name in fields and not force):
            continue
        try:
            fields[name] = _normalised(name, str(value), region)
        except FieldError:
            bad.append(name)
    return bad


def _take_text(
    fields: dict[str, str],
    text: str,
    *,
    asking: str | None,
    command: str | None,
    rules: ConversationRules,
) -> tuple[bool, list[Reply]]:
    """What the typed text gives: emails and phones always, the name only when it was
    asked for (or given with /contact): "Hola, soy José" is not a name."""
    extraction = extract_contact(text, rules.region)
    took = False
    problems: list[Reply] = []
    wanted = {"email", "phone"}
    if asking == "name" or command == "contact":
        wanted.add("name")
    values = {"name": extraction.name, "email": extraction.email, "phone": extraction.phone}
    for name in ASK_ORDER:
        if name not in wanted:
            continue
        if name in extraction.errors:
            shown = extraction.found.get(name, "")
            problems.append(Reply(f"bad_{name}", {"value": shown[:80]}))
        elif values[name]:
            fields[name] = str(values[name])
            took = True
    return took, problems


def advance(
    current: Conversation | None,
    incoming: Incoming,
    *,
    channel: str,
    now: float,
    rules: ConversationRules,
) -> Step:
    """The next step of the conversation with one guest (see the module docstring)."""
    if current is not None and current.expired(now):
        current = None
    language = language_of(incoming.language, current.language if current else "en")
    if incoming.command == "cancel":
        return Step(None, (Reply("cancelled"),), language)

    fields: dict[str, str] = dict(current.fields) if current else {}
    asking = current.asking if current else None
    replies: list[Reply] = []
    if incoming.command == "help":
        replies.append(Reply("help"))

    _take_known(fields, incoming.known, rules.region, force=False)
    if incoming.shared is not None:
        if incoming.shared_own:
            card = dict(incoming.shared)
            if "name" in fields:
                card.pop("name", None)  # the guest's own card: their name stays as given
            bad = _take_known(fields, card, rules.region, force=True)
            replies.extend(Reply(f"bad_{n}", {"value": str(card[n])[:80]}) for n in bad)
        else:
            replies.append(Reply("not_own_card"))
    if incoming.text and incoming.text.strip():
        took_text, problems = _take_text(
            fields, incoming.text, asking=asking, command=incoming.command, rules=rules
        )
        replies.extend(problems)
        if not took_text and not problems and asking and incoming.command is None:
            replies.append(Reply("not_understood"))

    missing = [name for name in ASK_ORDER if name in rules.required and name not in fields]
    if not missing:
        try:
            contact, _ = validate_contact(
                fields, required=rules.required, default_region=rules.region
            )
        except ContactError as exc:  # cannot happen for normalised values; ask again
            for name in exc.errors:
                fields.pop(name, None)
            missing = [n for n in ASK_ORDER if n in rules.required and n not in fields]
        else:
            registering = Reply("registering", {"name": contact.name})
            return Step(None, (*replies, registering), language, complete=fields)

    if current is None and incoming.command != "help":
        replies.insert(0, Reply("welcome"))  # a new guest: hello first, then the question
    ask = missing[0]
    key = "ask_phone_button" if ask == "phone" and rules.contact_button else f"ask_{ask}"
    replies.append(Reply(key, {"name": fields.get("name", "")}, ask=ask))
    kept = Conversation(
        channel=channel,
        chat_id=incoming.chat_id,
        language=language,
        fields=fields,
        asking=ask,
        started_at=current.started_at if current else now,
        updated_at=now,
        expires_at=now + rules.ttl,
    )
    return Step(kept, tuple(replies), language)
