"""Tests for adapter.extract: a table of what people really type, plus properties."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapter.core.contact import validate_contact
from adapter.core.extract import Extraction, extract_contact

CHRIS = "Chris Doe"
MAIL = "chris@example.com"
US = "+14155552671"
UK = "+442079460958"
NOT_VALID = "is not a valid phone number"
NO_CC = "write it with its country code"

# text, default_region, name, email, phone, {field: substring of the error}
CASES: list[tuple[str, str | None, str | None, str | None, str | None, dict[str, str]]] = [
    # free order, spaces only
    ("Chris Doe chris@example.com +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("chris@example.com Chris Doe +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("+1 415 555 2671 chris@example.com Chris Doe", None, CHRIS, MAIL, US, {}),
    ("Chris Doe +1-415-555-2671 chris@example.com", None, CHRIS, MAIL, US, {}),
    ("Chris Doe +1.415.555.2671", None, CHRIS, None, US, {}),
    ("Chris Doe +1 (415) 555-2671", None, CHRIS, None, US, {}),
    ("Chris Doe +14155552671", None, CHRIS, None, US, {}),
    ("  Chris   Doe   chris@example.com  ", None, CHRIS, MAIL, None, {}),
    # separators
    ("Chris Doe, chris@example.com, +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("Chris Doe; chris@example.com; +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("Chris Doe | chris@example.com | +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("Chris Doe\nchris@example.com\n+1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("Chris Doe,chris@example.com,+14155552671", None, CHRIS, MAIL, US, {}),
    ("Chris Doe - chris@example.com - +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("Chris Doe / chris@example.com / +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    # labels
    ('name="Chris Doe" email=chris@example.com phone=+14155552671', None, CHRIS, MAIL, US, {}),
    (
        'name="Chris Doe" email="chris@example.com" phone="+1 415 555 2671"',
        None,
        CHRIS,
        MAIL,
        US,
        {},
    ),
    (
        "name: Chris Doe, email: chris@example.com, phone: +1 415 555 2671",
        None,
        CHRIS,
        MAIL,
        US,
        {},
    ),
    ("Name: Chris Doe; E-Mail: chris@example.com; Tel: +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("NAME: Chris Doe MAIL: chris@example.com MOBILE: +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("name:Chris Doe|email:chris@example.com|tel:+14155552671", None, CHRIS, MAIL, US, {}),
    (
        "email: chris@example.com\nname: Chris Doe\nphone: +1 415 555 2671",
        None,
        CHRIS,
        MAIL,
        US,
        {},
    ),
    ("full name: Chris Doe, e-mail: chris@example.com", None, CHRIS, MAIL, None, {}),
    ("name = Chris Doe, mobile = +1 415 555 2671", None, CHRIS, None, US, {}),
    ("Chris Doe email chris@example.com phone +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("Chris Doe, email: chris@example.com, +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("name: 'Chris O'Brien', email: chris@example.com", None, "Chris O'Brien", MAIL, None, {}),
    ('name: "Doe, Chris" chris@example.com', None, "Doe, Chris", MAIL, None, {}),
    # quoted names
    ('"Chris Doe" chris@example.com', None, CHRIS, MAIL, None, {}),
    ("'Chris Doe' chris@example.com", None, CHRIS, MAIL, None, {}),
    ("“Chris Doe” chris@example.com", None, CHRIS, MAIL, None, {}),
    ("Chris Doe <chris@example.com>", None, CHRIS, MAIL, None, {}),
    ("Chris Doe (chris@example.com)", None, CHRIS, MAIL, None, {}),
    ("Doe, Chris - chris@example.com", None, "Doe, Chris", MAIL, None, {}),
    # names from everywhere
    (
        "José Álvarez jose@example.es +34 912 345 678",
        None,
        "José Álvarez",
        "jose@example.es",
        "+34912345678",
        {},
    ),
    ("Siobhán O'Brien siobhan@example.ie", None, "Siobhán O'Brien", "siobhan@example.ie", None, {}),
    (
        "Jan van der Berg jan@example.nl +31 20 123 4567",
        None,
        "Jan van der Berg",
        "jan@example.nl",
        "+31201234567",
        {},
    ),
    ("María de la Cruz maria@example.mx", None, "María de la Cruz", "maria@example.mx", None, {}),
    (
        "张伟 zhang@example.cn +86 10 1234 5678",
        None,
        "张伟",
        "zhang@example.cn",
        "+861012345678",
        {},
    ),
    (
        "Ελένη Παπαδοπούλου eleni@example.gr",
        None,
        "Ελένη Παπαδοπούλου",
        "eleni@example.gr",
        None,
        {},
    ),
    (
        "Анна Иванова anna@example.ru +7 495 123-45-67",
        None,
        "Анна Иванова",
        "anna@example.ru",
        "+74951234567",
        {},
    ),
    ("محمد علي mohammed@example.ae", None, "محمد علي", "mohammed@example.ae", None, {}),
    ("Jean-Luc Picard jl@example.fr", None, "Jean-Luc Picard", "jl@example.fr", None, {}),
    ("Chris 🙂 Doe chris@example.com", None, "Chris 🙂 Doe", MAIL, None, {}),
    # phones: prefixes and national forms
    ("Chris Doe 00 44 20 7946 0958", None, CHRIS, None, UK, {}),
    ("Chris Doe 0044 20 7946 0958", None, CHRIS, None, UK, {}),
    ("Chris Doe 011 44 20 7946 0958", None, CHRIS, None, UK, {}),
    ("Chris Doe 011-44-20-7946-0958", "US", CHRIS, None, UK, {}),
    ("Chris Doe (415) 555-2671", "US", CHRIS, None, US, {}),
    ("Chris Doe 415.555.2671", "us", CHRIS, None, US, {}),
    ("Chris Doe 020 7946 0958", "GB", CHRIS, None, UK, {}),
    ("Chris Doe 0113 496 0000", "GB", CHRIS, None, "+441134960000", {}),
    ("Chris Doe +44 (0)20 7946 0958", None, CHRIS, None, UK, {}),
    ("Chris Doe +1 415 555 2671 ext. 22", None, CHRIS, None, US, {}),
    ("Chris Doe, +1 415 555 2671 x22, chris@example.com", None, CHRIS, MAIL, US, {}),
    # Slack auto-links
    ("Chris Doe <mailto:chris@example.com|chris@example.com>", None, CHRIS, MAIL, None, {}),
    ("Chris Doe <tel:+14155552671|+1 415 555 2671>", None, CHRIS, None, US, {}),
    (
        "<mailto:chris@example.com|chris@example.com> <tel:+14155552671|+1 415 555 2671> Chris Doe",
        None,
        CHRIS,
        MAIL,
        US,
        {},
    ),
    # a link Slack made of something typed is a link, not part of a name
    ("Chris <http://doe.com|Doe.com> chris@example.com", None, "Chris", MAIL, None, {}),
    ("Chris Doe <mailto:chris@example.com>", None, CHRIS, MAIL, None, {}),
    # bad values are reported, never silently ignored or swallowed into the name
    ("Chris +1 555", None, "Chris", None, None, {"phone": "'+1 555' is not a valid phone number"}),
    ("Chris Doe +1 123 456 7890 chris@example.com", None, CHRIS, MAIL, None, {"phone": NOT_VALID}),
    ("Chris Doe 415 555 2671", None, CHRIS, None, None, {"phone": NO_CC}),
    ("Chris Doe 12", None, CHRIS, None, None, {"phone": "'12' is not a phone number"}),
    (
        "Chris Doe chris@example",
        None,
        CHRIS,
        None,
        None,
        {"email": "'chris@example' is not a valid email address"},
    ),
    ("Chris Doe chris@@example.com", None, CHRIS, None, None, {"email": "not a valid email"}),
    ("Chris Doe @chris", None, CHRIS, None, None, {"email": "'@chris' is not a valid email"}),
    (
        "email: chris at example dot com, name: Chris",
        None,
        "Chris",
        None,
        None,
        {"email": "'chris at example dot com' is not a valid email address"},
    ),
    ("name: Chris, phone: n/a", None, "Chris", None, None, {"phone": "'n/a' is not a phone"}),
    # two different values for one field
    (
        "Chris a@example.com b@example.com",
        None,
        "Chris",
        None,
        None,
        {"email": "two different emails given: 'a@example.com' and 'b@example.com'; give one"},
    ),
    (
        "Chris +1 415 555 2671 +44 20 7946 0958",
        None,
        "Chris",
        None,
        None,
        {"phone": "two different phone numbers given: '+1 415 555 2671' and '+44 20 7946 0958'"},
    ),
    (
        "Chris a@example.com b@example.com c@example.com",
        None,
        "Chris",
        None,
        None,
        {"email": "3 different emails given: 'a@example.com', 'b@example.com' and 'c@example.com'"},
    ),
    (
        "name: Chris Doe, Acme Inc, chris@example.com",
        None,
        None,
        MAIL,
        None,
        {"name": "two different names given: 'Chris Doe' and 'Acme Inc'"},
    ),
    (
        "Chris Doe +1 415 555 2671 / +1 555 0000",
        None,
        CHRIS,
        None,
        None,
        {"phone": "two different phone numbers"},
    ),
    # the same value twice is fine
    ("Chris chris@example.com chris@example.com", None, "Chris", MAIL, None, {}),
    ("Chris Chris@Example.com chris@example.com", None, "Chris", "Chris@example.com", None, {}),
    ("Chris +1 415 555 2671, tel: (415) 555-2671", "US", "Chris", None, US, {}),
    (
        "Chris Doe <mailto:chris@example.com|chris@example.com> email: chris@example.com",
        None,
        CHRIS,
        MAIL,
        None,
        {},
    ),
    # nothing invented
    ("chris@example.com", None, None, MAIL, None, {}),
    ("+1 415 555 2671", None, None, None, US, {}),
    ("Chris Doe", None, CHRIS, None, None, {}),
    ("", None, None, None, None, {}),
    ("   \n , ; | ", None, None, None, None, {}),
    ("name:", None, None, None, None, {}),
    ("chris@example.com.", None, None, MAIL, None, {}),
    # whatever words it contains
    (
        "payload token=abc & Chris = Doe chris@example.com",
        None,
        "payload token=abc & Chris = Doe",
        MAIL,
        None,
        {},
    ),
    (
        "Chris O'Brien-Smith (Acme) chris@example.com",
        None,
        "Chris O'Brien-Smith (Acme)",
        MAIL,
        None,
        {},
    ),
    ("Chris2 Doe chris@example.com", None, "Chris2 Doe", MAIL, None, {}),
    # Slack mentions and web links are never part of the name
    ("<@U123|bob> Chris Doe chris@example.com", None, CHRIS, MAIL, None, {}),
    ("<@U0123ABC> Chris Doe, chris@example.com", None, CHRIS, MAIL, None, {}),
    ("Chris Doe <#C123|general> chris@example.com", None, CHRIS, MAIL, None, {}),
    ("<!here> Chris Doe chris@example.com +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("<!subteam^S123|@support> Chris Doe chris@example.com", None, CHRIS, MAIL, None, {}),
    ("Chris Doe <https://acme.com|acme.com> chris@example.com", None, CHRIS, MAIL, None, {}),
    ("<https://acme.com|acme.com> chris@example.com", None, None, MAIL, None, {}),
    ("Chris Doe <chris@example.com>", None, CHRIS, MAIL, None, {}),
    # Slack bold / italic / strike around the email
    ("Chris Doe *chris@example.com*", None, CHRIS, MAIL, None, {}),
    ("Chris Doe _chris@example.com_", None, CHRIS, MAIL, None, {}),
    ("Chris Doe ~chris@example.com~", None, CHRIS, MAIL, None, {}),
    ("*Chris Doe* *<mailto:chris@example.com|chris@example.com>*", None, CHRIS, MAIL, None, {}),
    ("_Chris Doe_ _chris@example.com_ +1 415 555 2671", None, CHRIS, MAIL, US, {}),
    ("Chris Doe _chris@example.com", None, CHRIS, "_chris@example.com", None, {}),
    # invisible formatting characters: an error, except ZWNJ / ZWJ (Persian, Indic names)
    ("Chris \u202eeoD chris@example.com", None, None, MAIL, None, {"name": "invisible formatting"}),
    ("Chris\u200b Doe chris@example.com", None, None, MAIL, None, {"name": "invisible formatting"}),
    (
        "\u0645\u0647\u200c\u0633\u0627 chris@example.com",
        None,
        "\u0645\u0647\u200c\u0633\u0627",
        MAIL,
        None,
        {},
    ),
    (
        "\u0915\u094d\u200d\u0937 chris@example.com",
        None,
        "\u0915\u094d\u200d\u0937",
        MAIL,
        None,
        {},
    ),
]


@pytest.mark.parametrize(("text", "region", "name", "email", "phone", "errors"), CASES)
def test_extract_table(
    text: str,
    region: str | None,
    name: str | None,
    email: str | None,
    phone: str | None,
    errors: dict[str, str],
) -> None:
    got = extract_contact(text, region)
    assert (got.name, got.email, got.phone) == (name, email, phone)
    assert set(got.errors) == set(errors), got.errors
    for field, fragment in errors.items():
        assert fragment in got.errors[field]
    unwrapped = re.sub(r"<([^<>|]*\|)?([^<>]*)>", r" \2 ", text)
    typed = " ".join(unwrapped.split())
    for field, raw in got.found.items():
        if "\n" not in text and "," not in raw:
            assert raw in typed, field  # as typed (a name's spaces collapsed)


def test_minimum_table_size() -> None:
    assert len(CASES) >= 60


def test_extension_and_found_as_typed() -> None:
    got = extract_contact("Chris Doe, +1 (415) 555-2671 ext. 22")
    assert got.phone_extension == "22"
    assert got.found == {"name": CHRIS, "phone": "+1 (415) 555-2671 ext. 22"}


def test_fields_round_trip_through_validate_contact() -> None:
    got = extract_contact("Chris Doe, 00 44 20 7946 0958, chris@example.com")
    assert got.found["phone"] == "00 44 20 7946 0958"
    contact, warnings = validate_contact(got.fields())
    assert (contact.name, contact.email, contact.phone) == (CHRIS, MAIL, UK)
    assert warnings == {}


def test_fields_keep_national_numbers() -> None:
    got = extract_contact("Chris Doe 0113 496 0000", "GB")
    assert got.fields()["phone"] == "0113 496 0000"
    contact, _ = validate_contact({**got.fields(), "email": MAIL}, default_region="GB")
    assert contact.phone == got.phone


def test_conflict_keeps_first_value_for_prefill() -> None:
    got = extract_contact("Chris a@example.com b@example.com")
    assert got.email is None
    assert got.found["email"] == "a@example.com"


def test_no_name_from_email_local_part() -> None:
    got = extract_contact("chris.doe@example.com +1 415 555 2671")
    assert got.name is None
    assert "name" not in got.found
    assert "name" not in got.errors


def test_unknown_region_does_not_raise() -> None:
    got = extract_contact("Chris 415 555 2671", "ZZ")
    assert got.phone is None
    assert "phone" in got.errors


def test_cli_parse_reports_every_problem_at_once(tmp_path: Path) -> None:
    """``contact-adapter parse`` lists the missing email with the bad phone, not just one."""
    result = subprocess.run(
        [sys.executable, "-m", "adapter.ops.cli", "parse", "Chris +1 555"],
        cwd=tmp_path,
        env={**os.environ, "LOG_LEVEL": "WARNING", "CONTACT_REQUIRED_FIELDS": "name,email,phone"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "email: is required",
        "phone: '+1 555' is not a valid phone number",
    ]
    assert result.stdout == ""


def test_huge_input_does_not_raise() -> None:
    got = extract_contact("Chris Doe chris@example.com +1 415 555 2671 " * 500)
    assert got.email == MAIL
    assert got.phone == US


# --- properties ---------------------------------------------------------------------------

NAMES = ["Chris Doe", "José Álvarez", "O'Brien", "van der Berg", "张伟", "Анна", "محمد", "Ελένη"]
EMAILS = [
    "chris@example.com",
    "a.b+tag@example.co.uk",
    "bad@",
    "@x",
    "x@y@z.com",
    "josé@example.es",
]
PHONES = [
    "+1 415 555 2671",
    "+44 20 7946 0958",
    "00 44 20 7946 0958",
    "+1 555",
    "(415) 555-2671",
    "011 44 20 7946 0958",
    "+1 415 555 2671 ext. 9",
    "12",
]
SEPARATORS = [" ", ", ", "; ", " | ", "\n", " - "]
LABELS = ["", "name: ", "email: ", "tel: ", "phone=", "Mobile: ", 'name="', "mail "]

fragment = st.one_of(
    st.sampled_from(NAMES),
    st.sampled_from(EMAILS),
    st.sampled_from(PHONES),
    st.sampled_from(LABELS),
    st.sampled_from(["payload", "token=", "&", "=", "🙂", "<", ">", "<mailto:", "|", '"', "“"]),
    st.sampled_from(
        ["<@U123|bob>", "<#C1|general>", "<!here>", "<https://acme.com|acme.com>", "*", "_", "~"]
    ),
    st.sampled_from(["\u200b", "\u202e", "\u200c", "\u200d", "\ufeff"]),
    st.text(max_size=8),
)
composed = st.lists(st.tuples(fragment, st.sampled_from(SEPARATORS)), max_size=8).map(
    lambda parts: "".join(f + s for f, s in parts)
)
regions = st.sampled_from([None, "US", "GB", "de", "ZZ"])
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EMAIL_LABEL = re.compile(r"(e-?mail|mail)", re.IGNORECASE)
PHONE_LABEL = re.compile(r"(phone|tel|mobile|cell)", re.IGNORECASE)
# Names that re-read differently by design: label words, or ; | kept inside a quoted value.
LABEL_LIKE = re.compile(r"\b(name|e-?mail|mail|phone|tel|mobile|cell)\b|[;|]", re.IGNORECASE)


def _well_formed(got: Extraction) -> None:
    assert isinstance(got, Extraction)
    assert set(got.errors) <= {"name", "email", "phone"}
    for field in ("name", "email", "phone"):
        if getattr(got, field) is not None:
            assert field in got.found
            assert field not in got.errors
        if field in got.errors:
            assert field in got.found
    assert got.fields().keys() == got.found.keys()


@FAST
@given(st.text(), regions)
def test_never_raises_on_any_text(text: str, region: str | None) -> None:
    _well_formed(extract_contact(text, region))


@FAST
@given(composed, regions)
def test_never_raises_on_realistic_fragments(text: str, region: str | None) -> None:
    _well_formed(extract_contact(text, region))


@FAST
@given(st.one_of(st.text(), composed), regions)
def test_never_invents_fields(text: str, region: str | None) -> None:
    got = extract_contact(text, region)
    if "@" not in text:
        assert got.email is None
        if not EMAIL_LABEL.search(text):
            assert "email" not in got.found
            assert "email" not in got.errors
    if not any(ch.isdigit() for ch in text):
        assert got.phone is None
        if not PHONE_LABEL.search(text):
            assert "phone" not in got.found
            assert "phone" not in got.errors
    if not any(ch.isalnum() for ch in text):
        assert "name" not in got.found


@FAST
@given(composed, regions)
def test_extracting_a_rendered_result_again_changes_nothing(text: str, region: str | None) -> None:
    got = extract_contact(text, region)
    if got.errors or (got.name and LABEL_LIKE.search(got.name)):
        return
    phone = f"{got.phone} ext. {got.phone_extension}" if got.phone_extension else got.phone
    rendered = " ".join(v for v in (got.name, got.email, phone) if v)
    again = extract_contact(rendered, region)
    assert (again.name, again.email, again.phone, again.phone_extension, again.errors) == (
        got.name,
        got.email,
        got.phone,
        got.phone_extension,
        {},
    )
