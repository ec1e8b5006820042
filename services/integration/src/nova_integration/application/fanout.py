"""The consumer's handler: turn each event into deliveries, durably, once.

For every event with a public form, each subscription of the audio's owner
that wants its type gets a delivery, stored before the consumer commits the
offset. Stored deliveries are keyed by (subscription, audio, sequence), so an
event Kafka delivers twice, or the relay republishes, adds nothing: the
integration service never fires twice for one event and subscription. A
projection rebuild reads the event store, not Kafka, and never reaches here.

A `UserErased` is applied once no process can open the user's data any more
(`wait_for_erasure`): the bodies of every stored delivery of that user are
purged of their personal fields (`redact_body`), so that neither the table
nor a later send holds them, and a subscription of theirs that does not want
`user.erased` is deleted with its deliveries (those first: a batch retried
after a failure half way finds the subscription and finishes). Only then is
the event delivered like any other (`user.erased`, to the user's remaining
subscriptions), and once it is delivered or parked the dispatcher deletes
each of those with its deliveries too. So a receiver told `user.erased` meets
nothing of the user's in Nova any more, and the deletion, coming after the
key cache expired, races with no delivery written from a cached key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from nova_events import USER, AudioCreated, EventEnvelope, UserErased, decode_payload
from nova_platform.webhooks import (
    Delivery,
    Subscription,
    SubscriptionNotFoundError,
    WebhookStore,
)

from ..domain.payload import (
    PUBLIC_EVENT_TYPES,
    encode_body,
    public_payload,
    redact_body,
)
from .dispatcher import USER_ERASED, Dispatcher
from .ports import AudioOwners, EventForwarder

logger = logging.getLogger(__name__)

WaitForErasure = Callable[[datetime], Awaitable[None]]
PURGE_PAGE = 100
OWNER_LOOKUPS = 16
"""Owners of a batch's audios looked up at once (the cache's misses)."""


class Fanout:
    def __init__(
        self,
        store: WebhookStore,
        owners: AudioOwners,
        dispatcher: Dispatcher | None,
        forwarder: EventForwarder | None = None,
        clock: Callable[[], float] = time.time,
        wait_for_erasure: WaitForErasure | None = None,
    ) -> None:
        self._store = store
        self._owners = owners
        self._dispatcher = dispatcher
        self._forwarder = forwarder
        self._clock = clock
        self._wait_for_erasure = wait_for_erasure

    async def __call__(self, envelopes: Sequence[EventEnvelope]) -> None:
        erased = UserErased.event_type()
        await self._fan_out([e for e in envelopes if e.event_type != erased])
        for envelope in envelopes:
            if envelope.event_type == erased:
                await self._purge(decode_payload(envelope, UserErased))
                await self._fan_out([envelope])

    async def _purge(self, erasure: UserErased) -> None:
        if self._wait_for_erasure is not None:
            await self._wait_for_erasure(erasure.erased_at)
        purged = deleted = 0
        for subscription in await self._store.subscriptions_of(erasure.user_id):
            # Kept (purged) until its user.erased is sent, if it wants one.
            keep = subscription.wants(USER_ERASED)
            sid = subscription.subscription_id
            cursor: str | None = None
            while True:
                page, cursor = await self._store.deliveries(
                    sid, limit=PURGE_PAGE, cursor=cursor
                )
                if keep:
                    purged += await self._redact(page)
                else:
                    await self._store.delete_deliveries(page)
                    deleted += len(page)
                if cursor is None:
                    break
            if not keep:
                with contextlib.suppress(SubscriptionNotFoundError):
                    await self._store.delete_subscription(sid)
        logger.info(
            "webhook deliveries purged of an erased user's data",
            extra={
                "user_id": str(erasure.user_id),
                "deliveries": purged,
                "deleted": deleted,
            },
        )

    async def _redact(self, deliveries: Sequence[Delivery]) -> int:
        redacted = 0
        for delivery in deliveries:
            body = redact_body(delivery.body)
            if body is not None:
                await self._store.replace_body(delivery, body)
                redacted += 1
        return redacted

    async def _fan_out(self, envelopes: Sequence[EventEnvelope]) -> None:
        published = [
            (envelope, public_payload(envelope))
            for envelope in envelopes
            if envelope.event_type in PUBLIC_EVENT_TYPES
        ]
        if not published:
            return
        owners = await self._owners_of([e for e, _ in published])
        subscriptions: dict[UUID, list[Subscription]] = {}
        for user_id in set(owners.values()):
            subscriptions[user_id] = await self._store.subscriptions_of(user_id)
        now = self._clock()
        deliveries = [
            _delivery(subscription, envelope, payload, now)
            for envelope, payload in published
            for subscription in subscriptions[owners[envelope.aggregate_id]]
            if subscription.wants(payload["type"])
        ]
        added = await self._add_in_lane_order(deliveries)
        if self._forwarder is not None:
            await self._forwarder.forward([payload for _, payload in published])
        if self._dispatcher is not None:
            self._dispatcher.notify({d.lane for d in deliveries})
        if deliveries:
            logger.info(
                "webhook deliveries stored",
                extra={
                    "events": len(published),
                    "deliveries": len(added),
                    "duplicates": len(deliveries) - len(added),
                },
            )

    async def _add_in_lane_order(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Store each lane's deliveries one after the other, lanes side by side.

        The dispatcher may be driving a lane already, and it sends the lane's
        first open delivery: were a later one stored before an earlier one
        (concurrent puts finish in any order), the later one would go out first.
        """
        ranks: list[list[Delivery]] = []
        counts: dict[tuple[UUID, UUID], int] = {}
        for delivery in sorted(deliveries, key=lambda d: d.sequence):
            rank = counts.get(delivery.lane, 0)
            counts[delivery.lane] = rank + 1
            if rank == len(ranks):
                ranks.append([])
            ranks[rank].append(delivery)
        added: list[Delivery] = []
        for rank_deliveries in ranks:
            added += await self._store.add_deliveries(rank_deliveries)
        return added

    async def _owners_of(self, envelopes: Sequence[EventEnvelope]) -> dict[UUID, UUID]:
        owners: dict[UUID, UUID] = {}
        for envelope in envelopes:
            if envelope.aggregate_type == USER:
                owners[envelope.aggregate_id] = envelope.aggregate_id
            elif envelope.event_type == AudioCreated.event_type():
                created = decode_payload(envelope)
                assert isinstance(created, AudioCreated)
                owners[envelope.aggregate_id] = created.user_id
        unknown = list(
            dict.fromkeys(
                e.aggregate_id for e in envelopes if e.aggregate_id not in owners
            )
        )
        # After a restart the owner cache is cold, and one batch can name
        # hundreds of audios: one lookup after the other took longer than the
        # time between two rebalances, so the batch never committed.
        slots = asyncio.Semaphore(OWNER_LOOKUPS)

        async def lookup(audio_id: UUID) -> UUID:
            async with slots:
                return await self._owners.owner_of(audio_id)

        found = await asyncio.gather(*(lookup(audio_id) for audio_id in unknown))
        owners.update(zip(unknown, found, strict=True))
        return owners


def _delivery(
    subscription: Subscription,
    envelope: EventEnvelope,
    payload: dict[str, Any],
    now: float,
) -> Delivery:
    return Delivery(
        subscription_id=subscription.subscription_id,
        audio_id=envelope.aggregate_id,
        sequence=envelope.version,
        event_id=envelope.event_id,
        event_type=payload["type"],
        body=encode_body(payload),
        created_at=now,
        next_attempt_at=now,
    )
