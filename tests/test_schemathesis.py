"""``/openapi.json`` agrees with the service (issue 12, item 7): schemathesis generates a
few hundred seeded requests from the document and checks every answer against it, over
loopback against the real service; the request schema is generated from the model the
handler validates with, so ``CONTACT_REQUIRED_FIELDS`` and the document cannot drift."""

from __future__ import annotations

from collections.abc import Callable

import schemathesis
from hypothesis import HealthCheck, given, seed
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from adapter.settings import Settings
from tests.conftest import API_TOKEN, Service

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def run_cases(service: Service, mode: GenerationMode, examples: int) -> int:
    schema = schemathesis.openapi.from_url(service.url + "/openapi.json")
    operation = schema["/contacts"]["POST"]
    ran = []

    @seed(12)
    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        ran.append(case)
        case.call_and_validate(
            base_url=service.url,
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            checks=CHECKS,
        )

    check()
    return len(ran)


def test_generated_requests_agree_with_the_document(service: Service) -> None:
    assert run_cases(service, GenerationMode.POSITIVE, 150) >= 100
    assert run_cases(service, GenerationMode.NEGATIVE, 150) >= 100


def test_the_document_requires_what_the_service_requires(
    make_settings: Callable[..., Settings], start_service: Callable[[Settings], Service]
) -> None:
    default = start_service(make_settings())
    spec = default.client.get("/openapi.json").json()
    assert spec["components"]["schemas"]["ContactIn"]["required"] == ["name", "email", "phone"]
    relaxed = start_service(make_settings(contact_required_fields="name,email"))
    spec = relaxed.client.get("/openapi.json").json()
    assert spec["components"]["schemas"]["ContactIn"]["required"] == ["name", "email"]
    # What the document calls required, the service refuses without: 422 naming it.
    answer = default.post_contact(name="Chris Doe", email="chris@example.com")
    assert answer.status_code == 422
    assert answer.json()["errors"] == {"phone": "is required"}


def test_a_method_a_route_does_not_take_says_which_it_does(service: Service) -> None:
    answer = service.client.get("/contacts")
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "POST"
    assert "POST" in answer.json()["error"]
