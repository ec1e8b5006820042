"""Webhooks after a user's erasure: `user.erased`, no personal field left, and
then no subscription or delivery of the user's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from nova_events import (
    AUDIO_FILE,
    USER,
    AudioCreated,
    EventEnvelope,
    Segment,
    TranscriptionCompleted,
    UserErased,
)
from nova_integration.application.dispatcher import Dispatcher
from nova_integration.application.fanout import Fanout
from nova_integration.domain.payload import encode_body, public_payload, redact_body
from nova_integration.domain.retry import RetryPolicy, SendResult, Verdict
from nova_platform.personal import PersonalData
from nova_platform.user_keys import InMemoryUserKeys, LocalKeyWrapper
from nova_platform.webhooks import (
    Delivery,
    DeliveryStatus,
    InMemoryWebhookStore,
    Subscription,
)

from ..stored_events import envelope
from ..waiting import eventually

ERASED_AT = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
WORDS = "the secret plan"


class Owners:
    def __init__(self, owners: dict[UUID, UUID]) -> None:
        self._owners = owners

    async def owner_of(self, audio_id: UUID) -> UUID:
        return self._owners[audio_id]


class Waits:
    def __init__(self) -> None:
        self.erasures: list[datetime] = []

    async def __call__(self, erased_at: datetime) -> None:
        self.erasures.append(erased_at)


def transcript(audio_id: UUID) -> EventEnvelope:
    return envelope(
        AUDIO_FILE,
        audio_id,
        3,
        TranscriptionCompleted(
            audio_id=audio_id,
            text=WORDS,
            confidence=0.8,
            language="en-US",
            segments=(Segment(start=0, end=1, text=WORDS),),
        ),
    )


def erasure(user_id: UUID) -> EventEnvelope:
    return envelope(USER, user_id, 1, UserErased(user_id=user_id, erased_at=ERASED_AT))


def subscription(user_id: UUID, *types: str) -> Subscription:
    return Subscription(
        subscription_id=uuid4(),
        user_id=user_id,
        url="https://hooks.example.com/nova",
        event_types=frozenset(types or {"*"}),
        secret="s" * 32,
        created_at=1.0,
    )


def test_user_erased_has_a_public_form_naming_the_user() -> None:
    user = uuid4()

    payload = public_payload(erasure(user))

    assert payload["type"] == "user.erased"
    assert payload["user_id"] == str(user)
    assert "audio_id" not in payload
    assert payload["sequence"] == 1
    assert payload["data"] == {"erased_at": "2026-03-09T08:00:00Z"}


async def test_an_event_opened_erased_goes_out_without_personal_fields() -> None:
    owner, audio_id = uuid4(), uuid4()
    personal = PersonalData(InMemoryUserKeys(), LocalKeyWrapper(os.urandom(32)))
    sealed = await personal.seal(transcript(audio_id), owner)
    await personal.erase(owner)

    payload = public_payload(await personal.open(sealed))

    assert payload["personal_data"] == "erased"
    assert payload["data"]["text"] is None
    assert payload["data"]["segments"] == []
    assert payload["data"]["confidence"] == 0.8
    assert "<erased>" not in encode_body(payload).decode()


def test_a_stored_body_is_redacted_once_and_others_are_left_alone() -> None:
    body = encode_body(public_payload(transcript(uuid4())))

    redacted = redact_body(body)

    assert redacted is not None
    assert WORDS not in redacted.decode()
    assert json.loads(redacted)["personal_data"] == "erased"
    assert redact_body(redacted) is None
    assert redact_body(encode_body(public_payload(erasure(uuid4())))) is None
    assert redact_body(b"not json") is None


async def test_an_erasure_is_delivered_then_purges_the_users_stored_bodies() -> None:
    alice, bob = uuid4(), uuid4()
    alices, bobs = uuid4(), uuid4()
    store, waits = InMemoryWebhookStore(), Waits()
    hers, his = subscription(alice), subscription(bob)
    await store.add_subscription(hers)
    await store.add_subscription(his)
    fanout = Fanout(
        store, Owners({alices: alice, bobs: bob}), None, wait_for_erasure=waits
    )
    created = envelope(
        AUDIO_FILE,
        alices,
        1,
        AudioCreated(audio_id=alices, user_id=alice, s3_key="k", title="Private"),
    )
    await fanout([created, transcript(alices), transcript(bobs)])

    await fanout([erasure(alice)])

    assert waits.erasures == [ERASED_AT]
    mine, _ = await store.deliveries(hers.subscription_id)
    # Listed by lane (audio id, then sequence): the user's lane is keyed by
    # her user id, which sorts anywhere among her audios' ids.
    of_audio = [d.event_type for d in mine if d.audio_id == alices]
    assert of_audio == ["audio.created", "audio.transcription.completed"]
    [erased] = [d for d in mine if d.audio_id == alice]
    assert erased.event_type == "user.erased"
    assert len(mine) == 3
    for delivery in mine:
        assert WORDS not in delivery.body.decode()
        assert "Private" not in delivery.body.decode()
    [transcribed] = [d for d in mine if d.event_type == "audio.transcription.completed"]
    assert json.loads(transcribed.body)["personal_data"] == "erased"
    theirs, _ = await store.deliveries(his.subscription_id)
    assert [WORDS in d.body.decode() for d in theirs] == [True]


class Receiver:
    """The subscriptions' endpoint: answers `code` to every request, each held
    until `gate` opens when there is one; keeps the bodies it got."""

    def __init__(self, code: int = 204) -> None:
        self.code = code
        self.gate: asyncio.Event | None = None
        self.in_flight = asyncio.Event()
        self.bodies: list[bytes] = []

    async def send(self, subscription: Subscription, delivery: Delivery) -> SendResult:
        self.in_flight.set()
        if self.gate is not None:
            await self.gate.wait()
        self.bodies.append(delivery.body)
        return SendResult(self.code, 1.0)


ONCE = RetryPolicy(max_attempts=1, base_delay_s=0.01, max_delay_s=0.01)


@contextlib.asynccontextmanager
async def dispatching(
    store: InMemoryWebhookStore,
    receiver: Receiver,
    poll_interval_s: float = 0.02,
    verdicts: list[Verdict] | None = None,
) -> AsyncIterator[Dispatcher]:
    heard = verdicts if verdicts is not None else []
    dispatcher = Dispatcher(
        store,
        receiver,
        ONCE,
        poll_interval_s=poll_interval_s,
        on_attempt=lambda verdict, _: heard.append(verdict),
    )
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        dispatcher.stop()
        await asyncio.wait({task}, timeout=dispatcher.stop_within_s)


async def statuses(store: InMemoryWebhookStore, sid: UUID) -> list[DeliveryStatus]:
    page, _ = await store.deliveries(sid)
    return [d.status for d in page]


async def test_a_send_in_flight_during_the_purge_does_not_put_the_body_back() -> None:
    alice, audio = uuid4(), uuid4()
    store, receiver = InMemoryWebhookStore(), Receiver()
    hers = subscription(alice)
    await store.add_subscription(hers)
    fanout = Fanout(store, Owners({audio: alice}), None, wait_for_erasure=Waits())
    await fanout([transcript(audio)])
    receiver.gate = asyncio.Event()

    # Polled once at the start, then not for a minute: the user.erased stored
    # by the erasure stays unsent, and so the subscription stays.
    async with dispatching(store, receiver, poll_interval_s=60.0):
        await receiver.in_flight.wait()
        await fanout([erasure(alice)])  # the purge, while the request is out
        receiver.gate.set()

        async def recorded() -> Delivery | None:
            stored = await store.get_delivery(hers.subscription_id, audio, 3)
            return stored if stored and stored.attempts else None

        sent = await eventually(recorded, timeout=5, what="the attempt recorded")

    assert WORDS in receiver.bodies[0].decode()  # it was on its way already
    assert sent.status is DeliveryStatus.DELIVERED
    assert WORDS not in sent.body.decode(), "the record put the body back"
    assert json.loads(sent.body)["personal_data"] == "erased"


@pytest.mark.parametrize(
    ("code", "outcome"),
    [(204, Verdict.DELIVERED), (410, Verdict.PARKED)],
    ids=["sent", "parked"],
)
async def test_once_user_erased_is_sent_or_parked_her_subscription_is_deleted(
    code: int, outcome: Verdict
) -> None:
    alice, bob = uuid4(), uuid4()
    alices, bobs = uuid4(), uuid4()
    store, receiver = InMemoryWebhookStore(), Receiver()
    hers, his = subscription(alice), subscription(bob)
    await store.add_subscription(hers)
    await store.add_subscription(his)
    fanout = Fanout(
        store, Owners({alices: alice, bobs: bob}), None, wait_for_erasure=Waits()
    )
    await fanout([transcript(alices), transcript(bobs)])
    verdicts: list[Verdict] = []

    async with dispatching(store, receiver, verdicts=verdicts) as dispatcher:

        async def all_delivered() -> bool | None:
            done = [DeliveryStatus.DELIVERED]
            mine = await statuses(store, hers.subscription_id)
            theirs = await statuses(store, his.subscription_id)
            return True if mine == theirs == done else None

        await eventually(all_delivered, timeout=5, what="both transcripts sent")
        receiver.code = code
        await fanout([erasure(alice)])

        async def gone() -> bool | None:
            found = await store.get_subscription(hers.subscription_id)
            return True if found is None and dispatcher.idle() else None

        await eventually(gone, timeout=5, what="her subscription deleted")

    notices = [json.loads(b) for b in receiver.bodies if b"user.erased" in b]
    assert [n["user_id"] for n in notices] == [str(alice)]
    assert await store.deliveries(hers.subscription_id) == ([], None)
    assert await store.subscriptions_of(alice) == []
    assert await store.get_subscription(his.subscription_id) == his
    [kept] = (await store.deliveries(his.subscription_id))[0]
    assert WORDS in kept.body.decode()
    assert verdicts == [Verdict.DELIVERED, Verdict.DELIVERED, outcome]


async def test_a_subscription_not_wanting_user_erased_is_deleted_by_the_purge() -> None:
    alice, audio = uuid4(), uuid4()
    store = InMemoryWebhookStore()
    transcripts_only = subscription(alice, "audio.transcription.completed")
    everything = subscription(alice)
    for each in (transcripts_only, everything):
        await store.add_subscription(each)
    stored_when_applied: list[list[str]] = []

    async def applied_late(erased_at: datetime) -> None:
        page, _ = await store.deliveries(everything.subscription_id)
        stored_when_applied.append([d.event_type for d in page])

    fanout = Fanout(store, Owners({audio: alice}), None, wait_for_erasure=applied_late)
    await fanout([transcript(audio)])

    await fanout([erasure(alice)])

    assert await store.get_subscription(transcripts_only.subscription_id) is None
    assert await store.deliveries(transcripts_only.subscription_id) == ([], None)
    # user.erased is stored only once the erasure is applied.
    assert stored_when_applied == [["audio.transcription.completed"]]
    page, _ = await store.deliveries(everything.subscription_id)
    assert sorted(d.event_type for d in page) == [
        "audio.transcription.completed",
        "user.erased",
    ]
    assert all(WORDS not in d.body.decode() for d in page)
    assert await store.subscriptions_of(alice) == [everything]


async def test_a_deletion_cut_short_is_finished_by_the_next_pass() -> None:
    """The subscription went, its user.erased delivery did not (a crash
    between the two): the dispatcher deletes it instead of sending it."""
    alice = uuid4()
    store, receiver = InMemoryWebhookStore(), Receiver()
    hers = subscription(alice)
    await store.add_subscription(hers)
    fanout = Fanout(store, Owners({}), None, wait_for_erasure=Waits())
    await fanout([erasure(alice)])
    await store.delete_subscription(hers.subscription_id)

    async with dispatching(store, receiver) as dispatcher:

        async def deleted() -> bool | None:
            page, _ = await store.deliveries(hers.subscription_id)
            return True if not page and dispatcher.idle() else None

        await eventually(deleted, timeout=5, what="the user.erased delivery deleted")

    assert receiver.bodies == []
