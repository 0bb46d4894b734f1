"""Every setting the service reads, derived from the code (not written down by hand).

The core settings are the fields of :class:`adapter.settings.Settings`; a channel's are
the names its ``check(settings)`` reads through ``settings.lookup``, recorded by
:class:`RecordingSettings`. ``tests/conftest.py`` strips them all from the environment
of every test; ``tests/test_start_up_checks.py`` tries a malformed value for each.
"""

from __future__ import annotations

import functools

from pydantic import PrivateAttr

from adapter.channels import Channel, check_channels, discover_channels
from adapter.settings import HOME_VARIABLE, Settings

__all__ = [
    "EXTRA_FORM",
    "RecordingSettings",
    "channel_setting_names",
    "core_setting_names",
    "is_service_variable",
]

EXTRA_FORM = "pricing"  # FORMS=pricing makes the forms read FORM_PRICING_* too


class RecordingSettings(Settings):
    """Settings that remember every name a channel looks up."""

    _looked_up: list[str] = PrivateAttr(default_factory=list)

    def lookup(self, name: str) -> str | None:
        """Records ``name``; answers from ``channel_settings`` only, never the environment."""
        self._looked_up.append(name.upper())
        return self.channel_settings.get(name.upper()) or None

    @property
    def looked_up(self) -> list[str]:
        return self._looked_up


def core_setting_names() -> list[str]:
    """The environment variables of :class:`Settings`' fields."""
    return sorted(name.upper() for name in Settings.model_fields if name != "channel_settings")


def channel_names_read(
    channels: list[Channel], channel_settings: dict[str, str] | None = None
) -> list[str]:
    """The names ``channels``' checks look up, in order, without repeats."""
    # Built without reading the environment or a .env (whatever the user has there).
    settings = RecordingSettings.model_construct(channel_settings=channel_settings or {})
    check_channels(settings, channels)
    return list(dict.fromkeys(settings.looked_up))


@functools.cache
def channel_setting_names() -> tuple[str, ...]:
    """Every name any channel's ``check`` reads (with one extra form, so that the per-form
    names are among them)."""
    channels = discover_channels()
    names = channel_names_read(channels) + channel_names_read(channels, {"FORMS": EXTRA_FORM})
    return tuple(dict.fromkeys(n for n in names if n not in core_setting_names()))


@functools.cache
def _prefixes() -> tuple[str, ...]:
    return tuple(sorted({name.split("_", 1)[0] + "_" for name in channel_setting_names()}))


def is_service_variable(name: str) -> bool:
    """Whether the service would read environment variable ``name``."""
    upper = name.upper()
    return (
        upper == HOME_VARIABLE
        or upper in core_setting_names()
        or upper in channel_setting_names()
        or upper.startswith(_prefixes())
    )
