"""The Mattermost command and dialog handlers (contract §1): checks, then the core.

A command's answer goes out within ``ANSWER_DEADLINE`` whatever the database does (the
accept finishes in the background and reports through the response_url); Mattermost's
own limit is 30 s by default, but its users wait for the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from adapter.channels import (
    CONTACT_FIELDS,
    Background,
    BodyTooLarge,
    ChannelContext,
    ContactError,
    DeliveryRecord,
    Outcome,
    Submission,
    constant_time_equal,
    error_response,
    escape_markdown,
    extract_contact,
    outcome_text,
    read_body,
    submit_by,
    validate_contact,
)
from handlers.mattermost import dialog
from handlers.mattermost.config import MAX_BODY_BYTES, MattermostConfig
from handlers.mattermost.replies import Replies, ephemeral, make_callback, usable

__all__ = ["ANSWER_DEADLINE", "SOURCE", "TRIGGER_WINDOW", "MattermostService"]

log = structlog.get_logger("handlers.mattermost")

SOURCE = "mattermost"
ANSWER_DEADLINE = 2.5  # seconds after arrival
TRIGGER_WINDOW = 300  # a command's trigger_id must be this fresh (its replay window)
EXAMPLE = "Chris Doe chris@example.com +1 415 555 2671"


class Malformed(ValueError):
    """A request Mattermost never sends: a 400 naming the part."""


def _problems(errors: Mapping[str, str]) -> str:
    return "\n".join(
        f"• **{dialog.LABELS.get(k, k)}**: {escape_markdown(v)}" for k, v in errors.items()
    )


class MattermostService:
    """One server's slash command and dialog; ``clock`` is the wall clock the freshness
    checks read (tests pass the contract's fixed instant)."""

    def __init__(
        self, context: ChannelContext, config: MattermostConfig, clock: Callable[[], float]
    ) -> None:
        self.context = context
        self.config = config
        self.settings = context.settings
        self.queue = context.queue
        self.clock = clock
        self.replies = Replies(config)
        self.background = Background()
        self.confirmations: dict[str, asyncio.Task[Any]] = {}

    # -- the slash command ------------------------------------------------------------

    def _authentic(self, request: Request, form: Mapping[str, str]) -> bool:
        header = request.headers.get("authorization", "")
        given = form.get("token", "")
        ok = False
        for token in self.config.command_tokens:  # every one compared: constant time
            ok |= constant_time_equal(header, "Token " + token)
            ok |= constant_time_equal(given, token)
        return ok

    async def command(self, request: Request) -> Response:
        received = time.monotonic()
        try:
            body = await read_body(request, MAX_BODY_BYTES)
        except BodyTooLarge as exc:
            return error_response(413, f"{exc}: not a Mattermost command")
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            return error_response(400, "the body is not a UTF-8 form: not a Mattermost command")
        if not self._authentic(request, form):
            log.warning("mattermost_request_refused", status=401, reason="token")
            return error_response(
                401,
                "the command's token does not match: set MATTERMOST_COMMAND_TOKEN to the Token "
                "Mattermost shows for the command (Integrations > Slash Commands)",
            )
        try:
            trigger, response_url = self._check_command(form)
        except Malformed as exc:
            log.warning("mattermost_request_refused", status=400, reason=str(exc))
            return error_response(400, f"malformed Mattermost command: {exc}; nothing was stored")
        if trigger.user_id != form["user_id"]:
            return error_response(401, "the trigger_id was made for another user: refused")
        if abs(self.clock() - trigger.issued_at) > TRIGGER_WINDOW:
            log.warning("mattermost_request_refused", status=401, reason="stale")
            return error_response(
                401,
                "the command is more than 5 minutes old (its trigger_id says so): replayed "
                "request, or a clock out of sync",
            )
        dialog_url = self.config.dialog_url or str(request.url).split("?")[0].rsplit("/", 1)[0]
        if not self.config.dialog_url:
            dialog_url += "/dialog"
        return await self._command(
            form, trigger, response_url, dialog_url, received + ANSWER_DEADLINE
        )

    def _check_command(self, form: Mapping[str, str]) -> tuple[dialog.Trigger, str]:
        for part in ("user_id", "channel_id", "trigger_id", "response_url"):
            if not form.get(part):
                raise Malformed(f"'{part}' is missing")
        trigger = dialog.read_trigger(form["trigger_id"])
        if trigger is None:
            raise Malformed("'trigger_id' is not one Mattermost makes")
        url = form["response_url"]
        prefix = self.config.response_url_prefix()
        if not url.startswith(prefix) or not dialog.read_hook_id(url[len(prefix) :]):
            raise Malformed(
                f"'response_url' is not {prefix}<id>: set MATTERMOST_URL to the server's Site URL"
            )
        return trigger, url

    async def _command(
        self,
        form: Mapping[str, str],
        trigger: dialog.Trigger,
        response_url: str,
        dialog_url: str,
        deadline: float,
    ) -> Response:
        user_id, channel_id = form["user_id"], form["channel_id"]
        command = form.get("command") or "/contact"
        text = form.get("text", "").strip()
        callback = make_callback(
            response_url=response_url, user_id=user_id, channel_id=channel_id, issued_at=time.time()
        )
        example = f"`{escape_markdown(command)} {EXAMPLE}`"
        if text.lower() in ("", "help"):
            failed = await self._open(form, {}, {}, response_url, dialog_url)
            if failed is None:
                return PlainTextResponse("")  # a silent ack: the form is open
            return JSONResponse(
                ephemeral(f"The form could not open ({escape_markdown(failed)}). Type {example}")
            )
        extraction = extract_contact(text, self.settings.default_phone_region)
        _, errors = extraction.check(
            required=self.settings.contact_required_fields,
            default_region=self.settings.default_phone_region,
        )
        if errors:
            failed = await self._open(form, extraction.fields(), errors, response_url, dialog_url)
            then = (
                "Correct it in the form that just opened."
                if failed is None
                else f"Type it again, e.g. {example} (the form could not open: "
                f"{escape_markdown(failed)})"
            )
            return JSONResponse(
                ephemeral(f"I could not register that:\n{_problems(errors)}\n{then}")
            )
        submission = Submission(
            source=SOURCE,
            fields=extraction.fields(),
            event_id=f"cmd:{trigger.id}",
            callback=callback,
            actor=user_id,
            team=form.get("team_id") or None,
        )
        outcome = await submit_by(
            self.queue,
            submission,
            deadline=deadline,
            wait=self.settings.fast_path_budget,
            background=self.background,
            late=lambda task: self._report_late(task, callback, extraction.name),
        )
        return JSONResponse(ephemeral(self._answer(outcome, extraction.name)))

    def _answer(self, outcome: Outcome | None, name: str | None) -> str:
        if outcome is None:
            return outcome_text(status="pending", name=name)
        if outcome.status == "invalid":
            return f"I could not register that:\n{_problems(outcome.errors)}"
        return outcome_text(
            status=outcome.status,
            name=outcome.contact.name if outcome.contact else name,
            contact_url=outcome.contact_url,
            last_error=outcome.last_error,
            duplicate=outcome.duplicate,
        )

    async def _open(
        self,
        form: Mapping[str, str],
        prefill: Mapping[str, str],
        problems: Mapping[str, str],
        response_url: str,
        dialog_url: str,
    ) -> str | None:
        """Open the contact dialog for the command's user; None when it opened."""
        hook_id = response_url.rsplit("/", 1)[-1]
        state = dialog.DialogState(
            user_id=form["user_id"],
            channel_id=form["channel_id"],
            expires_at=int(self.clock()) + dialog.DIALOG_SECONDS,
            hook_id=hook_id,
        )
        definition = dialog.dialog_definition(
            url=dialog_url,
            state=dialog.sign_state(self.config.state_secret, state),
            prefill=prefill,
            problems=problems,
            required=self.settings.contact_required_fields,
            default_region=self.settings.default_phone_region,
        )
        return await self.replies.open_dialog(form["trigger_id"], definition)

    async def _report_late(
        self, task: asyncio.Future[Outcome], callback: Mapping[str, Any], name: str | None
    ) -> None:
        """The outcome of an accept that outlived the answer (a pending one reports later)."""
        try:
            outcome = await task
        except Exception:
            log.exception("mattermost_late_accept_failed")
            who = escape_markdown(name or "The contact")
            text = f"⚠ {who} could not be stored: something went wrong on our side. Send it again."
        else:
            if outcome.status == "pending" and not outcome.duplicate:
                return
            text = self._answer(outcome, name)
        await self.replies.send(callback, text)

    # -- the dialog ------------------------------------------------------------------

    async def submission(self, request: Request) -> Response:
        received = time.monotonic()
        try:
            body = await read_body(request, MAX_BODY_BYTES)
        except BodyTooLarge as exc:
            return error_response(413, f"{exc}: not a Mattermost dialog submission")
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            return error_response(400, "the body is not a JSON object: not a dialog submission")
        try:
            state = dialog.read_state(
                self.config.state_secret,
                data.get("state"),
                user_id=data.get("user_id"),
                channel_id=data.get("channel_id"),
                now=self.clock(),
            )
        except dialog.StateRefused as exc:
            log.warning("mattermost_dialog_refused", reason=str(exc))
            if exc.expired:  # a real user's stale form: say so inside it (nothing stored)
                return JSONResponse({"error": str(exc)})
            return error_response(401, str(exc))
        try:
            fields = self._read_submission(data)
        except Malformed as exc:
            return error_response(400, f"malformed dialog submission: {exc}; nothing was stored")
        if fields is None:  # cancelled
            return JSONResponse({})
        try:
            validate_contact(
                fields,
                required=self.settings.contact_required_fields,
                default_region=self.settings.default_phone_region,
            )
        except ContactError as exc:
            return JSONResponse(dialog.dialog_errors(exc.errors))
        return await self._register(data, state, fields, received + ANSWER_DEADLINE)

    @staticmethod
    def _read_submission(data: Mapping[str, Any]) -> dict[str, str | None] | None:
        if data.get("type") != "dialog_submission":
            raise Malformed("'type' must be dialog_submission")
        if data.get("callback_id") != dialog.CALLBACK_ID:
            raise Malformed(f"'callback_id' must be {dialog.CALLBACK_ID}")
        if data.get("cancelled") is True:
            return None
        submission = data.get("submission")
        if not isinstance(submission, dict):
            raise Malformed("'submission' must be an object")
        fields: dict[str, str | None] = {}
        for name in CONTACT_FIELDS:
            value = submission.get(name)
            if value is not None and not isinstance(value, str):
                raise Malformed(f"'submission.{name}' must be a string")
            fields[name] = value
        return fields

    async def _register(
        self,
        data: Mapping[str, Any],
        state: dialog.DialogState,
        fields: Mapping[str, str | None],
        deadline: float,
    ) -> Response:
        response_url = self.config.response_url_prefix() + state.hook_id if state.hook_id else None
        callback = make_callback(
            response_url=response_url,
            user_id=state.user_id,
            channel_id=state.channel_id,
            issued_at=state.expires_at - dialog.DIALOG_SECONDS,
        )
        if usable(callback, now=time.time()):
            callback["posts"] = 1  # the confirmation below; the outcome may be a second
        digest = hashlib.sha256(str(data.get("state")).encode()).hexdigest()[:40]
        submission = Submission(
            source=SOURCE,
            fields=fields,
            event_id=f"dialog:{digest}",
            callback=callback,
            actor=state.user_id,
            team=data.get("team_id") or None,
        )
        name = fields.get("name")
        outcome = await submit_by(
            self.queue,
            submission,
            deadline=deadline,
            wait=self.settings.fast_path_budget,
            background=self.background,
            late=lambda task: self._report_late(task, callback, name),
        )
        if outcome is not None and outcome.status == "invalid":
            return JSONResponse(dialog.dialog_errors(outcome.errors))
        if outcome is not None:
            confirm = self.background.spawn(
                self.replies.send(callback, self._answer(outcome, name), extra_posts=-1)
            )
            if outcome.delivery_id:
                key = outcome.delivery_id
                self.confirmations[key] = confirm
                confirm.add_done_callback(lambda _t: self.confirmations.pop(key, None))
        return JSONResponse({})  # closes the dialog

    # -- later outcomes ------------------------------------------------------------

    async def report(self, record: DeliveryRecord) -> None:
        task = self.confirmations.get(record.id)
        if task is not None:  # this process's confirmation goes out first
            await asyncio.wait([task], timeout=10)
        await report(self.replies, self.context, record)


async def report(replies: Replies, context: ChannelContext, record: DeliveryRecord) -> str:
    """Tell the user who asked how their delivery ended; the route used."""
    name = (record.fields or {}).get("name")
    url = context.queue.client.contact_url(record.contact_id) if record.contact_id else None
    text = outcome_text(
        status=record.status,
        name=str(name) if name else None,
        contact_url=url,
        last_error=record.last_error,
        final=True,
    )
    route = await replies.send(record.callback or {}, text)
    log.info(
        "mattermost_outcome_reported", delivery_id=record.id, status=record.status, route=route
    )
    return route
