"""Pull a contact (name, email, phone) out of free text as people type it.

Sales and support people write things like ``Chris Doe chris@example.com +1 415 555 2671``,
``name: Chris Doe; email: chris@example.com``, ``"Chris Doe" | 00 44 20 7946 0958`` or
``please add Donna Moore donna@example.com, thanks!``. :func:`extract_contact` finds the
email (each token containing ``@``, validated whole; a web address is never one), the phone
number (``phonenumbers.PhoneNumberMatcher`` in the default region, plus any other run of
digits, so a short or broken number is reported instead of ignored; dates are not numbers),
optional labels in many languages (:mod:`adapter.core.extract_words`: ``name``, ``correo``,
``телефон``, ``電話`` …, followed by ``:`` or ``=``), ignores other keys (``order=…``; listed
in :attr:`Extraction.warnings`), and takes what is left as the name, without the words people
type around it (:mod:`adapter.core.extract_names`). Slack's links (``<mailto:a@b.com|a@b.com>``,
mentions, web links) are unwrapped or dropped first; other ``<…>`` text is kept as typed.

It is pure and never raises: every problem lands in :attr:`Extraction.errors`, with the
same message style as :mod:`adapter.contact`. Nothing is invented: a field that is not in
the text is ``None`` and has no error (required fields are :func:`validate_contact`'s job).
Two different values for one field are an error, never a silent pick.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

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
from adapter.core.extract_names import (
    clean_piece,
    name_from,
    quoted_name,
    symbols_in,
    trim_invisible,
)
from adapter.core.extract_words import BARE_LABEL_BEFORE, LABEL

__all__ = ["Extraction", "extract_contact"]

log = logging.getLogger(__name__)

_SEPARATORS = ",;|\n，；،؛"
# Slack's own markup: a link Slack made (<mailto:…|…>, <tel:…>, <https://…|…>), a mention
# (<@U…>, <#C…>, <!here>, <!subteam^…>). Anything else in brackets was typed: kept as typed.
_SLACK_LINK = re.compile(
    r"<((?:[@#!]|mailto:|tel:|sms:|[a-z][a-z0-9+.\-]*://)[^<>|]*)(?:\|([^<>]*))?>", re.IGNORECASE
)
# Of those, never part of a contact: mentions and web links (a plain link is not a name).
_SLACK_DROPPED = re.compile(r"[@#!]|[a-z][a-z0-9+.\-]*://", re.IGNORECASE)
# Any other key=value, and key: value after a known label (a keyed form): not a field.
_KEY = re.compile(r"(?<![^\s,;|，；、،؛])(?P<key>[^\W\d_][\w.\-]{0,39})(?:(?P<eq>=)|[:：](?!//))")
_URL = re.compile(
    r"(?<![^\s,;|(<\[\"'])(?:[a-z][a-z0-9+.\-]*://|www\.)[^\s,;|<>\"]+|[^\s,;|<>\"]*/@[^\s,;|<>\"]*",
    re.IGNORECASE,
)
_DATE = re.compile(  # 2024-11-05, 05.11.2024, 11/05/24, 10:30: not phone numbers
    r"(?<![\w.+/:-])(?:\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[./-]\d{1,2}[./-](?:\d{4}|\d{2})"
    r"|\d{1,2}:\d{2}(?::\d{2})?)(?![\w/:-]|\.\d)"
)
_CLOSING_QUOTE = {'"': '"', "'": "'", "“": "”", "”": "”", "‘": "’", "«": "»", "„": "“"}
# Full-width and Arabic punctuation and invisible formatting characters end an address
# (ZWNJ / ZWJ belong to names, not here).
_EMAIL_STOPS = (
    "，；、。：،؛\u00ad\u061c\u180e\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff"
)
_EMAIL = re.compile(
    f'[^\\s,;|<>()\\[\\]{{}}"“”‘’«»:{_EMAIL_STOPS}]*@[^\\s,;|<>()\\[\\]{{}}"“”‘’«»:{_EMAIL_STOPS}]*'
)
_SENTENCE_END = ".!?,:;"  # after an address, punctuation of the sentence it ends
_WRAPPERS = "'`*_~"  # quotes and Slack bold, italic, strike: stripped only in pairs
_IDD_PREFIX = re.compile(  # 00 / 011 / 0011 starting a number, not inside one
    r"(?<![\w+).\-/])(?<![\d).\-/][ \t])(?P<idd>0011|011|00)(?P<sep>[ \t.\-]?)(?=\d)"
)
_DIGIT_RUN = re.compile(
    r"(?<!\w)(?<!\w[(\[])(?:\+[ \t]*)?[(\[]?\d(?:[\d \t().\-/\[\]]*[\d)\]])?(?!\w)"
)
_WHITESPACE = re.compile(r"\s+")
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
    # what was read but not used, e.g. {"ignored": "not read: order, profile (…)"}; never errors
    warnings: dict[str, str] = field(default_factory=dict)

    def fields(self) -> dict[str, str]:
        """The raw strings to hand to ``validate_contact`` (or to pre-fill a form).

        These are the values as typed, except that a phone written with an
        international dialling prefix (``00 44 …``, ``011 44 …``) gets ``+`` instead
        when that reads as the same number, so ``validate_contact`` reads it the same
        way without a default region.
        """
        out = dict(self.found)
        raw_phone = out.get("phone")
        if raw_phone is not None and self.phone is not None:
            plus = _plus_prefixed(raw_phone, None)
            if plus != raw_phone and _e164(plus) == self.phone:
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
    field: str | None  # None: a key that is not a contact field (ignored)
    key: str  # the key as typed
    start: int  # where the label word starts
    value_start: int
    value_end: int
    end: int  # after the closing quote, if the value was quoted

    @property
    def quoted(self) -> bool:
        return self.end > self.value_end


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
        self.fields: list[tuple[int, int]] = []  # spans of the details (labels, emails, phones)

    @property
    def masked(self) -> str:
        if self._joined is None:
            self._joined = "".join(self._mask)
        return self._joined

    def before(self, end: int, width: int) -> str:
        """Up to ``width`` masked characters before ``end`` (cheap, for look-behinds)."""
        return "".join(self._mask[max(0, end - width) : end])

    def consume(self, start: int, end: int, *, detail: bool = False) -> None:
        self._mask[start:end] = " " * (end - start)
        self._joined = None
        if detail:
            self.fields.append((start, end))


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
        if label.field is None:
            doc.consume(label.start, label.end, detail=True)
        else:
            doc.consume(label.start, label.value_start, detail=True)
            doc.consume(label.value_end, label.end, detail=True)
    for pattern in (_URL, _DATE):  # neither a field nor a name
        for match in list(pattern.finditer(doc.masked)):
            doc.consume(*match.span())

    emails = _take_emails(doc, labels)
    phones = _take_phones(doc, labels, region)
    names = _take_names(doc, labels)

    errors: dict[str, str] = {}
    found: dict[str, str] = {}
    email, _ = _resolve("email", emails, errors, found)
    phone, extension = _resolve("phone", phones, errors, found)
    name, _ = _resolve("name", names, errors, found)
    ignored = list(dict.fromkeys(label.key for label in labels if label.field is None))
    warnings = {}
    if ignored:
        listed = ", ".join(ignored)
        warnings["ignored"] = f"not read: {listed} (only the name, email and phone are)"
    return Extraction(
        name=name,
        email=email,
        phone=phone,
        phone_extension=extension if phone else None,
        errors=errors,
        found=found,
        warnings=warnings,
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


def _find_labels(text: str) -> list[_Label]:
    """Known labels (any language), then other keys: ``key=…``, or ``key: …`` in a keyed form."""
    known = list(LABEL.finditer(text))
    first_known = known[0].start() if known else len(text)
    starts = {m.start() for m in known}
    keys = [
        m
        for m in _KEY.finditer(text)
        if m.start() not in starts
        and not any(k.start() <= m.start() < k.end() for k in known)
        and (m.group("eq") is not None or m.start() > first_known)
    ]
    matches = sorted(known + keys, key=lambda m: m.start())
    labels: list[_Label] = []
    for i, match in enumerate(matches):
        if labels and match.start() < labels[-1].end:
            continue  # inside the previous label's quoted value
        limit = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        labels.append(_label_at(text, match, limit))
    return labels


def _label_at(text: str, match: re.Match[str], limit: int) -> _Label:
    field_name = match.lastgroup if match.re is LABEL else None
    key = match.group(0).rstrip(" \t:=：") if field_name else match.group("key")
    one_word = field_name is None and match.group("eq") is not None
    start = match.end()
    if one_word:
        while start < limit and text[start] in " \t":
            start += 1
    opening = text[start : start + 1]
    if opening in _CLOSING_QUOTE:
        closing = re.compile(re.escape(_CLOSING_QUOTE[opening]) + r"(?=[\s,;|]|$)")
        close = closing.search(text, start + 1)
        if close is not None:
            return _Label(field_name, key, match.start(), start + 1, close.start(), close.end())
    end = start
    stops = _SEPARATORS + (" \t" if one_word else "")
    while end < limit and text[end] not in stops:
        end += 1
    return _Label(field_name, key, match.start(), start, end, end)


def _unlabeled_value(doc: _Text, label: _Label) -> tuple[int, int] | None:
    """The span of what is still unconsumed in a label's value, stripped, if anything."""
    part = doc.masked[label.value_start : label.value_end]
    if not part.strip():
        return None
    start = label.value_start + (len(part) - len(part.lstrip()))
    end = label.value_end - (len(part) - len(part.rstrip()))
    return start, end


