"""The forms' pages: the hosted contact form (``GET /form``), the same form again with each
error next to its field, the thank-you and the problem pages, and the JSON answers a
page's script gets instead (``Accept: application/json``).

The template and its inline CSS and JS are the app's (``adapter/web/templates/form.html``,
``adapter/web/static/``), served under a Content-Security-Policy naming their hashes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from adapter.channels import Outcome, Settings, consent_given, error_response, short_reference
from handlers.api import outcome_response
from handlers.forms.config import CONTACT_INPUTS, MAX_FIELDS, PAGE_TEXTS, FormConfig, origin_of

__all__ = ["MESSAGES", "FormViews", "Page", "wants_json"]

MESSAGES = {
    "heading": "Thank you!",
    "registered": "Your details are registered. We will be in touch soon.",
    "queued": "Your details were received and will be registered shortly.",
    "failed": (
        "Your details were received but could not be registered right now. "
        "Our team has them and will follow up."
    ),
    "again": "Back to the form",
}


def _asset(name: str) -> str:
    return (files("adapter.web") / "static" / name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


class Page:
    """The hosted form template, its inline CSS/JS and their Content-Security-Policy."""

    def __init__(self) -> None:
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("adapter.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.template = env.get_template("form.html")
        self.css = _asset("form.css")
        self.js = _asset("form.js")
        self.csp = (
            f"default-src 'none'; script-src {_csp_hash(self.js)}; style-src {_csp_hash(self.css)}; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'"
        )

    def render(
        self,
        status: int,
        *,
        frame_origins: frozenset[str] = frozenset(),
        headers: Mapping[str, str] | None = None,
        **values: Any,
    ) -> HTMLResponse:
        context: dict[str, Any] = {
            "title": "Contact us",
            "intro": "Leave your details and we will get back to you.",
            "notice": "",
            "result": None,
            "fields": [],
            "honeypot": None,
            "hidden": [],
            "action": "",
            "again_url": None,
            "submit": "Send",
            "messages": MESSAGES,
            "language": "en",
        }
        context.update(values)
        html = self.template.render(css=self.css, js=self.js, **context)
        csp = self.csp
        if frame_origins:
            csp += "; frame-ancestors 'self' " + " ".join(sorted(frame_origins))
        return HTMLResponse(
            html,
            status_code=status,
            headers={
                "Content-Security-Policy": csp,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "strict-origin-when-cross-origin",
                "Cache-Control": "no-store",
                **(headers or {}),
            },
        )


def _field_message(label: str, message: str) -> str:
    """Core messages either quote the value or complete a sentence ("is required")."""
    return f"{label} {message}" if re.match(r"is\b", message) else message


def _phone_hint(region: str | None) -> str:
    if region:
        return f"With the country code, e.g. +1 415 555 2671, or as a {region} number."
    return "With the country code, e.g. +1 415 555 2671."


def wants_json(request: Request) -> bool:
    """Does the sender want a JSON answer (a page's script) rather than a page?"""
    return "application/json" in request.headers.get("accept", "").lower()


def _safe_link(url: str | None) -> str | None:
    """A link we may print on a page: an absolute http(s) URL, else nothing."""
    if url and origin_of(url) is not None and len(url) <= 2000:
        return url
    return None


class FormViews:
    """Every answer of the forms channel, page or JSON, for one app's forms."""

    def __init__(self, page: Page, settings: Settings, forms: Mapping[str, FormConfig]) -> None:
        self.page = page
        self.settings = settings
        self.forms = forms
        self.required = set(settings.contact_required_fields)

    def unknown(self, form: str) -> str:
        return (
            f"there is no form named {form[:40]!r}: the forms here are "
            f"{', '.join(sorted(self.forms))} (list more in FORMS)"
        )

    def fail(
        self,
        request: Request,
        status: int,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        config: FormConfig | None = None,
        heading: str = "Your details were not sent",
    ) -> Response:
        if wants_json(request):
            response: Response = error_response(status, message)
            response.headers.update(headers or {})
            return response
        return self.page.render(
            status,
            headers=headers,
            title="Sorry",
            result={
                "kind": "problem",
                "heading": heading,
                "message": message[:1].upper() + message[1:] + ".",
                "reference": None,
                "again": "Go back",
            },
            again_url=_safe_link(request.headers.get("referer")),
            frame_origins=config.allowed_origins if config else frozenset(),
        )

    def field_views(
        self,
        config: FormConfig,
        values: Mapping[str, str | None],
        errors: Mapping[str, str],
    ) -> list[dict[str, Any]]:
        views = []
        first_error = next((k for k in CONTACT_INPUTS if errors.get(k)), None)
        region = config.phone_region or self.settings.default_phone_region
        for key, spec in CONTACT_INPUTS.items():
            label = str(spec["label"])
            hint = _phone_hint(region) if key == "phone" else None
            error = _field_message(label, errors[key]) if errors.get(key) else ""
            described = [f"f-{key}-hint"] if hint else []
            if error:
                described.append(f"f-{key}-error")
            views.append(
                {
                    **spec,
                    "key": key,
                    "input_name": config.fields[key],
                    "value": values.get(key) or "",
                    "error": error,
                    "hint": hint,
                    "required": key in self.required,
                    "describedby": " ".join(described),
                    "autofocus": key == first_error,
                }
            )
        return views

    def consent_view(self, errors: Mapping[str, str], checked: bool) -> dict[str, Any] | None:
        """The consent checkbox (FORM_CONSENT_TEXT, or REQUIRE_CONSENT with a plain text)."""
        text = self.settings.form_consent_text
        if not text and not self.settings.require_consent:
            return None
        return {
            "text": text or "I agree that these details are stored to answer me.",
            "required": self.settings.require_consent,
            "checked": checked,
            "error": "Tick this box to send the form." if errors.get("consent") else "",
        }

    @staticmethod
    def messages(config: FormConfig) -> dict[str, str]:
        """The thank-you texts: FORM_SUCCESS_MESSAGE, when set, for registered and queued."""
        if config.success_message == PAGE_TEXTS["FORM_SUCCESS_MESSAGE"][0]:
            return dict(MESSAGES)
        return {**MESSAGES, "registered": config.success_message, "queued": config.success_message}

    def intro(self, default: str) -> str:
        if "email" not in self.required and "phone" not in self.required:
            return default + " Give an email address or a phone number, or both."
        return default

    def turned_off(self, request: Request, config: FormConfig) -> Response:
        """The answer of a form turned off (``FORM_<FORM>_ENABLED=false``): 404, said plainly."""
        return self.fail(
            request,
            404,
            f"the form {config.name!r} is turned off ({config.enabled_setting}=false): "
            "nothing was sent. Please contact us another way",
            config=config,
            heading="This form is not available",
        )

    def form_page(
        self,
        request: Request,
        config: FormConfig,
        *,
        status: int = 200,
        values: Mapping[str, str | None] | None = None,
        errors: Mapping[str, str] | None = None,
        hidden: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        consented: bool = False,
    ) -> Response:
        errors = errors or {}
        root = request.scope.get("root_path", "")
        count = sum(1 for k in CONTACT_INPUTS if errors.get(k))
        extra = [f"{k} {v}" for k, v in errors.items() if k not in CONTACT_INPUTS]
        notice = " ".join(
            [
                *(
                    ["Please correct the field marked below."]
                    if count == 1
                    else [f"Please correct the {count} fields marked below."]
                    if count
                    else []
                ),
                *extra,
            ]
        )
        custom_title = config.title != PAGE_TEXTS["FORM_TITLE"][0]
        return self.page.render(
            status,
            headers=headers,
            title="Check your details" if errors and not custom_title else config.title,
            intro=(
                config.intro  # the operator's own words, in the form's language
                if config.intro != PAGE_TEXTS["FORM_INTRO"][0]
                else self.intro(
                    "Correct what is marked and send the form again." if errors else config.intro
                )
            ),
            submit=config.button_label,
            language=config.language,
            messages=self.messages(config),
            notice=notice,
            fields=self.field_views(config, values or {}, errors),
            consent=self.consent_view(errors, consented),
            honeypot=config.honeypot,
            hidden=list(hidden),
            action=f"{root}/forms/{config.name}",
            again_url=f"{root}/form" + ("" if config.name == "default" else f"/{config.name}"),
            frame_origins=config.allowed_origins,
        )

    def respond(
        self,
        request: Request,
        config: FormConfig,
        outcome: Outcome,
        pairs: Sequence[tuple[str, str]],
        values: Mapping[str, str | None],
        redirect: str | None,
        cors: Mapping[str, str],
    ) -> Response:
        api = outcome_response(outcome, url_for_delivery=f"/deliveries/{outcome.delivery_id}")
        ok = api.status_code < 300
        if ok and not config.trust_sender:
            # Anyone may post here: the same answer whether the person was known or not
            # (no contact or delivery id, no warnings, no Location to poll; only the short
            # reference a person can quote to the team).
            api = JSONResponse({"status": "received"}, status_code=202)
            outcome = Outcome(status="pending", delivery_id=outcome.delivery_id)
        headers = {
            **cors,
            **({"Location": api.headers["location"]} if "location" in api.headers else {}),
        }
        if wants_json(request):
            body = json.loads(bytes(api.body))
            if outcome.delivery_id:
                body["reference"] = short_reference(outcome.delivery_id)
            if redirect and ok:
                body["redirect"] = redirect
            return JSONResponse(body, status_code=api.status_code, headers=headers)
        if redirect and ok:
            return RedirectResponse(redirect, status_code=303, headers=dict(cors))
        if outcome.errors:
            skip = {*config.fields.values(), config.honeypot, "consent"}
            hidden = [(k, v) for k, v in pairs if k not in skip][:MAX_FIELDS]
            return self.form_page(
                request,
                config,
                status=api.status_code,
                values=values,
                errors=outcome.errors,
                hidden=hidden,
                headers=cors,
                consented=any(k == "consent" and consent_given(v) for k, v in pairs),
            )
        kind = {"delivered": "registered", "failed": "failed"}.get(outcome.status, "queued")
        messages = self.messages(config)
        reference = short_reference(outcome.delivery_id) if outcome.delivery_id else None
        return self.page.render(
            api.status_code,
            headers=headers,
            title=messages["heading"],
            language=config.language,
            result={
                "kind": kind,
                "heading": messages["heading"],
                "message": messages[kind],
                "reference": reference,
                "again": messages["again"],
            },
            again_url=_safe_link(request.headers.get("referer")),
            frame_origins=config.allowed_origins,
        )
