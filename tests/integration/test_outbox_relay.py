"""The relay against the real DynamoDB stream and the real broker."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from nova_command_api.adapters.dynamodb_event_store import DynamoDBEventStore
from nova_command_api.adapters.dynamodb_streams import DynamoDBLease, DynamoDBStreamFeed
from nova_command_api.adapters.kafka_publisher import TransactionalKafkaPublisher
from nova_command_api.adapters.prometheus_metrics import PrometheusRelayMetrics
from nova_command_api.application.relay import OutboxRelay
from nova_command_api.entrypoints import relay as relay_entrypoint
from nova_command_api.entrypoints.relay import republish
from nova_command_api.settings import CommandApiSettings
from nova_events import AUDIO_FILE, AudioProcessingStarted, EventEnvelope, loads
from nova_platform.aws import client_kwargs, session
from nova_platform.kafka import kafka_client_options, make_producer
from nova_platform.settings import NovaSettings

from ..contracts.event_store import META, created
from ..kafka_reader import read_topic

pytestmark = pytest.mark.integration


@asynccontextmanager
async def open_relay(
    settings: NovaSettings,
    owner: str | None = None,
    metrics: PrometheusRelayMetrics | None = None,
) -> AsyncIterator[tuple[DynamoDBEventStore, OutboxRelay]]:
    """A relay process's wiring: its own clients, producer and lease."""
    aws = session()
    async with (
        aws.client("dynamodb", **client_kwargs(settings)) as ddb,
        aws.client("dynamodbstreams", **client_kwargs(settings)) as streams,
    ):
        publisher = TransactionalKafkaPublisher(
            lambda: make_producer(
                settings, transactional_id=settings.relay_transactional_id
            ),
            kafka_client_options(settings),
            settings.events_topic,
            settings.relay_checkpoint_topic,
        )
        lease = DynamoDBLease(
            ddb, settings.relay_lease_table, settings.events_topic, owner=owner
        )
        try:
            relay = OutboxRelay(
                DynamoDBStreamFeed(ddb, streams, settings.event_store_table),
                publisher,
                lease,
                metrics,
            )
            yield DynamoDBEventStore(ddb, settings.event_store_table), relay
        finally:
            await lease.release()
            await publisher.close()


async def drain(relay: OutboxRelay) -> int:
    total = 0
    while published := await relay.run_once():
        total += published
    return total


async def test_producer_waits_for_all_replicas_and_is_idempotent(
    settings: NovaSettings,
) -> None:
    probe_topic = settings.events_topic + ".probe"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(probe_topic, 1, 1)])
    finally:
        await admin.close()
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(probe_topic, b"probe", key=b"probe")

        # acks=all travels as -1 in every produce request; idempotence means the
        # broker handed this producer an id and sequence numbers are in use.
        assert producer._sender._acks == -1
        assert producer._txn_manager is not None
        assert producer._txn_manager.producer_id >= 0
    finally:
        await producer.stop()


async def test_every_committed_event_reaches_kafka_once_in_stream_order(
    settings: NovaSettings,
) -> None:
    audio_ids = [uuid4() for _ in range(5)]
    async with open_relay(settings) as (store, relay):
        await drain(relay)  # what earlier tests left

        async def write_stream(audio_id: UUID) -> None:
            started = AudioProcessingStarted(audio_id=audio_id)
            await store.append_events(
                AUDIO_FILE, audio_id, [created(audio_id)], 0, META
            )
            # A two-event commit (one transaction) between single-event commits.
            await store.append_events(AUDIO_FILE, audio_id, [started, started], 1, META)
            await store.append_events(AUDIO_FILE, audio_id, [started], 3, META)

        await asyncio.gather(*(write_stream(a) for a in audio_ids))
        assert await drain(relay) == 20

    records = await read_topic(settings, until=20)
    versions: dict[UUID, list[int]] = defaultdict(list)
    for record in records:
        envelope = loads(record.value)
        versions[envelope.aggregate_id].append(envelope.version)
    assert {a: versions[a] for a in audio_ids} == {a: [1, 2, 3, 4] for a in audio_ids}
    headers = dict(records[-1].headers)
    assert set(headers) >= {"event_type", "schema_version", "correlation_id"}
    assert records[-1].key == str(loads(records[-1].value).aggregate_id).encode()


async def test_the_backlog_gauges_age_events_by_their_stream_records(
    settings: NovaSettings,
) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusRelayMetrics(registry)
    async with open_relay(settings, metrics=metrics) as (store, relay):
        await drain(relay)
        audio_id = uuid4()
        written = datetime.now(UTC)
        await store.append_events(AUDIO_FILE, audio_id, [created(audio_id)], 0, META)
        # A read that finds the record publishes it within the same pass.
        async with asyncio.timeout(10):
            while not await relay.run_once():
                pass
        found = registry.get_sample_value("nova_relay_pending_events")
        age = registry.get_sample_value("nova_relay_oldest_unpublished_age_seconds")
        await drain(relay)
        caught_up = registry.get_sample_value("nova_relay_pending_events")
        age_after = registry.get_sample_value(
            "nova_relay_oldest_unpublished_age_seconds"
        )

    assert found == 1
    assert age is not None
    assert 0 < age <= (datetime.now(UTC) - written).total_seconds() + 1
    assert (caught_up, age_after) == (0, 0)


