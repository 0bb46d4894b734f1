"""adapter.core.payloads: the pure helpers every webhook provider reads its payload with."""

from __future__ import annotations

import re
from typing import Any

import pytest

from adapter.channels import webhooks
from adapter.core.payloads import (
    MAX_CUSTOM_VALUE,
    NO_CONTACT,
    Answer,
    PayloadError,
    custom_value,
    dig,
    event_kind,
    json_kind,
    json_object,
    map_answers,
    mapped_value,
    mapping_setting,
    member,
    no_contact_reason,
    norm,
    phone_in_text,
    real_name,
    scalar_text,
    setting_list,
    stringified,
    text_value,
)


def settings(**values: str) -> Any:
    return values.get


def test_payload_error_is_the_one_webhooks_catches() -> None:
    assert webhooks.PayloadError is PayloadError
    assert issubclass(PayloadError, ValueError)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "null"),
        (True, "boolean"),
        (3, "number"),
        (1.5, "number"),
        ("x", "string"),
        ([], "array"),
        ({}, "object"),
    ],
)
def test_json_kind(value: object, kind: str) -> None:
    assert json_kind(value) == kind


def test_json_object_reads_an_object() -> None:
    assert json_object(b'{"a": 1}') == {"a": 1}
    assert json_object(b'\xef\xbb\xbf{"a": 1}', "an object") == {"a": 1}  # UTF-8 BOM


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", r"^the body is not valid JSON \(Expecting"),
        (b"\xff\xfe", r"^the body is not valid JSON \("),
        (b"[1, 2]", r"^expected a JSON object$"),
        (b'"text"', r"^expected a JSON object$"),
    ],
)
def test_json_object_without_expected_is_short(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        json_object(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", r"^expected a form; the body is not valid JSON \(Expecting"),
        (b"\xff\xfe", r"^expected a form; the body is not UTF-8 text$"),
        (b"[1, 2]", r"^expected a form; got a JSON array$"),
        (b"null", r"^expected a form; got a JSON null$"),
    ],
)
def test_json_object_with_expected_says_what_was_expected(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        json_object(body, "a form")


def test_json_object_encodings() -> None:
    utf16 = '{"a": "é"}'.encode("utf-16")
    assert json_object(utf16) == {"a": "é"}  # chat widgets: whatever json.loads detects
    with pytest.raises(PayloadError, match="not UTF-8"):
        json_object(utf16, "a form")  # form tools: UTF-8 only (RFC 8259)


def test_json_object_too_deep_or_too_big_is_a_payload_error() -> None:
    deep = b"[" * 200_000  # json.loads raises RecursionError, not JSONDecodeError
    with pytest.raises(PayloadError, match=r"^the body is not valid JSON \(nested too deeply\)$"):
        json_object(deep)
    with pytest.raises(PayloadError, match=r"^expected a form; the body is not valid JSON"):
        json_object(b'{"a": ' + b"[" * 200_000, "a form")
    with pytest.raises(PayloadError, match="not valid JSON"):
        json_object(b'{"a": ' + b"9" * 5000 + b"}")  # over Python's int-string limit
    assert stringified(deep) is None  # Crisp/Tally's second try: no signature, not a crash


def test_stringified_is_what_json_stringify_gives() -> None:
    assert stringified(b'{ "a": 1,\n "b": "\xc3\xa9" }') == '{"a":1,"b":"é"}'.encode()
    assert stringified(b'{"a":1}') is None  # already compact: nothing else to try
    assert stringified(b"{not json") is None
    assert stringified(b"\xff") is None


def test_member_checks_kind_and_presence() -> None:
    data = {"chat": {"id": "c1"}, "users": "x", "none": None}
    assert member(data, "chat", dict, "payload") == {"id": "c1"}
    assert member(data, "thread", dict, "payload", required=False) is None
    assert member(data, "none", list, "payload", required=False) is None
    with pytest.raises(
        PayloadError, match=r"^expected payload\.thread to be an object, got missing"
    ):
        member(data, "thread", dict, "payload")
    with pytest.raises(
        PayloadError, match=r"^expected payload\.users to be an array, got a JSON string"
    ):
        member(data, "users", list, "payload")
    with pytest.raises(PayloadError, match=r"to be int, got a JSON null"):
        member(data, "none", int, "payload")


def test_dig_follows_a_path_of_objects() -> None:
    data = {"a": {"b": {"c": 1}}, "l": [1]}
    assert dig(data, "a", "b", "c") == 1
    assert dig(data) is data
    assert dig(data, "a", "x", "c") is None
    assert dig(data, "l", "0") is None  # arrays are not objects
    assert dig(None, "a") is None


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (" Chris ", "Chris"),
        ("  ", None),
        ("", None),
        (42, "42"),
        (1.5, "1.5"),
        (True, None),
        (False, None),
        (None, None),
        (["a"], None),
        ({"a": 1}, None),
    ],
)
def test_scalar_text(value: object, text: str | None) -> None:
    assert scalar_text(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (" Chris ", " Chris "),
        ("  ", None),
        (None, None),
        (True, "yes"),
        (False, "no"),
        (7, "7"),
        (["a", None, "", 2], "a, 2"),
        ([], None),
        ([" "], None),
    ],
)
def test_text_value(value: object, text: str | None) -> None:
    assert text_value(value) == text


