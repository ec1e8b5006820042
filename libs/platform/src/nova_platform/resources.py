"""Nova's tables, bucket, topics and index, and an idempotent way to create them.

The layouts are the seed's (section 4): the event store keyed by stream and
version with `gsi1` on (`event_type`, `occurred_at`) and a stream for the outbox
relay; the read model keyed by audio id with `gsi1-user-audio` per user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from botocore.exceptions import ClientError
from opensearchpy import AsyncOpenSearch

from .aws import client_kwargs, session
from .kafka import kafka_client_options
from .projections import read_pointer
from .settings import NovaSettings

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

logger = logging.getLogger(__name__)

EVENTS_TOPIC_PARTITIONS = 6

_STRING_KEYS = ("pk", "sk", "gsi1pk", "gsi1sk")


def _keyed_table(name: str, gsi_name: str, *, stream: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": key, "AttributeType": "S"} for key in _STRING_KEYS
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": gsi_name,
                "KeySchema": [
                    {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                    {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    }
    if stream:
        spec["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": "NEW_IMAGE",
        }
    return spec


def event_store_table(settings: NovaSettings) -> dict[str, Any]:
    return _keyed_table(settings.event_store_table, "gsi1", stream=True)


def read_model_table(settings: NovaSettings, name: str | None = None) -> dict[str, Any]:
    """The read model's layout, named `name` (a rebuild's table) or the default."""
    return _keyed_table(
        name or settings.read_model_table, "gsi1-user-audio", stream=False
    )


def webhooks_table(settings: NovaSettings) -> dict[str, Any]:
    """Subscriptions and deliveries; `gsi1-pending` holds pending deliveries."""
    return _keyed_table(settings.webhooks_table, "gsi1-pending", stream=False)


def _single_key_table(name: str) -> dict[str, Any]:
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
    }


def parking_table(settings: NovaSettings) -> dict[str, Any]:
    """Audios parked per consumer group: pk = group, sk = audio id."""
    return {
        "TableName": settings.parking_table,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
    }


def projections_table(settings: NovaSettings) -> dict[str, Any]:
    """Which read-model table is active, one item per projection (rebuilds)."""
    return _single_key_table(settings.projections_table)


def relay_lease_table(settings: NovaSettings) -> dict[str, Any]:
    """The lease that keeps one outbox relay active at a time."""
    return _single_key_table(settings.relay_lease_table)


def user_keys_table(settings: NovaSettings) -> dict[str, Any]:
    """Each user's wrapped data key, or its erasure's tombstone (`user_keys`)."""
    return _single_key_table(settings.user_keys_table)


def idempotency_table(settings: NovaSettings) -> dict[str, Any]:
    """Responses of commands sent with `Idempotency-Key`, expiring by TTL."""
    return _single_key_table(settings.idempotency_table)


def search_index_body() -> dict[str, Any]:
    """Settings and explicit mappings of the transcript index.

    The transcript is analysed twice: `english` for stemming and `cjk` bigrams,
    because the standard analyzer cannot split Japanese text into words.
    """
    transcript = {
        "type": "text",
        "analyzer": "english",
        "fields": {"cjk": {"type": "text", "analyzer": "cjk"}},
    }
    return {
        "settings": {"number_of_shards": 1, "number_of_replicas": 0},
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "audio_id": {"type": "keyword"},
                "user_id": {"type": "keyword"},
                "status": {"type": "keyword"},
                "language": {"type": "keyword"},
                "title": {
                    "type": "text",
                    "fields": {"cjk": {"type": "text", "analyzer": "cjk"}},
                },
                "transcription": transcript,
                "confidence": {"type": "float"},
                "created_at": {"type": "date"},
                "updated_at": {"type": "date"},
                "completed_at": {"type": "date"},
                "version": {"type": "long"},
                "personal_data": {"type": "keyword"},
            },
        },
    }


async def ensure_tables(settings: NovaSettings) -> None:
    """Create the DynamoDB tables that do not exist yet and wait until active.

    After a rebuild, the read-model table ensured is the one the pointer names.
    """
    async with session().client("dynamodb", **client_kwargs(settings)) as ddb:
        await ensure_table(ddb, projections_table(settings))
        active = await read_pointer(ddb, settings)
        specs = (
            event_store_table(settings),
            read_model_table(settings, active),
            relay_lease_table(settings),
            parking_table(settings),
            idempotency_table(settings),
            webhooks_table(settings),
            user_keys_table(settings),
        )
        for spec in specs:
            await ensure_table(ddb, spec)
        await _expire_idempotency_records(ddb, settings.idempotency_table)


async def ensure_table(
    ddb: DynamoDBClient, spec: dict[str, Any], *, exist_ok: bool = True
) -> None:
    """Create the table of `spec` and wait until it is active.

    An existing table is fine unless `exist_ok` is False (then the
    `ResourceInUseException` is raised).
    """
    try:
        await ddb.create_table(**spec)
        logger.info("created table", extra={"table": spec["TableName"]})
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException" or not exist_ok:
            raise
    waiter = ddb.get_waiter("table_exists")
    await waiter.wait(
        TableName=spec["TableName"],
        WaiterConfig={"Delay": 1, "MaxAttempts": 60},
    )


async def _expire_idempotency_records(ddb: DynamoDBClient, table: str) -> None:
    ttl = await ddb.describe_time_to_live(TableName=table)
    status = ttl["TimeToLiveDescription"].get("TimeToLiveStatus")
    if status in ("ENABLED", "ENABLING"):
        return
    await ddb.update_time_to_live(
        TableName=table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
    )


async def ensure_bucket(settings: NovaSettings) -> None:
    async with session().client("s3", **client_kwargs(settings)) as s3:
        try:
            await s3.create_bucket(Bucket=settings.audio_bucket)
            logger.info("created bucket", extra={"bucket": settings.audio_bucket})
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise


async def ensure_topics(settings: NovaSettings) -> None:
    """The events topic, and the relay's compacted checkpoint topic."""
    topics = [
        NewTopic(
            name=settings.events_topic,
            num_partitions=EVENTS_TOPIC_PARTITIONS,
            replication_factor=1,
            topic_configs={"min.insync.replicas": "1"},
        ),
        NewTopic(
            name=settings.dead_letter_topic,
            num_partitions=EVENTS_TOPIC_PARTITIONS,
            replication_factor=1,
            topic_configs={"min.insync.replicas": "1"},
        ),
        NewTopic(
            name=settings.relay_checkpoint_topic,
            num_partitions=1,
            replication_factor=1,
            topic_configs={"cleanup.policy": "compact", "min.insync.replicas": "1"},
        ),
    ]
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
            logger.info("created topics", extra={"topics": [t.name for t in missing]})
    finally:
        await admin.close()


async def ensure_search_index(settings: NovaSettings) -> None:
    """Create `<alias>-v1` with the mappings and point the alias at it."""
    alias = settings.search_alias
    client = AsyncOpenSearch(hosts=[settings.opensearch_url])
    try:
        if await client.indices.exists_alias(name=alias):
            # Indices made before a field was added to the mappings get it
            # (adding a field is allowed; the mapping is strict otherwise).
            properties = search_index_body()["mappings"]["properties"]
            await client.indices.put_mapping(
                index=alias, body={"properties": properties}
            )
            return
        index = f"{alias}-v1"
        if not await client.indices.exists(index=index):
            await client.indices.create(index=index, body=search_index_body())
            logger.info("created index", extra={"index": index})
        await client.indices.put_alias(index=index, name=alias)
    finally:
        await client.close()


async def ensure_all(settings: NovaSettings) -> None:
    """Everything Nova needs, created if missing; safe to run again."""
    await asyncio.gather(
        ensure_tables(settings),
        ensure_bucket(settings),
        ensure_topics(settings),
        ensure_search_index(settings),
    )
