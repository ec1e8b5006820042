"""The relay's change feed lists the stream's shards once per TTL, not per pass."""

from __future__ import annotations

from typing import Any, cast

from nova_command_api.adapters.dynamodb_streams import DynamoDBStreamFeed
from nova_command_api.application.relay import Shard


class FakeTable:
    async def describe_table(self, TableName: str) -> dict[str, Any]:  # noqa: N803
        return {"Table": {"LatestStreamArn": f"arn:stream/{TableName}"}}


class FakeStreams:
    """One open shard; `close()` ends it and adds a child."""

    def __init__(self) -> None:
        self.described = 0
        self.shards = [{"ShardId": "s1"}]
        self.closed: set[str] = set()

    async def describe_stream(self, **_: Any) -> dict[str, Any]:
        self.described += 1
        return {"StreamDescription": {"Shards": list(self.shards)}}

    async def get_shard_iterator(self, ShardId: str, **_: Any) -> dict[str, Any]:  # noqa: N803
        return {"ShardIterator": ShardId}

    async def get_records(self, ShardIterator: str, **_: Any) -> dict[str, Any]:  # noqa: N803
        if ShardIterator in self.closed:
            return {"Records": []}
        return {"Records": [], "NextShardIterator": ShardIterator}

    def close(self) -> None:
        self.closed.add("s1")
        self.shards.append({"ShardId": "s2", "ParentShardId": "s1"})


def _feed(streams: FakeStreams, clock: list[float]) -> DynamoDBStreamFeed:
    return DynamoDBStreamFeed(
        cast(Any, FakeTable()),
        cast(Any, streams),
        "events",
        shards_ttl_s=5.0,
        clock=lambda: clock[0],
    )


async def test_shards_are_listed_again_only_after_the_ttl() -> None:
    streams, clock = FakeStreams(), [100.0]
    feed = _feed(streams, clock)

    first = await feed.shards()
    clock[0] = 104.0
    await feed.read("s1", None)
    again = await feed.shards()
    clock[0] = 105.5
    await feed.shards()

    assert first == again == [Shard("s1")]
    assert streams.described == 2


async def test_a_closed_shard_lists_its_children_at_once() -> None:
    streams, clock = FakeStreams(), [100.0]
    feed = _feed(streams, clock)
    await feed.shards()
    streams.close()

    batch = await feed.read("s1", None)

    assert batch.closed
    assert await feed.shards() == [Shard("s1"), Shard("s2", "s1")]


async def test_forget_lists_the_shards_again() -> None:
    streams, clock = FakeStreams(), [100.0]
    feed = _feed(streams, clock)
    await feed.shards()

    feed.forget()
    await feed.shards()

    assert streams.described == 2
