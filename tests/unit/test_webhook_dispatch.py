"""Webhook delivery without backends: the retry rules, the fan-out of events
into deliveries, and the dispatcher on the in-memory store with a scripted
sender (timings are real but short)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from nova_events import (
    AUDIO_FILE,
    AudioCreated,
    AudioProcessingStarted,
    DomainEvent,
    EventEnvelope,
    EventMetadata,
    encode_payload,
)
from nova_integration.application.dispatcher import Dispatcher
from nova_integration.application.fanout import Fanout
from nova_integration.application.ports import AudioOwnerUnknownError
from nova_integration.domain.retry import RetryPolicy, SendResult, Verdict
from nova_platform.webhooks import (
    Delivery,
    DeliveryStatus,
    InMemoryWebhookStore,
    Subscription,
)

RNG = random.Random(7)
META = EventMetadata(correlation_id="c", causation_id="c", user_id="u", command_id="c")


def envelope(audio_id: UUID, version: int, event: DomainEvent) -> EventEnvelope:
    return EventEnvelope(
        event_id=uuid4(),
        aggregate_type=AUDIO_FILE,
        aggregate_id=audio_id,
        event_type=event.event_type(),
        schema_version=event.schema_version,
        version=version,
        occurred_at=datetime.now(UTC),
        metadata=META,
        data=dict(encode_payload(event)),
    )


def created(audio_id: UUID, user_id: UUID) -> EventEnvelope:
    return envelope(
        audio_id,
        1,
        AudioCreated(
            audio_id=audio_id,
            user_id=user_id,
            title="t",
            s3_key=f"audio/{user_id}/{audio_id}.wav",
            file_name="a.wav",
        ),
    )


def started(audio_id: UUID, version: int) -> EventEnvelope:
    return envelope(
        audio_id, version, AudioProcessingStarted(audio_id=audio_id, attempt=version)
    )


def subscription(user_id: UUID, *types: str) -> Subscription:
    return Subscription(
        subscription_id=uuid4(),
        user_id=user_id,
        url="https://hooks.example.com/nova",
        event_types=frozenset(types or ("*",)),
        secret="s" * 32,
        created_at=time.time(),
    )


# --- the retry rules ---------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (204, Verdict.DELIVERED),
        (None, Verdict.RETRY),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (301, Verdict.PARKED),
        (400, Verdict.PARKED),
        (404, Verdict.PARKED),
        (410, Verdict.PARKED),
    ],
)
def test_which_answers_are_retried(code: int | None, verdict: Verdict) -> None:
    decision = RetryPolicy().decide(SendResult(code, 5.0), 1, RNG)
    assert decision.verdict is verdict


def test_retries_back_off_exponentially_with_jitter_and_then_park() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay_s=1.0, max_delay_s=60.0)
    failure = SendResult(503, 1.0)
    delays = [policy.decide(failure, n, RNG).delay_s for n in range(1, 5)]
    for n, delay in enumerate(delays, start=1):
        step = 2 ** (n - 1)
        assert step / 2 <= delay <= step
    assert policy.decide(failure, 5, RNG).verdict is Verdict.PARKED
    assert "gave up after 5 attempts" in policy.decide(failure, 5, RNG).reason


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    policy = RetryPolicy(base_delay_s=0.1, max_delay_s=30.0)
    asked = SendResult(429, 1.0, retry_after_s=12.0)
    assert policy.decide(asked, 1, RNG).delay_s == pytest.approx(12.0)
    greedy = SendResult(503, 1.0, retry_after_s=86400.0)
    assert policy.decide(greedy, 1, RNG).delay_s == pytest.approx(30.0)


def test_a_refused_target_is_parked_without_retrying() -> None:
    refused = SendResult(None, 0.1, "10.0.0.1 is private", refused=True)
    decision = RetryPolicy().decide(refused, 1, RNG)
    assert decision.verdict is Verdict.PARKED
    assert "10.0.0.1 is private" in decision.reason


# --- the fan-out ---------------------------------------------------------------


class Owners:
    def __init__(self, owners: dict[UUID, UUID]) -> None:
        self.owners = owners
        self.lookups = 0

    async def owner_of(self, audio_id: UUID) -> UUID:
        self.lookups += 1
        try:
            return self.owners[audio_id]
        except KeyError:
            raise AudioOwnerUnknownError(str(audio_id)) from None


async def test_each_user_gets_only_their_events_of_the_types_they_want() -> None:
    store = InMemoryWebhookStore()
    alice, bob = uuid4(), uuid4()
    everything = subscription(alice)
    only_started = subscription(alice, "audio.processing.started")
    bobs = subscription(bob)
    for sub in (everything, only_started, bobs):
        await store.add_subscription(sub)
    a1, b1 = uuid4(), uuid4()
    fanout = Fanout(store, Owners({}), dispatcher=None)

    await fanout([created(a1, alice), started(a1, 2), created(b1, bob)])

    lanes = {
        (s.subscription_id, a): await store.lane(s.subscription_id, a)
        for s in (everything, only_started, bobs)
        for a in (a1, b1)
    }

    def types(sub: Subscription, audio: UUID) -> list[str]:
        return [d.event_type for d in lanes[(sub.subscription_id, audio)]]

    assert types(everything, a1) == ["audio.created", "audio.processing.started"]
    assert types(only_started, a1) == ["audio.processing.started"]
    assert types(bobs, b1) == ["audio.created"]
    assert types(everything, b1) == types(bobs, a1) == []


async def test_a_redelivered_event_adds_no_delivery() -> None:
    store = InMemoryWebhookStore()
    user, audio = uuid4(), uuid4()
    sub = subscription(user)
    await store.add_subscription(sub)
    owners = Owners({audio: user})
    fanout = Fanout(store, owners, dispatcher=None)
    events = [created(audio, user), started(audio, 2)]

    await fanout(events)
    await fanout(events[1:])  # a rewound batch
    await fanout(events)  # a republish

    lane = await store.lane(sub.subscription_id, audio)
    assert [d.sequence for d in lane] == [1, 2]
    assert owners.lookups == 1  # only the batch without AudioCreated asks


class SlowOwners(Owners):
    """Answers only once `together` lookups wait at the same time."""

    def __init__(self, owners: dict[UUID, UUID], together: int) -> None:
        super().__init__(owners)
        self.waiting = 0
        self.all_there = asyncio.Event()
        self.together = together

    async def owner_of(self, audio_id: UUID) -> UUID:
        self.waiting += 1
        if self.waiting >= self.together:
            self.all_there.set()
        await asyncio.wait_for(self.all_there.wait(), timeout=5)
        return await super().owner_of(audio_id)


async def test_a_cold_cache_looks_the_batchs_owners_up_at_once() -> None:
    store = InMemoryWebhookStore()
    user = uuid4()
    await store.add_subscription(subscription(user))
    audios = [uuid4() for _ in range(8)]
    owners = SlowOwners(dict.fromkeys(audios, user), together=len(audios))
    fanout = Fanout(store, owners, dispatcher=None)

    # One lookup after the other would wait forever for the second one.
    await fanout([started(audio, 2) for audio in audios for _ in range(2)])

    assert owners.lookups == len(audios)  # one per audio, not per event


class RecordingStore(InMemoryWebhookStore):
    """Remembers the deliveries of each `add_deliveries` call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[tuple[tuple[UUID, UUID], int]]] = []

    async def add_deliveries(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        self.calls.append([(d.lane, d.sequence) for d in deliveries])
        return await super().add_deliveries(deliveries)


async def test_a_lanes_deliveries_are_stored_one_after_the_other() -> None:
    # Puts sent together finish in any order; a dispatcher already driving
    # the lane would send a later delivery that is stored before an earlier one.
    store = RecordingStore()
    user = uuid4()
    await store.add_subscription(subscription(user))
    await store.add_subscription(subscription(user))
    first, second = uuid4(), uuid4()
    fanout = Fanout(store, Owners({}), dispatcher=None)

    await fanout(
        [
            created(first, user),
            started(first, 2),
            created(second, user),
            started(first, 3),
            started(second, 2),
        ]
    )

    assert [len(call) for call in store.calls] == [4, 4, 2]
    for call in store.calls:
        assert len({lane for lane, _ in call}) == len(call)  # a lane once a call
    order: dict[tuple[UUID, UUID], list[int]] = {}
    for call in store.calls:
        for lane, sequence in call:
            order.setdefault(lane, []).append(sequence)
    assert sorted(order.values()) == [[1, 2], [1, 2], [1, 2, 3], [1, 2, 3]]


async def test_an_audio_with_no_known_owner_fails_the_batch() -> None:
    fanout = Fanout(InMemoryWebhookStore(), Owners({}), dispatcher=None)
    with pytest.raises(AudioOwnerUnknownError):
        await fanout([started(uuid4(), 2)])


# --- the dispatcher ------------------------------------------------------------


class ScriptedSender:
    """Answers per subscription from a script; records what was sent when."""

    def __init__(self) -> None:
        self.script: dict[UUID, Callable[[Delivery], SendResult]] = {}
        self.sent: list[tuple[UUID, UUID, int, int | None]] = []
        self.delay_s: dict[UUID, float] = {}

    async def send(self, subscription: Subscription, delivery: Delivery) -> SendResult:
        sid = subscription.subscription_id
        await asyncio.sleep(self.delay_s.get(sid, 0.0))
        script = self.script.get(sid)
        answer = script(delivery) if script else SendResult(204, 1.0)
        self.sent.append(
            (sid, delivery.audio_id, delivery.sequence, answer.response_code)
        )
        return answer


def pending(sub: Subscription, audio: UUID, sequence: int) -> Delivery:
    return Delivery(
        subscription_id=sub.subscription_id,
        audio_id=audio,
        sequence=sequence,
        event_id=uuid4(),
        event_type="audio.processing.started",
        body=b"{}",
        created_at=time.time(),
    )


@contextlib.asynccontextmanager
async def running(dispatcher: Dispatcher) -> AsyncIterator[Dispatcher]:
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(probe: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


FAST = RetryPolicy(max_attempts=4, base_delay_s=0.02, max_delay_s=0.1)


async def test_a_lane_goes_out_in_order_after_failures() -> None:
    store, sender = InMemoryWebhookStore(), ScriptedSender()
    sub = subscription(uuid4())
    await store.add_subscription(sub)
    audio = uuid4()
    answers = iter([503, 500, 204, 429, 204, 204])
    sender.script[sub.subscription_id] = lambda _: SendResult(next(answers), 1.0)
    await store.add_deliveries([pending(sub, audio, n) for n in (1, 2, 3)])
    dispatcher = Dispatcher(store, sender, FAST, poll_interval_s=0.05)

    async with running(dispatcher):
        dispatcher.notify([(sub.subscription_id, audio)])
        await until(lambda: dispatcher.sent == 3)

    assert [(s, c) for _, _, s, c in sender.sent] == [
        (1, 503),
        (1, 500),
        (1, 204),
        (2, 429),
        (2, 204),
        (3, 204),
    ]
    lane = await store.lane(sub.subscription_id, audio)
    assert [d.status for d in lane] == [DeliveryStatus.DELIVERED] * 3
    assert [a.response_code for a in lane[0].attempts] == [503, 500, 204]
    assert [a.outcome for a in lane[0].attempts] == ["retry", "retry", "delivered"]


async def test_a_dead_endpoint_does_not_hold_back_the_others() -> None:
    store, sender = InMemoryWebhookStore(), ScriptedSender()
    dead, alive = subscription(uuid4()), subscription(uuid4())
    for sub in (dead, alive):
        await store.add_subscription(sub)
    sender.delay_s[dead.subscription_id] = 0.3  # slow, and then fails
    sender.script[dead.subscription_id] = lambda _: SendResult(None, 300.0, "timeout")
    audios = [uuid4() for _ in range(10)]
    for audio in audios:
        await store.add_deliveries([pending(dead, audio, 1), pending(alive, audio, 1)])
    dispatcher = Dispatcher(
        store, sender, FAST, concurrency=4, per_subscription=2, poll_interval_s=0.05
    )

    async with running(dispatcher):
        dispatcher.notify((s.subscription_id, a) for a in audios for s in (dead, alive))
        await until(lambda: dispatcher.sent == 10, timeout=3.0)
        assert not any(
            c == 204 for s, _, _, c in sender.sent if s == dead.subscription_id
        )


async def test_the_lane_parks_in_order_and_a_resend_completes_it() -> None:
    store, sender = InMemoryWebhookStore(), ScriptedSender()
    sub = subscription(uuid4())
    await store.add_subscription(sub)
    audio = uuid4()
    sender.script[sub.subscription_id] = lambda _: SendResult(500, 1.0, "down")
    await store.add_deliveries([pending(sub, audio, n) for n in (1, 2)])
    dispatcher = Dispatcher(store, sender, FAST, poll_interval_s=0.05)

    async with running(dispatcher):
        dispatcher.notify([(sub.subscription_id, audio)])

        async def statuses() -> list[DeliveryStatus]:
            return [d.status for d in await store.lane(sub.subscription_id, audio)]

        deadline = time.monotonic() + 5
        while await statuses() != [DeliveryStatus.PARKED] * 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        first, second = await store.lane(sub.subscription_id, audio)
        assert first.attempts_used == 4
        assert "gave up after 4 attempts" in first.parked_reason
        assert second.attempts == ()  # never sent before the first
        assert second.parked_reason == f"behind parked event {first.event_id}"

        # The endpoint is fixed; a re-send (what the API does) completes both.
        sender.script[sub.subscription_id] = lambda _: SendResult(200, 1.0)
        for parked in (first, second):
            await store.save(
                replace(
                    parked,
                    status=DeliveryStatus.PENDING,
                    attempts_used=0,
                    next_attempt_at=time.time(),
                    parked_reason="",
                )
            )
        while await statuses() != [DeliveryStatus.DELIVERED] * 2:
            assert time.monotonic() < deadline + 5
            await asyncio.sleep(0.01)
    assert [s for _, _, s, c in sender.sent if c == 200] == [1, 2]


async def test_deliveries_of_a_deleted_subscription_are_cancelled() -> None:
    store, sender = InMemoryWebhookStore(), ScriptedSender()
    sub = subscription(uuid4())
    audio = uuid4()
    await store.add_deliveries([pending(sub, audio, 1)])  # never stored: deleted
    dispatcher = Dispatcher(store, sender, FAST, poll_interval_s=0.05)

    async with running(dispatcher):
        dispatcher.notify([(sub.subscription_id, audio)])
        await until(lambda: dispatcher.idle(), timeout=2.0)

    (delivery,) = await store.lane(sub.subscription_id, audio)
    assert delivery.status is DeliveryStatus.CANCELLED
    assert sender.sent == []


async def test_two_dispatchers_on_one_store_send_each_delivery_once() -> None:
    store, sender = InMemoryWebhookStore(), ScriptedSender()
    sub = subscription(uuid4())
    await store.add_subscription(sub)
    sender.delay_s[sub.subscription_id] = 0.02
    audios = [uuid4() for _ in range(8)]
    for audio in audios:
        await store.add_deliveries([pending(sub, audio, n) for n in (1, 2, 3)])
    # One request at a time each: neither can take all the work alone.
    one, two = (
        Dispatcher(store, sender, FAST, per_subscription=1, poll_interval_s=0.02)
        for _ in range(2)
    )

    async with running(one), running(two):
        await until(lambda: one.sent + two.sent == 24)
        await asyncio.sleep(0.1)

    assert one.sent > 0  # both found work through the store
    assert two.sent > 0
    sent = [(a, s) for _, a, s, _ in sender.sent]
    assert sorted(sent) == sorted((a, n) for a in audios for n in (1, 2, 3))
    for audio in audios:
        assert [s for a, s in sent if a == audio] == [1, 2, 3]


class GatedSender:
    """Holds each request until its subscription's gate opens (never, for a
    gate not opened); records what started, was answered and was cut off."""

    def __init__(self) -> None:
        self.gates: dict[UUID, asyncio.Event] = {}
        self.answers: dict[UUID, int] = {}
        self.answered: list[tuple[UUID, UUID, int]] = []
        self.cut_off: list[tuple[UUID, UUID, int]] = []
        self.in_flight: dict[UUID, int] = {}
        self.watched: set[UUID] = set()
        self.peak_watched = 0
        """Most requests in flight at once to the `watched` subscriptions."""

    def total(self, sids: Iterable[UUID] | None = None) -> int:
        return sum(
            n for sid, n in self.in_flight.items() if sids is None or sid in sids
        )

    def open(self, sid: UUID) -> None:
        self.gates.setdefault(sid, asyncio.Event()).set()

    async def send(self, subscription: Subscription, delivery: Delivery) -> SendResult:
        sid = subscription.subscription_id
        key = (sid, delivery.audio_id, delivery.sequence)
        self.in_flight[sid] = self.in_flight.get(sid, 0) + 1
        self.peak_watched = max(self.peak_watched, self.total(self.watched))
        try:
            await self.gates.setdefault(sid, asyncio.Event()).wait()
        except asyncio.CancelledError:
            self.cut_off.append(key)
            raise
        finally:
            self.in_flight[sid] -= 1
        self.answered.append(key)
        return SendResult(self.answers.get(sid, 204), 1.0)


async def test_a_stop_finishes_requests_in_flight_and_hands_back_the_rest() -> None:
    store, gated = InMemoryWebhookStore(), GatedSender()
    answers, hangs = subscription(uuid4()), subscription(uuid4())
    audio = uuid4()
    for sub in (answers, hangs):
        await store.add_subscription(sub)
        await store.add_deliveries([pending(sub, audio, n) for n in (1, 2)])
    lanes = [(answers.subscription_id, audio), (hangs.subscription_id, audio)]
    # A lease far longer than the test: only a handed-back delivery goes on.
    dispatcher = Dispatcher(
        store, gated, FAST, lease_s=600.0, drain_s=0.5, poll_interval_s=0.05
    )
    task = asyncio.create_task(dispatcher.run())
    dispatcher.notify(lanes)
    await until(lambda: gated.total() == 2)

    stopping = time.monotonic()
    task.cancel()
    await until(lambda: dispatcher.stopping)
    gated.open(answers.subscription_id)  # answers while the stop waits
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=10.0)
    took = time.monotonic() - stopping

    assert 0.5 <= took < 3.0  # the drain, and not the request's own timeout
    assert gated.answered == [(answers.subscription_id, audio, 1)]
    assert gated.cut_off == [(hangs.subscription_id, audio, 1)]
    answered, next_in_line = await store.lane(*lanes[0])
    assert answered.status is DeliveryStatus.DELIVERED
    assert [a.outcome for a in answered.attempts] == ["delivered"]
    # Nothing new was claimed after the stop began.
    assert next_in_line.attempts == ()
    assert next_in_line.lease_until == 0.0
    interrupted, behind = await store.lane(*lanes[1])
    assert interrupted.status is DeliveryStatus.PENDING
    assert interrupted.lease_until == 0.0
    assert interrupted.next_attempt_at <= time.time()
    assert interrupted.attempts_used == 0  # the stop is not the receiver's fault
    (cut,) = interrupted.attempts
    assert (cut.response_code, cut.outcome) == (None, "retry")
    assert "integration service stopped" in cut.error
    assert behind.attempts == ()
    assert set(await store.due(time.time())) == set(lanes)

    # The next instance finds the work through the store at once.
    sender = ScriptedSender()
    restarted = Dispatcher(store, sender, FAST, lease_s=600.0, poll_interval_s=0.05)
    async with running(restarted):
        await until(lambda: restarted.sent == 3, timeout=5.0)
    assert sorted((sid, n) for sid, _, n, _ in sender.sent) == sorted(
        [
            (answers.subscription_id, 2),
            (hangs.subscription_id, 1),
            (hangs.subscription_id, 2),
        ]
    )
    resent = await store.get_delivery(hangs.subscription_id, audio, 1)
    assert resent is not None
    assert resent.status is DeliveryStatus.DELIVERED
    assert [a.outcome for a in resent.attempts] == ["retry", "delivered"]
    assert resent.attempts_used == 1


class CancellationLosingStore(InMemoryWebhookStore):
    """Its look for due work returns normally although it was cancelled, as a
    DynamoDB call can on Python 3.11 when the cancellation arrives as the call
    completes (aiobotocore bounds it with `asyncio.wait_for`)."""

    def __init__(self) -> None:
        super().__init__()
        self.looking = asyncio.Event()
        self.looks = 0
        self.lost = 0

    async def due(self, now: float, limit: int = 100) -> list[tuple[UUID, UUID]]:
        self.looks += 1
        self.looking.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.lost += 1
        return []


async def test_a_stopped_dispatcher_ends_although_its_cancellation_was_lost() -> None:
    store = CancellationLosingStore()
    dispatcher = Dispatcher(store, ScriptedSender(), FAST, poll_interval_s=0.01)
    task = asyncio.create_task(dispatcher.run())
    await store.looking.wait()

    # What the integration service's stop does: the signal, then the backstop,
    # which reaches the dispatcher inside its store call and is lost there.
    dispatcher.stop()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)

    assert store.lost == 1
    assert task in done, "the dispatcher went on after stop()"
    assert store.looks == 1, "nothing more is looked for once stopped"
    assert dispatcher.stopping


