"""Pull a contact (name, email, phone) out of free text as people type it.

Sales and support people write things like ``Chris Doe chris@example.com +1 415 555 2671``,
``name: Chris Doe; email: chris@example.com`` or ``"Chris Doe" | 00 44 20 7946 0958``.
:func:`extract_contact` finds the email (anything containing ``@``), the phone number
(``phonenumbers.PhoneNumberMatcher`` plus any other run of digits, so a short or broken
number is reported instead of ignored), optional labels (``name``, ``email``, ``e-mail``,
``mail``, ``phone``, ``tel``, ``mobile`` …, followed by ``:`` or ``=``), and takes what is
left as the name. Slack's auto-links (``<mailto:a@b.com|a@b.com>``) are unwrapped first.

It is pure and never raises: every problem lands in :attr:`Extraction.errors`, with the
same message style as :mod:`adapter.contact`. Nothing is invented: a field that is not in
the text is ``None`` and has no error (required fields are :func:`validate_contact`'s job).
Two different values for one field are an error, never a silent pick.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import phonenumbers

from adapter.core.contact import (
    CONTACT_FIELDS,
    Contact,
    ContactError,
    FieldError,
    normalize_email,
    normalize_name,
    normalize_phone,
    validate_contact,
)

__all__ = ["Extraction", "extract_contact"]

log = logging.getLogger(__name__)

_SEPARATORS = ",;|\n"
_SLACK_LINK = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")
# Slack markup that is never part of a contact: mentions (<@U…>, <#C…>, <!here>, <!subteam^…>)
# and web links (a plain link is not a name); mailto:/tel: links and <a@b.com> are kept.
_SLACK_DROPPED = re.compile(r"[@#!]|[a-z][a-z0-9+.\-]*://", re.IGNORECASE)
_LABEL = re.compile(
    r"(?<![^\s,;|])"
    r"(?P<label>full[ _-]?name|name|e-?mail(?:[ _-]?address)?|mailto|mail"
    r"|phone(?:[ _-]?number)?|telephone|tel|mobile|cell)"
    r"[ \t]*[:=][ \t]*",
    re.IGNORECASE,
)
_BARE_LABEL_BEFORE = {
    "email": re.compile(r"(?<![^\s,;|])(?:e-?mail|mail)[ \t]*$", re.IGNORECASE),
    "phone": re.compile(r"(?<![^\s,;|])(?:phone|tel|telephone|mobile|cell)[ \t]*$", re.IGNORECASE),
}
_CLOSING_QUOTE = {'"': '"', "'": "'", "“": "”", "”": "”", "‘": "’", "«": "»", "„": "“"}
_EMAIL = re.compile(r"[^\s,;|<>()\[\]{}\"“”‘’«»:]*@[^\s,;|<>()\[\]{}\"“”‘’«»:]*")
_EMAIL_EDGE_LEAD = "'`."
_EMAIL_EDGE_TRAIL = "'`.!?"
_MARKUP = "*_~"  # Slack bold, italic, strike: never end an address; start one only if paired
_IDD_PREFIX = re.compile(  # 00 / 011 / 0011 starting a number, not inside one
    r"(?<![\w+).\-/])(?<![\d).\-/][ \t])(?P<idd>0011|011|00)(?P<sep>[ \t.\-]?)(?=\d)"
)
_DIGIT_RUN = re.compile(r"(?<!\w)(?:\+[ \t]*)?[(\[]?\d(?:[\d \t().\-/\[\]]*[\d)\]])?(?!\w)")
_PIECE_EDGE = " \t\r,;|-–—:/\\·•*_~=&.!?"
_EMPTY_BRACKETS = re.compile(r"\(\s*\)|<\s*>|\[\s*\]|\{\s*\}")
_WHITESPACE = re.compile(r"\s+")
_QUOTES = "\"'`“”‘’„«»「」"
_PLURAL = {"name": "names", "email": "emails", "phone": "phone numbers"}


@dataclass(frozen=True)
class Extraction:
    """What was found in the text: normalised values, errors, and the raw substrings."""

    name: str | None  # normalised (normalize_name) or None
    email: str | None  # normalised (normalize_email) or None
    phone: str | None  # E.164 or None
    phone_extension: str | None
    errors: dict[str, str]  # field -> message naming the value as given and why
    found: dict[str, str]  # field -> the substring as typed, for every field seen

    def fields(self) -> dict[str, str]:
        """The raw strings to hand to ``validate_contact`` (or to pre-fill a form).

        These are the values as typed, except that a phone written with an
        international dialling prefix (``00 44 …``, ``011 44 …``) gets ``+`` instead,
        so ``validate_contact`` reads it the same way without a default region.
        """
        out = dict(self.found)
        raw_phone = out.get("phone")
        if raw_phone is not None and self.phone is not None:
            plus = _plus_prefixed(raw_phone, None)
            if _digits(plus).startswith(_digits(self.phone)):
                out["phone"] = plus
        return out

    def check(
        self, *, required: Sequence[str], default_region: str | None
    ) -> tuple[Contact | None, dict[str, str]]:
        """The contact, or every problem at once: what validation says, overridden by what
        extraction saw (e.g. two different emails in the text), in field order."""
        contact: Contact | None = None
        found: dict[str, str] = {}
        try:
            contact, _ = validate_contact(
                self.fields(), required=required, default_region=default_region
            )
        except ContactError as exc:
            found = dict(exc.errors)
        found.update(self.errors)
        if not found:
            return contact, {}
        ordered = {k: found[k] for k in CONTACT_FIELDS if k in found}
        ordered.update({k: v for k, v in found.items() if k not in ordered})
        return None, ordered


@dataclass(frozen=True)
class _Label:
    field: str
    start: int  # where the label word starts
    value_start: int
    value_end: int
    end: int  # after the closing quote, if the value was quoted


@dataclass(frozen=True)
class _Candidate:
    raw: str
    value: str | None  # normalised, or None when invalid
    extension: str | None
    error: str | None

    @property
    def key(self) -> str:
        """Equal keys mean the same value (so giving it twice is fine)."""
        if self.value is None:
            return "raw:" + _WHITESPACE.sub(" ", self.raw.strip())
        return f"ok:{self.value.casefold()};{self.extension or ''}"


class _Text:
    """The text plus a mask of what has been consumed (same length, spaces over it)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._mask = list(text)
        self._joined: str | None = text

    @property
    def masked(self) -> str:
        if self._joined is None:
            self._joined = "".join(self._mask)
        return self._joined

    def before(self, end: int, width: int) -> str:
        """Up to ``width`` masked characters before ``end`` (cheap, for look-behinds)."""
        return "".join(self._mask[max(0, end - width) : end])

    def consume(self, start: int, end: int) -> None:
        self._mask[start:end] = " " * (end - start)
        self._joined = None


