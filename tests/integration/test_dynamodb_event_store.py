from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import uuid4

import pytest

from nova_command_api.adapters.dynamodb_event_store import DynamoDBEventStore
from nova_command_api.application.ports import ConcurrencyError
from nova_events import AUDIO_FILE, AudioProcessingStarted
from nova_platform.aws import client_kwargs, session
from nova_platform.settings import NovaSettings

from ..contracts.event_store import META, EventStoreContract, created

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(settings: NovaSettings) -> AsyncIterator[DynamoDBEventStore]:
    async with session().client("dynamodb", **client_kwargs(settings)) as ddb:
        yield DynamoDBEventStore(ddb, settings.event_store_table)


class TestDynamoDBEventStore(EventStoreContract):
    async def test_32_racing_writers_leave_a_contiguous_stream(
        self, store: DynamoDBEventStore
    ) -> None:
        audio_id = uuid4()
        await store.append_events(AUDIO_FILE, audio_id, [created(audio_id)], 0, META)
        conflicts = 0

        async def writer() -> None:
            nonlocal conflicts
            for _ in range(50):
                current = len(await store.get_events(AUDIO_FILE, audio_id))
                try:
                    await store.append_events(
                        AUDIO_FILE,
                        audio_id,
                        [AudioProcessingStarted(audio_id=audio_id)],
                        current,
                        META,
                    )
                    return
                except ConcurrencyError:
                    conflicts += 1
            raise AssertionError("a writer never won in 50 tries")

        await asyncio.gather(*(writer() for _ in range(32)))

        versions = [e.version for e in await store.get_events(AUDIO_FILE, audio_id)]
        assert versions == list(range(1, 34))
        assert conflicts > 0

    async def test_reads_every_page(self, settings: NovaSettings) -> None:
        audio_id = uuid4()
        async with session().client("dynamodb", **client_kwargs(settings)) as ddb:
            # A page of 3 items forces the reads through many pages, as a 1 MB
            # page does on a long stream in DynamoDB.
            paged = DynamoDBEventStore(ddb, settings.event_store_table, page_size=3)
            await paged.append_events(
                AUDIO_FILE, audio_id, [created(audio_id)], 0, META
            )
            started = [AudioProcessingStarted(audio_id=audio_id) for _ in range(10)]
            await paged.append_events(AUDIO_FILE, audio_id, started, 1, META)

            events = await paged.get_events(AUDIO_FILE, audio_id)
            by_type = await paged.get_events_by_type(
                "AudioProcessingStarted", limit=1000
            )

        assert [e.version for e in events] == list(range(1, 12))
        assert sum(e.aggregate_id == audio_id for e in by_type) == 10
