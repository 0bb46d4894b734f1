"""Pure helpers for reading webhook payloads: what every provider module does the same way.

A provider module in ``handlers/`` knows the shape of its own payload; the steps they all
share live here, free of I/O and of the web framework, so a channel module depends only
on the core:

* the body as a JSON object (:func:`json_object`), its event type (:func:`event_kind`),
  members of the expected type (:func:`member`), optional nested values (:func:`dig`) —
  a wrong shape is a :class:`PayloadError` saying what was expected;
* values as text: :func:`scalar_text` (a chat widget's ids, names, emails),
  :func:`text_value` (a form answer, lists joined) and :func:`custom_value` (an extra
  kept as a custom field, short);
* the ``<PREFIX>_FIELD_NAME`` / ``_EMAIL`` / ``_PHONE`` settings: comma-separated
  alternatives, read by :func:`mapped_value` for keyed attributes (chat widgets) and by
  :func:`map_answers` for a list of form answers (with defaults by field type and label);
* small judgements: :func:`real_name` (a placeholder is no name), :func:`phone_in_text`,
  :func:`no_contact_reason`, and :func:`stringified` (what JavaScript SDKs sign).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import phonenumbers

__all__ = [
    "EMAIL_LABELS",
    "FIRST_NAME_LABELS",
    "LAST_NAME_LABELS",
    "MAX_CUSTOM_VALUE",
    "NAME_LABELS",
    "NO_CONTACT",
    "PHONE_WORDS",
    "TOO_DEEP",
    "Answer",
    "Lookup",
    "PayloadError",
    "consent_answer",
    "consent_given",
    "custom_value",
    "dig",
    "event_kind",
    "json_kind",
    "json_object",
    "map_answers",
    "mapped_value",
    "mapping_setting",
    "member",
    "no_contact_reason",
    "norm",
    "phone_in_text",
    "real_name",
    "scalar_text",
    "setting_list",
    "stringified",
    "text_value",
]

Lookup = Callable[[str], str | None]  # a settings lookup: name -> value, None when unset

MAX_CUSTOM_VALUE = 1000
NO_CONTACT = "no email or phone in the event"
TOO_DEEP = "nested too deeply"


class PayloadError(ValueError):
    """The (authentic) payload does not have the shape the provider documents."""


# ---------------------------------------------------------------------------------------------
# JSON shape


def json_kind(value: object) -> str:
    """The JSON type of a parsed value, as named in error messages ("an array" and so on)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def json_object(body: bytes, expected: str | None = None) -> dict[str, Any]:
    """The body as a JSON object, else :class:`PayloadError`.

    Without ``expected`` (chat widgets) the body may be in any encoding :func:`json.loads`
    detects, and the errors are short. With ``expected`` (form tools: a sketch of the
    payload) the body must be UTF-8 as RFC 8259 requires, and every error starts with
    ``expected <expected>;`` and says what was found instead.
    """
    prefix = f"expected {expected}; " if expected is not None else ""
    try:
        data = json.loads(body if expected is None else body.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        why = (
            f"the body is not valid JSON ({exc})"
            if expected is None
            else "the body is not UTF-8 text"
        )
        raise PayloadError(prefix + why) from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"{prefix}the body is not valid JSON ({exc})") from None
    except RecursionError:
        raise PayloadError(f"{prefix}the body is not valid JSON ({TOO_DEEP})") from None
    except (ValueError, TypeError) as exc:  # e.g. an integer of more than 4300 digits
        raise PayloadError(f"{prefix}the body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        if expected is None:
            raise PayloadError("expected a JSON object")
        raise PayloadError(f"{prefix}got a JSON {json_kind(data)}")
    return data


def event_kind(data: Mapping[str, Any], key: str, expected: str) -> str:
    """``data[key]``, the event's type: a string, else :class:`PayloadError` saying what was
    expected and whether the key is missing or not a string."""
    value = data.get(key)
    if not isinstance(value, str):
        got = "missing" if key not in data else "not a string"
        raise PayloadError(f"expected {expected}; {key} is {got}")
    return value


def stringified(body: bytes) -> bytes | None:
    """``JSON.stringify(JSON.parse(body))``, what JavaScript SDKs sign instead of the raw body.

    None when the body is not JSON, or when it is already exactly that (nothing else to try).
    """
    try:
        compact = json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False)
    except (ValueError, RecursionError):
        return None
    encoded = compact.encode()
    return None if encoded == body else encoded


