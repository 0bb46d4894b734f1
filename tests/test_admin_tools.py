"""The admin console's operator tools over HTTP, against the Rocket.Chat stand-in: finding a
person, filters that combine, plain outcomes (reasons first, HTML error pages as text, the
outage banner, "the worker is behind"), retry from the list, "Test connection", the CSV
export, and the root status page."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from adapter.core.plain import short_reference
from adapter.settings import Settings
from tests.conftest import ADMIN_TOKEN, BOT, Service, csrf_of, wait_until
from tests.rocketchat_standin import RocketChatStandIn
from tests.test_admin import COMPANY, log_in
from tests.test_cli import run
from tests.webhook_samples import SECRETS, sign

CHRIS = {"name": "Chris Doe", "email": "chris@example.com", "phone": "+1 415 555 2671"}
SAM = {"name": "Sam Poe", "email": "sam@example.net", "phone": "+44 20 7946 0958"}


@pytest.fixture
def service(
    make_settings: Callable[..., Settings], start_service: Callable[[Settings], Service]
) -> Service:
    """The service with the generic webhook on (it keeps rejected contacts, the API does
    not) and national numbers read as US ones."""
    settings = make_settings(
        default_phone_region="US", channel_settings={"GENERIC_WEBHOOK_SECRET": SECRETS["generic"]}
    )
    return start_service(settings)


def post_generic(service: Service, **body: str) -> dict[str, str]:
    """A signed post to the generic webhook; its JSON answer."""
    raw = json.dumps(body).encode()
    answer = service.client.post("/webhooks/generic", content=raw, headers=sign("generic", raw))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


@pytest.fixture
def admin(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30, follow_redirects=False) as client:
        client.headers["x-csrf"] = log_in(client)  # kept here for the tests' posts
        yield client


def csrf(client: httpx.Client) -> str:
    return client.headers["x-csrf"]


def find(client: httpx.Client, q: str, **filters: str) -> httpx.Response:
    """The list form posted with a search, as the page's Filter button sends it."""
    answer = client.post("/admin/deliveries", data={"csrf_token": csrf(client), "q": q, **filters})
    assert answer.status_code == 200, answer.text
    return answer


def listed_ids(html: str) -> list[str]:
    """The deliveries a list page shows, in order."""
    return re.findall(r'<a href="/admin/deliveries/([0-9a-f]{32})" aria-label="Delivery', html)


def test_find_a_person_by_email_phone_reference_or_event_id_never_listing_them(
    service: Service, admin: httpx.Client
) -> None:
    chris = service.post_contact(**CHRIS, event_id="evt-chris-1").json()["delivery_id"]
    sam = service.post_contact(**SAM).json()["delivery_id"]
    bad = post_generic(service, name="Jane Roe", email="JANE@Example.org", phone="+1 555")
    assert bad["status"] == "rejected"  # the phone is not a number; the row is kept
    jane = bad["delivery_id"]
    service.settled(chris)
    service.settled(sam)

    # An email or phone as the admin types it: normalised as on intake, matched exactly.
    # (A national number, as here, is read in DEFAULT_PHONE_REGION, as on intake.)
    for typed in ("Chris@EXAMPLE.com ", "+14155552671", "+1 (415) 555-2671", "(415) 555-2671"):
        page = find(admin, typed)
        assert listed_ids(page.text) == [chris], typed
    assert listed_ids(find(admin, "+44 20 7946 0958").text) == [sam]
    # A rejected row stores no person keys: its email as given still finds it.
    assert listed_ids(find(admin, "jane@example.org").text) == [jane]
    # The short reference a visitor was shown, the delivery id, the source's event id.
    assert listed_ids(find(admin, short_reference(sam).lower()).text) == [sam]
    assert listed_ids(find(admin, sam.upper()).text) == [sam]
    assert listed_ids(find(admin, "evt-chris-1").text) == [chris]
    # Matched, never listed: the rows stay masked, no full value of anyone appears.
    page = find(admin, "chris@example.com")
    rows = page.text.split("<tbody>", 1)[1]
    assert "c***@example.com" in rows and "C**** D**" in rows
    for secret in ("chris@example.com", "Chris Doe", "+14155552671", "sam@example.net"):
        assert secret not in rows
    # Only the full value matches: a start of an email or a number is not a lookup.
    nothing = find(admin, "chris@")
    assert listed_ids(nothing.text) == []
    assert "must be the full value" in nothing.text
    assert listed_ids(find(admin, "415555").text) == []
    # A search is posted, not put in the URL (routers log paths): no redirect, no query.
    assert "q=" not in str(page.url)


