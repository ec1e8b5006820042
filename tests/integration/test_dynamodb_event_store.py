from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any, cast
from uuid import uuid4

import pytest

from nova_command_api.adapters.dynamodb_event_store import DynamoDBEventStore
from nova_command_api.application.ports import ConcurrencyError
from nova_events import AUDIO_FILE, AudioProcessingCompleted, AudioProcessingStarted
from nova_platform.aws import client_kwargs, session
from nova_platform.personal import open_personal_data
from nova_platform.settings import NovaSettings

from ..contracts.event_store import META, EventStoreContract, created

pytestmark = pytest.mark.integration


class OneTransactionAtATime:
    """A DynamoDB client that sends one `TransactWriteItems` at a time.

    moto is not DynamoDB here: it undoes a cancelled transaction by restoring a
    copy of the table taken when the transaction began (`transact_write_items`
    in moto/dynamodb/models), which also erases, or half-erases, a commit that
    landed meanwhile. DynamoDB isolates transactions itself. Reads and
    decisions still race; only moto's unsafe rollback window is closed.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = asyncio.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def transact_write_items(self, **request: Any) -> Any:
        async with self._lock:
            return await self._client.transact_write_items(**request)


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
        attempts = 0
        conflicts: list[ConcurrencyError] = []

        async def writer() -> None:
            nonlocal attempts
            for _ in range(100):
                current = len(await store.get_events(AUDIO_FILE, audio_id))
                attempts += 1
                try:
                    await store.append_events(
                        AUDIO_FILE,
                        audio_id,
                        [AudioProcessingStarted(audio_id=audio_id)],
                        current,
                        META,
                    )
                    return
                except ConcurrencyError as exc:
                    conflicts.append(exc)
            raise AssertionError("a writer never won in 100 tries")

        await asyncio.gather(*(writer() for _ in range(32)))

        versions = [e.version for e in await store.get_events(AUDIO_FILE, audio_id)]
        assert versions == list(range(1, 34))
        # Every attempt either appended or got a conflict; none was lost.
        assert len(conflicts) == attempts - 32
        assert conflicts, "the writers never raced; the test proves nothing"
        # A loser is told the version that beat it, which is past the one it read.
        assert all(c.actual_version > c.expected_version for c in conflicts)

    async def test_racing_two_event_commits_stay_whole_and_contiguous(
        self, settings: NovaSettings
    ) -> None:
        audio_id = uuid4()
        conflicts: list[ConcurrencyError] = []
        winners: set[str] = set()
        async with session().client("dynamodb", **client_kwargs(settings)) as ddb:
            store = DynamoDBEventStore(
                cast(Any, OneTransactionAtATime(ddb)), settings.event_store_table
            )
            await store.append_events(
                AUDIO_FILE, audio_id, [created(audio_id)], 0, META
            )

            async def writer(n: int) -> None:
                meta = META.model_copy(update={"command_id": f"writer-{n}"})
                pair = [
                    AudioProcessingStarted(audio_id=audio_id),
                    AudioProcessingCompleted(audio_id=audio_id),
                ]
                for _ in range(100):
                    current = len(await store.get_events(AUDIO_FILE, audio_id))
                    try:
                        await store.append_events(
                            AUDIO_FILE, audio_id, pair, current, meta
                        )
                    except ConcurrencyError as exc:
                        conflicts.append(exc)
                        continue
                    winners.add(f"writer-{n}")
                    return
                raise AssertionError("a writer never won in 100 tries")

            await asyncio.gather(*(writer(n) for n in range(12)))
            events = await store.get_events(AUDIO_FILE, audio_id)

        assert [e.version for e in events] == list(range(1, 26))
        # All or nothing: each commit's two events side by side, in order.
        commits = [events[i : i + 2] for i in range(1, 25, 2)]
        for first, second in commits:
            assert first.metadata.command_id == second.metadata.command_id
            assert first.event_type == "AudioProcessingStarted"
            assert second.event_type == "AudioProcessingCompleted"
        assert sorted(str(first.metadata.command_id) for first, _ in commits) == (
            sorted(winners)
        )
        assert conflicts, "the writers never raced; the test proves nothing"
        assert all(c.actual_version > c.expected_version for c in conflicts)

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


class TestSealingDynamoDBEventStore(EventStoreContract):
    """The same contract while every event's personal fields are sealed."""

    @pytest.fixture
    async def store(self, settings: NovaSettings) -> AsyncIterator[DynamoDBEventStore]:
        async with AsyncExitStack() as stack:
            ddb = await stack.enter_async_context(
                session().client("dynamodb", **client_kwargs(settings))
            )
            personal = await open_personal_data(settings, stack, ddb)
            yield DynamoDBEventStore(ddb, settings.event_store_table, personal=personal)

    async def test_items_hold_the_personal_fields_sealed(
        self, store: DynamoDBEventStore, settings: NovaSettings
    ) -> None:
        audio_id = uuid4()
        event = created(audio_id)
        await store.append_events(AUDIO_FILE, audio_id, [event], 0, META)

        async with session().client("dynamodb", **client_kwargs(settings)) as ddb:
            found = await ddb.get_item(
                TableName=settings.event_store_table,
                Key={
                    "pk": {"S": f"{AUDIO_FILE}#{audio_id}"},
                    "sk": {"S": "v0000000001"},
                },
                ConsistentRead=True,
            )
        stored = found["Item"]["event_data"]["S"]
        assert event.s3_key not in stored
        assert '"_sealed"' in stored
        [opened] = await store.get_events(AUDIO_FILE, audio_id)
        assert opened.data["s3_key"] == event.s3_key