async def test_order_ignores_the_writers_clocks(settings: NovaSettings) -> None:
    audio_id = uuid4()
    async with open_relay(settings) as (store, relay):
        await drain(relay)
        # Replica A's clock runs 5 s late, replica B's 5 s early.
        late = DynamoDBEventStore(
            store._client,
            settings.event_store_table,
            clock=lambda: datetime.now(UTC) - timedelta(seconds=5),
        )
        early = DynamoDBEventStore(
            store._client,
            settings.event_store_table,
            clock=lambda: datetime.now(UTC) + timedelta(seconds=5),
        )
        started = AudioProcessingStarted(audio_id=audio_id)
        await early.append_events(AUDIO_FILE, audio_id, [created(audio_id)], 0, META)
        await late.append_events(AUDIO_FILE, audio_id, [started], 1, META)
        await early.append_events(AUDIO_FILE, audio_id, [started], 2, META)
        await late.append_events(AUDIO_FILE, audio_id, [started], 3, META)
        await drain(relay)

    records = await read_topic(settings, until=1)
    ours = [loads(r.value) for r in records if loads(r.value).aggregate_id == audio_id]
    assert [e.version for e in ours] == [1, 2, 3, 4]
    assert ours[1].occurred_at < ours[0].occurred_at  # the clocks did disagree


async def test_a_restarted_relay_resumes_exactly_after_its_checkpoint(
    settings: NovaSettings,
) -> None:
    async with open_relay(settings) as (store, relay):
        await drain(relay)
        audio_id = uuid4()
        await store.append_events(AUDIO_FILE, audio_id, [created(audio_id)], 0, META)

    async with open_relay(settings) as (_, restarted):
        assert await drain(restarted) == 1
        assert await restarted.run_once() == 0


async def test_only_the_lease_holder_publishes(settings: NovaSettings) -> None:
    async with (
        open_relay(settings, owner="relay-a") as (store, active),
        open_relay(settings, owner="relay-b") as (_, standby),
    ):
        await drain(active)
        audio_id = uuid4()
        await store.append_events(AUDIO_FILE, audio_id, [created(audio_id)], 0, META)

        assert await standby.run_once() == 0
        assert await drain(active) == 1


async def test_republish_sends_one_audio_again(settings: NovaSettings) -> None:
    audio_id = uuid4()
    async with open_relay(settings) as (store, relay):
        started = AudioProcessingStarted(audio_id=audio_id)
        await store.append_events(AUDIO_FILE, audio_id, [created(audio_id)], 0, META)
        await store.append_events(AUDIO_FILE, audio_id, [started], 1, META)
        await drain(relay)
    before = len(await read_topic(settings, until=1))

    count = await republish(
        CommandApiSettings(**settings.model_dump()), audio_id, None, None
    )

    records = await read_topic(settings, until=before + 2)
    ours = [loads(r.value) for r in records if loads(r.value).aggregate_id == audio_id]
    assert count == 2
    assert [e.version for e in ours] == [1, 2, 1, 2]


class Clock:
    """A writer's clock, set by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


async def read_to_end(settings: NovaSettings) -> list[EventEnvelope]:
    """Every committed event on the events topic up to its current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [
            TopicPartition(settings.events_topic, p)
            for p in consumer.partitions_for_topic(settings.events_topic) or ()
        ]
        assert tps, f"topic {settings.events_topic} is missing"
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        events: list[EventEnvelope] = []
        async with asyncio.timeout(30):
            while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
                batches = await consumer.getmany(*tps, timeout_ms=200)
                events.extend(
                    loads(r.value)
                    for records in batches.values()
                    for r in records
                    if r.value is not None
                )
        return events
    finally:
        await consumer.stop()


@pytest.mark.parametrize("remembered", [10_000, 0], ids=["cached", "no-cache"])
async def test_republish_sends_a_time_range_in_version_order_per_audio(
    settings: NovaSettings, remembered: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without its memory of sent audios it must still send each audio once.
    monkeypatch.setattr(relay_entrypoint, "REMEMBERED_AUDIOS", remembered)
    # An hour of its own, years before the other tests' events.
    since = datetime(2001, 1, 1, tzinfo=UTC) + timedelta(hours=uuid4().int % 90_000)
    clock = Clock()
    whole, tail, skewed = uuid4(), uuid4(), uuid4()

    async def write(audio_id: UUID, minutes: list[int]) -> None:
        for version, minute in enumerate(minutes):
            clock.now = since + timedelta(minutes=minute)
            event = (
                created(audio_id)
                if version == 0
                else AudioProcessingStarted(audio_id=audio_id)
            )
            await store.append_events(AUDIO_FILE, audio_id, [event], version, META)

    async with session().client("dynamodb", **client_kwargs(settings)) as ddb:
        store = DynamoDBEventStore(ddb, settings.event_store_table, clock=clock)
        await write(whole, [0, 10, 20, 30])  # v4 is at --until, excluded
        await write(tail, [-10, 5, 15])  # v1 is before --since
        await write(skewed, [12, 11, 13])  # v2's writer clock ran late
    until = since + timedelta(minutes=30)

    count = await republish(
        CommandApiSettings(**settings.model_dump()),
        None,
        since.astimezone(timezone(timedelta(hours=9))),  # 13:00 in Tokyo
        until.replace(tzinfo=None),  # naive: UTC
        page_size=2,  # several pages of the index per event type
    )

    ours = [
        e
        for e in await read_to_end(settings)
        if e.aggregate_id in {whole, tail, skewed}
    ]
    versions: dict[UUID, list[int]] = defaultdict(list)
    for event in ours:
        versions[event.aggregate_id].append(event.version)
    assert count == 8
    assert dict(versions) == {whole: [1, 2, 3], tail: [2, 3], skewed: [1, 2, 3]}