async def test_failing_subscriptions_share_half_of_the_slots() -> None:
    store, gated = InMemoryWebhookStore(), GatedSender()
    hanging = [subscription(uuid4()) for _ in range(2)]
    alive = subscription(uuid4())
    for sub in (*hanging, alive):
        await store.add_subscription(sub)
    hanging_ids = {s.subscription_id for s in hanging}
    gated.watched = hanging_ids
    # 4 slots, 2 per subscription: without a share for failing subscriptions
    # the two hanging endpoints would hold all 4.
    dispatcher = Dispatcher(
        store,
        gated,
        FAST,
        concurrency=4,
        per_subscription=2,
        drain_s=0.1,
        poll_interval_s=0.05,
    )
    async with running(dispatcher):
        # Each hanging endpoint first answers 503 once: it is failing now.
        first = uuid4()
        for sub in hanging:
            gated.answers[sub.subscription_id] = 503
            gated.open(sub.subscription_id)
            await store.add_deliveries([pending(sub, first, 1)])
        dispatcher.notify((sid, first) for sid in hanging_ids)
        await until(lambda: len(gated.answered) >= 2)
        for sid in hanging_ids:
            gated.gates[sid] = asyncio.Event()  # from now on it never answers
        audios = [uuid4() for _ in range(5)]
        for sub in hanging:
            await store.add_deliveries([pending(sub, a, 1) for a in audios])
        dispatcher.notify((sid, a) for sid in hanging_ids for a in audios)
        await until(lambda: gated.total(hanging_ids) == 2)

        gated.open(alive.subscription_id)
        await store.add_deliveries([pending(alive, a, 1) for a in audios])
        dispatcher.notify((alive.subscription_id, a) for a in audios)
        await until(lambda: dispatcher.sent == len(audios), timeout=5.0)

        assert gated.total(hanging_ids) == 2  # still hanging, in their share
        assert gated.peak_watched == 2