def _consume_bare_label(doc: _Text, field_name: str, start: int) -> None:
    """Also consume a label word written without ``:`` right before a value."""
    window = doc.before(start, 40)
    match = BARE_LABEL_BEFORE[field_name].search(window)
    if match is not None and (match.start() > 0 or len(window) == start):
        doc.consume(start - len(window) + match.start(), start)


# --- emails -----------------------------------------------------------------------------


def _email_spans(masked: str) -> Iterator[tuple[int, int]]:
    """Each token with an ``@``, whole: only sentence punctuation after it and pairs of
    quotes or markup around it are not part of it (``.lena@…`` stays ``.lena@…``)."""
    for match in _EMAIL.finditer(masked):
        start, end = match.span()
        changed = True
        while changed:
            changed = False
            while end > start and masked[end - 1] in _SENTENCE_END:
                end, changed = end - 1, True
            if end - start > 2 and masked[start] in _WRAPPERS and masked[end - 1] == masked[start]:
                start, end, changed = start + 1, end - 1, True
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
        doc.consume(start, end, detail=True)
        _consume_bare_label(doc, "email", start)
    return [_checked(doc.text[s:e], normalize_email) for s, e in spans]


def _inside(span: tuple[int, int], label: _Label) -> bool:
    return label.value_start <= span[0] and span[1] <= label.value_end


