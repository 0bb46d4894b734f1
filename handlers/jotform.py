"""``POST /webhooks/jotform?key=…``: Jotform's form-submission webhook (widgets.md §10).

Authentication: **Jotform signs nothing and has no secret.** The webhook URL carries a
random key of ours (``?key=``), compared in constant time with ``JOTFORM_WEBHOOK_KEY``,
exactly as Crisp's website hooks are checked; there is no timestamp, so a replay is only
recognised by its submission id.

Transport: ``multipart/form-data`` with parts ``formID``, ``submissionID``, ``formTitle``,
``ip``, ``pretty``, … and ``rawRequest``, a JSON object (as text) of the answers keyed
``q<N>_<name>``: ``q3_fullName: {"first", "last"}``, ``q4_email``,
``q5_phoneNumber: {"full"}``. The body is read with python-multipart (Starlette's own form
parser); a body that is not multipart, has no ``rawRequest`` part or whose ``rawRequest`` is
not a JSON object is refused with 400.

Mapping, unless ``JOTFORM_FIELD_NAME`` / ``_EMAIL`` / ``_PHONE`` name the questions (the
whole key ``q4_email`` or its name ``email``, comma-separated alternatives, ``a+b`` joins):
the email is the first answer whose name ends in *email* (or contains it, with an ``@`` in
the answer); the phone the first Phone-widget answer (``{"full": …}``) or answer whose name
contains *phone* (with digits in the answer), else one named with a phone word
(``mobileNumber``); the name the first Full-Name-widget answer (``{"first",
"last"}``, joined), else one named like a name (``name``, ``fullName``, ``yourName``), else
``firstName`` + ``lastName``. Names are read camelCase-split. Extras kept as custom fields:
``jotform_form_id``, ``jotform_submission_id`` and ``form_name`` (the form's title). A
submission without an email or phone is answered 200 and ignored. Dedupe on
``submissionID`` (the body's digest if a post has none).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from typing import Any

from python_multipart import FormParser
from python_multipart.multipart import Field, File, parse_options_header

from adapter.channels import (
    Answer,
    PayloadError,
    WebhookChannel,
    WebhookEvent,
    WebhookProvider,
    WebhookRequest,
    body_digest,
    consent_answer,
    constant_time_equal,
    custom_value,
    json_object,
    map_answers,
    norm,
    scalar_text,
)

__all__ = ["JotformProvider", "answers_of", "channel", "form_parts"]

KEY_SETTING = "JOTFORM_WEBHOOK_KEY"
MULTIPART = "multipart/form-data"
MAX_PARTS = 200
EXPECTED = (
    "a Jotform webhook: multipart/form-data with the parts formID, submissionID, formTitle "
    'and rawRequest, a JSON object of the answers ({"q3_fullName": {"first": …, "last": …}, '
    '"q4_email": …, "q5_phoneNumber": {"full": …}})'
)
EVENT_TYPE = "submission"

_QUESTION = re.compile(r"q(\d+)_(.+)", re.DOTALL)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NAME_PARTS = ("first", "middle", "last")
_PHONE_PARTS = ("country", "area", "phone")

# Kinds given to answers for map_answers: by the widget's value shape or the answer's name.
FULL_NAME, EMAIL, PHONE = "full_name", "email", "phone"


def form_parts(body: bytes, content_type_header: str) -> dict[str, str]:
    """The text parts of a ``multipart/form-data`` body (first of a repeated name; files are
    skipped), else :class:`PayloadError` saying what was expected."""
    mime, params = parse_options_header(content_type_header)
    if mime.decode("latin-1").lower() != MULTIPART:
        got = mime.decode("latin-1") or "no Content-Type"
        raise PayloadError(f"expected {EXPECTED}; got {got}")
    boundary = params.get(b"boundary")
    if not boundary:
        raise PayloadError(f"expected {EXPECTED}; the Content-Type has no boundary")
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        encoding = codecs.lookup(charset).name
    except LookupError:
        raise PayloadError(f"expected {EXPECTED}; unknown charset {charset!r}") from None

    fields: list[Field] = []
    count = 0

    def on_field(field: Field) -> None:
        nonlocal count
        count += 1
        if count > MAX_PARTS:
            raise PayloadError(f"expected {EXPECTED}; got more than {MAX_PARTS} parts")
        fields.append(field)

    def on_file(file: File) -> None:
        nonlocal count
        count += 1
        file.close()
        if count > MAX_PARTS:
            raise PayloadError(f"expected {EXPECTED}; got more than {MAX_PARTS} parts")

    parser = FormParser(
        MULTIPART,
        on_field,
        on_file,
        boundary=boundary,
        # The body is already in memory (and capped): never spool a file part to disk.
        config={"MAX_MEMORY_FILE_SIZE": len(body) + 1},
    )
    try:
        parser.write(body)
        parser.finalize()
    except PayloadError:
        raise
    except Exception as exc:  # python-multipart raises several kinds on garbage
        raise PayloadError(
            f"expected {EXPECTED}; the multipart body could not be read ({type(exc).__name__})"
        ) from None

    parts: dict[str, str] = {}
    for field in fields:
        name, value = field.field_name, field.value
        try:
            key = (name or b"").decode(encoding)
            text = (value or b"").decode(encoding)
        except UnicodeDecodeError:
            raise PayloadError(f"expected {EXPECTED}; a part is not {encoding} text") from None
        parts.setdefault(key, text)
    return parts


def _words(name: str) -> str:
    """``phoneNumber`` → ``phone number``: a question name as words, for labels."""
    return norm(_CAMEL.sub(" ", name))


def _joined(value: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    texts = (scalar_text(value.get(k)) for k in keys)
    return " ".join(t for t in texts if t) or None


def _answer(key: str, name: str, value: Any) -> Answer:
    ids = tuple(dict.fromkeys(i for i in (norm(key), norm(name), _words(name)) if i))
    compact = name.lower().replace("-", "").replace("_", "")
    kind = ""
    text: str | None
    if isinstance(value, Mapping):
        if "full" in value or {"area", "phone"} <= value.keys():
            kind = PHONE
            text = scalar_text(value.get("full")) or _joined(value, _PHONE_PARTS)
        elif {"first", "last"} & value.keys():
            kind = FULL_NAME
            text = _joined(value, _NAME_PARTS)
        else:  # an address, a date, …: its parts, as text
            text = custom_value([v for v in value.values() if not isinstance(v, Mapping | list)])
    else:
        text = custom_value(value)
    if not kind and text is not None:
        # A name ending in email is the email question; one merely containing it
        # (emailOptIn) only when the answer looks like an address; phone: has digits.
        if compact.endswith("email") or ("email" in compact and "@" in text):
            kind = EMAIL
        elif "phone" in compact and any(ch.isdigit() for ch in text):
            kind = PHONE
    return Answer(ids, kind, text)


def answers_of(raw: Mapping[str, Any]) -> list[Answer]:
    """The answers of ``rawRequest``: its ``q<N>_<name>`` keys, in the form's order."""
    answers = []
    for key, value in raw.items():
        if (match := _QUESTION.fullmatch(str(key))) is not None:
            answers.append(_answer(str(key), match.group(2), value))
    return answers


