"""Both projectors honour `UserErased` and never keep an erased user's data."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from nova_events import (
    AUDIO_FILE,
    USER,
    AudioCreated,
    AudioProcessingCompleted,
    AudioProcessingFailed,
    AudioProcessingStarted,
    EventEnvelope,
    EventPayload,
    Segment,
    TranscriptionCompleted,
    UserErased,
    dumps,
)
from nova_platform.batches import BatchProcessor
from nova_platform.parking import InMemoryParking, Record, redrive
from nova_platform.personal import PersonalData
from nova_platform.user_keys import InMemoryUserKeys, LocalKeyWrapper
from nova_projector_readmodel.adapters.memory_read_model import InMemoryReadModel
from nova_projector_readmodel.application.projector import ReadModelProjector
from nova_projector_search.adapters.memory_index import InMemorySearchIndex
from nova_projector_search.application.projector import SearchProjector

from ..stored_events import envelope

ERASED_AT = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
SECRETS = ("Private title", "private words", "Acme", "private.wav")


class Cache:
    def __init__(self) -> None:
        self.invalidated: list[str] = []

    async def invalidate(self, audio_ids: Sequence[str]) -> None:
        self.invalidated.extend(audio_ids)


class Waits:
    def __init__(self) -> None:
        self.erasures: list[datetime] = []

    async def __call__(self, erased_at: datetime) -> None:
        self.erasures.append(erased_at)


def audio_stream(audio_id: UUID, user_id: UUID) -> list[EventEnvelope]:
    events: list[EventPayload] = [
        AudioCreated(
            audio_id=audio_id,
            user_id=user_id,
            s3_key=f"audio/{user_id}/private.wav",
            title="Private title",
            metadata={"client": "Acme"},
            language="en-US",
        ),
        AudioProcessingStarted(audio_id=audio_id, language="en-US"),
        TranscriptionCompleted(
            audio_id=audio_id,
            text="private words",
            confidence=0.9,
            language="en-US",
            segments=(Segment(start=0, end=1, text="private words"),),
        ),
        AudioProcessingCompleted(audio_id=audio_id),
    ]
    return [envelope(AUDIO_FILE, audio_id, v, e) for v, e in enumerate(events, 1)]


def erasure(user_id: UUID) -> EventEnvelope:
    return envelope(USER, user_id, 1, UserErased(user_id=user_id, erased_at=ERASED_AT))


async def erased_open(events: list[EventEnvelope], owner: UUID) -> list[EventEnvelope]:
    """`events` as a reader opens them once `owner`'s key is gone."""
    personal = PersonalData(InMemoryUserKeys(), LocalKeyWrapper(os.urandom(32)))
    sealed = [await personal.seal(e, owner) for e in events]
    await personal.erase(owner)
    return await personal.open_all(sealed)


def holds_no_secret(value: object) -> None:
    text = repr(value)
    for secret in SECRETS:
        assert secret not in text


async def test_the_read_model_strips_every_item_of_an_erased_user() -> None:
    alice, bob = uuid4(), uuid4()
    alices = [uuid4(), uuid4()]
    bobs = uuid4()
    model, cache, waits = InMemoryReadModel(), Cache(), Waits()
    projector = ReadModelProjector(model, cache=cache, wait_for_erasure=waits)
    for audio_id in alices:
        await projector.project(audio_stream(audio_id, alice))
    await projector.project(audio_stream(bobs, bob))
    cache.invalidated.clear()

    await projector.project([erasure(alice)])

    assert waits.erasures == [ERASED_AT]
    assert sorted(cache.invalidated) == sorted(str(a) for a in alices)
    for audio_id in alices:
        item = model.items[str(audio_id)]
        holds_no_secret(item)
        assert item["personal_data"] == "erased"
        assert (item["status"], item["version"]) == ("completed", 4)
    assert model.items[str(bobs)]["title"] == "Private title"


async def test_events_opened_erased_write_no_personal_attribute() -> None:
    owner, audio_id = uuid4(), uuid4()
    model = InMemoryReadModel()
    projector = ReadModelProjector(model)
    stream = await erased_open(audio_stream(audio_id, owner), owner)

    await projector.project(stream)

    item = model.items[str(audio_id)]
    holds_no_secret(item)
    assert item["personal_data"] == "erased"
    assert item["user_id"] == str(owner)
    assert item["gsi1pk"] == f"USER#{owner}"
    assert (item["status"], item["confidence"], item["version"]) == (
        "completed",
        0.9,
        4,
    )


async def test_user_events_do_not_become_audio_items() -> None:
    user = uuid4()
    model, index = InMemoryReadModel(), InMemorySearchIndex()

    await ReadModelProjector(model).project([erasure(user)])
    await SearchProjector(index).project([erasure(user)])

    assert model.items == {}
    assert index.docs == {}


