"""Every channel says whether it is on and, when off, what to set: the start-up log line
and the status page (``GET /``) read it, so a channel without settings never shows as on."""

from __future__ import annotations

from adapter.channels import channel_statuses, discover_channels
from adapter.settings import load_settings


def test_with_no_settings_only_the_hosted_form_is_on_and_every_other_channel_says_what_to_set() -> (
    None
):
    channels = discover_channels()
    assert len(channels) >= 20
    statuses = channel_statuses(load_settings(), channels)
    on = {status.label for status in statuses if status.on}
    assert on == {"form"}, on
    for channel, status in zip(channels, statuses, strict=True):
        if not status.on:
            assert status.reason and "set " in status.reason, (channel.name, status)
        assert status.path and status.path.startswith("/"), (channel.name, status)
        title = str(getattr(channel, "title", ""))
        assert (title and title != title.lower()) or "." in title, (channel.name, title)
