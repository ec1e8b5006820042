"""What the integration service's application layer needs from outside."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol
from uuid import UUID

from nova_platform.webhooks import Delivery, Subscription

from ..domain.retry import SendResult


class AudioOwnerUnknownError(LookupError):
    """The event store holds no `AudioCreated` for an audio Kafka mentions."""


class AudioOwners(Protocol):
    async def owner_of(self, audio_id: UUID) -> UUID:
        """The user the audio belongs to; raises `AudioOwnerUnknownError`."""
        ...


class WebhookSender(Protocol):
    async def send(self, subscription: Subscription, delivery: Delivery) -> SendResult:
        """One signed POST of the delivery's body; never raises for the
        receiver's failures (they are in the result)."""
        ...


class EventForwarder(Protocol):
    async def forward(self, payloads: Sequence[dict[str, Any]]) -> None:
        """Hand public payloads to another bus (EventBridge); raises on failure."""
        ...
