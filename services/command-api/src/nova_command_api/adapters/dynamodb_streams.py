"""The event store's DynamoDB stream as the relay's change feed, and its lease."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from nova_platform.event_items import from_item

from ..application.relay import ChangeBatch, Shard

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodbstreams import DynamoDBStreamsClient

READ_LIMIT = 1000
SHARDS_TTL_S = 5.0
"""How long the relay reuses the stream's shard list. A shard's children only
matter once it closes, and a read that finds it closed drops the list at once;
without the cache every pass paid a DescribeStream (as long as the read itself
on moto, in `make bench`)."""


class DynamoDBStreamFeed:
    """Reads inserts from each shard of the event store table's stream."""

    def __init__(
        self,
        ddb: DynamoDBClient,
        streams: DynamoDBStreamsClient,
        table_name: str,
        shards_ttl_s: float = SHARDS_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ddb = ddb
        self._streams = streams
        self._table = table_name
        self._arn: str | None = None
        self._iterators: dict[str, str | None] = {}
        self._shards_ttl_s = shards_ttl_s
        self._clock = clock
        self._shards: list[Shard] | None = None
        self._shards_until = 0.0

    async def stream_arn(self) -> str:
        if self._arn is None:
            table = await self._ddb.describe_table(TableName=self._table)
            arn = table["Table"].get("LatestStreamArn")
            if not arn:
                raise RuntimeError(
                    f"table {self._table} has no stream; run `nova-init` to create it "
                    "with StreamSpecification enabled"
                )
            self._arn = arn
        return self._arn

    async def shards(self) -> list[Shard]:
        """The stream's shards, listed again at most every `shards_ttl_s`."""
        now = self._clock()
        if self._shards is not None and now < self._shards_until:
            return list(self._shards)
        request: dict[str, Any] = {"StreamArn": await self.stream_arn()}
        found: list[Shard] = []
        while True:
            page = await self._streams.describe_stream(**request)
            description = page["StreamDescription"]
            found.extend(
                Shard(s["ShardId"], s.get("ParentShardId"))
                for s in description.get("Shards", [])
            )
            last = description.get("LastEvaluatedShardId")
            if not last:
                break
            request["ExclusiveStartShardId"] = last
        self._shards, self._shards_until = found, now + self._shards_ttl_s
        return list(found)

    async def read(self, shard_id: str, after: str | None) -> ChangeBatch:
        iterator = self._iterators.get(shard_id)
        if iterator is None:
            iterator = await self._iterator(shard_id, after)
        try:
            page = await self._streams.get_records(
                ShardIterator=iterator, Limit=READ_LIMIT
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ExpiredIteratorException":
                raise
            self._iterators.pop(shard_id, None)
            return ChangeBatch(shard_id, (), after)
        records = page.get("Records", [])
        next_iterator = page.get("NextShardIterator")
        self._iterators[shard_id] = next_iterator
        if next_iterator is None:
            self._shards = None  # closed: its children are to be listed now
        inserts = [
            r
            for r in records
            if r.get("eventName") == "INSERT" and "NewImage" in r.get("dynamodb", {})
        ]
        return ChangeBatch(
            shard_id,
            [from_item(r["dynamodb"]["NewImage"]) for r in inserts],
            records[-1]["dynamodb"]["SequenceNumber"] if records else after,
            closed=next_iterator is None,
            oldest_at=(
                records[0]["dynamodb"].get("ApproximateCreationDateTime")
                if records
                else None
            ),
        )

    def forget(self) -> None:
        self._iterators.clear()
        self._shards = None

    async def _iterator(self, shard_id: str, after: str | None) -> str:
        request: dict[str, Any] = {
            "StreamArn": await self.stream_arn(),
            "ShardId": shard_id,
        }
        if after:
            request.update(
                ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=after
            )
        else:
            request.update(ShardIteratorType="TRIM_HORIZON")
        response = await self._streams.get_shard_iterator(**request)
        return response["ShardIterator"]


class DynamoDBLease:
    """One active relay per event store: a lease item renewed while it works.

    A relay that stalls past the lease loses it to a standby; Kafka's
    transactional fencing then rejects anything the stale one still sends.
    """

    def __init__(
        self,
        ddb: DynamoDBClient,
        table_name: str,
        name: str,
        ttl_s: float = 10.0,
        owner: str | None = None,
    ) -> None:
        self._ddb = ddb
        self._table = table_name
        self._name = name
        self._ttl_ms = int(ttl_s * 1000)
        self.owner = owner or str(uuid.uuid4())
        self._renew_after = 0.0

    async def acquire(self) -> bool:
        if time.monotonic() < self._renew_after:
            return True
        now_ms = int(time.time() * 1000)
        try:
            await self._ddb.put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": self._name},
                    "owner": {"S": self.owner},
                    "expires_at": {"N": str(now_ms + self._ttl_ms)},
                },
                ConditionExpression=(
                    "attribute_not_exists(pk) OR expires_at < :now OR #o = :me"
                ),
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={
                    ":now": {"N": str(now_ms)},
                    ":me": {"S": self.owner},
                },
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            self._renew_after = 0.0
            return False
        # Renew when a third of the lease is left, not on every pass.
        self._renew_after = time.monotonic() + self._ttl_ms / 1000 * 2 / 3
        return True

    async def release(self) -> None:
        self._renew_after = 0.0
        try:
            await self._ddb.delete_item(
                TableName=self._table,
                Key={"pk": {"S": self._name}},
                ConditionExpression="#o = :me",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":me": {"S": self.owner}},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
