"""Webhook subscriptions: who may manage which, and what a subscription may be.

A subscription belongs to one user and is visible to that user and to admins
only; another user's subscription is "not found", so ids cannot be probed. Its
deliveries (stored by integration) are listed and re-sent through it.

Nothing is done for an erased user (`UserErasedError`): not for an erased
caller, nor by an admin who creates a subscription for them or lists or
re-sends the deliveries of one of theirs. An admin may still list, read and
delete an erased user's subscriptions: integration deletes them once it
applies the erasure, and until then, or if it lags, an admin sees and removes
what is left. Erasures are known through the key cache (`ErasedUsers`).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final, Protocol
from uuid import UUID, uuid4

from nova_platform.personal import UserErasedError
from nova_platform.webhooks import (
    ALL_EVENT_TYPES,
    Delivery,
    DeliveryStatus,
    Subscription,
    SubscriptionNotFoundError,
    WebhookStore,
)
from nova_platform.webhooks.targets import (
    TargetRefusedError,
    check_literal_host,
    parse_target,
)

from .commands import Actor

PUBLIC_EVENT_TYPES: Final[tuple[str, ...]] = (
    "audio.created",
    "audio.processing.started",
    "audio.transcription.completed",
    "audio.processing.completed",
    "audio.processing.failed",
    "audio.deleted",
    "user.erased",
)
"""The public event types a subscription may ask for. The canonical list is
`PUBLIC_EVENT_TYPES` in `services/integration/src/nova_integration/domain/
payload.py` (command-api must not import integration); a unit test keeps the
two equal."""

MAX_SUBSCRIPTIONS_PER_USER: Final = 10
SECRET_MIN_LENGTH: Final = 16
SECRET_MAX_LENGTH: Final = 200
DESCRIPTION_MAX_LENGTH: Final = 200
GENERATED_SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - a prefix, not a secret

SECRET_PATTERN: Final = r"^[\x20-\x7e]*$"  # noqa: S105 - a rule, not a secret
DESCRIPTION_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]*$"
"""The rules as OpenAPI states them; both are matched whole."""
_SECRET = re.compile(SECRET_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class InvalidSubscriptionError(ValueError):
    """A subscription request that breaks a rule; `location` names the field."""

    def __init__(self, location: str, message: str) -> None:
        super().__init__(f"{location}: {message}")
        self.location = location
        self.message = message


class SubscriptionLimitError(Exception):
    def __init__(self, user_id: UUID, limit: int) -> None:
        super().__init__(
            f"user {user_id} already has {limit} webhook subscriptions, the most "
            "allowed; delete one, or subscribe one URL to several event types"
        )
        self.user_id = user_id
        self.limit = limit


class WebhookAccessError(PermissionError):
    """The caller may not act for the user they named."""


class DeliveryNotFoundError(LookupError):
    def __init__(self, subscription_id: UUID, audio_id: UUID, sequence: int) -> None:
        super().__init__(
            f"subscription {subscription_id} has no delivery of audio {audio_id} "
            f"at sequence {sequence}; list its deliveries to find one"
        )
        self.subscription_id = subscription_id
        self.audio_id = audio_id
        self.sequence = sequence


class DeliveryNotParkedError(Exception):
    """Only a parked delivery can be re-sent."""

    def __init__(self, delivery: Delivery) -> None:
        status = delivery.status.value
        advice = {
            DeliveryStatus.PENDING: "it is still being sent; wait for it",
            DeliveryStatus.DELIVERED: "it was delivered already",
            DeliveryStatus.CANCELLED: "its subscription was deleted",
        }.get(delivery.status, "")
        super().__init__(
            f"the delivery is {status}, not parked; only parked deliveries can be "
            f"re-sent" + (f" ({advice})" if advice else "")
        )
        self.status = status


class EarlierDeliveryParkedError(Exception):
    """A re-send must start at the lane's first parked delivery: deliveries of
    one audio go out in order."""

    def __init__(self, earlier: Delivery) -> None:
        super().__init__(
            f"the delivery at sequence {earlier.sequence} of this audio is parked "
            "too, and one audio's deliveries go out in order; re-send that one, "
            "which re-sends this one after it"
        )
        self.sequence = earlier.sequence
        self.event_id = earlier.event_id


class ErasedUsers(Protocol):
    """The side of `nova_platform.personal.PersonalData` the routes need."""

    async def cached_erased_at(self, user_id: UUID) -> datetime | None:
        """When the user was erased (known within the key cache's TTL)."""
        ...


@dataclass(frozen=True, slots=True)
class NewSubscription:
    url: str
    event_types: Sequence[str]
    secret: str | None = None
    description: str | None = None
    user_id: UUID | None = None
    """For whom; only an admin may name another user. The caller when None."""


class WebhookSubscriptions:
    """Creates, lists and deletes subscriptions; lists and re-sends deliveries."""

    def __init__(
        self,
        store: WebhookStore,
        erasures: ErasedUsers,
        *,
        allow_private_targets: bool = False,
        max_per_user: int = MAX_SUBSCRIPTIONS_PER_USER,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._erasures = erasures
        self._allow_private = allow_private_targets
        self._max_per_user = max_per_user
        self._clock = clock

    async def create(self, actor: Actor, request: NewSubscription) -> Subscription:
        """The new subscription, with its secret (shown to the caller only now)."""
        await self.admit(actor)
        owner = self._owner_for(actor, request.user_id)
        await self._refuse_erased(owner)
        url = self._checked_url(request.url)
        event_types = checked_event_types(request.event_types)
        secret = checked_secret(request.secret)
        description = checked_description(request.description)
        existing = await self._store.subscriptions_of(owner)
        if len(existing) >= self._max_per_user:
            raise SubscriptionLimitError(owner, self._max_per_user)
        subscription = Subscription(
            subscription_id=uuid4(),
            user_id=owner,
            url=url,
            event_types=event_types,
            secret=secret,
            created_at=self._clock(),
            description=description,
        )
        await self._store.add_subscription(subscription)
        return subscription

    async def subscriptions(
        self, actor: Actor, user_id: UUID | None = None
    ) -> list[Subscription]:
        """The caller's subscriptions; an admin's choice of user (erased ones
        included), or everyone's."""
        await self.admit(actor)
        if actor.is_admin:
            return await self._store.subscriptions_of(user_id)
        return await self._store.subscriptions_of(self._owner_for(actor, user_id))

    async def get(self, actor: Actor, subscription_id: UUID) -> Subscription:
        """One subscription visible to the caller (an admin: an erased user's)."""
        await self.admit(actor)
        return await self._visible(actor, subscription_id)

    async def delete(self, actor: Actor, subscription_id: UUID) -> None:
        """Delete it; an admin may delete an erased user's."""
        await self.get(actor, subscription_id)
        await self._store.delete_subscription(subscription_id)

    async def admit(self, actor: Actor) -> None:
        """Raise `UserErasedError` when the caller was erased: nothing is done
        for them any more (an admin's own erasure included)."""
        await self._refuse_erased(actor.user_id)

    async def deliveries(
        self,
        actor: Actor,
        subscription_id: UUID,
        *,
        status: DeliveryStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Delivery], str | None]:
        """A page of the subscription's deliveries; raises `InvalidCursorError`."""
        await self._acting_on(actor, subscription_id)
        return await self._store.deliveries(
            subscription_id, status=status, limit=limit, cursor=cursor
        )

    async def resend(
        self, actor: Actor, subscription_id: UUID, audio_id: UUID, sequence: int
    ) -> list[Delivery]:
        """Queue a parked delivery again, with the parked ones behind it in its
        lane (they were parked because it was); return what was re-queued.

        Each starts a new retry budget; its attempts so far are kept.
        """
        await self._acting_on(actor, subscription_id)
        delivery = await self._store.get_delivery(subscription_id, audio_id, sequence)
        if delivery is None:
            raise DeliveryNotFoundError(subscription_id, audio_id, sequence)
        if delivery.status is not DeliveryStatus.PARKED:
            raise DeliveryNotParkedError(delivery)
        lane = await self._store.lane(subscription_id, audio_id)
        earlier = next(
            (
                d
                for d in lane
                if d.sequence < sequence and d.status is DeliveryStatus.PARKED
            ),
            None,
        )
        if earlier is not None:
            raise EarlierDeliveryParkedError(earlier)
        now = self._clock()
        requeued: list[Delivery] = []
        for parked in lane:
            if parked.sequence < sequence or parked.status is not DeliveryStatus.PARKED:
                continue
            again = replace(
                parked,
                status=DeliveryStatus.PENDING,
                attempts_used=0,
                next_attempt_at=now,
                parked_reason="",
                lease_until=0.0,
            )
            await self._store.save(again)
            requeued.append(again)
        return requeued

    async def _visible(self, actor: Actor, subscription_id: UUID) -> Subscription:
        subscription = await self._store.get_subscription(subscription_id)
        if subscription is None or not (
            actor.is_admin or subscription.user_id == actor.user_id
        ):
            raise SubscriptionNotFoundError(subscription_id)
        return subscription

    async def _acting_on(self, actor: Actor, subscription_id: UUID) -> Subscription:
        """The subscription, when neither the caller nor its owner was erased."""
        await self.admit(actor)
        subscription = await self._visible(actor, subscription_id)
        await self._refuse_erased(subscription.user_id)
        return subscription

    async def _refuse_erased(self, user_id: UUID) -> None:
        # `ErasedUsers` caches: asking again for the caller costs no read.
        erased_at = await self._erasures.cached_erased_at(user_id)
        if erased_at is not None:
            raise UserErasedError(user_id, erased_at)

    def _owner_for(self, actor: Actor, user_id: UUID | None) -> UUID:
        if user_id is None or user_id == actor.user_id:
            return actor.user_id
        if not actor.is_admin:
            raise WebhookAccessError(
                "only an admin may name another user's `user_id`; leave it out to "
                "act on your own subscriptions"
            )
        return user_id

    def _checked_url(self, url: str) -> str:
        try:
            target = parse_target(url)
            check_literal_host(target, allow_private=self._allow_private)
        except TargetRefusedError as exc:
            raise InvalidSubscriptionError("body.url", str(exc)) from None
        return url


def checked_event_types(event_types: Sequence[str]) -> frozenset[str]:
    wanted = frozenset(event_types)
    if not wanted:
        raise InvalidSubscriptionError(
            "body.event_types",
            'name at least one event type, or ["*"] for all of them',
        )
    if ALL_EVENT_TYPES in wanted:
        if len(wanted) > 1:
            raise InvalidSubscriptionError(
                "body.event_types",
                '"*" already means every event type; send ["*"] alone',
            )
        return wanted
    unknown = sorted(wanted - set(PUBLIC_EVENT_TYPES))
    if unknown:
        raise InvalidSubscriptionError(
            "body.event_types",
            f"unknown event types {', '.join(unknown)}; use "
            f'{", ".join(PUBLIC_EVENT_TYPES)}, or ["*"] for all',
        )
    return wanted


def checked_secret(secret: str | None) -> str:
    """The given secret once checked, or a new random one."""
    if secret is None:
        return GENERATED_SECRET_PREFIX + secrets.token_urlsafe(32)
    if not SECRET_MIN_LENGTH <= len(secret) <= SECRET_MAX_LENGTH:
        raise InvalidSubscriptionError(
            "body.secret",
            f"the secret must be {SECRET_MIN_LENGTH} to {SECRET_MAX_LENGTH} "
            f"characters long (it is {len(secret)}); leave it out to get a "
            "generated one",
        )
    if not _SECRET.fullmatch(secret):
        raise InvalidSubscriptionError(
            "body.secret", "the secret must be printable ASCII characters only"
        )
    return secret


def checked_description(description: str | None) -> str:
    if description is None:
        return ""
    if len(description) > DESCRIPTION_MAX_LENGTH:
        raise InvalidSubscriptionError(
            "body.description",
            f"the description must be at most {DESCRIPTION_MAX_LENGTH} characters",
        )
    if _CONTROL.search(description):
        raise InvalidSubscriptionError(
            "body.description", "the description must not contain control characters"
        )
    return description
