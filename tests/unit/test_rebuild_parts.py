"""The pieces of a projection rebuild that need no backend: the read-model
pointer's cache, the store scan's stream order, retries and skipped audios."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
from botocore.exceptions import ClientError

from nova_events import (
    AUDIO_FILE,
    AudioCreated,
    AudioProcessingStarted,
    EventEnvelope,
    EventMetadata,
    encode_payload,
)
from nova_platform.commands import parse_command
from nova_platform.event_items import to_item
from nova_platform.projections import ActiveReadModelTable, resolve
from nova_platform.rebuild import (
    RebuildError,
    SafeApply,
    rebuild_name,
    scan_streams,
)
from nova_platform.settings import NovaSettings

SETTINGS = NovaSettings(resource_suffix="unit")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakePointerTable:
    """`get_item`/`put_item` of the `nova-projections` table, counted."""

    def __init__(self, table: str | None = None, *, missing: bool = False) -> None:
        self.table = table
        self.missing = missing
        self.reads = 0

    async def get_item(self, **request: Any) -> dict[str, Any]:
        self.reads += 1
        assert request["TableName"] == SETTINGS.projections_table
        assert request["ConsistentRead"] is True
        if self.missing:
            raise ClientError(
                {"Error": {"Code": "ResourceNotFoundException", "Message": "no"}},
                "GetItem",
            )
        if self.table is None:
            return {}
        return {"Item": {"pk": {"S": "read-model"}, "table": {"S": self.table}}}

    async def put_item(self, **request: Any) -> dict[str, Any]:
        self.table = request["Item"]["table"]["S"]
        return {}


def pointer(fake: FakePointerTable, clock: FakeClock) -> ActiveReadModelTable:
    return ActiveReadModelTable(cast(Any, fake), SETTINGS, ttl_s=2.0, clock=clock)


async def test_the_pointer_is_read_once_per_ttl() -> None:
    fake, clock = FakePointerTable("nova-audio-read-model-unit-r1"), FakeClock()
    active = pointer(fake, clock)

    assert await active.table_name() == "nova-audio-read-model-unit-r1"
    fake.table = "nova-audio-read-model-unit-r2"  # a rebuild switched
    clock.now += 1.9
    assert await active.table_name() == "nova-audio-read-model-unit-r1"
    assert fake.reads == 1

    clock.now += 0.2
    assert await active.table_name() == "nova-audio-read-model-unit-r2"
    assert fake.reads == 2


async def test_concurrent_readers_share_one_read_after_expiry() -> None:
    fake, clock = FakePointerTable("t-r1"), FakeClock()
    active = pointer(fake, clock)

    names = await asyncio.gather(*(active.table_name() for _ in range(20)))

    assert set(names) == {"t-r1"}
    assert fake.reads == 1


async def test_without_a_pointer_the_default_table_is_active() -> None:
    for fake in (FakePointerTable(None), FakePointerTable(missing=True)):
        active = pointer(fake, FakeClock())
        assert await active.table_name() == SETTINGS.read_model_table


async def test_point_at_moves_the_pointer_and_this_process_at_once() -> None:
    fake, clock = FakePointerTable(None), FakeClock()
    active = pointer(fake, clock)
    assert await active.table_name() == SETTINGS.read_model_table

    await active.point_at("nova-audio-read-model-unit-r9")

    assert fake.table == "nova-audio-read-model-unit-r9"
    assert await active.table_name() == "nova-audio-read-model-unit-r9"
    assert await resolve("fixed") == "fixed"
    assert await resolve(active) == "nova-audio-read-model-unit-r9"


def envelope(audio_id: UUID, version: int) -> EventEnvelope:
    event = (
        AudioCreated(audio_id=audio_id, user_id=uuid4(), s3_key="k")
        if version == 1
        else AudioProcessingStarted(audio_id=audio_id)
    )
    return EventEnvelope(
        aggregate_type=AUDIO_FILE,
        aggregate_id=audio_id,
        event_type=event.event_type(),
        schema_version=event.schema_version,
        version=version,
        occurred_at=datetime(2026, 12, 1, tzinfo=UTC),
        metadata=EventMetadata(correlation_id="c"),
        data=encode_payload(event),
    )


class FakeScan:
    """`scan` pages over the given items, `page` items at a time."""

    def __init__(self, items: list[dict[str, Any]], page: int) -> None:
        self.items = items
        self.page = page

    async def scan(self, **request: Any) -> dict[str, Any]:
        assert request["ConsistentRead"] is True
        start = int(request.get("ExclusiveStartKey", {}).get("i", {}).get("N", 0))
        end = start + self.page
        page: dict[str, Any] = {"Items": self.items[start:end]}
        if end < len(self.items):
            page["LastEvaluatedKey"] = {"i": {"N": str(end)}}
        return page


async def test_the_scan_yields_whole_streams_in_version_order() -> None:
    a, b, c = uuid4(), uuid4(), uuid4()
    # Streams together (as DynamoDB returns them) but not sorted inside.
    stored = [
        envelope(a, 2),
        envelope(a, 1),
        envelope(a, 3),
        envelope(b, 1),
        envelope(c, 3),
        envelope(c, 1),
        envelope(c, 2),
    ]
    fake = FakeScan([to_item(e) for e in stored], page=2)

    batches = [b async for b in scan_streams(cast(Any, fake), "store", batch_size=3)]

    flat = [(e.aggregate_id, e.version) for batch in batches for e in batch]
    assert flat == [(a, 1), (a, 2), (a, 3), (b, 1), (c, 1), (c, 2), (c, 3)]
    assert len(batches) > 1
    # A batch never ends inside a stream: each next one starts a stream.
    assert all(batch[0].version == 1 for batch in batches[1:])


async def test_a_stream_in_two_places_stops_the_scan() -> None:
    a, b = uuid4(), uuid4()
    stored = [envelope(a, 1), envelope(b, 1), envelope(a, 2)]
    fake = FakeScan([to_item(e) for e in stored], page=10)

    with pytest.raises(RebuildError, match="two places"):
        _ = [b async for b in scan_streams(cast(Any, fake), "store")]


class FlakyError(Exception):
    retriable = True


async def no_sleep(delay: float) -> None:
    return None


async def test_transient_failures_are_retried_and_poison_audios_skipped() -> None:
    good, poison = uuid4(), uuid4()
    applied: list[tuple[UUID, int]] = []
    failures = iter([FlakyError(), FlakyError()])

    async def apply(envelopes: Sequence[EventEnvelope]) -> None:
        error = next(failures, None)
        if error is not None:
            raise error
        if any(e.aggregate_id == poison for e in envelopes):
            raise ValueError("cannot project this")
        applied.extend((e.aggregate_id, e.version) for e in envelopes)

    skipped: dict[str, str] = {}
    safe = SafeApply(apply, skipped, sleep=no_sleep)

    count = await safe([envelope(good, 1), envelope(poison, 1)])
    later = await safe([envelope(good, 2), envelope(poison, 2)])

    assert (count, later) == (1, 1)
    assert applied == [(good, 1), (good, 2)]
    assert list(skipped) == [str(poison)]
    assert "cannot project this" in skipped[str(poison)]


async def test_a_lasting_outage_ends_the_rebuild() -> None:
    async def apply(envelopes: Sequence[EventEnvelope]) -> None:
        raise FlakyError()

    safe = SafeApply(apply, {}, attempts=3, sleep=no_sleep)

    with pytest.raises(RebuildError, match="kept failing"):
        await safe([envelope(uuid4(), 1)])


def test_the_command_line() -> None:
    assert parse_command("nova-projector-readmodel", []).command is None
    args = parse_command("nova-projector-search", ["rebuild", "--grace-s", "3"])
    assert (args.command, args.grace_s) == ("rebuild", 3.0)
    assert (
        rebuild_name("audio-transcriptions", datetime(2026, 12, 3, 4, 5, 6, tzinfo=UTC))
        == "audio-transcriptions-r20261203040506"
    )
