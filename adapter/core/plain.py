"""Outcomes in plain words: why a delivery is where it is, as one short readable text.

Pure: used by the admin pages, the CSV export and ``deliveries list``. A rejected delivery's
reason is its field errors (there is no "last error": nothing was sent to Rocket.Chat); an
error that carries an HTML error page (``answered 503: <html><body><h1>…``) is shown as its
text, without markup, cut to a sentence.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

from adapter.core.redact import mask_message, redact_text

__all__ = ["SENTENCE_MAX", "plain_error", "reason_of", "short_reference"]

SENTENCE_MAX = 200  # characters of an error page's text kept

_MARKUP = re.compile(r"</?[a-zA-Z!][^<>]*>")
_DROPPED = re.compile(
    r"<\s*(script|style|head|title)\b.*?<\s*/\s*\1\s*>", re.IGNORECASE | re.DOTALL
)
_BLOCK_END = re.compile(r"<\s*(/\s*(h[1-6]|p|div|li|tr|center|pre)|br\s*/?|hr\s*/?)\s*>", re.I)
_CUT_TAG = re.compile(r"<[^>]*$")  # a tag the 200-byte cut of the answer ended inside
_SPACE = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def plain_error(text: str, *, limit: int = SENTENCE_MAX) -> str:
    """``text`` without markup: the words of an HTML error page after what precedes it
    (``… answered 503: ``), cut after the page's first sentence (and at ``limit``
    characters); text without markup is returned as it is."""
    found = _MARKUP.search(text)
    if found is None:
        return text
    prefix = text[: found.start()].strip()
    words = _CUT_TAG.sub("", _DROPPED.sub(" ", text[found.start() :]))
    words = _BLOCK_END.sub(". ", words)
    words = html.unescape(_MARKUP.sub(" ", words))
    words = _SPACE.sub(" ", words).strip()
    words = re.sub(r"(\.\s*){2,}", ". ", words).strip(" .")
    words = re.sub(r"([.!?:])\.(\s|$)", r"\1\2", words + ".").strip()
    first = _SENTENCE_END.split(words, maxsplit=1)[0]
    if len(first) > limit:
        first = first[: limit - 1].rstrip() + "…"
    return f"{prefix} {first}".strip() if first != "." else prefix or "(an empty error page)"


def reason_of(
    status: str,
    last_error: str | None,
    errors: Mapping[str, Any] | None,
    *,
    masked: bool = True,
) -> str:
    """Why a delivery is where it is, in one line: a rejected delivery's field errors
    (``email: 'c***@' is not a valid email address…``), else its last error in plain
    text. ``masked``: the values quoted in field errors masked (the pages and logs), or as
    given (the export, for the admin who asked for personal data)."""
    if status == "rejected" and errors:
        parts = [
            f"{field}: {mask_message(field, str(text)) if masked else str(text)}"
            for field, text in errors.items()
        ]
        return "rejected: " + "; ".join(parts)
    if not last_error:
        return ""
    text = plain_error(last_error)
    return redact_text(text) if masked else text


def short_reference(delivery_id: str) -> str:
    """The reference a person is shown after sending: the first 8 characters of the
    delivery id, upper-case, in two groups (``3F2A-9C1B``); the admin page's search finds
    the delivery by it."""
    head = delivery_id[:8].upper()
    return f"{head[:4]}-{head[4:]}" if len(head) == 8 else head