def test_filters_combine_with_each_other_and_with_the_search(
    service: Service, standin: RocketChatStandIn, admin: httpx.Client
) -> None:
    delivered = service.post_contact(**CHRIS).json()["delivery_id"]
    service.settled(delivered)
    posted = service.client.post("/forms/default", data=SAM, headers={"accept": "application/json"})
    assert "delivery_id" not in posted.json()  # a public form names no delivery
    operator = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    newest = service.client.get("/deliveries?source=form&limit=1", headers=operator)
    form = newest.json()["deliveries"][0]["id"]
    service.settled(form)
    standin.custom_fields["company"] = dict(COMPANY)
    failed = service.post_contact(**CHRIS).json()["delivery_id"]
    assert service.settled(failed)["status"] == "failed"

    def get(**params: str) -> list[str]:
        answer = admin.get("/admin/deliveries", params=params)
        assert answer.status_code == 200
        return listed_ids(answer.text)

    assert set(get()) == {delivered, failed, form}
    assert get(status="failed") == [failed]
    assert get(channel="form") == [form]
    assert get(channel="api", status="failed") == [failed]
    assert get(channel="form", status="failed") == []
    assert set(get(channel="api", period="24h")) == {delivered, failed}
    # A channel is matched as it is: '%' and '_' are not wildcards.
    assert get(channel="%") == []
    assert get(channel="a_i") == []
    assert get(channel="ap%") == []
    # The search narrows by the filters too.
    assert listed_ids(find(admin, "chris@example.com", status="failed").text) == [failed]
    assert set(listed_ids(find(admin, "chris@example.com").text)) == {delivered, failed}
    assert listed_ids(find(admin, "chris@example.com", channel="form").text) == []
    # Filters alone, posted, go back to the bookmarkable GET list.
    plain = admin.post(
        "/admin/deliveries", data={"csrf_token": csrf(admin), "q": "", "status": "failed"}
    )
    assert plain.status_code == 303
    assert plain.headers["location"] == "/admin/deliveries?status=failed"


def test_a_rejected_delivery_shows_its_reason_first_in_the_list_the_page_and_the_cli(
    service: Service, admin: httpx.Client, tmp_path: Path
) -> None:
    jane = post_generic(service, name="Jane Roe", email="jane@example", phone="+1 555")[
        "delivery_id"
    ]
    listing = admin.get("/admin/deliveries", params={"status": "rejected"}).text
    row = listing.split(f"/admin/deliveries/{jane}", 1)[1].split("</tr>", 1)[0]
    last_error = row.split('class="last-error">', 1)[1].split("</td>", 1)[0]
    assert last_error.startswith("rejected: ")
    assert "is not a valid email address" in last_error
    assert "jane@example" not in last_error  # masked

    page = admin.get(f"/admin/deliveries/{jane}").text
    reason = page.index('id="reason"')
    assert reason < page.index("What happened")  # first, not under the contact details
    first = page[reason:].split("</p>", 1)[0]
    assert "is not a valid email address" in first and "is not a valid phone number" in first
    assert "jane@example" not in first and "+1 555" not in first
    assert 'Last error</dt><dd><span class="muted">none' not in page

    env = {
        "DATABASE_URL": service.settings.database_url,
        "ROCKETCHAT_URL": service.settings.rocketchat_url,
        "ROCKETCHAT_USER_ID": BOT["user_id"],
        "ROCKETCHAT_AUTH_TOKEN": BOT["token"],
    }
    listed = run(["deliveries", "list", "--status", "rejected"], tmp_path, **env)
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if x.startswith(jane))
    assert "rejected: " in line and "is not a valid email address" in line
    assert "jane@example" not in line


