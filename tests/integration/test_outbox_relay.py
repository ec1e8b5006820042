"""The relay against the real DynamoDB stream and the real broker."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID, uuid4

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from nova_command_api.adapters.dynamodb_event_store import DynamoDBEventStore
from nova_command_api.adapters.dynamodb_streams import (
    DynamoDBCheckpoints,
    DynamoDBStreamFeed,
)
from nova_command_api.adapters.kafka_publisher import KafkaPublisher
from nova_command_api.application.relay import OutboxRelay
from nova_events import AUDIO_FILE, AudioProcessingStarted, loads
from nova_platform.aws import client_kwargs, session
from nova_platform.kafka import make_producer
from nova_platform.settings import NovaSettings

from ..contracts.event_store import META, created
from ..kafka_reader import read_topic

pytestmark = pytest.mark.integration


@asynccontextmanager
async def open_relay(
    settings: NovaSettings,
) -> AsyncIterator[tuple[DynamoDBEventStore, OutboxRelay]]:
    """A relay process's wiring: its own clients, producer and checkpoints."""
    aws = session()
    async with (
        aws.client("dynamodb", **client_kwargs(settings)) as ddb,
        aws.client("dynamodbstreams", **client_kwargs(settings)) as streams,
    ):
        producer = make_producer(settings)
        await producer.start()
        try:
            relay = OutboxRelay(
                DynamoDBStreamFeed(ddb, streams, settings.event_store_table),
                DynamoDBCheckpoints(ddb, settings.outbox_checkpoint_table),
                KafkaPublisher(producer, settings.events_topic),
            )
            yield DynamoDBEventStore(ddb, settings.event_store_table), relay
        finally:
            await producer.stop()


@pytest.fixture
async def relay_parts(
    settings: NovaSettings,
) -> AsyncIterator[tuple[DynamoDBEventStore, OutboxRelay]]:
    async with open_relay(settings) as parts:
        yield parts


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


async def test_every_committed_event_reaches_kafka_in_stream_order(
    settings: NovaSettings, relay_parts: tuple[DynamoDBEventStore, OutboxRelay]
) -> None:
    store, relay = relay_parts
    audio_ids = [uuid4() for _ in range(5)]

    async def write_stream(audio_id: UUID) -> None:
        started = AudioProcessingStarted(audio_id=audio_id)
        await store.append_events(AUDIO_FILE, audio_id, [created(audio_id)], 0, META)
        # A two-event commit (one transaction) between single-event commits.
        await store.append_events(AUDIO_FILE, audio_id, [started, started], 1, META)
        await store.append_events(AUDIO_FILE, audio_id, [started], 3, META)

    await asyncio.gather(*(write_stream(a) for a in audio_ids))
    published = 0
    for _ in range(50):
        published += await relay.run_once()
        if published >= 20:
            break

    records = await read_topic(settings, until=published)
    ours = [loads(r.value) for r in records if loads(r.value).aggregate_id in audio_ids]
    versions: dict[UUID, list[int]] = defaultdict(list)
    for envelope in ours:
        versions[envelope.aggregate_id].append(envelope.version)
    assert {a: versions[a] for a in audio_ids} == {a: [1, 2, 3, 4] for a in audio_ids}
    headers = dict(records[0].headers)
    assert set(headers) >= {"event_type", "schema_version", "correlation_id"}
    assert records[0].key == str(loads(records[0].value).aggregate_id).encode()


async def test_a_restarted_relay_resumes_from_its_checkpoint(
    settings: NovaSettings, relay_parts: tuple[DynamoDBEventStore, OutboxRelay]
) -> None:
    store, relay = relay_parts
    while await relay.run_once():
        pass
    audio_id = uuid4()
    await store.append_events(AUDIO_FILE, audio_id, [created(audio_id)], 0, META)

    async with open_relay(settings) as (_, restarted):
        assert await restarted.run_once() == 1
        assert await restarted.run_once() == 0