def test_text_value_refuses_objects_naming_where() -> None:
    with pytest.raises(PayloadError, match=r"^expected the answer to be text, got a JSON object"):
        text_value({"street": "x"})
    with pytest.raises(PayloadError, match=r"^expected answers\.Address to be text"):
        text_value([{"street": "x"}], "answers.Address")


def test_custom_value_is_short_text_or_nothing() -> None:
    assert custom_value("  Acme  ") == "Acme"
    assert custom_value(["a", "b"]) == "a, b"
    assert custom_value({"an": "object"}) is None
    assert custom_value(None) is None
    assert custom_value(False) == "no"
    assert custom_value("x" * (MAX_CUSTOM_VALUE + 5)) == "x" * MAX_CUSTOM_VALUE


def test_real_name_drops_placeholders() -> None:
    placeholder = re.compile(r"^visitor\d+$")
    assert real_name("visitor493603", placeholder) is None
    assert real_name("Visitor Jane", placeholder) == "Visitor Jane"
    assert real_name(None, placeholder) is None


def test_phone_in_text_takes_one_international_number() -> None:
    assert phone_in_text("Call me on +44 20 7946 0958 please") == "+44 20 7946 0958"
    assert phone_in_text("+44 20 7946 0958 or +442079460958") == "+442079460958"  # the same one
    assert phone_in_text("+44 20 7946 0958 or +1 415 555 2671") is None  # which one?
    assert phone_in_text("call 020 7946 0958") is None  # not international
    assert phone_in_text("") is None
    assert phone_in_text(None) is None
    assert phone_in_text(4155552671) is None


def test_no_contact_reason() -> None:
    assert no_contact_reason({"name": "Chris", "email": None, "phone": None}) == NO_CONTACT
    assert no_contact_reason({"name": "Chris"}, "the visitor left no email or phone") == (
        "the visitor left no email or phone"
    )
    assert no_contact_reason({"email": "chris@example.com"}) is None
    assert no_contact_reason({"phone": "+14155552671", "email": ""}) is None


def test_setting_list() -> None:
    assert setting_list(settings(X=" a, ,b ,, c"), "X") == ("a", "b", "c")
    assert setting_list(settings(X=""), "X") == ()
    assert setting_list(settings(), "X") == ()


def test_mapped_value_follows_the_setting_then_the_sources() -> None:
    lookup = settings(P_FIELD_PHONE="mobile, phone")
    contact = {"phone": "+1 415 555 2671", "mobile": "  "}
    conversation = {"mobile": "+44 20 7946 0958"}
    # Keys in the setting's order, each in every source: "mobile" wins over "phone".
    assert mapped_value(lookup, "P_FIELD_PHONE", contact, conversation) == "+44 20 7946 0958"
    assert mapped_value(lookup, "P_FIELD_PHONE", contact) == "+1 415 555 2671"
    assert mapped_value(lookup, "P_FIELD_PHONE", None, "text", contact) == "+1 415 555 2671"
    assert mapped_value(lookup, "P_FIELD_NAME", contact) is None  # not set
    assert mapped_value(settings(P_FIELD_X="n"), "P_FIELD_X", {"n": True}) is None


