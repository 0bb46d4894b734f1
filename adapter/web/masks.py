"""How the admin page shows contact details: always masked, never in full.

``C**** D**`` for a name, ``c***@example.com`` for an email, ``+1 *** *** **71`` for a phone,
and the value a field error quotes masked the same way. (The full record is
``GET /deliveries/{id}`` with ``Authorization: Bearer $ADMIN_TOKEN``.) Log redaction,
:func:`adapter.ops.logs.redact_text`, covers the rest of an error's text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from adapter.ops.logs import redact_text

__all__ = ["mask_email", "mask_message", "mask_name", "mask_phone", "masked_fields"]


def _mask_word(word: str) -> str:
    return word[:1] + "*" * (len(word) - 1)


def mask_name(name: str | None) -> str:
    """``Chris Doe`` → ``C**** D**``."""
    if not name or not str(name).strip():
        return ""
    return " ".join(_mask_word(w) for w in str(name).split())


def mask_email(email: str | None) -> str:
    """``chris@example.com`` → ``c***@example.com``."""
    if not email or not str(email).strip():
        return ""
    local, at, domain = str(email).strip().rpartition("@")
    if not at:
        return _mask_word(domain[:1]) + "***"
    return f"{local[:1]}***@{domain}"


def mask_phone(phone: str | None) -> str:
    """``+14155552671`` → ``+1 *** *** **71``: country code and the last two digits."""
    if not phone or not str(phone).strip():
        return ""
    import phonenumbers

    text = str(phone).strip()
    prefix = ""
    try:
        number = phonenumbers.parse(text, None)
        digits = phonenumbers.national_significant_number(number)
        prefix = f"+{number.country_code} "
    except phonenumbers.NumberParseException:
        digits = re.sub(r"\D", "", text)
    if len(digits) <= 2:
        return prefix + "*" * len(digits)
    masked = "*" * (len(digits) - 2) + digits[-2:]
    groups = []
    while len(masked) > 4:
        groups.append(masked[:3])
        masked = masked[3:]
    groups.append(masked)
    return prefix + " ".join(groups)


def _mask_other(value: str | None) -> str:
    return _mask_word(value) + "***" if value else ""


_MASKS: dict[str, Callable[[str | None], str]] = {
    "name": mask_name,
    "email": mask_email,
    "phone": mask_phone,
}
_QUOTED = re.compile(r"""^(?P<q>['"])(?P<value>.*?)(?P=q)(?P<rest>.*)$""", re.DOTALL)


def mask_message(fieldname: str, message: str) -> str:
    """A field error names the value as given (``'chris@' is not…``): mask that value."""
    match = _QUOTED.match(message)
    if match is None:
        return redact_text(message)
    mask = _MASKS.get(fieldname, _mask_other)
    return repr(mask(match["value"])) + redact_text(match["rest"])


def masked_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """A delivery's contact fields as the admin page shows them: each one masked."""
    custom = fields.get("custom_fields") or {}
    return {
        "name": mask_name(fields.get("name")),
        "email": mask_email(fields.get("email")),
        "phone": mask_phone(fields.get("phone")),
        "phone_extension": "***" if fields.get("phone_extension") else "",
        "custom_fields": ", ".join(
            f"{key}: {_mask_word(str(value))}" for key, value in sorted(custom.items())
        ),
    }