def extract_contact(text: str, default_region: str | None = None) -> Extraction:
    """Find name, email and phone in ``text``; never raises (see module docstring)."""
    try:
        return _extract(str(text), default_region.upper() if default_region else None)
    except Exception:  # pragma: no cover - a safety net; the fuzz tests never reach it
        log.exception("contact extraction failed")
        return Extraction(
            name=None,
            email=None,
            phone=None,
            phone_extension=None,
            errors={"text": "could not be read: give the name, email and phone separately"},
            found={},
        )


def _extract(raw_text: str, region: str | None) -> Extraction:
    doc = _Text(_unwrap_slack_links(raw_text))
    labels = _find_labels(doc.text)
    for label in labels:
        doc.consume(label.start, label.value_start)
        doc.consume(label.value_end, label.end)

    emails = _take_emails(doc, labels)
    phones = _take_phones(doc, labels, region)
    names = _take_names(doc, labels)

    errors: dict[str, str] = {}
    found: dict[str, str] = {}
    email, _ = _resolve("email", emails, errors, found)
    phone, extension = _resolve("phone", phones, errors, found)
    name, _ = _resolve("name", names, errors, found)
    return Extraction(
        name=name,
        email=email,
        phone=phone,
        phone_extension=extension if phone else None,
        errors=errors,
        found=found,
    )


# --- Slack links and labels -------------------------------------------------------------


def _unwrap_slack_links(text: str) -> str:
    """``<x|label>`` becomes ``label`` and ``<x>`` becomes ``x``; mentions and web links go."""

    def unwrap(match: re.Match[str]) -> str:
        if _SLACK_DROPPED.match(match.group(1)):
            return " "
        label = match.group(2)
        return label if label is not None else match.group(1)

    return _SLACK_LINK.sub(unwrap, text)


