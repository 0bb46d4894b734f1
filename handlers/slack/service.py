"""The bolt app: the slash command, the "Open form" button and the modal.

Built from settings when the Slack routes are mounted. Requests reach it only after
:mod:`handlers.slack.verify` has checked size, signature and body, and with a body parsed
by our fixed parser (bolt 1.30's loses commands that say "payload").

bolt's own ``ssl_check`` middleware is off: it reads ``SLACK_VERIFICATION_TOKEN`` from
the environment even when none is passed, and then refuses an ``ssl_check`` carrying the
*right* token (contract §3.8.2). ``ssl_check`` requests are answered in
:mod:`handlers.slack` instead, and bolt is never given a verification token.

Listeners run with ``process_before_response=True``: the HTTP answer is whatever the
listener acked when it returns (no 10 ms ack polling), and anything that must happen
after the answer (``views.open``, a confirmation post) is started as a task first.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Mapping
from typing import Any

import structlog
from slack_bolt.adapter.starlette.async_handler import (
    AsyncSlackRequestHandler,
    to_starlette_response,
)
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from starlette.requests import Request
from starlette.responses import Response

from adapter.channels import (
    ChannelContext,
    ContactError,
    Extraction,
    FieldError,
    Outcome,
    Submission,
    extract_contact,
    normalize_email,
)
from adapter.channels import validate_contact as validate
from handlers.slack import blocks
from handlers.slack.config import BOT_SCOPES, SlackConfig
from handlers.slack.oauth import (
    InstallationStore,
    StateStore,
    StoreAuthorize,
    TokenAuthorize,
    create_tables,
)
from handlers.slack.sender import SlackSender, make_callback, response_url_usable

__all__ = ["SOURCE", "SlackService"]

log = structlog.get_logger("handlers.slack")

SOURCE = "slack"
ACK_BUDGET = 1.5  # longest fast-path wait inside Slack's 3 s
ACK_DEADLINE = 2.5  # answer by then after the request arrived, whatever the database does
RECEIVED_AT = "contact_adapter_received_at"  # bolt context key: time.monotonic() on arrival
DUPLICATE_WINDOW = 60  # the same command within a minute registers once
INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
STATE_SECONDS = 600


def unescape(text: str) -> str:
    """Slack sends &, <, > typed by the user as &amp; &lt; &gt;."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


class _Handler(AsyncSlackRequestHandler):
    """bolt's Starlette handler, fed with a body we already read, checked and parsed."""

    async def dispatch(
        self, request: Request, text: str, parsed: dict[str, Any], received_at: float
    ) -> Response:
        extra = {RECEIVED_AT: received_at}
        bolt_request = AsyncBoltRequest(
            body=text, query=request.url.query, headers=dict(request.headers), context=extra
        )
        if bolt_request.body != parsed:  # bolt 1.30 mis-parsed it (contract §3.8.1)
            bolt_request.body = parsed
            bolt_request.context = build_async_context(AsyncBoltContext(extra), parsed)
        response = await self.app.async_dispatch(bolt_request)
        return to_starlette_response(response)


