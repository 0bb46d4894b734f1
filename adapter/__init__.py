"""Omnichannel Contact Adapter: guests from anywhere become Rocket.Chat Omnichannel contacts.

The public API of the core. Names resolve lazily (PEP 562): ``import adapter`` or
``import adapter.core.contact`` loads no HTTP, database or metrics library; a name is
imported from its module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from adapter.core.records import DeliveryRecord, Outcome, Submission
    from adapter.delivery.queue import DeliveryQueue
    from adapter.delivery.worker import DeliveryWorker
    from adapter.rocketchat.client import RocketChatClient
    from adapter.rocketchat.sansio import RegisteredContact, Registration, contact_token
    from adapter.rocketchat.strategies import VisitorStrategy
    from adapter.settings import Settings, SettingsError, load_settings

_WHERE = {
    "BadCredentials": "adapter.core.errors",
    "ConfigurationError": "adapter.core.errors",
    "Contact": "adapter.core.contact",
    "ContactError": "adapter.core.contact",
    "ContactRejected": "adapter.core.errors",
    "DeliveryQueue": "adapter.delivery.queue",
    "DeliveryRecord": "adapter.core.records",
    "DeliveryWorker": "adapter.delivery.worker",
    "Extraction": "adapter.core.extract",
    "FieldError": "adapter.core.contact",
    "Outcome": "adapter.core.records",
    "PermissionDenied": "adapter.core.errors",
    "RateLimited": "adapter.core.errors",
    "RegisteredContact": "adapter.rocketchat.sansio",
    "Registration": "adapter.rocketchat.sansio",
    "RetryableError": "adapter.core.errors",
    "RocketChatClient": "adapter.rocketchat.client",
    "RocketChatError": "adapter.core.errors",
    "RocketChatUnavailable": "adapter.core.errors",
    "RouteNotFound": "adapter.core.errors",
    "ServerError": "adapter.core.errors",
    "Settings": "adapter.settings",
    "SettingsError": "adapter.settings",
    "Submission": "adapter.core.records",
    "VisitorStrategy": "adapter.rocketchat.strategies",
    "contact_token": "adapter.rocketchat.sansio",
    "extract_contact": "adapter.core.extract",
    "load_settings": "adapter.settings",
    "validate_contact": "adapter.core.contact",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'adapter' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once resolved, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