class JotformProvider(WebhookProvider):
    name = "jotform"
    label = "Jotform"
    secret_setting = KEY_SETTING
    field_prefix = "JOTFORM"
    success_status = 200  # retries: unknown (widgets.md §10)
    content_types = frozenset({MULTIPART})

    def verify(self, request: WebhookRequest, secret: str, *, now: float) -> bool:
        # Jotform signs nothing: the ?key= we put in the webhook URL is the only check.
        given = request.query.get("key")
        return bool(secret) and given is not None and constant_time_equal(given, secret)

    def parse(self, request: WebhookRequest) -> WebhookEvent:
        if request.content_type != MULTIPART:
            got = request.content_type or "no Content-Type"
            raise PayloadError(f"expected {EXPECTED}; got {got}")
        parts = form_parts(request.body, request.headers.get("content-type", ""))
        if "rawRequest" not in parts:
            raise PayloadError(f"expected {EXPECTED}; there is no rawRequest part")
        try:
            raw = json_object(parts["rawRequest"].encode(), EXPECTED)
        except PayloadError as exc:
            raise PayloadError(str(exc).replace("the body", "rawRequest")) from None

        answers = answers_of(raw)
        fields = map_answers(
            answers,
            lookup=request.lookup,
            prefix="JOTFORM",
            name_kinds=(FULL_NAME,),
            email_kinds=(EMAIL,),
            phone_kinds=(PHONE,),
        )
        submission = custom_value(parts.get("submissionID"))
        custom: dict[str, str] = {}
        for key, part in (
            ("jotform_form_id", "formID"),
            ("jotform_submission_id", "submissionID"),
            ("form_name", "formTitle"),
        ):
            if (text := custom_value(parts.get(part))) is not None:
                custom[key] = text
        event_id = submission or body_digest(request.body)
        return WebhookEvent.unless_unreachable(
            event_id,
            fields,
            custom_fields=custom,
            event_type=EVENT_TYPE,
            consent=consent_answer(answers, lookup=request.lookup, prefix="JOTFORM"),
        )


channel = WebhookChannel(JotformProvider())
