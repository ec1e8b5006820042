"""Webhook subscriptions and deliveries: what command-api manages and
integration works through.

A subscription belongs to one user and only ever receives that user's events.
A delivery is one event for one subscription; it is created once per
(subscription, event) however often Kafka delivers the event, and it moves
``pending -> delivered`` or ``pending -> parked -> pending (re-send) -> ...``.
Every HTTP attempt is recorded on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final
from uuid import UUID

ALL_EVENT_TYPES: Final = "*"
MAX_RECORDED_ATTEMPTS: Final = 50
"""A delivery keeps its newest attempts only; re-sends keep adding attempts."""


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    PARKED = "parked"
    CANCELLED = "cancelled"  # its subscription was deleted before it went out


@dataclass(frozen=True, slots=True)
class Subscription:
    subscription_id: UUID
    user_id: UUID
    url: str
    event_types: frozenset[str]
    """Public event types (`audio.created`, ...), or ``{"*"}`` for all."""
    secret: str
    created_at: float
    description: str = ""

    def wants(self, public_type: str) -> bool:
        return ALL_EVENT_TYPES in self.event_types or public_type in self.event_types


@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP attempt: when, how long, and what came back."""

    at: float
    latency_ms: float
    response_code: int | None
    """None when no response came (timeout, connection refused, refused URL)."""
    outcome: str
    """`delivered`, `retry` or `parked`: what the attempt decided."""
    error: str = ""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one subscription, in the order of its audio's history."""

    subscription_id: UUID
    audio_id: UUID
    sequence: int
    event_id: UUID
    event_type: str
    """The public type, e.g. `audio.transcription.completed`."""
    body: bytes
    """The exact JSON bytes POSTed on every attempt (and signed)."""
    created_at: float
    status: DeliveryStatus = DeliveryStatus.PENDING
    next_attempt_at: float = 0.0
    attempts_used: int = 0
    """Attempts counted against the retry budget; a re-send starts it anew."""
    attempts: tuple[Attempt, ...] = field(default=())
    parked_reason: str = ""
    lease_until: float = 0.0

    @property
    def lane(self) -> tuple[UUID, UUID]:
        """Deliveries of one lane go out one at a time, in `sequence` order."""
        return (self.subscription_id, self.audio_id)

    def with_attempt(
        self,
        attempt: Attempt,
        *,
        status: DeliveryStatus,
        next_attempt_at: float = 0.0,
        parked_reason: str = "",
    ) -> Delivery:
        kept = (*self.attempts, attempt)[-MAX_RECORDED_ATTEMPTS:]
        return replace(
            self,
            status=status,
            attempts=kept,
            attempts_used=self.attempts_used + 1,
            next_attempt_at=next_attempt_at,
            parked_reason=parked_reason,
            lease_until=0.0,
        )


class SubscriptionNotFoundError(LookupError):
    def __init__(self, subscription_id: UUID) -> None:
        super().__init__(f"no webhook subscription {subscription_id}")
        self.subscription_id = subscription_id