def member(
    parent: Mapping[str, Any], key: str, kind: type[Any], where: str, *, required: bool = True
) -> Any:
    """``parent[key]`` checked to be a ``kind`` (dict, list, str); None when absent and optional."""
    value = parent.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, kind):
        names: dict[type[Any], str] = {dict: "an object", list: "an array", str: "a string"}
        wanted = names.get(kind, kind.__name__)
        got = "missing" if key not in parent else f"a JSON {json_kind(value)}"
        raise PayloadError(f"expected {where}.{key} to be {wanted}, got {got}")
    return value


def dig(data: object, *path: str) -> Any:
    """The value at ``path`` (keys from ``data``), or None where an object is missing."""
    value: Any = data
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


# ---------------------------------------------------------------------------------------------
# Values as text


def scalar_text(value: object) -> str | None:
    """A JSON string (stripped) or number as text; None for empty text, null, booleans,
    arrays and objects."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


def text_value(value: object, where: str = "") -> str | None:
    """A scalar answer as text (lists joined); None when empty; objects are refused."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, list):
        parts = [text_value(item, where) for item in value]
        joined = ", ".join(p for p in parts if p)
        return joined or None
    raise PayloadError(
        f"expected {where or 'the answer'} to be text, got a JSON {json_kind(value)}"
    )


def custom_value(value: object) -> str | None:
    """An extra kept as a custom field: short text, or nothing."""
    try:
        text = text_value(value)
    except PayloadError:
        return None
    if text is None:
        return None
    return text.strip()[:MAX_CUSTOM_VALUE] or None


def real_name(name: str | None, placeholder: re.Pattern[str]) -> str | None:
    """``name``, unless it is one the provider invents for anonymous visitors."""
    return None if name is None or placeholder.fullmatch(name) else name


def phone_in_text(text: object) -> str | None:
    """The one phone number written in international form in free text, else None."""
    if not isinstance(text, str) or not text:
        return None
    found = {
        phonenumbers.format_number(m.number, phonenumbers.PhoneNumberFormat.E164): m.raw_string
        for m in phonenumbers.PhoneNumberMatcher(text, None)
    }
    return next(iter(found.values())) if len(found) == 1 else None


def no_contact_reason(fields: Mapping[str, str | None], reason: str = NO_CONTACT) -> str | None:
    """Why an event is ignored (``reason``) when it carries neither an email nor a phone."""
    if fields.get("email") or fields.get("phone"):
        return None
    return reason


# ---------------------------------------------------------------------------------------------
# <PREFIX>_FIELD_NAME / _EMAIL / _PHONE


def setting_list(lookup: Lookup, name: str) -> tuple[str, ...]:
    """A comma-separated setting as its non-empty items, stripped; empty when not set."""
    return tuple(
        item for item in (part.strip() for part in (lookup(name) or "").split(",")) if item
    )


def mapped_value(lookup: Lookup, setting: str, *sources: object) -> str | None:
    """The first value (:func:`scalar_text`) of the keys ``setting`` names, in the setting's
    order, each looked up in ``sources`` in turn (those that are not objects are skipped)."""
    for key in setting_list(lookup, setting):
        for source in sources:
            if isinstance(source, Mapping) and (value := scalar_text(source.get(key))):
                return value
    return None


_NON_WORD = re.compile(r"[^0-9a-z]+")

NAME_LABELS = frozenset(
    {
        "name",
        "full name",
        "fullname",
        "your name",
        "your full name",
        "contact name",
        "first and last name",
        "name and surname",
        "what is your name",
        "what s your name",
        "what is your full name",
        "what s your full name",
        "nome",
        "nome completo",
        "nombre",
        "nombre completo",
        "nom",
        "nom complet",
        "vollstandiger name",
    }
)
FIRST_NAME_LABELS = frozenset({"first name", "firstname", "given name", "forename", "first"})
LAST_NAME_LABELS = frozenset({"last name", "lastname", "surname", "family name", "last"})
EMAIL_LABELS = frozenset(
    {
        "email",
        "e mail",
        "email address",
        "e mail address",
        "your email",
        "your email address",
        "your e mail",
        "work email",
        "business email",
        "mail",
        "correo",
        "correo electronico",
    }
)
PHONE_WORDS = frozenset(
    {
        "phone",
        "telephone",
        "tel",
        "mobile",
        "cell",
        "cellphone",
        "whatsapp",
        "telefone",
        "telefono",
        "telefon",
        "celular",
        "handy",
    }
)


def norm(label: object) -> str:
    """A label or id as compared: lower case, accents and punctuation folded to spaces."""
    text = unicodedata.normalize("NFKD", str(label)).encode("ascii", "ignore").decode().lower()
    return _NON_WORD.sub(" ", text).strip()


