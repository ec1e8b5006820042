"""The relay's rules, with fakes for the stream, the broker and the lease."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import uuid4

import pytest

from nova_command_api.application.relay import (
    ChangeBatch,
    Checkpoint,
    OutboxRelay,
    Shard,
    read_order,
)
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
    """One shard whose records are `events`; positions are list indexes."""

    def __init__(self, events: list[EventEnvelope]) -> None:
        self.events = events

    async def shards(self) -> list[Shard]:
        return [Shard("shard-1")]

    async def read(self, shard_id: str, after: str | None) -> ChangeBatch:
        start = int(after or 0)
        batch = self.events[start : start + 2]
        return ChangeBatch(shard_id, batch, str(start + len(batch)))

    def forget(self) -> None:
        pass


class FakeBroker:
    """Commits events and checkpoint together, like a Kafka transaction."""

    def __init__(self) -> None:
        self.committed: list[EventEnvelope] = []
        self.checkpoints: dict[str, Checkpoint] = {}
        self.fail = False
        self.fenced = 0

    async def publish(
        self, events: Sequence[EventEnvelope], checkpoint: Checkpoint
    ) -> None:
        if self.fail:
            raise ConnectionError("broker unreachable")
        self.committed.extend(events)
        self.checkpoints[checkpoint.shard_id] = checkpoint

    async def load_checkpoints(self) -> dict[str, Checkpoint]:
        return dict(self.checkpoints)

    async def fence(self) -> None:
        self.fenced += 1


class FakeLease:
    def __init__(self, held: bool = True) -> None:
        self.held = held

    async def acquire(self) -> bool:
        return self.held

    async def release(self) -> None:
        self.held = False


async def drain(relay: OutboxRelay) -> None:
    while await relay.run_once():
        pass


async def test_publishes_everything_once_with_its_checkpoint() -> None:
    events = [envelope(v) for v in range(1, 6)]
    broker = FakeBroker()

    await drain(OutboxRelay(FakeFeed(events), broker, FakeLease()))

    assert broker.committed == events
    assert broker.checkpoints == {"shard-1": Checkpoint("shard-1", "5")}


async def test_a_failed_publish_moves_nothing_and_the_next_pass_resumes() -> None:
    events = [envelope(v) for v in range(1, 4)]
    broker = FakeBroker()
    relay = OutboxRelay(FakeFeed(events), broker, FakeLease())
    broker.fail = True

    with pytest.raises(ConnectionError):
        await relay.run_once()
    broker.fail = False
    await drain(OutboxRelay(FakeFeed(events), broker, FakeLease()))

    assert broker.committed == events


async def test_a_new_relay_resumes_from_the_committed_checkpoint() -> None:
    events = [envelope(v) for v in range(1, 5)]
    broker = FakeBroker()
    await OutboxRelay(FakeFeed(events), broker, FakeLease()).run_once()

    await drain(OutboxRelay(FakeFeed(events), broker, FakeLease()))

    assert broker.committed == events


async def test_a_new_active_relay_fences_before_reading_checkpoints() -> None:
    broker = FakeBroker()
    relay = OutboxRelay(FakeFeed([envelope(1)]), broker, FakeLease())

    await drain(relay)

    assert broker.fenced == 1


async def test_a_standby_publishes_nothing() -> None:
    broker = FakeBroker()
    standby = OutboxRelay(FakeFeed([envelope(1)]), broker, FakeLease(held=False))

    assert await standby.run_once() == 0
    assert broker.committed == []


def test_children_wait_for_their_parent_shard() -> None:
    shards = [Shard("a"), Shard("b", parent_id="a"), Shard("c", parent_id="gone")]

    assert [s.shard_id for s in read_order(shards, {})] == ["a", "c"]
    done = {"a": Checkpoint("a", "9", closed=True)}
    assert [s.shard_id for s in read_order(shards, done)] == ["b", "c"]