def test_html_error_pages_are_text_and_an_outage_has_a_banner_until_it_is_over(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    service = start_service(make_settings(retry_first_delay=0.05, retry_max_delay=30.0))
    with httpx.Client(base_url=service.url, timeout=30, follow_redirects=False) as admin:
        log_in(admin)
        standin.fault_html = True
        standin.down = True  # nginx answers 503 with its HTML page
        ids = [
            service.post_contact(**CHRIS).json()["delivery_id"],
            service.post_contact(**SAM).json()["delivery_id"],
            service.post_contact(
                name="Ana", email="ana@example.com", phone="+1 212 555 0199"
            ).json()["delivery_id"],
        ]
        dashboard = wait_until(
            lambda: (page := admin.get("/admin").text) and 'id="outage"' in page and page,
            what="the outage banner",
        )
        banner = dashboard.split('id="outage"', 1)[1].split("</div>", 1)[0]
        assert "Rocket.Chat is not answering" in banner
        assert " since " in banner and "ago)" in banner
        assert "the next probe is" in banner
        # The banner is on every admin page, with the way to look again at once.
        listing = admin.get("/admin/deliveries").text
        assert 'id="outage"' in listing and "Test connection now" in listing

        detail = admin.get(f"/admin/deliveries/{ids[0]}").text
        history = detail.split("h-attempts", 1)[1]
        assert "503 Service Unavailable" in history
        assert "<html>" not in history and "&lt;html&gt;" not in history
        assert "nginx" not in history  # cut to the first sentence

        standin.down = False
        wait_until(
            lambda: all(service.delivery(i)["status"] == "delivered" for i in ids),
            timeout=40,
            what="the held-back deliveries delivered",
        )
        assert 'id="outage"' not in admin.get("/admin").text


def test_a_next_attempt_in_the_past_says_the_worker_is_behind(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    service = start_service(make_settings(inprocess_worker=False, fast_path_budget=0))
    with httpx.Client(base_url=service.url, timeout=30, follow_redirects=False) as admin:
        log_in(admin)
        delivery_id = service.post_contact(**CHRIS).json()["delivery_id"]
        # Nothing runs the queue: once its due time is a few seconds past, say so.
        page = wait_until(
            lambda: (
                "overdue" in (text := admin.get(f"/admin/deliveries/{delivery_id}").text) and text
            ),
            timeout=15,
            interval=0.5,
            what="the overdue note",
        )
        note = page.split('id="next-attempt"', 1)[1].split("</span>", 1)[0]
        assert "the worker is behind" in note and "INPROCESS_WORKER" in note
        assert service.delivery(delivery_id)["status"] == "pending"


def test_retry_from_the_list_comes_back_to_the_list_and_is_not_styled_destructive(
    service: Service, standin: RocketChatStandIn, admin: httpx.Client
) -> None:
    standin.custom_fields["company"] = dict(COMPANY)
    failed = service.post_contact(**CHRIS).json()["delivery_id"]
    assert service.settled(failed)["status"] == "failed"
    page = admin.get("/admin/deliveries", params={"status": "failed"}).text
    button = re.search(
        rf'<form method="post" action="/admin/deliveries/{failed}/retry".*?</form>', page, re.S
    )
    assert button is not None, "no retry button in the failed row"
    assert 'name="back" value="/admin/deliveries?status=failed"' in button.group(0)
    assert 'class="danger"' not in page  # neither the row's nor "Retry all"

    del standin.custom_fields["company"]
    answer = admin.post(
        f"/admin/deliveries/{failed}/retry",
        data={"csrf_token": csrf_of(page), "back": "/admin/deliveries?status=failed"},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/deliveries?status=failed&notice=retried-one"
    assert "queued again" in admin.get(answer.headers["location"]).text
    wait_until(lambda: service.delivery(failed)["status"] == "delivered")
    # "back" only ever returns to the list: anything else goes to the delivery's page.
    elsewhere = admin.post(
        f"/admin/deliveries/{failed}/retry",
        data={"csrf_token": csrf_of(page), "back": "https://evil.example/"},
    )
    assert elsewhere.headers["location"].startswith(f"/admin/deliveries/{failed}?")


def test_test_connection_checks_now_and_lifts_a_credentials_pause_at_once(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    # Looks whether a pause is over only every 10 minutes on its own.
    service = start_service(make_settings(auth_check_interval=600.0))
    with httpx.Client(base_url=service.url, timeout=30, follow_redirects=False) as admin:
        token = log_in(admin)
        assert admin.get("/readyz").status_code == 200  # the cached answer: ok
        standin.set_credentials_valid(BOT["user_id"], False)
        delivery_id = service.post_contact(**CHRIS).json()["delivery_id"]
        dashboard = wait_until(
            lambda: 'id="paused"' in (text := admin.get("/admin").text) and text,
            what="the pause banner",
        )
        assert "Test connection" in dashboard

        answer = admin.post("/admin/test-connection", data={"csrf_token": token})
        assert answer.status_code == 200
        result = answer.text.split('id="connection-result"', 1)[1].split("</div>", 1)[0]
        assert "not usable right now" in result and "401" in result  # not the cached "ok"

        standin.set_credentials_valid(BOT["user_id"], True)
        answer = admin.post("/admin/test-connection", data={"csrf_token": token})
        result = answer.text.split('id="connection-result"', 1)[1].split("</div>", 1)[0]
        assert "accepts the credentials" in result
        # The worker looked again at once, not 10 minutes later.
        wait_until(lambda: service.delivery(delivery_id)["status"] == "delivered", timeout=10)
        assert 'id="paused"' not in admin.get("/admin").text
        assert admin.post("/admin/test-connection", data={}).status_code == 403  # CSRF


def test_export_of_failed_and_rejected_with_reasons_personal_data_only_when_asked(
    service: Service,
    standin: RocketChatStandIn,
    admin: httpx.Client,
    capfd: pytest.CaptureFixture[str],
) -> None:
    delivered = service.post_contact(**SAM).json()["delivery_id"]
    service.settled(delivered)
    rejected = post_generic(service, name="=HYPERLINK(1)", email="jane@example", phone="+1 555")
    standin.custom_fields["company"] = dict(COMPANY)
    failed = service.post_contact(**CHRIS).json()["delivery_id"]
    assert service.settled(failed)["status"] == "failed"

    def export(**fields: str) -> list[dict[str, str]]:
        answer = admin.post("/admin/export.csv", data={"csrf_token": csrf(admin), **fields})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/csv")
        assert "attachment" in answer.headers["content-disposition"]
        return list(csv.DictReader(io.StringIO(answer.text)))

    rows = {row["delivery_id"]: row for row in export()}
    assert set(rows) == {failed, rejected["delivery_id"]}  # not the delivered one
    assert "Invalid value for Company field" in rows[failed]["reason"]
    assert rows[rejected["delivery_id"]]["reason"].startswith("rejected: email:")
    assert rows[failed]["email"] == "c***@example.com"
    assert "chris" not in json.dumps(rows).lower()
    assert rows[failed]["reference"] == short_reference(failed)

    personal = {row["delivery_id"]: row for row in export(personal="1")}
    assert personal[failed]["email"] == "chris@example.com"
    assert personal[failed]["name"] == "Chris Doe"
    assert personal[rejected["delivery_id"]]["name"] == "'=HYPERLINK(1)"  # never a formula
    assert "'jane@example'" in personal[rejected["delivery_id"]]["reason"]

    only_failed = export(status="failed", q="chris@example.com", personal="1")
    assert [row["delivery_id"] for row in only_failed] == [failed]

    logged = capfd.readouterr().out
    lines = [
        dict(re.findall(r"(\w+)=(\S+)", x)) for x in logged.splitlines() if "admin_export" in x
    ]
    assert [line["personal_data"] for line in lines] == ["False", "True", "True"]
    assert [line["rows"] for line in lines] == ["2", "2", "1"]
    assert "chris" not in logged.lower() and "jane@" not in logged.lower()
    assert admin.post("/admin/export.csv", data={}).status_code == 403  # CSRF


def test_the_root_is_a_status_page_with_channels_and_the_urls_to_paste(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
) -> None:
    service = start_service(
        make_settings(channel_settings={"TAWKTO_WEBHOOK_SECRET": "s3cret-tawk"})
    )
    page = service.client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    text = page.text
    assert "Reachable, credentials accepted" in text
    assert "visitor" in text  # the strategy
    for link in ('href="/form"', 'href="/admin"', 'href="/openapi.json"', 'href="/readyz"'):
        assert link in text
    rows = re.findall(r'<tr class="channel (on|off)">(.*?)</tr>', text, re.S)
    by_title = {
        re.sub(r"<.*?>", "", row.split("</th>")[0]).strip(): (state, row) for state, row in rows
    }
    assert by_title["REST API"][0] == "on"
    assert f"{service.url}/contacts" in by_title["REST API"][1]
    assert by_title["tawk.to"][0] == "on"
    assert f"{service.url}/webhooks/tawkto" in by_title["tawk.to"][1]
    assert by_title["Intercom"][0] == "off"
    assert "INTERCOM" in by_title["Intercom"][1]
    assert by_title["Slack"][0] == "off" and "SLACK_SIGNING_SECRET" in by_title["Slack"][1]
    assert "s3cret-tawk" not in text and ADMIN_TOKEN not in text

    as_json = service.client.get("/", headers={"accept": "application/json"}).json()
    assert as_json["rocketchat"]["ok"] is True
    assert as_json["rocketchat"]["strategy"] == "visitor"
    tawk = next(c for c in as_json["channels"] if c["title"] == "tawk.to")
    assert tawk["urls"] == [f"{service.url}/webhooks/tawkto"]
    # Other unknown paths still answer JSON 404s.
    assert service.client.get("/nothing").status_code == 404


def test_the_status_page_says_when_rocketchat_is_unreachable(
    make_settings: Callable[..., Settings],
    start_service: Callable[[Settings], Service],
    standin: RocketChatStandIn,
) -> None:
    standin.down = True
    service = start_service(make_settings())
    text = service.client.get("/").text
    assert "Not reachable" in text and "ROCKETCHAT_URL" in text