def test_norm_folds_case_accents_and_punctuation() -> None:
    assert norm("  Téléphone (mobile) ") == "telephone mobile"
    assert norm("first_name") == "first name"
    assert norm(12) == "12"


def test_mapping_setting_alternatives_and_joins() -> None:
    lookup = settings(T_FIELD_NAME="First_Name + Last Name, full-name, +, ")
    assert mapping_setting(lookup, "T_FIELD_NAME") == (("first name", "last name"), ("full name",))
    assert mapping_setting(lookup, "T_FIELD_EMAIL") == ()


def answer(label: str, value: str | None, kind: str = "text") -> Answer:
    return Answer((norm(label),), kind, value)


def test_map_answers_defaults_by_kind_then_label() -> None:
    answers = [
        answer("Company", "Acme", "short_text"),
        answer("Where can we write?", "chris@example.com", "email"),
        answer("First name", "Chris"),
        answer("Last name", "Doe"),
        answer("Your mobile number", "+1 415 555 2671"),
    ]
    fields = map_answers(answers, lookup=settings(), prefix="T", email_kinds=("email",))
    assert fields == {"name": "Chris Doe", "email": "chris@example.com", "phone": "+1 415 555 2671"}


def test_map_answers_fallback_name_kind_and_missing() -> None:
    answers = [answer("Company", "Acme", "short_text"), answer("Email", None)]
    fields = map_answers(
        answers, lookup=settings(), prefix="T", fallback_name_kinds=("short_text",)
    )
    assert fields == {"name": "Acme", "email": None, "phone": None}


def test_map_answers_configured_mapping_comes_first() -> None:
    answers = [
        answer("Name", "Label Name"),
        answer("given", " Chris "),
        answer("family", "Doe"),
        answer("Email", "label@example.com"),
        answer("work address", "chris@example.com"),
        answer("Phone", "+1 415 555 2671"),
    ]
    lookup = settings(
        T_FIELD_NAME="given+family", T_FIELD_EMAIL="unanswered, work address", T_FIELD_PHONE="x"
    )
    fields = map_answers(answers, lookup=lookup, prefix="T")
    # A configured mapping nobody answered falls back to the defaults (the label "Phone").
    assert fields == {"name": "Chris Doe", "email": "chris@example.com", "phone": "+1 415 555 2671"}


def test_unless_unreachable_ignores_an_event_without_email_or_phone() -> None:
    event = webhooks.WebhookEvent.unless_unreachable(
        "e1",
        {"name": "Chris", "email": None},
        event_type="t",
        person_key="p",
        custom_fields={"a": "b"},
    )
    assert event == webhooks.WebhookEvent("e1", ignored=NO_CONTACT, event_type="t")
    fields = {"name": "Chris", "email": "chris@example.com", "phone": None}
    event = webhooks.WebhookEvent.unless_unreachable("e1", fields, event_type="t")
    assert event == webhooks.WebhookEvent("e1", fields=fields, event_type="t")


def test_unless_unreachable_says_why_in_the_providers_words() -> None:
    why = "the visitor left no email or phone"
    event = webhooks.WebhookEvent.unless_unreachable(
        "e1", {"name": "Chris", "phone": ""}, event_type="chat:start", reason=why
    )
    assert event == webhooks.WebhookEvent("e1", ignored=why, event_type="chat:start")
    fields = {"name": "Chris", "phone": "+14155552671"}
    event = webhooks.WebhookEvent.unless_unreachable("e1", fields, event_type="t", reason=why)
    assert event.ignored is None and event.fields == fields


def test_event_kind_is_a_string_or_says_what_was_expected() -> None:
    assert event_kind({"eventType": "FORM_RESPONSE"}, "eventType", "a form") == "FORM_RESPONSE"
    with pytest.raises(PayloadError, match=r"^expected a form; eventType is missing$"):
        event_kind({}, "eventType", "a form")
    with pytest.raises(PayloadError, match=r"^expected a form; eventType is not a string$"):
        event_kind({"eventType": 3}, "eventType", "a form")
