"""The forms' settings: ``FORMS``, and each form's ``FORM_<FORM>_<KEY>`` (else ``FORM_<KEY>``),
read and checked once at start-up; the per-client rate limit; what an origin is.

A malformed setting is a :class:`~adapter.channels.SettingsError` naming the variable, so
the service stops at start-up instead of misbehaving on the first post. See
``docs/forms.md``.
"""

from __future__ import annotations

import collections
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import phonenumbers

from adapter.channels import Settings, SettingsError

__all__ = [
    "CONTACT_INPUTS",
    "MAX_FIELDS",
    "FormConfig",
    "RateLimiter",
    "load_forms",
    "origin_of",
]

FORM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
OFF = frozenset({"off", "none", "false", "no", "0", "-"})
ON = frozenset({"on", "true", "yes", "1"})
LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}")  # a BCP 47 tag: en, pt-BR
# The hosted page's texts (FORM_<KEY>, or FORM_<FORM>_<KEY>): the default, the longest allowed.
PAGE_TEXTS: dict[str, tuple[str, int]] = {
    "FORM_TITLE": ("Contact us", 120),
    "FORM_INTRO": ("Leave your details and we will get back to you.", 600),
    "FORM_BUTTON_LABEL": ("Send", 40),
    "FORM_SUCCESS_MESSAGE": ("Your details are registered. We will be in touch soon.", 600),
}
PAGE_SWITCHES = ("FORM_LANGUAGE", "FORM_ENABLED")  # the page's other settings
MAX_FIELDS = 200  # fields read from a post (and sent back with the form again)
DEFAULT_RATE_LIMIT = 10

CONTACT_INPUTS: dict[str, dict[str, str | None]] = {
    "name": {"label": "Name", "type": "text", "autocomplete": "name", "inputmode": None},
    "email": {"label": "Email", "type": "email", "autocomplete": "email", "inputmode": "email"},
    "phone": {"label": "Phone", "type": "tel", "autocomplete": "tel", "inputmode": "tel"},
}


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an absolute http(s) URL (lower-case, default port dropped).

    ``None`` for anything else: relative URLs, other schemes, user info, backslashes or
    control characters (the tricks that make a URL look like it goes elsewhere).
    """
    text = url.strip()
    if not text or any(ch in text for ch in "\\ ") or any(ord(ch) < 32 for ch in text):
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    default = 80 if scheme == "http" else 443
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


@dataclass(frozen=True)
class FormConfig:
    """One form's settings, resolved once at start-up."""

    name: str
    fields: Mapping[str, str]  # contact field -> form field name
    country_field: str | None  # a field holding an ISO country, used as the phone region
    phone_region: str | None  # region for national numbers when no country field is sent
    honeypot: str | None
    redirect_field: str
    redirect: str | None  # default thank-you page
    redirect_origins: frozenset[str]
    allowed_origins: frozenset[str]
    custom_fields: tuple[tuple[str, str], ...]  # (form field, Rocket.Chat custom field id)
    rate_limit: int  # posts per minute per client IP; 0 = off
    # FORM_TRUST_SENDER: false (the default) = anyone may post, so a known contact is only
    # added to and the answer never tells whether the person was known.
    trust_sender: bool
    origins_setting: str  # the variable that lists allowed_origins, for messages
    redirect_setting: str
    title: str = PAGE_TEXTS["FORM_TITLE"][0]  # the hosted page's heading
    intro: str = PAGE_TEXTS["FORM_INTRO"][0]
    button_label: str = PAGE_TEXTS["FORM_BUTTON_LABEL"][0]
    success_message: str = PAGE_TEXTS["FORM_SUCCESS_MESSAGE"][0]  # shown once registered
    language: str = "en"  # the page's lang attribute
    enabled: bool = True  # False: the page and its posts answer 404 "turned off"
    enabled_setting: str = "FORM_ENABLED"


def _env_key(form: str) -> str:
    return form.upper().replace("-", "_")