class SlackService:
    """One service's Slack app: bolt, the installation stores and the reporter."""

    def __init__(self, context: ChannelContext, config: SlackConfig) -> None:
        assert config.signing_secret is not None
        self.context = context
        self.config = config
        self.queue = context.queue
        self.settings = context.settings
        self.wait = min(self.settings.fast_path_budget, ACK_BUDGET)
        self.sender = SlackSender(config, self.queue.engine)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.confirmations: dict[str, asyncio.Task[Any]] = {}
        client = AsyncWebClient(base_url=config.api_url, timeout=10)
        bolt_logger = logging.getLogger("handlers.slack.bolt")
        self.token_authorize: TokenAuthorize | None = None
        self.stores: list[Any] = []
        if config.oauth:
            assert config.client_id is not None and config.client_secret is not None
            store = self.sender.installation_store()
            assert isinstance(store, InstallationStore)
            state_store = StateStore(expiration_seconds=STATE_SECONDS, engine=self.queue.engine)
            self.stores = [store, state_store]
            oauth_settings = AsyncOAuthSettings(
                client_id=config.client_id,
                client_secret=config.client_secret,
                scopes=list(BOT_SCOPES),
                redirect_uri=config.redirect_uri,
                install_path=INSTALL_PATH,
                redirect_uri_path=REDIRECT_PATH,
                installation_store=store,
                installation_store_bot_only=True,
                state_store=state_store,
                state_expiration_seconds=STATE_SECONDS,
                logger=bolt_logger,
            )
            self.app = AsyncApp(
                logger=bolt_logger,
                name="contact-adapter",
                signing_secret=config.signing_secret,
                client=client,
                authorize=StoreAuthorize(store, config.bot_token),  # type: ignore[arg-type]
                oauth_settings=oauth_settings,
                installation_store_bot_only=True,
                process_before_response=True,
                ssl_check_enabled=False,  # answered by us: see the module docstring
                user_facing_authorize_error_message=(
                    ":warning: This app is not installed in this workspace any more: "
                    "ask an admin to install it again."
                ),
            )
        else:
            assert config.bot_token is not None
            self.token_authorize = TokenAuthorize(config.bot_token)
            self.app = AsyncApp(
                logger=bolt_logger,
                name="contact-adapter",
                signing_secret=config.signing_secret,
                client=client,
                authorize=self.token_authorize,  # type: ignore[arg-type]
                process_before_response=True,
                ssl_check_enabled=False,  # answered by us: see the module docstring
            )
        self.app.command(config.command)(self.on_command)
        self.app.command(re.compile(r"^/.*"))(self.on_other_command)
        self.app.action(blocks.OPEN_FORM_ACTION_ID)(self.on_open_form)
        self.app.view(blocks.MODAL_CALLBACK_ID)(self.on_modal)
        self.handler = _Handler(self.app)

    # -- lifecycle ---------------------------------------------------------------

    async def startup(self) -> None:
        if self.stores:
            await create_tables(*self.stores)
        if self.token_authorize is not None:
            self.spawn(self._check_token(self.token_authorize))

    async def shutdown(self) -> None:
        pending = [t for t in self.tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=5)
        for task in pending:
            task.cancel()

    def spawn(self, coro: Awaitable[Any], *, key: str | None = None) -> asyncio.Task[Any]:
        """Run after the answer; keep a reference so the task is not collected."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if key is not None:
            self.confirmations[key] = task
            task.add_done_callback(lambda _t: self.confirmations.pop(key, None))
        return task

    async def _check_token(self, authorize: TokenAuthorize) -> None:
        client = AsyncWebClient(token=authorize.token, base_url=self.config.api_url, timeout=10)
        try:
            answer = await client.auth_test()
        except SlackApiError as exc:
            log.error(
                "slack_token_rejected",
                error=exc.response.get("error"),
                hint="check SLACK_BOT_TOKEN (OAuth & Permissions > Bot User OAuth Token)",
            )
            return
        except Exception as exc:
            log.warning("slack_auth_test_failed", error=type(exc).__name__)
            return
        authorize.bot_user_id = answer.get("user_id")
        authorize.bot_id = answer.get("bot_id")
        log.info("slack_ready", team_id=answer.get("team_id"), bot_user_id=authorize.bot_user_id)

    # -- the HTTP side -------------------------------------------------------------

    async def dispatch(
        self, request: Request, text: str, parsed: dict[str, Any], received_at: float
    ) -> Response:
        return await self.handler.dispatch(request, text, parsed, received_at)

    async def oauth(self, request: Request) -> Response:
        response: Response = await self.handler.handle(request)
        return response

    # -- the slash command -------------------------------------------------------------

    async def on_command(
        self,
        ack: AsyncAck,
        body: dict[str, Any],
        client: AsyncWebClient,
        context: AsyncBoltContext,
    ) -> None:
        try:
            await self._command(ack, body, client, self._deadline(context))
        except Exception:
            log.exception("slack_command_failed")
            if ack.response is None:
                await ack(
                    {
                        "response_type": "ephemeral",
                        "text": ":warning: Something went wrong on our side. Send the same "
                        "command again in a moment (a repeat within a minute is not "
                        "registered twice).",
                    }
                )

    @staticmethod
    def _deadline(context: AsyncBoltContext) -> float:
        received = context.get(RECEIVED_AT)
        start = received if isinstance(received, float) else time.monotonic()
        return start + ACK_DEADLINE

    async def _command(
        self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, deadline: float
    ) -> None:
        now = time.time()
        text = unescape(str(body.get("text") or ""))
        callback = make_callback(
            response_url=body.get("response_url"),
            user_id=body.get("user_id"),
            team_id=body.get("team_id"),
            enterprise_id=body.get("enterprise_id") or None,
            enterprise_install=str(body.get("is_enterprise_install")).lower() == "true",
            channel_id=body.get("channel_id"),
            issued_at=now,
        )
        if text.strip().lower() in ("", "help"):
            await ack()
            self.spawn(self._open_modal(client, body.get("trigger_id"), {}, callback))
            return
        extraction = extract_contact(text, self.settings.default_phone_region)
        errors = self._errors(extraction)
        if errors:
            await ack(blocks.errors_message(errors, extraction.found, command=self.config.command))
            return
        event_id, previous = self._event_ids(callback, extraction, now)
        # Slack's trigger_id is new for every command typed, and the same in a replay of
        # the signed request: recorded for good, it makes a replay anywhere inside the
        # 5-minute signature window a duplicate (the minute buckets alone cover 60-120 s).
        trigger = str(body.get("trigger_id") or "")
        replayed = await self.queue.find_event(SOURCE, f"trigger:{trigger}") if trigger else None
        seen = (
            self.queue.outcome_of(replayed, duplicate=True)
            if replayed is not None
            else await self._recent(event_id, now) or await self._recent(previous, now)
        )
        if seen is not None:
            await ack(self._message(seen, duplicate=True))
            return
        user_id = callback["user_id"]
        submission = Submission(
            source=SOURCE,
            fields=extraction.fields(),
            event_id=event_id,
            also_event_ids=(f"trigger:{trigger}",) if trigger else (),
            callback=callback,
            actor=user_id,
            team=callback["team_id"] or callback["enterprise_id"],
            contact_manager=self.config.managers.get(user_id) if user_id else None,
        )
        outcome = await self._submit(submission, deadline, extraction.name)
        if outcome is None:  # still storing at the deadline: it reports when done
            await ack(blocks.outcome_message(status="pending", name=extraction.name))
            return
        if outcome.status == "invalid":
            await ack(
                blocks.errors_message(
                    dict(outcome.errors), extraction.found, command=self.config.command
                )
            )
            return
        await ack(self._message(outcome))

    async def _submit(
        self, submission: Submission, deadline: float, name: str | None
    ) -> Outcome | None:
        """Accept (and maybe register) the contact; None when the answer cannot wait longer.

        Slack shows an error after 3 s whatever we do later, so the answer goes out by
        ``deadline``: the fast path gets what is left of the budget, and an accept slowed
        down by the database finishes in the background and reports on its own.
        """
        remaining = deadline - time.monotonic()
        wait = max(0.0, min(self.wait, remaining - 0.5))
        task = asyncio.ensure_future(self.queue.submit(submission, wait=wait))
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout=max(0.05, remaining))
        except TimeoutError:
            log.warning("slack_ack_deadline", waited=round(remaining, 2))
            self.spawn(self._report_late(task, submission.callback or {}, name))
            return None

    async def _report_late(
        self, task: asyncio.Future[Outcome], callback: Mapping[str, Any], name: str | None
    ) -> None:
        """The outcome of an accept that outlived the answer (pending ones report later)."""
        try:
            outcome = await task
        except Exception:
            log.exception("slack_late_accept_failed")
            message: dict[str, Any] = {
                "response_type": "ephemeral",
                "text": f":warning: {blocks.escape(name or 'The contact')} could not be "
                "stored: something went wrong on our side. Send it again.",
            }
        else:
            if outcome.status == "invalid":
                lines = "\n".join(
                    f"• *{blocks.LABELS.get(k, k)}*: {blocks.escape(v)}"
                    for k, v in outcome.errors.items()
                )
                message = {"response_type": "ephemeral", "text": f"Not registered:\n{lines}"}
            elif outcome.status in ("delivered", "failed") or outcome.duplicate:
                message = self._message(outcome)
            else:
                return  # pending: the delivery reports its outcome (notify)
        await self.sender.send(callback, message)

    def _errors(self, extraction: Extraction) -> dict[str, str]:
        """Every problem at once (pure and fast: invalid text costs no database round trip)."""
        _, errors = extraction.check(
            required=self.settings.contact_required_fields,
            default_region=self.settings.default_phone_region,
        )
        return errors

    @staticmethod
    def _event_ids(
        callback: Mapping[str, Any], extraction: Extraction, now: float
    ) -> tuple[str, str]:
        """This minute's and the previous minute's event id for the same command."""
        parts = [
            str(callback.get("enterprise_id") or ""),
            str(callback.get("team_id") or ""),
            str(callback.get("user_id") or ""),
            (extraction.name or "").casefold(),
            (extraction.email or "").casefold(),
            extraction.phone or "",
            extraction.phone_extension or "",
        ]
        digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]
        bucket = int(now // DUPLICATE_WINDOW)
        return f"cmd:{digest}:{bucket}", f"cmd:{digest}:{bucket - 1}"

    async def _recent(self, event_id: str, now: float) -> Outcome | None:
        """The delivery of the same command sent less than a minute ago, if any."""
        record = await self.queue.find_event(SOURCE, event_id, since=now - DUPLICATE_WINDOW)
        return self.queue.outcome_of(record, duplicate=True) if record is not None else None

    def _message(self, outcome: Outcome, *, duplicate: bool | None = None) -> dict[str, Any]:
        return blocks.outcome_message(
            status=outcome.status,
            name=outcome.contact.name if outcome.contact else None,
            contact_url=outcome.contact_url,
            last_error=outcome.last_error,
            duplicate=outcome.duplicate if duplicate is None else duplicate,
        )

    async def on_other_command(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        command = str(body.get("command") or "")
        await ack(
            {
                "response_type": "ephemeral",
                "text": f"This app registers contacts with `{self.config.command}`; "
                f"`{blocks.escape(command)}` is not set up here (see SLACK_COMMAND).",
            }
        )

    # -- the form ---------------------------------------------------------------------

    async def _open_modal(
        self,
        client: AsyncWebClient,
        trigger_id: Any,
        prefill: Mapping[str, str],
        callback: Mapping[str, Any],
    ) -> None:
        valid_email = True
        if prefill.get("email"):
            try:
                normalize_email(prefill["email"])
            except FieldError:
                valid_email = False
        metadata = {
            "r": callback.get("response_url"),
            "t": callback.get("issued_at"),
            "rep": bool(callback.get("replace")),
            "c": callback.get("channel_id"),
        }
        view = blocks.modal_view(
            prefill=prefill,
            valid_email=valid_email,
            required=self.settings.contact_required_fields,
            default_region=self.settings.default_phone_region,
            metadata=metadata,
        )
        try:
            await client.views_open(trigger_id=str(trigger_id or ""), view=view)
            return
        except SlackApiError as exc:
            error = str(exc.response.get("error") or "error")
        except Exception as exc:
            error = type(exc).__name__
        log.warning("slack_views_open_failed", error=error)
        example = f"{self.config.command} Chris Doe chris@example.com +1 415 555 2671"
        await self.sender.send(
            {**callback, "replace": False},
            {
                "response_type": "ephemeral",
                "text": f":warning: Could not open the form ({error}). Type the contact "
                f"instead, e.g. `{example}`",
            },
        )

    async def on_open_form(
        self, ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient
    ) -> None:
        await ack()
        try:
            callback, prefill = self._open_form_request(body)
        except Exception:  # verify.check_shape lets only Slack's shapes through: a bug
            log.exception("slack_open_form_failed")
            return
        self.spawn(self._open_modal(client, body.get("trigger_id"), prefill, callback))

    @staticmethod
    def _open_form_request(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """The "Open form" click's callback and the prefill its button carried."""

        def part(key: str) -> dict[str, Any]:
            value = body.get(key)
            return value if isinstance(value, dict) else {}

        actions = body.get("actions") or [{}]
        value = actions[0].get("value")
        prefill = blocks.read_prefill(value if isinstance(value, str) else None)
        user, team = part("user"), part("team")
        callback = make_callback(
            response_url=body.get("response_url"),
            user_id=user.get("id"),
            team_id=team.get("id") or user.get("team_id"),
            enterprise_id=part("enterprise").get("id"),
            enterprise_install=bool(body.get("is_enterprise_install")),
            channel_id=part("channel").get("id"),
            issued_at=time.time(),
            replace=True,
        )
        return callback, prefill

    async def on_modal(
        self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        try:
            await self._modal(ack, body, self._deadline(context))
        except Exception:
            log.exception("slack_modal_failed")
            if ack.response is None:
                await ack(
                    response_action="errors",
                    errors={
                        blocks.BLOCK_IDS["name"]: "Something went wrong on our side: "
                        "submit again in a moment."
                    },
                )

    async def _modal(self, ack: AsyncAck, body: dict[str, Any], deadline: float) -> None:
        view = body.get("view") or {}
        metadata = blocks.read_metadata(view)
        user = body.get("user") or {}
        team = body.get("team") or {}
        enterprise = body.get("enterprise") or {}
        user_id = user.get("id")
        callback = make_callback(
            response_url=metadata.get("r"),
            user_id=user_id,
            team_id=team.get("id") or user.get("team_id"),
            enterprise_id=enterprise.get("id") or team.get("enterprise_id"),
            enterprise_install=bool(body.get("is_enterprise_install")),
            channel_id=metadata.get("c"),
            issued_at=float(metadata.get("t") or 0),
            replace=bool(metadata.get("rep")),
        )
        # The confirmation below is one post to response_url; the outcome may be a second.
        if response_url_usable(callback, now=time.time()):
            callback["posts"] = 1
        fields = blocks.read_modal(view)
        try:
            validate(
                fields,
                required=self.settings.contact_required_fields,
                default_region=self.settings.default_phone_region,
            )
        except ContactError as exc:
            await ack(response_action="errors", errors=blocks.modal_errors(exc.errors))
            return
        submission = Submission(
            source=SOURCE,
            fields=fields,
            event_id=f"view:{view.get('id')}" if view.get("id") else None,
            callback=callback,
            actor=user_id,
            team=callback["team_id"] or callback["enterprise_id"],
            contact_manager=self.config.managers.get(user_id) if user_id else None,
        )
        outcome = await self._submit(submission, deadline, fields.get("name"))
        if outcome is None:  # closes the modal; the outcome follows as a message
            await ack()
            return
        if outcome.status == "invalid":
            await ack(response_action="errors", errors=blocks.modal_errors(outcome.errors))
            return
        await ack()  # closes the modal
        confirm = self.sender.send(callback, self._message(outcome), extra_posts=-1)
        self.spawn(confirm, key=outcome.delivery_id)

    # -- later outcomes -------------------------------------------------------------

    async def before_report(self, delivery_id: str) -> None:
        """Let this process's confirmation for the delivery go out before its outcome."""
        task = self.confirmations.get(delivery_id)
        if task is not None:
            await asyncio.wait([task], timeout=10)
