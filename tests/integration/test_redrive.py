"""Redrive of a parked `User` stream on the real backends: `UserErased` is
applied again by both projectors' `redrive` entrypoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from aiokafka import AIOKafkaProducer
from opensearchpy import AsyncOpenSearch

from nova_command_api.adapters.dynamodb_event_store import DynamoDBEventStore
from nova_events import (
    AUDIO_FILE,
    USER,
    AudioCreated,
    EventMetadata,
    UserErased,
    dumps,
)
from nova_platform.aws import client_kwargs, session
from nova_platform.event_reader import DynamoDBEventReader
from nova_platform.parking import KafkaDynamoDBParking, Record
from nova_platform.settings import NovaSettings
from nova_projector_readmodel.adapters.dynamodb_read_model import DynamoDBReadModel
from nova_projector_readmodel.application.projector import ReadModelProjector
from nova_projector_readmodel.entrypoints.redrive import (
    redrive_parked as redrive_read_model,
)
from nova_projector_search.adapters.opensearch_index import OpenSearchIndex
from nova_projector_search.application.projector import SearchProjector
from nova_projector_search.entrypoints.redrive import (
    redrive_parked as redrive_search,
)

pytestmark = pytest.mark.integration

META = EventMetadata(correlation_id="c-redrive")
PROJECTORS = ("projector-readmodel", "projector-search")


@pytest.fixture
async def ddb(settings: NovaSettings) -> AsyncIterator[Any]:
    async with session().client("dynamodb", **client_kwargs(settings)) as client:
        yield client


@pytest.fixture
async def producer(settings: NovaSettings) -> AsyncIterator[AIOKafkaProducer]:
    started = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


async def test_a_parked_user_erased_is_applied_by_both_redrives(
    settings: NovaSettings, ddb: Any, producer: AIOKafkaProducer
) -> None:
    alice, audio_id = uuid4(), uuid4()
    store = DynamoDBEventStore(ddb, settings.event_store_table)
    created = AudioCreated(
        audio_id=audio_id,
        user_id=alice,
        s3_key=f"audio/{alice}/{audio_id}.wav",
        title="Private title",
    )
    await store.append_events(AUDIO_FILE, audio_id, [created], 0, META)
    # Long enough ago that no cached key can open alice's data any more.
    erased_at = datetime.now(UTC) - timedelta(hours=1)
    await store.append_events(
        USER, alice, [UserErased(user_id=alice, erased_at=erased_at)], 0, META
    )
    reader = DynamoDBEventReader(ddb, settings.event_store_table)
    search = AsyncOpenSearch(hosts=[settings.opensearch_url])
    try:
        index = OpenSearchIndex(search, settings.search_alias)
        read_model = DynamoDBReadModel(ddb, settings.read_model_table)
        stream = await reader.get_events(AUDIO_FILE, audio_id)
        await ReadModelProjector(read_model).project(stream)
        await SearchProjector(index).project(stream)

        # Each projector failed on the UserErased record and parked it.
        [erasure] = await reader.get_events(USER, alice)
        parked = Record(
            str(alice).encode(), dumps(erasure), settings.events_topic, 0, 7
        )
        for service in PROJECTORS:
            parking = KafkaDynamoDBParking(
                producer,
                settings.dead_letter_topic,
                ddb,
                settings.parking_table,
                settings.consumer_group(service),
            )
            await parking.park(str(alice), [parked], "a bug in erasing a user")
            assert await parking.aggregate_type(str(alice)) == USER
        assert (await item(ddb, settings, audio_id))["title"] == {"S": "Private title"}

        assert str(alice) in await redrive_read_model(
            settings, "projector-readmodel", None
        )
        assert str(alice) in await redrive_search(settings, "projector-search", None)

        erased_item = await item(ddb, settings, audio_id)
        assert "title" not in erased_item
        assert "s3_key" not in erased_item
        assert erased_item["personal_data"] == {"S": "erased"}
        [doc] = (await index.fetch([str(audio_id)])).values()
        assert "title" not in doc
        assert doc["personal_data"] == "erased"
        for service in PROJECTORS:
            assert not await mark_exists(ddb, settings, service, alice)
    finally:
        await search.close()


async def item(ddb: Any, settings: NovaSettings, audio_id: UUID) -> dict[str, Any]:
    found = await ddb.get_item(
        TableName=settings.read_model_table,
        Key={"pk": {"S": f"AUDIO#{audio_id}"}, "sk": {"S": "METADATA"}},
        ConsistentRead=True,
    )
    stored: dict[str, Any] = found["Item"]
    return stored


async def mark_exists(
    ddb: Any, settings: NovaSettings, service: str, aggregate_id: UUID
) -> bool:
    found = await ddb.get_item(
        TableName=settings.parking_table,
        Key={
            "pk": {"S": settings.consumer_group(service)},
            "sk": {"S": str(aggregate_id)},
        },
        ConsistentRead=True,
    )
    return "Item" in found