class _FormSettings:
    """``FORM_<FORM>_<KEY>``, else ``FORM_<KEY>``, else the default."""

    def __init__(self, settings: Settings, form: str) -> None:
        self.settings = settings
        self.form = form

    def get(self, key: str) -> tuple[str | None, str]:
        """The value (stripped, ``None`` if unset) and the variable it came from."""
        for variable in (f"FORM_{_env_key(self.form)}_{key}", f"FORM_{key}"):
            value = self.settings.lookup(variable)
            if value is not None and value.strip():
                return value.strip(), variable
        return None, f"FORM_{key}"

    def fail(self, variable: str, value: str, expected: str) -> SettingsError:
        return SettingsError(f"setting {variable} (got {value!r}): {expected}")

    def field_name(self, key: str, default: str, *, may_be_off: bool = False) -> str | None:
        value, variable = self.get(key)
        if value is None:
            return default
        if may_be_off and value.lower() in OFF:
            return None
        if len(value) > 100 or any(ord(ch) < 32 for ch in value):
            raise self.fail(variable, value, "expected a form field name")
        return value

    def text(self, setting: str) -> str:
        default, longest = PAGE_TEXTS[setting]
        value, variable = self.get(setting.removeprefix("FORM_"))
        if value is None:
            return default
        if len(value) > longest or any(ord(ch) < 32 for ch in value):
            raise self.fail(variable, value, f"expected text of at most {longest} characters")
        return value

    def switch(self, key: str) -> tuple[bool, str]:
        value, variable = self.get(key)
        if value is None:
            return True, f"FORM_{_env_key(self.form)}_{key}"
        if value.lower() not in ON | OFF:
            raise self.fail(variable, value, "expected true or false")
        return value.lower() in ON, variable

    def origins(self, key: str) -> tuple[frozenset[str], str]:
        value, variable = self.get(key)
        found: set[str] = set()
        for item in re.split(r"[\s,]+", value or ""):
            if not item:
                continue
            origin = origin_of(item)
            rest = urlsplit(item.rstrip("/")) if origin else None
            if origin is None or rest is None or rest.path or rest.query or rest.fragment:
                raise self.fail(
                    variable,
                    value or "",
                    "expected comma-separated origins like https://www.example.com "
                    "(scheme and host, optional port, no path)",
                )
            found.add(origin)
        return frozenset(found), f"FORM_{_env_key(self.form)}_{key} or FORM_{key}"


