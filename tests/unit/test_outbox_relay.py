"""The relay's at-least-once rule, with fakes for the feed, checkpoints and broker."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import uuid4

import pytest

from nova_command_api.application.relay import ChangeBatch, OutboxRelay
from nova_events import EventEnvelope, EventMetadata


def envelope(version: int) -> EventEnvelope:
    return EventEnvelope(
        aggregate_type="AudioFile",
        aggregate_id=uuid4(),
        event_type="AudioProcessingCompleted",
        schema_version=1,
        version=version,
        metadata=EventMetadata(correlation_id="c"),
        data={},
    )


class FakeFeed:
    def __init__(self, events: list[EventEnvelope]) -> None:
        self.events = events
        self.forgotten = 0

    async def shards(self) -> list[str]:
        return ["shard-1"]

    async def read(self, shard_id: str, after: str | None) -> ChangeBatch:
        start = int(after or 0)
        batch = self.events[start : start + 2]
        return ChangeBatch(shard_id, batch, str(start + len(batch)))

    def forget(self) -> None:
        self.forgotten += 1


class FakeCheckpoints:
    def __init__(self) -> None:
        self.saved: dict[str, str] = {}

    async def load(self, shard_id: str) -> str | None:
        return self.saved.get(shard_id)

    async def save(self, shard_id: str, position: str) -> None:
        self.saved[shard_id] = position


class FakePublisher:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.published: list[EventEnvelope] = []

    async def publish(self, events: Sequence[EventEnvelope]) -> None:
        if self.fail:
            raise ConnectionError("broker unreachable")
        self.published.extend(events)


async def test_publishes_everything_and_moves_the_checkpoint() -> None:
    events = [envelope(v) for v in range(1, 6)]
    checkpoints, publisher = FakeCheckpoints(), FakePublisher()
    relay = OutboxRelay(FakeFeed(events), checkpoints, publisher)

    while await relay.run_once():
        pass

    assert publisher.published == events
    assert checkpoints.saved == {"shard-1": "5"}


async def test_a_failed_publish_keeps_the_checkpoint() -> None:
    events = [envelope(v) for v in range(1, 4)]
    checkpoints, publisher = FakeCheckpoints(), FakePublisher(fail=True)
    relay = OutboxRelay(FakeFeed(events), checkpoints, publisher)

    with pytest.raises(ConnectionError):
        await relay.run_once()

    assert checkpoints.saved == {}


async def test_a_new_relay_resumes_where_the_last_one_saved() -> None:
    events = [envelope(v) for v in range(1, 5)]
    checkpoints = FakeCheckpoints()
    first = FakePublisher()
    await OutboxRelay(FakeFeed(events), checkpoints, first).run_once()

    second = FakePublisher()
    while await OutboxRelay(FakeFeed(events), checkpoints, second).run_once():
        pass

    assert first.published == events[:2]
    assert second.published == events[2:]