async def test_the_search_index_tombstones_an_erased_users_documents() -> None:
    alice, bob = uuid4(), uuid4()
    alices, bobs = uuid4(), uuid4()
    index, waits = InMemorySearchIndex(), Waits()
    projector = SearchProjector(index, wait_for_erasure=waits)
    await projector.project(audio_stream(alices, alice) + audio_stream(bobs, bob))

    await projector.project([erasure(alice)])

    assert waits.erasures == [ERASED_AT]
    doc = index.docs[str(alices)]
    holds_no_secret(doc)
    assert doc["personal_data"] == "erased"
    assert (doc["status"], doc["version"], doc["user_id"]) == (
        "completed",
        4,
        str(alice),
    )
    assert index.docs[str(bobs)]["transcription"] == "private words"


async def test_an_erased_document_stays_erased_whatever_comes_later() -> None:
    owner, audio_id = uuid4(), uuid4()
    index = InMemorySearchIndex()
    projector = SearchProjector(index)
    stream = audio_stream(audio_id, owner)
    await projector.project(stream[:2])
    await projector.project([erasure(owner)])

    # Opened elsewhere with a key still cached: plaintext, but too late.
    late = envelope(
        AUDIO_FILE,
        audio_id,
        4,
        AudioProcessingFailed(audio_id=audio_id, reason="timeout", retryable=True),
    )
    await projector.project([stream[2], late])

    doc = index.docs[str(audio_id)]
    holds_no_secret(doc)
    assert (doc["version"], doc["status"]) == (4, "failed")
    assert doc["personal_data"] == "erased"


async def test_search_documents_of_events_opened_erased_hold_nothing_personal() -> None:
    owner, audio_id = uuid4(), uuid4()
    index = InMemorySearchIndex()

    await SearchProjector(index).project(
        await erased_open(audio_stream(audio_id, owner), owner)
    )

    doc = index.docs[str(audio_id)]
    holds_no_secret(doc)
    assert "title" not in doc
    assert "transcription" not in doc
    assert (doc["status"], doc["personal_data"]) == ("completed", "erased")


@pytest.mark.parametrize("event_type", ["UserRenamed"])
async def test_other_user_events_are_ignored(event_type: str) -> None:
    user = uuid4()
    model, waits = InMemoryReadModel(), Waits()
    unknown = erasure(user).model_copy(update={"event_type": event_type})

    await ReadModelProjector(model, wait_for_erasure=waits).project([unknown])

    assert waits.erasures == []


class Store:
    """The event store as the projectors' reader sees it: streams by type."""

    def __init__(self, *streams: list[EventEnvelope]) -> None:
        self.streams = {
            (s[0].aggregate_type, s[0].aggregate_id): s for s in streams if s
        }

    async def get_events(
        self, aggregate_type: str, aggregate_id: UUID, from_version: int = 1
    ) -> list[EventEnvelope]:
        stream = self.streams.get((aggregate_type, aggregate_id), [])
        return [e for e in stream if e.version >= from_version]


class BrokenUntilFixed:
    """Wraps a target whose `erase_user` fails (a bug) until `fixed`."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.fixed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)

    async def erase_user(self, *args: Any) -> Any:
        if not self.fixed:
            raise ValueError("a bug in erasing a user")
        return await self.target.erase_user(*args)


def as_record(envelope: EventEnvelope, offset: int) -> Record:
    return Record(str(envelope.aggregate_id).encode(), dumps(envelope), "t", 0, offset)


@pytest.mark.parametrize("projection", ["read model", "search index"])
async def test_a_parked_user_erased_is_applied_by_the_redrive(projection: str) -> None:
    alice, audio_id = uuid4(), uuid4()
    stream = audio_stream(audio_id, alice)
    store = Store(stream, [erasure(alice)])
    model, index = InMemoryReadModel(), InMemorySearchIndex()
    broken = BrokenUntilFixed(model if projection == "read model" else index)
    projector: ReadModelProjector | SearchProjector = (
        ReadModelProjector(broken, store)
        if projection == "read model"
        else SearchProjector(broken, store)
    )
    parking = InMemoryParking()
    processor = BatchProcessor(projector.project, parking)
    await processor.process([as_record(e, n) for n, e in enumerate(stream)])
    await processor.process([as_record(erasure(alice), len(stream))])
    assert set(parking.marks) == {str(alice)}
    target = model.items if projection == "read model" else index.docs
    assert target[str(audio_id)]["title"] == "Private title"

    broken.fixed = True
    assert await redrive(parking, projector.repair) == [str(alice)]

    holds_no_secret(target[str(audio_id)])
    assert target[str(audio_id)]["personal_data"] == "erased"
    assert target[str(audio_id)]["version"] == 4
    assert parking.marks == {}
