"""Raw baselines: the same I/O as Nova with nothing but the client library.

Each function is what a competent engineer would write in a few lines with
aioboto3, aiokafka, opensearch-py, aiohttp or grpc alone. No `nova_*` import is
allowed in this module: a baseline that ran project code would measure the
project against itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
import grpc
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from opensearchpy import AsyncOpenSearch

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodbstreams import DynamoDBStreamsClient
    from types_aiobotocore_s3 import S3Client

Item = dict[str, Any]
Message = tuple[bytes, bytes, list[tuple[str, bytes]]]
"""A Kafka record to send: key, value, headers."""
Progress = list[tuple[float, int]]
"""(monotonic time, items done so far), appended as a drain advances."""


async def raw_put(ddb: DynamoDBClient, table: str, item: Item) -> None:
    """One conditional PutItem of an event item, as an append would do."""
    await ddb.put_item(
        TableName=table, Item=item, ConditionExpression="attribute_not_exists(pk)"
    )


async def raw_head(s3: S3Client, bucket: str, key: str) -> None:
    """One HeadObject: what a registration checks before it appends."""
    await s3.head_object(Bucket=bucket, Key=key)


async def raw_get(ddb: DynamoDBClient, table: str, key: Item) -> Item:
    """One strongly consistent GetItem of a read-model item."""
    found = await ddb.get_item(TableName=table, Key=key, ConsistentRead=True)
    return found["Item"]


async def raw_produce(
    producer: AIOKafkaProducer,
    topic: str,
    messages: Sequence[Message],
    every: int = 1000,
) -> Progress:
    """Send every message without awaiting each (acks and idempotence are the
    producer's settings); progress is noted at every `every` acknowledgements,
    the size of a relay's page."""
    progress: Progress = [(time.monotonic(), 0)]
    pending = [
        await producer.send(topic, value=value, key=key, headers=headers)
        for key, value, headers in messages
    ]
    for done, future in enumerate(pending, start=1):
        await future
        if done % every == 0 or done == len(pending):
            progress.append((time.monotonic(), done))
    return progress


async def raw_consume(
    consumer: AIOKafkaConsumer, expected: int, write: Any = None
) -> Progress:
    """Drain `expected` records, batch by batch, committing after each batch
    (after `write(records)` when given: the consume-and-write scripts)."""
    progress: Progress = []
    done = 0
    while done < expected:
        batches = await consumer.getmany(timeout_ms=1000, max_records=500)
        records = [r for part in batches.values() for r in part]
        if not records:
            continue
        if write is not None:
            await write(records)
        await consumer.commit()
        done += len(records)
        progress.append((time.monotonic(), done))
    return progress


def new_consumer(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    """A consumer as the projectors configure theirs: no auto-commit, reading
    committed records only, from the beginning."""
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=500,
    )


def new_producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )


async def raw_put_items(ddb: DynamoDBClient, table: str, items: Sequence[Item]) -> None:
    """The raw read-model writer: one conditional PutItem per item, concurrently."""
    await asyncio.gather(*(raw_put(ddb, table, item) for item in items))


async def raw_bulk(search: AsyncOpenSearch, index: str, docs: Sequence[Item]) -> None:
    """One bulk request indexing `docs` (each with `_id` and `_version`) with
    external versions, as a search projection writes."""
    body: list[Item] = []
    for doc in docs:
        source = {k: v for k, v in doc.items() if not k.startswith("_")}
        meta = {"_index": index, "_id": doc["_id"], "version": doc["_version"]}
        body.append({"index": {**meta, "version_type": "external"}})
        body.append(source)
    response = await search.bulk(body=body)
    if response.get("errors"):
        failed = [i for i in response["items"] if i["index"].get("status", 500) >= 300]
        raise RuntimeError(f"bulk failed for {len(failed)} documents: {failed[:1]}")


async def raw_search(search: AsyncOpenSearch, index: str, text: str) -> int:
    """One `match` query on the transcript; returns the number of hits."""
    found = await search.search(
        index=index, body={"size": 20, "query": {"match": {"transcription": text}}}
    )
    return len(found["hits"]["hits"])


async def raw_http(client: aiohttp.ClientSession, url: str) -> None:
    async with client.get(url) as response:
        response.raise_for_status()
        await response.read()


async def raw_grpc(call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]) -> None:
    await call(b"", timeout=10)


