"""Plain HTML forms at ``POST /forms/<form>`` and a hosted contact form page at ``GET /form``.

Any ``<form method="post">`` on any site may post here, urlencoded or multipart, with
the fields ``name``, ``email`` and ``phone`` (names configurable per form). Answers:

* ``Accept: application/json`` (a page's script): 201 registered / 202 queued with the
  delivery id, 422 with one message per field, plus ``redirect`` when one applies;
* otherwise, with a ``redirect`` field (or ``FORM_REDIRECT``) allowed by
  ``FORM_REDIRECT_ORIGINS``: ``303 See Other`` to the thank-you page;
* otherwise a small HTML page: the outcome, or the form again with each error next to
  its field, so a visitor without JavaScript still learns what happened.

Forms are unauthenticated, so: a honeypot field (``website``) that bots fill in and
people never see (answered as a success, nothing stored), an ``Origin`` allow-list and
CORS for the origins in ``FORM_ALLOWED_ORIGINS``, the body cap, and a per-IP rate limit.
Every setting can be given per form as ``FORM_<FORM>_<KEY>``, else ``FORM_<KEY>``; see
``docs/forms.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from adapter.channels import ChannelContext, ChannelStatus, Settings
from handlers.forms.config import FormConfig, RateLimiter, load_forms, origin_of
from handlers.forms.page import FormViews, Page
from handlers.forms.post import FormPosts

__all__ = ["FormConfig", "FormsChannel", "RateLimiter", "channel", "load_forms", "origin_of"]


class FormsChannel:
    """``POST /forms/<form>``, its CORS preflight, and the hosted page ``GET /form``."""

    name = "form"  # submissions are "form:<form>"
    title = "Hosted and HTML forms"

    def __init__(self) -> None:
        self._page: Page | None = None

    def check(self, settings: Settings) -> None:
        """``FORMS`` and every form's ``FORM_…`` settings (:func:`load_forms`)."""
        load_forms(settings)

    def status(self, settings: Settings) -> ChannelStatus:
        """On unless every form is turned off (the default form needs no setting)."""
        if any(config.enabled for config in load_forms(settings).values()):
            return ChannelStatus("form", True, "/form")
        why = "every form is turned off: set FORM_ENABLED=true (or FORM_<FORM>_ENABLED)"
        return ChannelStatus("form", False, "/form", why)

    @property
    def page(self) -> Page:
        if self._page is None:
            self._page = Page()
        return self._page

    def routes(self, context: ChannelContext) -> Sequence[BaseRoute]:
        forms = load_forms(context.settings)
        views = FormViews(self.page, context.settings, forms)
        posts = FormPosts(context, forms, views)

        async def show_form(request: Request) -> Response:
            name = request.path_params.get("form", "default")
            config = forms.get(name)
            if config is None:
                return views.fail(request, 404, views.unknown(name), heading="No such form")
            if not config.enabled:
                return views.turned_off(request, config)
            return views.form_page(request, config)

        return [
            Route("/form", show_form, methods=["GET"]),
            Route("/form/{form:str}", show_form, methods=["GET"]),
            Route("/forms/{form:str}", posts.submit, methods=["POST", "OPTIONS"]),
        ]


channel = FormsChannel()