def load_forms(settings: Settings) -> dict[str, FormConfig]:
    """Every form's configuration: ``default`` plus the names in ``FORMS``.

    Raises :class:`SettingsError` naming the variable for a malformed setting, so the
    service stops at start-up instead of misbehaving on the first post.
    """
    names = ["default"]
    listed = settings.lookup("FORMS") or ""
    for item in re.split(r"[\s,]+", listed.strip()):
        if not item:
            continue
        if not FORM_NAME.fullmatch(item):
            raise SettingsError(
                f"setting FORMS (got {listed!r}): expected comma-separated form names of "
                "lower-case letters, digits, - and _ (e.g. 'pricing,newsletter')"
            )
        if item not in names:
            names.append(item)
    forms: dict[str, FormConfig] = {}
    for name in names:
        conf = _FormSettings(settings, name)
        fields = {
            key: conf.field_name(f"FIELD_{key.upper()}", key) or key for key in CONTACT_INPUTS
        }
        country = conf.field_name("FIELD_COUNTRY", "country", may_be_off=True)
        honeypot = conf.field_name("HONEYPOT", "website", may_be_off=True)
        redirect_field = conf.field_name("FIELD_REDIRECT", "redirect") or "redirect"
        used = [*fields.values(), redirect_field, *(f for f in (country, honeypot) if f)]
        if len(set(used)) != len(used):
            raise SettingsError(
                f"the fields of form {name!r} must have distinct names, got {', '.join(used)}: "
                "check the FORM_…FIELD_…, FORM_…HONEYPOT settings"
            )

        region, variable = conf.get("PHONE_REGION")
        if region is not None:
            if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
                raise conf.fail(variable, region, "expected a two-letter ISO country code like US")
            region = region.upper()

        redirect, variable = conf.get("REDIRECT")
        if redirect is not None and origin_of(redirect) is None:
            raise conf.fail(variable, redirect, "expected an absolute http(s) URL")

        limit_text, variable = conf.get("RATE_LIMIT")
        try:
            rate_limit = DEFAULT_RATE_LIMIT if limit_text is None else int(limit_text)
            if rate_limit < 0:
                raise ValueError
        except ValueError:
            raise conf.fail(
                variable,
                limit_text or "",
                "expected posts per minute per client IP, 0 for no limit",
            ) from None

        trust_text, variable = conf.get("TRUST_SENDER")
        trust = (trust_text or "false").lower()
        if trust not in ("true", "false"):
            raise conf.fail(
                variable,
                trust_text or "",
                "expected true (the form's senders are authenticated, e.g. behind a login) "
                "or false (anyone may post: a known contact is only added to)",
            )

        custom: list[tuple[str, str]] = []
        custom_text, variable = conf.get("CUSTOM_FIELDS")
        for item in re.split(r"[\s,]+", custom_text or ""):
            if not item:
                continue
            source, _, target = item.partition(":")
            if not source or (target == "" and ":" in item):
                raise conf.fail(
                    variable,
                    custom_text or "",
                    "expected field or field:custom_field_id, comma-separated",
                )
            custom.append((source, target or source))

        language, variable = conf.get(PAGE_SWITCHES[0].removeprefix("FORM_"))
        if language is not None and not LANGUAGE.fullmatch(language):
            raise conf.fail(variable, language, "expected a language tag like en, de or pt-BR")
        enabled, enabled_setting = conf.switch(PAGE_SWITCHES[1].removeprefix("FORM_"))

        allowed, origins_setting = conf.origins("ALLOWED_ORIGINS")
        redirect_origins, redirect_setting = conf.origins("REDIRECT_ORIGINS")
        forms[name] = FormConfig(
            name=name,
            fields=fields,
            country_field=country,
            phone_region=region,
            honeypot=honeypot,
            redirect_field=redirect_field,
            redirect=redirect,
            redirect_origins=redirect_origins,
            allowed_origins=allowed,
            custom_fields=tuple(custom),
            rate_limit=rate_limit,
            trust_sender=trust == "true",
            origins_setting=origins_setting,
            redirect_setting=redirect_setting,
            title=conf.text("FORM_TITLE"),
            intro=conf.text("FORM_INTRO"),
            button_label=conf.text("FORM_BUTTON_LABEL"),
            success_message=conf.text("FORM_SUCCESS_MESSAGE"),
            language=language or "en",
            enabled=enabled,
            enabled_setting=enabled_setting,
        )
    return forms


class RateLimiter:
    """Posts per client in the last minute, in memory (per process): a sliding window, so
    neither a minute's boundary resets a client's count nor two bursts around one pass
    twice the limit."""

    MAX_KEYS = 100_000
    WINDOW = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.recent: dict[tuple[str, str], collections.deque[float]] = {}

    def hit(self, key: tuple[str, str], limit: int) -> float | None:
        """Count one post; ``None`` when allowed, else the seconds until one is allowed."""
        if limit <= 0:
            return None
        now = self.clock()
        since = now - self.WINDOW
        times = self.recent.get(key)
        if times is None:
            if len(self.recent) >= self.MAX_KEYS:
                self._forget(since)
            times = self.recent[key] = collections.deque()
        while times and times[0] <= since:
            times.popleft()
        if len(times) >= limit:
            return times[0] - since
        times.append(now)
        return None

    def _forget(self, since: float) -> None:
        """Drop clients with no post in the window (all of them when every one has)."""
        stale = [key for key, times in self.recent.items() if not times or times[-1] <= since]
        for key in stale:
            del self.recent[key]
        if len(self.recent) >= self.MAX_KEYS:
            self.recent.clear()
