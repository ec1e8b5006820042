"""The event store's DynamoDB stream as the relay's change feed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ..application.relay import ChangeBatch
from .dynamodb_event_store import from_item

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodbstreams import DynamoDBStreamsClient

READ_LIMIT = 1000


class DynamoDBStreamFeed:
    """Reads inserts from each shard of the event store table's stream."""

    def __init__(
        self, ddb: DynamoDBClient, streams: DynamoDBStreamsClient, table_name: str
    ) -> None:
        self._ddb = ddb
        self._streams = streams
        self._table = table_name
        self._arn: str | None = None
        self._iterators: dict[str, str | None] = {}

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

    async def shards(self) -> list[str]:
        arn = await self.stream_arn()
        shard_ids: list[str] = []
        request: dict[str, Any] = {"StreamArn": arn}
        while True:
            description = (await self._streams.describe_stream(**request))[
                "StreamDescription"
            ]
            shard_ids.extend(s["ShardId"] for s in description.get("Shards", []))
            last = description.get("LastEvaluatedShardId")
            if not last:
                return shard_ids
            request["ExclusiveStartShardId"] = last

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
        self._iterators[shard_id] = page.get("NextShardIterator")
        records = page.get("Records", [])
        events = [
            from_item(r["dynamodb"]["NewImage"])
            for r in records
            if r.get("eventName") == "INSERT" and "NewImage" in r.get("dynamodb", {})
        ]
        position = records[-1]["dynamodb"]["SequenceNumber"] if records else after
        return ChangeBatch(shard_id, events, position)

    def forget(self) -> None:
        """Drop cached iterators, e.g. after an error, to resume from checkpoints."""
        self._iterators.clear()

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


class DynamoDBCheckpoints:
    """The last published stream position per shard, in `nova-outbox-checkpoint`."""

    def __init__(self, ddb: DynamoDBClient, table_name: str) -> None:
        self._ddb = ddb
        self._table = table_name

    async def load(self, shard_id: str) -> str | None:
        item = await self._ddb.get_item(
            TableName=self._table, Key={"pk": {"S": shard_id}}, ConsistentRead=True
        )
        found = item.get("Item")
        return found["position"]["S"] if found else None

    async def save(self, shard_id: str, position: str) -> None:
        await self._ddb.put_item(
            TableName=self._table,
            Item={"pk": {"S": shard_id}, "position": {"S": position}},
        )