@dataclass(frozen=True)
class Answer:
    """One answered question, as the mapping sees it."""

    ids: tuple[str, ...]  # normalised identifiers: key / ref / id, then label / title
    kind: str  # the provider's field type ("INPUT_EMAIL", "email", "short_text", …)
    value: str | None


def mapping_setting(lookup: Lookup, name: str) -> tuple[tuple[str, ...], ...]:
    """A field-mapping setting: comma-separated alternatives, each one id or several joined by
    ``+`` (``first_name+last_name``), normalised; empty when not set."""
    alternatives = (
        tuple(n for n in (norm(part) for part in alternative.split("+")) if n)
        for alternative in setting_list(lookup, name)
    )
    return tuple(a for a in alternatives if a)


def _has_phone_word(ids: Iterable[str]) -> bool:
    return any(PHONE_WORDS & set(i.split()) for i in ids)


def map_answers(
    answers: Sequence[Answer],
    *,
    lookup: Lookup,
    prefix: str,
    name_kinds: Iterable[str] = (),
    email_kinds: Iterable[str] = (),
    phone_kinds: Iterable[str] = (),
    fallback_name_kinds: Iterable[str] = (),
) -> dict[str, str | None]:
    """Pick name, email and phone from ``answers``.

    ``<PREFIX>_FIELD_NAME`` / ``_EMAIL`` / ``_PHONE`` come first when set: comma-separated
    alternatives (ids, keys, refs or labels), the first one answered wins; ``a+b`` joins
    several answers with a space (first name + last name). When none of them is answered,
    the defaults: by field type (``*_kinds``), then by label (``Name``/``Full name``,
    ``First name`` + ``Last name``, ``Email``, a label with a phone word), then, for the
    name, the first answer of a ``fallback_name_kinds`` type.
    """
    answered = [a for a in answers if a.value is not None]
    name_kinds, email_kinds = frozenset(name_kinds), frozenset(email_kinds)
    phone_kinds, fallback_name_kinds = frozenset(phone_kinds), frozenset(fallback_name_kinds)

    def value_of(key: str) -> str | None:
        return next((a.value.strip() for a in answered if a.value and key in a.ids), None)

    def configured(setting: str) -> str | None:
        for parts in mapping_setting(lookup, f"{prefix}_FIELD_{setting}"):
            values = [v for v in map(value_of, parts) if v]
            if values:
                return " ".join(values)
        return None

    def first(predicate: Callable[[Answer], bool]) -> str | None:
        return next((a.value for a in answered if predicate(a)), None)

    name = configured("NAME") or first(lambda a: a.kind in name_kinds)
    name = name or first(lambda a: bool(NAME_LABELS & set(a.ids)))
    if name is None:
        given = first(lambda a: bool(FIRST_NAME_LABELS & set(a.ids)))
        family = first(lambda a: bool(LAST_NAME_LABELS & set(a.ids)))
        if given or family:
            name = " ".join(v.strip() for v in (given, family) if v)
    if name is None:
        name = first(lambda a: a.kind in fallback_name_kinds)

    email = configured("EMAIL") or first(lambda a: a.kind in email_kinds)
    email = email or first(lambda a: bool(EMAIL_LABELS & set(a.ids)))
    phone = configured("PHONE") or first(lambda a: a.kind in phone_kinds)
    phone = phone or first(lambda a: _has_phone_word(a.ids))
    return {"name": name, "email": email, "phone": phone}


_NO = frozenset({"", "false", "no", "n", "0", "off", "none", "null", "declined", "unchecked"})


def consent_given(value: Any) -> bool:
    """Did the guest agree? ``true``, a ticked checkbox (``on``), ``yes``, ``1``, or a
    chosen label ("I agree…"); not ``false``/``no``/``0``/``off``/empty, nor a missing value."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, list | tuple):
        return any(consent_given(v) for v in value)
    return str(value).strip().lower() not in _NO


def consent_answer(answers: Sequence[Answer], *, lookup: Lookup, prefix: str) -> bool:
    """A form provider's consent question, named by ``<PREFIX>_FIELD_CONSENT`` (ids, keys,
    refs or labels, comma-separated alternatives): answered and agreed? False when the
    setting is unset (REQUIRE_CONSENT then rejects, naming the setting to map)."""
    for parts in mapping_setting(lookup, f"{prefix}_FIELD_CONSENT"):
        for key in parts:
            for answer in answers:
                if key in answer.ids and consent_given(answer.value):
                    return True
    return False
