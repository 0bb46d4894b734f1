"""The contact model and its validation: pure functions, no I/O.

Every channel hands raw strings (as a person typed them) to :func:`validate_contact`,
which either returns a normalised :class:`Contact` or raises :class:`ContactError`
carrying one message per bad field. The messages name the value as given and say
what is wrong, so Slack, forms, webhooks and the CLI can show them as they are.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import email_validator
import phonenumbers

__all__ = [
    "CONTACT_FIELDS",
    "NOT_UNICODE",
    "Contact",
    "ContactError",
    "FieldError",
    "is_valid_unicode",
    "normalize_email",
    "normalize_name",
    "normalize_phone",
    "shown_safely",
    "validate_contact",
]

CONTACT_FIELDS = ("name", "email", "phone")
NAME_MAX_LENGTH = 255
DNS_TIMEOUT = 1.0  # seconds for the optional deliverability check (Slack answers within 3 s)
_QUOTES = "\"'`“”‘’„«»「」"
_WHITESPACE = re.compile(r"\s+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_JOINERS = "\u200c\u200d"  # zero-width non-joiner / joiner: part of Persian and Indic spelling


class FieldError(ValueError):
    """One field's value is not acceptable; the message says why."""


class ContactError(ValueError):
    """The contact as given cannot be registered.

    ``errors`` maps each bad field to a message naming the value as given and why
    it is wrong, e.g. ``{"phone": "'+1 555' is not a valid phone number"}``.
    """

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors: dict[str, str] = dict(errors)
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.errors.items()))

    def as_json(self) -> dict[str, dict[str, str]]:
        return {"errors": dict(self.errors)}


@dataclass(frozen=True)
class Contact:
    """A validated, normalised guest. Absent fields are ``None``."""

    name: str
    email: str | None = None
    phone: str | None = None  # E.164, e.g. "+14155552671"
    phone_extension: str | None = None
    custom_fields: Mapping[str, str] = field(default_factory=dict)

    def merged_with(self, newer: Contact) -> Contact:
        """Everything known: ``newer``'s fields win, absent ones keep ours."""
        return replace(
            self,
            name=newer.name or self.name,
            email=newer.email or self.email,
            phone=newer.phone or self.phone,
            phone_extension=newer.phone_extension if newer.phone else self.phone_extension,
            custom_fields={**self.custom_fields, **newer.custom_fields},
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "email": self.email,
            "phone": self.phone,
            "phone_extension": self.phone_extension,
            "custom_fields": dict(self.custom_fields),
        }


def _shown(value: str) -> str:
    """The value as given, quoted and shortened for an error message."""
    text = value if len(value) <= 80 else value[:77] + "..."
    return repr(text)


