"""The one API the channels in ``handlers/`` import from.

A channel (see :mod:`adapter.channels.base`) turns requests into
submissions for the delivery queue; everything it needs from the core is
re-exported here: the channel protocol and context, the HTTP and signing helpers, the
webhook plumbing (:mod:`adapter.channels.webhooks`), the contact checks and extraction,
the payload readers, the delivery records, the settings, and the messenger conversations
(the pure state machine of :mod:`adapter.core.conversation` and its durable store). ``tests/test_layers.py``
keeps ``handlers/`` from importing anything else of ``adapter``.
"""

from __future__ import annotations

from adapter.channels.base import (
    Channel,
    ChannelContext,
    ChannelStatus,
    channel_statuses,
    check_channels,
    connect_channels,
    discover_channels,
    notify_channel,
)
from adapter.channels.chat import (
    Background,
    escape_markdown,
    outcome_text,
    post_json,
    submit_by,
)
from adapter.channels.conversations import ConversationStore
from adapter.channels.http import (
    BodyTooLarge,
    bearer_ok,
    client_address,
    error_response,
    read_body,
)
from adapter.channels.signing import (
    check_timestamp,
    constant_time_equal,
    timestamp_offset,
    verify_hmac,
)
from adapter.channels.webhooks import (
    WebhookChannel,
    WebhookEvent,
    WebhookProvider,
    WebhookRequest,
    body_digest,
)
from adapter.core.contact import (
    CONTACT_FIELDS,
    ContactError,
    FieldError,
    normalize_email,
    validate_contact,
)
from adapter.core.conversation import (
    Conversation,
    ConversationRules,
    Incoming,
    Reply,
    Step,
    advance,
    language_of,
    language_of_phone,
)
from adapter.core.extract import (
    Extraction,
    extract_contact,
)
from adapter.core.payloads import (
    TOO_DEEP,
    Answer,
    Lookup,
    PayloadError,
    consent_answer,
    consent_given,
    custom_value,
    dig,
    event_kind,
    json_kind,
    json_object,
    map_answers,
    mapped_value,
    member,
    norm,
    phone_in_text,
    real_name,
    scalar_text,
    setting_list,
    stringified,
    text_value,
)
from adapter.core.plain import short_reference
from adapter.core.records import DeliveryRecord, Outcome, Submission
from adapter.settings import (
    Settings,
    SettingsError,
    setting_error,
)

__all__ = [
    "CONTACT_FIELDS",
    "TOO_DEEP",
    "Answer",
    "Background",
    "BodyTooLarge",
    "Channel",
    "ChannelContext",
    "ChannelStatus",
    "ContactError",
    "Conversation",
    "ConversationRules",
    "ConversationStore",
    "DeliveryRecord",
    "Extraction",
    "FieldError",
    "Incoming",
    "Lookup",
    "Outcome",
    "PayloadError",
    "Reply",
    "Settings",
    "SettingsError",
    "Step",
    "Submission",
    "WebhookChannel",
    "WebhookEvent",
    "WebhookProvider",
    "WebhookRequest",
    "advance",
    "bearer_ok",
    "body_digest",
    "channel_statuses",
    "check_channels",
    "check_timestamp",
    "client_address",
    "connect_channels",
    "consent_answer",
    "consent_given",
    "constant_time_equal",
    "custom_value",
    "dig",
    "discover_channels",
    "error_response",
    "escape_markdown",
    "event_kind",
    "extract_contact",
    "json_kind",
    "json_object",
    "language_of",
    "language_of_phone",
    "map_answers",
    "mapped_value",
    "member",
    "norm",
    "normalize_email",
    "notify_channel",
    "outcome_text",
    "phone_in_text",
    "post_json",
    "read_body",
    "real_name",
    "scalar_text",
    "setting_error",
    "setting_list",
    "short_reference",
    "stringified",
    "submit_by",
    "text_value",
    "timestamp_offset",
    "validate_contact",
    "verify_hmac",
]
