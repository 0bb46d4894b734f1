"""Outcomes in plain words (pure): HTML error pages as one sentence, reasons first."""

from __future__ import annotations

from adapter.core.plain import plain_error, reason_of, short_reference

NGINX = (
    "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n"
    "<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</cen"
)  # cut at 200 bytes, as the client keeps it


def test_an_html_error_page_is_its_first_sentence_after_what_precedes_it() -> None:
    error = f"Rocket.Chat at http://chat.example.com:3000 answered 503: {NGINX}"
    assert plain_error(error) == (
        "Rocket.Chat at http://chat.example.com:3000 answered 503: "
        "503 Service Temporarily Unavailable."
    )
    assert plain_error(
        "answered 502: <html><body><h1>502 Bad Gateway</h1>\nThe server returned an "
        "invalid response.\n</body></html>"
    ) == ("answered 502: 502 Bad Gateway.")
    assert plain_error("answered 500: <p>Fish &amp; chips. More.</p>") == (
        "answered 500: Fish & chips."
    )
    long = "answered 500: <p>" + "word " * 100 + "</p>"
    assert len(plain_error(long, limit=50)) <= len("answered 500: ") + 50
    assert plain_error(long, limit=50).endswith("…")


def test_text_without_markup_is_left_as_it_is() -> None:
    for text in ("timed out after 10 s", "a < b and c > d", "answered 503: Service Unavailable"):
        assert plain_error(text) == text


def test_a_rejected_deliverys_reason_is_its_field_errors_masked_unless_asked() -> None:
    errors = {"email": "'chris@' is not a valid email address", "phone": "is required"}
    masked = reason_of("rejected", None, errors)
    assert masked.startswith("rejected: email: ")
    assert "chris@" not in masked and "phone: is required" in masked
    assert "'chris@'" in reason_of("rejected", None, errors, masked=False)
    assert reason_of("failed", f"answered 503: {NGINX}", None).endswith("Unavailable.")
    assert reason_of("delivered", None, None) == ""


def test_the_short_reference_is_the_ids_start_in_two_groups() -> None:
    assert short_reference("3f2a9c1b0d4e4f5a8b7c6d5e4f3a2b1c") == "3F2A-9C1B"