def normalize_name(value: str) -> str:
    """Trim, collapse inner whitespace, strip surrounding quotes; reject bad names."""
    if any(unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" for ch in value):
        raise FieldError(f"{_shown(value)} contains control characters")
    if any(unicodedata.category(ch) == "Cf" and ch not in _JOINERS for ch in value):
        # e.g. U+202E (right-to-left override) or U+200B (zero-width space): they hide or
        # reorder what agents see. ZWNJ/ZWJ stay allowed: Persian and Indic names need them.
        raise FieldError(
            f"{_shown(value)} contains invisible formatting characters: retype the name"
        )
    name = _WHITESPACE.sub(" ", value).strip()
    while len(name) >= 2 and name[0] in _QUOTES and name[-1] in _QUOTES:
        name = name[1:-1].strip()
    name = name.strip(_QUOTES + " ")
    if not name:
        raise FieldError("is empty: give the guest's name")
    if len(name) > NAME_MAX_LENGTH:
        raise FieldError(
            f"{_shown(value)} is too long ({len(name)} characters, at most {NAME_MAX_LENGTH})"
        )
    return name


def normalize_email(value: str, *, check_deliverability: bool = False, timeout: float = 1.0) -> str:
    """Validate with email-validator and return its normalised form."""
    return _checked_email(value, check_deliverability=check_deliverability, timeout=timeout)[0]


def _checked_email(value: str, *, check_deliverability: bool, timeout: float) -> tuple[str, bool]:
    """The normalised address, and whether DNS confirmed its domain takes email.

    A DNS server that does not answer within ``timeout`` is not the guest's fault:
    email-validator then accepts the address unchecked (``False`` here).
    """
    text = value.strip()
    if not text:
        raise FieldError("is empty: give an address like name@example.com")
    try:
        if check_deliverability:
            resolver = email_validator.caching_resolver(timeout=timeout)  # type: ignore[arg-type]
            result = email_validator.validate_email(
                text, check_deliverability=True, dns_resolver=resolver
            )
        else:
            result = email_validator.validate_email(text, check_deliverability=False)
    except email_validator.EmailNotValidError as exc:
        reason = str(exc).rstrip(".")
        reason = reason[0].lower() + reason[1:] if reason else "invalid"
        raise FieldError(f"{_shown(value)} is not a valid email address: {reason}") from None
    return result.normalized, bool(check_deliverability and getattr(result, "mx", None))


def normalize_phone(value: str, *, default_region: str | None = None) -> tuple[str, str | None]:
    """Return the number in E.164 and its extension (or ``None``)."""
    text = value.strip()
    if not text:
        raise FieldError("is empty: give a number like +14155552671")
    region = default_region.upper() if default_region else None
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        hint = (
            "write it with its country code, like +14155552671"
            if region is None
            else f"write it with its country code or as a {region} number"
        )
        raise FieldError(f"{_shown(value)} is not a phone number: {hint}") from None
    if not phonenumbers.is_valid_number(number):
        raise FieldError(f"{_shown(value)} is not a valid phone number")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164, (number.extension or None)


def _check_required(required: Iterable[str]) -> frozenset[str]:
    req = frozenset(required)
    unknown = req - set(CONTACT_FIELDS)
    if unknown:
        raise ValueError(f"unknown contact field(s): {', '.join(sorted(unknown))}")
    if "name" not in req or not (req & {"email", "phone"}):
        raise ValueError("required fields must include name and at least one of email, phone")
    return req


NOT_UNICODE = (
    "contains text that is not valid Unicode (a lone UTF-16 surrogate such as \\ud800): "
    "send the text as UTF-8"
)


def is_valid_unicode(text: str) -> bool:
    """True unless ``text`` holds a lone surrogate (U+D800-U+DFFF), which JSON's
    ``\\ud800`` escapes can carry but no UTF-8 page, log or database text can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_safely(text: str) -> str:
    """``text`` with any lone surrogate replaced by U+FFFD, for showing what was stored
    before intake refused them."""
    return text if is_valid_unicode(text) else _SURROGATE.sub("\ufffd", text)


def validate_contact(
    fields: Mapping[str, str | None],
    *,
    required: Iterable[str] = CONTACT_FIELDS,
    default_region: str | None = None,
    check_deliverability: bool = False,
    custom_fields: Mapping[str, str] | None = None,
    drop_invalid_optional: bool = False,
) -> tuple[Contact, dict[str, str]]:
    """Validate raw fields; return the contact and warnings, or raise ContactError.

    ``required`` names the fields that must be present (default all three; a
    deployment may relax it, never below name plus one of email/phone). Even when
    email and phone are both optional, at least one of them must be given.

    Every problem is reported at once. With ``drop_invalid_optional`` an invalid
    value in an optional field is dropped and reported as a warning instead.
    """
    req = _check_required(required)
    errors: dict[str, str] = {}
    warnings: dict[str, str] = {}
    values: dict[str, str | None] = {}
    extension: str | None = None

    for name in CONTACT_FIELDS:
        raw = fields.get(name)
        if raw is None or not str(raw).strip():
            if name in req:
                errors[name] = "is required"
            values[name] = None
            continue
        raw = str(raw)
        if not is_valid_unicode(raw):
            errors[name] = NOT_UNICODE
            values[name] = None
            continue
        try:
            if name == "name":
                values[name] = normalize_name(raw)
            elif name == "email":
                values[name], checked = _checked_email(
                    raw, check_deliverability=check_deliverability, timeout=DNS_TIMEOUT
                )
                if check_deliverability and not checked:
                    warnings[name] = (
                        f"the domain of {_shown(raw)} could not be checked (DNS did not answer "
                        f"within {DNS_TIMEOUT:g} s): accepted unchecked"
                    )
            else:
                values[name], extension = normalize_phone(raw, default_region=default_region)
        except FieldError as exc:
            values[name] = None
            if drop_invalid_optional and name not in req:
                warnings[name] = f"{exc} (dropped)"
            else:
                errors[name] = str(exc)

    for key, value in (custom_fields or {}).items():
        if not is_valid_unicode(str(key)) or not is_valid_unicode(str(value)):
            errors[f"custom_fields.{shown_safely(str(key))}"] = NOT_UNICODE
    if not errors and values["email"] is None and values["phone"] is None:
        errors["email"] = "is required when no phone is given"
        errors["phone"] = "is required when no email is given"
    if errors:
        raise ContactError(errors)
    name_value = values["name"]
    assert name_value is not None  # required, checked above
    contact = Contact(
        name=name_value,
        email=values["email"],
        phone=values["phone"],
        phone_extension=extension if values["phone"] else None,
        custom_fields={str(k): str(v) for k, v in (custom_fields or {}).items() if str(v).strip()},
    )
    return contact, warnings