async def raw_stream_read(
    streams: DynamoDBStreamsClient, stream_arn: str, expected: int
) -> Progress:
    """Drain a table's stream with GetRecords (1000 per page) from its start."""
    progress: Progress = []
    described = await streams.describe_stream(StreamArn=stream_arn)
    shards = [s["ShardId"] for s in described["StreamDescription"]["Shards"]]
    done = 0
    for shard in shards:
        iterator: str | None = (
            await streams.get_shard_iterator(
                StreamArn=stream_arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
            )
        )["ShardIterator"]
        while iterator and done < expected:
            page = await streams.get_records(ShardIterator=iterator, Limit=1000)
            records = page.get("Records", [])
            if not records:
                break
            done += len(records)
            progress.append((time.monotonic(), done))
            iterator = page.get("NextShardIterator")
    return progress


async def raw_outbox(
    streams: DynamoDBStreamsClient,
    stream_arn: str,
    producer: AIOKafkaProducer,
    topic: str,
    expected: int,
) -> Progress:
    """Read the stream page by page and produce each page's new images before
    reading the next: a relay without transactions, checkpoints or a lease."""
    progress: Progress = []
    described = await streams.describe_stream(StreamArn=stream_arn)
    shards = [s["ShardId"] for s in described["StreamDescription"]["Shards"]]
    done = 0
    for shard in shards:
        iterator: str | None = (
            await streams.get_shard_iterator(
                StreamArn=stream_arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
            )
        )["ShardIterator"]
        while iterator and done < expected:
            page = await streams.get_records(ShardIterator=iterator, Limit=1000)
            records = page.get("Records", [])
            if not records:
                break
            sent = []
            for record in records:
                image = record["dynamodb"]["NewImage"]
                plain = {k: next(iter(v.values())) for k, v in image.items()}
                sent.append(
                    await producer.send(
                        topic,
                        key=str(plain["aggregate_id"]).encode(),
                        value=orjson.dumps(plain),
                    )
                )
            await asyncio.gather(*sent)
            done += len(records)
            progress.append((time.monotonic(), done))
            iterator = page.get("NextShardIterator")
    return progress


async def record_times(bootstrap: str, topic: str) -> dict[str, float]:
    """When each key's first committed record of `topic` was produced (its
    CreateTime, Unix seconds), reading every partition to its end."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    tps = [TopicPartition(topic, p["partition"]) for p in described[0]["partitions"]]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found: dict[str, float] = {}
        deadline = time.monotonic() + 60

        async def behind() -> bool:
            positions = [await consumer.position(tp) for tp in tps]
            return any(at < ends[tp] for at, tp in zip(positions, tps, strict=True))

        while time.monotonic() < deadline and await behind():
            batches = await consumer.getmany(*tps, timeout_ms=500)
            for records in batches.values():
                for record in records:
                    if record.key is not None:
                        found.setdefault(record.key.decode(), record.timestamp / 1000)
        return found
    finally:
        await consumer.stop()


def read_model_item(value: bytes) -> Item:
    """The raw read-model writer's item of one `AudioCreated` record: the
    fields in clear, and a sealed part (if any) kept as it came."""
    envelope = orjson.loads(value)
    data = envelope["data"]
    at = envelope["occurred_at"]
    item: Item = {
        "pk": {"S": f"AUDIO#{data['audio_id']}"},
        "sk": {"S": "METADATA"},
        "audio_id": {"S": data["audio_id"]},
        "user_id": {"S": data["user_id"]},
        "status": {"S": "pending"},
        "attempts": {"N": "0"},
        "created_at": {"S": at},
        "updated_at": {"S": at},
        "gsi1pk": {"S": f"USER#{data['user_id']}"},
        "gsi1sk": {"S": at},
        "version": {"N": str(envelope["version"])},
    }
    for name in ("s3_key", "title", "content_type", "language"):
        if data.get(name):
            item[name] = {"S": data[name]}
    if "_sealed" in data:
        item["sealed"] = {"S": orjson.dumps(data["_sealed"]).decode()}
    return item


def search_document(value: bytes) -> Item:
    """The raw search writer's document of one `AudioCreated` record."""
    envelope = orjson.loads(value)
    data = envelope["data"]
    return {
        "_id": data["audio_id"],
        "_version": envelope["version"],
        "audio_id": data["audio_id"],
        "user_id": data["user_id"],
        "status": "pending",
        "title": data.get("title"),
        "language": data.get("language"),
        "created_at": envelope["occurred_at"],
        "updated_at": envelope["occurred_at"],
        "version": envelope["version"],
    }
