"""Faithful Rocket.Chat REST stand-in for the Omnichannel contact routes.

Follows ``/work/shared/contracts/rocketchat.md`` (sections 1-8): the legacy
``omnichannel/contact`` upsert and lookups, the contact-center API
(``omnichannel/contacts*``), ``/api/info``, ``/api/v1/me`` and ``users.info``,
authentication and permission failures, the Meteor rate limiter and the three server "eras"
(R = Restivus < 7.4, E = express 7.4-7.8, H = Hono >= 7.9).

It has no dependency on the service under test.  ``RocketChatStandIn(...).app`` is a
Starlette ASGI app; ``StandInServer`` runs any ASGI app under uvicorn in a background
thread.  Fault injection (``down``, ``fail_next``, ``latency``, ``error_rate``) and the
rate limiter (``rate_limit``, ``window_ms``) are settable from the test thread or over HTTP
(``/_standin/state``, ``/_standin/control``). The state also reports the calls in flight
(``in_flight``, and ``max_in_flight`` since the start or the last ``reset_max_in_flight``),
how often each contact token was registered (``contact_tokens``, ``max_posts_per_token``)
and when the first call and the first registration arrived (``first_call_at``,
``first_contact_post_at``: ``time.time()``), for benchmarks driving it from another process.

Run standalone: ``python tests/rocketchat_standin.py --port 3000 --version 8.8``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

JSON_TYPE = "application/json"
METEOR_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz"
LIVECHAT_ROLES = frozenset({"livechat-manager", "livechat-monitor", "livechat-agent", "admin"})
DEFAULT_PERMISSIONS: dict[str, frozenset[str]] = {
    "view-l-room": LIVECHAT_ROLES,
    "create-livechat-contact": LIVECHAT_ROLES,
    "update-livechat-contact": LIVECHAT_ROLES,
    "view-livechat-contact": LIVECHAT_ROLES,
    "delete-livechat-contact": LIVECHAT_ROLES,
    "api-bypass-rate-limit": frozenset({"admin", "bot", "app"}),
    "view-statistics": frozenset({"admin"}),
}
DEFAULT_USERS: dict[str, dict[str, Any]] = {
    "agentUserId1": {
        "token": "agent-token",
        "username": "agent.smith",
        "name": "Agent Smith",
        "roles": ["user", "livechat-agent", "livechat-manager"],
    },
    "botUserId1": {
        "token": "bot-token",
        "username": "contact.bot",
        "name": "Contact Bot",
        "roles": ["bot", "livechat-agent"],
    },
    "plainUserId1": {
        "token": "plain-token",
        "username": "plain.user",
        "name": "Plain User",
        "roles": ["user"],
    },
}
LOGGED_OUT = "You must be logged in to do this."
VISITOR_PREFIX = "/api/v1/livechat/visitor/"
VISITOR_ROUTE = VISITOR_PREFIX + ":token"
# omnichannel/contacts.delete came in 2025 (PR #36589 era); the exact release is unconfirmed:
# the stand-in offers it from 7.11.
CONTACTS_DELETE_SINCE = (7, 11, 0)
FORBIDDEN = "User does not have the permissions required for this action [error-unauthorized]"
DEFAULT_COUNT = 50
UPPER_COUNT = 100


# --------------------------------------------------------------------------- helpers


def meteor_id() -> str:
    """17-char Meteor ``Random.id()``."""
    return "".join(secrets.choice(METEOR_ALPHABET) for _ in range(17))


def object_id() -> str:
    """24-hex id (contact-center ids)."""
    return secrets.token_hex(12)


def iso_now() -> str:
    """ISO date as Rocket.Chat puts it on the wire (``2021-10-21T19:36:47.960Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def now_ms() -> int:
    return int(time.time() * 1000)


def parse_version(version: str) -> tuple[int, int, int]:
    """``"8.8"`` / ``"7.10.2"`` / ``"6.13.0-rc.1"`` → ``(major, minor, patch)``."""
    nums = [int(n) for n in re.findall(r"\d+", version.split("-", 1)[0])[:3]]
    nums += [0] * (3 - len(nums))
    return nums[0], nums[1], nums[2]


def era_for(version: tuple[int, int, int]) -> str:
    if version < (7, 4, 0):
        return "R"
    if version < (7, 9, 0):
        return "E"
    return "H"


def js_typeof(value: Any) -> str:
    """``typeof`` as Meteor reports it in ``Expected string, got <type>``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object"


def js_string(value: Any) -> str:
    """JavaScript ``String(value)`` for JSON values."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        return "[object Object]"
    if isinstance(value, list):
        return ",".join("" if v is None else js_string(v) for v in value)
    return str(value)


def dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    """A non-200 answer: status + JSON body (+ extra headers)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("error") or body.get("message"))
        self.status = status
        self.body = body


def failure(message: str, error_type: str | None = None) -> ApiError:
    """``API.v1.failure``: 400 ``{"success":false,"error":…,"errorType"?}``."""
    body: dict[str, Any] = {"success": False, "error": message}
    if error_type:
        body["errorType"] = error_type
    return ApiError(400, body)


def meteor_error(code: str, reason: str | None = None) -> ApiError:
    """``Meteor.Error(code, reason)`` → message ``"<reason> [<code>]"`` + errorType."""
    message = f"{reason} [{code}]" if reason else f"[{code}]"
    return failure(message, code)


def match_error(message: str, path: str = "") -> ApiError:
    """Meteor ``check()`` failure (no errorType)."""
    suffix = f" in field {path}" if path else ""
    return failure(f"Match error: {message}{suffix}")


def invalid_params(messages: list[str]) -> ApiError:
    """ajv failure envelope (rest-typings validators)."""
    return meteor_error("invalid-params", "\n ".join(messages))


# --------------------------------------------------------------------------- Meteor check()

_MAYBE_FAILED = "Failed Match.OneOf, Match.Maybe or Match.Optional validation"


def _is_contact_manager(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"username"}
        and isinstance(value["username"], str)
    )


def meteor_check(
    value: Any,
    required: Iterable[str],
    optional: dict[str, Callable[[Any], bool]],
) -> None:
    """Meteor ``check(value, {...})`` for objects of strings / ``Match.Maybe`` fields.

    Present keys are checked in body order; missing required keys after, in schema order.
    """
    if value is None or not isinstance(value, dict):
        if isinstance(value, list):
            raise match_error("Expected plain object")
        raise match_error(f"Expected object, got {js_typeof(value)}")
    missing = list(required)
    for key, sub in value.items():
        if key in missing:
            if not isinstance(sub, str):
                raise match_error(f"Expected string, got {js_typeof(sub)}", key)
            missing.remove(key)
        elif key in optional:
            if sub is not None and not optional[key](sub):
                raise match_error(_MAYBE_FAILED, key)
        else:
            raise match_error("Unknown key", key)
    if missing:
        raise match_error(f"Missing key '{missing[0]}'")


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_plain_object(value: Any) -> bool:
    return isinstance(value, dict)


LEGACY_POST_OPTIONAL: dict[str, Callable[[Any], bool]] = {
    "_id": _is_str,
    "email": _is_str,
    "phone": _is_str,
    "username": _is_str,
    "customFields": _is_plain_object,
    "contactManager": _is_contact_manager,
}
LEGACY_SEARCH_OPTIONAL: dict[str, Callable[[Any], bool]] = {
    "email": _is_str,
    "phone": _is_str,
    "custom": _is_str,
}


# --------------------------------------------------------------------------- mini ajv


@dataclass(frozen=True)
class Prop:
    """A JSON-schema property as used by the rest-typings contact validators."""

    type: str
    nullable: bool = False
    items: str | None = None
    unique: bool = False
    min_length: int = 0


@dataclass(frozen=True)
class ObjSchema:
    properties: dict[str, Prop]
    required: tuple[str, ...] = ()


_NOT_COERCIBLE = object()


def _coerce(value: Any, to: str, array_mode: bool) -> Any:
    """ajv ``coerceTypes`` (``true`` for bodies, ``'array'`` for query strings)."""
    if array_mode and isinstance(value, list) and to != "array":
        if len(value) != 1:
            return _NOT_COERCIBLE
        value = value[0]
    if to == "array":
        if isinstance(value, list):
            return value
        return [value] if array_mode else _NOT_COERCIBLE
    if to == "string":
        if isinstance(value, str):
            return value
        if value is None:
            return ""
        if isinstance(value, bool | int | float):
            return js_string(value)
        return _NOT_COERCIBLE
    if to == "number":
        return _coerce_number(value)
    if to == "boolean":
        return _coerce_boolean(value)
    if to == "object":
        return value if isinstance(value, dict) else _NOT_COERCIBLE
    return _NOT_COERCIBLE


def _coerce_number(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    if value is None:
        return 0
    if isinstance(value, str) and value.strip():
        try:
            number = float(value)
        except ValueError:
            return _NOT_COERCIBLE
        return int(number) if number.is_integer() else number
    return _NOT_COERCIBLE


def _coerce_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    mapping = {"true": True, "false": False, 1: True, 0: False, None: False}
    try:
        return mapping.get(value, _NOT_COERCIBLE)
    except TypeError:
        return _NOT_COERCIBLE


def _duplicate_message(items: list[Any]) -> str | None:
    """ajv ``uniqueItems`` for string items (hash variant, scanning from the end)."""
    seen: dict[str, int] = {}
    for i in range(len(items) - 1, -1, -1):
        item = items[i]
        if not isinstance(item, str):
            continue
        if item in seen:
            return f"must NOT have duplicate items (items ## {seen[item]} and {i} are identical)"
        seen[item] = i
    return None


def _validate_prop(prop: Prop, value: Any, array_mode: bool) -> tuple[Any, str | None]:
    if value is None and prop.nullable:
        return None, None
    coerced = _coerce(value, prop.type, array_mode)
    if coerced is _NOT_COERCIBLE:
        return value, f"must be {prop.type}"
    if prop.type == "string" and len(coerced) < prop.min_length:
        return coerced, f"must NOT have fewer than {prop.min_length} characters"
    if prop.type != "array":
        return coerced, None
    if prop.unique and (dup := _duplicate_message(coerced)):
        return coerced, dup
    items = []
    for item in coerced:
        converted = _coerce(item, prop.items or "string", False)
        if converted is _NOT_COERCIBLE:
            return coerced, f"must be {prop.items}"
        items.append(converted)
    return items, None


def ajv_validate(schema: ObjSchema, data: Any, *, array_mode: bool = False) -> dict[str, Any]:
    """First-error ajv semantics: type → required → additionalProperties → properties."""
    if not isinstance(data, dict):
        raise invalid_params(["must be object"])
    for name in schema.required:
        if name not in data:
            raise invalid_params([f"must have required property '{name}'"])
    if any(key not in schema.properties for key in data):
        raise invalid_params(["must NOT have additional properties"])
    result = dict(data)
    for name, prop in schema.properties.items():
        if name in data:
            value, error = _validate_prop(prop, data[name], array_mode)
            if error:
                raise invalid_params([error])
            result[name] = value
    return result


def _contact_schemas(version: tuple[int, int, int]) -> dict[str, ObjSchema]:
    strings = Prop("array", items="string", unique=True)
    nullable_strings = Prop("array", nullable=True, items="string", unique=True)
    min_len = 1 if version >= (7, 10, 0) else 0
    search_props = {
        "searchText": Prop("string"),
        "count": Prop("number", nullable=True),
        "offset": Prop("number", nullable=True),
        "sort": Prop("string"),
    }
    if version >= (7, 10, 0):
        # Contract §3.5: absent in rest-typings 7.0.0, present by 7.10.0 (the release in
        # between is unconfirmed: modelled as absent, so older servers reject the key).
        search_props["unknown"] = Prop("boolean")
    return {
        "create": ObjSchema(
            {
                "name": Prop("string"),
                "emails": strings,
                "phones": strings,
                "customFields": Prop("object", nullable=True),
                "contactManager": Prop("string", nullable=True),
            },
            ("name", "emails", "phones"),
        ),
        "update": ObjSchema(
            {
                "contactId": Prop("string"),
                "name": Prop("string"),
                "emails": nullable_strings,
                "phones": nullable_strings,
                "customFields": Prop("object", nullable=True),
                "contactManager": Prop("string", nullable=True),
                "wipeConflicts": Prop("boolean", nullable=True),
            },
            ("contactId",),
        ),
        "get": ObjSchema({"contactId": Prop("string", min_length=min_len)}, ("contactId",)),
        "search": ObjSchema(search_props),
    }


def validate_check_existence(query: dict[str, Any]) -> tuple[str, str]:
    """``oneOf [{contactId}, {email}, {phone}]`` each with ``additionalProperties: false``."""
    errors: list[str] = []
    matches: list[tuple[str, str]] = []
    for key in ("contactId", "email", "phone"):
        if key not in query:
            errors.append(f"must have required property '{key}'")
        elif len(query) > 1:
            errors.append("must NOT have additional properties")
        else:
            value = _coerce(query[key], "string", True)
            if value is _NOT_COERCIBLE:
                errors.append("must be string")
            else:
                matches.append((key, value))
    if len(matches) != 1:
        raise invalid_params([*errors, "must match exactly one schema in oneOf"])
    return matches[0]


# --------------------------------------------------------------------------- custom fields


def _cf_invalid(cf_id: str, cf: dict[str, Any]) -> ApiError:
    return failure(f"Invalid value for {cf.get('label') or cf_id} field")


def validate_custom_fields(
    allowed: dict[str, dict[str, Any]],
    received: dict[str, Any],
    *,
    ignore_additional: bool,
    tolerated: Iterable[str] = (),
) -> dict[str, str]:
    """``validateCustomFields``: required / regexp checks, then additional keys."""
    valid: dict[str, str] = {}
    for cf_id, cf in allowed.items():
        if cf_id not in received:
            if cf.get("required"):
                raise _cf_invalid(cf_id, cf)
            continue
        raw = received[cf_id]
        value = "" if raw is None else js_string(raw).strip()
        if not value:
            if cf.get("required"):
                raise _cf_invalid(cf_id, cf)
            continue
        if cf.get("regexp") and not re.search(cf["regexp"], value):
            raise _cf_invalid(cf_id, cf)
        valid[cf_id] = value
    if not ignore_additional:
        extra_ok = set(tolerated)
        for key in received:
            if key not in allowed and key not in extra_ok:
                raise failure(f"Custom field {key} is not allowed")
    return valid


# --------------------------------------------------------------------------- records


@dataclass
class RecordedCall:
    """One request seen by the stand-in (``/_standin/*`` excluded)."""

    method: str
    path: str
    query: dict[str, Any]
    headers: dict[str, str]
    json: Any
    status: int
    response: Any
    response_headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Ctx:
    request: Request
    query: dict[str, Any]
    body: Any
    user: dict[str, Any] | None = None
    user_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _RouteDef:
    handler: Callable[[_Ctx], dict[str, Any]]
    auth: bool = True
    permission: str | None = None
    rate_limited: bool = True
    schema: str | None = None


@dataclass
class _RateRule:
    last_reset: int
    counters: dict[str, int] = field(default_factory=dict)


class _Answer(Exception):
    """Short-circuit with a ready response (used for non-JSON answers)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


# --------------------------------------------------------------------------- the stand-in


class RocketChatStandIn:
    """In-memory Rocket.Chat that answers the contact routes like the real server."""

    def __init__(
        self,
        *,
        version: str = "8.8",
        rate_limit: int | None = 10,
        window_ms: int = 60_000,
        users: dict[str, dict[str, Any]] | None = None,
        latency: float = 0.0,
        error_rate: float = 0.0,
        seed: int = 0,
        test_mode: bool = False,
        restivus_auth_delay: bool = False,
    ) -> None:
        self.version = version
        self.version_tuple = parse_version(version)
        self.era = era_for(self.version_tuple)
        self.rate_limit = rate_limit
        self.window_ms = window_ms
        self.test_mode = test_mode
        self.restivus_auth_delay = restivus_auth_delay
        self.users: dict[str, dict[str, Any]] = {
            uid: {**u, "roles": list(u["roles"]), "active": True}
            for uid, u in {**DEFAULT_USERS, **(users or {})}.items()
        }
        self.permissions: dict[str, set[str]] = {k: set(v) for k, v in DEFAULT_PERMISSIONS.items()}
        self.calls: list[RecordedCall] = []
        self.visitors: dict[str, dict[str, Any]] = {}
        self._index: dict[tuple[str, str], str] = {}
        self._index_size = 0
        self.contacts: dict[str, dict[str, Any]] = {}
        self.messages: list[dict[str, Any]] = []  # chat.postMessage, as stored
        self.custom_fields: dict[str, dict[str, Any]] = {}
        # Erasure (contracts §7a): visitor tokens and contact ids with an open conversation,
        # and Livechat_Allow_collect_and_store_HTTP_header_informations (the "GDPR" setting
        # that lets a visitor with open rooms be removed).
        self.open_rooms: set[str] = set()
        self.gdpr_setting = False
        self.down = False
        # Faults (down, fail_next) answered as a proxy's HTML error page (nginx) instead of JSON
        self.fault_html = False
        self.latency = latency
        self.error_rate = error_rate
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._fail_next: list[int] = []
        self._revoked: set[str] = set()
        self._guest_counter = 0
        self._posts_per_token: collections.Counter[str] = collections.Counter()
        self.in_flight = 0  # calls being answered now (the latency included)
        self.max_in_flight = 0
        self.first_call_at: float | None = None
        self.first_contact_post_at: float | None = None
        self._rules: dict[str, _RateRule] = {}
        self._schemas = _contact_schemas(self.version_tuple)
        self._routes = self._build_routes()
        self.reset_rate_limits()
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
        self.app = Starlette(routes=[Route("/{path:path}", self._asgi_entry, methods=methods)])

    # ----------------------------------------------------------------- public controls

    def fail_next(self, n: int, status: int = 503) -> None:
        """The next ``n`` requests answer ``status`` before doing anything."""
        with self._lock:
            self._fail_next.extend([status] * n)

    def set_credentials_valid(self, user_id: str, valid: bool) -> None:
        with self._lock:
            if valid:
                self._revoked.discard(user_id)
            else:
                self._revoked.add(user_id)

    def set_permission(self, permission: str, roles: Iterable[str]) -> None:
        """Grant ``permission`` to exactly ``roles`` (empty ⇒ "perm removed")."""
        with self._lock:
            self.permissions[permission] = set(roles)

    def add_custom_field(
        self,
        cf_id: str,
        *,
        label: str | None = None,
        required: bool = False,
        regexp: str = "",
        searchable: bool = True,
    ) -> None:
        """Register a visitor-scope custom field."""
        with self._lock:
            self.custom_fields[cf_id] = {
                "label": label or cf_id,
                "required": required,
                "regexp": regexp,
                "searchable": searchable,
            }

    def set_version(self, version: str) -> None:
        """Upgrade or roll back the running server: its routes, validators and era follow
        ``version`` from the next request on (the rate-limit windows restart, as a server
        restart would). Contacts and visitors are kept, like the database."""
        with self._lock:
            self.version = version
            self.version_tuple = parse_version(version)
            self.era = era_for(self.version_tuple)
            self._schemas = _contact_schemas(self.version_tuple)
            self._routes = self._build_routes()
        self.reset_rate_limits()

    def seed_unknown_contact(
        self,
        name: str,
        *,
        email: str | None = None,
        phone: str | None = None,
        source: str = "widget",
    ) -> str:
        """A guest who chatted: the livechat visitor, and the contact Rocket.Chat (7.x+)
        makes for it by itself, marked ``unknown: true`` (``contacts.search`` shows it only
        with ``unknown=true``). Returns the contact id."""
        with self._lock:
            self._guest_counter += 1
            visitor_id, now = meteor_id(), iso_now()
            visitor: dict[str, Any] = {
                "_id": visitor_id,
                "username": f"guest-{self._guest_counter}",
                "ts": now,
                "token": secrets.token_hex(8),
                "name": name,
                "_updatedAt": now,
            }
            if email:
                visitor["visitorEmails"] = [{"address": email}]
            if phone:
                visitor["phone"] = [{"phoneNumber": phone}]
            self.visitors[visitor_id] = visitor
            contact_id = object_id()
            self.contacts[contact_id] = {
                "_id": contact_id,
                "name": name,
                "emails": [{"address": email}] if email else [],
                "phones": [{"phoneNumber": phone}] if phone else [],
                "unknown": True,
                "channels": [
                    {
                        "name": source,
                        "visitor": {"visitorId": visitor_id, "source": {"type": source}},
                        "verified": False,
                        "blocked": False,
                        "details": {"type": source},
                    }
                ],
                "customFields": {},
                "createdAt": now,
                "_updatedAt": now,
            }
            return contact_id

    def set_rate_limit(self, limit: int | None, window_ms: int | None = None) -> None:
        """Switch the limiter at run time: ``None`` (or 0) turns it off, so answers carry no
        ``X-RateLimit-*`` headers, as for a user just granted the bot role; a number turns
        it on with that many calls per window. The windows restart either way."""
        with self._lock:
            self.rate_limit = limit or None
            if window_ms is not None:
                self.window_ms = window_ms
        self.reset_rate_limits()

    def reset_max_in_flight(self) -> None:
        """``max_in_flight`` from now on (starts again at the calls in flight now)."""
        with self._lock:
            self.max_in_flight = self.in_flight

    def contact_posts_per_token(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self._posts_per_token)

    def reset_rate_limits(self) -> None:
        """Restart every rule's window now (Meteor creates the rules at server start)."""
        with self._lock:
            start = now_ms()
            self._rules = {
                f"{path}{method.lower()}": _RateRule(last_reset=start)
                for path, methods in self._routes.items()
                for method, route in methods.items()
                if route.rate_limited
            }

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "version": self.version,
                "era": self.era,
                "calls": len(self.calls),
                "visitors": len(self.visitors),
                "contacts": len(self.contacts),
                "contact_posts": sum(self._posts_per_token.values()),
                "contact_tokens": len(self._posts_per_token),
                "max_posts_per_token": max(self._posts_per_token.values(), default=0),
                "first_call_at": self.first_call_at,
                "first_contact_post_at": self.first_contact_post_at,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "down": self.down,
                "latency": self.latency,
                "error_rate": self.error_rate,
                "rate_limit": self.rate_limit or 0,
                "window_ms": self.window_ms,
            }

    # ----------------------------------------------------------------- routing table

    def _build_routes(self) -> dict[str, dict[str, _RouteDef]]:
        v = self.version_tuple
        legacy_perm = "view-l-room" if v >= (5, 0, 0) else None
        routes: dict[str, dict[str, _RouteDef]] = {
            "/api/info": {"GET": _RouteDef(self._info, auth=False, rate_limited=False)},
            "/api/v1/me": {"GET": _RouteDef(self._me)},
            "/api/v1/users.info": {"GET": _RouteDef(self._users_info)},
            "/api/v1/chat.postMessage": {"POST": _RouteDef(self._post_message)},
            "/api/v1/omnichannel/contact": {
                "POST": _RouteDef(self._legacy_register, permission=legacy_perm),
                "GET": _RouteDef(self._legacy_get, permission=legacy_perm),
            },
            "/api/v1/omnichannel/contact.search": {
                "GET": _RouteDef(self._legacy_search, permission=legacy_perm),
            },
        }
        base = "/api/v1/omnichannel/contacts"
        if v >= (6, 13, 0):
            routes[base] = {
                "POST": _RouteDef(
                    self._contacts_create, permission="create-livechat-contact", schema="create"
                )
            }
            routes[base + ".update"] = {
                "POST": _RouteDef(
                    self._contacts_update, permission="update-livechat-contact", schema="update"
                )
            }
            routes[base + ".get"] = {
                "GET": _RouteDef(
                    self._contacts_get, permission="view-livechat-contact", schema="get"
                )
            }
        if v >= (7, 0, 0):
            routes[base + ".search"] = {
                "GET": _RouteDef(
                    self._contacts_search, permission="view-livechat-contact", schema="search"
                )
            }
        # No authRequired in visitor.ts: the token is the credential.
        routes[VISITOR_ROUTE] = {
            "GET": _RouteDef(self._visitor_get, auth=False),
            "DELETE": _RouteDef(self._visitor_delete, auth=False),
        }
        if v >= CONTACTS_DELETE_SINCE:
            routes[base + ".delete"] = {
                "POST": _RouteDef(self._contacts_delete, permission="delete-livechat-contact")
            }
        if v >= (7, 10, 0):
            routes[base + ".checkExistence"] = {
                "GET": _RouteDef(
                    self._contacts_check_existence,
                    permission="view-livechat-contact",
                    schema="checkExistence",
                )
            }
        return routes

    # ----------------------------------------------------------------- ASGI entry

    async def _asgi_entry(self, request: Request) -> Response:
        path = request.url.path
        if path.startswith("/_standin/"):
            return await self._control(request)
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self.first_call_at is None:
                self.first_call_at = time.time()
        try:
            return await self._answer(request, path)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _answer(self, request: Request, path: str) -> Response:
        raw = await request.body()
        body = self._parse_body(request, raw)
        query = self._query_dict(request)
        response = self._fault(request)
        if response is None:
            response = self._dispatch(request, path, query, body)
        if response.status_code in (401, 403) and self.era == "R" and self.restivus_auth_delay:
            await asyncio.sleep(random.uniform(0.5, 1.0))  # noqa: sleep-ok - Restivus's delay
        if self.latency > 0:
            await asyncio.sleep(self.latency)  # noqa: sleep-ok - the simulated latency
        self._record(request, query, body, response)
        return response

    @staticmethod
    def _query_dict(request: Request) -> dict[str, Any]:
        query: dict[str, Any] = {}
        for key, value in request.query_params.multi_items():
            if key in query:
                prev = query[key]
                query[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
            else:
                query[key] = value
        return query

    def _parse_body(self, request: Request, raw: bytes) -> Any:
        if not raw:
            return None
        ctype = request.headers.get("content-type", "")
        if JSON_TYPE in ctype:
            try:
                return json.loads(raw)
            except ValueError:
                return _INVALID_JSON
        if "application/x-www-form-urlencoded" in ctype:
            return dict(parse_qsl(raw.decode(errors="replace")))
        if self.era == "H":  # text spread into an object: {"0": "{", "1": "\"", …}
            return {str(i): ch for i, ch in enumerate(raw.decode(errors="replace"))}
        return None

    def _fault(self, request: Request) -> Response | None:
        if self.down:
            return _fault_response(503, html=self.fault_html)
        with self._lock:
            status = self._fail_next.pop(0) if self._fail_next else None
        if status is not None:
            return _fault_response(status, html=self.fault_html)
        is_contact_post = request.method == "POST" and request.url.path in (
            "/api/v1/omnichannel/contact",
            "/api/v1/omnichannel/contacts",
        )
        if is_contact_post and self.error_rate > 0:
            with self._lock:
                roll = self._random.random()
            if roll < self.error_rate:
                return _fault_response(503)
        return None

    def _record(
        self, request: Request, query: dict[str, Any], body: Any, response: Response
    ) -> None:
        payload = bytes(response.body)
        try:
            answer = json.loads(payload) if payload else None
        except ValueError:
            answer = payload.decode(errors="replace")
        call = RecordedCall(
            method=request.method,
            path=request.url.path,
            query=query,
            headers=dict(request.headers),
            json=None if body is _INVALID_JSON else body,
            status=response.status_code,
            response=answer,
            response_headers=dict(response.headers),
        )
        with self._lock:
            self.calls.append(call)

    # ----------------------------------------------------------------- pipeline

    def _dispatch(self, request: Request, path: str, query: dict[str, Any], body: Any) -> Response:
        if path.startswith(VISITOR_PREFIX) and "/" not in path[len(VISITOR_PREFIX) :]:
            query = {**query, ":token": unquote(path[len(VISITOR_PREFIX) :])}
            path = VISITOR_ROUTE
        methods = self._routes.get(path)
        route = methods.get(request.method) if methods else None
        if route is None:
            return self._not_routed(request.method, methods)
        ctx = _Ctx(request=request, query=query, body=body)
        try:
            if body is _INVALID_JSON:
                raise failure("Unexpected token in JSON body")
            answer = self._run_pipeline(route, ctx, path, request.method)
        except ApiError as exc:
            return self._json(exc.status, exc.body, ctx.headers)
        return self._json(200, {**answer, "success": True}, ctx.headers)

    def _run_pipeline(self, route: _RouteDef, ctx: _Ctx, path: str, method: str) -> dict[str, Any]:
        self._authenticate(route, ctx)
        rate_key = f"{path}{method.lower()}"
        if self.era == "H":
            self._check_permission(route, ctx)
            self._rate_limit(route, ctx, rate_key)
            self._validate(route, ctx)
        else:
            self._rate_limit(route, ctx, rate_key)
            self._validate(route, ctx)
            self._check_permission(route, ctx)
        with self._lock:
            return route.handler(ctx)

    def _authenticate(self, route: _RouteDef, ctx: _Ctx) -> None:
        headers = ctx.request.headers
        user_id = headers.get("x-user-id")
        token = headers.get("x-auth-token")
        user = self.users.get(user_id or "")
        valid = (
            user is not None
            and bool(token)
            and user.get("token") == token
            and user.get("active", True)
            and user_id not in self._revoked
        )
        if valid:
            ctx.user, ctx.user_id = user, user_id
        elif route.auth:
            raise ApiError(401, self._unauthorized_body())

    def _unauthorized_body(self) -> dict[str, Any]:
        if self.era == "R":
            return {"status": "error", "message": LOGGED_OUT}
        return {"success": False, "error": LOGGED_OUT, "status": "error", "message": LOGGED_OUT}

    def has_permission(self, user: dict[str, Any] | None, permission: str) -> bool:
        if user is None:
            return False
        allowed = self.permissions.get(permission, set())
        return any(role in allowed for role in user.get("roles", ()))

    def _check_permission(self, route: _RouteDef, ctx: _Ctx) -> None:
        if route.permission and not self.has_permission(ctx.user, route.permission):
            raise ApiError(403, {"success": False, "error": FORBIDDEN})

    def _rate_limit(self, route: _RouteDef, ctx: _Ctx, key: str) -> None:
        if not route.rate_limited or self.rate_limit is None or self.test_mode:
            return
        if self.has_permission(ctx.user, "api-bypass-rate-limit"):
            return
        ip = ctx.request.client.host if ctx.request.client else "unknown"
        with self._lock:
            count, time_to_reset = self._increment(key, ip)
        limit = self.rate_limit
        ctx.headers["X-RateLimit-Limit"] = str(limit)
        ctx.headers["X-RateLimit-Remaining"] = str(max(limit - count, 0))
        ctx.headers["X-RateLimit-Reset"] = str(now_ms() + time_to_reset)
        if count > limit:
            seconds = math.ceil(time_to_reset / 1000)
            raise ApiError(
                429,
                {
                    "success": False,
                    "error": "Error, too many requests. Please slow down. You must wait "
                    f"{seconds} seconds before trying this endpoint again. "
                    "[error-too-many-requests]",
                },
            )

    def _increment(self, key: str, ip: str) -> tuple[int, int]:
        """Meteor RateLimiter: fixed window per rule, increment then check."""
        now = now_ms()
        rule = self._rules.setdefault(key, _RateRule(last_reset=now))
        if now - rule.last_reset > self.window_ms:
            rule.counters.clear()
            rule.last_reset = now
        rule.counters[ip] = rule.counters.get(ip, 0) + 1
        return rule.counters[ip], self.window_ms - (now - rule.last_reset)

    def _validate(self, route: _RouteDef, ctx: _Ctx) -> None:
        if route.schema is None:
            return
        if route.schema == "checkExistence":
            key, value = validate_check_existence(ctx.query)
            ctx.query = {key: value}
            return
        schema = self._schemas[route.schema]
        if ctx.request.method == "GET":
            ctx.query = ajv_validate(schema, ctx.query, array_mode=True)
        else:
            ctx.body = ajv_validate(schema, {} if ctx.body is None else ctx.body)

    def _not_routed(self, method: str, methods: dict[str, _RouteDef] | None) -> Response:
        if self.era == "H":
            return Response(b"404 Not Found", 404, media_type="text/plain; charset=UTF-8")
        if self.era == "R" and methods:
            allow = ", ".join([*sorted(methods), "OPTIONS"])
            if method == "OPTIONS":
                return Response(b"", 200, headers={"Allow": allow})
            body = {"status": "error", "message": "API endpoint does not exist"}
            return self._json(405, body, {"Allow": allow})
        html = b"<!DOCTYPE html><html><head><title>404</title></head><body>404</body></html>"
        return Response(html, 404, media_type="text/html; charset=utf-8")

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        response = Response(dumps(body), status, headers=headers)
        response.headers["content-type"] = JSON_TYPE
        if self.era in ("E", "H"):
            response.headers["cache-control"] = "no-store"
            response.headers["pragma"] = "no-cache"
        return response

    # ----------------------------------------------------------------- control over HTTP

    async def _control(self, request: Request) -> Response:
        if request.url.path == "/_standin/state" and request.method == "GET":
            return Response(dumps(self.state()), 200, media_type=JSON_TYPE)
        if request.url.path == "/_standin/control" and request.method == "POST":
            try:
                payload = json.loads(await request.body() or b"{}")
            except ValueError:
                return Response(dumps({"error": "bad json"}), 400, media_type=JSON_TYPE)
            self._apply_control(payload)
            return Response(dumps(self.state()), 200, media_type=JSON_TYPE)
        return Response(b"not found", 404, media_type="text/plain")

    def _apply_control(self, payload: dict[str, Any]) -> None:
        if "down" in payload:
            self.down = bool(payload["down"])
        if "latency" in payload:
            self.latency = float(payload["latency"])
        if "error_rate" in payload:
            self.error_rate = float(payload["error_rate"])
        if "fail_next" in payload:
            self.fail_next(int(payload["fail_next"]), int(payload.get("fail_status", 503)))
        if "version" in payload:
            self.set_version(str(payload["version"]))
        if "rate_limit" in payload or "window_ms" in payload:
            limit = payload.get("rate_limit", self.rate_limit)
            window = payload.get("window_ms")
            self.set_rate_limit(
                int(limit) if limit else None, int(window) if window is not None else None
            )
        if payload.get("reset_rate_limits"):
            self.reset_rate_limits()
        if payload.get("reset_max_in_flight"):
            self.reset_max_in_flight()

    # ----------------------------------------------------------------- /api/info, /me

    def _info(self, ctx: _Ctx) -> dict[str, Any]:
        major, minor, patch = self.version_tuple
        full = f"{major}.{minor}.{patch}"
        privileged = self.era != "E" and self.has_permission(ctx.user, "view-statistics")
        if self.version_tuple < (5, 0, 0) or privileged:
            answer: dict[str, Any] = {"version": full}
            if privileged:
                answer["info"] = {"version": full}
        else:
            answer = {"version": f"{major}.{minor}"}
        if self.version_tuple >= (5, 0, 0):
            answer["minimumClientVersions"] = {"desktop": "3.9.6", "mobile": "4.39.0"}
        return answer

    def _me(self, ctx: _Ctx) -> dict[str, Any]:
        user = ctx.user or {}
        return {
            "_id": ctx.user_id,
            "username": user.get("username"),
            "name": user.get("name", user.get("username")),
            "emails": [{"address": f"{user.get('username')}@example.com", "verified": True}],
            "status": "online",
            "active": user.get("active", True),
            "roles": list(user.get("roles", [])),
            "settings": {"preferences": {}},
            "services": {"password": {"exists": True}},
        }

    def _post_message(self, ctx: _Ctx) -> dict[str, Any]:
        """``chat.postMessage`` by ``roomId`` (or ``channel``), optionally in a thread
        (``tmid``). [unconfirmed] the exact error text for a missing room: 400 with
        ``error-invalid-channel`` is what is modelled."""
        body = ctx.body if isinstance(ctx.body, dict) else {}
        room = body.get("roomId") or body.get("channel")
        if not isinstance(room, str) or not room:
            raise meteor_error("error-invalid-channel", "The channel or roomId is required")
        user = ctx.user or {}
        message = {
            "_id": meteor_id(),
            "rid": room,
            "msg": str(body.get("text") or ""),
            "ts": iso_now(),
            "u": {"_id": ctx.user_id, "username": user.get("username")},
            **({"tmid": body["tmid"]} if body.get("tmid") else {}),
        }
        self.messages.append(message)
        return {"ts": int(time.time() * 1000), "channel": room, "message": message}

    def _users_info(self, ctx: _Ctx) -> dict[str, Any]:
        """``GET users.info?userId=|username=`` (auth only; the public fields of the user)."""
        user_id, username = ctx.query.get("userId"), ctx.query.get("username")
        if not (isinstance(user_id, str) and user_id) and not (
            isinstance(username, str) and username
        ):
            raise failure("Invalid search query.")
        found = next(
            (
                (uid, u)
                for uid, u in self.users.items()
                if (uid == user_id if user_id else u.get("username") == username)
            ),
            None,
        )
        if found is None:
            raise failure("User not found.")
        uid, user = found
        return {
            "user": {
                "_id": uid,
                "type": "user",
                "status": "online",
                "active": user.get("active", True),
                "name": user.get("name", user.get("username")),
                "username": user.get("username"),
            }
        }

    # ----------------------------------------------------------------- legacy routes

    def _legacy_register(self, ctx: _Ctx) -> dict[str, Any]:
        body = {} if ctx.body is None else ctx.body
        meteor_check(body, ("token", "name"), LEGACY_POST_OPTIONAL)
        modern = self.version_tuple >= (6, 0, 0)
        token = body["token"]
        if not token:
            raise meteor_error("error-invalid-contact-data", "Invalid visitor token")
        email = body.get("email", "")
        if email is None:
            raise failure("Cannot read properties of null (reading 'trim')")
        email = email.strip().lower()
        manager = (body.get("contactManager") or {}).get("username") or None
        if manager:
            self._check_legacy_manager(manager)
        livechat_data = self._legacy_custom_fields(body.get("customFields") or {}, modern)
        visitor = self._find_or_create_visitor(token, email, body.get("username"))
        self._apply_legacy_update(visitor, body, email, manager, livechat_data, modern)
        self._index_visitor(visitor)
        self._index_size = len(self.visitors)
        self._posts_per_token[token] += 1
        if self.first_contact_post_at is None:
            self.first_contact_post_at = time.time()
        return {"contact": visitor["_id"]}

    def _check_legacy_manager(self, username: str) -> None:
        user = next((u for u in self.users.values() if u.get("username") == username), None)
        if user is None:
            raise meteor_error(
                "error-contact-manager-not-found", f"No user found with username {username}"
            )
        if "livechat-agent" not in user.get("roles", ()):
            raise meteor_error(
                "error-invalid-contact-manager",
                'The contact manager must have the role "livechat-agent"',
            )

    def _legacy_custom_fields(self, received: dict[str, Any], modern: bool) -> dict[str, str]:
        if modern:
            return validate_custom_fields(self.custom_fields, received, ignore_additional=True)
        kept: dict[str, str] = {}
        for cf_id in self.custom_fields:
            value = received.get(cf_id)
            text = "" if value is None else js_string(value).strip()
            if text:
                kept[cf_id] = text
        return kept

    def _visitor_index(self) -> dict[tuple[str, str], str]:
        """(``token``|``email``, value) → visitor id, like Rocket.Chat's MongoDB indexes on
        ``token`` and ``visitorEmails.address``: a lookup costs the same with 10 or 10,000
        visitors, so the stand-in does not slow down as a benchmark fills it. Rebuilt
        whenever a hit turns out stale or visitors were added behind its back."""
        if self._index_size != len(self.visitors):
            self._reindex_visitors()
        return self._index

    def visitors_changed(self) -> None:
        """A test edited ``visitors`` in place (a token, an email): index them again."""
        with self._lock:
            self._reindex_visitors()

    def _reindex_visitors(self) -> None:
        self._index = {}
        for visitor in self.visitors.values():
            self._index_visitor(visitor)
        self._index_size = len(self.visitors)

    def _index_visitor(self, visitor: dict[str, Any]) -> None:
        if visitor.get("token"):
            self._index.setdefault(("token", visitor["token"]), visitor["_id"])
        for entry in visitor.get("visitorEmails") or []:
            if entry.get("address"):
                self._index.setdefault(("email", entry["address"]), visitor["_id"])

    def _lookup_visitor(self, key: str, value: str) -> dict[str, Any] | None:
        def holds(v: dict[str, Any]) -> bool:
            if key == "token":
                return bool(v.get("token") == value)
            return any(e.get("address") == value for e in v.get("visitorEmails") or [])

        for _ in range(2):
            visitor_id = self._visitor_index().get((key, value))
            visitor = self.visitors.get(visitor_id) if visitor_id is not None else None
            if visitor is not None and holds(visitor):
                return visitor
            if visitor_id is None:
                return None
            self._reindex_visitors()
        return None

    def _find_or_create_visitor(
        self, token: str, email: str, username: str | None
    ) -> dict[str, Any]:
        # registerContact (apps/meteor/app/livechat/server/lib/contacts/registerContact.ts
        # @4e438400, the same in apps/meteor/server/lib/omnichannel/contacts/ @5d603e27):
        # by token; else, for an unknown token, the visitor holding the email is reused and
        # its token overwritten with the new one ($set token, _apply_legacy_update); no
        # email (or an unknown one) inserts a new visitor, even when the phone is known.
        visitor = self._lookup_visitor("token", token)
        if visitor is not None:
            return visitor
        if email:
            visitor = self._lookup_visitor("email", email)
            if visitor is not None:
                return visitor
        if not username:
            self._guest_counter += 1
            username = f"guest-{self._guest_counter}"
        visitor_id = meteor_id()
        visitor = {"_id": visitor_id, "username": username, "ts": iso_now(), "token": token}
        self.visitors[visitor_id] = visitor
        return visitor

    @staticmethod
    def _apply_legacy_update(
        visitor: dict[str, Any],
        body: dict[str, Any],
        email: str,
        manager: str | None,
        livechat_data: dict[str, str],
        modern: bool,
    ) -> None:
        visitor["token"] = body["token"]
        visitor["name"] = body["name"]
        visitor["livechatData"] = livechat_data
        phone = body.get("phone")
        if phone:
            visitor["phone"] = [{"phoneNumber": phone}]
        elif phone == "" and modern:
            visitor.pop("phone", None)
        if email:
            visitor["visitorEmails"] = [{"address": email}]
        elif modern:
            visitor.pop("visitorEmails", None)
        if manager:
            visitor["contactManager"] = {"username": manager}
        elif modern:
            visitor.pop("contactManager", None)
        visitor["_updatedAt"] = iso_now()

    def _public_visitor(self, visitor: dict[str, Any] | None) -> dict[str, Any] | None:
        if visitor is None:
            return None
        doc = {k: v for k, v in visitor.items() if k != "disabled" or v}
        if self.version_tuple >= (8, 0, 0):
            doc.pop("token", None)
        return doc

    def _legacy_get(self, ctx: _Ctx) -> dict[str, Any]:
        meteor_check(ctx.query, ("contactId",), {})
        visitor = self.visitors.get(ctx.query["contactId"])
        if visitor is not None and visitor.get("disabled") and self.version_tuple >= (6, 0, 0):
            visitor = None
        return {"contact": self._public_visitor(visitor)}

    def _legacy_search(self, ctx: _Ctx) -> dict[str, Any]:
        meteor_check(ctx.query, (), LEGACY_SEARCH_OPTIONAL)
        email, phone, custom = (ctx.query.get(k) for k in ("email", "phone", "custom"))
        custom_cf = self._parse_custom_query(custom)
        if not email and not phone and not custom_cf:
            raise meteor_error("error-invalid-params")
        patterns = {
            cf_id: re.compile(re.escape(js_string(custom_cf[cf_id])), re.IGNORECASE)
            for cf_id in custom_cf
            if (cf := self.custom_fields.get(cf_id)) is not None and cf.get("searchable")
        }
        if not email and not phone and not patterns:
            return {"contact": None}
        for visitor in self.visitors.values():
            if self._visitor_matches(visitor, email, phone, patterns):
                return {"contact": self._public_visitor(visitor)}
        return {"contact": None}

    @staticmethod
    def _parse_custom_query(custom: str | None) -> dict[str, Any]:
        if not custom:
            return {}
        try:
            parsed = json.loads(custom)
        except ValueError:
            raise meteor_error("error-invalid-params-custom") from None
        if parsed is None:
            raise failure("Cannot convert undefined or null to object")
        if isinstance(parsed, dict):
            return parsed
        if isinstance(parsed, list | str):
            return {str(i): v for i, v in enumerate(parsed)}
        return {}

    @staticmethod
    def _visitor_matches(
        visitor: dict[str, Any],
        email: str | None,
        phone: str | None,
        patterns: dict[str, re.Pattern[str]],
    ) -> bool:
        if visitor.get("disabled"):
            return False
        if email and {"address": email} not in (visitor.get("visitorEmails") or []):
            return False
        if phone and {"phoneNumber": phone} not in (visitor.get("phone") or []):
            return False
        data = visitor.get("livechatData") or {}
        return all(
            isinstance(data.get(cf_id), str) and pattern.search(data[cf_id])
            for cf_id, pattern in patterns.items()
        )

    # ----------------------------------------------------------------- contact-center API

    # ----------------------------------------------------------------- erasure (§7a)

    def _visitor_by_token(self, ctx: _Ctx) -> dict[str, Any]:
        token = ctx.query.get(":token") or ""
        visitor = self._lookup_visitor("token", token) if token else None
        if visitor is None or visitor.get("disabled"):
            raise meteor_error("invalid-token")
        return visitor

    def _visitor_get(self, ctx: _Ctx) -> dict[str, Any]:
        return {"visitor": self._public_visitor(self._visitor_by_token(ctx))}

    def _visitor_delete(self, ctx: _Ctx) -> dict[str, Any]:
        visitor = self._visitor_by_token(ctx)
        if visitor.get("token") in self.open_rooms and not self.gdpr_setting:
            raise meteor_error("visitor-has-open-rooms", "Cannot remove visitors with opened rooms")
        self._remove_guest(visitor)
        return {"visitor": {"_id": visitor["_id"], "ts": visitor.get("ts") or iso_now()}}

    def _remove_guest(self, visitor: dict[str, Any]) -> None:
        """removeGuest: the visitor's details are unset and it is disabled."""
        for key in ("name", "visitorEmails", "phone", "livechatData", "contactManager", "token"):
            visitor.pop(key, None)
        visitor["disabled"] = True
        self._reindex_visitors()

    def _contacts_delete(self, ctx: _Ctx) -> dict[str, Any]:
        body = ctx.body if isinstance(ctx.body, dict) else {}
        contact_id = body.get("contactId")
        if not isinstance(contact_id, str) or not contact_id:
            raise invalid_params(["must have required property 'contactId'"])
        contact = self.contacts.get(contact_id)
        if contact is None or contact.get("enabled") is False:
            raise ApiError(404, {"success": False, "error": "error-contact-not-found"})
        if contact_id in self.open_rooms and not self.gdpr_setting:
            raise failure("error-invalid-contact")  # error-contact-has-open-rooms, caught
        for channel in contact.get("channels") or []:
            visitor = self.visitors.get((channel.get("visitor") or {}).get("visitorId", ""))
            if visitor is not None:
                self._remove_guest(visitor)
        for key in ("name", "emails", "phones", "customFields", "contactManager"):
            contact.pop(key, None)
        contact["enabled"] = False
        return {}

    def _gate(self) -> None:
        if self.version_tuple < (7, 1, 0) and not self.test_mode:
            raise meteor_error("error-not-allowed", "This endpoint is only allowed in test mode")

    def _check_agent(self, user_id: str) -> None:
        user = self.users.get(user_id)
        if user is None or "livechat-agent" not in user.get("roles", ()):
            raise failure("error-contact-manager-not-found")

    def _contacts_create(self, ctx: _Ctx) -> dict[str, Any]:
        self._gate()
        body = ctx.body
        if body.get("contactManager"):
            self._check_agent(body["contactManager"])
        custom = validate_custom_fields(
            self.custom_fields, body.get("customFields") or {}, ignore_additional=False
        )
        contact_id = object_id()
        now = iso_now()
        contact: dict[str, Any] = {
            "_id": contact_id,
            "name": body["name"],
            "emails": [{"address": e} for e in body["emails"]],
            "phones": [{"phoneNumber": p} for p in body["phones"]],
        }
        if body.get("contactManager"):
            contact["contactManager"] = body["contactManager"]
        contact.update(
            unknown=False,
            channels=[],
            customFields=custom,
            preRegistration=True,
            createdAt=now,
            _updatedAt=now,
        )
        self.contacts[contact_id] = contact
        return {"contactId": contact_id}

    def _contacts_update(self, ctx: _Ctx) -> dict[str, Any]:
        self._gate()
        data = {k: v for k, v in ctx.body.items() if v is not None}
        contact = self.contacts.get(data["contactId"])
        if contact is None or contact.get("enabled") is False:
            raise failure("error-contact-not-found")
        if data.get("contactManager"):
            self._check_agent(data["contactManager"])
        custom = self._update_custom_fields(contact, data.get("customFields"))
        self._apply_contact_update(contact, data, custom)
        return {"contact": dict(contact)}

    def _update_custom_fields(
        self, contact: dict[str, Any], received: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        if received is None:
            return None
        current = contact.get("customFields") or {}
        legacy = {k: v for k, v in current.items() if k not in self.custom_fields}
        valid = validate_custom_fields(
            self.custom_fields, received, ignore_additional=False, tolerated=legacy
        )
        return {**legacy, **valid}

    @staticmethod
    def _apply_contact_update(
        contact: dict[str, Any], data: dict[str, Any], custom: dict[str, Any] | None
    ) -> None:
        if "name" in data:
            contact["name"] = data["name"]
        if "emails" in data:
            contact["emails"] = [{"address": e} for e in data["emails"]]
        if "phones" in data:
            contact["phones"] = [{"phoneNumber": p} for p in data["phones"]]
        if "contactManager" in data:
            if data["contactManager"]:
                contact["contactManager"] = data["contactManager"]
            else:
                contact.pop("contactManager", None)
        if custom is not None:
            contact["customFields"] = custom
        if data.get("wipeConflicts"):
            contact["conflictingFields"] = []
        contact["unknown"] = False
        contact["_updatedAt"] = iso_now()

    def _contacts_get(self, ctx: _Ctx) -> dict[str, Any]:
        self._gate()
        contact = self.contacts.get(ctx.query["contactId"])
        if contact is None or contact.get("enabled") is False:
            raise ApiError(404, {"success": False, "error": "Resource not found"})
        return {"contact": dict(contact)}

    def _contacts_search(self, ctx: _Ctx) -> dict[str, Any]:
        self._gate()
        query = ctx.query
        text = query.get("searchText")
        pattern = re.compile(re.escape(text), re.IGNORECASE) if text else None
        unknown = bool(query.get("unknown", False))
        found = [
            c
            for c in self.contacts.values()
            if c.get("enabled") is not False
            and bool(c.get("unknown", False)) == unknown
            and (pattern is None or _contact_matches(c, pattern))
        ]
        found = _sort_contacts(found, query.get("sort"))
        count = int(query.get("count") or 0) if "count" in query else DEFAULT_COUNT
        offset = int(query.get("offset") or 0)
        count = min(count, UPPER_COUNT) if count else 0
        page = found[offset : offset + count] if count else found[offset:]
        return {"contacts": page, "count": count, "offset": offset, "total": len(found)}

    def _contacts_check_existence(self, ctx: _Ctx) -> dict[str, Any]:
        ((key, value),) = ctx.query.items()
        if key == "contactId":
            exists = value in self.contacts
        else:
            sub, attr = ("emails", "address") if key == "email" else ("phones", "phoneNumber")
            exists = any(
                any(item.get(attr) == value for item in c.get(sub, []))
                for c in self.contacts.values()
            )
        return {"exists": exists}


_INVALID_JSON = object()


def _contact_matches(contact: dict[str, Any], pattern: re.Pattern[str]) -> bool:
    values = [contact.get("name") or ""]
    values += [e.get("address", "") for e in contact.get("emails", [])]
    values += [p.get("phoneNumber", "") for p in contact.get("phones", [])]
    return any(pattern.search(v) for v in values if isinstance(v, str))


def _sort_contacts(contacts: list[dict[str, Any]], sort: str | None) -> list[dict[str, Any]]:
    spec: dict[str, Any] = {"name": 1}
    if sort:
        try:
            parsed = json.loads(sort)
        except ValueError:
            raise failure(f"Unexpected token in JSON at position 0: {sort}") from None
        if isinstance(parsed, dict) and parsed:
            spec = parsed
    for key, direction in reversed(list(spec.items())):
        contacts = sorted(contacts, key=_sort_key(key), reverse=direction == -1)
    return contacts


def _sort_key(key: str) -> Callable[[dict[str, Any]], str]:
    def sort_key(contact: dict[str, Any]) -> str:
        return js_string(contact.get(key, ""))

    return sort_key


def _fault_response(status: int, *, html: bool = False) -> Response:
    """What a proxy in front of a dead/failing server answers (no Rocket.Chat headers):
    JSON, or (``html``) nginx's error page, byte for byte as nginx writes it."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    if html:
        page = (
            f"<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        return Response(page.encode(), status, media_type="text/html")
    body = {"success": False, "error": phrase}
    return Response(dumps(body), status, media_type=JSON_TYPE)


# --------------------------------------------------------------------------- runner


class _QuickServer(uvicorn.Server):
    """uvicorn server that notices ``should_exit`` within ~10 ms (default tick: 100 ms)."""

    async def main_loop(self) -> None:
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864_000
            await asyncio.sleep(0.01)  # noqa: sleep-ok - uvicorn's own tick, made shorter
            should_exit = await self.on_tick(counter)


class StandInServer:
    """Runs an ASGI app under uvicorn in a background thread on a free loopback port."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.url = ""
        self._server: _QuickServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> StandInServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self.url = f"http://{self.host}:{self.port}"
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,
            server_header=False,
        )
        self._server = _QuickServer(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name="standin"
        )
        self._thread.start()
        self._wait_until_accepting(timeout)
        return self

    def _wait_until_accepting(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self._server is not None and self._thread is not None
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                raise RuntimeError("stand-in server thread died during startup")
            if self._server.started:
                try:
                    with socket.create_connection((self.host, self.port), timeout=0.5):
                        return
                except OSError:
                    pass
            time.sleep(0.005)  # noqa: sleep-ok - poll interval of the start-up deadline above
        self.stop()
        raise TimeoutError(f"stand-in server did not start within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = None
        self._thread = None

    def __enter__(self) -> StandInServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rocket.Chat REST stand-in")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--version", default="8.8")
    parser.add_argument("--rate-limit", type=int, default=10, help="0 disables the limiter")
    parser.add_argument("--window-ms", type=int, default=60_000)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args(argv)
    standin = RocketChatStandIn(
        version=args.version,
        rate_limit=args.rate_limit or None,
        window_ms=args.window_ms,
        latency=args.latency,
    )
    uvicorn.run(standin.app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
