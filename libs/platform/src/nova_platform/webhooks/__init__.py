"""Webhooks shared by command-api (subscriptions) and integration (delivery)."""

from .model import (
    ALL_EVENT_TYPES,
    Attempt,
    Delivery,
    DeliveryStatus,
    Subscription,
    SubscriptionNotFoundError,
)
from .store import InMemoryWebhookStore, InvalidCursorError, WebhookStore

__all__ = [
    "ALL_EVENT_TYPES",
    "Attempt",
    "Delivery",
    "DeliveryStatus",
    "InMemoryWebhookStore",
    "InvalidCursorError",
    "Subscription",
    "SubscriptionNotFoundError",
    "WebhookStore",
]
