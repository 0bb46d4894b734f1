"""Omnichannel Contact Adapter: guests from anywhere become Rocket.Chat Omnichannel contacts.

The public API of the core; channels (``handlers``) and tests import from here.
"""

from adapter.core.contact import Contact, ContactError, FieldError, validate_contact
from adapter.core.errors import (
    BadCredentials,
    ConfigurationError,
    ContactRejected,
    PermissionDenied,
    RateLimited,
    RetryableError,
    RocketChatError,
    RocketChatUnavailable,
    RouteNotFound,
    ServerError,
)
from adapter.core.extract import Extraction, extract_contact
from adapter.delivery.queue import (
    DeliveryQueue,
    DeliveryRecord,
    DeliveryWorker,
    Outcome,
    Submission,
)
from adapter.rocketchat.client import RocketChatClient, VisitorStrategy
from adapter.rocketchat.sansio import RegisteredContact, Registration, contact_token
from adapter.settings import Settings, SettingsError, load_settings

__all__ = [
    "BadCredentials",
    "ConfigurationError",
    "Contact",
    "ContactError",
    "ContactRejected",
    "DeliveryQueue",
    "DeliveryRecord",
    "DeliveryWorker",
    "Extraction",
    "FieldError",
    "Outcome",
    "PermissionDenied",
    "RateLimited",
    "RegisteredContact",
    "Registration",
    "RetryableError",
    "RocketChatClient",
    "RocketChatError",
    "RocketChatUnavailable",
    "RouteNotFound",
    "ServerError",
    "Settings",
    "SettingsError",
    "Submission",
    "VisitorStrategy",
    "contact_token",
    "extract_contact",
    "load_settings",
    "validate_contact",
]
