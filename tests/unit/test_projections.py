"""Read-model changes and search documents derived from events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from uuid import UUID, uuid4

from nova_events import (
    AudioCreated,
    AudioDeleted,
    AudioProcessingCompleted,
    AudioProcessingStarted,
    DomainEvent,
    EventEnvelope,
    EventMetadata,
    TranscriptionCompleted,
    encode_payload,
)
from nova_projector_readmodel.application.projection import change_for
from nova_projector_search.application.documents import Document
from nova_projector_search.application.projector import SearchProjector

AT = datetime(2026, 12, 1, tzinfo=UTC)


def stream(audio_id: UUID, user_id: UUID) -> list[EventEnvelope]:
    events: list[DomainEvent] = [
        AudioCreated(
            audio_id=audio_id, user_id=user_id, s3_key="k", metadata={"title": "T"}
        ),
        AudioProcessingStarted(audio_id=audio_id, language="en-US"),
        TranscriptionCompleted(
            audio_id=audio_id, text="hello", confidence=0.9, language="en-US"
        ),
        AudioProcessingCompleted(audio_id=audio_id),
    ]
    return [
        EventEnvelope(
            aggregate_type="AudioFile",
            aggregate_id=audio_id,
            event_type=e.event_type(),
            schema_version=e.schema_version,
            version=v,
            occurred_at=AT,
            metadata=EventMetadata(correlation_id="c"),
            data=encode_payload(e),
        )
        for v, e in enumerate(events, start=1)
    ]


def test_read_model_item_follows_the_seed_layout() -> None:
    audio_id, user_id = uuid4(), uuid4()
    created = stream(audio_id, user_id)[0]

    change = change_for(created, AudioCreated.model_validate(created.data))

    assert change.create is True
    assert change.version == 1
    assert change.set["gsi1pk"] == f"USER#{user_id}"
    assert change.set["gsi1sk"] == AT.isoformat()
    assert change.set["status"] == "pending"


def test_erasure_removes_personal_fields() -> None:
    audio_id = uuid4()
    envelope = stream(audio_id, uuid4())[0].model_copy(
        update={
            "event_type": "AudioDeleted",
            "version": 5,
            "data": {"audio_id": str(audio_id)},
        }
    )

    change = change_for(envelope, AudioDeleted(audio_id=audio_id))

    assert change.set["status"] == "deleted"
    assert {"transcription", "segments", "s3_key", "metadata", "title"} <= set(
        change.remove
    )


class FakeIndex:
    def __init__(self) -> None:
        self.docs: dict[str, Document] = {}

    async def fetch(self, audio_ids: Sequence[str]) -> dict[str, Document]:
        return {a: self.docs[a] for a in audio_ids if a in self.docs}

    async def write(
        self, documents: Mapping[str, Document | None], versions: Mapping[str, int]
    ) -> None:
        for audio_id, doc in documents.items():
            stored = self.docs.get(audio_id)
            if stored is not None and stored["version"] >= versions[audio_id]:
                continue  # what external versioning does in OpenSearch
            if doc is None:
                self.docs.pop(audio_id, None)
            else:
                self.docs[audio_id] = doc

    async def erase_user(self, user_id: UUID) -> int:
        raise AssertionError("no user is erased here")


async def test_search_document_is_the_same_whether_batched_or_redelivered() -> None:
    audio_id, user_id = uuid4(), uuid4()
    events = stream(audio_id, user_id)
    one_pass, redelivered = FakeIndex(), FakeIndex()

    await SearchProjector(one_pass).project(events)
    projector = SearchProjector(redelivered)
    await projector.project(events[:2])
    await projector.project(events[:3])  # a redelivery overlapping the first batch
    await projector.project(events[1:])

    assert redelivered.docs == one_pass.docs
    doc = one_pass.docs[str(audio_id)]
    assert doc["status"] == "completed"
    assert doc["transcription"] == "hello"
    assert doc["version"] == 4
    assert doc["user_id"] == str(user_id)
