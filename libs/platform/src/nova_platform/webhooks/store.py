"""Where subscriptions and deliveries live: the port, and an in-memory store.

`DynamoDBWebhookStore` (in `dynamodb.py`) is the real one; the in-memory store
passes the same contract tests (`tests/contracts/webhook_store.py`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol
from uuid import UUID

from .model import Delivery, DeliveryStatus, Subscription, SubscriptionNotFoundError


class InvalidCursorError(ValueError):
    """A page cursor that this store did not hand out."""


class WebhookStore(Protocol):
    async def add_subscription(self, subscription: Subscription) -> None: ...

    async def get_subscription(self, subscription_id: UUID) -> Subscription | None: ...

    async def subscriptions_of(self, user_id: UUID | None) -> list[Subscription]:
        """A user's subscriptions, oldest first; every user's when None."""
        ...

    async def delete_subscription(self, subscription_id: UUID) -> None:
        """Raises `SubscriptionNotFoundError`; its deliveries stay for audit
        (unless deleted with `delete_deliveries`)."""
        ...

    async def add_deliveries(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Store the deliveries not stored yet; return those (the new ones).

        A delivery is identified by (subscription, audio, sequence), which one
        event id determines: a redelivered event adds nothing.
        """
        ...

    async def lane(self, subscription_id: UUID, audio_id: UUID) -> list[Delivery]:
        """Every delivery of one audio to one subscription, by `sequence`."""
        ...

    async def get_delivery(
        self, subscription_id: UUID, audio_id: UUID, sequence: int
    ) -> Delivery | None: ...

    async def claim(self, delivery: Delivery, *, now: float, lease_s: float) -> bool:
        """Take the right to send `delivery` for `lease_s` seconds.

        False when it is no longer pending or someone else holds a lease that
        has not run out: two integration instances never send it at once.
        """
        ...

    async def save(self, delivery: Delivery) -> None:
        """Write the delivery's state (status, attempts, next attempt, parked
        reason, lease) and nothing else: never its body, which an erasure's
        purge may have replaced since `delivery` was read. Nothing happens if
        it is not stored (a deleted delivery stays deleted)."""
        ...

    async def record_attempt(self, delivery: Delivery, *, lease_until: float) -> bool:
        """Write the state of `delivery` after an attempt made under the lease
        that `claim` took until `lease_until`, like `save` (never the body).

        False, writing nothing, when the stored lease is no longer that one
        (it ran out and another instance claimed the delivery) or the delivery
        is not stored any more.
        """
        ...

    async def delete_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Delete these deliveries (an erased user's); those not stored are
        skipped."""
        ...

    async def replace_body(self, delivery: Delivery, body: bytes) -> None:
        """Replace the stored body of `delivery` alone (an erasure's purge);
        nothing happens if it is not stored."""
        ...

    async def due(self, now: float, limit: int = 100) -> list[tuple[UUID, UUID]]:
        """Lanes (subscription, audio) with a pending delivery due by `now`."""
        ...

    async def deliveries(
        self,
        subscription_id: UUID,
        *,
        status: DeliveryStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Delivery], str | None]:
        """A page of a subscription's deliveries (by audio, then sequence),
        and the cursor of the next page. Raises `InvalidCursorError`."""
        ...


def encode_cursor(sort_key: str) -> str:
    return base64.urlsafe_b64encode(sort_key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, prefix: str) -> str:
    """The sort key a cursor holds; it must start with `prefix`."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        sort_key = base64.urlsafe_b64decode(padded.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursorError("the cursor is not one this API handed out") from None
    if not sort_key.startswith(prefix):
        raise InvalidCursorError("the cursor is not one this API handed out")
    return sort_key


def delivery_sort_key(audio_id: UUID, sequence: int) -> str:
    return f"DLV#{audio_id}#{sequence:010d}"


class InMemoryWebhookStore:
    """`WebhookStore` in a dict, for unit tests."""

    def __init__(self) -> None:
        self._subscriptions: dict[UUID, Subscription] = {}
        self._deliveries: dict[tuple[UUID, str], Delivery] = {}

    async def add_subscription(self, subscription: Subscription) -> None:
        self._subscriptions[subscription.subscription_id] = subscription

    async def get_subscription(self, subscription_id: UUID) -> Subscription | None:
        return self._subscriptions.get(subscription_id)

    async def subscriptions_of(self, user_id: UUID | None) -> list[Subscription]:
        found = [
            s
            for s in self._subscriptions.values()
            if user_id is None or s.user_id == user_id
        ]
        return sorted(found, key=lambda s: (s.created_at, str(s.subscription_id)))

    async def delete_subscription(self, subscription_id: UUID) -> None:
        if self._subscriptions.pop(subscription_id, None) is None:
            raise SubscriptionNotFoundError(subscription_id)

    async def add_deliveries(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        added = []
        for delivery in deliveries:
            key = _key(delivery.subscription_id, delivery.audio_id, delivery.sequence)
            if key not in self._deliveries:
                self._deliveries[key] = delivery
                added.append(delivery)
        return added

    async def lane(self, subscription_id: UUID, audio_id: UUID) -> list[Delivery]:
        return sorted(
            (
                d
                for d in self._deliveries.values()
                if d.lane == (subscription_id, audio_id)
            ),
            key=lambda d: d.sequence,
        )

    async def get_delivery(
        self, subscription_id: UUID, audio_id: UUID, sequence: int
    ) -> Delivery | None:
        return self._deliveries.get(_key(subscription_id, audio_id, sequence))

    async def claim(self, delivery: Delivery, *, now: float, lease_s: float) -> bool:
        key = _key(delivery.subscription_id, delivery.audio_id, delivery.sequence)
        stored = self._deliveries.get(key)
        if stored is None or stored.status is not DeliveryStatus.PENDING:
            return False
        if stored.lease_until > now:
            return False
        self._deliveries[key] = replace(stored, lease_until=now + lease_s)
        return True

    async def save(self, delivery: Delivery) -> None:
        key = _key(delivery.subscription_id, delivery.audio_id, delivery.sequence)
        stored = self._deliveries.get(key)
        if stored is not None:
            self._deliveries[key] = _with_state_of(stored, delivery)

    async def record_attempt(self, delivery: Delivery, *, lease_until: float) -> bool:
        key = _key(delivery.subscription_id, delivery.audio_id, delivery.sequence)
        stored = self._deliveries.get(key)
        if stored is None or stored.lease_until != lease_until:
            return False
        self._deliveries[key] = _with_state_of(stored, delivery)
        return True

    async def delete_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            key = _key(delivery.subscription_id, delivery.audio_id, delivery.sequence)
            self._deliveries.pop(key, None)

    async def replace_body(self, delivery: Delivery, body: bytes) -> None:
        key = _key(delivery.subscription_id, delivery.audio_id, delivery.sequence)
        stored = self._deliveries.get(key)
        if stored is not None:
            self._deliveries[key] = replace(stored, body=body)

    async def due(self, now: float, limit: int = 100) -> list[tuple[UUID, UUID]]:
        lanes: list[tuple[UUID, UUID]] = []
        pending = sorted(
            (
                d
                for d in self._deliveries.values()
                if d.status is DeliveryStatus.PENDING and d.next_attempt_at <= now
            ),
            key=lambda d: d.next_attempt_at,
        )
        for delivery in pending:
            if delivery.lane not in lanes:
                lanes.append(delivery.lane)
        return lanes[:limit]

    async def deliveries(
        self,
        subscription_id: UUID,
        *,
        status: DeliveryStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Delivery], str | None]:
        after = decode_cursor(cursor, "DLV#") if cursor else ""
        ordered = sorted(
            (
                (sk, d)
                for (sid, sk), d in self._deliveries.items()
                if sid == subscription_id and sk > after
            ),
            key=lambda pair: pair[0],
        )
        page: list[Delivery] = []
        for sort_key, delivery in ordered:
            if status is None or delivery.status is status:
                page.append(delivery)
                if len(page) == limit:
                    more = sort_key != ordered[-1][0]
                    return page, encode_cursor(sort_key) if more else None
        return page, None


def _key(subscription_id: UUID, audio_id: UUID, sequence: int) -> tuple[UUID, str]:
    return (subscription_id, delivery_sort_key(audio_id, sequence))


def _with_state_of(stored: Delivery, delivery: Delivery) -> Delivery:
    """`stored` (its body above all) with the state `delivery` carries."""
    return replace(
        stored,
        status=delivery.status,
        next_attempt_at=delivery.next_attempt_at,
        attempts_used=delivery.attempts_used,
        attempts=delivery.attempts,
        parked_reason=delivery.parked_reason,
        lease_until=delivery.lease_until,
    )
