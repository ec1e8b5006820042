"""Payloads and preloaded state, generated from fixed seeds before timing.

Preloading is not the measured path, so it may use anything fast: events are
written straight into the event store table with `BatchWriteItem` (25 items a
call), objects into the bucket, documents into the index. Every item is a
real `to_item` of a real `AudioCreated` envelope with its ids replaced, so
the relay and the projectors can read it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import orjson

from nova_events import AUDIO_FILE, AudioCreated, EventEnvelope, EventMetadata
from nova_platform.event_items import to_item
from nova_platform.kafka import message_headers, message_key, message_value
from nova_platform.personal import PersonalData

from .raw import Item, Message

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_s3 import S3Client

WORDS = [
    *("budget", "meeting", "nagoya", "kyoto", "release", "review", "customer"),
    *("invoice", "roadmap", "design", "hiring", "quarterly", "forecast"),
    *("latency", "outage", "incident", "migration", "contract", "warehouse"),
    *("shipping", "marketing", "launch", "training", "safety", "audit"),
]
AUDIO_BODY = b"RIFF\x24\x00\x00\x00WAVEfmt "


def new_uuid(rng: random.Random) -> UUID:
    return UUID(int=rng.getrandbits(128), version=4)


def envelope(audio_id: UUID, user_id: UUID, index: int) -> EventEnvelope:
    """A committed `AudioCreated` at version 1, as command-api would store it."""
    created = AudioCreated(
        audio_id=audio_id,
        user_id=user_id,
        s3_key=f"audio/{user_id}/bench-{index:07d}.wav",
        title=f"Bench meeting {index}",
        content_type="audio/wav",
        size_bytes=len(AUDIO_BODY),
        language="en-US",
    )
    return EventEnvelope(
        aggregate_type=AUDIO_FILE,
        aggregate_id=audio_id,
        event_type=created.event_type(),
        schema_version=created.schema_version,
        version=1,
        occurred_at=datetime.now(UTC),
        metadata=EventMetadata(
            correlation_id=str(audio_id), user_id=str(user_id), command_id="bench"
        ),
        data=created.model_dump(mode="json"),
    )


def event_items(count: int, seed: int, user_id: UUID) -> Iterator[Item]:
    """`count` event-store items of distinct audios: one real item as the
    template, its ids replaced (generating each envelope would cost minutes at
    500k items)."""
    rng = random.Random(seed)
    template = to_item(envelope(new_uuid(rng), user_id, 0))
    data = orjson.loads(template["event_data"]["S"])
    for index in range(count):
        audio_id = str(new_uuid(rng))
        data["audio_id"] = audio_id
        data["s3_key"] = f"audio/{user_id}/bench-{index:07d}.wav"
        yield {
            **template,
            "pk": {"S": f"{AUDIO_FILE}#{audio_id}"},
            "aggregate_id": {"S": audio_id},
            "event_id": {"S": str(new_uuid(rng))},
            "event_data": {"S": orjson.dumps(data).decode()},
        }


async def batch_load(
    ddb: DynamoDBClient, table: str, items: Iterator[Item], concurrency: int = 4
) -> int:
    """Write `items` with BatchWriteItem, `concurrency` calls in flight."""
    written = 0

    async def writer() -> None:
        nonlocal written
        while True:
            chunk = [item for _, item in zip(range(25), items, strict=False)]
            if not chunk:
                return
            request: dict[str, Any] = {
                table: [{"PutRequest": {"Item": i}} for i in chunk]
            }
            while request:
                answer = await ddb.batch_write_item(RequestItems=request)
                request = dict(answer.get("UnprocessedItems") or {})
            written += len(chunk)

    await asyncio.gather(*(writer() for _ in range(concurrency)))
    return written


async def put_objects(
    s3: S3Client, bucket: str, keys: Sequence[str], concurrency: int = 16
) -> None:
    """One small WAV-looking object per key (what `register` checks exists)."""
    queue = iter(keys)

    async def writer() -> None:
        for key in queue:
            await s3.put_object(
                Bucket=bucket, Key=key, Body=AUDIO_BODY, ContentType="audio/wav"
            )

    await asyncio.gather(*(writer() for _ in range(concurrency)))


def created_envelopes(
    count: int, seed: int, users: Sequence[UUID]
) -> list[EventEnvelope]:
    """`AudioCreated` of `count` audios, owned in turn by each of `users`."""
    rng = random.Random(seed)
    return [
        envelope(new_uuid(rng), users[index % len(users)], index)
        for index in range(count)
    ]


def messages(envelopes: Sequence[EventEnvelope]) -> list[Message]:
    """Kafka records of `envelopes`, as the relay sends them."""
    return [(message_key(e), message_value(e), message_headers(e)) for e in envelopes]


def created_messages(count: int, seed: int, user_id: UUID) -> list[Message]:
    """Kafka records of `count` audios' `AudioCreated`, all of one user."""
    return messages(created_envelopes(count, seed, [user_id]))


async def sealed(
    envelopes: Sequence[EventEnvelope], personal: PersonalData
) -> list[EventEnvelope]:
    """What the event store holds, and so the relay publishes: personal fields
    sealed with each owner's key (created in the key table on first use)."""
    return [await personal.seal(e, UUID(e.data["user_id"])) for e in envelopes]


def transcript(rng: random.Random, words: int = 60) -> str:
    return " ".join(rng.choices(WORDS, k=words))


def search_documents(count: int, seed: int, user_id: UUID) -> list[Item]:
    """Transcribed audios' documents for the search index, with `_id` and
    `_version` for the bulk request."""
    rng = random.Random(seed)
    docs = []
    for index in range(count):
        audio_id = str(new_uuid(rng))
        docs.append(
            {
                "_id": audio_id,
                "_version": 4,
                "audio_id": audio_id,
                "user_id": str(user_id),
                "status": "completed",
                "title": f"Bench meeting {index}",
                "language": "en-US",
                "transcription": transcript(rng),
                "confidence": 0.9,
                "version": 4,
                "created_at": "2026-01-01T00:00:00+00:00",
                "updated_at": "2026-01-01T00:00:00+00:00",
            }
        )
    return docs