# --- phones -----------------------------------------------------------------------------


def _generic_prefixes(region: str | None) -> bool:
    """Without a known region, 00 / 011 / 0011 are read as dialling prefixes; in a region
    phonenumbers applies that region's own (011 is a Delhi or Turin area code, not one)."""
    return region is None or phonenumbers.PhoneMetadata.metadata_for_region(region) is None


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
    """``raw`` with a leading international dialling prefix written as ``+`` (no region)."""
    stripped = raw.strip()
    if not _generic_prefixes(region):
        return raw
    rewritten = _idd_rewritten(stripped, region)
    if rewritten == stripped or not rewritten.lstrip().startswith("+"):
        return raw
    return rewritten.lstrip()


def _e164(text: str) -> str | None:
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _balanced(text: str, start: int, end: int) -> tuple[int, int]:
    """A digit run without a bracket it does not open and close itself."""
    for opening, closing in ("()", "[]"):
        part = text[start:end]
        if part.endswith(closing) and part.count(closing) > part.count(opening):
            end -= 1
        part = text[start:end]
        if part.startswith(opening) and part.count(opening) > part.count(closing):
            start += 1
    return start, end


def _phone_spans(masked: str, region: str | None) -> Iterator[tuple[int, int]]:
    """Numbers the matcher sees (plus their dialling prefix), then any other digit run."""
    rewritten = _idd_rewritten(masked, region) if _generic_prefixes(region) else masked
    remaining = list(rewritten)
    leniency = phonenumbers.Leniency.POSSIBLE
    for match in phonenumbers.PhoneNumberMatcher(rewritten, region, leniency=leniency):
        start = match.start
        while start > 0 and rewritten[start - 1] == " " and masked[start - 1] != " ":
            start -= 1  # the spaces stand for the 00 / 011 that was typed
        remaining[start : match.end] = " " * (match.end - start)
        yield start, match.end
    joined = "".join(remaining)
    for run in _DIGIT_RUN.finditer(joined):
        start, end = _balanced(joined, *run.span())
        while start > 0 and joined[start - 1] == " " and masked[start - 1] != " ":
            start -= 1
        if start < end:
            yield start, end


