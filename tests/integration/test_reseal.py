"""`nova-relay reseal` on the real event store (moto) and relay: legacy
plaintext events sealed in place, never published again, then shredded by
erasure like any other event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any
from uuid import UUID, uuid4

import pytest

from nova_command_api.entrypoints.reseal import print_report, reseal
from nova_events import (
    AUDIO_FILE,
    USER,
    AudioCreated,
    AudioProcessingStarted,
    EventEnvelope,
    EventPayload,
    TranscriptionCompleted,
    UserErased,
)
from nova_platform.aws import client_kwargs, session
from nova_platform.event_items import to_item
from nova_platform.event_reader import DynamoDBEventReader
from nova_platform.personal import PersonalData, open_personal_data
from nova_platform.resources import ensure_all
from nova_platform.settings import NovaSettings

from ..contracts.event_store import META, created
from ..stored_events import envelope
from .test_outbox_relay import drain, open_relay

pytestmark = pytest.mark.integration


@pytest.fixture
async def own_settings(settings: NovaSettings) -> NovaSettings:
    """A store of its own: the reseal scans the whole table."""
    mine = settings.model_copy(
        update={"resource_suffix": settings.resource_suffix + "s"}
    )
    await ensure_all(mine)
    return mine


@pytest.fixture
async def ddb(own_settings: NovaSettings) -> AsyncIterator[Any]:
    async with session().client("dynamodb", **client_kwargs(own_settings)) as client:
        yield client


async def personal_data(settings: NovaSettings, stack: AsyncExitStack) -> PersonalData:
    """A process's own PersonalData (its own key cache)."""
    return await open_personal_data(settings, stack)


def legacy_stream(owner: UUID, secret: str) -> list[EventEnvelope]:
    audio_id = uuid4()
    events: list[EventPayload] = [
        AudioCreated(
            audio_id=audio_id,
            user_id=owner,
            s3_key=f"audio/{owner}/{audio_id}.wav",
            title=f"{secret} title",
        ),
        AudioProcessingStarted(audio_id=audio_id),
        TranscriptionCompleted(
            audio_id=audio_id, text=f"{secret} words", confidence=0.9, language="en"
        ),
    ]
    return [
        envelope(AUDIO_FILE, audio_id, v, e, correlation_id="legacy")
        for v, e in enumerate(events, 1)
    ]


async def raw_items(ddb: Any, table: str) -> list[dict[str, Any]]:
    request: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    found: list[dict[str, Any]] = []
    while True:
        page = await ddb.scan(**request)
        found += page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return found
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


async def stream_record_kinds(settings: NovaSettings, ddb: Any) -> list[str]:
    """The `eventName` of every record in the store's DynamoDB stream."""
    table = await ddb.describe_table(TableName=settings.event_store_table)
    arn = table["Table"]["LatestStreamArn"]
    kinds: list[str] = []
    async with session().client(
        "dynamodbstreams", **client_kwargs(settings)
    ) as streams:
        shards = (await streams.describe_stream(StreamArn=arn))["StreamDescription"]
        for shard in shards["Shards"]:
            iterator = (
                await streams.get_shard_iterator(
                    StreamArn=arn,
                    ShardId=shard["ShardId"],
                    ShardIteratorType="TRIM_HORIZON",
                )
            )["ShardIterator"]
            while iterator:
                page = await streams.get_records(ShardIterator=iterator, Limit=1000)
                kinds += [r["eventName"] for r in page["Records"]]
                if not page["Records"]:
                    break
                iterator = page.get("NextShardIterator")
    return kinds


async def test_resealed_legacy_events_are_shredded_by_erasure_and_never_republished(
    own_settings: NovaSettings, ddb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    alice, bob, carol = uuid4(), uuid4(), uuid4()
    streams = {
        alice: legacy_stream(alice, "Alice-secret"),
        bob: legacy_stream(bob, "Bob-secret"),
        carol: legacy_stream(carol, "Carol-secret"),
    }
    table = own_settings.event_store_table
    async with open_relay(own_settings) as (store, relay):
        # Stored before sealing existed: plaintext items, published as such.
        for stream in streams.values():
            for event in stream:
                await ddb.put_item(TableName=table, Item=to_item(event))
        assert await drain(relay) == 9
        async with AsyncExitStack() as stack:
            erasing = await personal_data(own_settings, stack)
            erased_at = await erasing.erase(carol)  # erased before the reseal
        carols_erasure = envelope(
            USER,
            carol,
            1,
            UserErased(user_id=carol, erased_at=erased_at),
            correlation_id="legacy",
        )
        await ddb.put_item(TableName=table, Item=to_item(carols_erasure))
        assert await drain(relay) == 1

        dry = await reseal(own_settings, dry_run=True)
        assert (dry.sealed, dry.shredded) == (4, 2)
        assert "Alice-secret" in str(await raw_items(ddb, table)), "dry writes nothing"

        report = await reseal(own_settings, dry_run=False)
        assert (report.sealed, report.shredded, report.plaintext_left) == (4, 2, 0)
        assert print_report(report) == 0
        assert "4 legacy events were sealed" in capsys.readouterr().out

        # Each rewrite is a MODIFY in the stream, which the relay does not
        # publish: only the next new event goes out.
        kinds = await stream_record_kinds(own_settings, ddb)
        assert kinds.count("MODIFY") == 6
        assert await drain(relay) == 0
        audio_id = uuid4()
        await store.append_events(AUDIO_FILE, audio_id, [created(audio_id)], 0, META)
        assert await drain(relay) == 1

    async with AsyncExitStack() as stack:
        erasing = await personal_data(own_settings, stack)
        await erasing.erase(alice)
    stored = str(await raw_items(ddb, table))
    for secret in ("Alice-secret", "Bob-secret", "Carol-secret"):
        assert secret not in stored, f"{secret} is still in the store in plaintext"

    async with AsyncExitStack() as stack:
        reader = DynamoDBEventReader(
            ddb, table, None, await personal_data(own_settings, stack)
        )
        for owner in (alice, carol):
            opened = await reader.get_events(AUDIO_FILE, streams[owner][0].aggregate_id)
            assert [e.version for e in opened] == [1, 2, 3]
            assert "secret" not in str([e.data for e in opened])
            assert [e.erased for e in opened] == [True, False, True]
        bobs = await reader.get_events(AUDIO_FILE, streams[bob][0].aggregate_id)
        assert bobs == streams[bob], "a user not erased reads what was stored"