def _label_field(word: str) -> str:
    word = word.casefold()
    if word.endswith("name"):
        return "name"
    if "mail" in word:
        return "email"
    return "phone"


def _find_labels(text: str) -> list[_Label]:
    matches = list(_LABEL.finditer(text))
    labels: list[_Label] = []
    for i, match in enumerate(matches):
        if labels and match.start() < labels[-1].end:
            continue  # inside the previous label's quoted value
        limit = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        labels.append(_label_at(text, match, limit))
    return labels


def _label_at(text: str, match: re.Match[str], limit: int) -> _Label:
    field = _label_field(match.group("label"))
    start = match.end()
    opening = text[start : start + 1]
    if opening in _CLOSING_QUOTE:
        closing = re.compile(re.escape(_CLOSING_QUOTE[opening]) + r"(?=[\s,;|]|$)")
        close = closing.search(text, start + 1)
        if close is not None:
            return _Label(field, match.start(), start + 1, close.start(), close.end())
    end = start
    while end < limit and text[end] not in _SEPARATORS:
        end += 1
    return _Label(field, match.start(), start, end, end)


def _unlabeled_value(doc: _Text, label: _Label) -> tuple[int, int] | None:
    """The span of what is still unconsumed in a label's value, stripped, if anything."""
    part = doc.masked[label.value_start : label.value_end]
    if not part.strip():
        return None
    start = label.value_start + (len(part) - len(part.lstrip()))
    end = label.value_end - (len(part) - len(part.rstrip()))
    return start, end


def _consume_bare_label(doc: _Text, field: str, start: int) -> None:
    """Also consume a label word written without ``:`` right before a value."""
    window = doc.before(start, 24)
    match = _BARE_LABEL_BEFORE[field].search(window)
    if match is not None and (match.start() > 0 or len(window) == start):
        doc.consume(start - len(window) + match.start(), start)


# --- emails -----------------------------------------------------------------------------


def _email_spans(masked: str) -> Iterator[tuple[int, int]]:
    for match in _EMAIL.finditer(masked):
        start, end = match.span()
        while start < end and masked[start] in _EMAIL_EDGE_LEAD:
            start += 1
        while end > start and masked[end - 1] in _EMAIL_EDGE_TRAIL + _MARKUP:
            if masked[end - 1] in _MARKUP and masked[start] == masked[end - 1]:
                start += 1  # *a@b.com*, _a@b.com_, ~a@b.com~
            end -= 1
        while start < end and masked[start] in _EMAIL_EDGE_LEAD:
            start += 1
        if "@" in masked[start:end]:
            yield start, end


def _take_emails(doc: _Text, labels: list[_Label]) -> list[_Candidate]:
    spans = list(_email_spans(doc.masked))
    for label in labels:
        if label.field == "email" and not any(_inside(s, label) for s in spans):
            span = _unlabeled_value(doc, label)
            if span is not None:
                spans.append(span)
    spans.sort()
    for start, end in spans:
        doc.consume(start, end)
        _consume_bare_label(doc, "email", start)
    return [_checked(doc.text[s:e], normalize_email) for s, e in spans]


def _inside(span: tuple[int, int], label: _Label) -> bool:
    return label.value_start <= span[0] and span[1] <= label.value_end


# --- phones -----------------------------------------------------------------------------


def _idd_rewritten(text: str, region: str | None) -> str:
    """Replace ``00``/``011``/``0011`` dialling prefixes by ``+``, keeping every offset."""

    def plus(match: re.Match[str]) -> str:
        idd, sep = match.group("idd"), match.group("sep")
        if idd == "011" and not sep and not _is_nanp(region):
            return match.group(0)  # e.g. 0113 496 0000 is a Leeds number, not 011 3…
        width = len(idd) + len(sep)
        return " " * (width - 1) + "+"

    return _IDD_PREFIX.sub(plus, text)


def _is_nanp(region: str | None) -> bool:
    return region is None or phonenumbers.country_code_for_region(region) == 1


