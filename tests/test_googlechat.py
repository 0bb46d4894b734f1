"""Google Chat, end to end: the real service under uvicorn, driven exactly as Chat drives it.

Events carry bearer tokens minted with the contract's test key (``tests/googlechat_standin.py``,
byte for byte what google-auth mints); the service fetches the keys from the stand-in
(``GOOGLE_CHAT_CERTS_URL``), posts later outcomes through the stand-in's Chat API, and
registers contacts in the Rocket.Chat stand-in. The contract's signed samples
(``tests/samples/googlechat``) verify against its certificate map.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from adapter.settings import Settings, SettingsError
from adapter.web.app import create_app
from handlers.googlechat import channel as googlechat_channel
from handlers.googlechat.tokens import TokenRefused, parse_keys, verify_token
from tests.conftest import Service, wait_until
from tests.discord_standin import load_http
from tests.googlechat_standin import KID, PROJECT_NUMBER, SAMPLES, GoogleChatStandIn, mint
from tests.rocketchat_standin import RocketChatStandIn

ENDPOINT_URL = "https://contacts.example.com/googlechat/events"
SAMPLE_NOW = 1795514460  # a minute after the samples' tokens were issued


@pytest.fixture
def chat() -> Iterator[GoogleChatStandIn]:
    standin = GoogleChatStandIn()
    with standin.serve():
        yield standin


@pytest.fixture
def start_chat(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    chat: GoogleChatStandIn,
) -> Callable[..., Service]:
    def start(
        channel: dict[str, str] | None = None, *, account: bool = True, **overrides: Any
    ) -> Service:
        settings = make_settings(
            channel_settings=chat.channel_settings(service_account=account, **(channel or {})),
            **overrides,
        )
        service = start_service(settings)
        chat.endpoint = service.url + "/googlechat/events"
        return service

    return start


@pytest.fixture
def service(start_chat: Callable[..., Service]) -> Service:
    return start_chat()


def deliveries(service: Service) -> list[dict[str, Any]]:
    path = service.settings.database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM deliveries ORDER BY created_at").fetchall()
    return [{**dict(r), "fields": json.loads(r["fields"]) if r["fields"] else None} for r in rows]


def contact_posts(standin: RocketChatStandIn) -> list[Any]:
    return [
        c
        for c in standin.calls
        if c.method == "POST" and c.path.startswith("/api/v1/omnichannel/contact")
    ]


def sample(name: str) -> tuple[str, bytes]:
    _, _, headers, body = load_http(SAMPLES / name)
    return headers["Authorization"].split(" ", 1)[1], body


def test_sample_tokens_verify_against_the_contract_certificates() -> None:
    keys = parse_keys(json.loads((SAMPLES / "test_certs.json").read_text()))
    assert set(keys) == {KID}
    for name in (
        "message_slash_command_projectnumber_jwt.http",
        "message_mention_projectnumber_jwt.http",
    ):
        token, _ = sample(name)
        claims = verify_token(
            token, keys, audience=PROJECT_NUMBER, project_number_mode=True, now=SAMPLE_NOW
        )
        assert claims["iss"] == "chat@system.gserviceaccount.com"
        with pytest.raises(TokenRefused, match="audience"):
            verify_token(
                token, keys, audience="999999999999", project_number_mode=True, now=SAMPLE_NOW
            )
        with pytest.raises(TokenRefused, match="expired"):
            verify_token(
                token,
                keys,
                audience=PROJECT_NUMBER,
                project_number_mode=True,
                now=claims["exp"] + 11,
            )
        with pytest.raises(TokenRefused, match=r"issuer must be accounts\.google\.com"):
            verify_token(
                token, keys, audience=PROJECT_NUMBER, project_number_mode=False, now=SAMPLE_NOW
            )
    id_token, _ = sample("card_clicked_submit_dialog_idtoken.http")
    claims = verify_token(
        id_token, keys, audience=ENDPOINT_URL, project_number_mode=False, now=SAMPLE_NOW
    )
    assert claims["email"] == "chat@system.gserviceaccount.com" and claims["email_verified"] is True
    with pytest.raises(TokenRefused, match="issuer must be chat@"):
        verify_token(
            id_token, keys, audience=ENDPOINT_URL, project_number_mode=True, now=SAMPLE_NOW
        )
    # A changed claim breaks the signature; alg "none" and other keys are refused.
    head, _, signature = id_token.split(".")
    changed = (
        base64.urlsafe_b64encode(
            json.dumps({**claims, "aud": ENDPOINT_URL, "email": "mallory@example.com"}).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    with pytest.raises(TokenRefused, match="signature"):
        verify_token(
            f"{head}.{changed}.{signature}",
            keys,
            audience=ENDPOINT_URL,
            project_number_mode=False,
            now=SAMPLE_NOW,
        )
    unsigned = base64.urlsafe_b64encode(b'{"alg":"none","kid":"%s"}' % KID.encode()).decode()
    with pytest.raises(TokenRefused, match="RS256"):
        verify_token(
            f"{unsigned}.{changed}.",
            keys,
            audience=ENDPOINT_URL,
            project_number_mode=False,
            now=SAMPLE_NOW,
        )
    other = mint(rsa.generate_private_key(public_exponent=65537, key_size=2048), claims)
    with pytest.raises(TokenRefused, match="signature"):
        verify_token(other, keys, audience=ENDPOINT_URL, project_number_mode=False, now=SAMPLE_NOW)


def test_the_stand_in_mints_tokens_exactly_as_google_auth_does(chat: GoogleChatStandIn) -> None:
    token, _ = sample("message_slash_command_projectnumber_jwt.http")
    claims = {
        "iss": "chat@system.gserviceaccount.com",
        "aud": PROJECT_NUMBER,
        "iat": 1795514400,
        "exp": 1795518000,
    }
    assert mint(chat.key, claims) == token


def test_slash_command_registers_the_contact_and_answers_privately(
    service: Service, chat: GoogleChatStandIn, standin: RocketChatStandIn
) -> None:
    _, body = sample("message_slash_command_projectnumber_jwt.http")
    answer = chat.send(json.loads(body))  # the sample's event, with a token issued now
    assert answer.status == 200 and answer.problems == []
    assert answer.body["privateMessageViewer"] == {"name": "users/112233445566778899001"}
    (record,) = deliveries(service)
    assert record["status"] == "delivered"
    assert "*Chris Doe* is now a contact in Rocket.Chat" in answer.body["text"]
    assert record["contact_id"] in answer.body["text"]
    assert record["event_id"] == "message:spaces/AAAAcontact1/messages/Xy1.Xy1"
    assert (record["source"], record["actor"]) == ("googlechat", "users/112233445566778899001")
    assert record["fields"]["phone"] == "+14155552671"
    assert len(contact_posts(standin)) == 1
    assert chat.fetches == 1 and chat.messages == []


def test_a_mention_registers_too(service: Service, chat: GoogleChatStandIn) -> None:
    _, body = sample("message_mention_projectnumber_jwt.http")
    answer = chat.send(json.loads(body))
    assert "*Kim Min-jun* is now a contact" in answer.body["text"]
    (record,) = deliveries(service)
    assert record["fields"]["phone"] == "+821012345678"


def test_invalid_text_offers_a_form_whose_dialog_shows_each_problem(
    service: Service, chat: GoogleChatStandIn, standin: RocketChatStandIn
) -> None:
    answer = chat.send(chat.slash("Chris Doe chris@ +1 555"))
    assert answer.problems == []
    assert "*Email*: 'chris@' is not a valid email address" in answer.body["text"]
    assert "*Phone*: '+1 555' is not a valid phone number" in answer.body["text"]
    assert answer.body["privateMessageViewer"]["name"].startswith("users/")
    assert deliveries(service) == []

    opened = chat.send(chat.click_open_form(answer))
    assert opened.problems == []
    widgets = opened.body["actionResponse"]["dialogAction"]["dialog"]["body"]["sections"][0][
        "widgets"
    ]
    inputs = {w["textInput"]["name"]: w["textInput"] for w in widgets if "textInput" in w}
    assert inputs["contactName"]["value"] == "Chris Doe"
    assert inputs["contactPhone"]["value"] == "+1 555"
    assert "not a valid phone number" in inputs["contactPhone"]["hintText"]

    again = chat.send(chat.submit_dialog(opened, {"contactEmail": "chris@example"}))
    widgets = again.body["actionResponse"]["dialogAction"]["dialog"]["body"]["sections"][0][
        "widgets"
    ]
    inputs = {w["textInput"]["name"]: w["textInput"] for w in widgets if "textInput" in w}
    assert "not a valid email address" in inputs["contactEmail"]["hintText"]
    assert deliveries(service) == []

    done = chat.send(
        chat.submit_dialog(
            again, {"contactEmail": "chris@example.com", "contactPhone": "+1 415 555 2671"}
        )
    )
    status = done.body["actionResponse"]["dialogAction"]["actionStatus"]
    assert status["statusCode"] == "OK"
    assert status["userFacingMessage"].startswith("✅ Chris Doe is now a contact")
    (record,) = deliveries(service)
    assert record["status"] == "delivered" and record["event_id"].startswith("dialog:")
    assert len(contact_posts(standin)) == 1


def test_id_token_mode_and_the_contract_dialog_submission(
    start_chat: Callable[..., Service], chat: GoogleChatStandIn
) -> None:
    service = start_chat({"GOOGLE_CHAT_AUDIENCE": ENDPOINT_URL})
    _, body = sample("card_clicked_submit_dialog_idtoken.http")
    now = int(time.time())
    token = chat.token(
        iss="https://accounts.google.com",
        aud=ENDPOINT_URL,
        azp="113344556677889900112",
        sub="113344556677889900112",
        email="chat@system.gserviceaccount.com",
        email_verified=True,
        iat=now,
        exp=now + 3600,
    )
    answer = chat.send(json.loads(body), token=token)
    assert answer.status == 200 and answer.problems == []
    widgets = answer.body["actionResponse"]["dialogAction"]["dialog"]["body"]["sections"][0][
        "widgets"
    ]
    inputs = {w["textInput"]["name"]: w["textInput"] for w in widgets if "textInput" in w}
    assert "'chris.doe@example' is not a valid email address" in inputs["contactEmail"]["hintText"]
    assert deliveries(service) == []
    # A project-number token is refused in this mode.
    assert chat.send(chat.slash("Chris Doe chris@example.com +14155552671")).status == 401


def test_a_command_set_to_open_a_dialog_gets_it_prefilled(
    service: Service, chat: GoogleChatStandIn
) -> None:
    answer = chat.send(chat.slash("Dana Lee dana@example.com", dialog=True))
    assert answer.problems == []
    widgets = answer.body["actionResponse"]["dialogAction"]["dialog"]["body"]["sections"][0][
        "widgets"
    ]
    inputs = {w["textInput"]["name"]: w["textInput"] for w in widgets if "textInput" in w}
    assert inputs["contactName"]["value"] == "Dana Lee"
    assert "is required" in inputs["contactPhone"]["hintText"]


def test_a_late_outcome_is_posted_privately_through_the_chat_api(
    service: Service, chat: GoogleChatStandIn, standin: RocketChatStandIn
) -> None:
    standin.down = True
    event = chat.slash("Chris Doe chris@example.com +1 415 555 2671")
    answer = chat.send(event)
    assert answer.problems == []
    assert "Registering *Chris Doe*" in answer.body["text"]
    assert deliveries(service)[0]["status"] == "pending"
    standin.down = False
    (posted,) = wait_until(lambda: chat.messages, timeout=15, what="the Chat API message")
    assert posted["space"] == "spaces/AAAAcontact1"
    assert posted["body"]["privateMessageViewer"] == {"name": "users/112233445566778899001"}
    assert posted["body"]["thread"] == event["message"]["thread"]
    assert "*Chris Doe* is now a contact in Rocket.Chat" in posted["body"]["text"]
    assert chat.token_grants == 1


def test_without_a_service_account_the_answer_says_what_happens(
    start_chat: Callable[..., Service], chat: GoogleChatStandIn, standin: RocketChatStandIn
) -> None:
    start_chat(account=False)
    standin.down = True
    answer = chat.send(chat.slash("Chris Doe chris@example.com +1 415 555 2671"))
    assert "registered as soon as it does" in answer.body["text"]
    assert "follows here" not in answer.body["text"]


def test_forged_expired_misaddressed_and_replayed_requests_store_nothing(
    service: Service, chat: GoogleChatStandIn, standin: RocketChatStandIn
) -> None:
    event = chat.slash("Chris Doe chris@example.com +1 415 555 2671")
    body = json.dumps(event).encode()
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    refused = {
        "forged": mint(
            other_key,
            {"iss": "chat@system.gserviceaccount.com", "aud": PROJECT_NUMBER, "exp": now + 60},
        ),
        "expired": chat.token(iat=now - 3700, exp=now - 100),
        "audience": chat.token(aud="999999999999"),
        "issuer": chat.token(iss="someone@example.iam.gserviceaccount.com"),
        "garbage": "not-a-jwt",
    }
    for why, token in refused.items():
        response = chat.post(body, token=token)
        assert response.status_code == 401, why
        assert "only requests from Google Chat" in response.json()["error"], why
    assert chat.post(body, token="").status_code == 401
    assert deliveries(service) == [] and contact_posts(standin) == []

    token = chat.token()
    first = chat.post(body, token=token)
    replay = chat.post(body, token=token)  # the same request again (or Chat retrying it)
    assert "is now a contact" in first.json()["text"]
    assert replay.status_code == 200
    assert "was already registered" in replay.json()["text"]
    assert len(deliveries(service)) == 1 and len(contact_posts(standin)) == 1


def test_keys_are_cached_and_fetched_again_for_a_new_key(
    service: Service, chat: GoogleChatStandIn
) -> None:
    for _ in range(3):
        assert chat.send(chat.slash("")).status == 200
    assert chat.fetches == 1
    key, kid = chat.rotate()
    now = int(time.time())
    rotated = mint(
        key,
        {
            "iss": "chat@system.gserviceaccount.com",
            "aud": PROJECT_NUMBER,
            "iat": now,
            "exp": now + 600,
        },
        kid,
    )
    assert chat.send(chat.slash(""), token=rotated).status == 200
    assert chat.fetches == 2
    unknown = mint(
        key,
        {"iss": "chat@system.gserviceaccount.com", "aud": PROJECT_NUMBER, "exp": now + 600},
        "never-published",
    )
    assert chat.send(chat.slash(""), token=unknown).status == 401
    assert chat.fetches == 2  # an unknown kid refetches at most every 30 s


def test_usage_message_opens_an_empty_form(service: Service, chat: GoogleChatStandIn) -> None:
    answer = chat.send(chat.slash("help"))
    assert "/contact Chris Doe" in answer.body["text"]
    opened = chat.send(chat.click_open_form(answer))
    widgets = opened.body["actionResponse"]["dialogAction"]["dialog"]["body"]["sections"][0][
        "widgets"
    ]
    assert all("value" not in w["textInput"] for w in widgets if "textInput" in w)


def test_malformed_and_oversized_events_are_refused(
    start_chat: Callable[..., Service], chat: GoogleChatStandIn
) -> None:
    service = start_chat({"GOOGLE_CHAT_MAX_BODY_BYTES": "2048"})
    cases = {
        b'{"type": "MESSAGE", "message": "hello"}': "'message' must be an object",
        b'{"message": {}}': "'type' is missing",
        b"[]": "must be a JSON object",
        b'{"type": "CARD_CLICKED", "common": {"formInputs": {"contactName": {"stringInputs": {"value": [1]}}}}}': "must be strings",
        b'{"type": "MESSAGE", "x": "\xff"}': "UTF-8",
    }
    for body, expected in cases.items():
        response = chat.post(body)
        assert response.status_code == 400, body
        assert expected in response.json()["error"], (body, response.json())
    big = json.dumps(chat.slash("x" * 3000)).encode()
    assert chat.post(big).status_code == 413
    assert deliveries(service) == []


def test_off_without_an_audience_and_malformed_settings_stop_start_up(
    make_settings: Callable[..., Settings], start_service: Callable[[Settings], Service]
) -> None:
    service = start_service(make_settings())
    response = service.client.post("/googlechat/events", content=b"{}")
    assert response.status_code == 503 and "GOOGLE_CHAT_AUDIENCE" in response.json()["error"]
    for settings, variable in (
        ({"GOOGLE_CHAT_AUDIENCE": "my-project"}, "GOOGLE_CHAT_AUDIENCE"),
        (
            {"GOOGLE_CHAT_AUDIENCE": PROJECT_NUMBER, "GOOGLE_CHAT_SERVICE_ACCOUNT": "{}"},
            "GOOGLE_CHAT_SERVICE_ACCOUNT",
        ),
        (
            {"GOOGLE_CHAT_AUDIENCE": PROJECT_NUMBER, "GOOGLE_CHAT_CERTS_URL": "ftp://x"},
            "GOOGLE_CHAT_CERTS_URL",
        ),
    ):
        with pytest.raises(SettingsError, match=variable):
            googlechat_channel.check(make_settings(channel_settings=settings))
        with pytest.raises(SettingsError, match=variable):
            create_app(make_settings(channel_settings=settings))  # the service does not start
