"""The webhook store contract: every `WebhookStore` must pass these same tests.

The DynamoDB run shares one table across the tests of a session, so every test
makes its own ids, reads back only what it made, and a test of `due` leaves
nothing due behind it. Deliveries not meant to be due are due in the far
future (`LATER`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any
from uuid import UUID, uuid4

import pytest

from nova_platform.webhooks import (
    Attempt,
    Delivery,
    DeliveryStatus,
    InvalidCursorError,
    Subscription,
    SubscriptionNotFoundError,
    WebhookStore,
)
from nova_platform.webhooks.store import encode_cursor

LATER = 9_000_000_000.0
"""A `next_attempt_at` no `due` call of these tests reaches."""


def subscription(
    user_id: UUID | None = None, created_at: float = 1_700_000_000.0, **fields: Any
) -> Subscription:
    values: dict[str, Any] = {
        "subscription_id": uuid4(),
        "user_id": user_id or uuid4(),
        "url": "https://hooks.example.com/nova?team=7",
        "event_types": frozenset({"audio.created", "audio.deleted"}),
        "secret": "whsec_contract-secret",
        "created_at": created_at,
        "description": "contract test",
        **fields,
    }
    return Subscription(**values)


def delivery(
    subscription_id: UUID,
    audio_id: UUID,
    sequence: int,
    status: DeliveryStatus = DeliveryStatus.PENDING,
    next_attempt_at: float = LATER,
    **fields: Any,
) -> Delivery:
    return Delivery(
        subscription_id=subscription_id,
        audio_id=audio_id,
        sequence=sequence,
        event_id=fields.pop("event_id", uuid4()),
        event_type=fields.pop("event_type", "audio.created"),
        body=fields.pop("body", b'{"type": "audio.created", "n": %d}' % sequence),
        created_at=fields.pop("created_at", 1_700_000_000.0 + sequence),
        status=status,
        next_attempt_at=next_attempt_at,
        **fields,
    )


@asynccontextmanager
async def settled_afterwards(
    store: WebhookStore, deliveries: Sequence[Delivery]
) -> AsyncIterator[None]:
    """Add the deliveries; mark them delivered at the end, so nothing stays due."""
    await store.add_deliveries(deliveries)
    try:
        yield
    finally:
        for each in deliveries:
            await store.save(replace(each, status=DeliveryStatus.DELIVERED))


def own(lanes: Sequence[tuple[UUID, UUID]], subscription_ids: set[UUID]) -> list[Any]:
    return [lane for lane in lanes if lane[0] in subscription_ids]


class WebhookStoreContract:
    """Subclasses provide a `webhooks` fixture yielding the store under test."""

    # Subscriptions

    async def test_a_subscription_reads_back_as_written(
        self, webhooks: WebhookStore
    ) -> None:
        plain = subscription(description="")
        everything = subscription(event_types=frozenset({"*"}), created_at=1.5)

        await webhooks.add_subscription(plain)
        await webhooks.add_subscription(everything)

        assert await webhooks.get_subscription(plain.subscription_id) == plain
        assert await webhooks.get_subscription(everything.subscription_id) == everything
        assert await webhooks.get_subscription(uuid4()) is None

    async def test_subscriptions_of_a_user_oldest_first(
        self, webhooks: WebhookStore
    ) -> None:
        user, other = uuid4(), uuid4()
        newer = subscription(user, created_at=1_700_000_300.0)
        older = subscription(user, created_at=1_700_000_100.0)
        middle = subscription(user, created_at=1_700_000_200.0)
        theirs = subscription(other, created_at=1_700_000_150.0)
        for each in (newer, older, theirs, middle):
            await webhooks.add_subscription(each)

        mine = await webhooks.subscriptions_of(user)
        everyone = await webhooks.subscriptions_of(None)

        assert mine == [older, middle, newer]
        assert await webhooks.subscriptions_of(other) == [theirs]
        assert await webhooks.subscriptions_of(uuid4()) == []
        made = {s.subscription_id for s in (newer, older, middle, theirs)}
        assert [s for s in everyone if s.subscription_id in made] == [
            older,
            theirs,
            middle,
            newer,
        ]

    async def test_subscriptions_made_at_one_moment_are_ordered_by_id(
        self, webhooks: WebhookStore
    ) -> None:
        user = uuid4()
        same = [subscription(user, created_at=1_700_000_000.0) for _ in range(4)]
        for each in same:
            await webhooks.add_subscription(each)

        found = await webhooks.subscriptions_of(user)

        assert found == sorted(same, key=lambda s: str(s.subscription_id))

    async def test_delete_a_subscription(self, webhooks: WebhookStore) -> None:
        user = uuid4()
        kept, gone = subscription(user, created_at=1.0), subscription(user)
        await webhooks.add_subscription(kept)
        await webhooks.add_subscription(gone)
        await webhooks.add_deliveries([delivery(gone.subscription_id, uuid4(), 1)])

        await webhooks.delete_subscription(gone.subscription_id)

        assert await webhooks.get_subscription(gone.subscription_id) is None
        assert await webhooks.subscriptions_of(user) == [kept]
        everyone = await webhooks.subscriptions_of(None)
        assert gone.subscription_id not in {s.subscription_id for s in everyone}
        with pytest.raises(SubscriptionNotFoundError) as caught:
            await webhooks.delete_subscription(gone.subscription_id)
        assert caught.value.subscription_id == gone.subscription_id
        with pytest.raises(SubscriptionNotFoundError):
            await webhooks.delete_subscription(uuid4())
        page, _ = await webhooks.deliveries(gone.subscription_id)
        assert len(page) == 1, "a deleted subscription's deliveries stay for audit"

    # Deliveries

    async def test_add_deliveries_adds_each_once(self, webhooks: WebhookStore) -> None:
        sid, audio = uuid4(), uuid4()
        first, second = delivery(sid, audio, 1), delivery(sid, audio, 2)

        added = await webhooks.add_deliveries([first, second])
        again = await webhooks.add_deliveries(
            [replace(first, event_type="audio.deleted"), delivery(sid, audio, 3)]
        )
        twice = delivery(sid, audio, 4)
        in_one_call = await webhooks.add_deliveries([twice, twice])

        assert added == [first, second]
        assert [d.sequence for d in again] == [3]
        assert in_one_call == [twice]
        assert await webhooks.get_delivery(sid, audio, 1) == first
        assert [d.sequence for d in await webhooks.lane(sid, audio)] == [1, 2, 3, 4]
        assert await webhooks.add_deliveries([]) == []

    async def test_a_lane_is_in_sequence_order(self, webhooks: WebhookStore) -> None:
        sid, audio, other_audio = uuid4(), uuid4(), uuid4()
        sequences = [10, 2, 9, 1, 11, 100]
        await webhooks.add_deliveries([delivery(sid, audio, n) for n in sequences])
        await webhooks.add_deliveries(
            [delivery(sid, other_audio, 5), delivery(uuid4(), audio, 3)]
        )

        lane = await webhooks.lane(sid, audio)

        assert [d.sequence for d in lane] == [1, 2, 9, 10, 11, 100]
        assert all(d.lane == (sid, audio) for d in lane)
        assert await webhooks.lane(sid, uuid4()) == []
        assert await webhooks.get_delivery(sid, audio, 3) is None

    async def test_claim_leases_a_pending_delivery(
        self, webhooks: WebhookStore
    ) -> None:
        sid, audio = uuid4(), uuid4()
        pending = delivery(sid, audio, 1)
        parked = delivery(sid, audio, 2, DeliveryStatus.PARKED)
        delivered = delivery(sid, audio, 3, DeliveryStatus.DELIVERED)
        await webhooks.add_deliveries([pending, parked, delivered])

        first = await webhooks.claim(pending, now=1000.0, lease_s=60.0)
        during = await webhooks.claim(pending, now=1059.0, lease_s=60.0)
        after = await webhooks.claim(pending, now=1060.5, lease_s=60.0)

        assert (first, during, after) == (True, False, True)
        stored = await webhooks.get_delivery(sid, audio, 1)
        assert stored is not None
        assert stored.lease_until == pytest.approx(1120.5)
        assert stored.status is DeliveryStatus.PENDING
        assert not await webhooks.claim(parked, now=1000.0, lease_s=60.0)
        assert not await webhooks.claim(delivered, now=1000.0, lease_s=60.0)
        unknown = delivery(sid, uuid4(), 1)
        assert not await webhooks.claim(unknown, now=1000.0, lease_s=60.0)
        assert await webhooks.get_delivery(sid, unknown.audio_id, 1) is None

    async def test_save_writes_status_and_attempts(
        self, webhooks: WebhookStore
    ) -> None:
        sid, audio = uuid4(), uuid4()
        original = delivery(sid, audio, 1, body=b'{"exact": "bytes \xc3\xa9"}')
        await webhooks.add_deliveries([original])
        no_answer = Attempt(
            at=1_700_000_001.25,
            latency_ms=5000.0,
            response_code=None,
            outcome="retry",
            error="timed out after 5 s",
        )
        refused = Attempt(
            at=1_700_000_061.5, latency_ms=12.3, response_code=410, outcome="parked"
        )

        retrying = original.with_attempt(
            no_answer, status=DeliveryStatus.PENDING, next_attempt_at=1_700_000_061.5
        )
        await webhooks.save(retrying)
        after_retry = await webhooks.get_delivery(sid, audio, 1)
        parked = retrying.with_attempt(
            refused, status=DeliveryStatus.PARKED, parked_reason="HTTP 410 Gone"
        )
        await webhooks.save(parked)
        after_park = await webhooks.get_delivery(sid, audio, 1)

        assert after_retry == retrying
        assert after_park == parked
        assert after_park is not None
        assert after_park.attempts == (no_answer, refused)
        assert after_park.attempts[0].response_code is None
        assert after_park.attempts_used == 2
        assert after_park.body == original.body
        assert await webhooks.lane(sid, audio) == [parked]

    async def test_a_purge_between_claim_and_record_survives(
        self, webhooks: WebhookStore
    ) -> None:
        """A send in flight while the erasure purges: its record of the
        attempt must not put the unredacted body it was sent with back."""
        sid, audio = uuid4(), uuid4()
        in_flight = delivery(sid, audio, 1, body=b'{"text": "private"}')
        await webhooks.add_deliveries([in_flight])
        assert await webhooks.claim(in_flight, now=1000.0, lease_s=60.0)

        await webhooks.replace_body(in_flight, b'{"text": null}')  # the purge
        answered = Attempt(
            at=1000.0, latency_ms=80.0, response_code=204, outcome="delivered"
        )
        recorded = await webhooks.record_attempt(
            in_flight.with_attempt(answered, status=DeliveryStatus.DELIVERED),
            lease_until=1060.0,
        )

        stored = await webhooks.get_delivery(sid, audio, 1)
        assert recorded
        assert stored is not None
        assert stored.body == b'{"text": null}'
        assert stored.status is DeliveryStatus.DELIVERED
        assert stored.attempts == (answered,)
        assert stored.attempts_used == 1
        assert stored.lease_until == 0.0
        assert stored == replace(
            in_flight.with_attempt(answered, status=DeliveryStatus.DELIVERED),
            body=b'{"text": null}',
        )

    async def test_an_attempt_is_recorded_only_under_the_lease_it_was_made_with(
        self, webhooks: WebhookStore
    ) -> None:
        sid, audio = uuid4(), uuid4()
        original = delivery(sid, audio, 1, next_attempt_at=LATER)
        await webhooks.add_deliveries([original])
        assert await webhooks.claim(original, now=1000.0, lease_s=60.0)
        # The lease ran out and another instance claimed the delivery.
        assert await webhooks.claim(original, now=1070.0, lease_s=60.0)
        late = Attempt(
            at=1000.0, latency_ms=70_000.0, response_code=None, outcome="retry"
        )

        stale = await webhooks.record_attempt(
            original.with_attempt(
                late, status=DeliveryStatus.PENDING, next_attempt_at=LATER
            ),
            lease_until=1060.0,
        )
        unknown = delivery(sid, uuid4(), 1)
        gone = await webhooks.record_attempt(
            unknown.with_attempt(late, status=DeliveryStatus.DELIVERED),
            lease_until=0.0,
        )

        stored = await webhooks.get_delivery(sid, audio, 1)
        assert (stale, gone) == (False, False)
        assert stored == replace(original, lease_until=1130.0)
        assert await webhooks.get_delivery(sid, unknown.audio_id, 1) is None

    async def test_save_writes_the_state_only_and_never_recreates_a_delivery(
        self, webhooks: WebhookStore
    ) -> None:
        sid, audio = uuid4(), uuid4()
        read_before_the_purge = delivery(sid, audio, 1, body=b'{"text": "private"}')
        deleted = delivery(sid, audio, 2)
        await webhooks.add_deliveries([read_before_the_purge, deleted])
        await webhooks.replace_body(read_before_the_purge, b'{"text": null}')
        await webhooks.delete_deliveries([deleted])

        parked = replace(
            read_before_the_purge,
            status=DeliveryStatus.PARKED,
            parked_reason="behind parked event x",
        )
        await webhooks.save(parked)
        await webhooks.save(replace(deleted, status=DeliveryStatus.CANCELLED))

        assert await webhooks.lane(sid, audio) == [
            replace(parked, body=b'{"text": null}')
        ]

    async def test_delete_deliveries_deletes_those_named(
        self, webhooks: WebhookStore
    ) -> None:
        sid, audio, other_audio = uuid4(), uuid4(), uuid4()
        made = [delivery(sid, audio, n, next_attempt_at=10.0) for n in (1, 2, 3)]
        kept = delivery(sid, other_audio, 1)
        await webhooks.add_deliveries([*made, kept])

        await webhooks.delete_deliveries(made[:2])
        await webhooks.delete_deliveries([delivery(sid, uuid4(), 1)])  # not stored
        await webhooks.delete_deliveries([])
        due = own(await webhooks.due(20.0, limit=1000), {sid})
        await webhooks.delete_deliveries(made)  # nothing left due behind

        assert due == [(sid, audio)]  # the third is still pending
        page, _ = await webhooks.deliveries(sid)
        assert page == [kept]
        assert own(await webhooks.due(20.0, limit=1000), {sid}) == []

    async def test_replace_body_changes_the_body_alone(
        self, webhooks: WebhookStore
    ) -> None:
        sid, audio = uuid4(), uuid4()
        original = delivery(sid, audio, 1, body=b'{"text": "private"}')
        await webhooks.add_deliveries([original])

        await webhooks.replace_body(original, b'{"text": null}')
        await webhooks.replace_body(delivery(sid, uuid4(), 1), b"{}")  # not stored

        stored = await webhooks.get_delivery(sid, audio, 1)
        assert stored is not None
        assert stored.body == b'{"text": null}'
        assert stored == replace(original, body=b'{"text": null}')
        assert await webhooks.lane(sid, audio) == [stored]
        # Past LATER, where other tests' deliveries are due too: only its own.
        due = await webhooks.due(now=original.next_attempt_at + 1, limit=1000)
        assert own(due, {sid}) == [(sid, audio)]

    # Due lanes

    async def test_due_finds_pending_deliveries_due_by_now(
        self, webhooks: WebhookStore
    ) -> None:
        sid, other_sid = uuid4(), uuid4()
        due_lane, later_lane, parked_lane, done_lane, other_lane = (
            uuid4() for _ in range(5)
        )
        made = [
            delivery(sid, due_lane, 1, next_attempt_at=50.0),
            delivery(sid, due_lane, 2, next_attempt_at=60.0),
            delivery(sid, later_lane, 1, next_attempt_at=150.0),
            delivery(sid, parked_lane, 1, DeliveryStatus.PARKED, next_attempt_at=40.0),
            delivery(sid, done_lane, 1, DeliveryStatus.DELIVERED, next_attempt_at=40),
            delivery(sid, done_lane, 2, DeliveryStatus.CANCELLED, next_attempt_at=40),
            delivery(other_sid, other_lane, 1, next_attempt_at=100.0),
        ]
        async with settled_afterwards(webhooks, made):
            at_100 = own(await webhooks.due(100.0, limit=1000), {sid, other_sid})
            at_200 = own(await webhooks.due(200.0, limit=1000), {sid, other_sid})

            assert sorted(at_100) == sorted([(sid, due_lane), (other_sid, other_lane)])
            assert sorted(at_200) == sorted(
                [(sid, due_lane), (sid, later_lane), (other_sid, other_lane)]
            )

    async def test_a_saved_delivery_leaves_or_joins_the_due_lanes(
        self, webhooks: WebhookStore
    ) -> None:
        sid, audio = uuid4(), uuid4()
        pending = delivery(sid, audio, 1, next_attempt_at=10.0)
        async with settled_afterwards(webhooks, [pending]):
            assert own(await webhooks.due(20.0, limit=1000), {sid}) == [(sid, audio)]

            parked = replace(pending, status=DeliveryStatus.PARKED, next_attempt_at=0)
            await webhooks.save(parked)
            assert own(await webhooks.due(20.0, limit=1000), {sid}) == []

            requeued = replace(
                parked, status=DeliveryStatus.PENDING, next_attempt_at=15
            )
            await webhooks.save(requeued)
            assert own(await webhooks.due(20.0, limit=1000), {sid}) == [(sid, audio)]
            assert own(await webhooks.due(14.0, limit=1000), {sid}) == []

    async def test_due_lists_the_most_overdue_lanes_first(
        self, webhooks: WebhookStore
    ) -> None:
        """With more lanes due than `limit`, the longest waiting are returned."""
        sid = uuid4()
        audios = [uuid4() for _ in range(8)]
        made = [
            delivery(sid, audio, 1, next_attempt_at=1.0 + n)
            for n, audio in enumerate(audios)
        ]
        async with settled_afterwards(webhooks, list(reversed(made))):
            found = await webhooks.due(100.0, limit=3)

            assert found == [(sid, audio) for audio in audios[:3]]

    async def test_due_counts_lanes_not_deliveries(
        self, webhooks: WebhookStore
    ) -> None:
        """A lane with many due deliveries hides no other lane from `due`."""
        sid = uuid4()
        busy = uuid4()
        quiet = [uuid4() for _ in range(16)]
        made = [
            delivery(sid, busy, n, next_attempt_at=1.0 + n / 100) for n in range(1, 18)
        ]
        made += [
            delivery(sid, audio, 1, next_attempt_at=2.0 + n)
            for n, audio in enumerate(quiet)
        ]
        async with settled_afterwards(webhooks, made):
            found = await webhooks.due(100.0, limit=17)

            assert sorted(found) == sorted([(sid, a) for a in [busy, *quiet]])

    # Pages of deliveries

    async def test_deliveries_page_by_audio_then_sequence(
        self, webhooks: WebhookStore
    ) -> None:
        sid, first_audio, second_audio = uuid4(), uuid4(), uuid4()
        made = [delivery(sid, first_audio, n) for n in (1, 2, 9, 10, 11)]
        made += [delivery(sid, second_audio, n) for n in (1, 2)]
        await webhooks.add_deliveries(made)
        await webhooks.add_deliveries([delivery(uuid4(), first_audio, 3)])
        expected = sorted(made, key=lambda d: (str(d.audio_id), d.sequence))

        pages: list[list[Delivery]] = []
        cursor: str | None = None
        while True:
            page, cursor = await webhooks.deliveries(sid, limit=3, cursor=cursor)
            pages.append(page)
            if cursor is None:
                break
            assert len(pages) < 10, "the cursors must come to an end"

        assert [d for page in pages for d in page] == expected
        assert all(len(page) <= 3 for page in pages)
        assert len(pages[0]) == 3
        everything, last = await webhooks.deliveries(sid, limit=100)
        assert everything == expected
        assert last is None
        assert await webhooks.deliveries(uuid4()) == ([], None)

    async def test_deliveries_filtered_by_status(self, webhooks: WebhookStore) -> None:
        sid, audio = uuid4(), uuid4()
        statuses = [
            DeliveryStatus.DELIVERED,
            DeliveryStatus.PARKED,
            DeliveryStatus.DELIVERED,
            DeliveryStatus.PENDING,
            DeliveryStatus.PARKED,
            DeliveryStatus.DELIVERED,
            DeliveryStatus.PARKED,
            DeliveryStatus.CANCELLED,
        ]
        made = [delivery(sid, audio, n, s) for n, s in enumerate(statuses, start=1)]
        await webhooks.add_deliveries(made)

        parked: list[Delivery] = []
        cursor: str | None = None
        for _ in range(10):
            page, cursor = await webhooks.deliveries(
                sid, status=DeliveryStatus.PARKED, limit=2, cursor=cursor
            )
            assert len(page) <= 2
            parked.extend(page)
            if cursor is None:
                break
        first_page, first_cursor = await webhooks.deliveries(
            sid, status=DeliveryStatus.PARKED, limit=2
        )
        cancelled, _ = await webhooks.deliveries(sid, status=DeliveryStatus.CANCELLED)

        assert cursor is None
        assert [d.sequence for d in parked] == [2, 5, 7]
        assert [d.sequence for d in first_page] == [2, 5]
        assert first_cursor is not None
        assert [d.sequence for d in cancelled] == [8]

    @pytest.mark.parametrize(
        "cursor",
        [
            "forged",
            "!!!",
            "%%%%",
            encode_cursor("SUB#not-a-delivery"),
            encode_cursor("USER#someone"),
        ],
    )
    async def test_a_forged_cursor_is_refused(
        self, webhooks: WebhookStore, cursor: str
    ) -> None:
        sid = uuid4()
        await webhooks.add_deliveries([delivery(sid, uuid4(), 1)])

        with pytest.raises(InvalidCursorError):
            await webhooks.deliveries(sid, cursor=cursor)