def _plus_prefixed(raw: str, region: str | None) -> str:
    """``raw`` with a leading international dialling prefix written as ``+``."""
    stripped = raw.strip()
    rewritten = _idd_rewritten(stripped, region)
    if rewritten == stripped or not rewritten.lstrip().startswith("+"):
        return raw
    return rewritten.lstrip()


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _phone_spans(masked: str, region: str | None) -> Iterator[tuple[int, int]]:
    """Numbers the matcher sees (plus their dialling prefix), then any other digit run."""
    rewritten = _idd_rewritten(masked, region)
    remaining = list(rewritten)
    leniency = phonenumbers.Leniency.POSSIBLE
    for match in phonenumbers.PhoneNumberMatcher(rewritten, region, leniency=leniency):
        start = match.start
        while start > 0 and rewritten[start - 1] == " " and masked[start - 1] != " ":
            start -= 1  # the spaces stand for the 00 / 011 that was typed
        remaining[start : match.end] = " " * (match.end - start)
        yield start, match.end
    for run in _DIGIT_RUN.finditer("".join(remaining)):
        yield run.span()


def _take_phones(doc: _Text, labels: list[_Label], region: str | None) -> list[_Candidate]:
    spans = sorted(_phone_spans(doc.masked, region))
    for label in labels:
        if label.field == "phone" and not any(_inside(s, label) for s in spans):
            span = _unlabeled_value(doc, label)
            if span is not None:
                spans.append(span)
    spans.sort()
    for start, end in spans:
        doc.consume(start, end)
        _consume_bare_label(doc, "phone", start)

    return [_checked_phone(doc.text[s:e], region) for s, e in spans]


# --- names ------------------------------------------------------------------------------


def _clean_piece(piece: str) -> str:
    """A leftover piece without empty brackets, surrounding quotes and dangling punctuation."""
    piece = _EMPTY_BRACKETS.sub(" ", piece)
    piece = _WHITESPACE.sub(" ", piece)
    piece = piece.lstrip(_PIECE_EDGE + _QUOTES + ")]}>").rstrip(_PIECE_EDGE + _QUOTES + "([{<")
    return piece if any(ch.isalnum() for ch in piece) else ""


def _take_names(doc: _Text, labels: list[_Label]) -> list[_Candidate]:
    candidates: list[_Candidate] = []
    for label in labels:
        if label.field != "name":
            continue
        value = _clean_piece(doc.masked[label.value_start : label.value_end])
        doc.consume(label.value_start, label.value_end)
        if value:
            candidates.append(_checked(value, normalize_name))
    pieces = (_clean_piece(p) for p in re.split(r"[,;|\n]", doc.masked))
    rest = ", ".join(p for p in pieces if p)
    if rest:
        candidates.append(_checked(rest, normalize_name))
    return candidates


# --- validation and resolution ----------------------------------------------------------


def _checked(raw: str, normalize: Callable[[str], str]) -> _Candidate:
    try:
        return _Candidate(raw, normalize(raw), None, None)
    except FieldError as exc:
        return _Candidate(raw, None, None, str(exc))


def _checked_phone(raw: str, region: str | None) -> _Candidate:
    given = _plus_prefixed(raw, region)
    try:
        value, extension = normalize_phone(given, default_region=region)
    except FieldError as exc:
        # normalize_phone names the value it was given; name the one that was typed.
        message = str(exc).replace(_shown(given.strip()), _shown(raw.strip()), 1)
        return _Candidate(raw, None, None, message)
    return _Candidate(raw, value, extension, None)


def _shown(value: str) -> str:
    text = value if len(value) <= 80 else value[:77] + "..."
    return repr(text)


def _conflict(field: str, raws: list[str]) -> str:
    shown = [_shown(raw.strip()) for raw in raws]
    count = "two" if len(shown) == 2 else str(len(shown))
    listed = ", ".join(shown[:-1]) + " and " + shown[-1]
    return f"{count} different {_PLURAL[field]} given: {listed}; give one"


def _resolve(
    field: str, candidates: list[_Candidate], errors: dict[str, str], found: dict[str, str]
) -> tuple[str | None, str | None]:
    """Record what was found for ``field``; return its value and extension, if valid."""
    if not candidates:
        return None, None
    found[field] = candidates[0].raw.strip()
    distinct: dict[str, _Candidate] = {}
    for candidate in candidates:
        distinct.setdefault(candidate.key, candidate)
    if len(distinct) > 1:
        errors[field] = _conflict(field, [c.raw for c in distinct.values()])
        return None, None
    first = candidates[0]
    if first.error is not None:
        errors[field] = first.error
    return first.value, first.extension
