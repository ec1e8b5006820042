"""Consumers open each record before their handler sees it."""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest
from botocore.exceptions import EndpointConnectionError

from nova_events import (
    AUDIO_FILE,
    SEALED_KEY,
    USER,
    EventEnvelope,
    EventMetadata,
    TranscriptionCompleted,
    UserErased,
    decode_payload,
    dumps,
    encode_payload,
)
from nova_platform.batches import BatchProcessor, is_transient
from nova_platform.parking import InMemoryParking, Record
from nova_platform.personal import PersonalData
from nova_platform.user_keys import InMemoryUserKeys, LocalKeyWrapper, UserKey

TEXT = "the words of the owner"


class Handler:
    def __init__(self) -> None:
        self.seen: list[EventEnvelope] = []

    async def __call__(self, envelopes: Sequence[EventEnvelope]) -> None:
        self.seen.extend(envelopes)


class DownKeys(InMemoryUserKeys):
    async def get(self, user_id: UUID) -> UserKey | None:
        raise EndpointConnectionError(endpoint_url="http://dynamodb")

    async def get_many(self, user_ids: Collection[UUID]) -> dict[UUID, UserKey]:
        raise EndpointConnectionError(endpoint_url="http://dynamodb")


def transcript(audio_id: UUID, version: int = 3) -> EventEnvelope:
    return EventEnvelope(
        aggregate_type=AUDIO_FILE,
        aggregate_id=audio_id,
        event_type="TranscriptionCompleted",
        schema_version=1,
        version=version,
        metadata=EventMetadata(correlation_id="c"),
        data=encode_payload(
            TranscriptionCompleted(
                audio_id=audio_id, text=TEXT, confidence=0.5, language="en-US"
            )
        ),
    )


def as_record(envelope: EventEnvelope, offset: int) -> Record:
    return Record(
        key=str(envelope.aggregate_id).encode(),
        value=dumps(envelope),
        topic="t",
        partition=0,
        offset=offset,
    )


@pytest.fixture
def personal() -> PersonalData:
    return PersonalData(InMemoryUserKeys(), LocalKeyWrapper(os.urandom(32)))


async def test_the_handler_sees_records_opened(personal: PersonalData) -> None:
    owner, audio = uuid4(), uuid4()
    sealed = await personal.seal(transcript(audio), owner)
    handler = Handler()

    await BatchProcessor(handler, InMemoryParking(), personal=personal).process(
        [as_record(sealed, 0)]
    )

    [seen] = handler.seen
    event = decode_payload(seen)
    assert isinstance(event, TranscriptionCompleted)
    assert event.text == TEXT


async def test_a_record_that_does_not_open_parks_its_audio_only(
    personal: PersonalData,
) -> None:
    owner, bad, good = uuid4(), uuid4(), uuid4()
    moved = await personal.seal(transcript(bad), owner)
    moved = moved.model_copy(update={"event_id": uuid4()})  # another event's seal
    handler, parking = Handler(), InMemoryParking()

    await BatchProcessor(handler, parking, personal=personal).process(
        [
            as_record(moved, 0),
            as_record(await personal.seal(transcript(good), owner), 1),
            as_record(await personal.seal(transcript(bad, 4), owner), 2),
        ]
    )

    assert [e.aggregate_id for e in handler.seen] == [good]
    assert [(a, r.offset) for a, r in parking.dead_letters] == [
        (str(bad), 0),
        (str(bad), 2),
    ]


async def test_an_unreachable_key_store_rewinds_the_batch_and_parks_nothing() -> None:
    writer = PersonalData(InMemoryUserKeys(), LocalKeyWrapper(os.urandom(32)))
    sealed = await writer.seal(transcript(uuid4()), uuid4())
    reader = PersonalData(DownKeys(), LocalKeyWrapper(os.urandom(32)))
    handler, parking = Handler(), InMemoryParking()

    with pytest.raises(EndpointConnectionError) as raised:
        await BatchProcessor(handler, parking, personal=reader).process(
            [as_record(sealed, 0)]
        )

    assert is_transient(raised.value)
    assert handler.seen == []
    assert parking.dead_letters == []


async def test_events_after_a_user_erased_in_the_batch_open_erased() -> None:
    keys = InMemoryUserKeys()
    personal = PersonalData(keys, LocalKeyWrapper(os.urandom(32)))
    owner, audio = uuid4(), uuid4()
    sealed = await personal.seal(transcript(audio), owner)
    await personal.open(sealed)  # the key is cached now
    elsewhere = PersonalData(keys, LocalKeyWrapper(os.urandom(32)))
    erased_at = await elsewhere.erase(owner)
    erasure = EventEnvelope(
        aggregate_type=USER,
        aggregate_id=owner,
        event_type="UserErased",
        schema_version=1,
        version=1,
        metadata=EventMetadata(correlation_id="c"),
        data=encode_payload(UserErased(user_id=owner, erased_at=erased_at)),
    )
    handler = Handler()

    await BatchProcessor(handler, InMemoryParking(), personal=personal).process(
        [as_record(erasure, 0), as_record(sealed, 1)]
    )

    erased = next(e for e in handler.seen if e.aggregate_id == audio)
    assert erased.erased
    assert TEXT not in erased.model_dump_json()
    assert SEALED_KEY not in erased.data
    assert datetime.now(UTC) >= erased_at