def _take_phones(doc: _Text, labels: list[_Label], region: str | None) -> list[_Candidate]:
    spans = sorted(_phone_spans(doc.masked, region))
    for label in labels:
        if label.field == "phone" and not any(_inside(s, label) for s in spans):
            span = _unlabeled_value(doc, label)
            if span is not None:
                spans.append(span)
    spans.sort()
    for start, end in spans:
        doc.consume(start, end, detail=True)
        _consume_bare_label(doc, "phone", start)

    return [_checked_phone(doc.text[s:e], region) for s, e in spans]


# --- names ------------------------------------------------------------------------------


def _pieces(text: str) -> list[str]:
    return re.split(r"[,;|\n，；،؛]", text)


def _not_a_name(raw: str) -> _Candidate:
    return _Candidate(raw, None, None, f"{_shown(raw)} is not a name: give the guest's name")


def _labeled_name(doc: _Text, label: _Label) -> _Candidate | None:
    raw = doc.masked[label.value_start : label.value_end]
    doc.consume(label.value_start, label.value_end)
    value = quoted_name(raw) if label.quoted else name_from([raw])
    if value:
        return _checked(value, normalize_name)
    typed = trim_invisible(raw)
    symbols = typed if label.quoted and typed and clean_piece(typed) == "" else symbols_in([raw])
    return _not_a_name(symbols) if symbols else None


def _take_names(doc: _Text, labels: list[_Label]) -> list[_Candidate]:
    """Labeled names, then the rest: the text before and between the details, or, when
    there is no name there, the text after them (``chris@example.com Chris Doe``).

    With a labeled name, the text before the first label is a lead-in (the key wins);
    text after the last detail is a note when the name came before it.
    """
    candidates: list[_Candidate] = []
    for label in labels:
        if label.field == "name":
            candidate = _labeled_name(doc, label)
            if candidate is not None:
                candidates.append(candidate)
    masked = doc.masked
    last = max((end for _, end in doc.fields), default=None)
    labeled = any(label.field == "name" for label in labels)
    if labeled:
        region = masked[labels[0].start : last]
    elif last is None:
        region = masked
    else:
        region = masked[:last]
        if not name_from(_pieces(region)):
            region = masked[last:]
    pieces = _pieces(region)
    name = name_from(pieces)
    if name:
        candidates.append(_checked(name, normalize_name))
    elif not candidates:
        symbols = symbols_in(pieces if labeled else _pieces(masked))
        if symbols:
            candidates.append(_not_a_name(symbols))
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
